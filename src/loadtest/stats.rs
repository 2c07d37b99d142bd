//! What the load generator measures, from marks alone: every packet a
//! publisher sends is stamped (`stamp`), every packet a subscriber gets is
//! recorded (`received`), and a measurement window cuts both. Loss and
//! latency come out of that trace, so they can be checked on a crafted one.
//! Times are microseconds since the run's epoch, passed in by the caller.

use std::collections::HashMap;

use serde::Serialize;

use super::histogram::Histogram;
use super::media::MediaKind;
use super::payload::Mark;

/// Marks further than this past the first one seen are not tracked
/// (2 MiB of bits per track at most).
const MAX_SPAN: u32 = 1 << 24;
/// Marks this far before the first one seen still count (reordering).
const BACKLOG: u32 = 1024;

/// The distinct sequence marks one subscriber got on one track.
#[derive(Debug, Default, Clone)]
pub struct MarkSet {
    base: u32,
    bits: Vec<u64>,
    max: Option<u32>,
}

impl MarkSet {
    /// Adds `seq`; false when it was already there (or out of range).
    pub fn insert(&mut self, seq: u32) -> bool {
        if self.max.is_none() {
            self.base = seq.saturating_sub(BACKLOG) & !63;
        }
        if seq < self.base || seq - self.base >= MAX_SPAN {
            return false;
        }
        let off = (seq - self.base) as usize;
        let (word, bit) = (off / 64, off % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
        fresh
    }

    pub fn contains(&self, seq: u32) -> bool {
        if seq < self.base {
            return false;
        }
        let off = (seq - self.base) as usize;
        self.bits
            .get(off / 64)
            .is_some_and(|w| w & (1 << (off % 64)) != 0)
    }

    /// How many of the marks `start..end` are in the set.
    pub fn count_in(&self, start: u32, end: u32) -> u64 {
        (start..end).filter(|s| self.contains(*s)).count() as u64
    }

    pub fn max(&self) -> Option<u32> {
        self.max
    }
}

/// A track a simulated participant publishes.
#[derive(Debug, Clone)]
struct SentTrack {
    kind: MediaKind,
    next_seq: u32,
    packets: u64,
    bytes: u64,
    /// Marks `window.0..window.1` were sent inside the measurement window.
    window: (Option<u32>, Option<u32>),
}

#[derive(Debug, Default)]
struct ReceivedTrack {
    marks: MarkSet,
    packets: u64,
    /// Gaps (indices into `Recorder::gaps`) this pair has not closed yet.
    open: Vec<usize>,
}

/// One transport's move to a new source address (`--reconnect`).
#[derive(Debug, Clone)]
struct Move {
    publisher: bool,
    /// When its socket was switched.
    switched_us: u64,
    /// When its first datagram left the new socket.
    first_sent_us: Option<u64>,
    /// When its first ICE check left the new socket: the server learns a
    /// new address from an authenticated check only.
    first_check_us: Option<u64>,
    /// When media flowed again: for a subscriber transport, the first
    /// marked RTP packet it received after the switch; for a publisher
    /// transport, the first packet sent from its new socket that reached
    /// any of its subscribers.
    resumed_us: Option<u64>,
}

/// The marks of one (subscriber, track) pair a move may have cost: from
/// `from` (the first mark the pair could not have had before the move) to
/// `to`, the first mark at or past `from` the pair received afterwards.
#[derive(Debug, Clone)]
struct Gap {
    subscriber: usize,
    track: u32,
    from: u32,
    to: Option<u32>,
    by: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
}

/// Everything recorded during one run.
#[derive(Debug, Default)]
pub struct Recorder {
    sent: Vec<SentTrack>,
    received: HashMap<(usize, u32), ReceivedTrack>,
    join_started: HashMap<usize, u64>,
    first_media: HashMap<usize, u64>,
    totals: Counters,
    window_start: Option<(u64, Counters)>,
    window_end: Option<(u64, Counters)>,
    latency: HashMap<MediaKind, Histogram>,
    moves: Vec<Move>,
    gaps: Vec<Gap>,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Percentiles {
    pub fn of(h: &Histogram) -> Percentiles {
        let ms = |q: f64| h.quantile(q).map(|us| us as f64 / 1000.0);
        Percentiles {
            samples: h.count(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: (h.count() > 0).then(|| h.max() as f64 / 1000.0),
        }
    }
}

/// What the clients saw, over the measurement window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MediaSummary {
    pub tracks_expected: usize,
    /// Expected (subscriber, track) pairs that delivered at least one packet.
    pub tracks_received: usize,
    pub window_secs: f64,
    pub packets_out: u64,
    pub packets_in: u64,
    /// RTP payload and header bits per second the publishers sent.
    pub bps_out: f64,
    /// … and the subscribers received.
    pub bps_in: f64,
    pub packets_out_per_sec: f64,
    pub packets_in_per_sec: f64,
    /// Packets sent in the window that each expected subscriber should get.
    pub expected_packets: u64,
    pub lost_packets: u64,
    pub loss_pct: f64,
    pub latency: Percentiles,
    pub latency_audio: Percentiles,
    pub latency_video: Percentiles,
    /// WebSocket open to first media packet, of participants that subscribe.
    pub join: Percentiles,
    /// Subscribing participants that never received media.
    pub joins_without_media: usize,
}

/// What the address changes cost (`--reconnect`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReconnectSummary {
    /// The seed the moments of the moves were drawn with.
    pub seed: u64,
    pub transports_moved: usize,
    /// Moved transports whose media flowed again before the run ended.
    pub transports_resumed: usize,
    /// First datagram sent from the new address to media flowing again
    /// (see `Move::resumed_us`), all moved transports.
    pub resume: Percentiles,
    pub resume_publisher: Percentiles,
    pub resume_subscriber: Percentiles,
    /// Socket switch to media flowing again: adds the wait for the
    /// client's first datagram on the new address.
    pub outage: Percentiles,
    /// First datagram from the new address to the first ICE check from it
    /// (until then the server drops what comes from there).
    pub to_first_check: Percentiles,
    /// First ICE check from the new address to media flowing again.
    pub after_first_check: Percentiles,
    /// (subscriber, track) pairs that were flowing when a move hit them.
    pub pairs_affected: usize,
    /// Marks in those pairs' gaps that never arrived (NACK repairs count
    /// as arrived).
    pub lost_packets: u64,
}

/// RTP header bytes counted with each payload for bit rates.
const RTP_HEADER: u64 = 12;

impl Recorder {
    /// Registers a publisher track; returns its id (carried in its marks).
    pub fn add_track(&mut self, kind: MediaKind) -> u32 {
        self.sent.push(SentTrack {
            kind,
            next_seq: 0,
            packets: 0,
            bytes: 0,
            window: (None, None),
        });
        (self.sent.len() - 1) as u32
    }

