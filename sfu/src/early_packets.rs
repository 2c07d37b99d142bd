//! Packets that arrived ahead of the keyframe a consumer waits for.
//!
//! A consumer that switches layer, resumes after a pause or an outage, or
//! starts, may begin only at a keyframe's first packet. On a link that
//! reorders (mobile jitter), a keyframe's packets arrive in any order, so
//! that first packet often comes after some of the others. Dropping those
//! leaves the keyframe with a hole the subscriber NACKs in vain (we never
//! sent the packets, so we have nothing to resend), and it shows nothing
//! until it asks for another keyframe, about 3 s later in Chromium. Seen in
//! the lossy-link browser test with simulcast: a move up to `h` froze the
//! subscriber for the rest of the call's 15 s window.
//!
//! So while a consumer waits for a keyframe of a stream, the stream's
//! packets it drops are kept here, a bounded number for a short time, and
//! a consumer that starts at a keyframe's first packet is given the kept
//! packets that come after it, in sequence order, at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::rtp;

/// The most packets kept: a 720p keyframe is up to about 60.
const MOST_PACKETS: usize = 128;
/// How long a packet is kept: past any reordering worth waiting for.
const KEEP_FOR: Duration = Duration::from_millis(500);
/// How far past the keyframe's first packet a kept one may be (sequence
/// numbers), so numbers from before a wrap never count as after it.
const MOST_AFTER: u16 = 1_024;

/// One producer's packets that arrived while a consumer waited for a
/// keyframe of their stream.
#[derive(Debug, Default)]
pub(crate) struct EarlyPackets {
    /// When each arrived, oldest first.
    packets: VecDeque<(Instant, rtp::Packet)>,
}

impl EarlyPackets {
    /// Keeps `packet`, which a consumer waiting for a keyframe of its
    /// stream did not take; forgets what is too old or too many.
    pub(crate) fn keep(&mut self, now: Instant, packet: &rtp::Packet) {
        while self
            .packets
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > KEEP_FOR)
            || self.packets.len() >= MOST_PACKETS
        {
            self.packets.pop_front();
        }
        self.packets.push_back((now, packet.clone()));
    }

    /// The kept packets of stream `ssrc` after sequence number `start` (a
    /// keyframe's first packet), in sequence order, each once.
    pub(crate) fn after(&self, ssrc: u32, start: u16) -> Vec<rtp::Packet> {
        let mut after: Vec<(u16, &rtp::Packet)> = self
            .packets
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.header.ssrc == ssrc)
            .map(|p| (p.header.sequence_number.wrapping_sub(start), p))
            .filter(|(distance, _)| (1..=MOST_AFTER).contains(distance))
            .collect();
        after.sort_by_key(|(distance, _)| *distance);
        after.dedup_by_key(|(distance, _)| *distance);
        after.into_iter().map(|(_, p)| p.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(ssrc: u32, seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                ssrc,
                sequence_number: seq,
                ..Default::default()
            },
            payload: Bytes::from_static(&[1]),
        }
    }

    fn seqs(packets: &[rtp::Packet]) -> Vec<u16> {
        packets.iter().map(|p| p.header.sequence_number).collect()
    }

    #[test]
    fn packets_after_the_start_come_back_in_order_once_each_and_only_of_that_stream() {
        let t0 = Instant::now();
        let mut early = EarlyPackets::default();
        for seq in [104, 102, 99, 103, 102] {
            early.keep(t0, &packet(7, seq));
        }
        early.keep(t0, &packet(8, 101));
        assert_eq!(seqs(&early.after(7, 101)), vec![102, 103, 104]);
        assert_eq!(seqs(&early.after(7, 104)), Vec::<u16>::new());
        assert_eq!(seqs(&early.after(8, 100)), vec![101]);
    }

    #[test]
    fn across_the_sequence_number_wrap_the_order_holds() {
        let t0 = Instant::now();
        let mut early = EarlyPackets::default();
        for seq in [1, 65_535, 0, 65_533] {
            early.keep(t0, &packet(7, seq));
        }
        assert_eq!(seqs(&early.after(7, 65_534)), vec![65_535, 0, 1]);
    }

    #[test]
    fn packets_are_forgotten_after_half_a_second_and_beyond_the_most_kept() {
        let t0 = Instant::now();
        let mut early = EarlyPackets::default();
        early.keep(t0, &packet(7, 10));
        early.keep(t0 + KEEP_FOR, &packet(7, 11));
        early.keep(t0 + KEEP_FOR + Duration::from_millis(1), &packet(7, 12));
        assert_eq!(seqs(&early.after(7, 9)), vec![11, 12]);

        let mut early = EarlyPackets::default();
        for seq in 0..MOST_PACKETS as u16 + 10 {
            early.keep(t0, &packet(7, 1_000 + seq));
        }
        let kept = early.after(7, 999);
        assert_eq!(kept.len(), MOST_PACKETS);
        assert_eq!(
            kept[0].header.sequence_number, 1_010,
            "the oldest went first"
        );
    }

    #[test]
    fn a_packet_far_past_the_start_is_not_taken_for_one_after_it() {
        let t0 = Instant::now();
        let mut early = EarlyPackets::default();
        early.keep(t0, &packet(7, 100 + MOST_AFTER + 1));
        early.keep(t0, &packet(7, 90));
        assert!(early.after(7, 100).is_empty());
    }
}
