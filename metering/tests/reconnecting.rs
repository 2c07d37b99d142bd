//! A billed session paused while its payer or payee is reconnecting
//! (docs/metering.md "Reconnecting"): the paused time is not charged, no
//! boundary or cut fires meanwhile, the cut moves later by exactly the time
//! paused, the hold stays, and a session ended while paused (or lost) is
//! charged up to the pause point. On tokio's paused clock; every test runs
//! on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use callgate_metering::{
    BillingTerms, EndReason, ExportFormat, ExportKind, MeterEvent, SessionHandle,
};
use common::*;
use tokio::time::{Instant, sleep};

fn per_second(rate: i64) -> BillingTerms {
    BillingTerms::new(rate).with_increments(1, 1)
}

/// `ms` before now on tokio's clock.
fn ago(ms: u64) -> Instant {
    Instant::now() - Duration::from_millis(ms)
}

async fn held_and_balance(meter: &callgate_metering::Meter) -> (i64, i64) {
    let w = meter.wallet("payer").await.unwrap();
    (w.held, w.balance)
}

async fn paused_eight_seconds_is_charged_call_time_minus_eight_seconds(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let terms = per_second(60).with_commission_bps(2000);
    let s = meter
        .start_session(start("payer", Some("host"), terms))
        .await
        .unwrap();
    sleep(Duration::from_secs(13)).await;
    // Media stopped at 10 s; the participant is known lost at 13 s.
    assert!(s.pause(ago(3_000)).await);
    assert!(s.is_paused());
    assert_eq!(s.billed_ms(), 10_000, "backdated to when media stopped");
    sleep(Duration::from_secs(5)).await;
    assert_eq!(s.billed_ms(), 10_000, "the billed clock stands still");
    assert!(s.resume(Instant::now()).await);
    assert!(!s.is_paused());
    sleep(Duration::from_secs(12)).await;
    assert_eq!(db.now_ms(), 30_000);
    let summary = s.end(EndReason::Hangup).await.unwrap();
    // 30 s of call, 8 s of it (10 s → 18 s) paused: 22 s at 1 coin a second.
    assert_eq!(
        (summary.duration_ms, summary.billed_seconds, summary.coins),
        (22_000, 22, 22)
    );
    assert_eq!((summary.payee_coins, summary.platform_coins), (18, 4));
    assert_eq!(summary.ended_ms - summary.started_ms, 30_000);
    assert_eq!(held_and_balance(&meter).await, (0, 978));
    assert_eq!(meter.account("earnings:host").await.unwrap(), 18);
    assert_eq!(meter.account("platform").await.unwrap(), 4);
    let stored = meter.session(&summary.id).await.unwrap().unwrap();
    assert_eq!(stored, summary, "recorded as returned");
    assert_clean(&meter).await;
}
on_both!(
    paused_eight_seconds,
    paused_eight_seconds_is_charged_call_time_minus_eight_seconds
);

