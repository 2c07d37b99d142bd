//! The meter's Prometheus series. The meter keeps them from `open` on;
//! `Meter::register_metrics` puts them in the server's registry.

use prometheus::{IntCounterVec, Opts, Registry};

use crate::razorpay::RefusalReason;

pub(crate) struct MeterMetrics {
    /// Signed Razorpay events that credited nothing because they must not
    /// (docs/metering.md "Razorpay intake"), by reason.
    pub razorpay_refused: IntCounterVec,
}

impl MeterMetrics {
    pub fn new() -> prometheus::Result<MeterMetrics> {
        let razorpay_refused = IntCounterVec::new(
            Opts::new(
                "callgate_razorpay_refused_total",
                "Signed Razorpay webhook events refused (answered 200, nothing credited), by reason",
            ),
            &["reason"],
        )?;
        // Every reason exists from the start, so an alert sees zeros.
        for reason in RefusalReason::ALL {
            razorpay_refused.with_label_values(&[reason.as_str()]);
        }
        Ok(MeterMetrics { razorpay_refused })
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.razorpay_refused.clone()))
    }
}
