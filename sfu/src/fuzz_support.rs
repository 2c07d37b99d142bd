//! A worker's `Shard` with no sockets, driven by the fuzz targets (fuzz/):
//! SDP offers applied to a fresh participant's publisher transport, and
//! datagrams into connected transports, plain or protected with the
//! client's own SRTP context. Built on bench_support's in-memory clients.
//! Not part of the API.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::message::RTCMessage;
use rtc::shared::TransportProtocol;
use rtc::shared::marshal::Unmarshal;

use crate::bench_support::{self, ForwardingBench, ROOM, join_request};
use crate::session::LeaveReason;
use crate::shard::Shard;

/// The ICE username a STUN request names (`sfu/src/stun.rs`).
pub fn stun_ice_username(data: &[u8]) -> Option<String> {
    crate::stun::ice_username(data)
}

/// Whether `data` is a STUN Binding request (`sfu/src/stun.rs`).
pub fn stun_is_binding_request(data: &[u8]) -> bool {
    crate::stun::is_binding_request(data)
}

/// A shard into which every offer goes from a participant of its own.
pub struct OfferTarget {
    shard: Shard,
}

impl Default for OfferTarget {
    fn default() -> Self {
        OfferTarget {
            shard: bench_support::new_shard(Duration::from_millis(500)).0,
        }
    }
}

impl OfferTarget {
    /// Joins a participant, applies `sdp` as its publish offer as the
    /// signaling `publish_offer` does, and removes it again: the answer SDP,
    /// or why the offer was refused.
    pub fn apply(&mut self, sdp: &str) -> Result<String, String> {
        let now = Instant::now();
        let sid = self
            .shard
            .join(now, join_request("offerer"))
            .map_err(|e| format!("join: {e}"))?
            .participant
            .sid;
        let answer = self
            .shard
            .publish_offer(now, ROOM, &sid, sdp.to_owned())
            .map_err(|e| e.to_string());
        self.shard
            .remove_participant(now, ROOM, &sid, LeaveReason::Left);
        while self.shard.poll_transmit().is_some() {}
        while self.shard.poll_event().is_some() {}
        answer
    }
}

/// A publisher's offer for one VP8 track, as a browser-like client makes
/// it: a seed for the SDP fuzz target.
pub fn sample_offer() -> String {
    let now = Instant::now();
    let mut pc = bench_support::client(bench_support::loopback(2, 10_000), now);
    let offer = pc
        .add_track(bench_support::video_track(0x5eed))
        .ok()
        .and_then(|_| pc.create_offer(None).ok());
    offer
        .and_then(|o| pc.set_local_description(now, o).ok())
        .and_then(|()| pc.local_description())
        .map(|d| d.sdp)
        .unwrap_or_default()
}

/// Who a datagram comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Publisher,
    Subscriber,
}

/// A publisher and a subscriber connected through a shard (ICE, DTLS and
/// SRTP up), kept alive across inputs and built again when a transport
/// is lost.
pub struct MediaTarget {
    bench: ForwardingBench,
    last_pump: Instant,
    rebuilt: u64,
}

impl Default for MediaTarget {
    fn default() -> Self {
        MediaTarget {
            bench: ForwardingBench::new(1, 100),
            last_pump: Instant::now(),
            rebuilt: 0,
        }
    }
}

impl MediaTarget {
    /// Times the connected state had to be built again since the start.
    pub fn rebuilt(&self) -> u64 {
        self.rebuilt
    }

    /// `data` as a UDP datagram from `from`'s address: how many datagrams
    /// the shard sent out for it.
    pub fn datagram(&mut self, from: Sender, data: &[u8]) -> usize {
        self.deliver(from, &[BytesMut::from(data)])
    }

    /// `rtp` parsed as an RTP packet and sent by `from`'s client through
    /// its SRTP context; with `own_stream`, under the publisher's SSRC and
    /// payload type (what the shard forwards). Unparsable: nothing sent.
    pub fn rtp(&mut self, from: Sender, rtp: &[u8], own_stream: bool) -> usize {
        let mut raw = rtp;
        let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut raw) else {
            return 0;
        };
        let (track, ssrc) = self.bench.publisher_track();
        if own_stream {
            packet.header.ssrc = ssrc;
            packet.header.payload_type = 96;
        }
        let message = RTCMessage::RtpPacket(track.to_owned(), packet);
        let datagrams = self.bench.client_writes(subscriber(from), message);
        self.deliver(from, &datagrams)
    }

    /// `rtcp` parsed as a compound RTCP packet and sent by `from`'s client
    /// through its SRTP context. Unparsable: nothing sent.
    pub fn rtcp(&mut self, from: Sender, rtcp: &[u8]) -> usize {
        let mut raw = rtcp;
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut raw) else {
            return 0;
        };
        let message = RTCMessage::RtcpPacket(String::new(), packets);
        let datagrams = self.bench.client_writes(subscriber(from), message);
        self.deliver(from, &datagrams)
    }

    fn deliver(&mut self, from: Sender, datagrams: &[BytesMut]) -> usize {
        let Some(addr) = self.bench.client_addr(subscriber(from)) else {
            return 0;
        };
        let now = Instant::now();
        let shard = self.bench.shard_mut();
        for d in datagrams {
            shard.handle_datagram(now, TransportProtocol::UDP, addr, d);
        }
        let mut sent = 0;
        while shard.poll_transmit().is_some() {
            sent += 1;
        }
        self.keep_alive();
        sent
    }

    /// Lets ICE consent, DTLS and RTCP timers run every 100 ms of wall
    /// time; builds the state again if a transport went down.
    fn keep_alive(&mut self) {
        if self.last_pump.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.bench.pump_once();
        self.last_pump = Instant::now();
        if !self.bench.all_connected() {
            self.bench = ForwardingBench::new(1, 100);
            self.rebuilt += 1;
        }
    }
}

fn subscriber(from: Sender) -> Option<usize> {
    match from {
        Sender::Publisher => None,
        Sender::Subscriber => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_offer_is_answered_and_garbage_refused() {
        let mut target = OfferTarget::default();
        let offer = sample_offer();
        assert!(offer.contains("VP8"), "{offer}");
        let answer = target.apply(&offer).expect("answered");
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(target.apply("v=0\r\nnonsense").is_err());
        // Each offer had a participant of its own, gone again.
        assert_eq!(target.shard.list_participants(ROOM).unwrap().len(), 0);
    }

    #[test]
    fn protected_rtp_from_the_publisher_is_forwarded() {
        let mut target = MediaTarget::default();
        // Version 2, marker, PT 96, seq 7 + i, ts 9000, some SSRC, payload.
        let packet = |seq: u8| {
            let mut rtp = vec![0x80, 0xe0, 0, seq, 0, 0, 0x23, 0x28, 1, 2, 3, 4];
            rtp.extend_from_slice(&bench_support::vp8_keyframe_payload(40));
            rtp
        };
        // The first packets may meet the consumer before its payload type
        // is resolved (see bench_support); then one out per packet in.
        for seq in 7..12 {
            target.rtp(Sender::Publisher, &packet(seq), true);
        }
        let rtp = packet(12);
        assert_eq!(target.rtp(Sender::Publisher, &rtp, true), 1);
        // Unprotected, the same bytes are dropped by SRTP.
        assert_eq!(target.datagram(Sender::Publisher, &rtp), 0);
    }
}
