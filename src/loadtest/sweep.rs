//! `--sweep subscribers=10,50,100`: one run per size, a table of how the
//! cost grows, and a chart.

use std::fmt::Write;

use serde::Serialize;

use super::error::LoadTestError;
use super::report::{Report, thousands};
use super::scenario::Sizes;

/// Which size a sweep grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Param {
    Rooms,
    Publishers,
    Subscribers,
}

impl Param {
    pub fn as_str(self) -> &'static str {
        match self {
            Param::Rooms => "rooms",
            Param::Publishers => "publishers",
            Param::Subscribers => "subscribers",
        }
    }

    pub fn apply(self, sizes: Sizes, value: usize) -> Sizes {
        match self {
            Param::Rooms => Sizes {
                rooms: Some(value),
                ..sizes
            },
            Param::Publishers => Sizes {
                publishers: Some(value),
                ..sizes
            },
            Param::Subscribers => Sizes {
                subscribers: Some(value),
                ..sizes
            },
        }
    }
}

/// `subscribers=10,50,100` → (Subscribers, [10, 50, 100]).
pub fn parse(spec: &str) -> Result<(Param, Vec<usize>), LoadTestError> {
    let usage = || {
        LoadTestError::Usage(format!(
            "--sweep {spec}: expected rooms|publishers|subscribers=N,N,…"
        ))
    };
    let (name, values) = spec.split_once('=').ok_or_else(usage)?;
    let param = match name.trim() {
        "rooms" => Param::Rooms,
        "publishers" => Param::Publishers,
        "subscribers" => Param::Subscribers,
        _ => return Err(usage()),
    };
    let values = values
        .split(',')
        .map(|v| v.trim().parse::<usize>().map_err(|_| usage()))
        .collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() || values.contains(&0) {
        return Err(usage());
    }
    Ok((param, values))
}

/// One step of a sweep, with the matching step of a baseline if given.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub value: usize,
    pub report: Report,
    /// CPU µs per forwarded packet of the baseline (e.g. the limit relay).
    pub baseline_us_per_packet: Option<f64>,
}

impl Step {
    pub fn us_per_packet(&self) -> Option<f64> {
        self.report
            .server
            .as_ref()
            .and_then(|s| s.cpu_us_per_forwarded_packet)
    }

    pub fn ratio(&self) -> Option<f64> {
        Some(self.us_per_packet()? / self.baseline_us_per_packet?)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub scenario: &'static str,
    pub param: Param,
    pub steps: Vec<Step>,
}

/// CPU µs per forwarded packet by size, from an earlier `--sweep --json`.
pub fn read_baseline(json: &str) -> Result<Vec<(usize, f64)>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let steps = v["steps"]
        .as_array()
        .ok_or("no `steps`: not the JSON of a sweep")?;
    Ok(steps
        .iter()
        .filter_map(|s| {
            let value = s["value"].as_u64()? as usize;
            let us = s["report"]["server"]["cpu_us_per_forwarded_packet"].as_f64()?;
            Some((value, us))
        })
        .collect())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

impl Sweep {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>11}  {:>7}  {:>13}  {:>9}  {:>8}  {:>7}  {:>8}  {:>8}  {:>8}  {:>8}",
            self.param.as_str(),
            "tracks",
            "forwarded/s",
            "srv CPU %",
            "µs/pkt",
            "× base",
            "loss %",
            "p99 ms",
            "join p50",
            "join p99"
        );
        for s in &self.steps {
            let m = &s.report.media;
            let server = s.report.server.as_ref();
            let _ = writeln!(
                out,
                "{:>11}  {:>7}  {:>13}  {:>9}  {:>8}  {:>7}  {:>8.3}  {:>8}  {:>8}  {:>8}",
                s.value,
                format!("{}/{}", m.tracks_received, m.tracks_expected),
                server.map_or("-".into(), |s| thousands(s.forwarded_per_sec)),
                opt(server.and_then(|s| s.cpu_pct), 1),
                opt(s.us_per_packet(), 2),
                opt(s.ratio(), 2),
                m.loss_pct,
                opt(m.latency.p99_ms, 2),
                opt(m.join.p50_ms, 0),
                opt(m.join.p99_ms, 0),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_specs_parse() {
        assert_eq!(
            parse("subscribers=10,50, 100").unwrap(),
            (Param::Subscribers, vec![10, 50, 100])
        );
        assert!(parse("subscribers").is_err());
        assert!(parse("speakers=1").is_err());
        assert!(parse("rooms=0").is_err());
        let sizes = Param::Rooms.apply(Sizes::default(), 3);
        assert_eq!(sizes.rooms, Some(3));
    }

    #[test]
    fn a_baseline_is_read_from_a_sweep_json() {
        let json = r#"{"steps": [
            {"value": 10, "report": {"server": {"cpu_us_per_forwarded_packet": 2.5}}},
            {"value": 50, "report": {"server": null}}]}"#;
        assert_eq!(read_baseline(json).unwrap(), vec![(10, 2.5)]);
        assert!(read_baseline("{}").is_err());
    }
}
