//! The shard on simulated time, driven tick by tick with `rtc` clients on
//! the other side of scripted links: a publishing client whose address or
//! transport changes, whose traffic stops or is lost, or whose DTLS meets
//! loss and reordering (module `transport`); and a simulcast publisher
//! with a subscriber behind a bandwidth-limited link that reports scripted
//! estimates (module `layers`). No sockets, no sleeps: every `Instant` is
//! simulated, and nothing is random but rtc's keys (the shard's own
//! randomness is seeded).

mod layers;
mod link;
mod resends;
mod send_side;
mod simulcast;
mod subscriber;
mod transport;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Slot;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::bench_support::{ROOM, client_with, join_request, loopback, new_shard, video_track};
use crate::engine::DeliverRtcp;
use crate::route::Route;
use crate::session::ParticipantEvent;
use crate::shard::Shard;
use link::Link;
use simulcast::{Encoder, FRAME_INTERVAL};
use subscriber::{Feedback, RembScript, Subscriber};

const TICK: Duration = Duration::from_millis(10);
const SSRC: u32 = 0x5eed;

/// What the publishing client sends once connected.
enum Media {
    /// One VP8 stream on `SSRC`: a small packet every other tick.
    Single { seq: u16 },
    /// Three simulcast layers (module `simulcast`), a frame each every
    /// `FRAME_INTERVAL`.
    Simulcast(Encoder),
}

/// The shard, its publishing client, and at most one subscribing client.
/// The publisher's link is scripted by the fields below (loss, reordering,
/// delay, address changes); the subscriber's downlink is a [`Link`].
struct Sim {
    shard: Shard,
    server: SocketAddr,
    start: Instant,
    now: Instant,
    pc: RTCPeerConnection,
    /// Where the client's datagrams come from now; `None`: it sends nothing.
    from: Option<Route>,
    /// Where the server must send for the client to get it (its NAT's
    /// mapping now): datagrams to elsewhere are lost.
    listens: Route,
    /// The client's own socket, which never moves (the NAT's does).
    local: SocketAddr,
    sender: RTCRtpSenderId,
    media: Media,
    connected: bool,
    /// The participant's sid, and its events not yet read.
    sid: String,
    events: Vec<ParticipantEvent>,
    /// Every datagram the server sent but the subscriber's: when, where,
    /// and whether it was STUN.
    sent: Vec<(Instant, Route, bool)>,
    /// Loses server datagrams the filter picks.
    lose: LossFilter,
    /// Loses client datagrams the filter picks.
    lose_client: LossFilter,
    /// Loses datagrams to the subscriber the filter picks, before its
    /// downlink.
    lose_to_subscriber: LossFilter,
    /// Each tick's client datagrams reach the server in reverse order.
    reverse_client: bool,
    /// Each tick's server datagrams reach the client in reverse order.
    reverse_server: bool,
    /// How long the server's datagrams take to reach the client.
    server_delay: Duration,
    /// Server datagrams on their way: when they arrive, and what.
    in_flight: VecDeque<(Instant, BytesMut)>,
    subscriber: Option<Subscriber>,
}

type LossFilter = Box<dyn FnMut(&[u8]) -> bool>;

/// Loses the first datagram `matches` picks, and no other.
fn lose_first(matches: impl Fn(&[u8]) -> bool + 'static) -> LossFilter {
    let mut lost = false;
    Box::new(move |d| {
        let lose = !lost && matches(d);
        lost |= lose;
        lose
    })
}

/// An SRTP datagram's RTP sequence number and SSRC (the header is not
/// encrypted); `None` for RTCP and anything else.
pub(super) fn rtp_header(datagram: &[u8]) -> Option<(u16, u32)> {
    let is_rtp =
        datagram.len() >= 12 && datagram[0] >> 6 == 2 && !(192..=223).contains(&datagram[1]);
    is_rtp.then(|| {
        (
            u16::from_be_bytes([datagram[2], datagram[3]]),
            u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
        )
    })
}

fn udp(last: u8, port: u16) -> Route {
    (TransportProtocol::UDP, loopback(last, port))
}

impl Sim {
    /// A publishing client at `from` sending one stream, joined and
    /// negotiated (not yet connected).
    fn new(from: Route) -> Sim {
        Sim::publishing(from, video_track(SSRC), Media::Single { seq: 0 })
    }

