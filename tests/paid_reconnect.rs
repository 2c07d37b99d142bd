//! Fair billing through a reconnect (docs/metering.md, "Reconnecting"):
//! the billed clock stops while the payer is reconnecting, and a payer who
//! does not come back within the grace is charged up to the moment its
//! media stopped. Real server, real WebRTC clients, real SQLite ledger; the
//! payer's media goes through a NAT of the test's that can go silent.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::money::*;
use common::nat::Nat;
use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{Value, json};

const COINS: i64 = 1_000;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Alice pays Bob 60 coins a minute, per second (one coin a second), from
/// behind `nat`; both talk; returns once billing has started and media
/// flows both ways.
async fn paid_call(
    server: &TestServer,
    nat: std::sync::Arc<Nat>,
) -> (Client, Client, Vec<tokio::task::JoinHandle<()>>) {
    let room = unique_room();
    credit(server, "alice", COINS, "pay_1").await;
    let mut alice = Client::join_behind(
        server,
        &paid_token(&room, "alice", "alice", Some("bob"), 60),
        nat,
    )
    .await;
    let mut track = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&track]).await;
    track.send(bytes::Bytes::from_static(b"hello")).await;
    let alice_talks = keep_sending(track);
    let (bob, bob_track) = join_with_media(server, &token(&room, "bob")).await;
    let bob_talks = keep_sending(bob_track);
    alice.event("balance").await;
    bob.received
        .wait_for("alice's media at bob", |m| {
            m.keys().any(|(s, _)| s == &alice.sid)
        })
        .await;
    (alice, bob, vec![alice_talks, bob_talks])
}

fn ms(rfc3339: &Value) -> i64 {
    humantime::parse_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The ledger moved exactly `billed` coins from alice's wallet to bob's
/// earnings and the platform, holds nothing any more, and still sums to
/// zero; the postings add up to the balances.
async fn charged_exactly(server: &TestServer, billed: i64) {
    assert_eq!(balance(server, "wallet:alice").await, COINS - billed);
    let (earned, platform) = (
        balance(server, "earnings:bob").await,
        balance(server, "platform").await,
    );
    assert_eq!(earned + platform, billed);
    assert_eq!(balance(server, "funding").await, -COINS);
    let wallet = api_json(server, "/v1/wallets/alice").await;
    assert_eq!(wallet["held"], 0, "{wallet}");
    let ledger = export_rows(server, "ledger").await;
    let moved = |account: &str| -> i64 {
        ledger
            .iter()
            .map(|p| {
                let coins = p["coins"].as_i64().unwrap();
                (p["credit"] == account) as i64 * coins - (p["debit"] == account) as i64 * coins
            })
            .sum()
    };
    assert_eq!(moved("wallet:alice"), COINS - billed, "{ledger:?}");
    assert_eq!(moved("earnings:bob"), earned);
    assert_eq!(moved("platform"), platform);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_silent_for_8s_is_not_charged_for_the_silence() {
    let server = TestServer::start(&[]);
    let nat = Nat::start(ip(1), ip(2)).await;
    let (mut alice, mut bob, talking) = paid_call(&server, nat.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Everything alice sends is lost for 8 s (a tunnel), then flows again.
    nat.drop_if(|_| true);
    let silent_from = Instant::now();
    assert_eq!(
        bob.event("participant_reconnecting").await["identity"],
        "alice"
    );
    tokio::time::sleep_until((silent_from + Duration::from_secs(8)).into()).await;
    nat.drop_if(|_| false);
    let silence = silent_from.elapsed();
    assert_eq!(bob.event("participant_resumed").await["identity"], "alice");
    tokio::time::sleep(Duration::from_secs(2)).await;

    alice.send(json!({"type": "leave"}));
    assert_eq!(alice.event("left").await["reason"], "left");
    for t in talking {
        t.abort();
    }
    let session = ended_sessions(&server, 1).await.remove(0);
    assert_eq!(session["end_reason"], "payer_left", "{session}");
    let wall = ms(&session["ended_at"]) - ms(&session["started_at"]);
    let expected = wall - silence.as_millis() as i64;
    let duration = session["duration_ms"].as_i64().unwrap();
    assert!(
        (duration - expected).abs() <= 1_000,
        "billed {duration} ms of a {wall} ms call with {silence:?} of silence"
    );
    let billed = session["billed_seconds"].as_i64().unwrap();
    assert_eq!(billed, (duration + 999) / 1000, "{session}");
    charged_exactly(&server, billed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_silent_past_the_grace_ends_connection_lost_charged_up_to_the_silence() {
    let server = TestServer::start_with_env(&[("CALLGATE_ROOM_RECONNECT_GRACE", "2s")], &[]);
    let nat = Nat::start(ip(1), ip(2)).await;
    let (_alice, mut bob, talking) = paid_call(&server, nat.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    nat.drop_if(|_| true);
    let silent_from_ms = callgate_signaling::token::unix_now_ms();
    assert_eq!(
        bob.event("participant_reconnecting").await["identity"],
        "alice"
    );
    let left = bob.event("participant_left").await;
    assert_eq!(
        (left["identity"].as_str(), left["reason"].as_str()),
        (Some("alice"), Some("connection_lost")),
        "{left}"
    );
    for t in talking {
        t.abort();
    }
    let session = ended_sessions(&server, 1).await.remove(0);
    assert_eq!(session["end_reason"], "connection_lost", "{session}");
    let duration = session["duration_ms"].as_i64().unwrap();
    let expected = silent_from_ms - ms(&session["started_at"]);
    assert!(
        (duration - expected).abs() <= 1_000,
        "billed {duration} ms; media stopped {expected} ms into the call"
    );
    let billed = session["billed_seconds"].as_i64().unwrap();
    assert_eq!(billed, (duration + 999) / 1000, "{session}");
    charged_exactly(&server, billed).await;
}