    pub fn track_kind(&self, track: u32) -> Option<MediaKind> {
        self.sent.get(track as usize).map(|t| t.kind)
    }

    /// The mark for the next packet of `track`, counted as sent.
    pub fn stamp(&mut self, track: u32, keyframe: bool, len: usize, now_us: u64) -> Mark {
        let t = &mut self.sent[track as usize];
        let seq = t.next_seq;
        t.next_seq += 1;
        t.packets += 1;
        t.bytes += len as u64 + RTP_HEADER;
        self.totals.tx_packets += 1;
        self.totals.tx_bytes += len as u64 + RTP_HEADER;
        Mark {
            track,
            seq,
            sent_us: now_us,
            keyframe,
        }
    }

    pub fn join_started(&mut self, participant: usize, now_us: u64) {
        self.join_started.insert(participant, now_us);
    }

    /// A packet with `mark` and `len` payload bytes reached `subscriber`.
    /// True when it is the first of its track there.
    pub fn received(&mut self, subscriber: usize, mark: &Mark, len: usize, now_us: u64) -> bool {
        self.totals.rx_packets += 1;
        self.totals.rx_bytes += len as u64 + RTP_HEADER;
        self.first_media.entry(subscriber).or_insert(now_us);
        let first = !self.received.contains_key(&(subscriber, mark.track));
        let r = self.received.entry((subscriber, mark.track)).or_default();
        r.packets += 1;
        r.marks.insert(mark.seq);
        if !r.open.is_empty() {
            let (gaps, moves) = (&mut self.gaps, &mut self.moves);
            r.open.retain(|&g| {
                let gap = &mut gaps[g];
                if mark.seq < gap.from {
                    return true;
                }
                gap.to = Some(mark.seq);
                let m = &mut moves[gap.by];
                m.resumed_us = Some(m.resumed_us.map_or(now_us, |t| t.min(now_us)));
                false
            });
        }
        if self.window_start.is_some() && self.window_end.is_none() {
            let kind = self
                .sent
                .get(mark.track as usize)
                .map_or(MediaKind::Video, |t| t.kind);
            self.latency
                .entry(kind)
                .or_default()
                .record(now_us.saturating_sub(mark.sent_us));
        }
        first
    }