    /// A publishing client sending three simulcast layers, a keyframe on
    /// each every `keyframe_every` frames and when asked; joined and
    /// negotiated (not yet connected).
    fn simulcast(keyframe_every: u32) -> Sim {
        let encoder = Encoder::new(keyframe_every);
        let mut sim = Sim::publishing(
            udp(2, 10_000),
            simulcast::track(),
            Media::Simulcast(encoder),
        );
        // What a browser's simulcast offer says (RFC 8853).
        let offer = sim.pc.local_description().expect("the offer").sdp;
        for line in ["a=rid:q send", "a=rid:h send", "a=rid:f send"] {
            assert!(offer.contains(line), "no {line} in\n{offer}");
        }
        assert!(offer.contains("a=simulcast:send q;h;f"), "{offer}");
        if let Media::Simulcast(encoder) = &mut sim.media {
            encoder.negotiated(&mut sim.pc, sim.sender);
        }
        sim
    }

    fn publishing(from: Route, track: rtc::media_stream::MediaStreamTrack, media: Media) -> Sim {
        let start = Instant::now();
        let (mut shard, server) = new_shard(Duration::from_millis(500));
        // It reads the keyframe requests the server sends it.
        let mut pc = client_with(loopback(2, 10_000), start, |registry, _| {
            registry.with(
                Slot::from(14_000),
                DeliverRtcp::new(|any| any.is::<PictureLossIndication>()),
            )
        });
        let sid = shard
            .join(start, join_request("alice"))
            .unwrap()
            .participant
            .sid;
        let sender = pc.add_track(track).unwrap();
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(start, offer).unwrap();
        let sdp = pc.local_description().unwrap().sdp;
        let answer = shard.publish_offer(start, ROOM, &sid, sdp).unwrap();
        pc.set_remote_description(start, RTCSessionDescription::answer(answer).unwrap())
            .unwrap();
        Sim {
            shard,
            server,
            start,
            now: start,
            pc,
            from: Some(from),
            listens: from,
            local: loopback(2, 10_000),
            sender,
            media,
            connected: false,
            sid,
            events: Vec::new(),
            sent: Vec::new(),
            lose: Box::new(|_| false),
            lose_client: Box::new(|_| false),
            lose_to_subscriber: Box::new(|_| false),
            reverse_client: false,
            reverse_server: false,
            server_delay: Duration::ZERO,
            in_flight: VecDeque::new(),
            subscriber: None,
        }
    }

    /// A second participant joins to receive the publisher's track over
    /// `downlink`, sending a REMB of what `remb` says every `remb_every`
    /// once connected. Its subscribe offers are answered as they come.
    fn subscribe(&mut self, downlink: Link, remb_every: Duration, remb: RembScript) {
        self.join_subscriber(downlink, remb_every, remb, Feedback::Remb);
    }

    fn join_subscriber(
        &mut self,
        downlink: Link,
        remb_every: Duration,
        remb: RembScript,
        feedback: Feedback,
    ) {
        self.subscriber = Some(Subscriber::join(
            &mut self.shard,
            self.now,
            downlink,
            remb_every,
            remb,
            feedback,
        ));
    }

    /// A second participant joins to receive the publisher's track over
    /// `downlink`, sending transport-wide congestion control feedback and
    /// no REMB: the shard's send-side estimate is its estimate.
    fn subscribe_send_side(&mut self, downlink: Link) {
        self.subscribe_with_feedback(downlink, Duration::from_secs(1), Box::new(|_, _| None));
    }

    /// As `subscribe_send_side`, and also sending a REMB of what `remb`
    /// says every `remb_every`.
    fn subscribe_with_feedback(&mut self, downlink: Link, remb_every: Duration, remb: RembScript) {
        self.shard.set_send_side_estimation(true);
        self.join_subscriber(downlink, remb_every, remb, Feedback::TransportWide);
    }

