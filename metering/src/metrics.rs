//! The meter's Prometheus series. The meter keeps them from `open` on;
//! `Meter::register_metrics` puts them in the server's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::razorpay::RefusalReason;
use crate::session::EndReason;

#[derive(Clone)]
pub(crate) struct MeterMetrics {
    /// Signed Razorpay events that credited nothing because they must not
    /// (docs/metering.md "Razorpay intake"), by reason.
    pub razorpay_refused: IntCounterVec,
    /// Billed sessions running on this node.
    pub sessions_open: IntGauge,
    /// Billed sessions this node ended, by reason (`insufficient_balance`:
    /// cut when the wallet ran dry).
    pub sessions_ended: IntCounterVec,
    /// Coins debited from payers by the sessions this node ended.
    pub coins_billed: IntCounter,
    /// Ledger transactions of a running session that failed (each retry
    /// counts), by what they did: `settle` (a block boundary or a cut) or
    /// `end`.
    pub ledger_errors: IntCounterVec,
    /// Webhook POSTs by result: `delivered`, `failed` (retried later) or
    /// `dead` (out of attempts).
    pub webhook_deliveries: IntCounterVec,
    /// Outbox rows waiting for delivery, and how long the oldest has.
    pub webhook_pending: IntGauge,
    pub webhook_oldest_pending_seconds: IntGauge,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl MeterMetrics {
    pub fn new() -> prometheus::Result<MeterMetrics> {
        let razorpay_refused = counter(
            "callgate_razorpay_refused_total",
            "Signed Razorpay webhook events refused (answered 200, nothing credited), by reason",
            &["reason"],
        )?;
        // Every label exists from the start, so an alert sees zeros.
        for reason in RefusalReason::ALL {
            razorpay_refused.with_label_values(&[reason.as_str()]);
        }
        let sessions_ended = counter(
            "callgate_billed_sessions_ended_total",
            "Billed sessions this node ended, by reason (insufficient_balance: cut when the wallet ran dry)",
            &["reason"],
        )?;
        for reason in EndReason::ALL {
            sessions_ended.with_label_values(&[reason.as_str()]);
        }
        let ledger_errors = counter(
            "callgate_ledger_errors_total",
            "Ledger transactions of running sessions that failed (each retry counts), by operation",
            &["op"],
        )?;
        for op in ["settle", "end"] {
            ledger_errors.with_label_values(&[op]);
        }
        let webhook_deliveries = counter(
            "callgate_webhook_deliveries_total",
            "Webhook POSTs by result: delivered, failed (retried later) or dead (out of attempts)",
            &["result"],
        )?;
        for result in ["delivered", "failed", "dead"] {
            webhook_deliveries.with_label_values(&[result]);
        }
        Ok(MeterMetrics {
            razorpay_refused,
            sessions_open: IntGauge::new(
                "callgate_billed_sessions_open",
                "Billed sessions running on this node",
            )?,
            sessions_ended,
            coins_billed: IntCounter::new(
                "callgate_coins_billed_total",
                "Coins debited from payers by the billed sessions this node ended",
            )?,
            ledger_errors,
            webhook_deliveries,
            webhook_pending: IntGauge::new(
                "callgate_webhook_outbox_pending",
                "Webhook events waiting for delivery (all nodes' rows, as this node last read them)",
            )?,
            webhook_oldest_pending_seconds: IntGauge::new(
                "callgate_webhook_outbox_oldest_pending_seconds",
                "Age of the oldest webhook event waiting for delivery (0 when none)",
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.razorpay_refused.clone()))?;
        registry.register(Box::new(self.sessions_open.clone()))?;
        registry.register(Box::new(self.sessions_ended.clone()))?;
        registry.register(Box::new(self.coins_billed.clone()))?;
        registry.register(Box::new(self.ledger_errors.clone()))?;
        registry.register(Box::new(self.webhook_deliveries.clone()))?;
        registry.register(Box::new(self.webhook_pending.clone()))?;
        registry.register(Box::new(self.webhook_oldest_pending_seconds.clone()))
    }
}
