//! Paid calls through the real server, real WebRTC clients and a real
//! SQLite ledger: the cut at zero, in-call recharge, one payer in two calls,
//! and recovery after `kill -9`. These run in real time (seconds), since
//! the server is a separate process.

mod common;

use std::time::{Duration, Instant};

use callgate_signaling::token::BillingClaims;
use common::money::*;
use common::*;
use serde_json::{Value, json};

/// Waits for `left` with `reason` and returns when it came.
async fn left_at(client: &mut Client, reason: &str) -> Instant {
    let m = client.event("left").await;
    assert_eq!(m["reason"], reason, "{m}");
    Instant::now()
}

/// A 1:1 call in `room` that alice pays bob for at 60 coins a minute, per
/// second, after crediting her `coins`; both with media.
async fn paid_call(server: &TestServer, room: &str, coins: i64) -> (Caller, Caller) {
    credit(server, "alice", coins, "pay_1").await;
    let alice = join_with_media(server, &paid_token(room, "alice", "alice", Some("bob"), 60)).await;
    let bob = join_with_media(server, &token(room, "bob")).await;
    (Caller(alice.0, alice.1), Caller(bob.0, bob.1))
}

/// A participant and the track that keeps its media connected.
struct Caller(Client, #[allow(dead_code)] LocalTrack);

impl std::ops::Deref for Caller {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

impl std::ops::DerefMut for Caller {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_with_five_coins_at_sixty_a_minute_is_cut_after_five_seconds() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut alice, mut bob) = paid_call(&server, &room, 5).await;
    let first = alice.event("balance").await;
    let answered = Instant::now();
    assert_eq!(first["seconds_left"], 5, "{first}");
    let warning = alice.event("balance_warning").await;
    assert!(warning["seconds_left"].as_u64().unwrap() <= 10);

    let cut = left_at(&mut alice, "insufficient_balance").await;
    let after = cut - answered;
    assert!(
        after >= Duration::from_secs(4) && after <= Duration::from_secs(6),
        "cut after {after:?}"
    );
    // A 1:1 call: the payee is disconnected too.
    left_at(&mut bob, "insufficient_balance").await;

    let wallet = api_json(&server, "/v1/wallets/alice").await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["held"].as_i64()),
        (Some(0), Some(0)),
        "{wallet}"
    );
    let earned = balance(&server, "earnings:bob").await;
    let platform = balance(&server, "platform").await;
    assert_eq!(earned + platform, 5);
    assert_eq!(platform, 1, "20% of 5 coins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_during_the_call_extends_it_at_once() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut alice, _bob) = paid_call(&server, &room, 5).await;
    assert_eq!(alice.event("balance").await["seconds_left"], 5);
    let answered = Instant::now();

    tokio::time::sleep_until((answered + Duration::from_secs(3)).into()).await;
    credit(&server, "alice", 5, "pay_2").await;
    let extended = alice.event("balance").await;
    let seconds = extended["seconds_left"].as_u64().unwrap();
    assert!((6..=8).contains(&seconds), "after the credit: {extended}");

    let cut = left_at(&mut alice, "insufficient_balance").await;
    let after = cut - answered;
    assert!(
        after >= Duration::from_secs(9) && after <= Duration::from_secs(11),
        "cut after {after:?}"
    );
    let wallet = api_json(&server, "/v1/wallets/alice").await;
    assert_eq!(wallet["balance"], 0);
    assert_eq!(
        balance(&server, "earnings:bob").await + balance(&server, "platform").await,
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_of_the_same_payer_shortens_the_first() {
    let server = TestServer::start(&[]);
    let (room_a, room_b) = (unique_room(), unique_room());
    credit(&server, "alice", 10, "pay_1").await;
    let (mut alice_a, _t1) = join_with_media(
        &server,
        &paid_token(&room_a, "alice", "alice", Some("bob"), 60),
    )
    .await;
    let (_bob, _t2) = join_with_media(&server, &token(&room_a, "bob")).await;
    assert_eq!(alice_a.event("balance").await["seconds_left"], 10);
    let first_answered = Instant::now();

    tokio::time::sleep_until((first_answered + Duration::from_secs(2)).into()).await;
    // The same payer, from another device, in another paid call.
    let mut second = claims(&room_b, "alice");
    second.billing = Some(BillingClaims {
        payer: Some("alice".into()),
        payee: Some("carol".into()),
        rate: Some(60),
        increments: Some("1/1".into()),
        ..BillingClaims::default()
    });
    let (mut alice_b, _t3) = join_with_media(&server, &sign(&second)).await;
    let (_carol, _t4) = join_with_media(&server, &token(&room_b, "carol")).await;
    // About 8 coins left for two calls at 60/min each: the first keeps its
    // share (half, rounded up to whole coins and seconds) of what it held
    // beyond the time used, the second holds the rest: about 4 s each.
    let shortened = alice_a.event("balance").await;
    let s = shortened["seconds_left"].as_u64().unwrap();
    assert!(
        (3..=6).contains(&s),
        "first call after the second started: {shortened}"
    );
    let b = alice_b.event("balance").await["seconds_left"]
        .as_u64()
        .unwrap();
    assert!((2..=5).contains(&b), "second call: {b}");

    let cut = left_at(&mut alice_a, "insufficient_balance").await;
    let after = cut - first_answered;
    assert!(
        after >= Duration::from_secs(5) && after < Duration::from_secs(9),
        "first call cut after {after:?}, not at the 10 s it had alone"
    );
    left_at(&mut alice_b, "insufficient_balance").await;
    assert_eq!(api_json(&server, "/v1/wallets/alice").await["balance"], 0);
}

#[tokio::test]
async fn bad_money_requests_change_nothing() {
    let server = TestServer::start(&[]);
    credit(&server, "dave", 50, "pay_ok").await;
    for (body, status, code) in [
        (
            json!({"coins": 0, "reference": "r0"}),
            400,
            "invalid_amount",
        ),
        (
            json!({"coins": -5, "reference": "r1"}),
            400,
            "invalid_amount",
        ),
        (json!({"coins": "ten", "reference": "r2"}), 400, "malformed"),
        (json!({"coins": 5}), 400, "malformed"),
        (json!({"coins": 7, "reference": "pay_ok"}), 409, "conflict"),
    ] {
        let (got, reply) = post(&server, "/v1/wallets/dave/credits", body.clone()).await;
        assert_eq!(
            (got, reply["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    // The same payment again adds nothing.
    credit(&server, "dave", 50, "pay_ok").await;
    assert_eq!(api_json(&server, "/v1/wallets/dave").await["balance"], 50);

    for query in [
        "from=yesterday",
        "from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
        "format=xml",
    ] {
        let resp = reqwest::Client::new()
            .get(server.api(&format!("/v1/exports/ledger?{query}")))
            .bearer_auth(admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{query}");
    }
    let resp = reqwest::Client::new()
        .get(server.api("/v1/exports/payroll"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Billing terms with no payer are refused at join, before the room.
    let mut no_payer = claims(&unique_room(), "erin");
    no_payer.billing = Some(BillingClaims {
        rate: Some(10),
        ..BillingClaims::default()
    });
    let mut s = Signal::connect(&server).await;
    s.send(json!({"type": "join", "token": sign(&no_payer)}))
        .await;
    assert_eq!(s.recv().await.unwrap()["code"], "billing_invalid");
    assert_eq!(
        s.recv().await.unwrap_err(),
        Closed {
            code: 4007,
            reason: "billing_invalid".into()
        }
    );
    assert_eq!(api_json(&server, "/v1/wallets/dave").await["balance"], 50);
}

/// Razorpay's `order.paid` (payment and order entities) for an order the
/// backend made for `user` and `coins`, paid in full; the payment's notes
/// are the client's.
fn order_paid(
    payment: &str,
    user: &str,
    amount: i64,
    coins: Option<i64>,
    client_notes: Value,
) -> String {
    let mut order_notes = json!({"user": user});
    if let Some(coins) = coins {
        order_notes["coins"] = json!(coins.to_string());
    }
    json!({
        "entity": "event",
        "event": "order.paid",
        "contains": ["payment", "order"],
        "payload": {
            "payment": {"entity": {
                "id": payment, "entity": "payment", "amount": amount, "currency": "INR",
                "status": "captured", "order_id": format!("order_{payment}"), "captured": true,
                "notes": client_notes
            }},
            "order": {"entity": {
                "id": format!("order_{payment}"), "entity": "order", "amount": amount,
                "amount_paid": amount, "amount_due": 0, "currency": "INR", "status": "paid",
                "notes": order_notes
            }}
        }
    })
    .to_string()
}

fn razorpay_signature(secret: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, body.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_usage_and_exports_through_the_server() {
    let data = common::tempdir::TempDir::new();
    let config = data.0.join("callgate.toml");
    std::fs::write(
        &config,
        "[metering.razorpay]\nwebhook_secret = \"rzp_test_secret\"\n",
    )
    .unwrap();
    let server = TestServer::start_in(&data.0, &["--config", config.to_str().unwrap()]);

    // Razorpay's order.paid credits the wallet once, whatever the retries.
    let hook = |body: String, signature: String| {
        let url = server.api("/v1/hooks/razorpay");
        async move {
            reqwest::Client::new()
                .post(url)
                .header("X-Razorpay-Signature", signature)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let body = order_paid("pay_R1", "alice", 12_000, Some(120), json!([]));
    let good = razorpay_signature("rzp_test_secret", &body);
    assert_eq!(hook(body.clone(), good.clone()).await, 200);
    assert_eq!(
        hook(body.clone(), good).await,
        200,
        "a redelivery is acknowledged"
    );
    assert_eq!(api_json(&server, "/v1/wallets/alice").await["balance"], 120);
    let forged = razorpay_signature("not_the_secret", &body);
    assert_eq!(hook(body.clone(), forged).await, 401);
    let tampered = body.replace("\"120\"", "\"999\"");
    assert_ne!(tampered, body);
    assert_eq!(hook(tampered, razorpay_signature("x", "y")).await, 401);
    assert_eq!(api_json(&server, "/v1/wallets/alice").await["balance"], 120);

    // A short paid call; everyone's minutes go to `usage`.
    let room = unique_room();
    let (mut alice, _a) = join_with_media(
        &server,
        &paid_token(&room, "alice", "alice", Some("bob"), 60),
    )
    .await;
    let (mut bob, _b) = join_with_media(&server, &token(&room, "bob")).await;
    assert_eq!(alice.event("balance").await["seconds_left"], 120);
    alice.send(json!({"type": "leave"}));
    left_at(&mut alice, "left").await;
    bob.send(json!({"type": "leave"}));
    left_at(&mut bob, "left").await;

    // The session is settled and exported; its coins reconcile with the ledger.
    let sessions = ended_sessions(&server, 1).await;
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        (s["payer"].as_str(), s["payee"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(s["end_reason"], "payer_left");
    let coins = s["coins"].as_i64().unwrap();
    assert_eq!(
        api_json(&server, "/v1/wallets/alice").await["balance"],
        120 - coins
    );
    let charged: i64 = export_rows(&server, "ledger")
        .await
        .iter()
        .filter(|p| p["debit"] == "wallet:alice" && p["session_id"] == s["session_id"])
        .map(|p| p["coins"].as_i64().unwrap())
        .sum();
    assert_eq!(charged, coins, "sessions reconcile with the ledger");

    let usage = api_text(&server, "/v1/exports/usage?format=csv").await;
    let mut readers = usage.lines();
    let header = readers.next().unwrap();
    assert!(header.contains("identity"), "{header}");
    let who: Vec<&str> = usage.lines().skip(1).collect();
    assert!(who.iter().any(|l| l.contains(",alice,")), "{usage}");
    assert!(who.iter().any(|l| l.contains(",bob,")), "{usage}");

    // The command line reads the same ledger, read-only, while the server runs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["export", "sessions", "--format", "csv", "--data-dir"])
        .arg(&data.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .contains(s["session_id"].as_str().unwrap())
    );
}

/// POSTs a body to the Razorpay hook; the answer's status and JSON.
async fn razorpay_hook(server: &TestServer, body: &str, signature: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.api("/v1/hooks/razorpay"))
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("X-Razorpay-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn razorpay_answers_refusals_with_200_and_counts_them() {
    let data = common::tempdir::TempDir::new();
    let config = data.0.join("callgate.toml");
    std::fs::write(
        &config,
        "[metering.razorpay]\nwebhook_secret = \"rzp_test_secret\"\n\
         prices = [{ amount = 49900, currency = \"INR\", coins = 500 }]\n",
    )
    .unwrap();
    let server = TestServer::start_in(&data.0, &["--config", config.to_str().unwrap()]);
    let sign = |body: &str| razorpay_signature("rzp_test_secret", body);
    let wallet = |user: &'static str| {
        let path = format!("/v1/wallets/{user}");
        let server = &server;
        async move { api_json(server, &path).await }
    };

    // A purchase at the table's price, then its redelivery.
    let paid = order_paid("pay_H1", "carol", 49_900, None, json!([]));
    let (status, answer) = razorpay_hook(&server, &paid, Some(&sign(&paid))).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("credited")),
        "{answer}"
    );
    assert_eq!(answer["reason"], Value::Null);
    let (status, answer) = razorpay_hook(&server, &paid, Some(&sign(&paid))).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    assert_eq!(wallet("carol").await["balance"], 500);

    // 100 paise whose client notes ask for a million coins: refused with
    // 200 so Razorpay stops redelivering it; nothing credited; counted.
    let attack = order_paid(
        "pay_H2",
        "carol",
        100,
        None,
        json!({"user": "carol", "coins": "1000000"}),
    );
    for _ in 0..2 {
        let (status, answer) = razorpay_hook(&server, &attack, Some(&sign(&attack))).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"status": "refused", "reason": "unknown_price", "detail":
                "refused (unknown_price): payment pay_H2: order order_pay_H2 of 100 INR has no \
                 notes.coins and no price in the table"})
        );
    }
    assert_eq!(wallet("carol").await["balance"], 500);
    let metrics = metrics_text(&server).await;
    assert_eq!(
        metric(
            &metrics,
            "callgate_razorpay_refused_total",
            "reason=\"unknown_price\""
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "callgate_razorpay_refused_total",
            "reason=\"amount_mismatch\""
        ),
        0.0
    );

    // Not from Razorpay: 401, nothing credited, not counted as a refusal.
    let (status, answer) = razorpay_hook(&server, &attack, Some(&sign("other"))).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("bad_signature"))
    );
    let (status, answer) = razorpay_hook(&server, &attack, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("bad_signature"))
    );

    // A refund of a fifth: 100 coins back, and its second report changes nothing.
    let refund = json!({
        "entity": "event", "event": "refund.created", "contains": ["refund", "payment"],
        "payload": {
            "refund": {"entity": {"id": "rfnd_H1", "entity": "refund", "amount": 9_980,
                                  "currency": "INR", "payment_id": "pay_H1", "notes": [],
                                  "status": "processed"}},
            "payment": {"entity": {"id": "pay_H1", "entity": "payment", "amount": 49_900,
                                   "currency": "INR", "status": "captured", "notes": []}}
        }
    })
    .to_string();
    let (status, answer) = razorpay_hook(&server, &refund, Some(&sign(&refund))).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("refunded")),
        "{answer}"
    );
    let again = refund.replace("refund.created", "payment.refunded");
    let (status, answer) = razorpay_hook(&server, &again, Some(&sign(&again))).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    assert_eq!(
        wallet("carol").await,
        json!({"user": "carol", "balance": 400, "held": 0, "available": 400, "debt": 0})
    );
    assert_eq!(balance(&server, "funding").await, -400);
}
