//! The loss-based bound on the estimate. Loss is measured over windows of
//! at least 20 packets and half a second (a loss fraction of a handful of
//! packets is noise); above 10% the bound comes down in proportion, below
//! 2% it rises again (and stops limiting once above the delay-based
//! estimate), in between it holds: a few percent loss is what many paths
//! have whatever the rate.

use std::time::{Duration, Instant};

const MIN_PACKETS: u32 = 20;
const MIN_WINDOW: Duration = Duration::from_millis(500);
/// A window closes at this many packets however short it is.
const FULL_WINDOW_PACKETS: u32 = 200;
const HIGH_LOSS: f64 = 0.10;
const LOW_LOSS: f64 = 0.02;
/// Growth per second while loss is low.
const GROWTH_PER_SECOND: f64 = 1.08;
/// After a decrease, the next waits this long plus the round trip, so the
/// loss it is judged on comes from after it.
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug, Default)]
pub(crate) struct LossBound {
    window_start: Option<Instant>,
    received: u32,
    lost: u32,
    bound: Option<f64>,
    last_decrease: Option<Instant>,
    last_growth: Option<Instant>,
}

impl LossBound {
    /// `received` and `lost` more packets reported at `now`; `current` is
    /// the estimate now (bits/s), `delay_based` its delay-based half.
    pub(crate) fn on_reports(
        &mut self,
        now: Instant,
        received: u32,
        lost: u32,
        current: f64,
        delay_based: f64,
        rtt: Duration,
    ) {
        if received == 0 && lost == 0 {
            return;
        }
        let start = *self.window_start.get_or_insert(now);
        self.received = self.received.saturating_add(received);
        self.lost = self.lost.saturating_add(lost);
        let total = self.received.saturating_add(self.lost);
        let long_enough = now.saturating_duration_since(start) >= MIN_WINDOW;
        if total < MIN_PACKETS || (!long_enough && total < FULL_WINDOW_PACKETS) {
            return;
        }
        let loss = f64::from(self.lost) / f64::from(total);
        self.window_start = Some(now);
        self.received = 0;
        self.lost = 0;
        if loss > HIGH_LOSS {
            let due = self
                .last_decrease
                .is_none_or(|at| now >= at + DECREASE_INTERVAL + rtt);
            if due {
                let from = self.bound.map_or(current, |b| b.min(current));
                self.bound = Some(from * (1.0 - 0.5 * loss));
                self.last_decrease = Some(now);
            }
            self.last_growth = Some(now);
        } else if loss < LOW_LOSS {
            if let Some(bound) = self.bound {
                let secs = self.last_growth.map_or(0.0, |at| {
                    now.saturating_duration_since(at).as_secs_f64().min(1.0)
                });
                let grown = bound * GROWTH_PER_SECOND.powf(secs);
                self.bound = (grown < delay_based).then_some(grown);
            }
            self.last_growth = Some(now);
        } else {
            self.last_growth = Some(now);
        }
    }

    /// The bound (bits/s), if loss limits the estimate.
    pub(crate) fn bound(&self) -> Option<f64> {
        self.bound
    }
}
