//! What the load generator reads about the server: its CPU time and peak
//! memory from /proc, and its media counters from /metrics.

use std::io;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::LoadTestError;

/// /proc reports CPU time in clock ticks of USER_HZ, which Linux fixes at 100.
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds of process `pid` (`self` for this one).
pub fn cpu_seconds(pid: &str) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat"))
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Peak resident set size of `pid` in MiB (VmHWM).
pub fn peak_rss_mib(pid: &str) -> io::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmHWM"))
}

/// The server's media counters at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ServerCounters {
    pub packets_in: f64,
    pub packets_out: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub nacks: f64,
    pub plis: f64,
}

impl ServerCounters {
    pub fn parse(text: &str) -> ServerCounters {
        ServerCounters {
            packets_in: metric(text, "callgate_packets_total", "direction=\"in\""),
            packets_out: metric(text, "callgate_packets_total", "direction=\"out\""),
            bytes_in: metric(text, "callgate_bytes_total", "direction=\"in\""),
            bytes_out: metric(text, "callgate_bytes_total", "direction=\"out\""),
            nacks: metric(text, "callgate_nacks_total", ""),
            plis: metric(text, "callgate_keyframe_requests_total", ""),
        }
    }

    pub fn since(&self, before: &ServerCounters) -> ServerCounters {
        ServerCounters {
            packets_in: self.packets_in - before.packets_in,
            packets_out: self.packets_out - before.packets_out,
            bytes_in: self.bytes_in - before.bytes_in,
            bytes_out: self.bytes_out - before.bytes_out,
            nacks: self.nacks - before.nacks,
            plis: self.plis - before.plis,
        }
    }
}

/// The sum over the series of `name` whose labels contain `labels`.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let series = key.strip_prefix(name)?;
            if !(series.is_empty() || series.starts_with('{')) || !series.contains(labels) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// GETs `http://{authority}{path}` and returns the body (HTTP/1.1, closed
/// after the response; chunked bodies decoded).
pub async fn http_get(authority: &str, path: &str) -> Result<String, LoadTestError> {
    let probe = |source: io::Error| LoadTestError::Probe {
        what: "metrics",
        source,
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| probe(io::Error::new(io::ErrorKind::TimedOut, "no answer")))?
        .map_err(probe)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| probe(io::Error::new(io::ErrorKind::InvalidData, "no HTTP body")))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or_default().to_owned();
        return Err(probe(io::Error::other(status)));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let stat = "42 (media worker) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    100 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(peak_rss_mib("self").unwrap() > 0.0);
    }

    #[test]
    fn counters_sum_the_series_of_every_worker() {
        let text = "# HELP callgate_packets_total x\n\
                    callgate_packets_total{direction=\"in\",worker=\"0\"} 10\n\
                    callgate_packets_total{direction=\"out\",worker=\"0\"} 100\n\
                    callgate_packets_total{direction=\"out\",worker=\"1\"} 50\n\
                    callgate_nacks_total{worker=\"0\"} 3\n\
                    callgate_keyframe_requests_total{worker=\"1\"} 2\n";
        let c = ServerCounters::parse(text);
        assert_eq!((c.packets_in, c.packets_out), (10.0, 150.0));
        assert_eq!((c.nacks, c.plis), (3.0, 2.0));
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
