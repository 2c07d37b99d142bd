//! The server's peer connection toward a publisher, alone, against an `rtc`
//! client in memory on simulated time: what its answer negotiates for
//! congestion control, the transport-wide feedback it sends back for the
//! publisher's media, and a REMB written through it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use callgate_sfu::bench_support::{client_with, loopback, video_track};
use callgate_sfu::engine::{Hooks, new_peer_connection};
use callgate_sfu::packet_filter::{Filtered, PacketFilter};
use rtc::interceptor::{Attribute, Packet, Slot, StreamInfo, TaggedPacket, convert_twcc};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_sender_only;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp;
use rtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Unmarshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
const VIDEO_SSRC: u32 = 0x5eed;
const AUDIO_SSRC: u32 = 0xa0d1;
const TICK: Duration = Duration::from_millis(5);

/// What the client's chain saw: the transport-wide sequence numbers its RTP
/// left with (after the TWCC sender numbered them).
#[derive(Default)]
struct Seen {
    sent_twcc: Vec<u16>,
}

/// Sits wire-most in the client's chain. On the way out it records the
/// transport-wide sequence number of every RTP packet; on the way in it
/// marks TWCC feedback and REMB for delivery to the application (the chain
/// ends inbound RTCP otherwise).
struct Wire {
    seen: Arc<Mutex<Seen>>,
    /// Header extension id of transport-cc per local SSRC.
    twcc_ids: Vec<(u32, u8)>,
}

impl PacketFilter for Wire {
    fn read(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let wanted = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<TransportLayerCc>() || any.is::<ReceiverEstimatedMaximumBitrate>()
            });
            if wanted {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        Some(msg)
    }
    fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(&(_, id)) = self
                .twcc_ids
                .iter()
                .find(|(ssrc, _)| *ssrc == packet.header.ssrc)
            && let Some(mut ext) = packet.header.get_extension(id)
            && let Ok(tcc) = TransportCcExtension::unmarshal(&mut ext)
        {
            self.seen
                .lock()
                .unwrap()
                .sent_twcc
                .push(tcc.transport_sequence);
        }
        Some(msg)
    }
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(ext) = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == TRANSPORT_CC_URI)
        {
            self.twcc_ids.push((info.ssrc, ext.id as u8));
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.twcc_ids.retain(|(ssrc, _)| *ssrc != info.ssrc);
    }
}

fn opus_track(ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "stream".into(),
        "audio".into(),
        "audio".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )
}

/// A publishing client (audio and video, TWCC sender on top of the default
/// chain) and the server's peer connection for it, negotiated, on a clock
/// the test advances.
struct Call {
    now: Instant,
    server: RTCPeerConnection,
    server_addr: SocketAddr,
    client: RTCPeerConnection,
    client_addr: SocketAddr,
    video: RTCRtpSenderId,
    seen: Arc<Mutex<Seen>>,
    answer: String,
    connected: bool,
    /// RTCP the client's application was handed.
    client_rtcp: Vec<Box<dyn rtcp::Packet>>,
    rtp_seq: u16,
}

impl Call {
    fn new() -> Call {
        let now = Instant::now();
        let server_addr = loopback(1, 7882);
        let client_addr = loopback(2, 10_000);
        let mut server = new_peer_connection(
            callgate_sfu::TransportRole::Publisher,
            server_addr,
            loopback(1, 7881),
            ("srvufrag", "serverpasswordserverpassword"),
            &Hooks::default(),
            now,
        )
        .expect("server peer connection");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let wire = Filtered::new(Wire {
            seen: seen.clone(),
            twcc_ids: Vec::new(),
        });
        let mut client = client_with(client_addr, now, |registry, media_engine| {
            configure_twcc_sender_only(registry, media_engine)
                .expect("twcc sender")
                .with(Slot::from(500), wire)
        });
        client.add_track(opus_track(AUDIO_SSRC)).expect("audio");
        let video = client.add_track(video_track(VIDEO_SSRC)).expect("video");
        let offer = client.create_offer(None).expect("offer");
        client.set_local_description(now, offer).expect("offer");
        let offer = client.local_description().expect("offer").sdp;
        server
            .set_remote_description(now, RTCSessionDescription::offer(offer).expect("sdp"))
            .expect("server takes the offer");
        let answer = server.create_answer(None).expect("answer");
        server.set_local_description(now, answer).expect("answer");
        let answer = server.local_description().expect("answer").sdp;
        client
            .set_remote_description(
                now,
                RTCSessionDescription::answer(answer.clone()).expect("sdp"),
            )
            .expect("client takes the answer");
        Call {
            now,
            server,
            server_addr,
            client,
            client_addr,
            video,
            seen,
            answer,
            connected: false,
            client_rtcp: Vec::new(),
            rtp_seq: 0,
        }
    }

