//! Retransmissions: the RTX payload format (RFC 4588) and the history of
//! packets a consumer sent, from which it answers its subscriber's NACKs.
//!
//! An RTX packet travels on its own SSRC and payload type, with its own
//! sequence numbers, so that a receiver can tell a retransmission from the
//! original and its loss statistics stay honest. Its payload is the original
//! sequence number (2 bytes, network order) followed by the original payload;
//! timestamp, marker, CSRCs and header extensions stay those of the original.

#![allow(dead_code)] // wired by the consumer

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rtc::rtp::Packet;

/// Wraps `original` for retransmission on the RTX stream `rtx_ssrc` /
/// `rtx_pt`, as packet `rtx_seq` of that stream.
///
/// The original's padding flag is not carried: padding is not media, and
/// `rtc` re-pads on marshal anyway (the original padding length is not kept
/// by `Packet::unmarshal`).
pub fn encode(original: &Packet, rtx_ssrc: u32, rtx_pt: u8, rtx_seq: u16) -> Packet {
    let mut payload = BytesMut::with_capacity(2 + original.payload.len());
    payload.put_u16(original.header.sequence_number);
    payload.put_slice(&original.payload);
    let mut header = original.header.clone();
    header.ssrc = rtx_ssrc;
    header.payload_type = rtx_pt;
    header.sequence_number = rtx_seq;
    header.padding = false;
    Packet {
        header,
        payload: payload.freeze(),
    }
}

/// Restores the original packet from an RTX packet of the stream that
/// repairs `original_ssrc` / `original_pt`. `None` if the payload is too
/// short to hold the original sequence number (padding-only RTX packets,
/// which senders use as bandwidth probes, are such).
pub fn decode(rtx: &Packet, original_ssrc: u32, original_pt: u8) -> Option<Packet> {
    let seq = rtx.payload.get(..2)?;
    let mut header = rtx.header.clone();
    header.ssrc = original_ssrc;
    header.payload_type = original_pt;
    header.sequence_number = u16::from_be_bytes([seq[0], seq[1]]);
    header.padding = false;
    Some(Packet {
        header,
        payload: rtx.payload.slice(2..),
    })
}

/// How many packets a history keeps by default: about 2 s of a 2.5 Mbit/s
/// layer in 1,200-byte packets, so at ordinary rates the age limit, not the
/// count, decides.
pub const DEFAULT_HISTORY_CAPACITY: usize = 512;

/// How old a packet may be and still be resent by default. A retransmission
/// must reach the receiver before its jitter buffer gives the frame up
/// (a few hundred milliseconds in browsers); 1 s leaves room for a long
/// round trip and a NACK that was itself delayed.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);

/// How long after resending a packet further NACKs for it are ignored, by
/// default. A resend needs about one round trip to arrive and be noticed;
/// NACKs for the same packet arriving before that were sent before the
/// receiver could have seen it (a receiver repeats its NACK list, or several
/// RTCP packets are in flight), and answering each would pile retransmissions
/// onto a link that is already losing packets. 100 ms is a typical WebRTC
/// round trip; callers that know the measured RTT (RTCP receiver reports)
/// should set it with [`SendHistory::set_resend_interval`].
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Sent {
    /// Extended (never-wrapping) sequence number: tells a packet apart from
    /// one 65,536 numbers older that used the same slot.
    ext_seq: u64,
    packet: Packet,
    sent_at: Instant,
    resent_at: Option<Instant>,
}

/// The packets one outgoing stream sent recently, by sequence number, to
/// answer NACKs. Bounded by count (a ring indexed by sequence number) and by
/// age.
#[derive(Debug)]
pub struct SendHistory {
    /// Power-of-two length, so the ring index stays consistent across the
    /// 16-bit wrap (65,536 is a multiple of it).
    slots: Vec<Option<Sent>>,
    max_age: Duration,
    resend_interval: Duration,
    /// Newest extended sequence number inserted.
    newest: Option<u64>,
}

impl Default for SendHistory {
    fn default() -> SendHistory {
        SendHistory::new(DEFAULT_HISTORY_CAPACITY, DEFAULT_MAX_AGE)
    }
}

