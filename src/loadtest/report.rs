//! The outcome of one run, as a table for people and JSON for scripts.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::participant::ClientKind;
use super::stats::{MediaSummary, Percentiles, ReconnectSummary};

/// What the server did over the window (from /metrics and /proc).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerSummary {
    pub packets_in: f64,
    /// Forwarded packets: `callgate_packets_total{direction="out"}`.
    pub packets_out: f64,
    pub forwarded_per_sec: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub nacks: f64,
    pub plis: f64,
    pub cpu_seconds: Option<f64>,
    /// Of one core.
    pub cpu_pct: Option<f64>,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// What one fully busy core would forward at this cost.
    pub forwarded_per_core_sec: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub scenario: &'static str,
    pub client: ClientKind,
    pub rooms: usize,
    pub publishers_per_room: usize,
    pub subscribers_per_room: usize,
    pub participants: usize,
    pub joined: usize,
    pub video_kbps: u32,
    pub duration_secs: f64,
    pub media: MediaSummary,
    /// With `--reconnect`: what the address changes cost.
    pub reconnect: Option<ReconnectSummary>,
    pub server: Option<ServerSummary>,
    /// The load generator's own CPU over the window, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    pub failures: usize,
    /// The first few failures, as said.
    pub failure_examples: Vec<String>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

fn percentiles(p: &Percentiles) -> String {
    format!("{} / {} / {}", ms(p.p50_ms), ms(p.p95_ms), ms(p.p99_ms))
}

/// 1234567 → "1,234,567".
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn mbps(bps: f64) -> String {
    format!("{:.2} Mbit/s", bps / 1e6)
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let m = &self.media;
        let mut rows: Vec<(&str, String)> = vec![
            (
                "scenario",
                format!(
                    "{} ({} rooms × {} publishers + {} subscribers; {:?} clients)",
                    self.scenario,
                    self.rooms,
                    self.publishers_per_room,
                    self.subscribers_per_room,
                    self.client
                ),
            ),
            (
                "participants joined",
                format!("{}/{}", self.joined, self.participants),
            ),
            (
                "tracks subscribed / expected",
                format!("{}/{}", m.tracks_received, m.tracks_expected),
            ),
            ("window", format!("{:.1} s", m.window_secs)),
            (
                "packets out (publishers)",
                format!(
                    "{} ({} pkt/s, {})",
                    thousands(m.packets_out as f64),
                    thousands(m.packets_out_per_sec),
                    mbps(m.bps_out)
                ),
            ),
            (
                "packets in (subscribers)",
                format!(
                    "{} ({} pkt/s, {})",
                    thousands(m.packets_in as f64),
                    thousands(m.packets_in_per_sec),
                    mbps(m.bps_in)
                ),
            ),
            (
                "loss",
                format!(
                    "{:.3}% ({} of {})",
                    m.loss_pct,
                    thousands(m.lost_packets as f64),
                    thousands(m.expected_packets as f64)
                ),
            ),
            ("latency p50 / p95 / p99", percentiles(&m.latency)),
            ("  audio", percentiles(&m.latency_audio)),
            ("  video", percentiles(&m.latency_video)),
            (
                "join p50 / p99",
                format!(
                    "{} / {}{}",
                    ms(m.join.p50_ms),
                    ms(m.join.p99_ms),
                    if m.joins_without_media > 0 {
                        format!(" ({} never got media)", m.joins_without_media)
                    } else {
                        String::new()
                    }
                ),
            ),
        ];
        if let Some(r) = &self.reconnect {
            let tail = |p: &Percentiles| {
                format!(
                    "{} / {} / {} ({})",
                    ms(p.p50_ms),
                    ms(p.p99_ms),
                    ms(p.max_ms),
                    p.samples
                )
            };
            rows.push((
                "moved / resumed",
                format!(
                    "{}/{} transports (seed {})",
                    r.transports_resumed, r.transports_moved, r.seed
                ),
            ));
            rows.push(("resume p50 / p99 / max (n)", tail(&r.resume)));
            rows.push(("  publisher transports", tail(&r.resume_publisher)));
            rows.push(("  subscriber transports", tail(&r.resume_subscriber)));
            rows.push(("switch to media p50 / p99 / max", tail(&r.outage)));
            rows.push(("  first datagram to first check", tail(&r.to_first_check)));
            rows.push(("  first check to media", tail(&r.after_first_check)));
            rows.push((
                "lost across the moves",
                format!(
                    "{} packets ({} tracks hit)",
                    thousands(r.lost_packets as f64),
                    r.pairs_affected
                ),
            ));
        }
        if let Some(s) = &self.server {
            rows.push((
                "server forwarded",
                format!(
                    "{} ({} pkt/s)",
                    thousands(s.packets_out),
                    thousands(s.forwarded_per_sec)
                ),
            ));
            rows.push((
                "server NACKs / PLIs",
                format!("{} / {}", thousands(s.nacks), thousands(s.plis)),
            ));
            if let Some(cpu) = s.cpu_seconds {
                rows.push((
                    "server CPU",
                    format!(
                        "{cpu:.2} s ({:.1}% of a core)",
                        s.cpu_pct.unwrap_or_default()
                    ),
                ));
            }
            if let Some(us) = s.cpu_us_per_forwarded_packet {
                rows.push((
                    "server CPU per forwarded packet",
                    format!(
                        "{us:.2} µs ({} pkt/s per core)",
                        s.forwarded_per_core_sec.map_or("-".into(), thousands)
                    ),
                ));
            }
            if let Some(rss) = s.peak_rss_mib {
                rows.push(("server peak RSS", format!("{rss:.1} MiB")));
            }
        }
        if let Some(cpu) = self.loadgen_cpu_pct {
            rows.push(("load generator CPU", format!("{cpu:.1}% of a core")));
        }
        if self.failures > 0 {
            rows.push(("failures", self.failures.to_string()));
            for f in &self.failure_examples {
                rows.push(("", f.clone()));
            }
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
