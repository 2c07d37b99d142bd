//! The shard on simulated time with one publishing client over a scripted
//! link: the client's address or transport changes, its traffic stops, or
//! the server's DTLS never reaches it; what the shard does about it.

mod transport;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::bench_support::{ROOM, client, join_request, loopback, new_shard, video_track};
use crate::route::Route;
use crate::session::ParticipantEvent;
use crate::shard::Shard;

const TICK: Duration = Duration::from_millis(10);
const SSRC: u32 = 0x5eed;

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
    seq: u16,
    connected: bool,
    /// The participant's sid, and its events not yet read.
    sid: String,
    events: Vec<ParticipantEvent>,
    /// Every datagram the server sent: when, where, and whether it was STUN.
    sent: Vec<(Instant, Route, bool)>,
    /// Loses server datagrams the filter picks.
    lose: LossFilter,
    /// Loses client datagrams the filter picks.
    lose_client: LossFilter,
    /// Each tick's client datagrams reach the server in reverse order.
    reverse_client: bool,
    /// Each tick's server datagrams reach the client in reverse order.
    reverse_server: bool,
    /// How long the server's datagrams take to reach the client.
    server_delay: Duration,
    /// Server datagrams on their way: when they arrive, and what.
    in_flight: VecDeque<(Instant, BytesMut)>,
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

fn udp(last: u8, port: u16) -> Route {
    (TransportProtocol::UDP, loopback(last, port))
}

impl Sim {
    /// A publishing client at `from`, joined and negotiated (not yet connected).
    fn new(from: Route) -> Sim {
        let start = Instant::now();
        let (mut shard, server) = new_shard(Duration::from_millis(500));
        let mut pc = client(loopback(2, 10_000), start);
        let sid = shard
            .join(start, join_request("alice"))
            .unwrap()
            .participant
            .sid;
        let sender = pc.add_track(video_track(SSRC)).unwrap();
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
            seq: 0,
            connected: false,
            sid,
            events: Vec::new(),
            sent: Vec::new(),
            lose: Box::new(|_| false),
            lose_client: Box::new(|_| false),
            reverse_client: false,
            reverse_server: false,
            server_delay: Duration::ZERO,
            in_flight: VecDeque::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// One tick: the client's timers and output, the shard's timers and
    /// output, and a video packet every other tick once connected.
    fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, payload)) = self.in_flight.pop_front() {
                self.deliver_to_client(now, payload);
            }
        }
        let _ = self.pc.handle_timeout(now);
        if self.connected && (self.elapsed().as_millis() / 10).is_multiple_of(2) {
            self.seq = self.seq.wrapping_add(1);
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: self.seq,
                    timestamp: u32::from(self.seq) * 3000,
                    ssrc: SSRC,
                    marker: true,
                    ..Default::default()
                },
                payload: Bytes::from_static(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]),
            };
            if let Some(mut sender) = self.pc.rtp_sender(self.sender) {
                let _ = sender.write_rtp(now, packet);
            }
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
        while self.pc.poll_read().is_some() {}
        self.shard.handle_timeout(now);
        while let Some((to, event)) = self.shard.poll_event() {
            if to == self.sid {
                self.events.push(event);
            }
        }
        let mut transmits = Vec::new();
        while let Some(t) = self.shard.poll_transmit() {
            transmits.push(t);
        }
        if self.reverse_server {
            transmits.reverse();
        }
        for t in transmits {
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