impl SendHistory {
    /// A history of the last `capacity` sequence numbers (rounded up to a
    /// power of two, at most 32,768 so the window stays within half the
    /// sequence space), each kept at most `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> SendHistory {
        let capacity = capacity.clamp(1, 1 << 15).next_power_of_two();
        SendHistory {
            slots: (0..capacity).map(|_| None).collect(),
            max_age,
            resend_interval: DEFAULT_RESEND_INTERVAL,
            newest: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Sets how long repeated NACKs for one packet are ignored after it was
    /// resent (typically the measured round-trip time).
    pub fn set_resend_interval(&mut self, interval: Duration) {
        self.resend_interval = interval;
    }

    /// Records a packet as sent at `now`, keyed by its (outgoing) sequence
    /// number. A packet older than the whole window is not kept: it would
    /// push out a newer one.
    pub fn insert(&mut self, now: Instant, packet: Packet) {
        let Some(ext_seq) = self.extend(packet.header.sequence_number) else {
            return;
        };
        let newest = self.newest.map_or(ext_seq, |n| n.max(ext_seq));
        if ext_seq + self.window() <= newest {
            return;
        }
        self.newest = Some(newest);
        let slot = self.slot(ext_seq);
        self.slots[slot] = Some(Sent {
            ext_seq,
            packet,
            sent_at: now,
            resent_at: None,
        });
    }

    /// The packet sent as `seq`, if it is still kept and not older than the
    /// age limit at `now`.
    pub fn get(&self, seq: u16, now: Instant) -> Option<&Packet> {
        let slot = self.find(seq, now)?;
        self.slots[slot].as_ref().map(|sent| &sent.packet)
    }

    /// The packet to resend for a NACK of `seq` at `now`: as [`get`], but a
    /// packet already resent less than the resend interval ago is not given
    /// out again.
    ///
    /// [`get`]: SendHistory::get
    pub fn resend(&mut self, seq: u16, now: Instant) -> Option<&Packet> {
        let slot = self.find(seq, now)?;
        let interval = self.resend_interval;
        let sent = self.slots[slot].as_mut()?;
        if sent
            .resent_at
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return None;
        }
        sent.resent_at = Some(now);
        Some(&sent.packet)
    }

    fn window(&self) -> u64 {
        self.slots.len() as u64
    }

    fn slot(&self, ext_seq: u64) -> usize {
        (ext_seq & (self.window() - 1)) as usize
    }

    /// The extended number of `seq`: the one nearest the newest inserted.
    /// The first packet is put one cycle up so older ones extend too.
    fn extend(&self, seq: u16) -> Option<u64> {
        match self.newest {
            None => Some((1 << 16) + u64::from(seq)),
            Some(newest) => {
                newest.checked_add_signed(i64::from(seq.wrapping_sub(newest as u16) as i16))
            }
        }
    }

