//! Measures what sqlx's `Any` driver (the meter's one code path for both
//! databases) costs against the native driver: streams the `sessions`
//! export query over a seeded database both ways and decodes three columns.
//! docs/benchmarks.md "Metering" has the figures.
//!
//!     cargo run --release -p callgate-metering --example any_vs_native -- <database url>
//!
//! Seed the database first with `cargo bench -p callgate-metering --bench
//! metering -- export` (it prints nothing about where; its SQLite file is
//! under the temp directory, its PostgreSQL database is `cg_bench_*`).

use std::time::Instant;

use futures_util::TryStreamExt;
use sqlx::Row;

const QUERY: &str = "SELECT id, room, payer, payee, call_type, started_ms, ended_ms, duration_ms, \
     billed_seconds, rate_per_minute, incr_initial, incr_next, commission_bps, coins, payee_coins, \
     platform_coins, end_reason FROM sessions WHERE state = 'ended' AND ended_ms >= $1 \
     AND ended_ms < $2 ORDER BY ended_ms, id";

async fn stream<'c, E>(label: &str, executor: E)
where
    E: sqlx::Executor<'c>,
    for<'r> String: sqlx::Decode<'r, E::Database> + sqlx::Type<E::Database>,
    for<'r> i64: sqlx::Decode<'r, E::Database> + sqlx::Type<E::Database>,
    for<'q> i64: sqlx::Encode<'q, E::Database>,
    for<'q> <E::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, E::Database>,
    usize: sqlx::ColumnIndex<<E::Database as sqlx::Database>::Row>,
    for<'a> &'a str: sqlx::ColumnIndex<<E::Database as sqlx::Database>::Row>,
{
    let started = Instant::now();
    let mut rows = sqlx::query(QUERY).bind(0i64).bind(i64::MAX).fetch(executor);
    let (mut n, mut check) = (0u64, 0i64);
    while let Some(row) = rows.try_next().await.unwrap() {
        let id: String = row.try_get("id").unwrap();
        let coins: i64 = row.try_get("coins").unwrap();
        let payee: Option<String> = row.try_get("payee").unwrap();
        check += coins + id.len() as i64 + payee.map_or(0, |p| p.len() as i64);
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label}: {n} rows in {secs:.2} s = {:.0} rows/s (check {check})",
        n as f64 / secs
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::args().nth(1).expect("a database url");
    sqlx::any::install_default_drivers();
    for _ in 0..2 {
        let any = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        stream("any   ", &any).await;
        if url.starts_with("postgres") {
            let native = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            stream("native", &native).await;
        } else {
            let native = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            stream("native", &native).await;
        }
    }
}
