//! A peer connection of the async `webrtc` crate set up as callgate's
//! clients need one: default codecs and interceptors (as a browser has), no
//! mDNS, `a=setup:active` when answering (the server is the DTLS server on
//! both transports), its ICE candidates trickled over signaling, and what
//! it receives handed to a [`PeerObserver`].

use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, Registry, SettingEngineBuilder, register_default_interceptors,
};

use callgate_sfu::{IceCandidate, TransportRole};
use callgate_signaling::protocol::ClientMessage;

use crate::ClientError;

/// Which sockets a participant's peer connections gather candidates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// One IPv4 loopback UDP socket each.
    #[default]
    Udp,
    /// One IPv6 loopback UDP socket each.
    UdpV6,
    /// No UDP at all: ICE over TCP only (active candidates dialing the
    /// server's passive one), as behind a firewall that blocks UDP.
    TcpOnly,
    /// One IPv4 loopback UDP socket each, and relay candidates only: every
    /// packet goes through the TURN servers in [`PeerOptions::ice_servers`].
    RelayOnly,
}

/// How a participant's peer connections are built.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    pub network: Network,
    /// STUN/TURN servers (`ice_servers` of `joined`, or others).
    pub ice_servers: Vec<RTCIceServer>,
    /// Consent checks every this once connected, and never giving up on
    /// the server (for tests of what the server does); `None` keeps the
    /// `webrtc` crate's defaults.
    pub keepalive: Option<Duration>,
}

/// A remote track a peer connection receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    /// The publishing participant's sid (the SFU names the stream after it).
    pub stream_id: String,
    /// The published track's sid.
    pub track_id: String,
    pub kind: RtpCodecKind,
}

/// What a participant's peer connections report. Called from the
/// `webrtc` crate's tasks: keep it short and non-blocking.
pub trait PeerObserver: Send + Sync + 'static {
    /// An RTP packet of a remote track.
    fn on_rtp(&self, track: &RemoteTrack, packet: &rtp::Packet);

    /// The peer connection of `role` changed state.
    fn on_connection_state(&self, role: TransportRole, state: RTCPeerConnectionState) {
        let _ = (role, state);
    }
}

/// An observer for a participant that does not look at what it receives.
pub struct IgnoreMedia;

impl PeerObserver for IgnoreMedia {
    fn on_rtp(&self, _: &RemoteTrack, _: &rtp::Packet) {}
}

struct Handler {
    role: TransportRole,
    signal: mpsc::UnboundedSender<ClientMessage>,
    observer: Arc<dyn PeerObserver>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.signal.send(ClientMessage::Candidate {
                target: self.role,
                candidate: IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_m_line_index: init.sdp_mline_index,
                },
            });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.observer.on_connection_state(self.role, state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let observer = self.observer.clone();
        tokio::spawn(async move {
            let remote = RemoteTrack {
                stream_id: track.stream_id().await,
                track_id: track.track_id().await,
                kind: track.kind().await,
            };
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => observer.on_rtp(&remote, &packet),
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// A peer connection for the transport `role`; its candidates go to
/// `signal` as `candidate` messages.
pub async fn new_peer(
    role: TransportRole,
    options: &PeerOptions,
    signal: mpsc::UnboundedSender<ClientMessage>,
    observer: Arc<dyn PeerObserver>,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .map_err(ClientError::webrtc)?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .map_err(ClientError::webrtc)?;
    let mut config = RTCConfigurationBuilder::new();
    if !options.ice_servers.is_empty() {
        config = config.with_ice_servers(options.ice_servers.clone());
    }
    if options.network == Network::RelayOnly {
        config = config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
    }
    // No mDNS: it would send multicast off loopback (and fails outright in
    // a network namespace that has only `lo`).
    let mut settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Client);
    if let Some(every) = options.keepalive {
        settings =
            settings.with_ice_timeouts(Some(Duration::ZERO), Some(Duration::ZERO), Some(every));
    }
    let builder = PeerConnectionBuilder::new()
        .with_configuration(config.build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            role,
            signal,
            observer,
        }));
    let builder = match options.network {
        Network::Udp | Network::RelayOnly => builder
            .with_setting_engine(settings.build())
            .with_udp_addrs(vec!["127.0.0.1:0"]),
        Network::UdpV6 => builder
            .with_setting_engine(settings.build())
            .with_udp_addrs(vec!["[::1]:0"]),
        Network::TcpOnly => builder
            .with_setting_engine(
                settings
                    .with_network_types(vec![rtc::ice::network_type::NetworkType::Tcp4])
                    .build(),
            )
            .with_udp_addrs(vec![])
            .with_tcp_addrs(vec!["127.0.0.1:0"]),
    };
    let pc = builder.build().await.map_err(ClientError::webrtc)?;
    Ok(Arc::new(pc))
}

/// The async `webrtc` client dials a passive TCP candidate only when it is
/// trickled (`add_ice_candidate`), not when it comes in a description, and
/// the server puts its candidates in its SDP only: the server's TCP
/// candidates of `sdp`, to trickle.
pub(crate) fn passive_tcp_candidates(sdp: &str) -> impl Iterator<Item = (String, String)> + '_ {
    sdp.lines().filter_map(|line| {
        let candidate = line.trim().strip_prefix("a=")?;
        // candidate:<foundation> <component> <transport> <priority> <ip> <port> typ …
        let fields: Vec<&str> = candidate.split_whitespace().collect();
        let passive_tcp = candidate.starts_with("candidate:")
            && fields.len() >= 6
            && fields[2].eq_ignore_ascii_case("tcp")
            && candidate.contains("tcptype passive");
        passive_tcp.then(|| (format!("{}:{}", fields[4], fields[5]), candidate.to_owned()))
    })
}
