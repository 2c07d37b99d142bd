//! Wall-clock time for the ledger, injectable so tests can follow tokio's
//! paused clock.
//!
//! Call lengths are measured on tokio's monotonic clock
//! (`tokio::time::Instant`); the wall clock only stamps rows (unix
//! milliseconds). [`Clock::system`] reads the system time;
//! [`Clock::tokio_at`] starts at a given unix time and then moves with
//! tokio's clock, so under `#[tokio::test(start_paused = true)]` both clocks
//! advance together with `tokio::time::advance` or `sleep`.
//!
//! The tokio clock also keeps paused time honest around I/O: while a
//! database or HTTP call is in flight, tokio would see an idle runtime and
//! jump the paused clock to the next timer (the cut of a call, say) before
//! the call returned. [`Clock::io_guard`] holds that off for the duration of
//! an I/O call (a parked `spawn_blocking` task is tokio's own way to inhibit
//! auto-advance). With the system clock the guard does nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where the meter reads the time of day.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Kind);

#[derive(Debug, Clone, Copy)]
enum Kind {
    System,
    Tokio { unix_ms: i64, at: Instant },
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system's time of day (production).
    pub fn system() -> Clock {
        Clock(Kind::System)
    }

    /// A clock that reads `unix_ms` now and then advances with tokio's
    /// clock (tests, with paused time). Call it inside the runtime.
    pub fn tokio_at(unix_ms: i64) -> Clock {
        Clock(Kind::Tokio {
            unix_ms,
            at: Instant::now(),
        })
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        match self.0 {
            Kind::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Kind::Tokio { unix_ms, at } => {
                unix_ms + Instant::now().saturating_duration_since(at).as_millis() as i64
            }
        }
    }

    /// True for the clock that follows tokio's.
    pub fn follows_tokio(&self) -> bool {
        matches!(self.0, Kind::Tokio { .. })
    }

    /// Keeps tokio's paused clock from auto-advancing while the guard
    /// lives (tokio clock only). Never hold one across a sleep.
    pub(crate) fn io_guard(&self) -> IoGuard {
        match self.0 {
            Kind::System => IoGuard(None),
            Kind::Tokio { .. } => {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                // Returns when `tx` is dropped with the guard.
                tokio::task::spawn_blocking(move || {
                    let _ = rx.recv();
                });
                IoGuard(Some(tx))
            }
        }
    }
}

/// See [`Clock::io_guard`].
pub(crate) struct IoGuard(#[allow(dead_code)] Option<std::sync::mpsc::Sender<()>>);
