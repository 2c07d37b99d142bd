//! Builds the `rtc` peer connections the SFU serves: which codecs, which
//! interceptors, and ICE-lite on the shared media socket and ICE-TCP port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{Attribute, Packet, Registry, Slot, TaggedPacket};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_simulcast_extension_headers,
    register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MIME_TYPE_VP9,
    MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sdp::extmap::{
    ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI,
};
use rtc::shared::error::Error;

use prometheus::IntCounter;

use crate::forgotten_layers::ForgottenLayers;
use crate::nack_limit::LimitResends;
use crate::packet_filter::{Filtered, PacketFilter};
use crate::session::{SfuError, TransportRole};
use crate::superseded_nacks::SkipSupersededNacks;

/// Packets behind the newest an SRTP receiver still accepts.
const SRTP_REPLAY_WINDOW: usize = 1024;

/// Transport-wide congestion control feedback (`a=rtcp-fb:<pt> transport-cc`).
fn transport_cc() -> RTCPFeedback {
    RTCPFeedback {
        typ: TYPE_RTCP_FB_TRANSPORT_CC.into(),
        parameter: String::new(),
    }
}

/// Codecs the SFU forwards. Publishers are asked for retransmissions with
/// plain NACK (no RTX), so one SSRC per stream is all there is to route;
/// subscribers may take RTX.
///
/// Congestion control by leg (docs/congestion-control.md):
/// - publisher transports carry `transport-cc` on every codec and the
///   transport-wide sequence number extension: the browser runs its
///   send-side estimate on the feedback rtc's TWCC receiver sends;
/// - subscriber transports carry `goog-remb` and abs-send-time, and with
///   `subscriber_transport_cc` (config `send_side_estimation`) transport-cc
///   too: we number what we send and the browser's feedback drives our own
///   send-side estimator (module `bwe`; rtc 0.21's `Gcc` was measured
///   unusable). Without it, the browser's REMB is the estimate.
///
/// Named here rather than left to `register_default_interceptors`, whose
/// `register_feedback` only reaches codecs registered before it runs.
fn register_codecs(
    media_engine: &mut MediaEngine,
    role: TransportRole,
    subscriber_transport_cc: bool,
) -> Result<(), Error> {
    let publisher = role == TransportRole::Publisher;
    let with_transport_cc = publisher || subscriber_transport_cc;
    let video_feedback = || {
        let mut feedback = vec![
            RTCPFeedback {
                typ: "goog-remb".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            },
        ];
        if with_transport_cc {
            feedback.push(transport_cc());
        }
        feedback
    };
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: if with_transport_cc {
                    vec![transport_cc()]
                } else {
                    vec![]
                },
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    let video = [
        (MIME_TYPE_VP8, "", 96),
        (MIME_TYPE_VP9, "profile-id=0", 98),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            102,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            106,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
            108,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032",
            104,
        ),
        (MIME_TYPE_AV1, "", 45),
    ];
    for (mime, fmtp, payload_type) in video {
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: mime.into(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: fmtp.into(),
                    rtcp_feedback: video_feedback(),
                },
                payload_type,
            },
            RtpCodecKind::Video,
        )?;
        // Toward subscribers, retransmissions go on an RTX stream (RFC
        // 4588) when the browser takes it: rtc's NACK responder answers
        // from its send cache on the consumer's RTX SSRC. Not offered to
        // publishers: rtc drops RTX that carries the repaired rid, which a
        // simulcast publisher's RTX does (docs/congestion-control.md).
        if !publisher {
            media_engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_RTX.into(),
                        clock_rate: 90000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={payload_type}"),
                        rtcp_feedback: vec![],
                    },
                    payload_type: payload_type + 1,
                },
                RtpCodecKind::Video,
            )?;
        }
    }
    let mut extensions = vec![
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
        (ABS_SEND_TIME_URI, RtpCodecKind::Audio),
        (ABS_SEND_TIME_URI, RtpCodecKind::Video),
    ];
    if with_transport_cc {
        extensions.push((TRANSPORT_CC_URI, RtpCodecKind::Audio));
        extensions.push((TRANSPORT_CC_URI, RtpCodecKind::Video));
    }
    for (uri, kind) in extensions {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: uri.into() },
            kind,
            None,
        )?;
    }
    Ok(())
}

/// Lets keyframe requests (PLI, FIR) from subscribers reach the SFU, which
/// relays them to the publisher, REMB (a subscriber's bandwidth estimate),
/// transport-wide congestion control feedback (what drives our send-side
/// estimate of a subscriber, module `bwe`), and NACKs, which it counts (the NACK responder still answers them:
/// marking does not consume). All other RTCP stays with the interceptors.
pub(crate) struct DeliverRtcp {
    /// Whether an RTCP packet goes to the application.
    wanted: fn(&dyn std::any::Any) -> bool,
}

impl DeliverRtcp {
    /// The interceptor delivering the inbound RTCP packets `wanted` picks
    /// (a compound packet goes whole if any of its parts is wanted).
    pub(crate) fn new(wanted: fn(&dyn std::any::Any) -> bool) -> Filtered<DeliverRtcp> {
        Filtered::new(DeliverRtcp { wanted })
    }