    /// Starts the measurement window: marks sent from now on count.
    pub fn begin_window(&mut self, now_us: u64) {
        for t in &mut self.sent {
            t.window = (Some(t.next_seq), None);
        }
        self.window_start = Some((now_us, self.totals));
        self.window_end = None;
        self.latency.clear();
    }

    /// Ends it: marks sent from now on do not count.
    pub fn end_window(&mut self, now_us: u64) {
        for t in &mut self.sent {
            t.window.1 = Some(t.next_seq);
        }
        self.window_end = Some((now_us, self.totals));
    }

    fn window_of(&self, track: u32) -> (u32, u32) {
        let t = &self.sent[track as usize];
        let start = t.window.0.unwrap_or(0);
        (start, t.window.1.unwrap_or(t.next_seq).max(start))
    }

    /// Whether `subscriber` got `track` at all.
    pub fn has(&self, subscriber: usize, track: u32) -> bool {
        self.received.contains_key(&(subscriber, track))
    }

    /// Whether every pair has received a mark past the window's end (so
    /// whatever of the window is still missing is lost, not late).
    pub fn drained(&self, expected: &[(usize, u32)]) -> bool {
        expected.iter().all(|(s, t)| {
            let end = self.window_of(*t).1;
            self.received
                .get(&(*s, *t))
                .and_then(|r| r.marks.max())
                .is_some_and(|m| m >= end)
        })
    }

    /// Subscribing participants that got any media, and packets so far.
    pub fn progress(&self) -> (usize, u64, u64) {
        (
            self.first_media.len(),
            self.totals.tx_packets,
            self.totals.rx_packets,
        )
    }

    /// A transport of `participant` has switched to a new source address
    /// (`tracks`: what it publishes, empty for a subscriber transport).
    /// Opens a gap on every pair flowing through it; returns the move's id.
    pub fn moved(&mut self, participant: usize, tracks: &[u32], now_us: u64) -> usize {
        let by = self.moves.len();
        let publisher = !tracks.is_empty();
        self.moves.push(Move {
            publisher,
            switched_us: now_us,
            first_sent_us: None,
            first_check_us: None,
            resumed_us: None,
        });
        for ((sub, track), r) in &mut self.received {
            let from = if publisher {
                // What the publisher sends from here on leaves the new socket.
                match self.sent.get(*track as usize) {
                    Some(t) if tracks.contains(track) => t.next_seq,
                    _ => continue,
                }
            } else if *sub == participant {
                // Anything past what it had can only come to the new socket.
                r.marks.max().map_or(0, |m| m + 1)
            } else {
                continue;
            };
            r.open.push(self.gaps.len());
            self.gaps.push(Gap {
                subscriber: *sub,
                track: *track,
                from,
                to: None,
                by,
            });
        }
        by
    }

