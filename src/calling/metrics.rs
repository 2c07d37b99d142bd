//! Prometheus metrics of the call desk.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct CallMetrics {
    /// Calls that rang (not those refused or all busy at the start).
    pub started: IntCounter,
    /// Calls ended, by outcome (`completed`, `missed`, …, refusals at the
    /// start included).
    pub ended: IntCounterVec,
    /// Rings, by how they reached the callee: `signaling` (an open
    /// connection) or `webhook` (a `call.ring` for a push).
    pub rings: IntCounterVec,
    /// Calls ringing or on, on this node.
    pub active: IntGauge,
}

impl CallMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let started = IntCounter::new(
            "callgate_calls_started_total",
            "Calls started with POST /v1/calls that rang",
        )?;
        let ended = IntCounterVec::new(
            Opts::new(
                "callgate_calls_ended_total",
                "Calls ended, by outcome (completed, missed, rejected, cancelled, busy, failed, insufficient_balance)",
            ),
            &["outcome"],
        )?;
        let rings = IntCounterVec::new(
            Opts::new(
                "callgate_call_rings_total",
                "Callees rung, by way: signaling (an open connection) or webhook (call.ring, for a push)",
            ),
            &["via"],
        )?;
        let active = IntGauge::new("callgate_calls_active", "Calls ringing or on, on this node")?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(ended.clone()))?;
        registry.register(Box::new(rings.clone()))?;
        registry.register(Box::new(active.clone()))?;
        Ok(CallMetrics {
            started,
            ended,
            rings,
            active,
        })
    }
}
