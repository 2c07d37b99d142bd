//! The subscribing client: an `rtc` peer connection that answers the
//! shard's subscribe offers, reads what arrives over its downlink (a
//! [`Link`]), records every RTP packet it reads, and either reports a
//! scripted bandwidth estimate (REMB) on a schedule, as a browser's
//! receive-side estimator would, or sends transport-wide congestion
//! control feedback (rtc's TWCC receiver, every 100 ms) for the shard's
//! own send-side estimator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::interceptor::{NackGeneratorBuilder, Slot};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::link::Link;
use super::simulcast::layer_of;
use crate::bench_support::{ROOM, client_with, join_request, loopback};
use crate::shard::Shard;
use crate::vp8;

/// The estimate to report now, in bits per second (`None`: no REMB this
/// time), given the time since the simulation began and the downlink.
pub(super) type RembScript = Box<dyn FnMut(Duration, &Link) -> Option<f32>>;

/// How many times the subscriber asks for one lost packet.
const MAX_NACKS_PER_PACKET: u16 = 10;

/// One RTP packet the subscriber read, as it read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Received {
    pub at: Instant,
    pub seq: u16,
    pub timestamp: u32,
    /// The publisher's layer it was sent on (`simulcast::LAYERS` index).
    pub layer: usize,
    /// It starts a VP8 keyframe.
    pub keyframe: bool,
    /// Its sequence number is not after every one read before: resent
    /// after a NACK (or reordered).
    pub late: bool,
}

pub(super) struct Subscriber {
    pc: RTCPeerConnection,
    pub addr: SocketAddr,
    pub sid: String,
    pub connected: bool,
    /// The server's datagrams to it.
    pub downlink: Link,
    remb: RembScript,
    remb_every: Duration,
    next_remb: Option<Instant>,
    /// Every RTP packet it read, in order.
    pub received: Vec<Received>,
    /// The newest sequence number read.
    newest: Option<u16>,
    /// Its answers accept the transport-wide sequence number, so the
    /// shard numbers what it sends and rtc's TWCC receiver reports it.
    transport_wide: bool,
}

/// How the subscriber tells the shard what its downlink takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feedback {
    /// Scripted REMB only: its answers decline transport-wide congestion
    /// control, as a client that only offers REMB would.
    Remb,
    /// Transport-wide feedback (and whatever the REMB script says).
    TransportWide,
}

