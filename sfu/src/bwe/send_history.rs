//! What a subscriber transport sent, by transport-wide sequence number, so
//! that feedback naming those numbers can be turned back into send times
//! and sizes. A fixed ring: recording a packet allocates nothing.

use std::time::Instant;

/// How many packets back feedback can still be matched: 2 s at 1,000
/// packets a second (about 10 Mbit/s), far longer than feedback takes to
/// come back (every 50-100 ms). About 80 KiB per subscriber transport
/// (40 bytes a slot), allocated at its first numbered packet.
pub(crate) const HISTORY_LEN: usize = 2048;

/// Bytes a packet costs on the wire beyond its RTP bytes: SRTP's tag (up
/// to 16 with GCM), UDP (8) and IPv4 (20) headers, rounded up.
pub(crate) const WIRE_OVERHEAD: usize = 48;

/// One packet sent, as the estimator needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SentPacket {
    pub seq: u64,
    pub sent_at: Instant,
    /// Bytes on the wire, overhead included.
    pub size: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    packet: SentPacket,
    state: Reported,
}

/// What feedback has said of a packet so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Not,
    /// Reported as not received: lost, or still on its way behind a packet
    /// sent after it (a receiver reports it again when it arrives).
    Missing,
    /// Accounted for (received, or given up as lost): a second report (a
    /// duplicate feedback, or a resend that reused its number) is ignored.
    Done,
}

/// The ring of sent packets of one transport.
#[derive(Debug)]
pub(crate) struct SendHistory {
    slots: Box<[Option<Slot>]>,
    /// The unwrapped number of the newest packet recorded.
    newest: Option<u64>,
}

impl Default for SendHistory {
    fn default() -> Self {
        SendHistory {
            slots: vec![None; HISTORY_LEN].into_boxed_slice(),
            newest: None,
        }
    }
}

impl SendHistory {
    /// Packet `seq` (the 16-bit number on the wire) of `rtp_bytes` left at
    /// `now`. Numbers are expected to follow one another; a repeated or
    /// older one (a resend carrying a copy of our header) is not recorded
    /// again.
    pub(crate) fn on_sent(&mut self, now: Instant, seq: u16, rtp_bytes: usize) {
        let unwrapped = self.unwrap(seq);
        if self.newest.is_some_and(|newest| unwrapped <= newest) {
            return;
        }
        self.newest = Some(unwrapped);
        let size = u32::try_from(rtp_bytes.saturating_add(WIRE_OVERHEAD)).unwrap_or(u32::MAX);
        self.slots[index(unwrapped)] = Some(Slot {
            packet: SentPacket {
                seq: unwrapped,
                sent_at: now,
                size,
            },
            state: Reported::Not,
        });
    }

    /// The unwrapped number closest to the newest one sent that has the
    /// low 16 bits `seq` (numbers before the first one sent count as after
    /// it: there are none before).
    pub(crate) fn unwrap(&self, seq: u16) -> u64 {
        let Some(newest) = self.newest else {
            return u64::from(seq);
        };
        let forward = seq.wrapping_sub(newest as u16);
        if forward < 0x8000 {
            newest + u64::from(forward)
        } else {
            let back = u64::from(0u16.wrapping_sub(forward));
            newest
                .checked_sub(back)
                .unwrap_or(newest + u64::from(forward))
        }
    }

    /// The packet `seq` (unwrapped) if it is still in the ring and has not
    /// been accounted for (it may have been reported missing); it is
    /// accounted for from now on.
    pub(crate) fn take(&mut self, seq: u64) -> Option<SentPacket> {
        let slot = self.slots[index(seq)].as_mut()?;
        if slot.packet.seq != seq || slot.state == Reported::Done {
            return None;
        }
        slot.state = Reported::Done;
        Some(slot.packet)
    }

    /// Feedback reports packet `seq` (unwrapped) as not received: the
    /// packet the first time, if it is still in the ring and not
    /// accounted for.
    pub(crate) fn mark_missing(&mut self, seq: u64) -> Option<SentPacket> {
        let slot = self.slots[index(seq)].as_mut()?;
        if slot.packet.seq != seq || slot.state != Reported::Not {
            return None;
        }
        slot.state = Reported::Missing;
        Some(slot.packet)
    }
}

fn index(seq: u64) -> usize {
    (seq % HISTORY_LEN as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_unwrap_across_the_16_bit_boundary() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        for seq in [65_534u16, 65_535, 0, 1] {
            history.on_sent(t0, seq, 1_000);
        }
        assert_eq!(history.unwrap(1), 65_537);
        assert_eq!(history.unwrap(65_535), 65_535);
        assert_eq!(history.take(65_536).map(|p| p.size), Some(1_048));
        assert_eq!(history.take(65_534).map(|p| p.seq), Some(65_534));
    }

    #[test]
    fn a_packet_is_reported_once_and_a_repeated_number_is_not_recorded() {
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_millis(5);
        let mut history = SendHistory::default();
        history.on_sent(t0, 7, 100);
        history.on_sent(later, 7, 900);
        assert_eq!(
            history.take(7).map(|p| (p.sent_at, p.size)),
            Some((t0, 148))
        );
        assert_eq!(history.take(7), None);
        assert_eq!(history.take(8), None, "never sent");
    }

    #[test]
    fn a_packet_reported_missing_is_marked_once_and_can_still_be_taken() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        history.on_sent(t0, 7, 100);
        assert_eq!(history.mark_missing(7).map(|p| p.seq), Some(7));
        assert_eq!(history.mark_missing(7), None, "already missing");
        assert_eq!(history.take(7).map(|p| p.seq), Some(7));
        assert_eq!(history.mark_missing(7), None, "accounted for");
        assert_eq!(history.mark_missing(8), None, "never sent");
    }

    #[test]
    fn a_slot_takes_at_most_40_bytes() {
        assert!(std::mem::size_of::<Option<Slot>>() <= 40);
    }

    #[test]
    fn packets_older_than_the_ring_are_forgotten() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        for seq in 0..=(HISTORY_LEN as u16) {
            history.on_sent(t0, seq, 100);
        }
        assert_eq!(history.take(0), None);
        assert!(history.take(1).is_some());
    }
}
