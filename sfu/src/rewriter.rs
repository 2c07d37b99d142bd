//! One consumer's outgoing sequence numbers and timestamps.
//!
//! A subscriber sees a single RTP stream per track, but what we send it may
//! come from several source streams over its lifetime: the simulcast layers
//! of one publisher track each have their own SSRC, sequence space and
//! timestamp space, and the consumer hops between them. The receiver must see
//! one unbroken sequence: every outgoing sequence number it does not receive
//! it will NACK, so a number must never be skipped for a packet we chose not
//! to send, and must never be reused for a different packet.
//!
//! [`SequenceRewriter`] keeps that promise. The packets forwarded from one
//! source between two switches form a *segment*; inside a segment, outgoing
//! numbers follow the source's numbering shifted by a constant, minus the
//! packets the consumer deliberately skipped ([`SequenceRewriter::drop_packet`]).
//! Because the mapping is a pure function of the source sequence number, a
//! packet that arrives late or is retransmitted by the publisher maps to the
//! very number it would have had in order. A new segment starts only at a
//! switching point (a keyframe start for video; any packet for audio) and
//! continues the outgoing numbering with no gap: sequence +1, timestamp
//! advanced by the wall-clock time since the last packet sent.
//!
//! Sans-I/O: the caller passes every `Instant`; nothing here reads a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many source sequence numbers behind the newest one a packet may be
/// and still be mapped. Drops are remembered for this many numbers, so a
/// packet older than this could not be mapped consistently and is refused.
/// About 1 s of 1 Mbit/s video, or 20 s of audio: far beyond any reordering
/// the network does and beyond the age at which a retransmission is useful.
pub(crate) const REORDER_WINDOW: u64 = 1024;

const WINDOW_WORDS: usize = (REORDER_WINDOW / 64) as usize;

/// The largest step the outgoing timestamp takes across a switch or pause.
/// Receivers compare RTP timestamps in serial-number arithmetic, so a jump of
/// 2^31 or more would read as a step backwards; at 90 kHz this caps a pause
/// at about 6.6 hours of timestamp advance.
const MAX_TS_ADVANCE: u64 = i32::MAX as u64;

/// The last packet sent: where the next segment continues from.
#[derive(Debug, Clone, Copy)]
struct LastSent {
    /// Extended (never-wrapping) outgoing sequence number.
    seq: u64,
    /// Outgoing RTP timestamp of the newest packet (serially greatest).
    ts: u32,
    /// When the packet with `seq` was forwarded.
    at: Instant,
}

/// The mapping of one source stream onto the outgoing stream, from the
/// switching point that started it until the next switch or pause.
#[derive(Debug)]
struct Segment {
    ssrc: u32,
    /// Extended source sequence number of the switching point. Source
    /// numbers are extended starting one cycle up (65536 + seq) so that a
    /// reordered packet from just before a wrap still extends to a
    /// non-negative number (and is then refused as older than the start).
    base_src: u64,
    /// Extended outgoing sequence number the switching point was given.
    base_out: u64,
    /// Newest extended source sequence number seen, forwarded or dropped.
    highest_src: u64,
    /// Added (mod 2^32) to a source timestamp to get the outgoing one. A
    /// constant offset needs no unwrapping: wraparound in the source becomes
    /// the same wraparound in the output.
    ts_offset: u32,
    /// Deliberately dropped source numbers newer than everything seen when
    /// they were dropped, oldest first, within the window. Each one shifts
    /// every later packet down by one outgoing number.
    shifting_drops: VecDeque<u64>,
    /// Shifting drops that have left the window (still counted: every
    /// packet still mappable is newer than them).
    drops_before_window: u64,
    /// Bitset over the window (indexed by extended seq mod window) of every
    /// dropped source number, shifting or not, so a late copy of one is
    /// refused rather than given a number.
    dropped: [u64; WINDOW_WORDS],
}

impl Segment {
    fn new(ssrc: u32, seq: u16, base_out: u64, ts_offset: u32) -> Segment {
        let base_src = (1 << 16) + u64::from(seq);
        Segment {
            ssrc,
            base_src,
            base_out,
            highest_src: base_src,
            ts_offset,
            shifting_drops: VecDeque::new(),
            drops_before_window: 0,
            dropped: [0; WINDOW_WORDS],
        }
    }

