//! A meter that dies mid-call: its sessions are closed at their last
//! checkpoint by the next run (or, after the hold expires, by any node),
//! never charged beyond it, never posted twice; a zombie cannot post.

mod common;

use std::time::Duration;

use callgate_metering::{BillingTerms, EndReason, MeterEvent, SessionHandle};
use common::*;
use tokio::time::sleep;

/// A dead process: no `end`, no drop, timers stopped.
async fn crash(meter: &callgate_metering::Meter, handles: Vec<SessionHandle>) {
    for h in handles {
        std::mem::forget(h);
    }
    meter.shutdown().await;
}

async fn crash_then_restart_closes_at_the_checkpoint(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let per_second = BillingTerms::new(60).with_increments(1, 1);
    let a = meter
        .start_session(start("payer", Some("host"), per_second))
        .await
        .unwrap();
    sleep(Duration::from_secs(20)).await;
    let b = meter
        .start_session(start("payer", None, BillingTerms::new(60)))
        .await
        .unwrap();
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    // Checkpoints every 5 s (ticks at 5, 10, … 95 s); the crash at 97 s.
    sleep(Duration::from_secs(77)).await;
    assert_eq!(db.now_ms(), 97_000);
    let postings = meter.count("postings").await.unwrap();
    crash(&meter, vec![a, b]).await;
    assert_eq!(meter.count("holds").await.unwrap_or(-1), -1, "closed");
    // Down for a while: none of that time is charged.
    sleep(Duration::from_secs(100)).await;
    let meter = db.open().await;
    let a = meter.session(&a_id).await.unwrap().expect("closed");
    assert_eq!(a.end_reason, EndReason::Recovered);
    assert_eq!(a.duration_ms, 95_000, "up to the last checkpoint");
    assert_eq!((a.billed_seconds, a.coins), (95, 95));
    let b = meter.session(&b_id).await.unwrap().expect("closed");
    // Started at 20 s, last checkpoint at 95 s: 75 s, two started minutes.
    assert_eq!(
        (b.duration_ms, b.billed_seconds, b.coins),
        (75_000, 120, 120)
    );
    assert_eq!(b.ended_ms, b.started_ms + 75_000);
    let w = meter.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held), (1_000 - 95 - 120, 0));
    assert_eq!(meter.count("holds").await.unwrap(), 0);
    // Posted once: A's first minute (60) and B's first minute (60, platform
    // only) were captured before the crash; recovery adds A's 35 and B's 60.
    assert_eq!(meter.count("postings").await.unwrap(), postings + 2);
    // Opening again changes nothing.
    meter.shutdown().await;
    let meter = db.open().await;
    assert_eq!(meter.count("postings").await.unwrap(), postings + 2);
    assert_clean(&meter).await;
}
on_both!(crash_restart, crash_then_restart_closes_at_the_checkpoint);

async fn a_session_before_its_first_checkpoint_costs_nothing(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 100, "pay-1").await.unwrap();
    sleep(Duration::from_millis(4_000)).await;
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    let id = s.id().to_owned();
    sleep(Duration::from_millis(900)).await; // dies before the 5 s tick
    crash(&meter, vec![s]).await;
    let meter = db.open().await;
    let s = meter.session(&id).await.unwrap().unwrap();
    assert_eq!((s.duration_ms, s.coins), (0, 0));
    assert_eq!(meter.wallet("payer").await.unwrap().available, 100);
    assert_clean(&meter).await;
}
on_both!(
    before_checkpoint,
    a_session_before_its_first_checkpoint_costs_nothing
);

async fn a_zombie_cannot_post_after_recovery(db: TestDb) {
    let old = db.open().await;
    old.credit("payer", 1_000, "pay-1").await.unwrap();
    let mut old_events = old.events();
    let s = old
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    sleep(Duration::from_secs(12)).await;
    // The same node starts again while the old run still runs (stuck, say):
    // the new run closes the old run's sessions at their checkpoint.
    let new = db.open().await;
    let summary = new.session(s.id()).await.unwrap().expect("recovered");
    assert_eq!(summary.end_reason, EndReason::Recovered);
    assert_eq!((summary.duration_ms, summary.coins), (10_000, 60));
    let postings = new.count("postings").await.unwrap();
    // The old run's timer reaches its boundary: fenced, it stops the call
    // and posts nothing.
    let cut = next_event(&mut old_events, |e| match e {
        MeterEvent::Cut {
            session, reason, ..
        } => Some((session.clone(), *reason, db.now_ms())),
        _ => None,
    })
    .await;
    assert_eq!(cut, (s.id().to_owned(), EndReason::Recovered, 60_000));
    let ended = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!(ended, summary);
    assert_eq!(new.count("postings").await.unwrap(), postings);
    assert_eq!(new.wallet("payer").await.unwrap().balance, 940);
    assert_clean(&new).await;
    old.shutdown().await;
}
on_both!(zombie, a_zombie_cannot_post_after_recovery);

