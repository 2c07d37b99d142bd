//! Money helpers the paid-call tests share: tokens with billing terms, the
//! wallet API, and participants with media.

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{Value, json};

use super::*;
use callgate_signaling::token::BillingClaims;

pub fn paid_token(
    room: &str,
    identity: &str,
    payer: &str,
    payee: Option<&str>,
    rate: i64,
) -> String {
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

pub async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    api_send(server, reqwest::Method::POST, path, body).await
}

pub async fn credit(server: &TestServer, user: &str, coins: i64, reference: &str) {
    let (status, body) = post(
        server,
        &format!("/v1/wallets/{user}/credits"),
        json!({"coins": coins, "reference": reference}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

pub async fn balance(server: &TestServer, account: &str) -> i64 {
    api_json(server, &format!("/v1/accounts/{account}")).await["balance"]
        .as_i64()
        .unwrap()
}

/// Joins and publishes one audio track, so the participant's media connects.
pub async fn join_with_media(server: &TestServer, token: &str) -> (Client, LocalTrack) {
    let client = Client::join(server, token).await;
    let mut track = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    client.publish(&[&track]).await;
    // A first packet opens the producer; media is connected by then.
    track.send(bytes::Bytes::from_static(b"hello")).await;
    (client, track)
}

/// The rows of a JSON-lines export (`/v1/exports/<kind>?format=jsonl`).
pub async fn export_rows(server: &TestServer, kind: &str) -> Vec<Value> {
    api_text(server, &format!("/v1/exports/{kind}?format=jsonl"))
        .await
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

/// The ended sessions, once there are at least `n` (settling follows a
/// leave asynchronously and nothing signals it, so this polls).
pub async fn ended_sessions(server: &TestServer, n: usize) -> Vec<Value> {
    let wait = async {
        loop {
            let rows = export_rows(server, "sessions").await;
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} sessions ended"))
}

/// A track sending marked payloads every 10 ms until the returned task is
/// aborted: a publisher that keeps talking whatever the server does.
pub fn keep_sending(mut track: LocalTrack) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        let mut i = 0;
        loop {
            tick.tick().await;
            track.send(marked_payload(i, 100)).await;
            i += 1;
        }
    })
}
