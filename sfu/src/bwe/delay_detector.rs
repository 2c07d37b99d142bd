//! The delay-based half of the estimate: does the path's queue grow?
//!
//! Packets are grouped by send time into bursts of 5 ms (a burst leaves
//! together and should arrive together); between consecutive groups, the
//! difference of arrival spacing and send spacing is how much longer the
//! later group waited. Those variations are summed, smoothed, and a
//! straight line fitted over the last 20 groups: its slope says how fast
//! the queuing delay grows. The slope, scaled by how many deltas back it
//! (up to 60) and a gain of 4 so a queue starting to grow stands out from
//! noise, is compared with a threshold that itself follows the trend
//! slowly upward and quickly downward, so that the detector neither fires
//! on every jitter nor goes blind on a noisy path (the scheme of
//! draft-ietf-rmcat-gcc and libwebrtc's trendline estimator).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets sent within this long of a group's first are one group.
const BURST: Duration = Duration::from_millis(5);
/// Groups the trend is fitted over.
const WINDOW: usize = 20;
/// Weight of the old value in the smoothed accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The scaling of the slope before it is compared with the threshold.
const TREND_GAIN: f64 = 4.0;
/// The most deltas the scaling counts.
const MAX_DELTAS: f64 = 60.0;
/// The threshold: where it starts, its bounds, how fast it follows a trend
/// above it and one below it (per millisecond), and how far above it a
/// trend must be to be ignored as a spike.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const SPIKE: f64 = 15.0;
/// Overuse is signalled when the trend has been over the threshold this
/// long (and over more than one group) and is not falling.
const OVERUSE_TIME_MS: f64 = 10.0;
/// Arrival spacing beyond this is not a queue but a gap in the feedback,
/// or a receiver clock jump: the fit starts again.
const MAX_ARRIVAL_GAP_MS: f64 = 3_000.0;

/// What the path's queue is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    Normal,
    /// Queuing delay is growing: we send more than the path takes. Said
    /// once per time the detector sees it (`verdict`).
    Over,
    /// The trend is still above the threshold since the last `Over`, but
    /// no longer rising: the queue is not growing any faster, most likely
    /// because the sender already slowed down. Not a reason to slow again.
    StillOver,
    /// Queuing delay is shrinking: a queue drains.
    Under,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent: Instant,
    last_sent: Instant,
    /// Arrival of its last packet, µs on the receiver's clock.
    last_arrival_us: i64,
}

#[derive(Debug)]
pub(crate) struct DelayDetector {
    current: Option<Group>,
    previous: Option<Group>,
    /// The first group's arrival: the fit's time axis starts there.
    first_arrival_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    deltas: f64,
    /// (arrival ms since first, smoothed accumulated delay ms).
    points: VecDeque<(f64, f64)>,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    previous_trend: f64,
    over_time_ms: f64,
    over_count: u32,
    usage: Usage,
    /// Overuse was seen since the last `verdict`.
    fresh_overuse: bool,
}

impl Default for DelayDetector {
    fn default() -> Self {
        DelayDetector {
            current: None,
            previous: None,
            first_arrival_us: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            deltas: 0.0,
            points: VecDeque::with_capacity(WINDOW + 1),
            threshold: THRESHOLD_START,
            last_threshold_update_ms: None,
            previous_trend: 0.0,
            over_time_ms: 0.0,
            over_count: 0,
            usage: Usage::Normal,
            fresh_overuse: false,
        }
    }
}

impl DelayDetector {
    /// A packet sent at `sent_at` arrived at `arrival_us` (receiver clock).
    /// Packets are given in send order.
    pub(crate) fn on_packet(&mut self, sent_at: Instant, arrival_us: i64) {
        let Some(group) = &mut self.current else {
            self.current = Some(Group {
                first_sent: sent_at,
                last_sent: sent_at,
                last_arrival_us: arrival_us,
            });
            return;
        };
        if sent_at < group.first_sent {
            // Sent before the group being built: reordered in the feedback
            // or a resend's copy. Nothing to learn.
            return;
        }
        if sent_at.saturating_duration_since(group.first_sent) <= BURST {
            group.last_sent = group.last_sent.max(sent_at);
            group.last_arrival_us = group.last_arrival_us.max(arrival_us);
            return;
        }
        let finished = *group;
        self.current = Some(Group {
            first_sent: sent_at,
            last_sent: sent_at,
            last_arrival_us: arrival_us,
        });
        if let Some(previous) = self.previous.replace(finished) {
            self.on_group_delta(&previous, &finished);
        }
    }

    /// What the detector concludes now: `Over` if it saw overuse since
    /// the last verdict, `StillOver` if the trend is still high but it saw
    /// none since.
    pub(crate) fn verdict(&mut self) -> Usage {
        if std::mem::take(&mut self.fresh_overuse) {
            Usage::Over
        } else if self.usage == Usage::Over {
            Usage::StillOver
        } else {
            self.usage
        }
    }

    /// The threshold the trend is compared with (ms), for tests.
    #[cfg(test)]
    pub(crate) fn threshold(&self) -> f64 {
        self.threshold
    }

