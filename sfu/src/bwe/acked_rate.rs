//! The acknowledged bitrate: what the receiver says it received, per
//! second, measured on its own clock over the last half second. Decreases
//! aim just under it, and increases may not run far ahead of it.

use std::collections::VecDeque;

/// The window the rate is measured over.
const WINDOW_US: i64 = 500_000;
/// Before this much has been received over, there is no rate yet.
const MIN_SPAN_US: i64 = 100_000;
/// The most packets kept (hostile feedback must not grow it).
const MAX_PACKETS: usize = 8192;

#[derive(Debug, Default)]
pub(crate) struct AckedRate {
    /// (arrival µs, bytes) of packets received within the window.
    packets: VecDeque<(i64, u32)>,
    bytes: u64,
    /// The first arrival since the window last started over.
    first_us: Option<i64>,
    newest_us: Option<i64>,
}

impl AckedRate {
    /// A packet of `bytes` arrived at `arrival_us` (receiver clock).
    pub(crate) fn on_received(&mut self, arrival_us: i64, bytes: u32) {
        let newest = self.newest_us.map_or(arrival_us, |n| n.max(arrival_us));
        if self
            .newest_us
            .is_some_and(|n| arrival_us.saturating_sub(n).saturating_abs() > 10 * WINDOW_US)
        {
            // The receiver's clock jumped: start over.
            *self = AckedRate::default();
            return self.on_received(arrival_us, bytes);
        }
        self.newest_us = Some(newest);
        self.first_us.get_or_insert(arrival_us);
        if self.packets.len() == MAX_PACKETS
            && let Some((_, old)) = self.packets.pop_front()
        {
            self.bytes -= u64::from(old);
        }
        self.packets.push_back((arrival_us, bytes));
        self.bytes += u64::from(bytes);
        while let Some(&(at, old)) = self.packets.front() {
            if at >= newest.saturating_sub(WINDOW_US) {
                break;
            }
            self.packets.pop_front();
            self.bytes -= u64::from(old);
        }
    }

    /// Bits per second received over the window, once there is enough.
    pub(crate) fn bps(&self) -> Option<f64> {
        let span = self.newest_us?.saturating_sub(self.first_us?);
        if span < MIN_SPAN_US {
            return None;
        }
        Some(self.bytes as f64 * 8.0 * 1e6 / span.min(WINDOW_US) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_what_arrived_over_the_last_half_second() {
        let mut acked = AckedRate::default();
        // 1,000 bytes every 10 ms: 800 kbit/s.
        for i in 0..100 {
            acked.on_received(i * 10_000, 1_000);
            if i == 5 {
                assert_eq!(acked.bps(), None, "50 ms is too short");
            }
        }
        let bps = acked.bps().expect("a rate");
        assert!((800_000.0..=820_000.0).contains(&bps), "{bps}");
    }
}