impl Subscriber {
    /// Joins `shard`'s room as "bob" (its offer comes as an event).
    pub(super) fn join(
        shard: &mut Shard,
        now: Instant,
        downlink: Link,
        remb_every: Duration,
        remb: RembScript,
        feedback: Feedback,
    ) -> Subscriber {
        let addr = loopback(3, 20_000);
        let sid = shard
            .join(now, join_request("bob"))
            .expect("the subscriber joins")
            .participant
            .sid;
        // As many asks per lost packet as a browser makes (libwebrtc's
        // NackRequester: 10). A browser also stops once it has decoded a
        // keyframe after the packet, which rtc's generator cannot; every
        // 100 ms for as long as the packet is in its window, 10 asks on a
        // capped downlink kept the link full of resends until the server
        // bounded them (module `nack_limit`: test d fails without it).
        let pc = client_with(addr, now, |registry, _| {
            registry.with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                    .build(),
            )
        });
        Subscriber {
            pc,
            addr,
            sid,
            connected: false,
            downlink,
            remb,
            remb_every,
            next_remb: None,
            received: Vec::new(),
            newest: None,
            transport_wide: feedback == Feedback::TransportWide,
        }
    }

    /// Answers the shard's subscribe offer.
    pub(super) fn answer(&mut self, shard: &mut Shard, now: Instant, offer: String) {
        let offer = RTCSessionDescription::offer(offer).expect("offer sdp");
        self.pc
            .set_remote_description(now, offer)
            .expect("remote offer");
        let answer = self.pc.create_answer(None).expect("answer");
        self.pc
            .set_local_description(now, answer)
            .expect("local answer");
        let mut sdp = self.pc.local_description().expect("answer sdp").sdp;
        if !self.transport_wide {
            // Without the extension the shard numbers nothing, and rtc's
            // TWCC receiver has nothing to report.
            sdp = sdp
                .split_inclusive('\n')
                .filter(|line| {
                    !line.contains("transport-wide-cc") && !line.contains("transport-cc")
                })
                .collect();
        }
        shard
            .subscribe_answer(now, ROOM, &self.sid, sdp)
            .expect("subscribe answer");
    }

    /// Its timers, its REMB when due, and its datagrams to the shard.
    pub(super) fn step(&mut self, now: Instant, elapsed: Duration, shard: &mut Shard) {
        let _ = self.pc.handle_timeout(now);
        if self.connected && self.next_remb.is_none_or(|at| at <= now) {
            self.next_remb = Some(now + self.remb_every);
            if let Some(bps) = (self.remb)(elapsed, &self.downlink) {
                self.send_remb(now, bps);
            }
        }
        while let Some(out) = self.pc.poll_write() {
            shard.handle_datagram(now, TransportProtocol::UDP, self.addr, &out.message);
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.connected = state == RTCPeerConnectionState::Connected;
            }
        }
        self.read(now);
    }

    /// What its downlink delivered by `now`.
    pub(super) fn deliver(&mut self, now: Instant, server: SocketAddr) {
        for message in self.downlink.arrived(now) {
            let _ = self.pc.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: self.addr,
                    peer_addr: server,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message,
            });
        }
        self.read(now);
    }

    fn read(&mut self, now: Instant) {
        while let Some(message) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message.message {
                let seq = packet.header.sequence_number;
                let late = self
                    .newest
                    .is_some_and(|newest| seq.wrapping_sub(newest).wrapping_sub(1) >= 1 << 15);
                if !late {
                    self.newest = Some(seq);
                }
                self.received.push(Received {
                    late,
                    at: now,
                    seq,
                    timestamp: packet.header.timestamp,
                    layer: layer_of(&packet.payload).expect("a payload naming its layer"),
                    keyframe: vp8::is_keyframe_start(&packet.payload),
                });
            }
        }
    }

    /// A REMB for the track it receives, written as its RTCP.
    fn send_remb(&mut self, now: Instant, bps: f32) {
        let Some(id) = self.pc.get_receivers().next() else {
            return;
        };
        let Some(mut receiver) = self.pc.rtp_receiver(id) else {
            return;
        };
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: bps,
            ssrcs: receiver.track().ssrcs().collect(),
        };
        let _ = receiver.write_rtcp(now, vec![Box::new(remb)]);
    }

    /// The packets read in sequence (not `late`).
    pub(super) fn in_order(&self) -> impl Iterator<Item = &Received> {
        self.received.iter().filter(|r| !r.late)
    }

    /// The layer of the last packet read in sequence, if any.
    pub(super) fn layer(&self) -> Option<usize> {
        self.in_order().last().map(|r| r.layer)
    }

    /// Each change of layer in what it read in sequence: the first packet
    /// of the new layer.
    pub(super) fn switches(&self) -> Vec<Received> {
        let in_order: Vec<Received> = self.in_order().copied().collect();
        in_order
            .windows(2)
            .filter(|w| w[0].layer != w[1].layer)
            .map(|w| w[1])
            .collect()
    }

    /// How long it read each layer (`simulcast::LAYERS` index) since
    /// `since`, and its longest unbroken stay on the top one, by the
    /// packets it read in sequence.
    pub(super) fn time_on_layers(&self, since: Instant) -> ([Duration; 3], Duration) {
        let read: Vec<_> = self.in_order().filter(|r| r.at >= since).collect();
        let mut on = [Duration::ZERO; 3];
        let (mut on_top, mut longest_on_top) = (Duration::ZERO, Duration::ZERO);
        for pair in read.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            on[a.layer] += b.at - a.at;
            on_top = if a.layer == on.len() - 1 {
                on_top + (b.at - a.at)
            } else {
                Duration::ZERO
            };
            longest_on_top = longest_on_top.max(on_top);
        }
        (on, longest_on_top)
    }
}