    /// The extended source number of `seq`, taking the one nearest the
    /// newest seen (within ±2^15), or `None` if that would be negative.
    fn extend(&self, seq: u16) -> Option<u64> {
        let delta = i64::from(seq.wrapping_sub(self.highest_src as u16) as i16);
        self.highest_src.checked_add_signed(delta)
    }

    /// Whether `ext` is old enough that its drop state may be forgotten.
    fn before_window(&self, ext: u64) -> bool {
        ext + REORDER_WINDOW <= self.highest_src
    }

    /// Whether the segment can map `ext` at all.
    fn in_range(&self, ext: u64) -> bool {
        ext >= self.base_src && !self.before_window(ext)
    }

    fn bit(ext: u64) -> (usize, u64) {
        let slot = ext % REORDER_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn is_dropped(&self, ext: u64) -> bool {
        let (word, mask) = Self::bit(ext);
        self.dropped[word] & mask != 0
    }

    fn mark_dropped(&mut self, ext: u64) {
        let (word, mask) = Self::bit(ext);
        self.dropped[word] |= mask;
    }

    /// Moves the newest seen number to `ext`, forgetting the drop state of
    /// the window slots it passes (they now stand for newer numbers).
    fn advance_to(&mut self, ext: u64) {
        if ext <= self.highest_src {
            return;
        }
        if ext - self.highest_src >= REORDER_WINDOW {
            self.dropped = [0; WINDOW_WORDS];
        } else {
            for n in self.highest_src + 1..=ext {
                let (word, mask) = Self::bit(n);
                self.dropped[word] &= !mask;
            }
        }
        self.highest_src = ext;
        while let Some(&oldest) = self.shifting_drops.front() {
            if !self.before_window(oldest) {
                break;
            }
            self.shifting_drops.pop_front();
            self.drops_before_window += 1;
        }
    }

    /// Shifting drops strictly older than `ext`.
    fn drops_before(&self, ext: u64) -> u64 {
        let in_window = self.shifting_drops.partition_point(|&d| d < ext) as u64;
        self.drops_before_window + in_window
    }

    /// The extended outgoing number of source number `ext` (in range, not
    /// dropped). Every shifting drop counted lies in `[base_src, ext)` and
    /// they are distinct, so the subtraction cannot underflow.
    fn out_seq(&self, ext: u64) -> u64 {
        self.base_out + (ext - self.base_src) - self.drops_before(ext)
    }
}

/// Maps the packets one consumer forwards, from whichever source streams,
/// onto one gap-free outgoing sequence and timestamp space.
///
/// Usage: [`switch_to`](Self::switch_to) the first source; then for every
/// source packet either [`forward`](Self::forward) it (and send it with the
/// numbers returned, if any) or [`drop_packet`](Self::drop_packet) it.
#[derive(Debug)]
pub struct SequenceRewriter {
    clock_rate: u32,
    /// Where the very first segment starts (the caller picks these at
    /// random, as RFC 3550 asks for the initial values).
    initial_seq: u16,
    initial_ts: u32,
    segment: Option<Segment>,
    /// The source to start a segment on at its next switching point.
    pending: Option<u32>,
    paused: bool,
    last: Option<LastSent>,
}

impl SequenceRewriter {
    /// A rewriter for a stream with `clock_rate` Hz RTP timestamps whose first
    /// outgoing packet gets `initial_seq` and `initial_ts`.
    pub fn new(clock_rate: u32, initial_seq: u16, initial_ts: u32) -> SequenceRewriter {
        SequenceRewriter {
            clock_rate,
            initial_seq,
            initial_ts,
            segment: None,
            pending: None,
            paused: false,
            last: None,
        }
    }

    /// Asks to forward `src_ssrc` from its next switching point on. Until
    /// then the current source (if any) goes on being forwarded, so the
    /// receiver is never left without pictures while waiting for a keyframe.
    /// Asking for the source already being forwarded cancels a pending switch.
    pub fn switch_to(&mut self, src_ssrc: u32) {
        let current = self.segment.as_ref().map(|s| s.ssrc);
        self.pending = if current == Some(src_ssrc) {
            None
        } else {
            Some(src_ssrc)
        };
    }

    /// Stops forwarding (mute, or the consumer paused). The segment ends
    /// here: the source packets sent meanwhile will never be forwarded, so
    /// the outgoing numbering must not count them.
    pub fn pause(&mut self) {
        if let Some(segment) = self.segment.take() {
            self.pending.get_or_insert(segment.ssrc);
        }
        self.paused = true;
    }

