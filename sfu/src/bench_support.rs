//! A worker's `Shard` wired to in-memory `rtc` clients, with no sockets, so
//! benchmarks can time the forwarding path alone: one SRTP datagram from a
//! publisher in, one SRTP datagram per subscriber out. The fuzz targets
//! (`fuzz_support`) drive the same setup. Not part of the API.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::config::SfuConfig;
use crate::engine::DeliverRtcp;
use crate::metrics::SfuMetrics;
use crate::session::JoinRequest;
use crate::shard::Shard;

pub(crate) const ROOM: &str = "bench";
/// The publisher's track id (`MediaStreamTrack::new`'s second argument).
const TRACK_ID: &str = "video";

struct Peer {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    connected: bool,
    /// Sequence numbers of the RTP packets this peer has read.
    received: Vec<u16>,
    /// SRTP datagrams it got on an RTX stream.
    rtx_datagrams: usize,
    /// REMBs it received: (bits per second, the SSRCs they name).
    rembs: Vec<(f32, Vec<u32>)>,
}

/// `127.0.0.<last>:<port>`.
pub fn loopback(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
}

/// A client peer connection with the default codecs and interceptors and
/// one UDP host candidate at `addr`.
pub fn client(addr: SocketAddr, now: Instant) -> RTCPeerConnection {
    client_with(addr, now, |registry, _| registry)
}

/// [`client`], with `extend` adding interceptors (and what they register on
/// the media engine) to the default chain.
pub fn client_with(
    addr: SocketAddr,
    now: Instant,
    extend: impl FnOnce(Registry, &mut MediaEngine) -> Registry,
) -> RTCPeerConnection {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .expect("default codecs");
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).expect("interceptors");
    let registry = extend(registry, &mut media_engine);
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("client peer connection");
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("host candidate");
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().expect("json"))
        .expect("local candidate");
    pc
}

/// One publisher, `subscribers` subscribers, one VP8 track, all connected.
pub struct ForwardingBench {
    shard: Shard,
    server: SocketAddr,
    publisher: Peer,
    sender: Option<RTCRtpSenderId>,
    ssrc: u32,
    subscribers: Vec<Peer>,
    seq: u16,
    timestamp: u32,
    payload: Bytes,
    since_keepalive: u32,
}

impl ForwardingBench {
    pub fn new(subscribers: usize, payload_len: usize) -> ForwardingBench {
        Self::with_keyframe_interval(subscribers, payload_len, Duration::from_millis(500), true)
    }

    /// As [`ForwardingBench::new`] with send-side estimation off
    /// (`rtc.send_side_estimation = false`): subscribers are not offered
    /// transport-cc, so nothing forwarded is numbered transport-wide or
    /// recorded for an estimate.
    pub fn without_send_side_estimation(subscribers: usize, payload_len: usize) -> ForwardingBench {
        Self::with_keyframe_interval(subscribers, payload_len, Duration::from_millis(500), false)
    }

    fn with_keyframe_interval(
        subscribers: usize,
        payload_len: usize,
        keyframe_request_interval: Duration,
        send_side_estimation: bool,
    ) -> ForwardingBench {
        let now = Instant::now();
        let (mut shard, server) = new_shard(keyframe_request_interval);
        shard.set_send_side_estimation(send_side_estimation);
        let publisher_addr = loopback(2, 10_000);
        let mut bench = ForwardingBench {
            shard,
            server,
            publisher: Peer {
                // It reads the REMBs the server sends it.
                pc: client_with(publisher_addr, now, |registry, _| {
                    registry.with(
                        Slot::from(14_000),
                        DeliverRtcp::new(|any| any.is::<ReceiverEstimatedMaximumBitrate>()),
                    )
                }),
                addr: publisher_addr,
                connected: false,
                received: Vec::new(),
                rembs: Vec::new(),
                rtx_datagrams: 0,
            },
            sender: None,
            ssrc: 0x5eed,
            subscribers: Vec::new(),
            seq: 0,
            timestamp: 0,
            payload: Bytes::from(vp8_keyframe_payload(payload_len)),
            since_keepalive: 0,
        };
        bench.publish(now);
        for i in 0..subscribers {
            bench.subscribe(i);
        }
        bench
    }

