//! Prometheus metrics of the control plane.

use callgate_admission::{AdmissionMetrics, Shed};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct SignalingMetrics {
    pub connections: IntGauge,
    pub rejected_tokens: IntCounter,
    /// Sessions taken back with `resume`.
    pub resumes: IntCounter,
    /// `resume` refused (no such session, or a wrong secret).
    pub resume_failures: IntCounter,
    /// Signaling connections relayed to the node their room lives on.
    pub relayed: IntCounter,
    /// Of those, the ones whose node could not be reached.
    pub relay_failures: IntCounter,
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
        let resumes = IntCounter::new(
            "callgate_signaling_resumes_total",
            "Sessions a client took back on a new WebSocket with `resume`",
        )?;
        let resume_failures = IntCounter::new(
            "callgate_signaling_resume_failures_total",
            "`resume` refused: no such session any more, or a wrong secret",
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(rejected_tokens.clone()))?;
        registry.register(Box::new(resumes.clone()))?;
        let relayed = IntCounter::new(
            "callgate_signaling_relayed_total",
            "Signaling connections relayed to the node their room (or session) lives on",
        )?;
        let relay_failures = IntCounter::new(
            "callgate_signaling_relay_failures_total",
            "Relayed signaling connections whose node could not be reached (closed 1013 room_node_unavailable)",
        )?;
        registry.register(Box::new(resume_failures.clone()))?;
        registry.register(Box::new(relayed.clone()))?;
        registry.register(Box::new(relay_failures.clone()))?;
        Ok(SignalingMetrics {
            connections,
            rejected_tokens,
            resumes,
            resume_failures,
            relayed,
            relay_failures,
        })
    }
}

/// Prometheus metrics of the HTTP server's connection limits.
#[derive(Clone)]
pub struct HttpMetrics {
    /// What the unauthenticated-connection table counts.
    pub(crate) unauthenticated: AdmissionMetrics,
    pub(crate) header_timeouts: IntCounter,
    pub(crate) accept_errors: IntCounter,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let held = IntGauge::new(
            "callgate_http_unauthenticated_connections",
            "HTTP connections, and signaling WebSockets before their join, open now",
        )?;
        let shed = IntCounterVec::new(
            Opts::new(
                "callgate_http_connections_shed_total",
                "Unauthenticated HTTP connections closed to make room for a newer one, by the cap that was full",
            ),
            &["reason"],
        )?;
        let header_timeouts = IntCounter::new(
            "callgate_http_header_timeouts_total",
            "HTTP connections closed for not sending a request's headers in time",
        )?;
        let accept_errors = IntCounter::new(
            "callgate_http_accept_errors_total",
            "Failed accepts on the HTTP port (out of file descriptors, most likely)",
        )?;
        registry.register(Box::new(held.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(header_timeouts.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        let shed = |why: Shed| shed.with_label_values(&[why.as_str()]);
        Ok(HttpMetrics {
            unauthenticated: AdmissionMetrics {
                held,
                shed_total_cap: shed(Shed::TotalCap),
                shed_source_cap: shed(Shed::SourceCap),
            },
            header_timeouts,
            accept_errors,
        })
    }
}