async fn pause_moves_the_cut_and_the_warnings_later_by_the_paused_time(db: TestDb) {
    let meter = db.open().await;
    // 30 coins at 60 a minute: cut at 30 s unpaused.
    meter.credit("payer", 30, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    let mut seen = Vec::new();
    sleep(Duration::from_secs(10)).await;
    assert!(s.pause(Instant::now()).await);
    assert_eq!(s.seconds_left(), Some(20));
    sleep(Duration::from_secs(8)).await;
    assert_eq!(s.seconds_left(), Some(20), "frozen while paused");
    assert!(
        drain(&mut events)
            .iter()
            .all(|e| !matches!(e, MeterEvent::Cut { .. } | MeterEvent::Ended { .. }))
    );
    assert_eq!(held_and_balance(&meter).await, (30, 30), "the hold stays");
    assert!(s.resume(Instant::now()).await);
    assert_eq!(s.seconds_left(), Some(20));
    loop {
        match events.recv().await.unwrap() {
            MeterEvent::SecondsLeft { seconds_left, .. } => {
                seen.push(("left", seconds_left, db.now_ms()))
            }
            MeterEvent::Warning { seconds_left, .. } => {
                seen.push(("warn", seconds_left, db.now_ms()))
            }
            MeterEvent::Cut { reason, .. } => {
                assert_eq!(reason, EndReason::InsufficientBalance);
                seen.push(("cut", 0, db.now_ms()));
                break;
            }
            MeterEvent::Ended { .. } => {}
        }
    }
    // Resumed at 18 s with 20 s left: said again at once, the 10 s warning
    // at 28 s (not 20 s), the cut at 38 s (not 30 s).
    assert_eq!(
        seen,
        [
            ("left", 20, 18_000),
            ("warn", 10, 28_000),
            ("cut", 0, 38_000)
        ]
    );
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!(summary.end_reason, EndReason::InsufficientBalance);
    assert_eq!(
        (summary.duration_ms, summary.billed_seconds, summary.coins),
        (30_000, 30, 30)
    );
    assert_eq!(summary.ended_ms - summary.started_ms, 38_000);
    assert_eq!(held_and_balance(&meter).await, (0, 0));
    assert_clean(&meter).await;
}
on_both!(
    cut_moves_later,
    pause_moves_the_cut_and_the_warnings_later_by_the_paused_time
);

async fn no_boundary_fires_while_paused_and_it_comes_later_by_the_paused_time(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(10)))
        .await
        .unwrap();
    sleep(Duration::from_secs(50)).await;
    assert!(s.pause(Instant::now()).await);
    // Well past the unpaused boundary at 60 s: nothing captured.
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        held_and_balance(&meter).await,
        (10, 1_000),
        "first minute still held"
    );
    assert_eq!(meter.count("postings").await.unwrap(), 1, "the credit only");
    assert!(s.resume(Instant::now()).await);
    // Resumed at 80 s, 10 s of the minute left: the boundary at 90 s.
    sleep(Duration::from_millis(9_999)).await;
    assert_eq!(held_and_balance(&meter).await, (10, 1_000));
    sleep(Duration::from_millis(2)).await;
    assert_eq!(
        held_and_balance(&meter).await,
        (10, 990),
        "minute 1 captured, minute 2 held"
    );
    sleep(Duration::from_millis(4_999)).await;
    let summary = s.end(EndReason::PayeeLeft).await.unwrap();
    assert_eq!(
        (summary.duration_ms, summary.billed_seconds, summary.coins),
        (65_000, 120, 20)
    );
    assert_eq!(held_and_balance(&meter).await, (0, 980));
    assert_clean(&meter).await;
}
on_both!(
    boundary_waits,
    no_boundary_fires_while_paused_and_it_comes_later_by_the_paused_time
);

async fn ending_while_paused_charges_up_to_the_pause_point(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let s = meter
        .start_session(start("payer", Some("host"), per_second(60)))
        .await
        .unwrap();
    sleep(Duration::from_secs(20)).await;
    assert!(s.pause(ago(5_000)).await);
    sleep(Duration::from_secs(7)).await;
    let summary = s.end(EndReason::PayerLeft).await.unwrap();
    assert_eq!(summary.end_reason, EndReason::PayerLeft);
    assert_eq!(
        (summary.duration_ms, summary.billed_seconds, summary.coins),
        (15_000, 15, 15)
    );
    assert_eq!(
        summary.ended_ms - summary.started_ms,
        15_000,
        "billing ended at the pause point"
    );
    assert_eq!(held_and_balance(&meter).await, (0, 985));
    assert_clean(&meter).await;
}
on_both!(
    end_while_paused,
    ending_while_paused_charges_up_to_the_pause_point
);

async fn connection_lost_ends_at_the_pause_point_as_a_normal_end(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let mut events = meter.events();
    let terms = per_second(30).with_commission_bps(1000);
    let s = meter
        .start_session(start("payer", Some("host"), terms))
        .await
        .unwrap();
    let id = s.id().to_owned();
    sleep(Duration::from_secs(45)).await;
    // Silent from 40 s; the grace (20 s) runs out at 60 s.
    assert!(s.pause(ago(5_000)).await);
    sleep(Duration::from_secs(15)).await;
    let summary = s.end(EndReason::ConnectionLost).await.unwrap();
    // 40 s at 30 coins a minute.
    assert_eq!(
        (summary.duration_ms, summary.billed_seconds, summary.coins),
        (40_000, 40, 20)
    );
    assert_eq!((summary.payee_coins, summary.platform_coins), (18, 2));
    assert_eq!(summary.end_reason, EndReason::ConnectionLost);
    assert!(!EndReason::ConnectionLost.is_cut());
    assert_eq!(
        "connection_lost".parse::<EndReason>().unwrap(),
        EndReason::ConnectionLost
    );
    // Stored and read back as such; no Cut was announced.
    let stored = meter.session(&id).await.unwrap().unwrap();
    assert_eq!(stored.end_reason, EndReason::ConnectionLost);
    assert_eq!(stored, summary);
    let news = drain(&mut events);
    assert!(
        !news.iter().any(|e| matches!(e, MeterEvent::Cut { .. })),
        "{news:?}"
    );
    assert!(news.iter().any(|e| matches!(e,
        MeterEvent::Ended { summary } if summary.end_reason == EndReason::ConnectionLost)));
    let rows = export_string(&meter, ExportKind::Sessions, ExportFormat::JsonLines).await;
    let row: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    assert_eq!(row["end_reason"], "connection_lost");
    assert_eq!(row["duration_ms"], 40_000);
    assert_eq!(row["coins"], 20);
    assert_eq!(held_and_balance(&meter).await, (0, 980));
    assert_clean(&meter).await;
}
on_both!(
    connection_lost,
    connection_lost_ends_at_the_pause_point_as_a_normal_end
);

