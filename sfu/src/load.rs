//! How busy a media worker is: the share of wall time its loop spends
//! handling datagrams, commands and timers rather than waiting for them.
//!
//! A worker that is busy all the time cannot keep up: datagrams queue in its
//! socket's receive buffer (latency grows by the queue's length) and, once
//! the buffer is full, the kernel drops them, handshakes and consent checks
//! among them. Measured at 1,000 listeners of one speaker on one worker
//! (docs/benchmarks.md): the loop at 100%, 8 MiB queued, thousands of
//! datagrams dropped and some listeners never connected. So a worker above
//! its configured load admits no new participant (`SfuError::WorkerOverloaded`)
//! and the ones it has keep their media.
//!
//! No clock of its own: the loop says how long it was busy and what time it
//! is, as everywhere in the media plane.

use std::time::{Duration, Instant};

/// Busy time is summed over windows this long.
const WINDOW: Duration = Duration::from_secs(1);
/// Weight of the newest window in the smoothed load. With 1 s windows, a
/// burst of joins' handshakes (a second or two of work) moves the load by
/// less than its own height, while a load that stays is fully seen within
/// about 4 s.
const NEW_WEIGHT: f64 = 0.5;

#[derive(Debug)]
pub(crate) struct LoadMeter {
    window_start: Instant,
    busy: Duration,
    smoothed: f64,
}

impl LoadMeter {
    pub(crate) fn new(now: Instant) -> Self {
        LoadMeter {
            window_start: now,
            busy: Duration::ZERO,
            smoothed: 0.0,
        }
    }

    /// The loop was busy for `busy` (one wake-up's work).
    pub(crate) fn add_busy(&mut self, busy: Duration) {
        self.busy += busy;
    }

    /// The smoothed load (0 idle, 1 never waiting) when a window closed at
    /// `now`, else `None`.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<f64> {
        let elapsed = now.checked_duration_since(self.window_start)?;
        if elapsed < WINDOW {
            return None;
        }
        let share = (self.busy.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        self.smoothed = NEW_WEIGHT * share + (1.0 - NEW_WEIGHT) * self.smoothed;
        self.window_start = now;
        self.busy = Duration::ZERO;
        Some(self.smoothed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs `windows` one-second windows busy `busy_ms` each; the last load.
    fn run(meter: &mut LoadMeter, start: &mut Instant, windows: u32, busy_ms: u64) -> f64 {
        let mut last = None;
        for _ in 0..windows {
            meter.add_busy(ms(busy_ms));
            *start += WINDOW;
            last = meter.poll(*start);
        }
        last.expect("a window closed")
    }

    #[test]
    fn no_load_before_a_window_has_passed() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::new(t0);
        meter.add_busy(ms(900));
        assert_eq!(meter.poll(t0 + ms(999)), None);
        assert_eq!(meter.poll(t0 + ms(1000)), Some(0.45));
    }

    #[test]
    fn a_steady_load_is_reached_within_a_few_windows() {
        let mut t = Instant::now();
        let mut meter = LoadMeter::new(t);
        let load = run(&mut meter, &mut t, 4, 900);
        // 0.45, 0.675, 0.7875, 0.84375
        assert!((load - 0.84375).abs() < 1e-9, "{load}");
        let load = run(&mut meter, &mut t, 10, 900);
        assert!((load - 0.9).abs() < 1e-3, "{load}");
    }

    #[test]
    fn a_one_second_burst_does_not_read_as_saturation() {
        let mut t = Instant::now();
        let mut meter = LoadMeter::new(t);
        run(&mut meter, &mut t, 10, 300);
        let load = run(&mut meter, &mut t, 1, 1000);
        assert!((load - 0.65).abs() < 1e-3, "{load}");
        let load = run(&mut meter, &mut t, 3, 300);
        assert!(load < 0.35, "{load}");
    }

    #[test]
    fn a_late_window_counts_its_real_length_and_busy_time_caps_at_one() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::new(t0);
        // A loop that handled one long batch reports late.
        meter.add_busy(ms(3000));
        assert_eq!(meter.poll(t0 + ms(2000)), Some(0.5));
        let mut meter = LoadMeter::new(t0);
        meter.add_busy(ms(1000));
        assert_eq!(meter.poll(t0 + ms(4000)), Some(0.125));
    }

    #[test]
    fn a_clock_going_backwards_closes_no_window() {
        let t0 = Instant::now() + ms(5000);
        let mut meter = LoadMeter::new(t0);
        assert_eq!(meter.poll(t0 - ms(10)), None);
    }
}
