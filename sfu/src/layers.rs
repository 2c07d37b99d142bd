//! Simulcast layers of one producer, and which one a consumer gets.
//!
//! A publisher may send one track as up to three encodings of the same
//! picture (rid `q` quarter, `h` half, `f` full resolution, as browsers and
//! LiveKit's SDKs name them). Each consumer gets the highest layer that is
//! both no larger than the size its subscriber shows the track at
//! (`update_subscription`) and no faster than its share of the subscriber's
//! bandwidth (module `allocation`). Pure: the shard measures the layers and
//! applies the choice.

use std::time::{Duration, Instant};

use crate::continuity::{self, Arrival, Continuity};

/// How long a layer's bitrate is measured over before it is updated.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A layer that sent nothing for this long is not offered to consumers.
const SILENT_AFTER: Duration = Duration::from_secs(2);
/// A layer that sent nothing for this long while another layer of its
/// track kept sending has been stopped by the publisher: a browser short of
/// uplink drops its upper layers (and may start one again for a moment and
/// drop it once more). Every layer carries every frame, so at any frame rate
/// above 2 per second a layer still being sent is never this far behind the
/// others. Judging by the others, not by the clock alone, moves a consumer
/// off a stopped layer in half a second instead of `SILENT_AFTER`.
const STOPPED_AFTER: Duration = Duration::from_millis(500);
/// How long a layer must have been sent without a stop before a consumer
/// moves up to it. A browser whose uplink estimate is low starts an upper
/// layer for a moment and stops it again (seen for 100–200 ms at a time
/// right after a network move); a consumer that moved up to it would lose
/// the picture until the stop was noticed and a keyframe of the lower
/// layer came. A layer's first start, and a start we asked for (dynacast
/// had stopped it), count as settled at once: neither is the publisher
/// toggling a layer on its own, and making every call start on the lowest
/// layer for a second starved the send-side estimate of traffic
/// (sim_tests/send_side.rs ended on q most of the time).
const SETTLED_AFTER: Duration = Duration::from_secs(1);
/// A layer fits a share when its bitrate is at most this much above it
/// (encoders overshoot briefly; the share is an estimate too).
const SHARE_SLACK: f64 = 1.1;

/// One encoding of a simulcast track.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub rid: String,
    pub ssrc: u32,
    /// Its picture size, read from its last keyframe.
    pub size: Option<(u32, u32)>,
    /// Bits per second over the last full window.
    pub bitrate: u64,
    /// When a keyframe of this layer was last asked for.
    pub last_keyframe_request: Option<Instant>,
    window_bytes: u64,
    window_start: Option<Instant>,
    /// Its newest packet: the publisher is encoding this layer as long as
    /// that keeps moving. A retransmission (an older sequence number, on
    /// the media SSRC without RTX) does not count: a publisher answers
    /// NACKs of a layer it has stopped encoding.
    continuity: Option<Continuity>,
    /// Since when it has been sent without a stop of `STOPPED_AFTER`.
    sending_since: Option<Instant>,
    /// We told the publisher to stop it (dynacast) and it has not been
    /// sent since.
    stopped_by_us: bool,
}

impl Layer {
    pub(crate) fn new(rid: String, ssrc: u32) -> Self {
        Layer {
            rid,
            ssrc,
            size: None,
            bitrate: 0,
            last_keyframe_request: None,
            window_bytes: 0,
            window_start: None,
            continuity: None,
            sending_since: None,
            stopped_by_us: false,
        }
    }

    /// A packet of `bytes` with sequence number `seq` arrived on this layer.
    pub(crate) fn count(&mut self, now: Instant, bytes: usize, seq: u16) -> Arrival {
        let start = *self.window_start.get_or_insert(now);
        if now >= start + RATE_WINDOW {
            let secs = (now - start).as_secs_f64();
            self.bitrate = (self.window_bytes as f64 * 8.0 / secs) as u64;
            self.window_bytes = 0;
            self.window_start = Some(now);
        }
        self.window_bytes += bytes as u64;
        let silent_for = self
            .last_packet()
            .map(|at| now.saturating_duration_since(at));
        let arrival = continuity::observe(&mut self.continuity, now, seq);
        if matches!(arrival, Arrival::Newer { .. })
            && silent_for.is_none_or(|silence| silence >= STOPPED_AFTER)
        {
            // Started for the first time, or again at our request: settled
            // at once. Only a layer the publisher stopped and started on
            // its own has to prove itself.
            self.sending_since = if std::mem::take(&mut self.stopped_by_us) || silent_for.is_none()
            {
                now.checked_sub(SETTLED_AFTER).or(Some(now))
            } else {
                Some(now)
            };
        }
        arrival
    }

