//! Property tests: random interleavings of credits (some replayed, some
//! conflicting), session starts of two payers (so one payer often has
//! several sessions at once), hangups, time passing over block boundaries
//! and cuts (tokio's paused clock), and crashes with restarts on the same
//! database. After every case the books must balance and every session
//! must be rated exactly, checked against an oracle written separately
//! from the crate's rating code.
//!
//! `PROPTEST_CASES` sets the number of cases (default 32 on SQLite, 12 on
//! PostgreSQL, which creates a database per case).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use callgate_metering::{BillingTerms, EndReason, Meter, MeterError, SessionHandle};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const PAYERS: [&str; 2] = ["p0", "p1"];
const PAYEES: [&str; 2] = ["h0", "h1"];
const INCREMENTS: [(u32, u32); 5] = [(60, 60), (60, 1), (1, 1), (30, 6), (90, 30)];
const COMMISSIONS: [u32; 4] = [0, 2000, 3333, 10_000];
const REASONS: [EndReason; 3] = [
    EndReason::Hangup,
    EndReason::PayerLeft,
    EndReason::RoomClosed,
];
const CHECKPOINT_MS: i64 = 5_000;

#[derive(Debug, Clone)]
enum Step {
    Credit {
        payer: usize,
        coins: i64,
        reference: u8,
    },
    Start {
        payer: usize,
        payee: Option<usize>,
        rate: i64,
        increments: usize,
        commission: usize,
    },
    End {
        pick: usize,
        reason: usize,
    },
    Wait {
        ms: u64,
    },
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..2usize, 1..400i64, 0..10u8).prop_map(|(payer, coins, reference)| Step::Credit {
            payer,
            coins,
            reference
        }),
        3 => (0..2usize, proptest::option::weighted(0.8, 0..2usize), 1..200i64, 0..5usize, 0..4usize)
            .prop_map(|(payer, payee, rate, increments, commission)| Step::Start {
                payer,
                payee,
                rate,
                increments,
                commission
            }),
        2 => (0..8usize, 0..3usize).prop_map(|(pick, reason)| Step::End { pick, reason }),
        3 => prop_oneof![1..5_000u64, 5_000..130_000u64].prop_map(|ms| Step::Wait { ms }),
        1 => Just(Step::Restart),
    ]
}

/// What the test itself knows about a session.
struct Tracked {
    id: String,
    handle: Option<SessionHandle>,
    payer: usize,
    payee: Option<usize>,
    terms: BillingTerms,
    started: i64,
    /// (time, reason) when the test ended it.
    ended: Option<(i64, EndReason)>,
    crashed: Option<i64>,
}

// ---- the oracle: rating written again, by iteration ----

fn oracle_billed(initial: u32, increment: u32, ms: i64) -> i64 {
    if ms <= 0 {
        return 0;
    }
    let mut billed = i64::from(initial);
    while billed * 1000 < ms {
        billed += i64::from(increment);
    }
    billed
}

fn oracle_cost(rate: i64, seconds: i64) -> i64 {
    let numerator = rate as i128 * seconds as i128;
    let mut coins = numerator / 60;
    if coins * 60 < numerator {
        coins += 1;
    }
    coins as i64
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if cond {
        Ok(())
    } else {
        Err(TestCaseError::fail(what()))
    }
}

