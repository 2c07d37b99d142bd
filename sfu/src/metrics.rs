//! Prometheus metrics of the media plane. Each worker holds its own
//! pre-labelled handles, so counting on the packet path touches no shared map.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct SfuMetrics {
    rooms: IntGaugeVec,
    participants: IntGaugeVec,
    tracks: IntGaugeVec,
    subscriptions: IntGaugeVec,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    nacks: IntCounterVec,
    plis: IntCounterVec,
    drops: IntCounterVec,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), &["worker"])?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl SfuMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(SfuMetrics {
            rooms: gauge(registry, "callgate_rooms", "Open rooms")?,
            participants: gauge(registry, "callgate_participants", "Participants in rooms")?,
            tracks: gauge(registry, "callgate_tracks", "Published tracks (producers)")?,
            subscriptions: gauge(
                registry,
                "callgate_subscriptions",
                "Tracks forwarded to a subscriber (consumers)",
            )?,
            packets: counter(
                registry,
                "callgate_packets_total",
                "Media packets (RTP) received from publishers (in) and sent to subscribers (out)",
                &["worker", "direction"],
            )?,
            bytes: counter(
                registry,
                "callgate_bytes_total",
                "UDP payload bytes received (in) and sent (out) on media ports",
                &["worker", "direction"],
            )?,
            nacks: counter(
                registry,
                "callgate_nacks_total",
                "NACKs received from subscribers",
                &["worker"],
            )?,
            plis: counter(
                registry,
                "callgate_keyframe_requests_total",
                "Keyframe requests (PLI) sent to publishers",
                &["worker"],
            )?,
            drops: counter(
                registry,
                "callgate_dropped_packets_total",
                "Datagrams or packets dropped, by reason",
                &["worker", "reason"],
            )?,
        })
    }

    pub(crate) fn for_worker(&self, worker: usize) -> WorkerMetrics {
        let w = worker.to_string();
        let drop = |reason: &str| self.drops.with_label_values(&[w.as_str(), reason]);
        WorkerMetrics {
            rooms: self.rooms.with_label_values(&[&w]),
            participants: self.participants.with_label_values(&[&w]),
            tracks: self.tracks.with_label_values(&[&w]),
            subscriptions: self.subscriptions.with_label_values(&[&w]),
            packets_in: self.packets.with_label_values(&[w.as_str(), "in"]),
            packets_out: self.packets.with_label_values(&[w.as_str(), "out"]),
            bytes_in: self.bytes.with_label_values(&[w.as_str(), "in"]),
            bytes_out: self.bytes.with_label_values(&[w.as_str(), "out"]),
            nacks: self.nacks.with_label_values(&[&w]),
            plis: self.plis.with_label_values(&[&w]),
            drop_unknown_source: drop("unknown_source"),
            drop_malformed: drop("malformed"),
            drop_unroutable: drop("unroutable"),
            drop_send_failed: drop("send_failed"),
            drop_muted: drop("muted"),
        }
    }
}

pub(crate) struct WorkerMetrics {
    pub rooms: IntGauge,
    pub participants: IntGauge,
    pub tracks: IntGauge,
    pub subscriptions: IntGauge,
    pub packets_in: IntCounter,
    pub packets_out: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub nacks: IntCounter,
    pub plis: IntCounter,
    /// Datagrams from an address no transport knows, that are not a STUN
    /// request for a known ICE username.
    pub drop_unknown_source: IntCounter,
    /// Datagrams a transport refused (bad STUN integrity, bad SRTP, garbage).
    pub drop_malformed: IntCounter,
    /// RTP for an SSRC or track no producer owns.
    pub drop_unroutable: IntCounter,
    pub drop_send_failed: IntCounter,
    pub drop_muted: IntCounter,
}
