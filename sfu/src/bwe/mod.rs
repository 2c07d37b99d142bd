//! Send-side bandwidth estimation for a subscriber transport: each packet
//! we send is numbered transport-wide and remembered (`send_history`); the
//! subscriber's transport-wide congestion control feedback says which
//! arrived and when (`feedback`); a GCC-style estimator (`estimator`: a
//! delay trend detector, AIMD rate control, a loss bound, the acknowledged
//! rate) turns that into how much the downlink takes. Pure state: every
//! call is given the time, nothing here reads a clock or does I/O.

mod acked_rate;
mod delay_detector;
mod estimator;
mod feedback;
mod loss_bound;
mod rate_control;
mod send_history;

#[cfg(test)]
mod tests;

use std::time::Instant;

use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

use estimator::PacketResult;
pub(crate) use estimator::SendSideEstimator;
use feedback::{FeedbackReader, PacketStatus};
use send_history::SendHistory;

/// A subscriber transport's send history and estimator together.
#[derive(Debug, Default)]
pub(crate) struct TransportEstimate {
    history: SendHistory,
    reader: FeedbackReader,
    estimator: SendSideEstimator,
    /// Scratch space reused for every feedback.
    statuses: Vec<PacketStatus>,
    results: Vec<PacketResult>,
}

impl TransportEstimate {
    /// A packet numbered `seq` of `rtp_bytes` went out at `now`.
    pub(crate) fn on_sent(&mut self, now: Instant, seq: u16, rtp_bytes: usize) {
        self.history.on_sent(now, seq, rtp_bytes);
    }

    /// Feedback from the subscriber arrived at `now`. Returns whether it
    /// reported any packet we sent and had not heard about yet.
    pub(crate) fn on_feedback(&mut self, now: Instant, feedback: &TransportLayerCc) -> bool {
        self.reader.read(feedback, &mut self.statuses);
        self.results.clear();
        for status in &self.statuses {
            let seq = self.history.unwrap(status.seq);
            if let Some(sent) = self.history.take(seq) {
                self.results.push(PacketResult {
                    sent_at: sent.sent_at,
                    size: sent.size,
                    arrival_us: status.arrival_us,
                });
            }
        }
        if self.results.is_empty() {
            return false;
        }
        self.estimator.on_feedback(now, &self.results);
        true
    }

    /// The estimate, bits per second.
    pub(crate) fn bps(&self) -> u64 {
        self.estimator.bps()
    }
}
