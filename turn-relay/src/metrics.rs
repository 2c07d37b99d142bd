//! Prometheus series of the relay, prefix `callgate_turn_`.

use callgate_admission::{AdmissionMetrics, Shed};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every series the relay updates. Cheap to clone (shared counters).
#[derive(Clone)]
pub struct TurnMetrics {
    pub allocations: IntGauge,
    pub allocations_created: IntCounter,
    pub permissions: IntGauge,
    pub channels: IntGauge,
    pub packets_to_peer: IntCounter,
    pub packets_to_client: IntCounter,
    pub bytes_to_peer: IntCounter,
    pub bytes_to_client: IntCounter,
    denied: IntCounterVec,
    errors: IntCounterVec,
    dropped: IntCounterVec,
    pub stream_connections: IntGaugeVec,
    /// TCP/TLS connections closed for not authenticating in time.
    pub unauthenticated_closed: IntCounterVec,
    /// What the table of not yet authenticated TCP/TLS connections counts.
    pub(crate) unauthenticated: AdmissionMetrics,
}

impl TurnMetrics {
    pub fn new(registry: &Registry) -> Result<TurnMetrics, prometheus::Error> {
        let allocations = IntGauge::new("callgate_turn_allocations", "TURN allocations")?;
        let allocations_created = IntCounter::new(
            "callgate_turn_allocations_created_total",
            "TURN allocations created",
        )?;
        let permissions = IntGauge::new(
            "callgate_turn_permissions",
            "TURN permissions installed over all allocations",
        )?;
        let channels = IntGauge::new(
            "callgate_turn_channels",
            "TURN channel bindings over all allocations",
        )?;
        let packets = IntCounterVec::new(
            Opts::new("callgate_turn_packets_total", "Packets relayed"),
            &["direction"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "callgate_turn_bytes_total",
                "Application bytes relayed (payload, without TURN framing)",
            ),
            &["direction"],
        )?;
        let denied = IntCounterVec::new(
            Opts::new(
                "callgate_turn_denied_peers_total",
                "Peer addresses refused by the peer filter",
            ),
            &["method"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "callgate_turn_error_responses_total",
                "STUN/TURN error responses sent, by error code",
            ),
            &["code"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "callgate_turn_dropped_packets_total",
                "Packets the relay dropped",
            ),
            &["reason"],
        )?;
        let stream_connections = IntGaugeVec::new(
            Opts::new(
                "callgate_turn_stream_connections",
                "Open TURN connections over TCP and TLS",
            ),
            &["transport"],
        )?;
        registry.register(Box::new(allocations.clone()))?;
        registry.register(Box::new(allocations_created.clone()))?;
        registry.register(Box::new(permissions.clone()))?;
        registry.register(Box::new(channels.clone()))?;
        registry.register(Box::new(packets.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(denied.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        let unauthenticated_closed = IntCounterVec::new(
            Opts::new(
                "callgate_turn_unauthenticated_closed_total",
                "TCP/TLS connections closed for not authenticating within the deadline",
            ),
            &["transport"],
        )?;
        registry.register(Box::new(stream_connections.clone()))?;
        registry.register(Box::new(unauthenticated_closed.clone()))?;
        let unauthenticated_held = IntGauge::new(
            "callgate_turn_unauthenticated_connections",
            "TURN TCP/TLS connections open without an authenticated request yet",
        )?;
        let shed = IntCounterVec::new(
            Opts::new(
                "callgate_turn_connections_shed_total",
                "Unauthenticated TURN TCP/TLS connections closed to make room for a newer one, by the cap that was full",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(unauthenticated_held.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        let shed = |why: Shed| shed.with_label_values(&[why.as_str()]);
        let unauthenticated = AdmissionMetrics {
            held: unauthenticated_held,
            shed_total_cap: shed(Shed::TotalCap),
            shed_source_cap: shed(Shed::SourceCap),
        };
        for transport in ["tcp", "tls"] {
            unauthenticated_closed.with_label_values(&[transport]);
        }
        // Series that exist from the start, so dashboards see zeros.
        for code in ["400", "401", "403", "437", "438", "441", "486", "508"] {
            errors.with_label_values(&[code]);
        }
        for method in ["create_permission", "channel_bind", "send"] {
            denied.with_label_values(&[method]);
        }
        Ok(TurnMetrics {
            allocations,
            allocations_created,
            permissions,
            channels,
            packets_to_peer: packets.with_label_values(&["to_peer"]),
            packets_to_client: packets.with_label_values(&["to_client"]),
            bytes_to_peer: bytes.with_label_values(&["to_peer"]),
            bytes_to_client: bytes.with_label_values(&["to_client"]),
            denied,
            errors,
            dropped,
            stream_connections,
            unauthenticated_closed,
            unauthenticated,
        })
    }

    pub(crate) fn denied(&self, method: &str) {
        self.denied.with_label_values(&[method]).inc();
    }

    pub(crate) fn error(&self, code: u16) {
        self.errors.with_label_values(&[&code.to_string()]).inc();
    }

    pub(crate) fn dropped(&self, reason: &str, n: u64) {
        if n > 0 {
            self.dropped.with_label_values(&[reason]).inc_by(n);
        }
    }
}