    fn publish(&mut self, now: Instant) {
        let sid = self
            .shard
            .join(now, join_request("publisher"))
            .expect("publisher joins")
            .participant
            .sid;
        let track = video_track(self.ssrc);
        self.sender = Some(self.publisher.pc.add_track(track).expect("add_track"));
        let offer = self.publisher.pc.create_offer(None).expect("offer");
        self.publisher
            .pc
            .set_local_description(now, offer)
            .expect("local offer");
        let sdp = self
            .publisher
            .pc
            .local_description()
            .expect("offer sdp")
            .sdp;
        let answer = self
            .shard
            .publish_offer(now, ROOM, &sid, sdp)
            .expect("publish answer");
        self.publisher
            .pc
            .set_remote_description(now, RTCSessionDescription::answer(answer).expect("sdp"))
            .expect("remote answer");
        self.pump_until(|b| b.publisher.connected);
        // The producer opens with its first packet.
        let datagrams = self.next_datagrams();
        self.deliver(&datagrams);
        self.pump_until(|_| true);
    }

    fn subscribe(&mut self, index: usize) {
        let now = Instant::now();
        let sid = self
            .shard
            .join(now, join_request(&format!("subscriber-{index}")))
            .expect("subscriber joins")
            .participant
            .sid;
        let mut offer = None;
        while let Some((to, event)) = self.shard.poll_event() {
            if let crate::session::ParticipantEvent::SubscribeOffer { sdp } = event
                && to == sid
            {
                offer = Some(sdp);
            }
        }
        let offer = offer.unwrap_or_else(|| panic!("no subscribe offer for subscriber {index}"));
        let addr = loopback(3, 10_000 + index as u16);
        let mut pc = client(addr, now);
        pc.set_remote_description(now, RTCSessionDescription::offer(offer).expect("sdp"))
            .expect("remote offer");
        let answer = pc.create_answer(None).expect("answer");
        pc.set_local_description(now, answer).expect("local answer");
        let sdp = pc.local_description().expect("answer sdp").sdp;
        self.shard
            .subscribe_answer(now, ROOM, &sid, sdp)
            .expect("subscribe answer");
        self.subscribers.push(Peer {
            pc,
            addr,
            connected: false,
            received: Vec::new(),
            rembs: Vec::new(),
            rtx_datagrams: 0,
        });
        self.pump_until(|b| b.subscribers.last().is_some_and(|p| p.connected));
    }

