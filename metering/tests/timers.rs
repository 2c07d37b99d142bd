//! Sessions on tokio's paused clock: holds, boundaries, the cut at the
//! exact instant, in-call credits, parallel sessions of one payer,
//! warnings. Every test runs on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use callgate_metering::{BillingTerms, EndReason, MeterEvent, WalletView};
use common::*;
use tokio::time::sleep;

fn cut_time(db: &TestDb) -> impl FnMut(&MeterEvent) -> Option<(String, i64)> + '_ {
    move |e| match e {
        MeterEvent::Cut {
            session, reason, ..
        } => {
            assert_eq!(*reason, EndReason::InsufficientBalance);
            Some((session.clone(), db.now_ms()))
        }
        _ => None,
    }
}

async fn five_coins_cut_at_five_seconds(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 5, "pay-1").await.unwrap();
    let mut events = meter.events();
    let terms = BillingTerms::new(60).with_commission_bps(2000);
    let s = meter
        .start_session(start("payer", Some("host"), terms))
        .await
        .unwrap();
    assert_eq!(s.seconds_left(), Some(5));
    let w = meter.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held, w.available), (5, 5, 0));
    let (id, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!(id, s.id());
    assert_eq!(at, 5_000, "cut at exactly 5 s");
    assert_eq!(s.seconds_left(), None);
    // Ending after the cut returns the cut.
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!(summary.end_reason, EndReason::InsufficientBalance);
    assert_eq!(
        (summary.duration_ms, summary.billed_seconds, summary.coins),
        (5_000, 5, 5)
    );
    assert_eq!((summary.payee_coins, summary.platform_coins), (4, 1));
    assert_eq!(
        meter.wallet("payer").await.unwrap(),
        WalletView {
            user: "payer".into(),
            balance: 0,
            held: 0,
            available: 0,
            debt: 0,
        }
    );
    assert_eq!(meter.account("earnings:host").await.unwrap(), 4);
    assert_eq!(meter.account("platform").await.unwrap(), 1);
    assert_eq!(meter.account("funding").await.unwrap(), -5);
    assert_clean(&meter).await;
}
on_both!(cut_at_five_seconds, five_coins_cut_at_five_seconds);

