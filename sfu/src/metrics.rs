//! Prometheus metrics of the media plane. Each worker holds its own
//! pre-labelled handles, so counting on the packet path touches no shared map.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::session::EstimateSource;

#[derive(Clone)]
pub struct SfuMetrics {
    rooms: IntGaugeVec,
    participants: IntGaugeVec,
    tracks: IntGaugeVec,
    subscriptions: IntGaugeVec,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    nacks: IntCounterVec,
    superseded_nacks: IntCounterVec,
    early_packets: IntCounterVec,
    plis: IntCounterVec,
    dtls_flight_resends: IntCounterVec,
    load: GaugeVec,
    overload_refusals: IntCounterVec,
    routes_taken_over: IntCounterVec,
    reconnecting: IntGaugeVec,
    resumes: IntCounterVec,
    transport_panics: IntCounterVec,
    rembs: IntCounterVec,
    subscriber_estimates: HistogramVec,
    drops: IntCounterVec,
    tcp_connections: IntGaugeVec,
    /// Connections still sending their first frame.
    tcp_pending: IntGauge,
    tcp_accepted: IntCounterVec,
    tcp_refused: IntCounterVec,
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
        let metrics = SfuMetrics {
            rooms: gauge(registry, "callgate_rooms", "Open rooms")?,
            participants: gauge(registry, "callgate_participants", "Participants in rooms")?,
            reconnecting: gauge(
                registry,
                "callgate_participants_reconnecting",
                "Participants whose connection is lost, kept for the grace",
            )?,
            resumes: counter(
                registry,
                "callgate_participant_resumes_total",
                "Reconnecting participants that came back within the grace",
                &["worker"],
            )?,
            transport_panics: counter(
                registry,
                "callgate_transport_panics_total",
                "Panics caught while handling one participant's transport or command (it ends with internal_error; the worker's other calls go on)",
                &["worker"],
            )?,
            rembs: counter(
                registry,
                "callgate_rembs_total",
                "REMB sent to publishers: the lowest share of their video any subscriber can take",
                &["worker"],
            )?,
            subscriber_estimates: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "callgate_subscriber_estimate_bps",
                        "Subscribers' downlink estimates as they are applied, bits per second, by source: send_side (the SFU's estimator on transport-wide feedback) or remb (the browser's)",
                    )
                    .buckets(vec![
                        100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6,
                    ]),
                    &["worker", "source"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
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
                "Payload bytes received (in) and sent (out) on media ports (UDP datagrams and ICE-TCP frames)",
                &["worker", "direction"],
            )?,
            nacks: counter(
                registry,
                "callgate_nacks_total",
                "NACKs received from subscribers",
                &["worker"],
            )?,
            superseded_nacks: counter(
                registry,
                "callgate_superseded_nacks_total",
                "Lost packets of a publisher not asked for again: a newer keyframe of their stream had arrived",
                &["worker"],
            )?,
            early_packets: counter(
                registry,
                "callgate_early_packets_forwarded_total",
                "Packets that arrived ahead of the keyframe a consumer waited for, forwarded right after its first packet",
                &["worker"],
            )?,
            plis: counter(
                registry,
                "callgate_keyframe_requests_total",
                "Keyframe requests (PLI) sent to publishers",
                &["worker"],
            )?,
            dtls_flight_resends: counter(
                registry,
                "callgate_dtls_flight_resends_total",
                "DTLS handshake datagrams sent again because the client repeated its flight (a flight of ours was lost)",
                &["worker"],
            )?,
            load: {
                let g = GaugeVec::new(
                    Opts::new(
                        "callgate_worker_load",
                        "Share of the time the media worker's loop is busy (0 to 1), smoothed over a few seconds; above rtc.max_worker_load it admits no new participant",
                    ),
                    &["worker"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            routes_taken_over: counter(
                registry,
                "callgate_routes_taken_over_total",
                "Client addresses (routes) of one transport that another transport's client proved its own after the first went silent there: a NAT or the OS gave the address to a new client",
                &["worker"],
            )?,
            overload_refusals: counter(
                registry,
                "callgate_worker_overload_refusals_total",
                "Joins refused because the room's media worker was above rtc.max_worker_load (closed 1013 server_overloaded)",
                &["worker"],
            )?,
            drops: counter(
                registry,
                "callgate_dropped_packets_total",
                "Datagrams or packets dropped, by reason",
                &["worker", "reason"],
            )?,
            tcp_connections: gauge(
                registry,
                "callgate_ice_tcp_connections",
                "Open ICE-TCP connections, by the worker owning their transport",
            )?,
            tcp_pending: {
                let g = IntGauge::new(
                    "callgate_ice_tcp_pending",
                    "ICE-TCP connections still sending their first STUN request",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            tcp_accepted: counter(
                registry,
                "callgate_ice_tcp_accepted_total",
                "ICE-TCP connections handed to a worker",
                &["worker"],
            )?,
            tcp_refused: counter(
                registry,
                "callgate_ice_tcp_refused_total",
                "ICE-TCP connections closed before reaching a transport, by reason",
                &["reason"],
            )?,
        };
        // Every reason shows from the start, at 0.
        for reason in TcpRefusal::ALL {
            metrics.tcp_refused(reason);
        }
        Ok(metrics)
    }

    /// The busiest of workers `0..workers` now, as their
    /// `callgate_worker_load` gauges say (for the cluster registry).
    pub fn busiest_worker_load(&self, workers: usize) -> f64 {
        (0..workers)
            .map(|w| self.load.with_label_values(&[w.to_string()]).get())
            .fold(0.0, f64::max)
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
            superseded_nacks: self.superseded_nacks.with_label_values(&[&w]),
            early_packets_forwarded: self.early_packets.with_label_values(&[&w]),
            plis: self.plis.with_label_values(&[&w]),
            dtls_flight_resends: self.dtls_flight_resends.with_label_values(&[&w]),
            load: self.load.with_label_values(&[&w]),
            overload_refusals: self.overload_refusals.with_label_values(&[&w]),
            reconnecting: self.reconnecting.with_label_values(&[&w]),
            resumes: self.resumes.with_label_values(&[&w]),
            transport_panics: self.transport_panics.with_label_values(&[&w]),
            rembs: self.rembs.with_label_values(&[&w]),
            send_side_estimates: self
                .subscriber_estimates
                .with_label_values(&[w.as_str(), EstimateSource::SendSide.as_str()]),
            remb_estimates: self
                .subscriber_estimates
                .with_label_values(&[w.as_str(), EstimateSource::Remb.as_str()]),
            drop_unknown_source: drop("unknown_source"),
            drop_malformed: drop("malformed"),
            drop_unroutable: drop("unroutable"),
            drop_send_failed: drop("send_failed"),
            drop_muted: drop("muted"),
            drop_media_held: drop("media_held"),
            drop_not_connected: drop("not_connected"),
            drop_not_negotiated: drop("not_negotiated"),
            drop_stun_unauthenticated: drop("stun_unauthenticated"),
            drop_dtls_stale: drop("dtls_stale"),
            drop_dtls_rtc_resend: drop("dtls_rtc_resend"),
            drop_subscription_disabled: drop("subscription_disabled"),
            drop_padding: drop("padding"),
            drop_bandwidth: drop("bandwidth"),
            drop_awaiting_keyframe: drop("awaiting_keyframe"),
            drop_resend_limit: drop("resend_limit"),
            drop_route_taken: drop("route_taken"),
            routes_taken_over: self.routes_taken_over.with_label_values(&[&w]),
        }
    }

    /// What one worker counts about its ICE-TCP connections.
    pub(crate) fn tcp_for_worker(&self, worker: usize) -> TcpMetrics {
        let w = worker.to_string();
        TcpMetrics {
            open: self.tcp_connections.with_label_values(&[&w]),
            accepted: self.tcp_accepted.with_label_values(&[&w]),
            refused_unknown_ufrag: self.tcp_refused(TcpRefusal::UnknownUfrag),
            drop_queue_full: self
                .drops
                .with_label_values(&[w.as_str(), "tcp_queue_full"]),
            drop_malformed: self.drops.with_label_values(&[w.as_str(), "malformed"]),
        }
    }

    /// What the ICE-TCP pending table counts: connections waiting for
    /// their first request, and those shed to make room.
    pub(crate) fn tcp_pending(&self) -> callgate_admission::AdmissionMetrics {
        callgate_admission::AdmissionMetrics {
            held: self.tcp_pending.clone(),
            shed_total_cap: self.tcp_refused(TcpRefusal::Busy),
            shed_source_cap: self.tcp_refused(TcpRefusal::AddressBusy),
        }
    }

    pub(crate) fn tcp_refused(&self, reason: TcpRefusal) -> IntCounter {
        self.tcp_refused.with_label_values(&[reason.as_str()])
    }
}

/// Why an ICE-TCP connection was closed before (or instead of) carrying a
/// transport's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpRefusal {
    /// No complete first frame within the time allowed.
    Timeout,
    /// Closed or failed before its first frame was complete.
    Closed,
    /// A first frame that is no STUN Binding request with a USERNAME of ours,
    /// or a frame over the size cap at any time.
    BadFrame,
    /// A well-formed request for a ufrag no transport (or no worker) has, or
    /// for a transport already holding its most connections.
    UnknownUfrag,
    /// Shed: the pending table was full and this was its oldest connection.
    Busy,
    /// Shed: its source address held its most pending connections and this
    /// was the oldest of them.
    AddressBusy,
}

impl TcpRefusal {
    const ALL: [TcpRefusal; 6] = [
        TcpRefusal::Timeout,
        TcpRefusal::Closed,
        TcpRefusal::BadFrame,
        TcpRefusal::UnknownUfrag,
        TcpRefusal::Busy,
        TcpRefusal::AddressBusy,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TcpRefusal::Timeout => "timeout",
            TcpRefusal::Closed => "closed",
            TcpRefusal::BadFrame => "bad_frame",
            TcpRefusal::UnknownUfrag => "unknown_ufrag",
            TcpRefusal::Busy => "busy",
            TcpRefusal::AddressBusy => "address_busy",
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
    /// Lost publisher packets left out of our NACKs because a newer
    /// keyframe of their stream arrived (module `superseded_nacks`).
    pub superseded_nacks: IntCounter,
    /// Packets of a keyframe that arrived before its first packet, sent
    /// to a consumer that started at it (module `early_packets`).
    pub early_packets_forwarded: IntCounter,
    pub plis: IntCounter,
    /// DTLS datagrams of ours sent again (module `dtls_flight`).
    pub dtls_flight_resends: IntCounter,
    /// The worker's load (module `load`).
    pub load: Gauge,
    pub overload_refusals: IntCounter,
    pub reconnecting: IntGauge,
    pub resumes: IntCounter,
    /// Panics caught while handling one transport.
    pub transport_panics: IntCounter,
    /// REMB sent to publishers.
    pub rembs: IntCounter,
    /// Subscribers' downlink estimates as they are applied: our send-side
    /// ones, and browsers' REMB.
    pub send_side_estimates: Histogram,
    pub remb_estimates: Histogram,
    /// Datagrams from an address no transport knows, that are not a STUN
    /// request for a known ICE username.
    pub drop_unknown_source: IntCounter,
    /// Datagrams a transport refused (bad STUN integrity, bad SRTP, garbage).
    pub drop_malformed: IntCounter,
    /// RTP for an SSRC or track no producer owns.
    pub drop_unroutable: IntCounter,
    pub drop_send_failed: IntCounter,
    pub drop_muted: IntCounter,
    /// RTP from or to a participant whose media is held (a paid call
    /// waiting for its first hold in the ledger); one per packet and leg.
    pub drop_media_held: IntCounter,
    /// RTP for a consumer whose subscriber transport has not connected yet
    /// (or has disconnected); one per packet and leg.
    pub drop_not_connected: IntCounter,
    /// RTP for a consumer whose subscriber has not yet answered with the
    /// producer's codec; one per packet and leg.
    pub drop_not_negotiated: IntCounter,
    /// STUN requests whose USERNAME or MESSAGE-INTEGRITY does not match the
    /// transport's ICE credentials.
    pub drop_stun_unauthenticated: IntCounter,
    /// A ClientHello older than one the client has already sent (a late
    /// retransmission, reordered): rtc's DTLS server would start the
    /// handshake over on it and lose the one in progress.
    pub drop_dtls_stale: IntCounter,
    /// rtc's own timer retransmission of a DTLS flight of ours (module
    /// `dtls_flight`: our byte-identical resends replace it).
    pub drop_dtls_rtc_resend: IntCounter,
    /// Per forwarded leg: the subscriber disabled the track
    /// (`update_subscription`).
    pub drop_subscription_disabled: IntCounter,
    /// A publisher's padding-only packet (bandwidth probing): not forwarded.
    pub drop_padding: IntCounter,
    /// Per forwarded leg: the subscriber's estimate leaves this video track
    /// nothing (module `allocation`).
    pub drop_bandwidth: IntCounter,
    /// Per forwarded leg: video after a pause or a new subscription, before
    /// the keyframe the consumer can start at.
    pub drop_awaiting_keyframe: IntCounter,
    /// A packet a subscriber's NACK asked for that is not sent again: sent
    /// again three times already, or less than 50 ms ago (module
    /// `nack_limit`).
    pub drop_resend_limit: IntCounter,
    /// Datagrams for a client address another transport's client took
    /// over (module `route`).
    pub drop_route_taken: IntCounter,
    pub routes_taken_over: IntCounter,
}

pub(crate) struct TcpMetrics {
    /// Open ICE-TCP connections of this worker.
    pub open: IntGauge,
    /// Connections this worker took from the acceptor.
    pub accepted: IntCounter,
    /// Connections whose ufrag names this worker but no transport of it.
    pub refused_unknown_ufrag: IntCounter,
    /// Output for an ICE-TCP connection whose send queue was full (a slow
    /// client). Output for a connection that is gone counts as `send_failed`.
    pub drop_queue_full: IntCounter,
    /// Frames over the size cap (the connection is closed).
    pub drop_malformed: IntCounter,
}