    fn find(&self, seq: u16, now: Instant) -> Option<usize> {
        let newest = self.newest?;
        let ext_seq = self.extend(seq)?;
        if ext_seq > newest || ext_seq + self.window() <= newest {
            return None;
        }
        let slot = self.slot(ext_seq);
        let sent = self.slots[slot].as_ref()?;
        (sent.ext_seq == ext_seq && now.saturating_duration_since(sent.sent_at) <= self.max_age)
            .then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
    use rtc::shared::marshal::{Marshal, Unmarshal};

    fn packet(seq: u16) -> Packet {
        Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 0xDEAD_BEEF,
                ssrc: 0x1234_5678,
                csrc: vec![7, 8],
                extension: true,
                extension_profile: EXTENSION_PROFILE_ONE_BYTE,
                extensions: vec![
                    Extension {
                        id: 1,
                        payload: Bytes::from_static(&[0x90]),
                    },
                    Extension {
                        id: 3,
                        payload: Bytes::from_static(&[0x00, 0x42]),
                    },
                ],
                extensions_padding: 3,
                ..Default::default()
            },
            payload: Bytes::from(vec![seq as u8; 40]),
        }
    }

    #[test]
    fn rtx_round_trip_is_byte_exact() {
        let original = packet(0xABCD);
        let wire = original.marshal().unwrap();

        let rtx = encode(&original, 0x9999_0000, 97, 17);
        assert_eq!(rtx.header.ssrc, 0x9999_0000);
        assert_eq!(rtx.header.payload_type, 97);
        assert_eq!(rtx.header.sequence_number, 17);
        assert_eq!(rtx.header.timestamp, original.header.timestamp);
        assert!(rtx.header.marker);
        assert_eq!(rtx.header.extensions, original.header.extensions);
        assert_eq!(rtx.payload[..2], [0xAB, 0xCD]);
        assert_eq!(rtx.payload[2..], original.payload[..]);

        // Through the wire and back.
        let rtx_wire = rtx.marshal().unwrap();
        assert_eq!(rtx_wire.len(), wire.len() + 2);
        let received = Packet::unmarshal(&mut rtx_wire.freeze()).unwrap();
        let restored = decode(&received, 0x1234_5678, 96).unwrap();
        assert_eq!(restored, original);
        assert_eq!(restored.marshal().unwrap(), wire);
    }

    #[test]
    fn rtx_drops_padding_and_refuses_payloads_without_a_sequence_number() {
        let mut padded = packet(5);
        padded.header.padding = true;
        let rtx = encode(&padded, 1, 97, 1);
        assert!(!rtx.header.padding);

        let mut probe = encode(&packet(5), 1, 97, 1);
        probe.payload = Bytes::new();
        assert_eq!(decode(&probe, 2, 96), None);
        probe.payload = Bytes::from_static(&[0x01]);
        assert_eq!(decode(&probe, 2, 96), None);
        // Just the sequence number: an empty original payload.
        probe.payload = Bytes::from_static(&[0x01, 0x02]);
        let restored = decode(&probe, 2, 96).unwrap();
        assert_eq!(restored.header.sequence_number, 0x0102);
        assert!(restored.payload.is_empty());
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn history_answers_for_packets_it_holds() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        assert_eq!(h.capacity(), 512);
        for seq in 100..110 {
            h.insert(t0, packet(seq));
        }
        assert_eq!(h.get(105, t0).unwrap().header.sequence_number, 105);
        assert_eq!(h.get(100, t0 + ms(1000)).unwrap().payload[0], 100);
        // Never sent.
        assert!(h.get(110, t0).is_none());
        assert!(h.get(99, t0).is_none());
        assert!(h.get(40_000, t0).is_none());
        assert!(SendHistory::default().get(0, t0).is_none());
    }

    #[test]
    fn history_evicts_by_capacity() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(8, DEFAULT_MAX_AGE);
        for seq in 0..20 {
            h.insert(t0, packet(seq));
        }
        for seq in 0..12 {
            assert!(h.get(seq, t0).is_none(), "{seq}");
        }
        for seq in 12..20 {
            assert!(h.get(seq, t0).is_some(), "{seq}");
        }
        // A late insert older than the window does not push out a newer one.
        h.insert(t0, packet(11));
        assert!(h.get(11, t0).is_none());
        assert!(h.get(19, t0).is_some());
        // Capacity rounds up to a power of two.
        assert_eq!(SendHistory::new(500, DEFAULT_MAX_AGE).capacity(), 512);
        assert_eq!(SendHistory::new(0, DEFAULT_MAX_AGE).capacity(), 1);
        assert_eq!(
            SendHistory::new(usize::MAX, DEFAULT_MAX_AGE).capacity(),
            32_768
        );
    }

    #[test]
    fn history_evicts_by_age() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        h.insert(t0, packet(1));
        h.insert(t0 + ms(600), packet(2));
        assert!(h.get(1, t0 + ms(1000)).is_some());
        assert!(h.get(1, t0 + ms(1001)).is_none());
        assert!(h.get(2, t0 + ms(1001)).is_some());
        let mut h2 = SendHistory::default();
        h2.insert(t0, packet(1));
        assert!(h2.resend(1, t0 + ms(1500)).is_none());
    }

    #[test]
    fn history_handles_sequence_wraparound() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(16, DEFAULT_MAX_AGE);
        for seq in (65530..=65535).chain(0..6) {
            h.insert(t0, packet(seq));
        }
        for seq in (65530..=65535).chain(0..6) {
            assert_eq!(h.get(seq, t0).unwrap().header.sequence_number, seq);
        }
        assert!(h.get(65529, t0).is_none());
        assert!(h.get(6, t0).is_none());
        // Reordered inserts across the wrap land in their own slots.
        let mut h = SendHistory::new(16, DEFAULT_MAX_AGE);
        h.insert(t0, packet(1));
        h.insert(t0, packet(65535));
        h.insert(t0, packet(0));
        for seq in [65535, 0, 1] {
            assert_eq!(h.get(seq, t0).unwrap().header.sequence_number, seq);
        }
    }

    #[test]
    fn a_packet_from_a_previous_cycle_in_the_same_slot_is_not_returned() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(16, Duration::from_secs(3600));
        h.insert(t0, packet(3));
        // The stream jumps far ahead; slot of 3 is not overwritten.
        h.insert(t0, packet(3 + 16 * 1000));
        assert!(h.get(3, t0).is_none());
    }

    #[test]
    fn duplicate_nacks_within_the_interval_are_answered_once() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        h.insert(t0, packet(7));
        assert!(h.resend(7, t0 + ms(10)).is_some());
        assert!(h.resend(7, t0 + ms(20)).is_none());
        assert!(h.resend(7, t0 + ms(109)).is_none());
        assert!(h.resend(7, t0 + ms(110)).is_some());
        // get() is a plain lookup, not a resend.
        assert!(h.get(7, t0 + ms(111)).is_some());
        h.set_resend_interval(ms(30));
        assert!(h.resend(7, t0 + ms(130)).is_none());
        assert!(h.resend(7, t0 + ms(140)).is_some());
        // Nothing for a packet never sent.
        assert!(h.resend(8, t0 + ms(140)).is_none());
    }
}