    fn on_group_delta(&mut self, previous: &Group, group: &Group) {
        let send_ms = group
            .last_sent
            .saturating_duration_since(previous.last_sent)
            .as_secs_f64()
            * 1_000.0;
        let arrival_ms = (group
            .last_arrival_us
            .saturating_sub(previous.last_arrival_us)) as f64
            / 1_000.0;
        if !(0.0..=MAX_ARRIVAL_GAP_MS).contains(&arrival_ms) {
            // Reordered arrival, or a gap that says nothing about a queue.
            self.restart();
            return;
        }
        let first = *self
            .first_arrival_us
            .get_or_insert(previous.last_arrival_us);
        let variation = arrival_ms - send_ms;
        self.deltas = (self.deltas + 1.0).min(MAX_DELTAS);
        self.accumulated_ms += variation;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let at_ms = (group.last_arrival_us.saturating_sub(first)) as f64 / 1_000.0;
        self.points.push_back((at_ms, self.smoothed_ms));
        if self.points.len() > WINDOW {
            self.points.pop_front();
        }
        if self.points.len() == WINDOW
            && let Some(slope) = slope(&self.points)
        {
            self.detect(slope, send_ms, at_ms);
        }
    }

    fn detect(&mut self, slope: f64, send_ms: f64, now_ms: f64) {
        let trend = slope * self.deltas * TREND_GAIN;
        if trend > self.threshold {
            // Half a group's spacing the first time: the trend crossed the
            // threshold somewhere within it.
            self.over_time_ms += if self.over_count == 0 {
                send_ms / 2.0
            } else {
                send_ms
            };
            self.over_count += 1;
            if self.over_time_ms > OVERUSE_TIME_MS
                && self.over_count > 1
                && trend >= self.previous_trend
            {
                self.over_time_ms = 0.0;
                self.over_count = 0;
                self.usage = Usage::Over;
                self.fresh_overuse = true;
            }
        } else {
            self.over_time_ms = 0.0;
            self.over_count = 0;
            self.usage = if trend < -self.threshold {
                Usage::Under
            } else {
                Usage::Normal
            };
        }
        self.previous_trend = trend;
        self.adapt_threshold(trend, now_ms);
    }

    fn adapt_threshold(&mut self, trend: f64, now_ms: f64) {
        let last = self.last_threshold_update_ms.replace(now_ms);
        let size = trend.abs();
        if size > self.threshold + SPIKE {
            return;
        }
        let k = if size < self.threshold { K_DOWN } else { K_UP };
        let elapsed = last.map_or(0.0, |last| (now_ms - last).clamp(0.0, 100.0));
        self.threshold = (self.threshold + k * (size - self.threshold) * elapsed)
            .clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }

    /// Forgets the fit (the threshold stays: it describes the path).
    fn restart(&mut self) {
        self.first_arrival_us = None;
        self.accumulated_ms = 0.0;
        self.smoothed_ms = 0.0;
        self.deltas = 0.0;
        self.points.clear();
        self.over_time_ms = 0.0;
        self.over_count = 0;
        self.last_threshold_update_ms = None;
        self.usage = Usage::Normal;
        self.fresh_overuse = false;
    }
}

/// The least-squares slope of `points`, if their times are not all one.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sum_x, sum_y) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mean_x, mean_y) = (sum_x / n, sum_y / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mean_x) * (y - mean_y);
        den += (x - mean_x) * (x - mean_x);
    }
    let slope = num / den;
    (den > 0.0 && slope.is_finite()).then_some(slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups every 10 ms; each arrives `growth_us` later than spacing says.
    fn run(detector: &mut DelayDetector, t0: Instant, groups: u32, growth_us: i64) -> Vec<Usage> {
        let mut usages = Vec::new();
        for i in 0..groups {
            let sent = t0 + Duration::from_millis(10) * i;
            let arrival = 50_000 + i64::from(i) * (10_000 + growth_us);
            detector.on_packet(sent, arrival);
            usages.push(detector.verdict());
        }
        usages
    }

    #[test]
    fn a_steady_path_is_normal_and_lowers_the_threshold_to_its_floor() {
        let mut d = DelayDetector::default();
        let usages = run(&mut d, Instant::now(), 300, 0);
        assert!(usages.iter().all(|u| *u == Usage::Normal));
        assert_eq!(d.threshold(), THRESHOLD_MIN);
    }

    #[test]
    fn a_queue_growing_a_millisecond_per_group_is_overuse_within_30_groups() {
        let mut d = DelayDetector::default();
        let usages = run(&mut d, Instant::now(), 60, 1_000);
        let first = usages.iter().position(|u| *u == Usage::Over);
        assert!(
            first.is_some_and(|i| i <= 30),
            "first overuse at group {first:?}"
        );
    }

    #[test]
    fn a_draining_queue_is_underuse() {
        let mut d = DelayDetector::default();
        let usages = run(&mut d, Instant::now(), 60, -1_000);
        assert_eq!(usages.last(), Some(&Usage::Under));
    }

    #[test]
    fn absurd_arrivals_restart_the_fit_without_panicking() {
        let t0 = Instant::now();
        let mut d = DelayDetector::default();
        for (i, arrival) in [0, i64::MAX, i64::MIN, 5, -1_000_000_000, 0]
            .into_iter()
            .enumerate()
        {
            d.on_packet(t0 + Duration::from_millis(10) * i as u32, arrival);
        }
        assert_eq!(d.verdict(), Usage::Normal);
    }
}