    /// What the SFU's own transports act on.
    fn for_the_sfu() -> Filtered<DeliverRtcp> {
        DeliverRtcp::new(|any| {
            any.is::<PictureLossIndication>()
                || any.is::<FullIntraRequest>()
                || any.is::<TransportLayerNack>()
                || any.is::<ReceiverEstimatedMaximumBitrate>()
                || any.is::<TransportLayerCc>()
        })
    }
}

impl PacketFilter for DeliverRtcp {
    fn read(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| (self.wanted)(p.as_any()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        Some(msg)
    }
}

/// A fresh ICE-lite peer connection with two host candidates: the worker's
/// UDP socket `udp` and the shared ICE-TCP port `tcp` (`tcptype passive`).
/// Inbound packets must carry the matching candidate address as
/// `TransportContext.local_addr` (rtc-ice `Agent::find_local_candidate`).
pub fn new_peer_connection(
    role: TransportRole,
    udp: SocketAddr,
    tcp: SocketAddr,
    ice: (&str, &str),
    hooks: &Hooks,
    now: Instant,
) -> Result<RTCPeerConnection, SfuError> {
    build(role, udp, tcp, ice, hooks, now).map_err(|e| SfuError::Internal(e.to_string()))
}

/// What the shard shares with interceptors of ours inside a peer
/// connection.
#[derive(Clone)]
pub struct Hooks {
    /// Publisher transports: simulcast layers rtc forgot on renegotiation,
    /// whose packets reach the shard past it (module `forgotten_layers`).
    pub forgotten: ForgottenLayers,
    /// Subscriber transports: counts packets a NACK asked for that are not
    /// sent again (module `nack_limit`).
    pub refused_resends: IntCounter,
    /// Publisher transports: counts lost packets not asked for because a
    /// newer keyframe superseded them (module `superseded_nacks`).
    pub superseded_nacks: IntCounter,
    /// Subscriber transports: offer transport-cc, so the subscriber's
    /// feedback drives our send-side estimate (config
    /// `send_side_estimation`); without it, its REMB is the estimate.
    pub send_side_estimation: bool,
}

impl Default for Hooks {
    /// Hooks whose counter is registered nowhere (tools, tests).
    fn default() -> Self {
        Hooks {
            forgotten: ForgottenLayers::default(),
            refused_resends: IntCounter::new("refused_resends", "unregistered")
                .expect("a valid counter name"),
            superseded_nacks: IntCounter::new("superseded_nacks", "unregistered")
                .expect("a valid counter name"),
            send_side_estimation: false,
        }
    }
}

fn host_candidate(
    pc: &mut RTCPeerConnection,
    network: &str,
    addr: SocketAddr,
    tcp_type: TcpType,
) -> Result<(), Error> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)
}

fn build(
    role: TransportRole,
    udp: SocketAddr,
    tcp: SocketAddr,
    (ufrag, pwd): (&str, &str),
    hooks: &Hooks,
    now: Instant,
) -> Result<RTCPeerConnection, Error> {
    let mut media_engine = MediaEngine::default();
    register_codecs(&mut media_engine, role, hooks.send_side_estimation)?;
    let registry = Registry::new().with(Slot::from(14_000), DeliverRtcp::for_the_sfu());
    let registry = match role {
        // Last on the way in: every interceptor of rtc's has seen a packet
        // before a forgotten layer's is taken.
        // Between rtc's NACK generator (7_000) and the wire on the way out
        // (module `superseded_nacks`).
        TransportRole::Publisher => register_default_interceptors(
            registry
                .with(Slot::from(14_500), hooks.forgotten.interceptor())
                .with(
                    Slot::from(6_500),
                    SkipSupersededNacks::new(hooks.superseded_nacks.clone()),
                ),
            &mut media_engine,
        )?,
        // The default chain without its TWCC receiver: nothing is received
        // on a subscriber transport. (transport-cc is negotiated all the
        // same, by `register_codecs`: the shard reads the subscriber's
        // feedback, `DeliverRtcp`.)
        TransportRole::Subscriber => {
            // Before the NACK responder on the way in (module `nack_limit`).
            let registry = registry.with(
                Slot::from(3_500),
                LimitResends::new(hooks.refused_resends.clone()),
            );
            let registry = configure_nack(registry, &mut media_engine);
            configure_simulcast_extension_headers(&mut media_engine)?;
            configure_rtcp_reports(registry)
        }
    };

    let setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // GCM costs about 40% less per packet than AES-CM (measured on
        // rtc 0.21's send path);
        // AES-CM stays for clients that lack GCM.
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        // ICE-lite needs no remote candidates (checks arrive peer-reflexive),
        // and resolving `.local` names would send multicast from media ports.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // rtc's ICE agent judges liveness from STUN alone (media and DTLS
        // do not count, and a client's consent checks come every 5 s), then
        // fails the connection for good. Zero turns its timers off; the
        // shard judges liveness from any traffic and keeps the session
        // through a reconnect instead.
        .with_ice_timeouts(Some(Duration::ZERO), Some(Duration::ZERO), None)
        // A publisher's retransmission (plain NACK, on the media SSRC) can
        // come 100+ packets after the original on a fast video stream; the
        // default 64-packet window would drop it as too old at SRTP, before
        // the TWCC receiver, which then reports it lost to the browser's
        // estimator.
        .with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW)
        .build();

    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)?;

    host_candidate(&mut pc, "udp", udp, TcpType::Unspecified)?;
    host_candidate(&mut pc, "tcp", tcp, TcpType::Passive)?;
    Ok(pc)
}