    /// The subscriber (`subscribe` was called).
    fn sub(&self) -> &Subscriber {
        self.subscriber.as_ref().expect("a subscriber")
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// One tick: the clients' timers and output, the shard's timers and
    /// output, and the publisher's media once connected.
    fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, payload)) = self.in_flight.pop_front() {
                self.deliver_to_client(now, payload);
            }
        }
        let _ = self.pc.handle_timeout(now);
        if self.connected {
            self.send_media(now);
        }
        let mut outs = Vec::new();
        while let Some(out) = self.pc.poll_write() {
            outs.push(out.message);
        }
        if self.reverse_client {
            outs.reverse();
        }
        for out in outs {
            if (self.lose_client)(&out) {
                continue;
            }
            if let Some((protocol, addr)) = self.from {
                self.shard.handle_datagram(now, protocol, addr, &out);
            }
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.connected = state == RTCPeerConnectionState::Connected;
            }
        }
        self.read_keyframe_requests();
        if let Some(sub) = &mut self.subscriber {
            sub.step(now, now - self.start, &mut self.shard);
        }
        self.shard.handle_timeout(now);
        self.take_events(now);
        let mut transmits = Vec::new();
        while let Some(t) = self.shard.poll_transmit() {
            transmits.push(t);
        }
        if self.reverse_server {
            transmits.reverse();
        }
        for t in transmits {
            if let Some(sub) = self.subscriber.as_mut().filter(|s| s.addr == t.to) {
                if !(self.lose_to_subscriber)(&t.payload) {
                    sub.downlink.send(now, t.payload);
                }
                continue;
            }
            let route = (t.protocol, t.to);
            let stun = t.payload.first().is_some_and(|b| *b < 4);

            self.sent.push((now, route, stun));
            if route != self.listens || (self.lose)(&t.payload) {
                continue;
            }
            if self.server_delay.is_zero() {
                self.deliver_to_client(now, t.payload);
            } else {
                self.in_flight
                    .push_back((now + self.server_delay, t.payload));
            }
        }
        if let Some(sub) = &mut self.subscriber {
            sub.deliver(now, self.server);
        }
    }

    /// The publisher's packets due this tick: a small one every other tick
    /// for a single stream, a frame of each layer every `FRAME_INTERVAL`
    /// for simulcast.
    fn send_media(&mut self, now: Instant) {
        let elapsed = self.elapsed();
        let packets = match &mut self.media {
            Media::Single { seq } if (elapsed.as_millis() / 10).is_multiple_of(2) => {
                *seq = seq.wrapping_add(1);
                vec![rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type: 96,
                        sequence_number: *seq,
                        timestamp: u32::from(*seq) * 3000,
                        ssrc: SSRC,
                        marker: true,
                        ..Default::default()
                    },
                    payload: Bytes::from_static(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]),
                }]
            }
            Media::Simulcast(encoder)
                if elapsed.as_nanos().is_multiple_of(FRAME_INTERVAL.as_nanos()) =>
            {
                encoder.frame()
            }
            _ => return,
        };
        if let Some(mut sender) = self.pc.rtp_sender(self.sender) {
            for packet in packets {
                let _ = sender.write_rtp(now, packet);
            }
        }
    }

    /// What the publisher read: a simulcast encoder answers each PLI with
    /// a keyframe of that layer.
    fn read_keyframe_requests(&mut self) {
        while let Some(message) = self.pc.poll_read() {
            if let (RTCMessage::RtcpPacket(_, packets), Media::Simulcast(encoder)) =
                (message.message, &mut self.media)
            {
                for p in packets {
                    if let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() {
                        encoder.keyframe_asked(pli.media_ssrc);
                    }
                }
            }
        }
    }

    /// The shard's events: the publisher's are kept for the test (and a
    /// simulcast encoder follows dynacast, as the SDK does: the layers
    /// nobody receives stop); the subscriber answers its offers.
    fn take_events(&mut self, now: Instant) {
        while let Some((to, event)) = self.shard.poll_event() {
            if to == self.sid {
                if let (ParticipantEvent::SubscribedLayers { layers, .. }, Media::Simulcast(e)) =
                    (&event, &mut self.media)
                {
                    for layer in layers {
                        e.set_active(&layer.rid, layer.active);
                    }
                }
                self.events.push(event);
            } else if let Some(sub) = self.subscriber.as_mut().filter(|s| s.sid == to)
                && let ParticipantEvent::SubscribeOffer { sdp } = event
            {
                sub.answer(&mut self.shard, now, sdp);
            }
        }
    }

    fn deliver_to_client(&mut self, now: Instant, message: BytesMut) {
        let _ = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message,
        });
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    /// Steps until the client is connected or `limit` has passed.
    fn run_until_connected_within(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        while !self.connected && self.now < deadline {
            self.step();
        }
    }

    fn run_until_connected(&mut self) {
        let deadline = self.now + Duration::from_secs(20);
        while !self.connected {
            assert!(self.now < deadline, "the client did not connect");
            self.step();
        }
    }

    /// Where the server sent media, RTCP and DTLS since `since`.
    fn media_routes_since(&self, since: Instant) -> Vec<Route> {
        let mut routes: Vec<Route> = self
            .sent
            .iter()
            .filter(|(at, _, stun)| *at >= since && !stun)
            .map(|(_, r, _)| *r)
            .collect();
        routes.dedup();
        routes
    }

    /// The participant's own events since they were last read.
    fn events(&mut self) -> Vec<ParticipantEvent> {
        std::mem::take(&mut self.events)
    }
}