    /// Moves datagrams both ways and fires timers until `done` holds.
    fn pump_until(&mut self, done: impl Fn(&ForwardingBench) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let moved = self.pump_once();
            if done(self) && !moved {
                return;
            }
            assert!(Instant::now() < deadline, "bench peers did not connect");
            if !moved {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// One round of traffic and timers; true when any datagram moved.
    pub(crate) fn pump_once(&mut self) -> bool {
        let now = Instant::now();
        let mut moved = false;
        let server = self.server;
        let mut to_server = Vec::new();
        for peer in std::iter::once(&mut self.publisher).chain(self.subscribers.iter_mut()) {
            let _ = peer.pc.handle_timeout(now);
            while let Some(out) = peer.pc.poll_write() {
                to_server.push((peer.addr, out.message));
            }
            while let Some(event) = peer.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                    peer.connected = state == RTCPeerConnectionState::Connected;
                }
            }
            while let Some(message) = peer.pc.poll_read() {
                match message.message {
                    RTCMessage::RtpPacket(_, packet) => {
                        peer.received.push(packet.header.sequence_number)
                    }
                    RTCMessage::RtcpPacket(_, packets) => {
                        peer.rembs.extend(packets.iter().filter_map(|p| {
                            let remb = p
                                .as_any()
                                .downcast_ref::<ReceiverEstimatedMaximumBitrate>()?;
                            Some((remb.bitrate, remb.ssrcs.clone()))
                        }))
                    }
                    _ => {}
                }
            }
        }
        for (from, payload) in to_server {
            moved = true;
            self.shard
                .handle_datagram(now, TransportProtocol::UDP, from, &payload);
        }
        self.shard.handle_timeout(now);
        let mut by_addr: HashMap<SocketAddr, &mut Peer> = std::iter::once(&mut self.publisher)
            .chain(self.subscribers.iter_mut())
            .map(|p| (p.addr, p))
            .collect();
        while let Some(t) = self.shard.poll_transmit() {
            if let Some(peer) = by_addr.get_mut(&t.to) {
                moved = true;
                if is_rtx(&t.payload) {
                    peer.rtx_datagrams += 1;
                }
                let _ = peer.pc.handle_read(TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: peer.addr,
                        peer_addr: server,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: t.payload,
                });
            }
        }
        moved
    }

    /// The SRTP datagrams of the next publisher packet (what a socket would
    /// hand the server). Not part of what `deliver` times.
    pub fn next_datagrams(&mut self) -> Vec<BytesMut> {
        self.since_keepalive += 1;
        if self.since_keepalive >= 2_000 {
            // Keep ICE and DTLS alive: consent checks, reports.
            self.since_keepalive = 0;
            self.pump_once();
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(3000);
        let now = Instant::now();
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: self.payload.clone(),
        };
        if let Some(mut sender) = self.sender.and_then(|id| self.publisher.pc.rtp_sender(id)) {
            sender.write_rtp(now, packet).expect("publisher writes");
        }
        drain_writes(&mut self.publisher.pc)
    }

    /// The datagrams the publisher's client (`None`) or subscriber `i`'s
    /// sends for `message`, protected with its SRTP context; what fails to
    /// be written yields none.
    pub(crate) fn client_writes(
        &mut self,
        subscriber: Option<usize>,
        message: RTCMessage,
    ) -> Vec<BytesMut> {
        let peer = match subscriber {
            None => &mut self.publisher,
            Some(i) => match self.subscribers.get_mut(i) {
                Some(p) => p,
                None => return Vec::new(),
            },
        };
        let now = Instant::now();
        if peer
            .pc
            .handle_write(TaggedRTCMessage { now, message })
            .is_err()
        {
            return Vec::new();
        }
        drain_writes(&mut peer.pc)
    }

    /// The publisher's track id, what its RTP is written under.
    pub(crate) fn publisher_track(&self) -> (&'static str, u32) {
        (TRACK_ID, self.ssrc)
    }

    /// The publisher's (`None`) or subscriber `i`'s address.
    pub(crate) fn client_addr(&self, subscriber: Option<usize>) -> Option<SocketAddr> {
        match subscriber {
            None => Some(self.publisher.addr),
            Some(i) => self.subscribers.get(i).map(|p| p.addr),
        }
    }

    /// Every client's transport is still connected.
    pub(crate) fn all_connected(&self) -> bool {
        self.publisher.connected && self.subscribers.iter().all(|p| p.connected)
    }

    pub(crate) fn shard_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }

    /// The forwarding path: datagrams into the shard, and every datagram it
    /// sends out taken from it. Returns how many went out.
    pub fn deliver(&mut self, datagrams: &[BytesMut]) -> usize {
        let now = Instant::now();
        for d in datagrams {
            self.shard
                .handle_datagram(now, TransportProtocol::UDP, self.publisher.addr, d);
        }
        let mut sent = 0;
        while self.shard.poll_transmit().is_some() {
            sent += 1;
        }
        sent
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.len()
    }
}

fn drain_writes(pc: &mut RTCPeerConnection) -> Vec<BytesMut> {
    let mut out = Vec::new();
    while let Some(d) = pc.poll_write() {
        out.push(d.message);
    }
    out
}

/// A worker's shard at 127.0.0.1:7882 (UDP) and :7881 (ICE-TCP) with no
/// room size limit; also returns its UDP address.
pub(crate) fn new_shard(keyframe_request_interval: Duration) -> (Shard, SocketAddr) {
    let server = loopback(1, 7882);
    let registry = prometheus::Registry::new();
    let metrics = SfuMetrics::new(&registry).expect("metrics").for_worker(0);
    let config = SfuConfig {
        max_participants: usize::MAX,
        keyframe_request_interval,
        ..SfuConfig::default()
    };
    (
        Shard::new(
            config,
            0,
            server,
            loopback(1, 7881),
            metrics,
            rand::SeedableRng::seed_from_u64(7),
        ),
        server,
    )
}

pub(crate) fn join_request(identity: &str) -> JoinRequest {
    JoinRequest {
        room: ROOM.into(),
        identity: identity.into(),
        name: identity.into(),
        can_publish: true,
        can_subscribe: true,
        can_publish_data: true,
        media_held: false,
    }
}

/// A VP8 payload of `len` bytes (at least 6) that starts a keyframe (RFC
/// 7741: S=1, partition 0, and the P bit of the payload header clear): a
/// consumer can start on any packet of the bench's stream.
pub fn vp8_keyframe_payload(len: usize) -> Vec<u8> {
    let mut payload = vec![0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a];
    payload.resize(len.max(payload.len()), 0xab);
    payload
}