    /// The moved transport sent its first datagram from the new address.
    pub fn sent_from_new_address(&mut self, by: usize, now_us: u64) {
        if let Some(m) = self.moves.get_mut(by) {
            m.first_sent_us.get_or_insert(now_us);
        }
    }

    /// The moved transport sent its first ICE check from the new address.
    pub fn checked_from_new_address(&mut self, by: usize, now_us: u64) {
        if let Some(m) = self.moves.get_mut(by) {
            m.first_check_us.get_or_insert(now_us);
        }
    }

    /// Resume times and the marks the moves cost. A gap never closed runs
    /// to the end of its track's window.
    pub fn reconnect_summary(&self, seed: u64) -> ReconnectSummary {
        let mut s = ReconnectSummary {
            seed,
            transports_moved: self.moves.len(),
            pairs_affected: self.gaps.len(),
            ..ReconnectSummary::default()
        };
        let mut all = Histogram::default();
        let mut publ = Histogram::default();
        let mut subs = Histogram::default();
        let mut outage = Histogram::default();
        let mut to_check = Histogram::default();
        let mut after_check = Histogram::default();
        for m in &self.moves {
            let Some(resumed) = m.resumed_us else {
                continue;
            };
            s.transports_resumed += 1;
            outage.record(resumed.saturating_sub(m.switched_us));
            let Some(sent) = m.first_sent_us else {
                continue;
            };
            if let Some(check) = m.first_check_us {
                to_check.record(check.saturating_sub(sent));
                after_check.record(resumed.saturating_sub(check));
            }
            let us = resumed.saturating_sub(sent);
            all.record(us);
            if m.publisher {
                publ.record(us);
            } else {
                subs.record(us);
            }
        }
        s.resume = Percentiles::of(&all);
        s.resume_publisher = Percentiles::of(&publ);
        s.resume_subscriber = Percentiles::of(&subs);
        s.outage = Percentiles::of(&outage);
        s.to_first_check = Percentiles::of(&to_check);
        s.after_first_check = Percentiles::of(&after_check);
        // Two moves (the subscriber's and the publisher's) may hit one pair
        // with overlapping gaps: count each missing mark once.
        let mut by_pair: HashMap<(usize, u32), Vec<(u32, u32)>> = HashMap::new();
        for g in &self.gaps {
            let to =
                g.to.unwrap_or_else(|| self.window_of(g.track).1)
                    .max(g.from);
            by_pair
                .entry((g.subscriber, g.track))
                .or_default()
                .push((g.from, to));
        }
        for (pair, mut ranges) in by_pair {
            ranges.sort_unstable();
            let marks = self.received.get(&pair).map(|r| &r.marks);
            let mut done = 0;
            for (from, to) in ranges {
                let from = from.max(done);
                if from < to {
                    let got = marks.map_or(0, |m| m.count_in(from, to));
                    s.lost_packets += u64::from(to - from) - got;
                }
                done = done.max(to);
            }
        }
        s
    }

