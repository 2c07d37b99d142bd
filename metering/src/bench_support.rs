//! Internal helpers for `benches/metering.rs`: seed many rows fast and
//! drive the settle transaction without timers. Not a stable API.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::error::MeterError;
use crate::ledger;
use crate::meter::Meter;
use crate::session::{self, Core, Ledgered, Op, SettleError};
use crate::terms::{BillingTerms, CallType};

/// Inserts `n` ended sessions (not backed by postings: for export
/// benchmarks only), ending one a second from `start_ms`.
pub async fn seed_ended_sessions(meter: &Meter, n: u64, start_ms: i64) -> Result<(), MeterError> {
    const BATCH: u64 = 1000;
    let inner = &meter.inner;
    let mut done = 0;
    while done < n {
        let rows = BATCH.min(n - done);
        let mut sql = String::from(
            "INSERT INTO sessions (id, node, instance, room, payer, payee, call_type, \
             rate_per_minute, incr_initial, incr_next, commission_bps, state, started_ms, \
             checkpoint_ms, block_start_ms, block_end_ms, captures, coins, payee_coins, \
             platform_coins, ended_ms, duration_ms, billed_seconds, end_reason) VALUES ",
        );
        for r in 0..rows {
            let b = r * 7;
            if r > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, 'bench', 'bench', ${}, ${}, ${}, 'audio', 10, 60, 60, 2000, 'ended', ${}, \
                 ${}, 60000, 120000, 2, 20, 16, 4, ${}, 95000, 120, 'hangup')",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            ));
        }
        let mut q = sqlx::query(&sql);
        for r in 0..rows {
            let i = done + r;
            let ended = start_ms + i as i64 * 1000;
            q = q
                .bind(format!("ses_bench_{i:012}"))
                .bind(format!("room-{}", i % 5000))
                .bind(format!("payer-{}", i % 100_000))
                .bind(format!("host-{}", i % 2000))
                .bind(ended - 95_000)
                .bind(ended)
                .bind(ended);
        }
        let mut tx = inner.db.begin().await?;
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        done += rows;
    }
    Ok(())
}

/// What one settle run measured.
#[derive(Debug, Clone, Copy)]
pub struct SettleRun {
    pub settles: u64,
    pub elapsed: Duration,
}

/// Starts `sessions` sessions (one payer each, 100 payees, all named with
/// `tag` so that several runs on one ledger do not share them), then
/// settles `rounds` block boundaries of each — the capture of the ended
/// minute and the hold of the next, one transaction each — with
/// `concurrency` sessions in flight. Only the settles are timed. Every
/// session is ended afterwards.
pub async fn settle_many(
    meter: &Meter,
    tag: &str,
    sessions: usize,
    rounds: usize,
    concurrency: usize,
) -> Result<SettleRun, MeterError> {
    let inner = meter.inner.clone();
    let terms = BillingTerms::new(10).with_commission_bps(2000);
    let mut open = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let payer = format!("bench-{tag}-payer-{i}");
        meter
            .credit(
                &payer,
                10 * (rounds as i64 + 2),
                &format!("bench-{tag}-{i}"),
            )
            .await?;
        let payee = format!("bench-{tag}-host-{}", i % 100);
        let core = Core {
            id: session::new_session_id(),
            room: format!("bench-room-{i}"),
            wallet: ledger::wallet_id(&payer),
            earnings: Some(ledger::earnings_id(&payee)),
            payer,
            payee: Some(payee),
            call_type: CallType::Audio,
            terms,
            started_ms: inner.clock.now_ms(),
            block_s: 60,
        };
        let (hp, _) = session::start_tx(&inner, &core, None).await?;
        let l = Ledgered {
            captures: 0,
            coins: 0,
            payee_coins: 0,
            platform_coins: 0,
            block_start_ms: 0,
            block_end_ms: hp.block_end_ms,
            limit: hp.limit,
            hold: hp.hold,
        };
        open.push((core, l));
    }
    let settle = |core: Core, mut l: Ledgered, op: Op| {
        let inner = inner.clone();
        async move {
            let t = l.block_end_ms;
            let now = inner.clock.now_ms();
            let mut tx = inner.db.begin().await?;
            let w = ledger::lock_wallet(&mut tx, &core.wallet)
                .await?
                .ok_or_else(|| MeterError::Internal("no wallet".into()))?;
            let p = session::plan(&core.terms, core.block_s, &l, w.available(), op, t)
                .ok_or_else(|| MeterError::Internal("no plan".into()))?;
            let applied = session::apply(&mut tx, &core, &l, &p, 0, now, inner.webhooks_on())
                .await
                .map_err(|e| match e {
                    SettleError::Fenced => MeterError::Internal("fenced".into()),
                    SettleError::Meter(e) => e,
                })?;
            tx.commit().await?;
            l = applied.ledgered;
            Ok::<_, MeterError>((core, l))
        }
    };
    let started = Instant::now();
    let results: Vec<Result<(Core, Ledgered), MeterError>> = futures_util::stream::iter(open)
        .map(|(core, l)| {
            let settle = &settle;
            async move {
                let (mut core, mut l) = (core, l);
                for _ in 0..rounds {
                    (core, l) = settle(core, l, Op::Boundary).await?;
                }
                Ok((core, l))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut ended = Vec::with_capacity(results.len());
    for r in results {
        ended.push(r?);
    }
    for (core, l) in ended {
        settle(core, l, Op::End(crate::EndReason::Shutdown)).await?;
    }
    Ok(SettleRun {
        settles: (sessions * rounds) as u64,
        elapsed,
    })
}