async fn a_cut_is_counted_in_the_meters_metrics(db: TestDb) {
    let meter = db.open().await;
    let registry = prometheus::Registry::new();
    meter.register_metrics(&registry).unwrap();
    let cut = Some(("reason", "insufficient_balance"));
    assert_eq!(
        metric(&registry, "callgate_billed_sessions_ended_total", cut),
        0.0
    );
    meter.credit("payer", 5, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    assert_eq!(
        metric(&registry, "callgate_billed_sessions_open", None),
        1.0
    );
    next_event(&mut events, cut_time(&db)).await;
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!(summary.coins, 5);
    assert_eq!(
        metric(&registry, "callgate_billed_sessions_open", None),
        0.0
    );
    assert_eq!(
        metric(&registry, "callgate_billed_sessions_ended_total", cut),
        1.0
    );
    let hangup = Some(("reason", "hangup"));
    assert_eq!(
        metric(&registry, "callgate_billed_sessions_ended_total", hangup),
        0.0
    );
    assert_eq!(metric(&registry, "callgate_coins_billed_total", None), 5.0);
    let settle = Some(("op", "settle"));
    assert_eq!(
        metric(&registry, "callgate_ledger_errors_total", settle),
        0.0
    );
    assert_clean(&meter).await;
}
on_both!(cut_metrics, a_cut_is_counted_in_the_meters_metrics);

async fn credit_during_call_extends_it(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 5, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    sleep(Duration::from_secs(3)).await;
    assert_eq!(s.seconds_left(), Some(2));
    drain(&mut events);
    let c = meter.credit("payer", 10, "pay-2").await.unwrap();
    assert!(c.applied);
    // Extended before `credit` returned, at 3 s, long before the old cut.
    assert_eq!(s.seconds_left(), Some(12));
    let news = drain(&mut events);
    assert!(
        news.iter().any(|e| matches!(e,
            MeterEvent::SecondsLeft { session, seconds_left: 12, .. } if session == s.id())),
        "{news:?}"
    );
    assert_eq!(db.now_ms(), 3_000);
    let (_, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!(at, 15_000, "5 + 10 coins at 60/min");
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!(summary.coins, 15);
    assert_eq!(meter.wallet("payer").await.unwrap().balance, 0);
    assert_eq!(meter.account("earnings:host").await.unwrap(), 15);
    assert_clean(&meter).await;
}
on_both!(credit_extends, credit_during_call_extends_it);

async fn credit_turns_last_stretch_into_full_blocks(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 30, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    assert_eq!(s.seconds_left(), Some(30));
    sleep(Duration::from_secs(10)).await;
    meter.credit("payer", 100, "pay-2").await.unwrap();
    assert_eq!(s.seconds_left(), Some(120));
    let w = meter.wallet("payer").await.unwrap();
    assert_eq!((w.held, w.available), (60, 70), "a full block is held now");
    let (_, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!(at, 130_000);
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.coins, summary.billed_seconds), (130, 130));
    assert_eq!(meter.wallet("payer").await.unwrap().balance, 0);
    assert_clean(&meter).await;
}
on_both!(
    credit_refills_block,
    credit_turns_last_stretch_into_full_blocks
);

async fn second_session_shortens_the_first(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 100, "pay-1").await.unwrap();
    let mut events = meter.events();
    let a = meter
        .start_session(start("payer", Some("host-a"), BillingTerms::new(60)))
        .await
        .unwrap();
    assert_eq!(a.seconds_left(), Some(100));
    sleep(Duration::from_secs(10)).await;
    drain(&mut events);
    let b = meter
        .start_session(start("payer", Some("host-b"), BillingTerms::new(60)))
        .await
        .unwrap();
    // A held its first minute and had used 10 s of it: of the 50 coins it
    // still held it keeps a share by rate (60 : 60, so 25) and releases the
    // rest; A's limit is 35, plus the 5 coins nobody holds once B has taken
    // its full first minute (60 of the 65 available) → A ends at 40 s.
    assert_eq!(b.seconds_left(), Some(60));
    sleep(Duration::ZERO).await;
    assert_eq!(
        a.seconds_left(),
        Some(30),
        "A's deadline moved from 100 s to 40 s"
    );
    let news = drain(&mut events);
    assert!(
        news.iter().any(|e| matches!(e,
            MeterEvent::SecondsLeft { session, seconds_left: 30, .. } if session == a.id())),
        "{news:?}"
    );
    let (first, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!((first.as_str(), at), (a.id(), 40_000));
    let (second, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!(
        (second.as_str(), at),
        (b.id(), 70_000),
        "B's minute, from 10 s"
    );
    let sa = a.end(EndReason::Hangup).await.unwrap();
    let sb = b.end(EndReason::Hangup).await.unwrap();
    assert_eq!((sa.coins, sb.coins), (40, 60));
    assert_eq!(meter.wallet("payer").await.unwrap().balance, 0);
    assert_eq!(meter.account("earnings:host-a").await.unwrap(), 40);
    assert_eq!(meter.account("earnings:host-b").await.unwrap(), 60);
    assert_clean(&meter).await;
}
on_both!(parallel_sessions, second_session_shortens_the_first);

async fn warnings_at_sixty_and_ten_seconds(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 120, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let e = events.recv().await.unwrap();
        match e {
            MeterEvent::SecondsLeft { seconds_left, .. } => {
                seen.push(("left", seconds_left, db.now_ms()))
            }
            MeterEvent::Warning { seconds_left, .. } => {
                seen.push(("warn", seconds_left, db.now_ms()))
            }
            MeterEvent::Cut { .. } => {
                seen.push(("cut", 0, db.now_ms()));
                break;
            }
            MeterEvent::Ended { .. } => {}
        }
    }
    assert_eq!(
        seen,
        [
            ("left", 120, 0),
            ("warn", 60, 60_000),
            ("warn", 10, 110_000),
            ("cut", 0, 120_000)
        ]
    );
    s.end(EndReason::Hangup).await.unwrap();
    // A session that starts below a threshold is warned at once.
    meter.credit("payer", 5, "pay-2").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    let w = next_event(&mut events, |e| match e {
        MeterEvent::Warning { seconds_left, .. } => Some(*seconds_left),
        _ => None,
    })
    .await;
    assert_eq!(w, 5);
    s.end(EndReason::Hangup).await.unwrap();
    assert_clean(&meter).await;
}
on_both!(warnings, warnings_at_sixty_and_ten_seconds);

async fn blocks_capture_and_hangup_releases(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1000, "pay-1").await.unwrap();
    let terms = BillingTerms::new(10).with_commission_bps(2000);
    let s = meter
        .start_session(start("payer", Some("host"), terms))
        .await
        .unwrap();
    let w = meter.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held), (1000, 10), "first minute held");
    // Just past the boundary: the capture has committed by then.
    sleep(Duration::from_millis(60_001)).await;
    let w = meter.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held), (990, 10), "minute 1 captured, 2 held");
    assert_eq!(meter.account("earnings:host").await.unwrap(), 8);
    assert_eq!(meter.account("platform").await.unwrap(), 2);
    sleep(Duration::from_millis(89_999)).await;
    let summary = s.end(EndReason::PayerLeft).await.unwrap();
    assert_eq!(summary.duration_ms, 150_000);
    assert_eq!(summary.billed_seconds, 180, "per started minute");
    assert_eq!(summary.coins, 30);
    assert_eq!((summary.payee_coins, summary.platform_coins), (24, 6));
    assert_eq!(summary.end_reason, EndReason::PayerLeft);
    let w = meter.wallet("payer").await.unwrap();
    assert_eq!((w.balance, w.held, w.available), (970, 0, 970));
    assert_eq!(meter.count("holds").await.unwrap(), 0);
    // 1 credit + 3 captures × (charge, commission).
    assert_eq!(meter.count("postings").await.unwrap(), 7);
    assert_clean(&meter).await;
}
on_both!(blocks, blocks_capture_and_hangup_releases);