    /// Dynacast told the publisher to stop sending it.
    pub(crate) fn stopped_by_us(&mut self) {
        self.stopped_by_us = true;
    }

    /// Whether it has been sent long enough to move a consumer up to it.
    fn is_settled(&self, now: Instant) -> bool {
        self.sending_since
            .is_some_and(|since| now >= since + SETTLED_AFTER)
    }

    /// When its newest packet arrived.
    fn last_packet(&self) -> Option<Instant> {
        self.continuity.map(|c| c.newest_at())
    }

    /// Whether the publisher is sending it.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.last_packet().is_some_and(|at| now < at + SILENT_AFTER)
    }
}

/// When the newest packet of any of `layers` arrived.
fn newest_packet(layers: &[Layer]) -> Option<Instant> {
    layers.iter().filter_map(|l| l.last_packet()).max()
}

/// Whether the publisher is sending layer `index`: it is live, and not
/// `STOPPED_AFTER` behind the track's other layers.
pub(crate) fn is_sending(layers: &[Layer], index: usize, now: Instant) -> bool {
    let Some(layer) = layers.get(index) else {
        return false;
    };
    let Some(at) = layer.last_packet().filter(|_| layer.is_live(now)) else {
        return false;
    };
    newest_packet(layers).is_none_or(|newest| newest < at + STOPPED_AFTER)
}

/// Where a rid ranks among a track's layers: `q` < `h` < `f`; other names
/// after those, in the order given.
pub(crate) fn rank(rid: &str) -> u8 {
    match rid {
        "q" => 0,
        "h" => 1,
        "f" => 2,
        _ => 3,
    }
}

/// The index (into `layers`, lowest quality first) of the layer a consumer
/// should get: the highest one being sent (`is_sending`) that fits
/// `max_size` (width, height) and `share` (bits per second), else the lowest
/// one being sent; `None` when no layer is. Unknown sizes and bitrates fit.
/// A layer counts only up to the highest that has been sent for
/// `SETTLED_AFTER` (the lowest when none has).
///
/// With `step_up`, one live layer above the one the share allows may be
/// chosen (size permitting). We do not probe with padding, and a browser's
/// receive-side estimate grows only from the traffic it gets: a consumer
/// held to the layer its estimate allows would never see the estimate reach
/// the next one. The caller allows it while the subscriber's estimate has
/// not fallen lately; if the next layer is too much, the estimate falls
/// (REMB, within a second or two) and the consumer steps back down.
pub(crate) fn select(
    layers: &[Layer],
    now: Instant,
    share: Option<u64>,
    max_size: Option<(u32, u32)>,
    step_up: bool,
) -> Option<usize> {
    let sending: Vec<usize> = (0..layers.len())
        .filter(|&i| is_sending(layers, i, now))
        .collect();
    // Not above what has been sent for `SETTLED_AFTER`: a layer just
    // (re)started counts below the highest settled one (moving down to it
    // is safe), and when none has settled (every layer came back at once)
    // only the lowest counts.
    let highest_settled = sending
        .iter()
        .copied()
        .filter(|&i| layers[i].is_settled(now))
        .max();
    let live: Vec<usize> = match highest_settled {
        Some(top) => sending.into_iter().filter(|&i| i <= top).collect(),
        None => sending.into_iter().take(1).collect(),
    };
    let chosen = choose(layers, &live, share, max_size, rate)?;
    if !step_up || share.is_none() {
        return Some(chosen);
    }
    Some(step_above(layers, &live, chosen, max_size))
}

/// The next of `candidates` above `chosen` if its size fits, else `chosen`.
fn step_above(
    layers: &[Layer],
    candidates: &[usize],
    chosen: usize,
    max_size: Option<(u32, u32)>,
) -> usize {
    candidates
        .iter()
        .copied()
        .find(|&i| i > chosen)
        .filter(|&i| size_fits(&layers[i], max_size))
        .unwrap_or(chosen)
}

/// A layer's bitrate: as measured, or the nominal one of its rid before a
/// full window was measured (a layer just learnt must not look free).
fn rate(layer: &Layer) -> u64 {
    if layer.bitrate > 0 {
        layer.bitrate
    } else {
        nominal_bitrate(&layer.rid)
    }
}

