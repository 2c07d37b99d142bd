//! Prometheus metrics of the control plane.

use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct SignalingMetrics {
    pub connections: IntGauge,
    pub rejected_tokens: IntCounter,
}

impl SignalingMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let connections = IntGauge::new(
            "callgate_signaling_connections",
            "Open signaling WebSocket connections",
        )?;
        let rejected_tokens = IntCounter::new(
            "callgate_signaling_rejected_tokens_total",
            "Signaling connections refused for a bad access token",
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(rejected_tokens.clone()))?;
        Ok(SignalingMetrics {
            connections,
            rejected_tokens,
        })
    }
}