/// Whether an SRTP datagram carries RTP of payload type 97: the server's
/// RTX for VP8 (`engine.rs` pairs each video payload type with the next).
fn is_rtx(datagram: &[u8]) -> bool {
    datagram.len() > 12 && (128..=191).contains(&datagram[0]) && datagram[1] & 0x7f == 97
}

/// The publisher's VP8 track, sent with `ssrc`.
pub fn video_track(ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "stream".into(),
        TRACK_ID.into(),
        "video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: vp8(),
            ..Default::default()
        }],
    )
}

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// One subscriber transport's send-side estimate (module `bwe`) fed as the
/// forwarding loop and the subscriber's feedback feed it: `packets` numbered
/// packets of 1,200 bytes sent evenly over 100 ms, then one transport-wide
/// feedback reporting every one of them arrived (20 ms later, with the
/// spacing they were sent at), as Chromium reports every 100 ms or less.
pub struct EstimatorBench {
    estimate: crate::bwe::TransportEstimate,
    start: Instant,
    rounds: u32,
    seq: u16,
    packets: u16,
}

impl EstimatorBench {
    const ROUND: Duration = Duration::from_millis(100);
    const PROPAGATION: Duration = Duration::from_millis(20);

    pub fn new(packets: u16) -> EstimatorBench {
        EstimatorBench {
            estimate: crate::bwe::TransportEstimate::default(),
            start: Instant::now(),
            rounds: 0,
            seq: 0,
            packets: packets.max(1),
        }
    }

    fn spacing(&self) -> Duration {
        Self::ROUND / u32::from(self.packets)
    }