    /// Forwards again from the next switching point of the source that was
    /// being forwarded (or of the one a switch was asked for since). The
    /// caller should ask the publisher for a keyframe for video.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The source currently forwarded.
    pub fn current_source(&self) -> Option<u32> {
        self.segment.as_ref().map(|s| s.ssrc)
    }

    /// The source a switch is waiting for a switching point of.
    pub fn pending_source(&self) -> Option<u32> {
        self.pending
    }

    /// The outgoing sequence number and timestamp for a source packet the
    /// consumer wants to send, or `None` if it must not be sent: it belongs
    /// to no source being forwarded, precedes the current segment's start,
    /// is older than the reorder window, was dropped, or we are paused.
    ///
    /// `is_switching_point` is true at the first packet of a keyframe for
    /// video, and for every audio packet (each is decodable on its own).
    pub fn forward(
        &mut self,
        src_ssrc: u32,
        seq: u16,
        ts: u32,
        now: Instant,
        is_switching_point: bool,
    ) -> Option<(u16, u32)> {
        if self.paused {
            return None;
        }
        if self.pending == Some(src_ssrc) && is_switching_point {
            self.start_segment(src_ssrc, seq, ts, now);
        }
        let segment = self.segment.as_mut().filter(|s| s.ssrc == src_ssrc)?;
        let ext = segment.extend(seq)?;
        if !segment.in_range(ext) || segment.is_dropped(ext) {
            return None;
        }
        segment.advance_to(ext);
        let out_seq = segment.out_seq(ext);
        let out_ts = ts.wrapping_add(segment.ts_offset);
        match &mut self.last {
            Some(last) if out_seq < last.seq => {}
            Some(last) => {
                if out_seq > last.seq {
                    last.seq = out_seq;
                    last.at = now;
                }
                if is_newer_ts(out_ts, last.ts) {
                    last.ts = out_ts;
                }
            }
            None => {
                self.last = Some(LastSent {
                    seq: out_seq,
                    ts: out_ts,
                    at: now,
                })
            }
        }
        Some((out_seq as u16, out_ts))
    }

    /// Records that the consumer deliberately skips this source packet
    /// (padding only, a layer it does not send): later packets close up so
    /// the receiver sees no hole. A drop that arrives after newer packets
    /// were already numbered cannot close its hole without renumbering
    /// them; it is only remembered so a late copy is refused.
    pub fn drop_packet(&mut self, src_ssrc: u32, seq: u16) {
        if self.paused {
            return;
        }
        let Some(segment) = self.segment.as_mut().filter(|s| s.ssrc == src_ssrc) else {
            return;
        };
        let Some(ext) = segment.extend(seq) else {
            return;
        };
        if !segment.in_range(ext) || segment.is_dropped(ext) {
            return;
        }
        if ext > segment.highest_src {
            segment.advance_to(ext);
            segment.shifting_drops.push_back(ext);
        }
        segment.mark_dropped(ext);
    }

    /// Starts a segment on `src_ssrc` at this switching point, continuing
    /// the outgoing stream: sequence +1, timestamp advanced by the elapsed
    /// wall-clock time (at least 1, so the new picture is a new instant).
    fn start_segment(&mut self, src_ssrc: u32, seq: u16, ts: u32, now: Instant) {
        let (base_out, out_ts) = match self.last {
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at);
                let advance = ticks(elapsed, self.clock_rate).clamp(1, MAX_TS_ADVANCE);
                (last.seq + 1, last.ts.wrapping_add(advance as u32))
            }
            None => (u64::from(self.initial_seq), self.initial_ts),
        };
        self.segment = Some(Segment::new(
            src_ssrc,
            seq,
            base_out,
            out_ts.wrapping_sub(ts),
        ));
        self.pending = None;
    }
}

