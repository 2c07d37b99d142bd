//! The send-side estimate of one transport: the delay-based target (rate
//! control on the delay detector's verdicts) bounded by the loss-based
//! bound, within a floor and a ceiling.

use std::time::{Duration, Instant};

use super::acked_rate::AckedRate;
use super::delay_detector::{DelayDetector, Usage};
use super::loss_bound::LossBound;
use super::rate_control::RateControl;

/// Where an estimate starts before any feedback (libwebrtc's default start).
pub(crate) const INITIAL_BPS: f64 = 300_000.0;
/// The estimate never goes below this: a stream of audio and the lowest
/// video layer, and enough traffic to keep measuring.
pub(crate) const FLOOR_BPS: f64 = 50_000.0;
/// Nor above this.
pub(crate) const CEILING_BPS: f64 = 100_000_000.0;
/// The round trip assumed until one is measured.
const DEFAULT_RTT: Duration = Duration::from_millis(200);
/// Weight of the old value in the smoothed round trip.
const RTT_SMOOTHING: f64 = 0.875;

/// One packet of a feedback, matched to what was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketResult {
    pub sent_at: Instant,
    /// Bytes on the wire.
    pub size: u32,
    /// When it arrived (µs, receiver clock); `None`: lost.
    pub arrival_us: Option<i64>,
}

#[derive(Debug)]
pub(crate) struct SendSideEstimator {
    delay: DelayDetector,
    rate: RateControl,
    loss: LossBound,
    acked: AckedRate,
    rtt: Option<Duration>,
    estimate: f64,
}

impl Default for SendSideEstimator {
    fn default() -> Self {
        SendSideEstimator::new(INITIAL_BPS)
    }
}

impl SendSideEstimator {
    pub(crate) fn new(initial_bps: f64) -> Self {
        let initial = initial_bps.clamp(FLOOR_BPS, CEILING_BPS);
        SendSideEstimator {
            delay: DelayDetector::default(),
            rate: RateControl::new(initial),
            loss: LossBound::default(),
            acked: AckedRate::default(),
            rtt: None,
            estimate: initial,
        }
    }

    /// One feedback's packets, in the order they were sent, at `now`.
    pub(crate) fn on_feedback(&mut self, now: Instant, results: &[PacketResult]) {
        let (mut received, mut lost) = (0u32, 0u32);
        let mut newest_sent = None;
        for r in results {
            match r.arrival_us {
                Some(arrival) => {
                    received += 1;
                    self.delay.on_packet(r.sent_at, arrival);
                    self.acked.on_received(arrival, r.size);
                    newest_sent = newest_sent.max(Some(r.sent_at));
                }
                None => lost += 1,
            }
        }
        if received + lost == 0 {
            return;
        }
        if let Some(sent) = newest_sent {
            // Includes the receiver's wait before its feedback: an upper
            // bound on the path's round trip, which is what a response
            // time needs.
            let sample = now
                .saturating_duration_since(sent)
                .min(Duration::from_secs(5));
            self.rtt = Some(match self.rtt {
                None => sample,
                Some(rtt) => rtt.mul_f64(RTT_SMOOTHING) + sample.mul_f64(1.0 - RTT_SMOOTHING),
            });
        }
        let rtt = self.rtt.unwrap_or(DEFAULT_RTT);
        let acked = self.acked.bps();
        let delay_based = self.rate.update(now, self.delay.usage(), acked, rtt);
        self.loss
            .on_reports(now, received, lost, self.estimate, delay_based, rtt);
        let bounded = self
            .loss
            .bound()
            .map_or(delay_based, |b| b.min(delay_based));
        self.estimate = bounded.clamp(FLOOR_BPS, CEILING_BPS);
    }

    /// The estimate, bits per second.
    pub(crate) fn bps(&self) -> u64 {
        self.estimate as u64
    }

    /// The acknowledged rate, bits per second, if known.
    pub(crate) fn acked_bps(&self) -> Option<u64> {
        self.acked.bps().map(|b| b as u64)
    }

    /// The delay detector's verdict now.
    pub(crate) fn usage(&self) -> Usage {
        self.delay.usage()
    }

    /// The delay-based target, bits per second.
    pub(crate) fn delay_based_bps(&self) -> u64 {
        self.rate.target() as u64
    }

    /// The loss fraction of the last window measured.
    pub(crate) fn last_loss(&self) -> Option<f64> {
        self.loss.last_loss()
    }
}
