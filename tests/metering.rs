//! Paid calls through the real server, real WebRTC clients and a real
//! SQLite ledger: the cut at zero, in-call recharge, one payer in two calls,
//! and recovery after `kill -9`. These run in real time (seconds), since
//! the server is a separate process.

mod common;

use std::time::{Duration, Instant};

use callgate_signaling::token::BillingClaims;
use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{Value, json};

fn paid_token(room: &str, identity: &str, payer: &str, payee: Option<&str>, rate: i64) -> String {
    let mut c = claims(room, identity);
    c.billing = Some(BillingClaims {
        payer: Some(payer.into()),
        payee: payee.map(Into::into),
        rate: Some(rate),
        increments: Some("1/1".into()),
        commission: Some("20%".into()),
        ..BillingClaims::default()
    });
    sign(&c)
}

async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(server.api(path))
        .bearer_auth(admin_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(server: &TestServer, path: &str) -> Value {
    reqwest::Client::new()
        .get(server.api(path))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn credit(server: &TestServer, user: &str, coins: i64, reference: &str) {
    let (status, body) = post(
        server,
        &format!("/v1/wallets/{user}/credits"),
        json!({"coins": coins, "reference": reference}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn balance(server: &TestServer, account: &str) -> i64 {
    get(server, &format!("/v1/accounts/{account}")).await["balance"]
        .as_i64()
        .unwrap()
}

/// Joins and publishes one audio track, so the participant's media connects.
async fn join_with_media(server: &TestServer, token: &str) -> (Client, LocalTrack) {
    let client = Client::join(server, token).await;
    let mut track = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    client.publish(&[&track]).await;
    // A first packet opens the producer; media is connected by then.
    track.send(bytes::Bytes::from_static(b"hello")).await;
    (client, track)
}

/// Waits for `left` with `reason` and returns when it came.
async fn left_at(client: &mut Client, reason: &str) -> Instant {
    let m = client.event("left").await;
    assert_eq!(m["reason"], reason, "{m}");
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_with_five_coins_at_sixty_a_minute_is_cut_after_five_seconds() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    credit(&server, "alice", 5, "pay_1").await;

    let (mut alice, _a) = join_with_media(
        &server,
        &paid_token(&room, "alice", "alice", Some("bob"), 60),
    )
    .await;
    let (mut bob, _b) = join_with_media(&server, &token(&room, "bob")).await;
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

    let wallet = get(&server, "/v1/wallets/alice").await;
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
    credit(&server, "alice", 5, "pay_1").await;
    let (mut alice, _a) = join_with_media(
        &server,
        &paid_token(&room, "alice", "alice", Some("bob"), 60),
    )
    .await;
    let (_bob, _b) = join_with_media(&server, &token(&room, "bob")).await;
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
    let wallet = get(&server, "/v1/wallets/alice").await;
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
    assert_eq!(get(&server, "/v1/wallets/alice").await["balance"], 0);
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
    assert_eq!(get(&server, "/v1/wallets/dave").await["balance"], 50);

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
    assert_eq!(get(&server, "/v1/wallets/dave").await["balance"], 50);
}