/// `elapsed` in RTP clock ticks, rounded down.
fn ticks(elapsed: Duration, clock_rate: u32) -> u64 {
    let ticks = elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Whether timestamp `a` is after `b` in RFC 1982 serial-number arithmetic.
fn is_newer_ts(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: u32 = 0x1111;
    const F: u32 = 0x2222;
    const VIDEO: u32 = 90_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A rewriter already forwarding `ssrc`, its first packet `(seq, ts)`
    /// sent at `t0` as outgoing (1000, 5000).
    fn forwarding(ssrc: u32, seq: u16, ts: u32, t0: Instant) -> SequenceRewriter {
        let mut r = SequenceRewriter::new(VIDEO, 1000, 5000);
        r.switch_to(ssrc);
        assert_eq!(r.forward(ssrc, seq, ts, t0, true), Some((1000, 5000)));
        r
    }

    #[test]
    fn nothing_is_forwarded_before_a_source_is_chosen_and_reaches_a_switching_point() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO, 7, 70);
        assert_eq!(r.forward(Q, 1, 100, t0, true), None);
        r.switch_to(Q);
        assert_eq!(r.forward(Q, 2, 100, t0, false), None);
        assert_eq!(r.forward(Q, 3, 3000, t0, true), Some((7, 70)));
        assert_eq!(r.forward(Q, 4, 3000, t0, false), Some((8, 70)));
        // The packet before the start is refused even though it is recent.
        assert_eq!(r.forward(Q, 2, 100, t0, false), None);
    }

    #[test]
    fn contiguous_passthrough_keeps_the_spacing_of_the_source() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 100, 90_000, t0);
        assert_eq!(r.forward(Q, 101, 90_000, t0, false), Some((1001, 5000)));
        assert_eq!(r.forward(Q, 102, 93_000, t0, false), Some((1002, 8000)));
        assert_eq!(r.forward(Q, 103, 96_000, t0, false), Some((1003, 11_000)));
    }

    #[test]
    fn a_deliberately_dropped_packet_leaves_no_gap() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 100, 0, t0);
        r.drop_packet(Q, 101);
        assert_eq!(r.forward(Q, 102, 3000, t0, false), Some((1001, 8000)));
        r.drop_packet(Q, 103);
        r.drop_packet(Q, 104);
        assert_eq!(r.forward(Q, 105, 6000, t0, false), Some((1002, 11_000)));
        // A late copy of a dropped packet gets no number.
        assert_eq!(r.forward(Q, 103, 6000, t0, false), None);
    }

    #[test]
    fn a_drop_beyond_a_gap_closes_only_its_own_slot() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 100, 0, t0);
        // 101 is missing (lost upstream, may come late); 102 is padding.
        r.drop_packet(Q, 102);
        assert_eq!(r.forward(Q, 103, 3000, t0, false), Some((1002, 8000)));
        assert_eq!(r.forward(Q, 101, 0, t0, false), Some((1001, 5000)));
    }

    #[test]
    fn a_drop_after_newer_packets_were_numbered_does_not_renumber_them() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 100, 0, t0);
        assert_eq!(r.forward(Q, 102, 0, t0, false), Some((1002, 5000)));
        r.drop_packet(Q, 101);
        assert_eq!(r.forward(Q, 101, 0, t0, false), None);
        assert_eq!(r.forward(Q, 102, 0, t0, false), Some((1002, 5000)));
        assert_eq!(r.forward(Q, 103, 0, t0, false), Some((1003, 5000)));
    }

    #[test]
    fn reordered_and_retransmitted_packets_keep_their_mapping() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 100, 0, t0);
        r.drop_packet(Q, 101);
        assert_eq!(r.forward(Q, 104, 6000, t0, false), Some((1003, 11_000)));
        assert_eq!(r.forward(Q, 102, 3000, t0, false), Some((1001, 8000)));
        assert_eq!(r.forward(Q, 103, 3000, t0, false), Some((1002, 8000)));
        // A publisher retransmission of 102 maps to the same number again.
        assert_eq!(r.forward(Q, 102, 3000, t0, false), Some((1001, 8000)));
        assert_eq!(r.forward(Q, 105, 9000, t0, false), Some((1004, 14_000)));
    }

    #[test]
    fn packets_older_than_the_window_are_refused() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 0, 0, t0);
        r.drop_packet(Q, 1);
        let newest = REORDER_WINDOW as u16 + 10;
        assert_eq!(
            r.forward(Q, newest, 0, t0, false),
            Some((1000 + newest - 1, 5000))
        );
        // Just inside the window: still mapped, the early drop still counted.
        let oldest_kept = newest - REORDER_WINDOW as u16 + 1;
        assert_eq!(
            r.forward(Q, oldest_kept, 0, t0, false),
            Some((1000 + oldest_kept - 1, 5000))
        );
        assert_eq!(r.forward(Q, oldest_kept - 1, 0, t0, false), None);
        // The drop that left the window still shifts new packets.
        assert_eq!(
            r.forward(Q, newest + 1, 0, t0, false),
            Some((1000 + newest, 5000))
        );
    }

    #[test]
    fn source_sequence_wraps_at_65535() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 65534, 0, t0);
        assert_eq!(r.forward(Q, 65535, 0, t0, false), Some((1001, 5000)));
        r.drop_packet(Q, 0);
        assert_eq!(r.forward(Q, 1, 0, t0, false), Some((1002, 5000)));
        assert_eq!(r.forward(Q, 2, 0, t0, false), Some((1003, 5000)));
    }

    #[test]
    fn a_reordered_packet_from_before_the_wrap_maps_back_across_it() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 65533, 0, t0);
        assert_eq!(r.forward(Q, 0, 0, t0, false), Some((1003, 5000)));
        assert_eq!(r.forward(Q, 65535, 0, t0, false), Some((1002, 5000)));
        assert_eq!(r.forward(Q, 65534, 0, t0, false), Some((1001, 5000)));
        // Older than the start of the segment, across the wrap: refused.
        assert_eq!(r.forward(Q, 65532, 0, t0, false), None);
    }

    #[test]
    fn outgoing_sequence_wraps_at_65535() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO, 65534, 0);
        r.switch_to(Q);
        assert_eq!(r.forward(Q, 10, 0, t0, true), Some((65534, 0)));
        assert_eq!(r.forward(Q, 11, 0, t0, false), Some((65535, 0)));
        assert_eq!(r.forward(Q, 12, 0, t0, false), Some((0, 0)));
        assert_eq!(r.forward(Q, 13, 0, t0, false), Some((1, 0)));
        // A switch across the outgoing wrap continues +1.
        r.switch_to(F);
        assert_eq!(r.forward(F, 500, 0, t0 + ms(1), true), Some((2, 90)));
    }

    #[test]
    fn timestamps_wrap_at_u32_max() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO, 0, u32::MAX - 2999);
        r.switch_to(Q);
        assert_eq!(r.forward(Q, 1, 100, t0, true), Some((0, u32::MAX - 2999)));
        assert_eq!(r.forward(Q, 2, 3100, t0, false), Some((1, 0)));
        assert_eq!(r.forward(Q, 3, 6100, t0, false), Some((2, 3000)));

        // The source's own timestamps wrapping.
        let mut r = forwarding(F, 1, u32::MAX - 1000, t0);
        assert_eq!(r.forward(F, 2, 1999, t0, false), Some((1001, 8000)));
        // A switch after the wrap continues from the newest timestamp sent.
        r.switch_to(Q);
        assert_eq!(r.forward(Q, 9, 42, t0 + ms(10), true), Some((1002, 8900)));
    }

    #[test]
    fn switching_layers_at_a_keyframe_continues_seq_and_advances_ts_by_elapsed_time() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 500, 1_000_000, t0);
        assert_eq!(
            r.forward(Q, 501, 1_003_000, t0 + ms(33), false),
            Some((1001, 8000))
        );
        r.switch_to(F);
        // 50 ms after the last packet sent: 4500 ticks at 90 kHz.
        assert_eq!(
            r.forward(F, 30_000, 7_777_777, t0 + ms(83), true),
            Some((1002, 12_500))
        );
        assert_eq!(r.current_source(), Some(F));
        assert_eq!(r.pending_source(), None);
        assert_eq!(
            r.forward(F, 30_001, 7_777_777, t0 + ms(84), false),
            Some((1003, 12_500))
        );
        assert_eq!(
            r.forward(F, 30_002, 7_780_777, t0 + ms(117), false),
            Some((1004, 15_500))
        );
    }

    #[test]
    fn old_layer_packets_after_the_switch_are_refused() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 500, 0, t0);
        r.switch_to(F);
        assert_eq!(r.forward(F, 9, 0, t0, true), Some((1001, 5001)));
        assert_eq!(r.forward(Q, 501, 3000, t0, false), None);
        assert_eq!(r.forward(Q, 500, 0, t0, false), None);
        // Drops on the old layer change nothing.
        r.drop_packet(Q, 502);
        assert_eq!(r.forward(F, 10, 0, t0, false), Some((1002, 5001)));
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_new_layer() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 500, 0, t0);
        r.switch_to(F);
        assert_eq!(r.pending_source(), Some(F));
        // Delta frames of the new layer: not yet.
        assert_eq!(r.forward(F, 70, 0, t0, false), None);
        // The old layer goes on meanwhile.
        assert_eq!(
            r.forward(Q, 501, 3000, t0 + ms(33), false),
            Some((1001, 8000))
        );
        // A keyframe on the old layer does not complete the switch.
        assert_eq!(
            r.forward(Q, 502, 6000, t0 + ms(66), true),
            Some((1002, 11_000))
        );
        assert_eq!(r.current_source(), Some(Q));
        // 50 ms after the last packet sent: 4500 ticks.
        assert_eq!(
            r.forward(F, 71, 9000, t0 + ms(116), true),
            Some((1003, 15_500))
        );
        assert_eq!(r.current_source(), Some(F));
        // Asking for the current source again cancels a pending switch.
        r.switch_to(Q);
        r.switch_to(F);
        assert_eq!(r.pending_source(), None);
    }

    #[test]
    fn switching_back_to_a_layer_used_before_starts_afresh() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 500, 0, t0);
        r.switch_to(F);
        assert_eq!(r.forward(F, 9, 0, t0 + ms(10), true), Some((1001, 5900)));
        r.switch_to(Q);
        assert_eq!(r.forward(Q, 510, 0, t0 + ms(20), false), None);
        assert_eq!(r.forward(Q, 511, 0, t0 + ms(30), true), Some((1002, 7700)));
        assert_eq!(r.forward(Q, 510, 0, t0 + ms(30), false), None);
    }

    #[test]
    fn the_timestamp_moves_at_least_one_tick_on_a_switch() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 500, 0, t0);
        r.switch_to(F);
        assert_eq!(r.forward(F, 9, 0, t0, true), Some((1001, 5001)));
        // A caller clock that steps back does not move the timestamp back.
        r.switch_to(Q);
        assert_eq!(r.forward(Q, 600, 0, t0 - ms(5), true), Some((1002, 5002)));
    }

    #[test]
    fn pause_and_resume_continue_seq_and_advance_ts() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(48_000, 300, 0);
        r.switch_to(Q);
        assert_eq!(r.forward(Q, 10, 960, t0, true), Some((300, 0)));
        assert_eq!(r.forward(Q, 11, 1920, t0 + ms(20), true), Some((301, 960)));
        r.pause();
        assert!(r.is_paused());
        assert_eq!(r.forward(Q, 12, 2880, t0 + ms(40), true), None);
        r.drop_packet(Q, 13);
        r.resume();
        // Two seconds later (source numbering has moved on by 100 packets):
        // sequence +1, timestamp + 2 s at 48 kHz.
        assert_eq!(
            r.forward(Q, 111, 99_999, t0 + ms(2020), true),
            Some((302, 960 + 96_000))
        );
        assert_eq!(
            r.forward(Q, 112, 100_959, t0 + ms(2040), true),
            Some((303, 960 + 96_960))
        );
        // Packets from before the pause are not forwarded any more.
        assert_eq!(r.forward(Q, 12, 2880, t0 + ms(2040), true), None);
    }

    #[test]
    fn video_resumes_only_at_a_keyframe_and_a_switch_asked_while_paused_wins() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 500, 0, t0);
        r.pause();
        r.resume();
        assert_eq!(r.forward(Q, 600, 0, t0 + ms(100), false), None);
        assert_eq!(
            r.forward(Q, 601, 0, t0 + ms(100), true),
            Some((1001, 14_000))
        );
        r.pause();
        r.switch_to(F);
        r.resume();
        assert_eq!(r.forward(Q, 700, 0, t0 + ms(200), true), None);
        assert_eq!(r.forward(F, 1, 0, t0 + ms(200), true), Some((1002, 23_000)));
    }

    #[test]
    fn a_long_pause_caps_the_timestamp_jump_below_half_the_space() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 0, 0, t0);
        r.pause();
        r.resume();
        let later = t0 + Duration::from_secs(24 * 3600);
        let (_, ts) = r.forward(Q, 9, 0, later, true).unwrap();
        assert_eq!(ts, 5000u32.wrapping_add(i32::MAX as u32));
        assert!(is_newer_ts(ts, 5000));
    }

    #[test]
    fn garbage_from_the_network_never_panics() {
        let t0 = Instant::now();
        let mut r = forwarding(Q, 0, 0, t0);
        let mut x: u32 = 12345;
        for i in 0..20_000u32 {
            // A cheap deterministic scramble of seq, ts and flags.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let seq = x as u16;
            if i % 7 == 0 {
                r.drop_packet(Q, seq);
            } else {
                let _ = r.forward(Q, seq, x, t0 + ms(u64::from(i)), x & 1 == 0);
            }
            if i % 1000 == 0 {
                r.switch_to(if i % 2000 == 0 { F } else { Q });
            }
        }
    }
}