async fn increments_and_no_payee(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1000, "pay-1").await.unwrap();
    // 60/1: a first minute, then per second.
    let s = meter
        .start_session(start(
            "payer",
            Some("host"),
            BillingTerms::new(60).with_increments(60, 1),
        ))
        .await
        .unwrap();
    sleep(Duration::from_millis(61_500)).await;
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.billed_seconds, summary.coins), (62, 62));
    // A 1 ms call on 60/60 pays the started minute.
    let s = meter
        .start_session(start("payer", None, BillingTerms::new(30)))
        .await
        .unwrap();
    sleep(Duration::from_millis(1)).await;
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.billed_seconds, summary.coins), (60, 30));
    assert_eq!((summary.payee_coins, summary.platform_coins), (0, 30));
    // A call ended at once costs nothing.
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(30)))
        .await
        .unwrap();
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.billed_seconds, summary.coins), (0, 0));
    assert_eq!(meter.account("platform").await.unwrap(), 30);
    assert_eq!(meter.account("earnings:host").await.unwrap(), 62);
    assert_eq!(meter.wallet("payer").await.unwrap().balance, 1000 - 92);
    assert_clean(&meter).await;
}
on_both!(increments, increments_and_no_payee);

async fn pro_rata_when_a_second_costs_more_than_a_coin(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 5, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start(
            "payer",
            Some("host"),
            BillingTerms::new(120).with_increments(1, 1),
        ))
        .await
        .unwrap();
    let (_, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!(at, 2_500, "5 coins at 2 a second last 2.5 s");
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.billed_seconds, summary.coins), (3, 5));
    assert_eq!(meter.wallet("payer").await.unwrap().balance, 0);
    // The last stretch is per second: hanging up early in it pays less.
    meter.credit("payer", 5, "pay-2").await.unwrap();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    sleep(Duration::from_millis(2_200)).await;
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.billed_seconds, summary.coins), (3, 3));
    assert_eq!(meter.wallet("payer").await.unwrap().balance, 2);
    assert_clean(&meter).await;
}
on_both!(pro_rata, pro_rata_when_a_second_costs_more_than_a_coin);

