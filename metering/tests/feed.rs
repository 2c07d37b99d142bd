//! Nodes sharing one PostgreSQL ledger hear of each other's wallet changes
//! (module `feed`): a credit through one node extends a running session on
//! another at once. Real time: the notification crosses a real database.

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

#[tokio::test]
async fn a_credit_through_one_node_extends_a_session_billed_on_another() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("{PG_ENV} not set: not run (the feed is PostgreSQL's)");
        return;
    };
    let node = |id: &str| {
        let mut config = db.config();
        config.node_id = id.into();
        Meter::open(config, Clock::system())
    };
    let (a, b) = (node("node-a").await.unwrap(), node("node-b").await.unwrap());
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
