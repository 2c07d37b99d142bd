//! Shared test helpers: a fresh database per test (an SQLite file, and a
//! PostgreSQL database when `CALLGATE_TEST_POSTGRES_URL` is set), a clock
//! that follows tokio's paused clock, and event helpers.
#![allow(dead_code)]

pub mod razorpay;

use std::path::PathBuf;
use std::time::Duration;

use callgate_metering::{
    BillingTerms, CallMember, CallRecord, CallType, Clock, ExportFormat, ExportKind, Meter,
    MeterConfig, MeterEvent, SessionStart, TimeRange,
};
use sqlx::Connection;
use tokio::sync::broadcast;

/// 2023-11-14T22:13:20Z, the wall time every test starts at.
pub const T0: i64 = 1_700_000_000_000;

pub const PG_ENV: &str = "CALLGATE_TEST_POSTGRES_URL";

/// Runs a test body on SQLite, and on PostgreSQL when it is configured.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(start_paused = true)]
            async fn sqlite() {
                super::$body(super::common::TestDb::sqlite()).await
            }
            #[tokio::test(start_paused = true)]
            async fn postgres() {
                match super::common::TestDb::postgres().await {
                    Some(db) => super::$body(db).await,
                    None => eprintln!("{} not set: PostgreSQL half not run", super::common::PG_ENV),
                }
            }
        }
    };
}

#[derive(Debug, Clone)]
pub struct TestDb {
    pub url: String,
    pub postgres: bool,
    /// Reads T0 at the test's start, then moves with tokio's clock.
    pub clock: Clock,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir: PathBuf = std::env::temp_dir()
            .join("callgate-metering-tests")
            .join(unique("t"));
        std::fs::create_dir_all(&dir).unwrap();
        TestDb {
            url: callgate_metering::sqlite_url(&dir.join("metering.db")),
            postgres: false,
            clock: Clock::tokio_at(T0),
        }
    }

    /// A new database on the configured server, or None.
    pub async fn postgres() -> Option<TestDb> {
        let base = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty())?;
        let name = unique("cg_test_");
        let url = with_database(&base, &name);
        // spawn_blocking keeps tokio's paused clock still meanwhile.
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                sqlx::any::install_default_drivers();
                let mut c = sqlx::AnyConnection::connect(&base).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            })
        })
        .await
        .unwrap();
        Some(TestDb {
            url,
            postgres: true,
            clock: Clock::tokio_at(T0),
        })
    }

    pub fn config(&self) -> MeterConfig {
        let mut c = MeterConfig::new(self.url.clone());
        c.checkpoint_interval = Duration::from_secs(5);
        c.hold_expiry = Duration::from_secs(30);
        c
    }

    pub async fn open(&self) -> Meter {
        self.open_with(self.config()).await
    }

    pub async fn open_with(&self, config: MeterConfig) -> Meter {
        Meter::open(config, self.clock).await.unwrap()
    }

    /// Milliseconds since the test started.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms() - T0
    }
}

/// `postgres://u@h:p/db?x` with another database name.
pub fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = head[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(head.len());
    format!("{}/{name}{query}", &head[..host_end])
}

pub fn start(payer: &str, payee: Option<&str>, terms: BillingTerms) -> SessionStart {
    SessionStart {
        room: "room-1".into(),
        payer: payer.into(),
        payee: payee.map(Into::into),
        terms,
        call_type: CallType::Audio,
        call_id: None,
    }
}

/// Waits for the next event matching `pick` (other events are skipped).
pub async fn next_event<T>(
    rx: &mut broadcast::Receiver<MeterEvent>,
    mut pick: impl FnMut(&MeterEvent) -> Option<T>,
) -> T {
    loop {
        let e = rx.recv().await.expect("meter events closed");
        if let Some(t) = pick(&e) {
            return t;
        }
    }
}

/// Every event received so far, without waiting.
pub fn drain(rx: &mut broadcast::Receiver<MeterEvent>) -> Vec<MeterEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

pub async fn export_string(meter: &Meter, kind: ExportKind, format: ExportFormat) -> String {
    let mut out = Vec::new();
    meter
        .export(kind, TimeRange::all(), format, &mut out)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

pub async fn assert_clean(meter: &Meter) {
    let report = meter.audit().await.unwrap();
    assert!(report.is_clean(), "audit: {:#?}", report);
    assert_eq!(report.balance_sum, 0);
}

/// A ringing call as the call log keeps it (room `room-<id>`), with each
/// callee's ring as given.
pub fn call_record(
    id: &str,
    caller: &str,
    callees: &[(&str, &str)],
    call_type: CallType,
    created_ms: i64,
) -> CallRecord {
    CallRecord {
        id: id.into(),
        room: format!("room-{id}"),
        caller: caller.into(),
        callees: callees
            .iter()
            .map(|(identity, ring)| CallMember {
                identity: identity.to_string(),
                ring: Some(ring.to_string()),
            })
            .collect(),
        call_type,
        state: "ringing".into(),
        outcome: None,
        created_ms,
        answered_ms: None,
        ended_ms: None,
        ended_by: None,
        end_reason: None,
        session_id: None,
        billed_seconds: None,
        coins: None,
    }
}

/// The value of `name` (with `label` = `value`, if given) in `registry`.
pub fn metric(registry: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    let family = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} is registered"));
    let m = family
        .get_metric()
        .iter()
        .find(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .unwrap_or_else(|| panic!("{name} has {label:?}"));
    match family.get_field_type() {
        prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
        _ => m.get_gauge().get_value(),
    }
}
