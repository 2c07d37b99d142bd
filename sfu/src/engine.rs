//! Builds the `rtc` peer connections the SFU serves: which codecs, which
//! interceptors, and ICE-lite on the shared media socket and ICE-TCP port.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::TRANSPORT_CC_URI;
use rtc::shared::error::Error;

use crate::session::SfuError;

/// Transport-wide congestion control feedback (`a=rtcp-fb:<pt> transport-cc`).
fn transport_cc() -> RTCPFeedback {
    RTCPFeedback {
        typ: TYPE_RTCP_FB_TRANSPORT_CC.into(),
        parameter: String::new(),
    }
}

/// Codecs the SFU forwards. No RTX: the SFU asks publishers for
/// retransmissions with plain NACK and answers subscribers' NACKs from its
/// own send cache, so one SSRC per track is all there is to route.
///
/// Every codec carries `transport-cc`, and the transport-wide sequence
/// number extension is offered for audio and video: with both, a browser
/// runs its send-side estimate on the TWCC feedback the default chain's
/// receiver sends (docs/congestion-control.md). Named here rather than left
/// to `register_default_interceptors`, whose `register_feedback` only reaches
/// codecs registered before it runs.
fn register_codecs(media_engine: &mut MediaEngine) -> Result<(), Error> {
    let video_feedback = || {
        vec![
            RTCPFeedback {
                typ: "goog-remb".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            },
            transport_cc(),
        ]
    };
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![transport_cc()],
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
    }
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: TRANSPORT_CC_URI.into(),
            },
            kind,
            None,
        )?;
    }
    Ok(())
}

/// Lets keyframe requests (PLI, FIR) from subscribers reach the SFU, which
/// relays them to the publisher, and NACKs, which it counts (the NACK
/// responder still answers them: marking does not consume). All other RTCP
/// stays with the interceptors.
#[derive(Default)]
struct DeliverKeyframeRequests {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverKeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let wanted = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>()
                    || any.is::<FullIntraRequest>()
                    || any.is::<TransportLayerNack>()
            });
            if wanted {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Error> {
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for DeliverKeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// A fresh ICE-lite peer connection with two host candidates: the worker's
/// UDP socket `udp` and the shared ICE-TCP port `tcp` (`tcptype passive`).
/// Inbound packets must carry the matching candidate address as
/// `TransportContext.local_addr` (rtc-ice `Agent::find_local_candidate`).
pub fn new_peer_connection(
    udp: SocketAddr,
    tcp: SocketAddr,
    ufrag: &str,
    pwd: &str,
    now: Instant,
) -> Result<RTCPeerConnection, SfuError> {
    build(udp, tcp, ufrag, pwd, now).map_err(|e| SfuError::Internal(e.to_string()))
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
    udp: SocketAddr,
    tcp: SocketAddr,
    ufrag: &str,
    pwd: &str,
    now: Instant,
) -> Result<RTCPeerConnection, Error> {
    let mut media_engine = MediaEngine::default();
    register_codecs(&mut media_engine)?;
    let registry = Registry::new().with(Slot::from(14_000), DeliverKeyframeRequests::default());
    let registry = register_default_interceptors(registry, &mut media_engine)?;

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