async fn boundary_without_money_cuts_on_the_boundary(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 120, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    let (_, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!(at, 120_000);
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!((summary.billed_seconds, summary.coins), (120, 120));
    // Increments not aligned to the minute leave paid slack: 90/30 at 7
    // coins/min bills 90 s for ceil(10.5) = 11 coins, worth 94.3 s.
    meter.credit("payer2", 11, "pay-2").await.unwrap();
    let t0 = db.now_ms();
    let s = meter
        .start_session(start(
            "payer2",
            Some("host"),
            BillingTerms::new(7).with_increments(90, 30),
        ))
        .await
        .unwrap();
    let (_, at) = next_event(&mut events, cut_time(&db)).await;
    assert_eq!(at - t0, 94_286);
    let summary = s.end(EndReason::Hangup).await.unwrap();
    assert_eq!(summary.coins, 11);
    assert_eq!(meter.wallet("payer2").await.unwrap().balance, 0);
    assert_clean(&meter).await;
}
on_both!(boundary_cut, boundary_without_money_cuts_on_the_boundary);

async fn refusals_change_nothing(db: TestDb) {
    let meter = db.open().await;
    let e = meter
        .start_session(start("broke", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "insufficient_balance");
    meter.credit("payer", 10, "pay-1").await.unwrap();
    for (payer, payee, terms, code) in [
        (
            "payer",
            Some("payer"),
            BillingTerms::new(60),
            "invalid_identifier",
        ),
        (
            "",
            Some("host"),
            BillingTerms::new(60),
            "invalid_identifier",
        ),
        ("payer", Some("host"), BillingTerms::new(0), "invalid_terms"),
        (
            "payer",
            Some("host"),
            BillingTerms::new(5).with_commission_bps(10_001),
            "invalid_terms",
        ),
        (
            "payer",
            Some("host"),
            BillingTerms::new(5).with_increments(0, 1),
            "invalid_terms",
        ),
    ] {
        let e = meter
            .start_session(start(payer, payee, terms))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code);
    }
    // No wallet at all: nothing to start with.
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    let e = meter
        .start_session(start("stranger", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "insufficient_balance");
    assert_eq!(meter.count("sessions").await.unwrap(), 1);
    assert_eq!(meter.count("accounts").await.unwrap(), 4);
    s.end(EndReason::Hangup).await.unwrap();
    assert_clean(&meter).await;
}
on_both!(refusals, refusals_change_nothing);

async fn dropped_handle_ends_the_session(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 100, "pay-1").await.unwrap();
    let mut events = meter.events();
    let s = meter
        .start_session(start("payer", Some("host"), BillingTerms::new(60)))
        .await
        .unwrap();
    sleep(Duration::from_secs(2)).await;
    drop(s);
    let summary = next_event(&mut events, |e| match e {
        MeterEvent::Ended { summary } => Some(summary.clone()),
        _ => None,
    })
    .await;
    assert_eq!(summary.end_reason, EndReason::Abandoned);
    assert_eq!((summary.duration_ms, summary.coins), (2_000, 60));
    assert_eq!(meter.open_sessions(), 0);
    assert_eq!(meter.wallet("payer").await.unwrap().held, 0);
    assert_clean(&meter).await;
}
on_both!(dropped_handle, dropped_handle_ends_the_session);

async fn many_parallel_sessions_share_one_wallet(db: TestDb) {
    let meter = db.open().await;
    meter.credit("payer", 1_000, "pay-1").await.unwrap();
    let mut handles = Vec::new();
    for i in 0..8 {
        handles.push(
            meter
                .start_session(start(
                    "payer",
                    Some(&format!("host-{i}")),
                    BillingTerms::new(25 + i).with_increments(1, 1),
                ))
                .await
                .unwrap(),
        );
        sleep(Duration::from_millis(700)).await;
    }
    let mut events = meter.events();
    // Every session is cut in the end; the wallet ends at exactly 0.
    let mut cut = 0;
    while cut < handles.len() {
        if let MeterEvent::Cut { .. } = events.recv().await.unwrap() {
            cut += 1;
        }
    }
    let mut total = 0;
    for h in handles {
        let s = h.end(EndReason::Hangup).await.unwrap();
        assert_eq!(s.end_reason, EndReason::InsufficientBalance);
        total += s.coins;
    }
    assert_eq!(total, 1_000);
    assert_eq!(meter.wallet("payer").await.unwrap().balance, 0);
    assert_clean(&meter).await;
}
on_both!(parallel_many, many_parallel_sessions_share_one_wallet);