    /// Loss, rates and latency over the window, for the `expected`
    /// (subscriber participant, publisher track) pairs.
    pub fn summarize(&self, expected: &[(usize, u32)]) -> MediaSummary {
        let (t0, c0) = self.window_start.unwrap_or((0, Counters::default()));
        let (t1, c1) = self.window_end.unwrap_or((t0, c0));
        let secs = (t1.saturating_sub(t0) as f64 / 1e6).max(1e-9);
        let mut s = MediaSummary {
            tracks_expected: expected.len(),
            window_secs: t1.saturating_sub(t0) as f64 / 1e6,
            packets_out: c1.tx_packets - c0.tx_packets,
            packets_in: c1.rx_packets - c0.rx_packets,
            bps_out: (c1.tx_bytes - c0.tx_bytes) as f64 * 8.0 / secs,
            bps_in: (c1.rx_bytes - c0.rx_bytes) as f64 * 8.0 / secs,
            ..MediaSummary::default()
        };
        s.packets_out_per_sec = s.packets_out as f64 / secs;
        s.packets_in_per_sec = s.packets_in as f64 / secs;
        for (sub, track) in expected {
            let (start, end) = self.window_of(*track);
            let want = u64::from(end - start);
            let got = self
                .received
                .get(&(*sub, *track))
                .map_or(0, |r| r.marks.count_in(start, end));
            if self.has(*sub, *track) {
                s.tracks_received += 1;
            }
            s.expected_packets += want;
            s.lost_packets += want - got;
        }
        if s.expected_packets > 0 {
            s.loss_pct = s.lost_packets as f64 * 100.0 / s.expected_packets as f64;
        }
        let mut all = Histogram::default();
        for h in self.latency.values() {
            all.merge(h);
        }
        s.latency = Percentiles::of(&all);
        let of_kind = |k| {
            self.latency
                .get(&k)
                .map(Percentiles::of)
                .unwrap_or_default()
        };
        s.latency_audio = of_kind(MediaKind::Audio);
        s.latency_video = of_kind(MediaKind::Video);
        let mut subscribers: Vec<usize> = expected.iter().map(|(s, _)| *s).collect();
        subscribers.sort_unstable();
        subscribers.dedup();
        let mut join = Histogram::default();
        for sub in subscribers {
            match (self.join_started.get(&sub), self.first_media.get(&sub)) {
                (Some(a), Some(b)) => join.record(b.saturating_sub(*a)),
                _ => s.joins_without_media += 1,
            }
        }
        s.join = Percentiles::of(&join);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_sets_count_distinct_marks_in_a_range() {
        let mut m = MarkSet::default();
        assert!(m.insert(5000));
        assert!(!m.insert(5000), "duplicate");
        assert!(m.insert(4990), "reordered, within the backlog");
        assert!(m.insert(5200));
        assert_eq!(m.count_in(4990, 5201), 3);
        assert_eq!(m.count_in(4991, 5200), 1);
        assert_eq!(m.max(), Some(5200));
        assert!(!m.insert(1), "far before the first mark");
    }

    /// Two publisher tracks, two subscribers, a window of 100 packets per
    /// track; the trace drops known packets, delays others, duplicates one.
    #[test]
    fn loss_and_latency_come_out_right_from_a_crafted_trace() {
        let mut r = Recorder::default();
        let audio = r.add_track(MediaKind::Audio);
        let video = r.add_track(MediaKind::Video);
        let (alice, bob) = (0, 1);
        r.join_started(alice, 0);
        r.join_started(bob, 0);
        let mut now = 1_000;
        // Warm-up: 10 packets each, all delivered; not counted.
        for _ in 0..10 {
            for t in [audio, video] {
                let m = r.stamp(t, false, 100, now);
                r.received(alice, &m, 100, now + 5_000);
                r.received(bob, &m, 100, now + 7_000);
            }
            now += 1_000;
        }
        r.begin_window(now);
        for i in 0..100u32 {
            for t in [audio, video] {
                let m = r.stamp(t, false, 100, now);
                // Alice loses every 10th video packet; audio arrives after
                // 1 ms, video after 1 ms + i µs.
                if !(t == video && i % 10 == 0) {
                    let delay = if t == audio {
                        1_000
                    } else {
                        1_000 + u64::from(i)
                    };
                    r.received(alice, &m, 100, now + delay);
                }
                // Bob gets everything, the last audio packet twice.
                r.received(bob, &m, 100, now + 2_000);
                if t == audio && i == 99 {
                    r.received(bob, &m, 100, now + 3_000);
                }
            }
            now += 1_000;
        }
        r.end_window(now);
        let expected = [(alice, audio), (alice, video), (bob, audio), (bob, video)];
        assert!(!r.drained(&expected), "nothing past the window yet");
        for t in [audio, video] {
            let m = r.stamp(t, false, 100, now);
            r.received(alice, &m, 100, now + 1_000);
            r.received(bob, &m, 100, now + 1_000);
        }
        assert!(r.drained(&expected));

        let s = r.summarize(&expected);
        assert_eq!(s.tracks_expected, 4);
        assert_eq!(s.tracks_received, 4);
        assert_eq!(s.expected_packets, 400);
        assert_eq!(s.lost_packets, 10);
        assert!((s.loss_pct - 2.5).abs() < 1e-9);
        assert_eq!(s.packets_out, 200);
        // 190 for alice, 201 for bob (one duplicate).
        assert_eq!(s.packets_in, 391);
        assert!((s.window_secs - 0.1).abs() < 1e-9);
        assert!((s.packets_out_per_sec - 2000.0).abs() < 1e-6);
        // 200 packets of 112 bytes in 0.1 s.
        assert!((s.bps_out - 200.0 * 112.0 * 8.0 / 0.1).abs() < 1e-6);
        // Audio: 100 at 1 ms (alice), 101 at 2–3 ms (bob).
        assert_eq!(s.latency_audio.samples, 201);
        assert_eq!(s.latency_audio.p50_ms, Some(2.0));
        assert_eq!(s.latency_audio.max_ms, Some(3.0));
        // Video: alice's 90 between 1.001 and 1.099 ms, bob's 100 at 2 ms.
        assert_eq!(s.latency_video.samples, 190);
        assert_eq!(s.latency_video.p50_ms, Some(2.0));
        assert_eq!(s.latency_video.p99_ms, Some(2.0));
        assert_eq!(s.latency_video.max_ms, Some(2.0));
        let mut alice_video = Histogram::default();
        for i in (0..100).filter(|i| i % 10 != 0) {
            alice_video.record(1_000 + i);
        }
        let p = Percentiles::of(&alice_video);
        // The 45th of 90 is 1049 µs, in the 16 µs-wide bucket starting at 1040.
        assert_eq!((p.p50_ms, p.max_ms), (Some(1.04), Some(1.099)));
        assert_eq!(s.latency.samples, 391);
        // Join: first media at 6 ms (alice), 8 ms (bob) after joining at 0.
        assert_eq!(s.join.samples, 2);
        let p50 = s.join.p50_ms.unwrap();
        assert!((p50 - 6.0).abs() / 6.0 < 0.02, "{p50}");
        assert_eq!(s.join.p99_ms, Some(8.0));
        assert_eq!(s.joins_without_media, 0);
    }

    #[test]
    fn a_track_that_never_arrives_is_all_lost() {
        let mut r = Recorder::default();
        let video = r.add_track(MediaKind::Video);
        r.join_started(3, 0);
        r.begin_window(0);
        for i in 0..50 {
            r.stamp(video, i == 0, 1000, i * 33_000);
        }
        r.end_window(50 * 33_000);
        let s = r.summarize(&[(3, video)]);
        assert_eq!(s.tracks_received, 0);
        assert_eq!(s.lost_packets, 50);
        assert_eq!(s.loss_pct, 100.0);
        assert_eq!(s.latency.samples, 0);
        assert_eq!(s.latency.p99_ms, None);
        assert_eq!(s.joins_without_media, 1);
    }

    /// Alice's subscriber transport moves, then the publisher's: resume
    /// runs from each one's first datagram on its new address to the first
    /// packet past the move; loss counts the marks in each pair's gap that
    /// never came, once, with a NACK repair counted as arrived.
    #[test]
    fn moves_report_resume_from_the_first_new_datagram_and_the_marks_their_gaps_lost() {
        let mut r = Recorder::default();
        let video = r.add_track(MediaKind::Video);
        let (alice, bob, publisher) = (1, 2, 0);
        r.begin_window(0);
        let send = |r: &mut Recorder, at: u64| r.stamp(video, false, 1000, at);
        for i in 0..10 {
            let m = send(&mut r, i * 1_000);
            r.received(alice, &m, 1000, i * 1_000 + 500);
            r.received(bob, &m, 1000, i * 1_000 + 500);
        }
        // Alice's subscriber transport moves; marks 10–12 only reach Bob.
        let alice_move = r.moved(alice, &[], 10_000);
        r.sent_from_new_address(alice_move, 10_400);
        r.sent_from_new_address(alice_move, 10_900); // only the first counts
        r.checked_from_new_address(alice_move, 13_000);
        let mut m11 = None;
        for i in 10..13 {
            let m = send(&mut r, i * 1_000);
            r.received(bob, &m, 1000, i * 1_000 + 500);
            m11 = m11.or((i == 11).then_some(m));
        }
        // Mark 13 is the first she gets again; 11 comes back by NACK.
        let m13 = send(&mut r, 13_000);
        r.received(alice, &m13, 1000, 13_600);
        r.received(alice, &m11.unwrap(), 1000, 13_700);
        // The publisher moves; mark 13 was still on its way to Bob, and
        // marks 14 and 15 from the new address never get through.
        let publisher_move = r.moved(publisher, &[video], 13_800);
        r.received(bob, &m13, 1000, 13_900);
        let m14 = send(&mut r, 14_000);
        r.sent_from_new_address(publisher_move, 14_000);
        send(&mut r, 15_000);
        let m16 = send(&mut r, 16_000);
        r.received(bob, &m16, 1000, 17_000);
        r.received(alice, &m16, 1000, 17_100);
        r.received(alice, &m14, 1000, 17_200); // late repair of 14, for Alice only
        r.end_window(20_000);

        let s = r.reconnect_summary(7);
        assert_eq!(s.seed, 7);
        assert_eq!(s.transports_moved, 2);
        assert_eq!(s.transports_resumed, 2);
        // Alice's gap; then Alice's and Bob's gaps from the publisher's move.
        assert_eq!(s.pairs_affected, 3);
        // Alice: 10 and 12 (11 repaired); 15 (14 repaired). Bob: 14 and 15.
        assert_eq!(s.lost_packets, 5);
        assert_eq!(s.resume_subscriber.samples, 1);
        assert_eq!(s.resume_subscriber.p50_ms, Some(3.2)); // 10.4 → 13.6 ms
        assert_eq!(s.resume_publisher.max_ms, Some(3.0)); // 14.0 → 17.0 ms (Bob first)
        assert_eq!(s.resume.samples, 2);
        assert_eq!(s.resume.max_ms, Some(3.2));
        assert_eq!(s.outage.max_ms, Some(3.6)); // switch at 10.0 → 13.6 ms
        // Only Alice's transport said when it checked: 10.4 → 13.0 → 13.6 ms.
        assert_eq!(s.to_first_check.samples, 1);
        assert_eq!(s.to_first_check.max_ms, Some(2.6));
        assert_eq!(s.after_first_check.max_ms, Some(0.6));
    }

    #[test]
    fn a_move_that_never_resumes_loses_the_rest_of_the_window_and_counts_once() {
        let mut r = Recorder::default();
        let audio = r.add_track(MediaKind::Audio);
        r.begin_window(0);
        for i in 0..5 {
            let m = r.stamp(audio, false, 80, i * 20_000);
            r.received(3, &m, 80, i * 20_000 + 1_000);
        }
        // Both of participant 3's transports would open gaps on this pair
        // from the same mark: overlapping gaps count once.
        let a = r.moved(3, &[], 100_000);
        let b = r.moved(3, &[], 100_000);
        r.sent_from_new_address(a, 100_500);
        r.sent_from_new_address(b, 100_500);
        for i in 5..20 {
            r.stamp(audio, false, 80, i * 20_000);
        }
        r.end_window(400_000);
        let s = r.reconnect_summary(0);
        assert_eq!((s.transports_moved, s.transports_resumed), (2, 0));
        assert_eq!(s.pairs_affected, 2);
        assert_eq!(s.lost_packets, 15);
        assert_eq!(s.resume.samples, 0);
        assert_eq!(s.resume.p99_ms, None);
    }
}
