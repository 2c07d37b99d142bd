//! Webhooks to a receiver on 127.0.0.1: signed, at least once, retried with
//! exponential backoff, surviving a restart; and what the Razorpay intake
//! reports (`wallet.credited`, `wallet.refunded`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use callgate_metering::{BillingTerms, EndReason, MeterConfig, WebhookConfig, verify_signature};
use common::razorpay::{hook, order_paid, razorpay_config, refund};
use common::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::sleep;

const SECRET: &str = "whsec_test_0123456789";

#[derive(Debug)]
struct Delivery {
    at_ms: i64,
    signature: String,
    event_id: String,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    /// Status codes to answer, in order; 200 once used up.
    answers: Arc<Mutex<Vec<u16>>>,
    tx: mpsc::UnboundedSender<Delivery>,
    clock: callgate_metering::Clock,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = {
        let mut answers = r.answers.lock().unwrap();
        if answers.is_empty() {
            200
        } else {
            answers.remove(0)
        }
    };
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let _ = r.tx.send(Delivery {
        at_ms: r.clock.now_ms() - T0,
        signature: h("callgate-signature"),
        event_id: h("callgate-event-id"),
        body,
    });
    StatusCode::from_u16(status).unwrap()
}

/// A receiver on 127.0.0.1 (loopback only).
async fn receiver(db: &TestDb, answers: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Receiver {
        answers: Arc::new(Mutex::new(answers)),
        tx,
        clock: db.clock,
    };
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hooks"), rx)
}

fn config(db: &TestDb, url: &str) -> MeterConfig {
    let mut c = db.config();
    let mut w = WebhookConfig::new(url, SECRET);
    w.initial_backoff = Duration::from_secs(1);
    w.max_backoff = Duration::from_secs(4);
    c.webhooks = Some(w);
    c
}

fn check(d: &Delivery, db: &TestDb) -> Value {
    verify_signature(SECRET, &d.signature, &d.body, db.clock.now_ms() / 1000, 300).expect("signed");
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(v["id"], d.event_id.as_str());
    v
}

async fn events_are_signed_and_complete(db: TestDb) {
    let (url, mut rx) = receiver(&db, vec![]).await;
    let meter = db.open_with(config(&db, &url)).await;
    meter.credit("payer", 5, "pay-1").await.unwrap();
    let credited = check(&rx.recv().await.unwrap(), &db);
    assert_eq!(credited["type"], "wallet.credited");
    assert_eq!(credited["data"]["user"], "payer");
    assert_eq!(credited["data"]["coins"], 5);
    assert_eq!(credited["data"]["reference"], "pay-1");
    let s = meter
        .start_session(start(
            "payer",
            Some("host"),
            BillingTerms::new(60).with_commission_bps(2000),
        ))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(check(&rx.recv().await.unwrap(), &db));
    }
    let by_type = |t: &str| got.iter().find(|v| v["type"] == t).cloned().unwrap();
    let started = by_type("session.started");
    assert_eq!(started["data"]["session"], s.id());
    assert_eq!(started["data"]["seconds_left"], 5);
    let low = by_type("wallet.low_balance");
    assert_eq!(low["data"]["user"], "payer");
    assert_eq!(low["data"]["seconds_left"], 5);
    let ended = by_type("session.ended");
    assert_eq!(ended["data"]["end_reason"], "insufficient_balance");
    assert_eq!(ended["data"]["billed_seconds"], 5);
    assert_eq!(ended["data"]["coins"], 5);
    assert_eq!(ended["data"]["payee_coins"], 4);
    assert_eq!(ended["data"]["platform_coins"], 1);
    s.end(EndReason::Hangup).await.unwrap();
    let ids: std::collections::HashSet<_> = got
        .iter()
        .chain([&credited])
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "unique event ids");
    assert_clean(&meter).await;
}
on_both!(signed_events, events_are_signed_and_complete);