    /// One tick: timers, then every datagram each way, then what each
    /// application is handed.
    fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        let _ = self.client.handle_timeout(now);
        let _ = self.server.handle_timeout(now);
        let mut moved = true;
        while moved {
            moved = false;
            let to_server: Vec<BytesMut> = std::iter::from_fn(|| self.client.poll_write())
                .map(|t| t.message)
                .collect();
            for message in to_server {
                moved = true;
                let _ = self.server.handle_read(TaggedBytesMut {
                    now,
                    transport: transport(self.server_addr, self.client_addr),
                    message,
                });
            }
            let to_client: Vec<BytesMut> = std::iter::from_fn(|| self.server.poll_write())
                .map(|t| t.message)
                .collect();
            for message in to_client {
                moved = true;
                let _ = self.client.handle_read(TaggedBytesMut {
                    now,
                    transport: transport(self.client_addr, self.server_addr),
                    message,
                });
            }
        }
        while let Some(event) = self.client.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.connected = state == RTCPeerConnectionState::Connected;
            }
        }
        while self.server.poll_event().is_some() {}
        while self.server.poll_read().is_some() {}
        while let Some(message) = self.client.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                self.client_rtcp.extend(packets);
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    fn connect(&mut self) {
        for _ in 0..2_000 {
            self.step();
            if self.connected {
                // The server's side completes on the client's next flight.
                self.run(Duration::from_millis(100));
                return;
            }
        }
        panic!("the client did not connect");
    }

    /// One video packet from the client (through its sender, so the TWCC
    /// sender numbers it).
    fn send_video(&mut self) {
        self.rtp_seq = self.rtp_seq.wrapping_add(1);
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: self.rtp_seq,
                timestamp: u32::from(self.rtp_seq) * 3000,
                ssrc: VIDEO_SSRC,
                ..Default::default()
            },
            payload: Bytes::from(vec![0xab; 1000]),
        };
        let now = self.now;
        self.client
            .rtp_sender(self.video)
            .expect("video sender")
            .write_rtp(now, packet)
            .expect("client writes video");
    }

    fn feedback(&self) -> impl Iterator<Item = &TransportLayerCc> {
        self.client_rtcp
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
    }
}

fn transport(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext {
        local_addr: local,
        peer_addr: peer,
        ecn: None,
        transport_protocol: TransportProtocol::UDP,
    }
}

/// The media sections of an SDP, each as its lines.
fn media_sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    sections
}

#[test]
fn the_answer_to_a_publisher_offer_negotiates_transport_cc_feedback_and_extension_for_audio_and_video()
 {
    let call = Call::new();
    let sections = media_sections(&call.answer);
    for kind in ["m=audio", "m=video"] {
        let section = sections
            .iter()
            .find(|s| s[0].starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} section in the answer:\n{}", call.answer));
        assert!(
            section
                .iter()
                .any(|l| l.starts_with("a=extmap:") && l.ends_with(TRANSPORT_CC_URI)),
            "{kind}: no transport-wide-cc extmap in the answer:\n{}",
            call.answer
        );
        // Every codec answered (not just one) carries transport-cc feedback.
        let payload_types: Vec<&str> = section[0].split(' ').skip(3).collect();
        assert!(!payload_types.is_empty());
        for pt in payload_types {
            assert!(
                section.contains(&format!("a=rtcp-fb:{pt} transport-cc").as_str()),
                "{kind}: payload type {pt} has no transport-cc feedback:\n{}",
                call.answer
            );
        }
    }
}

#[test]
fn the_server_reports_every_transport_wide_sequence_number_the_publisher_sent_as_received() {
    let mut call = Call::new();
    call.connect();
    for _ in 0..60 {
        call.send_video();
        call.run(Duration::from_millis(10));
    }
    // Feedback goes out every 100 ms; let the last of it come back.
    call.run(Duration::from_millis(300));

    let sent: BTreeSet<u16> = call
        .seen
        .lock()
        .unwrap()
        .sent_twcc
        .iter()
        .copied()
        .collect();
    assert_eq!(sent.len(), 60, "every video packet left with a number");

    let feedback: Vec<&TransportLayerCc> = call.feedback().collect();
    assert!(!feedback.is_empty(), "no TWCC feedback reached the client");
    for f in &feedback {
        assert_eq!(
            f.media_ssrc, VIDEO_SSRC,
            "feedback names the publisher's stream"
        );
    }
    let mut received = BTreeSet::new();
    let mut lost = BTreeSet::new();
    for f in &feedback {
        for ack in convert_twcc(f) {
            if ack.arrived {
                received.insert(ack.sequence_number);
            } else {
                lost.insert(ack.sequence_number);
            }
        }
    }
    assert_eq!(
        received, sent,
        "acknowledged as received: exactly what was sent"
    );
    assert!(
        lost.is_disjoint(&sent),
        "nothing sent is reported lost: {lost:?}"
    );
}

#[test]
fn a_remb_written_on_the_servers_receiver_reaches_the_publisher_with_its_bitrate() {
    let mut call = Call::new();
    call.connect();
    // The video receiver exists from the offer; its first packet binds the
    // stream (a REMB names the publisher's SSRC either way).
    call.send_video();
    call.run(Duration::from_millis(50));

    let now = call.now;
    let receivers: Vec<_> = call.server.get_receivers().collect();
    let mut written = false;
    for id in receivers {
        let mut receiver = call.server.rtp_receiver(id).expect("receiver");
        if receiver.track().kind() != RtpCodecKind::Video {
            continue;
        }
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 300_000.0,
            ssrcs: vec![VIDEO_SSRC],
        };
        receiver
            .write_rtcp(now, vec![Box::new(remb)])
            .expect("server writes the REMB");
        written = true;
    }
    assert!(written, "the server has a video receiver");
    call.run(Duration::from_millis(20));

    let rembs: Vec<&ReceiverEstimatedMaximumBitrate> = call
        .client_rtcp
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
        .collect();
    assert_eq!(rembs.len(), 1, "exactly the one REMB arrives");
    assert_eq!(rembs[0].ssrcs, vec![VIDEO_SSRC]);
    // REMB carries a 6-bit exponent and 18-bit mantissa: 300 000 fits exactly.
    assert_eq!(rembs[0].bitrate, 300_000.0);
}
