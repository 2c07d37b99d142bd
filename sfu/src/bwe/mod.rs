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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

pub(crate) use estimator::SendSideEstimator;
use estimator::{Fate, PacketResult};
use feedback::{FeedbackReader, PacketStatus};
use send_history::SendHistory;

/// How long after a packet is first reported its fate counts for the loss
/// bound. A receiver reports every packet up to the newest that arrived;
/// on a path that reorders (jitter), packets sent before that one may
/// still be on their way, and Chromium reports them again once they
/// arrive. Counting them lost at once read 5% loss with 0–60 ms of jitter
/// as over 10% and brought the estimate down steadily on a path with room
/// to spare. Covers the reordering plus Chromium's feedback interval (50
/// to 100 ms at the rates video takes). Received packets wait as long, so
/// that the loss bound's windows weigh packets of the same time.
const MISSING_FOR: Duration = Duration::from_millis(250);
/// The most packets waiting for their fate (a ring's worth).
const MOST_WAITING: usize = send_history::HISTORY_LEN;

/// A reported packet waiting for its fate to count.
#[derive(Debug, Clone, Copy)]
struct Reported {
    seq: u64,
    sent_at: Instant,
    /// When feedback first reported it.
    at: Instant,
    /// Reported as arrived; otherwise missing, and lost unless a later
    /// feedback reports it arrived.
    arrived: bool,
}

/// A subscriber transport's send history and estimator together.
#[derive(Debug, Default)]
pub(crate) struct TransportEstimate {
    history: SendHistory,
    reader: FeedbackReader,
    estimator: SendSideEstimator,
    /// Packets reported, oldest report first, until their fate counts.
    reported: VecDeque<Reported>,
    /// Scratch space reused for every feedback.
    statuses: Vec<PacketStatus>,
    results: Vec<PacketResult>,
    fates: Vec<Fate>,
}

impl TransportEstimate {
    /// A packet numbered `seq` of `rtp_bytes` went out at `now`.
    pub(crate) fn on_sent(&mut self, now: Instant, seq: u16, rtp_bytes: usize) {
        self.history.on_sent(now, seq, rtp_bytes);
    }

    /// Feedback from the subscriber arrived at `now`. Returns whether it
    /// reported any packet we sent and had not heard about yet (as arrived,
    /// or as missing for the first time).
    pub(crate) fn on_feedback(&mut self, now: Instant, feedback: &TransportLayerCc) -> bool {
        self.reader.read(feedback, &mut self.statuses);
        self.results.clear();
        self.fates.clear();
        let mut newly_missing = false;
        for status in &self.statuses {
            let seq = self.history.unwrap(status.seq);
            match status.arrival_us {
                Some(arrival_us) => {
                    // Also when it was reported missing before: it came late.
                    let Some(sent) = self.history.take(seq) else {
                        continue;
                    };
                    self.results.push(PacketResult {
                        sent_at: sent.sent_at,
                        size: sent.size,
                        arrival_us,
                    });
                    self.reported.push_back(Reported {
                        seq,
                        sent_at: sent.sent_at,
                        at: now,
                        arrived: true,
                    });
                }
                None => {
                    if let Some(sent) = self.history.mark_missing(seq) {
                        newly_missing = true;
                        self.reported.push_back(Reported {
                            seq,
                            sent_at: sent.sent_at,
                            at: now,
                            arrived: false,
                        });
                    }
                }
            }
        }
        if self.results.is_empty() && !newly_missing {
            // Nothing new: feedback about nothing we sent changes nothing.
            return false;
        }
        while let Some(&first) = self.reported.front() {
            if now.saturating_duration_since(first.at) < MISSING_FOR
                && self.reported.len() <= MOST_WAITING
            {
                break;
            }
            self.reported.pop_front();
            // Still missing: lost. Missing but reported arrived since:
            // that report has an entry of its own.
            let received = first.arrived;
            if received || self.history.take(first.seq).is_some() {
                self.fates.push(Fate {
                    sent_at: first.sent_at,
                    received,
                });
            }
        }
        self.estimator.on_feedback(now, &self.results, &self.fates);
        true
    }

    /// The estimate, bits per second.
    pub(crate) fn bps(&self) -> u64 {
        self.estimator.bps()
    }
}