fn size_fits(layer: &Layer, max_size: Option<(u32, u32)>) -> bool {
    match (max_size, layer.size) {
        (Some((max_w, max_h)), Some((w, h))) => w <= max_w || h <= max_h,
        _ => true,
    }
}

/// The layer a consumer would get if the publisher sent every layer: what
/// to ask the publisher for (dynacast). A layer not being sent is judged by
/// its last measured bitrate, or by the nominal one of its rid.
///
/// With `step_up`, the layer above too, as `select` would step up to it: it
/// steps up only to a layer being sent, so a layer it may step up to must
/// not be stopped for being above its share.
pub(crate) fn wanted(
    layers: &[Layer],
    share: Option<u64>,
    max_size: Option<(u32, u32)>,
    step_up: bool,
) -> Option<usize> {
    let all: Vec<usize> = (0..layers.len()).collect();
    let chosen = choose(layers, &all, share, max_size, rate)?;
    if !step_up || share.is_none() {
        return Some(chosen);
    }
    Some(step_above(layers, &all, chosen, max_size))
}

/// What browsers' SDKs (ours included) encode each rid at.
fn nominal_bitrate(rid: &str) -> u64 {
    match rank(rid) {
        0 => 150_000,
        1 => 500_000,
        _ => 1_500_000,
    }
}

