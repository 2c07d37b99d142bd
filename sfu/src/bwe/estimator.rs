//! The send-side estimate of one transport: the delay-based target (rate
//! control on the delay detector's verdicts) bounded by the loss-based
//! bound, within a floor and a ceiling.

use std::time::{Duration, Instant};

use super::acked_rate::AckedRate;
use super::delay_detector::DelayDetector;
use super::loss_bound::LossBound;
use super::rate_control::RateControl;

/// Where an estimate starts. libwebrtc starts at 300 kbit/s but probes
/// at several times that within the first second; we do not probe, and
/// an estimate only grows up to 1.5 × what is delivered, so starting low
/// would hold a subscriber on the lowest layer for many seconds. From
/// 1 Mbit/s a weaker downlink brings it down within about a second.
pub(crate) const INITIAL_BPS: f64 = 1_000_000.0;
/// The estimate never goes below this: a stream of audio and the lowest
/// video layer, and enough traffic to keep measuring.
pub(crate) const FLOOR_BPS: f64 = 50_000.0;
/// Nor above this.
pub(crate) const CEILING_BPS: f64 = 100_000_000.0;
/// The round trip assumed until one is measured.
const DEFAULT_RTT: Duration = Duration::from_millis(200);
/// How long the sender may take to act on a lower estimate (a layer
/// switch waits for the new layer's keyframe, a frame or two).
const REACTION: Duration = Duration::from_millis(200);
/// Weight of the old value in the smoothed round trip.
const RTT_SMOOTHING: f64 = 0.875;

/// A packet feedback reports as arrived, matched to what was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketResult {
    pub sent_at: Instant,
    /// Bytes on the wire.
    pub size: u32,
    /// When it arrived (µs, receiver clock).
    pub arrival_us: i64,
}

/// What became of a packet, once that is known (module `bwe`,
/// `MISSING_FOR`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fate {
    pub sent_at: Instant,
    pub received: bool,
}

#[derive(Debug)]
pub(crate) struct SendSideEstimator {
    delay: DelayDetector,
    rate: RateControl,
    loss: LossBound,
    acked: AckedRate,
    rtt: Option<Duration>,
    estimate: f64,
    /// Until when packets were still sent at a rate the estimate has since
    /// lowered: their loss caused (or came with) that decrease, and
    /// counting it again would cut the new rate for the old one's fault.
    /// Our sender reacts by switching layers, which waits for a keyframe,
    /// and the bottleneck's queue must drain: the last decrease plus a
    /// round trip plus `REACTION`.
    lowered_until: Option<Instant>,
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
            lowered_until: None,
        }
    }

    /// At `now`, one feedback's packets that arrived, in the order they
    /// were sent, and the packets whose fate has become known since the
    /// last call.
    pub(crate) fn on_feedback(&mut self, now: Instant, arrivals: &[PacketResult], fates: &[Fate]) {
        let mut newest_sent = None;
        for r in arrivals {
            self.delay.on_packet(r.sent_at, r.arrival_us);
            self.acked.on_received(r.arrival_us, r.size);
            newest_sent = newest_sent.max(Some(r.sent_at));
        }
        let (mut received, mut lost) = (0u32, 0u32);
        for fate in fates {
            if self.lowered_until.is_none_or(|until| fate.sent_at >= until) {
                if fate.received {
                    received += 1;
                } else {
                    lost += 1;
                }
            }
        }
        if arrivals.is_empty() && fates.is_empty() {
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
        let delay_based = self.rate.update(now, self.delay.verdict(), acked, rtt);
        self.loss
            .on_reports(now, received, lost, self.estimate, delay_based, rtt);
        let bounded = self
            .loss
            .bound()
            .map_or(delay_based, |b| b.min(delay_based));
        let estimate = bounded.clamp(FLOOR_BPS, CEILING_BPS);
        if estimate < self.estimate {
            self.lowered_until = Some(now + rtt + REACTION);
        }
        self.estimate = estimate;
    }

    /// The estimate, bits per second.
    pub(crate) fn bps(&self) -> u64 {
        self.estimate as u64
    }
}