    /// The feedback for the next round's packets (not timed: the receiver
    /// builds it, and reading it is part of `round`).
    pub fn next_feedback(
        &self,
    ) -> rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
            TransportLayerCc,
        };
        let first_arrival = (Self::ROUND * self.rounds + Self::PROPAGATION).as_micros() as i64;
        let reference = first_arrival / 64_000;
        let spacing = self.spacing().as_micros() as i64;
        let recv_deltas = (0..self.packets)
            .map(|i| RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: if i == 0 {
                    first_arrival - reference * 64_000
                } else {
                    spacing
                },
            })
            .collect();
        TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: self.seq,
            packet_status_count: self.packets,
            reference_time: reference as u32,
            fb_pkt_count: self.rounds as u8,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: self.packets,
            })],
            recv_deltas,
        }
    }

    /// One round: the packets recorded as sent, then `feedback` read and
    /// the estimate updated. Returns the estimate (bits per second).
    pub fn round(
        &mut self,
        feedback: &rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc,
    ) -> u64 {
        let round_start = self.start + Self::ROUND * self.rounds;
        let spacing = self.spacing();
        for i in 0..self.packets {
            self.estimate
                .on_sent(round_start + spacing * u32::from(i), self.seq, 1_200);
            self.seq = self.seq.wrapping_add(1);
        }
        self.rounds += 1;
        let heard_at = self.start + Self::ROUND * self.rounds + Self::PROPAGATION;
        self.estimate.on_feedback(heard_at, feedback);
        self.estimate.bps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SubscriptionSettings;

    impl ForwardingBench {
        /// Forwards the next packet, delivering it to every subscriber but
        /// those in `lose_for`; returns its sequence number.
        fn forward_losing(&mut self, lose_for: &[usize]) -> u16 {
            let datagrams = self.next_datagrams();
            let now = Instant::now();
            for d in &datagrams {
                self.shard
                    .handle_datagram(now, TransportProtocol::UDP, self.publisher.addr, d);
            }
            while let Some(t) = self.shard.poll_transmit() {
                let Some(i) = self.subscribers.iter().position(|p| p.addr == t.to) else {
                    continue;
                };
                if lose_for.contains(&i) {
                    continue;
                }
                let peer = &mut self.subscribers[i];
                let _ = peer.pc.handle_read(TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: peer.addr,
                        peer_addr: self.server,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: t.payload,
                });
            }
            self.seq
        }
    }

    /// Sends a PLI from subscriber `index` for the track it receives.
    fn subscriber_sends_pli(bench: &mut ForwardingBench, index: usize) {
        let now = Instant::now();
        let peer = &mut bench.subscribers[index];
        let receiver = peer.pc.get_receivers().next().expect("a receiver");
        let mut receiver = peer.pc.rtp_receiver(receiver).expect("receiver");
        let media_ssrc = receiver.track().ssrcs().next().expect("an ssrc");
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc,
        };
        receiver.write_rtcp(now, vec![Box::new(pli)]).expect("pli");
        bench.pump_once();
    }

    impl ForwardingBench {
        fn participant(&self, identity: &str) -> crate::session::ParticipantInfo {
            self.shard
                .list_participants(ROOM)
                .unwrap()
                .into_iter()
                .find(|p| p.identity == identity)
                .expect("joined")
        }

        fn subscriber_sid(&self, index: usize) -> String {
            self.participant(&format!("subscriber-{index}")).sid
        }

        /// The sid of the publisher's track.
        fn track_sid(&self) -> String {
            self.participant("publisher").tracks[0].sid.clone()
        }
    }

    /// Subscriber `index` tells the server its downlink takes `bps`.
    fn subscriber_sends_remb(bench: &mut ForwardingBench, index: usize, bps: f32) {
        let now = Instant::now();
        let peer = &mut bench.subscribers[index];
        let receiver = peer.pc.get_receivers().next().expect("a receiver");
        let mut receiver = peer.pc.rtp_receiver(receiver).expect("receiver");
        let media_ssrc = receiver.track().ssrcs().next().expect("an ssrc");
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: bps,
            ssrcs: vec![media_ssrc],
        };
        receiver
            .write_rtcp(now, vec![Box::new(remb)])
            .expect("remb");
        bench.pump_once();
        bench.pump_once();
    }

    /// Packets subscriber `index` gets of the next `count` the publisher sends.
    fn delivered(bench: &mut ForwardingBench, index: usize, count: usize) -> usize {
        let before = bench.subscribers[index].received.len();
        for _ in 0..count {
            bench.forward_losing(&[]);
        }
        bench.pump_once();
        bench.subscribers[index].received.len() - before
    }

    #[test]
    fn the_publisher_is_told_its_only_subscribers_estimate_never_below_the_minimum_and_released_when_hidden()
     {
        let mut bench = ForwardingBench::new(1, 300);
        let ssrc = bench.ssrc;
        assert!(delivered(&mut bench, 0, 10) >= 9);

        // A single video track takes the whole estimate (no audio here).
        subscriber_sends_remb(&mut bench, 0, 300_000.0);
        assert_eq!(bench.publisher.rembs, vec![(300_000.0, vec![ssrc])]);
        // A change of more than 10% goes out at once; a small one waits for
        // the once-a-second refresh.
        subscriber_sends_remb(&mut bench, 0, 310_000.0);
        assert_eq!(bench.publisher.rembs.len(), 1);
        subscriber_sends_remb(&mut bench, 0, 1_000_000.0);
        assert_eq!(bench.publisher.rembs[1], (1_000_000.0, vec![ssrc]));

        // Below what video is worth sending at, its only video still goes,
        // and the publisher is not pushed below that minimum.
        subscriber_sends_remb(&mut bench, 0, 50_000.0);
        assert!(delivered(&mut bench, 0, 10) >= 9);
        assert_eq!(bench.shard.metrics().drop_bandwidth.get(), 0);
        assert_eq!(bench.publisher.rembs.last(), Some(&(100_000.0, vec![ssrc])));

        // The subscriber hides the track: nobody limits the publisher any
        // more, and it is told so once (100 Mbit/s; REMB's 18-bit mantissa
        // rounds it).
        let rembs = bench.publisher.rembs.len();
        let (sid, track) = (bench.subscriber_sid(0), bench.track_sid());
        let hidden = SubscriptionSettings {
            disabled: true,
            ..Default::default()
        };
        let now = Instant::now();
        bench
            .shard
            .update_subscription(now, ROOM, &sid, &track, hidden)
            .unwrap();
        subscriber_sends_remb(&mut bench, 0, 400_000.0);
        assert_eq!(bench.publisher.rembs.len(), rembs + 1);
        assert!(bench.publisher.rembs[rembs].0 >= 99_000_000.0);

        // Shown again: limited to the subscriber's estimate again.
        bench
            .shard
            .update_subscription(now, ROOM, &sid, &track, SubscriptionSettings::default())
            .unwrap();
        subscriber_sends_remb(&mut bench, 0, 400_000.0);
        assert!(delivered(&mut bench, 0, 10) >= 9);
        assert_eq!(bench.publisher.rembs.last(), Some(&(400_000.0, vec![ssrc])));
    }

    #[test]
    fn a_consumer_waiting_for_a_keyframe_keeps_asking_for_one_at_the_throttle() {
        let mut bench =
            ForwardingBench::with_keyframe_interval(1, 300, Duration::from_millis(100), true);
        // From now on the publisher sends only delta frames (P bit set), as
        // a browser does between keyframes; then the subscriber pauses and
        // resumes (disabled, enabled), so its consumer waits for a keyframe.
        bench.payload = {
            let mut delta = vp8_keyframe_payload(300);
            delta[1] = 0x01;
            Bytes::from(delta)
        };
        let (room, sid) = (ROOM.to_owned(), bench.subscriber_sid(0));
        let track = bench.track_sid();
        let now = Instant::now();
        let hidden = SubscriptionSettings {
            disabled: true,
            ..Default::default()
        };
        bench
            .shard
            .update_subscription(now, &room, &sid, &track, hidden)
            .unwrap();
        bench.forward_losing(&[]);
        bench
            .shard
            .update_subscription(now, &room, &sid, &track, SubscriptionSettings::default())
            .unwrap();
        let before = bench.shard.metrics().plis.get();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(550) {
            bench.forward_losing(&[]);
        }
        // One request when it was enabled again, then one per 100 ms while
        // it waits: 5 or 6 in 550 ms (without asking again: at most 1).
        let asked = bench.shard.metrics().plis.get() - before;
        assert!((4..=7).contains(&asked), "{asked} keyframe requests");
        assert!(bench.shard.metrics().drop_awaiting_keyframe.get() > 10);
    }

    #[test]
    fn keyframe_requests_from_subscribers_reach_the_publisher_throttled() {
        let mut bench = ForwardingBench::with_keyframe_interval(2, 300, Duration::ZERO, true);
        let before = bench.shard.metrics().plis.get();
        subscriber_sends_pli(&mut bench, 0);
        subscriber_sends_pli(&mut bench, 1);
        assert_eq!(bench.shard.metrics().plis.get(), before + 2);

        let mut bench =
            ForwardingBench::with_keyframe_interval(2, 300, Duration::from_secs(3600), true);
        let before = bench.shard.metrics().plis.get();
        subscriber_sends_pli(&mut bench, 0);
        subscriber_sends_pli(&mut bench, 1);
        assert_eq!(bench.shard.metrics().plis.get(), before, "throttled");
    }

    #[test]
    fn a_lost_packet_is_resent_on_rtx_from_the_cache_when_the_subscriber_nacks() {
        let mut bench = ForwardingBench::new(2, 300);
        for _ in 0..5 {
            bench.forward_losing(&[]);
        }
        bench.pump_once();
        // Each consumer numbers its stream from its own random start: the
        // lost packet's number on each leg follows the last one before it.
        let before: Vec<u16> = bench
            .subscribers
            .iter()
            .map(|p| *p.received.last().expect("packets arrived"))
            .collect();
        bench.forward_losing(&[0]);
        let lost: Vec<u16> = before.iter().map(|seq| seq.wrapping_add(1)).collect();
        for _ in 0..5 {
            bench.forward_losing(&[]);
        }
        bench.pump_once();
        assert!(!bench.subscribers[0].received.contains(&lost[0]));
        assert!(bench.subscribers[1].received.contains(&lost[1]));
        // The subscriber's NACK generator asks for it; the server answers
        // from the send cache of that subscriber's track.
        bench.pump_until(|b| b.subscribers[0].received.contains(&lost[0]));
        // It came on the RTX stream (the subscriber's answer took RTX).
        assert!(bench.subscribers[0].rtx_datagrams >= 1);
        assert_eq!(bench.subscribers[1].rtx_datagrams, 0);
        assert!(bench.shard.metrics().nacks.get() >= 1);
    }

    #[test]
    fn one_packet_in_is_one_packet_out_per_subscriber() {
        let mut bench = ForwardingBench::new(3, 1000);
        // The first packets may still meet a consumer whose payload type is
        // being resolved; from then on it is exactly one out per subscriber.
        for _ in 0..5 {
            let d = bench.next_datagrams();
            bench.deliver(&d);
        }
        for _ in 0..50 {
            let d = bench.next_datagrams();
            assert_eq!(d.len(), 1);
            assert_eq!(bench.deliver(&d), 3);
        }
    }
}