/// The highest of `candidates` that fits, else the lowest candidate.
fn choose(
    layers: &[Layer],
    candidates: &[usize],
    share: Option<u64>,
    max_size: Option<(u32, u32)>,
    bitrate: impl Fn(&Layer) -> u64,
) -> Option<usize> {
    let fits = |i: usize| {
        let layer = &layers[i];
        let rate_fits = match share {
            Some(share) => bitrate(layer) as f64 <= share as f64 * SHARE_SLACK,
            None => true,
        };
        size_fits(layer, max_size) && rate_fits
    };
    candidates
        .iter()
        .rev()
        .copied()
        .find(|&i| fits(i))
        .or(candidates.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// q/h/f at 150/500/1500 kbit/s and 320/640/1280 wide, all live at `now`.
    fn layers(now: Instant) -> Vec<Layer> {
        [
            ("q", 150_000, 320),
            ("h", 500_000, 640),
            ("f", 1_500_000, 1280),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (rid, bitrate, width))| {
            let mut layer = Layer::new(rid.into(), 100 + i as u32);
            layer.bitrate = bitrate;
            layer.size = Some((width, width * 9 / 16));
            layer.continuity = Some(Continuity::new(now, 0));
            layer.sending_since = Some(now - SETTLED_AFTER);
            layer
        })
        .collect()
    }

    /// Layers q and h sent every 33 ms from `t0` to `until`, a packet per
    /// frame each (sequence numbers from 0); f never.
    fn sent_until(t0: Instant, until: Instant) -> Vec<Layer> {
        sent_on(&[0, 1], t0, until).0
    }

    /// The layers of `layers(t0)` forgotten, then those at `sending` sent
    /// every 33 ms from `t0` to `until`, a packet per frame each (sequence
    /// numbers from 0); also the next frame's time and sequence number.
    fn sent_on(sending: &[usize], t0: Instant, until: Instant) -> (Vec<Layer>, Instant, u16) {
        let mut l = layers(t0);
        for layer in &mut l {
            layer.continuity = None;
            layer.sending_since = None;
        }
        let mut at = t0;
        let mut seq = 0u16;
        while at <= until {
            for &i in sending {
                l[i].count(at, 1000, seq);
            }
            at += Duration::from_millis(33);
            seq += 1;
        }
        (l, at, seq)
    }

    #[test]
    fn a_layer_stopped_while_the_others_go_on_is_not_offered_after_half_a_second() {
        let t0 = Instant::now();
        // The last frame of both is the 61st, at 1980 ms.
        let mut l = sent_until(t0, t0 + Duration::from_secs(2));
        let h_stopped = t0 + Duration::from_millis(1980);
        assert_eq!(select(&l, h_stopped, None, None, false), Some(1));
        // q goes on alone; h's publisher answers NACKs for old h packets,
        // which does not count as sending it.
        let mut at = h_stopped;
        let mut seq = 60;
        while at < h_stopped + Duration::from_millis(600) {
            at += Duration::from_millis(33);
            seq += 1;
            l[0].count(at, 1000, seq);
            assert_eq!(l[1].count(at, 1000, 40), Arrival::Older);
            let expected = if at < h_stopped + STOPPED_AFTER { 1 } else { 0 };
            assert_eq!(
                select(&l, at, None, None, false),
                Some(expected),
                "at {:?}",
                at - h_stopped
            );
        }
        // Well before SILENT_AFTER (2 s) ends h's liveness on its own.
        assert!(l[1].is_live(at));
    }

    #[test]
    fn layers_back_together_after_a_silence_count_above_the_lowest_only_once_settled() {
        let t0 = Instant::now();
        // Sent for a second, both silent for 2 s (an outage), then back.
        let mut l = sent_until(t0, t0 + Duration::from_secs(1));
        let back = t0 + Duration::from_secs(3);
        let mut at = back;
        let mut seq = 100u16;
        while at < back + SETTLED_AFTER - Duration::from_millis(40) {
            l[0].count(at, 1000, seq);
            l[1].count(at, 1000, seq);
            at += Duration::from_millis(33);
            seq += 1;
        }
        assert_eq!(select(&l, at, None, None, false), Some(0));
        assert_eq!(select(&l, at, None, None, true), Some(0));
        while at <= back + SETTLED_AFTER {
            l[0].count(at, 1000, seq);
            l[1].count(at, 1000, seq);
            at += Duration::from_millis(33);
            seq += 1;
        }
        assert_eq!(select(&l, at, None, None, false), Some(1));
    }

    #[test]
    fn layers_a_publisher_starts_with_count_at_once() {
        let t0 = Instant::now();
        let l = sent_until(t0, t0 + Duration::from_millis(100));
        assert_eq!(
            select(&l, t0 + Duration::from_millis(100), None, None, false),
            Some(1)
        );
    }

    #[test]
    fn a_layer_we_stopped_and_asked_for_again_counts_at_once() {
        let t0 = Instant::now();
        let mut l = sent_until(t0, t0 + Duration::from_secs(1));
        l[1].stopped_by_us();
        // h silent for 2 s while q goes on, then back at our request.
        let mut at = t0 + Duration::from_secs(1);
        let mut seq = 31u16;
        while at < t0 + Duration::from_secs(3) {
            at += Duration::from_millis(33);
            seq += 1;
            l[0].count(at, 1000, seq);
        }
        l[1].count(at, 1000, 200);
        assert_eq!(select(&l, at, None, None, false), Some(1));
    }

    #[test]
    fn a_layer_just_started_below_the_one_being_received_counts_at_once() {
        let t0 = Instant::now();
        // q and f sent for 2 s; h (dynacast asked for it again) starts now.
        let (mut l, at, seq) = sent_on(&[0, 2], t0, t0 + Duration::from_secs(2));
        l[0].count(at, 1000, seq);
        l[1].count(at, 1000, 0);
        l[2].count(at, 1000, seq);
        l[2].bitrate = 1_500_000;
        // The share fits h: h at once, not q until h has settled.
        assert_eq!(select(&l, at, Some(700_000), None, false), Some(1));
    }

    #[test]
    fn a_layer_stopped_for_a_moment_starts_its_settling_again() {
        let t0 = Instant::now();
        let mut l = sent_until(t0, t0 + Duration::from_secs(2));
        // h pauses 600 ms while q goes on, then comes back.
        let back = t0 + Duration::from_millis(2600);
        let mut at = t0 + Duration::from_secs(2);
        let mut seq = 61;
        while at < back {
            at += Duration::from_millis(33);
            seq += 1;
            l[0].count(at, 1000, seq);
        }
        l[1].count(at, 1000, seq);
        assert_eq!(select(&l, at, None, None, false), Some(0));
        assert!(l[1].is_settled(at + SETTLED_AFTER));
        assert!(!l[1].is_settled(at + SETTLED_AFTER - Duration::from_millis(1)));
    }

    #[test]
    fn with_no_limits_the_highest_layer_is_chosen() {
        let now = Instant::now();
        assert_eq!(select(&layers(now), now, None, None, false), Some(2));
    }

    #[test]
    fn the_highest_layer_that_fits_the_share_is_chosen() {
        let now = Instant::now();
        let l = layers(now);
        assert_eq!(select(&l, now, Some(2_000_000), None, false), Some(2));
        assert_eq!(select(&l, now, Some(700_000), None, false), Some(1));
        assert_eq!(select(&l, now, Some(200_000), None, false), Some(0));
        // Nothing fits: the lowest still goes (pausing is allocation's call).
        assert_eq!(select(&l, now, Some(50_000), None, false), Some(0));
    }

    #[test]
    fn a_small_view_gets_the_layer_no_larger_than_it() {
        let now = Instant::now();
        let l = layers(now);
        assert_eq!(select(&l, now, None, Some((320, 180)), false), Some(0));
        assert_eq!(select(&l, now, None, Some((700, 400)), false), Some(1));
        // Smaller than every layer: the lowest.
        assert_eq!(select(&l, now, None, Some((100, 60)), false), Some(0));
        // Size and share together: the stricter wins.
        assert_eq!(
            select(&l, now, Some(200_000), Some((1920, 1080)), false),
            Some(0)
        );
    }

    #[test]
    fn a_layer_the_publisher_stopped_sending_is_not_offered() {
        let now = Instant::now();
        let mut l = layers(now);
        l[2].continuity = Some(Continuity::new(now - Duration::from_secs(3), 0));
        assert_eq!(select(&l, now, None, None, false), Some(1));
        for layer in &mut l {
            layer.continuity = None;
        }
        assert_eq!(select(&l, now, None, None, false), None);
    }

    #[test]
    fn the_bitrate_is_measured_over_one_second_windows() {
        let t0 = Instant::now();
        let mut layer = Layer::new("h".into(), 1);
        // 50 packets of 1250 bytes over one second: 500 kbit/s.
        for i in 0..50 {
            layer.count(t0 + Duration::from_millis(20 * i), 1250, i as u16);
        }
        assert_eq!(layer.bitrate, 0, "no full window yet");
        layer.count(t0 + Duration::from_secs(1), 1250, 50);
        assert_eq!(layer.bitrate, 500_000);
        assert!(layer.is_live(t0 + Duration::from_secs(2)));
        assert!(!layer.is_live(t0 + Duration::from_secs(4)));
    }

    #[test]
    fn what_a_consumer_wants_counts_layers_not_being_sent_at_their_nominal_rate() {
        let now = Instant::now();
        let mut l = layers(now);
        // f is paused at the publisher: no packets, no measured bitrate.
        l[2].bitrate = 0;
        l[2].continuity = None;
        assert_eq!(select(&l, now, Some(2_000_000), None, false), Some(1));
        assert_eq!(wanted(&l, Some(2_000_000), None, false), Some(2));
        assert_eq!(wanted(&l, Some(1_000_000), None, false), Some(1));
    }

    #[test]
    fn a_consumer_allowed_to_step_up_wants_the_layer_above_its_share_sent_too() {
        let now = Instant::now();
        let mut l = layers(now);
        // The share fits h; stepping up would take f, so f must go on
        // being sent (or be sent again: here the publisher paused it).
        assert_eq!(wanted(&l, Some(600_000), None, false), Some(1));
        assert_eq!(wanted(&l, Some(600_000), None, true), Some(2));
        l[2].continuity = None;
        assert_eq!(wanted(&l, Some(600_000), None, true), Some(2));
        // Not above what the subscriber shows; nothing above the top.
        assert_eq!(wanted(&l, Some(600_000), Some((640, 360)), true), Some(1));
        assert_eq!(wanted(&l, Some(5_000_000), None, true), Some(2));
    }

    #[test]
    fn a_layer_just_learnt_is_judged_at_its_nominal_rate_not_as_free() {
        let now = Instant::now();
        let mut l = layers(now);
        l[2].bitrate = 0; // f: live, not yet measured (nominal 1.5 Mbit/s)
        assert_eq!(select(&l, now, Some(700_000), None, false), Some(1));
    }

    #[test]
    fn stepping_up_allows_one_live_layer_above_the_share_within_the_size() {
        let now = Instant::now();
        let l = layers(now);
        // The share fits q only; one step up is h, never f.
        assert_eq!(select(&l, now, Some(200_000), None, false), Some(0));
        assert_eq!(select(&l, now, Some(200_000), None, true), Some(1));
        // Not above what the subscriber shows.
        assert_eq!(
            select(&l, now, Some(200_000), Some((320, 180)), true),
            Some(0)
        );
        // Already at the top.
        assert_eq!(select(&l, now, Some(5_000_000), None, true), Some(2));
    }

    #[test]
    fn rids_rank_q_h_f() {
        let mut rids = vec!["f", "x", "q", "h"];
        rids.sort_by_key(|r| rank(r));
        assert_eq!(rids, vec!["q", "h", "f", "x"]);
    }
}
