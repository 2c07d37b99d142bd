//! The call log (docs/calls.md), on both databases: a call written as it
//! changes and read back whole, histories paged newest first, calls a
//! restart left unended closed as failed, bad rows refused, and a paid
//! call's hold of its first increment taken, handed to its session or
//! released, and its billed seconds and coins summed over its sessions.

mod common;

use std::time::Duration;

use callgate_metering::{
    BillingTerms, CallCursor, CallHold, CallMember, CallRecord, CallType, CallWebhook, EndReason,
    Meter, MeterConfig, MeterError, SessionStart, WebhookConfig,
};
use common::*;
use tokio::time::sleep;

fn ringing(id: &str, caller: &str, callees: &[&str], created_ms: i64) -> CallRecord {
    CallRecord {
        id: id.into(),
        room: format!("room-{id}"),
        caller: caller.into(),
        callees: callees
            .iter()
            .map(|c| CallMember {
                identity: c.to_string(),
                ring: Some("ringing".into()),
            })
            .collect(),
        call_type: CallType::Video,
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

fn ring(call: &mut CallRecord, callee: &str, state: &str) {
    for m in &mut call.callees {
        if m.identity == callee {
            m.ring = Some(state.into());
        }
    }
}

fn ended(call: &mut CallRecord, outcome: &str, reason: &str, at: i64, by: Option<&str>) {
    call.state = "ended".into();
    call.outcome = Some(outcome.into());
    call.end_reason = Some(reason.into());
    call.ended_ms = Some(at);
    call.ended_by = by.map(Into::into);
}

async fn a_call_is_logged_as_it_changes_and_read_back_whole(db: TestDb) {
    let meter = db.open().await;
    let mut call = ringing("CA_1", "alice", &["host1", "host2"], T0);
    meter.log_call(&call, &[]).await.unwrap();
    assert_eq!(meter.call("CA_1").await.unwrap().as_ref(), Some(&call));

    ring(&mut call, "host1", "accepted");
    call.state = "accepted".into();
    call.answered_ms = Some(T0 + 4_000);
    meter.log_call(&call, &[]).await.unwrap();
    ring(&mut call, "host2", "missed");
    ended(
        &mut call,
        "completed",
        "hung_up",
        T0 + 64_000,
        Some("host1"),
    );
    meter.log_call(&call, &[]).await.unwrap();

    let read = meter.call("CA_1").await.unwrap().expect("logged");
    assert_eq!(read, call);
    assert_eq!(read.callees[1].ring.as_deref(), Some("missed"));
    assert_eq!((read.billed_seconds, read.coins), (None, None), "unpaid");
    assert_eq!(meter.call("CA_2").await.unwrap(), None);
    assert_eq!(meter.count("calls").await.unwrap(), 1);
    assert_eq!(meter.count("call_members").await.unwrap(), 3);
}
on_both!(
    logged_as_it_changes,
    a_call_is_logged_as_it_changes_and_read_back_whole
);

async fn a_history_pages_newest_first_and_holds_only_the_identitys_calls(db: TestDb) {
    let meter = db.open().await;
    // Five of alice's calls (two at the same millisecond), one without her.
    for (id, at) in [
        ("CA_a", 1),
        ("CA_b", 2),
        ("CA_c", 3),
        ("CA_d", 3),
        ("CA_e", 5),
    ] {
        meter
            .log_call(&ringing(id, "alice", &["host1"], T0 + at), &[])
            .await
            .unwrap();
    }
    meter
        .log_call(&ringing("CA_x", "bob", &["host1"], T0 + 4), &[])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<CallCursor> = None;
    loop {
        let page = meter.calls_of("alice", cursor.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(CallCursor {
            created_ms: last.created_ms,
            id: last.id.clone(),
        });
        seen.extend(page.into_iter().map(|c| c.id));
    }
    assert_eq!(seen, ["CA_e", "CA_d", "CA_c", "CA_b", "CA_a"]);
    // A callee's history has every call it was rung for.
    let host: Vec<String> = meter
        .calls_of("host1", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(host, ["CA_e", "CA_x", "CA_d", "CA_c", "CA_b", "CA_a"]);
    assert!(meter.calls_of("nobody", None, 10).await.unwrap().is_empty());
}
on_both!(
    history_pages,
    a_history_pages_newest_first_and_holds_only_the_identitys_calls
);

async fn calls_a_restart_left_unended_end_as_failed_and_ended_ones_stay(db: TestDb) {
    let meter = db.open().await;
    let ring_only = ringing("CA_r", "alice", &["host1"], T0);
    let mut answered = ringing("CA_a", "alice", &["host1"], T0);
    ring(&mut answered, "host1", "accepted");
    answered.state = "accepted".into();
    answered.answered_ms = Some(T0 + 1_000);
    let mut done = ringing("CA_d", "alice", &["host1"], T0);
    ring(&mut done, "host1", "rejected");
    ended(&mut done, "rejected", "declined", T0 + 2_000, Some("host1"));
    for call in [&ring_only, &answered, &done] {
        meter.log_call(call, &[]).await.unwrap();
    }
    meter.shutdown().await;

    sleep(Duration::from_secs(7)).await;
    let meter = db.open().await;
    assert_eq!(meter.fail_unended_calls().await.unwrap(), 2);
    let now = T0 + 7_000;
    let r = meter.call("CA_r").await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.outcome.as_deref()),
        ("ended", Some("failed"))
    );
    assert_eq!(
        (r.end_reason.as_deref(), r.ended_ms),
        (Some("failed"), Some(now))
    );
    assert_eq!(
        r.callees[0].ring.as_deref(),
        Some("cancelled"),
        "it rings no more"
    );
    let a = meter.call("CA_a").await.unwrap().unwrap();
    assert_eq!(a.outcome.as_deref(), Some("completed"), "it was answered");
    assert_eq!(a.end_reason.as_deref(), Some("failed"));
    assert_eq!(
        meter.call("CA_d").await.unwrap().unwrap(),
        done,
        "unchanged"
    );
    assert_eq!(meter.fail_unended_calls().await.unwrap(), 0);
}
on_both!(
    restart_fails_unended,
    calls_a_restart_left_unended_end_as_failed_and_ended_ones_stay
);

async fn rows_the_schema_does_not_allow_are_refused_and_change_nothing(db: TestDb) {
    let meter = db.open().await;
    let call = ringing("CA_1", "alice", &["host1"], T0);
    meter.log_call(&call, &[]).await.unwrap();
    let mut no_outcome = call.clone();
    no_outcome.state = "ended".into();
    let mut unknown_outcome = call.clone();
    ended(&mut unknown_outcome, "won", "hung_up", T0 + 1, None);
    let mut unknown_ring = call.clone();
    ring(&mut unknown_ring, "host1", "maybe");
    for bad in [no_outcome, unknown_outcome, unknown_ring] {
        assert!(meter.log_call(&bad, &[]).await.is_err(), "{bad:?}");
        assert_eq!(meter.call("CA_1").await.unwrap().as_ref(), Some(&call));
    }
    let mut bad_id = call.clone();
    bad_id.id = String::new();
    assert!(matches!(
        meter.log_call(&bad_id, &[]).await,
        Err(MeterError::InvalidIdentifier(_))
    ));
    assert_eq!(meter.count("calls").await.unwrap(), 1);
}
on_both!(
    bad_rows_refused,
    rows_the_schema_does_not_allow_are_refused_and_change_nothing
);

fn hold(payer: &str, coins: i64, expires_ms: i64) -> CallHold {
    CallHold {
        payer: payer.into(),
        coins,
        expires_ms,
    }
}

fn for_call(payer: &str, payee: &str, rate: i64, call_id: &str) -> SessionStart {
    SessionStart {
        call_id: Some(call_id.into()),
        ..start(payer, Some(payee), BillingTerms::new(rate))
    }
}

async fn wallet(meter: &Meter, user: &str) -> (i64, i64) {
    let w = meter.wallet(user).await.unwrap();
    (w.balance, w.held)
}

async fn a_paid_calls_billed_seconds_and_coins_are_the_sums_of_its_sessions(db: TestDb) {
    let meter = db.open().await;
    meter.credit("alice", 100, "pay-1").await.unwrap();
    let mut call = ringing("CA_p", "alice", &["host"], T0);
    meter
        .open_call(&call, Some(&hold("alice", 2, T0 + 600_000)), &[])
        .await
        .unwrap();
    assert_eq!(wallet(&meter, "alice").await, (100, 2), "the call holds 2");
    let first = meter
        .start_session(for_call("alice", "host", 2, "CA_p"))
        .await
        .unwrap();
    // The session's first block (60 s at 2/min) replaced the call's hold.
    assert_eq!(wallet(&meter, "alice").await, (100, 2));
    assert_eq!(meter.count("call_holds").await.unwrap(), 0);
    ring(&mut call, "host", "accepted");
    call.state = "accepted".into();
    call.answered_ms = Some(T0);
    meter.log_call(&call, &[]).await.unwrap();
    let open = meter.call("CA_p").await.unwrap().unwrap();
    assert_eq!(
        open.session_id.as_deref(),
        Some(first.id()),
        "the meter names the call's first session"
    );
    assert_eq!(open.coins, None, "no coins until a session ends");
    sleep(Duration::from_secs(10)).await;
    let a = first.end(EndReason::PayeeLeft).await.unwrap();
    // The host came back: a second session of the same call.
    let second = meter
        .start_session(for_call("alice", "host", 2, "CA_p"))
        .await
        .unwrap();
    sleep(Duration::from_secs(70)).await;
    let b = second.end(EndReason::Hangup).await.unwrap();
    ended(&mut call, "completed", "hung_up", b.ended_ms, Some("alice"));
    meter.log_call(&call, &[]).await.unwrap();
    let read = meter.call("CA_p").await.unwrap().unwrap();
    assert_eq!(read.session_id.as_deref(), Some(a.id.as_str()));
    assert_eq!((a.billed_seconds, a.coins), (60, 2));
    assert_eq!((b.billed_seconds, b.coins), (120, 4));
    assert_eq!(read.billed_seconds, Some(180));
    assert_eq!(read.coins, Some(6));
    assert_eq!(wallet(&meter, "alice").await, (94, 0));
    assert_clean(&meter).await;
}
on_both!(
    paid_call_coins,
    a_paid_calls_billed_seconds_and_coins_are_the_sums_of_its_sessions
);

async fn a_payer_who_cannot_afford_the_first_increment_gets_no_call_and_no_hold(db: TestDb) {
    let meter = db.open().await;
    meter.credit("alice", 14, "pay-1").await.unwrap();
    let call = ringing("CA_poor", "alice", &["host"], T0);
    let refused = meter
        .open_call(&call, Some(&hold("alice", 15, T0 + 600_000)), &[])
        .await;
    assert!(
        matches!(refused, Err(MeterError::InsufficientBalance(_))),
        "{refused:?}"
    );
    let nobody = meter
        .open_call(&call, Some(&hold("nobody", 1, T0 + 600_000)), &[])
        .await;
    assert!(
        matches!(nobody, Err(MeterError::InsufficientBalance(_))),
        "{nobody:?}"
    );
    assert_eq!(meter.count("calls").await.unwrap(), 0);
    assert_eq!(meter.count("call_holds").await.unwrap(), 0);
    assert_eq!(wallet(&meter, "alice").await, (14, 0));
    // Exactly enough is enough.
    meter
        .open_call(&call, Some(&hold("alice", 14, T0 + 600_000)), &[])
        .await
        .unwrap();
    assert_eq!(wallet(&meter, "alice").await, (14, 14));
    assert_clean(&meter).await;
}
on_both!(
    call_hold_refused,
    a_payer_who_cannot_afford_the_first_increment_gets_no_call_and_no_hold
);

async fn a_call_that_ends_unanswered_releases_its_hold_and_costs_nothing(db: TestDb) {
    let meter = db.open().await;
    meter.credit("alice", 50, "pay-1").await.unwrap();
    let mut call = ringing("CA_miss", "alice", &["host"], T0);
    meter
        .open_call(&call, Some(&hold("alice", 15, T0 + 600_000)), &[])
        .await
        .unwrap();
    assert_eq!(wallet(&meter, "alice").await, (50, 15));
    ring(&mut call, "host", "missed");
    ended(&mut call, "missed", "no_answer", T0 + 45_000, None);
    meter.log_call(&call, &[]).await.unwrap();
    assert_eq!(wallet(&meter, "alice").await, (50, 0));
    assert_eq!(meter.count("call_holds").await.unwrap(), 0);
    let read = meter.call("CA_miss").await.unwrap().unwrap();
    assert_eq!((read.billed_seconds, read.coins), (None, None));
    assert_clean(&meter).await;
}
on_both!(
    call_hold_released,
    a_call_that_ends_unanswered_releases_its_hold_and_costs_nothing
);

async fn holds_of_calls_a_dead_node_left_are_released_by_expiry_or_restart(db: TestDb) {
    let meter = db.open().await;
    meter.credit("alice", 50, "pay-1").await.unwrap();
    let now = meter.now_ms();
    meter
        .open_call(
            &ringing("CA_exp", "alice", &["host"], now),
            Some(&hold("alice", 10, now + 30_000)),
            &[],
        )
        .await
        .unwrap();
    meter
        .open_call(
            &ringing("CA_live", "alice", &["host"], now),
            Some(&hold("alice", 5, now + 600_000)),
            &[],
        )
        .await
        .unwrap();
    meter.recover_now().await.unwrap();
    assert_eq!(wallet(&meter, "alice").await, (50, 15), "none expired yet");
    sleep(Duration::from_secs(31)).await;
    meter.recover_now().await.unwrap();
    assert_eq!(wallet(&meter, "alice").await, (50, 5), "CA_exp's expired");
    assert_eq!(meter.fail_unended_calls().await.unwrap(), 2);
    assert_eq!(
        wallet(&meter, "alice").await,
        (50, 0),
        "a restart frees CA_live's"
    );
    assert_clean(&meter).await;
}
on_both!(
    call_hold_recovered,
    holds_of_calls_a_dead_node_left_are_released_by_expiry_or_restart
);

async fn call_webhooks_are_queued_with_the_change_they_report(db: TestDb) {
    let meter = db
        .open_with(MeterConfig {
            webhooks: Some(WebhookConfig::new(
                "http://127.0.0.1:9/none",
                "0123456789abcdef",
            )),
            ..db.config()
        })
        .await;
    let mut call = ringing("CA_hook", "alice", &["host"], T0);
    let started = CallWebhook {
        event_type: "call.started",
        data: serde_json::json!({"call": "CA_hook"}),
    };
    meter.open_call(&call, None, &[started]).await.unwrap();
    ended(&mut call, "cancelled", "cancelled", T0 + 1, Some("alice"));
    let ended_hook = CallWebhook {
        event_type: "call.ended",
        data: serde_json::json!({"call": "CA_hook"}),
    };
    meter.log_call(&call, &[ended_hook]).await.unwrap();
    assert_eq!(meter.count("outbox").await.unwrap(), 2);
}
on_both!(
    call_webhooks,
    call_webhooks_are_queued_with_the_change_they_report
);