async fn failures_are_retried_with_backoff(db: TestDb) {
    let (url, mut rx) = receiver(&db, vec![500, 503, 500, 500]).await;
    let meter = db.open_with(config(&db, &url)).await;
    let registry = prometheus::Registry::new();
    meter.register_metrics(&registry).unwrap();
    meter.credit("payer", 5, "pay-1").await.unwrap();
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let d = rx.recv().await.unwrap();
        check(&d, &db);
        times.push(d.at_ms);
        ids.push(d.event_id);
    }
    // 1 s, 2 s, 4 s, then the 4 s cap.
    assert_eq!(times, [0, 1_000, 3_000, 7_000, 11_000]);
    assert!(ids.iter().all(|i| *i == ids[0]), "the same event each time");
    sleep(Duration::from_secs(60)).await;
    assert!(rx.try_recv().is_err(), "delivered once it got a 200");
    assert_eq!(meter.count("outbox").await.unwrap(), 1);
    let deliveries = |result| {
        metric(
            &registry,
            "callgate_webhook_deliveries_total",
            Some(("result", result)),
        )
    };
    assert_eq!(
        (
            deliveries("failed"),
            deliveries("delivered"),
            deliveries("dead")
        ),
        (4.0, 1.0, 0.0)
    );
    assert_eq!(
        metric(&registry, "callgate_webhook_outbox_pending", None),
        0.0
    );
}
on_both!(backoff, failures_are_retried_with_backoff);

async fn undelivered_events_survive_a_restart(db: TestDb) {
    // Nobody listens here: every attempt fails.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hooks", l.local_addr().unwrap())
    };
    let meter = db.open_with(config(&db, &closed)).await;
    meter.credit("payer", 5, "pay-1").await.unwrap();
    meter.credit("payer", 6, "pay-2").await.unwrap();
    sleep(Duration::from_secs(3)).await;
    meter.shutdown().await;
    let (url, mut rx) = receiver(&db, vec![]).await;
    let meter = db.open_with(config(&db, &url)).await;
    let mut refs = Vec::new();
    for _ in 0..2 {
        let v = check(&rx.recv().await.unwrap(), &db);
        refs.push(v["data"]["reference"].as_str().unwrap().to_owned());
    }
    refs.sort();
    assert_eq!(refs, ["pay-1", "pay-2"]);
    meter.shutdown().await;
}
on_both!(restart, undelivered_events_survive_a_restart);

async fn razorpay_credits_and_refunds_are_reported(db: TestDb) {
    let (url, mut rx) = receiver(&db, vec![]).await;
    let mut c = config(&db, &url);
    c.razorpay = razorpay_config(&db).razorpay;
    let meter = db.open_with(c).await;
    hook(
        &meter,
        &order_paid("pay_1", 49_900, "INR", json!({"user": "u1"})),
    )
    .await;
    let credited = check(&rx.recv().await.unwrap(), &db);
    assert_eq!(credited["type"], "wallet.credited");
    assert_eq!(
        credited["data"],
        json!({"user": "u1", "coins": 500, "reference": "razorpay:pay_1",
               "posting_id": credited["data"]["posting_id"], "debt_repaid": 0,
               "balance": 500, "held": 0, "available": 500})
    );
    let call = meter
        .start_session(start("u1", None, BillingTerms::new(60)))
        .await
        .unwrap();
    // session.started
    check(&rx.recv().await.unwrap(), &db);
    hook(
        &meter,
        &refund("refund.created", "rfnd_1", "pay_1", 49_900, 49_900, "INR"),
    )
    .await;
    let refunded = check(&rx.recv().await.unwrap(), &db);
    assert_eq!(refunded["type"], "wallet.refunded");
    let posting_id = refunded["data"]["posting_id"].as_i64().expect("a posting");
    assert_eq!(
        refunded["data"],
        json!({"user": "u1", "refund_id": "rfnd_1", "payment_id": "pay_1", "coins": 500,
               "taken": 440, "debt": 60, "posting_id": posting_id, "balance": 60, "held": 60,
               "available": 0, "wallet_debt": 60})
    );
    call.end(EndReason::Hangup).await.unwrap();
    assert_clean(&meter).await;
}
on_both!(razorpay, razorpay_credits_and_refunds_are_reported);
