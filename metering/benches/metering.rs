//! Metering benchmarks: holds settled per second, and export throughput
//! with peak memory. A plain binary (no criterion: these are throughput
//! runs over real databases, minutes long, not micro-benchmarks).
//!
//!     cargo bench -p callgate-metering --bench metering -- settle [--postgres URL] [--nodes N]
//!     cargo bench -p callgate-metering --bench metering -- export [--postgres URL] [--sessions N]
//!
//! With no subcommand both run on SQLite (and on PostgreSQL when
//! `--postgres URL` or `CALLGATE_TEST_POSTGRES_URL` names a server; a new
//! database is created there). SQLite files go to a temp directory.

use std::time::{Duration, Instant};

use callgate_metering::bench_support::{seed_ended_sessions, settle_many};
use callgate_metering::{
    Clock, ExportFormat, ExportKind, Meter, MeterConfig, TimeRange, sqlite_url,
};
use sqlx::Connection;

struct Args {
    what: Vec<String>,
    postgres: Option<String>,
    sessions: u64,
    settle_sessions: usize,
    rounds: usize,
    concurrency: usize,
    /// Meters (nodes, each with its own connection pool) settling on one
    /// ledger at once, sharing the sessions and the in-flight count.
    nodes: usize,
}

fn args() -> Args {
    let mut a = Args {
        what: Vec::new(),
        postgres: std::env::var("CALLGATE_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        sessions: 1_000_000,
        settle_sessions: 2_000,
        rounds: 5,
        concurrency: 64,
        nodes: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--postgres" => a.postgres = Some(value("--postgres")),
            "--sessions" => a.sessions = value("--sessions").parse().unwrap(),
            "--settle-sessions" => a.settle_sessions = value("--settle-sessions").parse().unwrap(),
            "--rounds" => a.rounds = value("--rounds").parse().unwrap(),
            "--concurrency" => a.concurrency = value("--concurrency").parse().unwrap(),
            "--nodes" => a.nodes = value("--nodes").parse().unwrap(),
            "settle" | "export" => a.what.push(arg),
            other => panic!("unknown argument {other}"),
        }
    }
    if a.what.is_empty() {
        a.what = vec!["settle".into(), "export".into()];
    }
    a
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn fresh_postgres(base: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("cg_bench_{:012x}", rand::random::<u64>() >> 16);
    let mut c = sqlx::AnyConnection::connect(base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let (head, query) = match base.find('?') {
        Some(q) => (&base[..q], &base[q..]),
        None => (base, ""),
    };
    let host_end = head[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(head.len());
    format!("{}/{name}{query}", &head[..host_end])
}

fn sqlite_file(label: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "callgate-metering-bench-{label}-{:x}",
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    sqlite_url(&dir.join("metering.db"))
}

async fn open(url: &str, node: usize) -> Meter {
    let mut c = MeterConfig::new(url);
    c.node_id = format!("bench-n{node}");
    c.max_connections = 16;
    c.checkpoint_interval = Duration::from_secs(3600);
    c.hold_expiry = Duration::from_secs(7200);
    Meter::open(c, Clock::system()).await.unwrap()
}

async fn settle(label: &str, url: &str, a: &Args) {
    let nodes = a.nodes.max(1);
    let mut meters = Vec::new();
    for node in 0..nodes {
        meters.push(open(url, node).await);
    }
    let tags: Vec<String> = (0..nodes).map(|node| format!("n{node}")).collect();
    let runs = futures_util::future::join_all(meters.iter().zip(&tags).map(|(meter, tag)| {
        settle_many(
            meter,
            tag,
            a.settle_sessions / nodes,
            a.rounds,
            (a.concurrency / nodes).max(1),
        )
    }))
    .await;
    let runs: Vec<_> = runs.into_iter().map(Result::unwrap).collect();
    let settles: u64 = runs.iter().map(|r| r.settles).sum();
    let elapsed = runs.iter().map(|r| r.elapsed).max().unwrap_or_default();
    let per_s = settles as f64 / elapsed.as_secs_f64();
    println!(
        "settle {label}: {settles} holds settled (capture + next hold, one transaction each) in {:.2} s: {:.0}/s ({} sessions x {} rounds, {} in flight, over {nodes} node(s))",
        elapsed.as_secs_f64(),
        per_s,
        a.settle_sessions,
        a.rounds,
        a.concurrency
    );
    let report = meters[0].audit().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    for meter in meters {
        meter.shutdown().await;
    }
}

/// Counts what an export writes, and nothing more.
struct Counter(u64);

impl tokio::io::AsyncWrite for Counter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0 += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn export(label: &str, url: &str, a: &Args) {
    let meter = open(url, 0).await;
    let t0: i64 = 1_700_000_000_000;
    let seeded = Instant::now();
    seed_ended_sessions(&meter, a.sessions, t0).await.unwrap();
    println!(
        "export {label}: seeded {} sessions in {:.1} s",
        a.sessions,
        seeded.elapsed().as_secs_f64()
    );
    for (rows, format) in [
        (a.sessions / 10, ExportFormat::Csv),
        (a.sessions, ExportFormat::Csv),
        (a.sessions, ExportFormat::JsonLines),
    ] {
        let range = TimeRange::new(t0, t0 + rows as i64 * 1000).unwrap();
        reset_peak();
        let rss_before = status_kib("VmRSS:");
        let mut out = Counter(0);
        let started = Instant::now();
        let n = meter
            .export(ExportKind::Sessions, range, format, &mut out)
            .await
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(n, rows);
        println!(
            "export {label} {format:?}: {n} rows, {:.0} MB, in {secs:.2} s: {:.0} rows/s; RSS before {} MiB, peak during {} MiB",
            out.0 as f64 / 1e6,
            n as f64 / secs,
            rss_before / 1024,
            status_kib("VmHWM:") / 1024
        );
    }
    meter.shutdown().await;
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for what in &a.what {
            let mut targets = vec![("sqlite".to_owned(), sqlite_file(what))];
            if let Some(base) = &a.postgres {
                targets.push(("postgres".to_owned(), fresh_postgres(base).await));
            }
            for (label, url) in targets {
                match what.as_str() {
                    "settle" => settle(&label, &url, &a).await,
                    _ => export(&label, &url, &a).await,
                }
            }
        }
    });
}
