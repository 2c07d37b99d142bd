//! The delay-based target: additive increase, multiplicative decrease,
//! driven by the delay detector's verdicts.
//!
//! - Overuse: down to 85% of the acknowledged rate (just under what the
//!   path delivered, so its queue drains), at most once per round trip
//!   unless the path delivers under half the target. A trend still high
//!   but no longer rising after a decrease holds instead: the queue drains
//!   at the lower rate, and a second cut would be for the first's fault.
//! - Normal: up. Far from the rate of the last decrease, 8% a second (the
//!   capacity may have grown a lot); near it, about one packet per response
//!   time (the capacity is probably close, creep toward it).
//! - Underuse: hold (a queue drains; its delivery rate is not the path's).
//!
//! Increases never take the target above 1.5 × the acknowledged rate plus
//! 10 kbit/s: a sender that sends less than the target learns nothing
//! about rates far above what it sends.

use std::time::{Duration, Instant};

use super::delay_detector::Usage;

const DECREASE_FACTOR: f64 = 0.85;
const MULTIPLICATIVE_PER_SECOND: f64 = 1.08;
/// The packet size the additive increase assumes, in bits.
const PACKET_BITS: f64 = 1_200.0 * 8.0;
/// The response time is the round trip plus this.
const RESPONSE_EXTRA: Duration = Duration::from_millis(100);
const ACKED_HEADROOM: f64 = 1.5;
const ACKED_MARGIN: f64 = 10_000.0;
/// The acknowledged rate is "near" the last decrease's within this factor.
const NEAR_CAPACITY: f64 = 1.2;
/// Weight of a new decrease's rate in the capacity's average.
const CAPACITY_WEIGHT: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
    Decrease,
}

#[derive(Debug)]
pub(crate) struct RateControl {
    target: f64,
    state: State,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
    /// The acknowledged rate around which decreases happened lately.
    capacity: Option<f64>,
}

impl RateControl {
    pub(crate) fn new(initial: f64) -> Self {
        RateControl {
            target: initial,
            state: State::Increase,
            last_update: None,
            last_decrease: None,
            capacity: None,
        }
    }

    /// Takes the detector's verdict `usage` at `now`, with the acknowledged
    /// rate and the round trip; returns the new target (bits/s).
    pub(crate) fn update(
        &mut self,
        now: Instant,
        usage: Usage,
        acked: Option<f64>,
        rtt: Duration,
    ) -> f64 {
        let elapsed = self
            .last_update
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        self.state = match (usage, self.state) {
            (Usage::Over, _) => State::Decrease,
            (Usage::Under | Usage::StillOver, _) => State::Hold,
            (Usage::Normal, State::Hold | State::Increase) => State::Increase,
            (Usage::Normal, State::Decrease) => State::Hold,
        };
        match self.state {
            State::Hold => {}
            State::Increase => self.increase(elapsed, acked, rtt),
            State::Decrease => self.decrease(now, acked, rtt),
        }
        self.target
    }

    fn increase(&mut self, elapsed: Duration, acked: Option<f64>, rtt: Duration) {
        if let (Some(capacity), Some(acked)) = (self.capacity, acked)
            && acked > capacity * NEAR_CAPACITY
        {
            // Well past where it used to be congested: the path changed.
            self.capacity = None;
        }
        let secs = elapsed.as_secs_f64();
        let increased = if self.capacity.is_some() {
            let response = (rtt + RESPONSE_EXTRA).as_secs_f64();
            self.target + PACKET_BITS * secs / response
        } else {
            self.target * MULTIPLICATIVE_PER_SECOND.powf(secs)
        };
        let limit = acked.map_or(f64::INFINITY, |a| ACKED_HEADROOM * a + ACKED_MARGIN);
        // Never pushed down by the limit: only increases are bounded.
        self.target = increased.min(limit.max(self.target));
    }

    fn decrease(&mut self, now: Instant, acked: Option<f64>, rtt: Duration) {
        let interval = rtt.clamp(Duration::from_millis(10), Duration::from_millis(200));
        let starved = acked.is_some_and(|a| a < self.target / 2.0);
        let due = self.last_decrease.is_none_or(|at| now >= at + interval) || starved;
        if !due {
            return;
        }
        let reference = acked.unwrap_or(self.target);
        let lowered = DECREASE_FACTOR * reference;
        if lowered < self.target {
            self.target = lowered;
            self.last_decrease = Some(now);
        }
        if let Some(acked) = acked {
            self.capacity = Some(match self.capacity {
                Some(c) if acked > c / NEAR_CAPACITY => {
                    (1.0 - CAPACITY_WEIGHT) * c + CAPACITY_WEIGHT * acked
                }
                _ => acked,
            });
        }
    }
}