async fn run_case(db: TestDb, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let config = db.config();
    let mut meter: Meter = db.open_with(config.clone()).await;
    let mut credited: HashMap<String, (usize, i64)> = HashMap::new();
    let mut tracked: Vec<Tracked> = Vec::new();
    for step in steps {
        match step {
            Step::Credit {
                payer,
                coins,
                reference,
            } => {
                let reference = format!("ref-{reference}");
                let result = meter.credit(PAYERS[payer], coins, &reference).await;
                match credited.get(&reference) {
                    None => {
                        let c = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        check(c.applied, || "first credit applied".into())?;
                        credited.insert(reference, (payer, coins));
                    }
                    Some(&(p, c)) if p == payer && c == coins => {
                        let c = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        check(!c.applied, || "replayed credit not applied".into())?;
                    }
                    Some(_) => {
                        let code = result.err().map(|e| e.code());
                        check(code == Some("conflict"), || {
                            format!("conflict, got {code:?}")
                        })?;
                    }
                }
            }
            Step::Start {
                payer,
                payee,
                rate,
                increments,
                commission,
            } => {
                let (a, b) = INCREMENTS[increments];
                let terms = BillingTerms::new(rate)
                    .with_increments(a, b)
                    .with_commission_bps(COMMISSIONS[commission]);
                match meter
                    .start_session(start(PAYERS[payer], payee.map(|p| PAYEES[p]), terms))
                    .await
                {
                    Ok(h) => tracked.push(Tracked {
                        id: h.id().to_owned(),
                        handle: Some(h),
                        payer,
                        payee,
                        terms,
                        started: db.now_ms(),
                        ended: None,
                        crashed: None,
                    }),
                    Err(MeterError::InsufficientBalance(_)) => {
                        let w = meter.wallet(PAYERS[payer]).await.unwrap();
                        check(w.available == 0, || format!("refused with {w:?}"))?;
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            Step::End { pick, reason } => {
                let open: Vec<usize> = (0..tracked.len())
                    .filter(|&i| tracked[i].handle.is_some())
                    .collect();
                if open.is_empty() {
                    continue;
                }
                let t = &mut tracked[open[pick % open.len()]];
                let reason = REASONS[reason];
                let at = db.now_ms();
                t.handle
                    .take()
                    .unwrap()
                    .end(reason)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                t.ended = Some((at, reason));
            }
            Step::Wait { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Step::Restart => {
                let at = db.now_ms();
                for t in tracked.iter_mut().filter(|t| t.handle.is_some()) {
                    std::mem::forget(t.handle.take());
                    t.crashed = Some(at);
                }
                meter.shutdown().await;
                meter = db.open_with(config.clone()).await;
                check(meter.count("holds").await.unwrap() == 0, || {
                    "no hold left after recovery".into()
                })?;
            }
        }
        let report = meter.audit().await.unwrap();
        check(report.is_clean(), || format!("audit: {report:#?}"))?;
    }
    for t in tracked.iter_mut().filter(|t| t.handle.is_some()) {
        let at = db.now_ms();
        t.handle
            .take()
            .unwrap()
            .end(EndReason::Hangup)
            .await
            .unwrap();
        t.ended = Some((at, EndReason::Hangup));
    }

    // The books.
    let report = meter.audit().await.unwrap();
    check(report.is_clean(), || format!("audit: {report:#?}"))?;
    check(report.open_holds == 0 && report.held == 0, || {
        format!("holds left: {report:?}")
    })?;
    let mut spent = [0i64; 2];
    let mut earned = [0i64; 2];
    let mut platform = 0i64;
    for t in &tracked {
        let s = meter
            .session(&t.id)
            .await
            .unwrap()
            .ok_or_else(|| TestCaseError::fail(format!("{} still open", t.id)))?;
        let d = s.duration_ms;
        let ran_until = t.ended.map(|e| e.0).or(t.crashed).unwrap() - t.started;
        check(d >= 0 && d <= ran_until, || {
            format!("{}: {d} ms billed of {ran_until} ms run", t.id)
        })?;
        match s.end_reason {
            EndReason::InsufficientBalance => {}
            EndReason::Recovered => {
                check(t.crashed.is_some(), || {
                    format!("{} recovered without a crash", t.id)
                })?;
                check(d > ran_until - CHECKPOINT_MS - 1, || {
                    format!("{}: recovered at {d} of {ran_until} ms", t.id)
                })?;
            }
            reason => {
                let (_, asked) = t.ended.unwrap();
                check(reason == asked && d == ran_until, || {
                    format!(
                        "{}: {reason} after {d} ms, asked {asked} at {ran_until}",
                        t.id
                    )
                })?;
            }
        }
        // Rated exactly: the increments, or (in the last stretch) per
        // second with only the final second short of full price.
        let full = oracle_billed(t.terms.initial_increment, t.terms.increment, d);
        let per_second = (d + 999) / 1000;
        let rate = t.terms.rate_per_minute;
        let rated = (s.billed_seconds == full && s.coins == oracle_cost(rate, full))
            || (s.billed_seconds == per_second
                && s.coins <= oracle_cost(rate, per_second)
                && s.coins >= oracle_cost(rate, (per_second - 1).max(0)));
        check(rated, || {
            format!(
                "{}: {d} ms under {:?} billed {} s for {} coins",
                t.id, t.terms, s.billed_seconds, s.coins
            )
        })?;
        // Split exactly: platform floor(coins × bps), payee the rest.
        let want_platform = match t.payee {
            Some(_) => s.coins * i64::from(t.terms.commission_bps) / 10_000,
            None => s.coins,
        };
        check(
            s.platform_coins == want_platform && s.payee_coins + s.platform_coins == s.coins,
            || {
                format!(
                    "{}: split {} + {} of {}",
                    t.id, s.payee_coins, s.platform_coins, s.coins
                )
            },
        )?;
        spent[t.payer] += s.coins;
        if let Some(p) = t.payee {
            earned[p] += s.payee_coins;
        }
        platform += s.platform_coins;
    }
    for (i, payer) in PAYERS.iter().enumerate() {
        let got: i64 = credited
            .values()
            .filter(|(p, _)| *p == i)
            .map(|(_, c)| c)
            .sum();
        let w = meter.wallet(payer).await.unwrap();
        check(
            w.balance == got - spent[i] && w.balance >= 0 && w.held == 0,
            || format!("{payer}: {w:?}, credited {got}, spent {}", spent[i]),
        )?;
    }
    for (i, payee) in PAYEES.iter().enumerate() {
        let e = meter.account(&format!("earnings:{payee}")).await.unwrap();
        check(e == earned[i], || {
            format!("{payee} earned {e}, want {}", earned[i])
        })?;
    }
    check(meter.account("platform").await.unwrap() == platform, || {
        "platform share".into()
    })?;
    let funding: i64 = credited.values().map(|(_, c)| c).sum();
    check(meter.account("funding").await.unwrap() == -funding, || {
        "each credit posted once".into()
    })?;
    check(
        meter.count("credits").await.unwrap() == credited.len() as i64,
        || "one credit row per reference".into(),
    )?;
    meter.shutdown().await;
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

fn run(postgres: bool, cases: u32) {
    if postgres && std::env::var(PG_ENV).map_or(true, |u| u.is_empty()) {
        eprintln!("{PG_ENV} not set: PostgreSQL half not run");
        return;
    }
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(step(), 1..28), |steps| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let db = if postgres {
                    TestDb::postgres().await.unwrap()
                } else {
                    TestDb::sqlite()
                };
                run_case(db, steps).await
            })
        })
        .unwrap();
}

#[test]
fn money_invariants_hold_on_sqlite() {
    run(false, cases(32));
}

#[test]
fn money_invariants_hold_on_postgres() {
    run(true, cases(12));
}
