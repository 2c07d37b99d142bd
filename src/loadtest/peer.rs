//! The simulated participants' peer connections: the async `webrtc` crate
//! on loopback UDP, no mDNS, default codecs and interceptors (as a real
//! client has), and received packets handed to the recorder.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::ice::mdns::MulticastDnsMode;
use tokio::sync::{Notify, mpsc};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCPeerConnectionIceEvent, RTCPeerConnectionState, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use callgate_client::{ClientMessage, IceCandidate, TransportRole};

use super::error::LoadTestError;
use super::media::MediaKind;
use super::payload::Mark;
use super::stats::Recorder;

/// The run's clock: microseconds since its epoch, shared by senders and
/// receivers (one process, so one clock).
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

struct Handler {
    participant: usize,
    target: TransportRole,
    signal: mpsc::UnboundedSender<ClientMessage>,
    recorder: Arc<Mutex<Recorder>>,
    clock: Clock,
    failed: Arc<Mutex<Vec<String>>>,
    arrivals: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.signal.send(ClientMessage::Candidate {
                target: self.target,
                candidate: IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_m_line_index: init.sdp_mline_index,
                },
            });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Failed {
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "participant {} {} transport failed",
                    self.participant,
                    self.target.as_str()
                ));
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let recorder = self.recorder.clone();
        let clock = self.clock;
        let participant = self.participant;
        let arrivals = self.arrivals.clone();
        tokio::spawn(async move {
            let kind = match track.kind().await {
                rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio => MediaKind::Audio,
                _ => MediaKind::Video,
            };
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        if let Some(mark) = Mark::find(kind, &p.payload) {
                            let now = clock.now_us();
                            let first = recorder
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .received(participant, &mark, p.payload.len(), now);
                            if first {
                                arrivals.notify_waiters();
                            }
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// What a peer connection reports to.
#[derive(Clone)]
pub struct PeerContext {
    pub participant: usize,
    pub signal: mpsc::UnboundedSender<ClientMessage>,
    pub recorder: Arc<Mutex<Recorder>>,
    pub clock: Clock,
    pub failures: Arc<Mutex<Vec<String>>>,
    /// Told when a track delivers its first packet to a participant.
    pub arrivals: Arc<Notify>,
}

/// A peer connection on one loopback UDP socket.
pub async fn new_peer(
    ctx: &PeerContext,
    target: TransportRole,
) -> Result<Arc<dyn PeerConnection>, LoadTestError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .map_err(LoadTestError::webrtc)?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .map_err(LoadTestError::webrtc)?;
    // No mDNS: it would multicast off loopback.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Answer `a=setup:active` and dial DTLS, as browsers do.
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Client)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(Arc::new(Handler {
            participant: ctx.participant,
            target,
            signal: ctx.signal.clone(),
            recorder: ctx.recorder.clone(),
            clock: ctx.clock,
            failed: ctx.failures.clone(),
            arrivals: ctx.arrivals.clone(),
        }))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .map_err(LoadTestError::webrtc)?;
    Ok(Arc::new(pc))
}