/// Node a bills a by-the-second call of `payer` (1,000 coins) for `after`
/// and dies; node b opens on the same ledger. The session's id, and b.
async fn crash_on_a_then_open_b(
    db: &TestDb,
    after: Duration,
) -> (String, callgate_metering::Meter) {
    let mut config = db.config();
    config.node_id = "node-a".into();
    let a = db.open_with(config.clone()).await;
    a.credit("payer", 1_000, "pay-1").await.unwrap();
    let s = a
        .start_session(start(
            "payer",
            Some("host"),
            BillingTerms::new(60).with_increments(1, 1),
        ))
        .await
        .unwrap();
    let id = s.id().to_owned();
    sleep(after).await;
    crash(&a, vec![s]).await;
    config.node_id = "node-b".into();
    (id, db.open_with(config).await)
}

async fn another_node_recovers_an_expired_hold(db: TestDb) {
    let (id, b) = crash_on_a_then_open_b(&db, Duration::from_millis(42_000)).await;
    // Not node b's session, and its hold (refreshed at 40 s) has not expired.
    assert!(b.session(&id).await.unwrap().is_none());
    let mut events = b.events();
    let summary = next_event(&mut events, |e| match e {
        MeterEvent::Ended { summary } => Some((summary.clone(), db.now_ms())),
        _ => None,
    })
    .await;
    // Expiry 30 s after the last refresh (40 s); b's sweep ticks every 5 s.
    assert_eq!(summary.1, 72_000);
    assert_eq!(summary.0.id, id);
    assert_eq!((summary.0.duration_ms, summary.0.coins), (40_000, 40));
    assert_clean(&b).await;
}
on_both!(expired_hold, another_node_recovers_an_expired_hold);

async fn a_node_found_dead_has_its_sessions_closed_at_once(db: TestDb) {
    let (id, b) = crash_on_a_then_open_b(&db, Duration::from_millis(12_000)).await;
    // b's own sessions and other nodes' are not node a's.
    b.credit("other", 1_000, "pay-2").await.unwrap();
    let own = b
        .start_session(start("other", None, BillingTerms::new(60)))
        .await
        .unwrap();
    assert_eq!(b.recover_node("node-c").await.unwrap(), 0);
    assert_eq!(
        b.recover_node("node-b").await.unwrap(),
        0,
        "b's own live session"
    );
    // The cluster says node a is gone, long before its hold (refreshed at
    // 10 s) would expire: closed at that checkpoint.
    assert_eq!(b.recover_node("node-a").await.unwrap(), 1);
    let summary = b.session(&id).await.unwrap().expect("closed");
    assert_eq!(summary.end_reason, EndReason::Recovered);
    assert_eq!((summary.duration_ms, summary.coins), (10_000, 10));
    assert_eq!(b.recover_node("node-a").await.unwrap(), 0, "closed once");
    let w = b.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held), (990, 0));
    own.end(EndReason::Hangup).await.unwrap();
    assert_clean(&b).await;
}
on_both!(
    node_found_dead,
    a_node_found_dead_has_its_sessions_closed_at_once
);

async fn many_sessions_crash_together(db: TestDb) {
    let meter = db.open().await;
    let mut handles = Vec::new();
    let mut started = Vec::new();
    for i in 0..12 {
        let payer = format!("payer-{}", i % 4);
        meter
            .credit(&payer, 10_000, &format!("pay-{i}"))
            .await
            .unwrap();
        let terms = match i % 3 {
            0 => BillingTerms::new(7 + i).with_increments(1, 1),
            1 => BillingTerms::new(7 + i).with_increments(60, 1),
            _ => BillingTerms::new(7 + i).with_commission_bps(3000),
        };
        let h = meter
            .start_session(start(&payer, Some(&format!("host-{i}")), terms))
            .await
            .unwrap();
        started.push((h.id().to_owned(), db.now_ms(), terms));
        handles.push(h);
        sleep(Duration::from_millis(9_700)).await;
    }
    let crash_at = db.now_ms();
    crash(&meter, handles).await;
    let meter = db.open().await;
    for (id, at, terms) in started {
        let s = meter.session(&id).await.unwrap().expect("closed");
        assert_eq!(s.end_reason, EndReason::Recovered);
        let ran = crash_at - at;
        assert!(
            s.duration_ms <= ran && s.duration_ms > ran - 5_000,
            "{id}: recovered {} of {ran} ms",
            s.duration_ms
        );
        assert_eq!(s.coins, terms.charge(s.duration_ms as u64).1);
    }
    assert_eq!(meter.count("holds").await.unwrap(), 0);
    assert_clean(&meter).await;
}
on_both!(many_crash, many_sessions_crash_together);
