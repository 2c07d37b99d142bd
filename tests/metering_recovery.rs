//! `kill -9` during paid calls, then a restart on the same ledger: every
//! session is closed, no hold is left, nobody is charged for time after the
//! crash, the operator loses at most one checkpoint interval per call, and
//! the books still balance.

mod common;

use std::time::{Duration, Instant};

use callgate_signaling::token::BillingClaims;
use common::tempdir::TempDir;
use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{Value, json};

const CHECKPOINT: Duration = Duration::from_secs(1);
const CALLS: [(&str, &str); 3] = [("alice", "bob"), ("carol", "dave"), ("erin", "frank")];
const START_COINS: i64 = 1000;

async fn api(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, server.api(path))
        .bearer_auth(admin_token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_call_then_restart_settles_every_session_once() {
    let data = TempDir::new();
    let config = data.0.join("callgate.toml");
    std::fs::write(
        &config,
        format!(
            "[metering]\ncheckpoint_interval = \"{}ms\"\n",
            CHECKPOINT.as_millis()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let mut server = TestServer::start_in(&data.0, &args);

    let mut clients = Vec::new();
    for (i, (payer, payee)) in CALLS.iter().enumerate() {
        api(
            &server,
            reqwest::Method::POST,
            &format!("/v1/wallets/{payer}/credits"),
            Some(json!({"coins": START_COINS, "reference": format!("pay_{i}")})),
        )
        .await;
        let room = unique_room();
        let mut terms = claims(&room, payer);
        terms.billing = Some(BillingClaims {
            payer: Some((*payer).into()),
            payee: Some((*payee).into()),
            rate: Some(60),
            increments: Some("1/1".into()),
            ..BillingClaims::default()
        });
        for token in [sign(&terms), token(&room, payee)] {
            let client = Client::join(&server, &token).await;
            let mut track = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
            client.publish(&[&track]).await;
            track.send(bytes::Bytes::from_static(b"hello")).await;
            clients.push((client, track));
        }
    }
    // Every call is billed once its payer hears `balance`.
    let mut answered = Vec::new();
    for (client, _) in clients.iter_mut().step_by(2) {
        client.event("balance").await;
        answered.push(Instant::now());
    }
    tokio::time::sleep(CHECKPOINT * 3 + Duration::from_millis(500)).await;
    server.kill9();
    let killed = Instant::now();
    drop(clients);

    let server = TestServer::start_in(&data.0, &args);
    let mut total = 0i64;
    for ((payer, payee), answered) in CALLS.iter().zip(&answered) {
        let wallet = api(
            &server,
            reqwest::Method::GET,
            &format!("/v1/wallets/{payer}"),
            None,
        )
        .await;
        assert_eq!(
            wallet["held"], 0,
            "{payer}: a hold survived recovery: {wallet}"
        );
        let charged = START_COINS - wallet["balance"].as_i64().unwrap();
        let ran = (killed - *answered).as_secs_f64();
        // Never charged for time after the crash…
        assert!(
            charged as f64 <= ran.ceil() + 1.0,
            "{payer} charged {charged} for {ran:.1}s"
        );
        // …and the operator loses at most one checkpoint interval (plus the
        // one-second increment in flight).
        let floor = ran - CHECKPOINT.as_secs_f64() - 1.0;
        assert!(
            charged as f64 >= floor.floor(),
            "{payer} charged {charged} for {ran:.1}s"
        );
        let earned = api(
            &server,
            reqwest::Method::GET,
            &format!("/v1/accounts/earnings:{payee}"),
            None,
        )
        .await["balance"]
            .as_i64()
            .unwrap();
        assert!(earned <= charged);
        total += charged;
    }
    let platform =
        api(&server, reqwest::Method::GET, "/v1/accounts/platform", None).await["balance"]
            .as_i64()
            .unwrap();
    let earnings: i64 = {
        let mut sum = 0;
        for (_, payee) in CALLS {
            sum += api(
                &server,
                reqwest::Method::GET,
                &format!("/v1/accounts/earnings:{payee}"),
                None,
            )
            .await["balance"]
                .as_i64()
                .unwrap();
        }
        sum
    };
    assert_eq!(
        earnings + platform,
        total,
        "every coin charged went to a payee or the platform"
    );

    // Every session is closed, once; the ledger export balances.
    let sessions = api_text(&server, "/v1/exports/sessions?format=jsonl").await;
    let rows: Vec<Value> = sessions
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), CALLS.len(), "{sessions}");
    let coins: i64 = rows.iter().map(|r| r["coins"].as_i64().unwrap()).sum();
    assert_eq!(coins, total);
    for r in &rows {
        assert!(!r["ended_at"].is_null(), "open session after recovery: {r}");
    }
}
