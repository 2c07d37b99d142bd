//! Nodes sharing one PostgreSQL ledger hear of each other's wallet changes
//! (module `feed`): a credit through one node extends a running session on
//! another at once, and a session starting on one node makes the payer's
//! sessions on another yield. Real time: the notifications cross a real
//! database.

mod common;

use std::time::Duration;

use callgate_metering::{BillingTerms, Clock, EndReason, Meter, MeterEvent};
use common::*;

/// The next seconds-left projection of session `id`.
async fn seconds_left(events: &mut tokio::sync::broadcast::Receiver<MeterEvent>, id: &str) -> u64 {
    let wait = next_event(events, |e| match e {
        MeterEvent::SecondsLeft {
            session,
            seconds_left,
            ..
        } if session == id => Some(*seconds_left),
        _ => None,
    });
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a projection within 10 s")
}

/// Two meters (nodes a and b) on one new PostgreSQL database, on the
/// system clock; `None` without a test PostgreSQL.
async fn two_nodes() -> Option<(Meter, Meter)> {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("{PG_ENV} not set: not run (the feed is PostgreSQL's)");
        return None;
    };
    let node = |id: &str| {
        let mut config = db.config();
        config.node_id = id.into();
        Meter::open(config, Clock::system())
    };
    Some((node("node-a").await.unwrap(), node("node-b").await.unwrap()))
}

#[tokio::test]
async fn a_credit_through_one_node_extends_a_session_billed_on_another() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    b.credit("payer", 100, "pay-1").await.unwrap();
    let mut events = b.events();
    // 60 coins a minute, by the second: 100 coins are 100 s.
    let session = b
        .start_session(start(
            "payer",
            Some("host"),
            BillingTerms::new(60).with_increments(1, 1),
        ))
        .await
        .unwrap();
    let first = seconds_left(&mut events, session.id()).await;
    assert!((99..=100).contains(&first), "{first}");

    a.credit("payer", 500, "pay-2").await.unwrap();
    let extended = seconds_left(&mut events, session.id()).await;
    assert!(
        (599..=600).contains(&extended),
        "b's session learns of a's credit: {extended} s left"
    );

    // A credit through b reaches nobody twice, and a's feed ignores
    // wallets it bills no session of.
    let summary = session.end(EndReason::Hangup).await.unwrap();
    let w = a.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held), (600 - summary.coins, 0));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_session_starting_on_one_node_makes_the_payers_session_on_another_yield() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    a.credit("payer", 10, "pay-1").await.unwrap();
    // 60 coins a minute by the second: the first call holds all 10 coins.
    let per_second = BillingTerms::new(60).with_increments(1, 1);
    let first = a
        .start_session(start("payer", Some("host"), per_second))
        .await
        .unwrap();
    let w = a.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held), (10, 10));

    // A second call through node b: a's session gives up a share of what
    // it has not used yet, so b's can hold the rest.
    let second = b
        .start_session(start("payer", Some("other-host"), per_second))
        .await
        .expect("the second call starts with what the first yielded");
    let w = b.wallet("payer").await.unwrap();
    assert_eq!(w.balance, 10);
    assert!(w.held <= 10, "never more held than there is: {w:?}");
    let first = first.end(EndReason::Hangup).await.unwrap();
    let second = second.end(EndReason::Hangup).await.unwrap();
    assert!(first.coins + second.coins <= 10);
    let w = a.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held), (10 - first.coins - second.coins, 0));
    let report = a.audit().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    a.shutdown().await;
    b.shutdown().await;
}