async fn pausing_twice_or_resuming_a_running_session_changes_nothing(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let s = meter
        .start_session(start("payer", Some("host"), per_second(60)))
        .await
        .unwrap();
    sleep(Duration::from_secs(3)).await;
    assert!(s.resume(Instant::now()).await, "running: nothing to resume");
    assert_eq!(s.billed_ms(), 3_000);
    sleep(Duration::from_secs(2)).await;
    assert!(s.pause(Instant::now()).await);
    sleep(Duration::from_secs(2)).await;
    assert!(s.pause(Instant::now()).await, "paused already");
    assert!(s.pause(ago(10_000)).await, "paused already");
    assert_eq!(s.billed_ms(), 5_000, "still paused at 5 s");
    sleep(Duration::from_secs(3)).await;
    assert!(s.resume(Instant::now()).await);
    sleep(Duration::from_secs(1)).await;
    assert!(s.resume(ago(1_000)).await, "running: nothing to resume");
    sleep(Duration::from_secs(4)).await;
    // 15 s of call, 5 s → 10 s paused.
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.duration_ms, summary.coins), (10_000, 10));
    assert_clean(&meter).await;
}
on_both!(
    idempotent,
    pausing_twice_or_resuming_a_running_session_changes_nothing
);

async fn a_pause_reaches_back_no_further_than_the_last_boundary_or_resume(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(10)))
        .await
        .unwrap();
    sleep(Duration::from_secs(62)).await;
    // Media stopped at 57 s, before the boundary at 60 s that captured the
    // first minute: the pause starts at the boundary.
    assert!(s.pause(ago(5_000)).await);
    assert_eq!(s.billed_ms(), 60_000);
    sleep(Duration::from_secs(3)).await;
    assert!(s.resume(Instant::now()).await);
    sleep(Duration::from_secs(4)).await;
    // Nor before the last resume (65 s, billed 60 s).
    assert!(s.pause(ago(30_000)).await);
    assert_eq!(s.billed_ms(), 60_000);
    // Nor after now.
    assert!(s.resume(Instant::now() + Duration::from_secs(60)).await);
    assert_eq!(s.billed_ms(), 60_000);
    sleep(Duration::from_secs(1)).await;
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!(
        (summary.duration_ms, summary.billed_seconds, summary.coins),
        (61_000, 120, 20)
    );
    assert_clean(&meter).await;
}
on_both!(
    backdating_clamped,
    a_pause_reaches_back_no_further_than_the_last_boundary_or_resume
);

/// A dead process: no `end`, no drop, timers stopped.
async fn crash(meter: &callgate_metering::Meter, handles: Vec<SessionHandle>) {
    for h in handles {
        std::mem::forget(h);
    }
    meter.shutdown().await;
}

async fn recovery_charges_no_paused_time(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let a = meter
        .start_session(start("payer", Some("host-a"), per_second(60)))
        .await
        .unwrap();
    let b = meter
        .start_session(start("payer", Some("host-b"), per_second(60)))
        .await
        .unwrap();
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    sleep(Duration::from_secs(12)).await;
    // A: paused 12 s → 20 s, then runs; B: paused from 12 s to the crash.
    assert!(a.pause(Instant::now()).await);
    assert!(b.pause(Instant::now()).await);
    sleep(Duration::from_secs(8)).await;
    assert!(a.resume(Instant::now()).await);
    // Checkpoints at 5, 10, … 25 s; the crash at 27 s.
    sleep(Duration::from_secs(7)).await;
    crash(&meter, vec![a, b]).await;
    sleep(Duration::from_secs(60)).await;
    let meter = db.open().await;
    let a = meter.session(&a_id).await.unwrap().expect("closed");
    assert_eq!(a.end_reason, EndReason::Recovered);
    assert_eq!(
        (a.duration_ms, a.coins),
        (17_000, 17),
        "checkpoint 25 s less 8 s paused"
    );
    assert_eq!(a.ended_ms - a.started_ms, 25_000);
    let b = meter.session(&b_id).await.unwrap().expect("closed");
    assert_eq!(
        (b.duration_ms, b.coins),
        (12_000, 12),
        "up to the pause point"
    );
    assert_eq!(b.ended_ms - b.started_ms, 12_000);
    assert_eq!(held_and_balance(&meter).await, (0, 1_000 - 29));
    assert_clean(&meter).await;
}
on_both!(recovery, recovery_charges_no_paused_time);
