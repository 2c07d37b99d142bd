//! Staying connected (docs/protocol.md): resume after a dropped WebSocket,
//! a client that moves to a new address, liveness judged from any traffic,
//! and what the others see meanwhile.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::nat::Nat;
use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{Value, json};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// The types of the events `client` has been sent so far.
fn event_types(client: &mut Client) -> Vec<String> {
    let mut types = Vec::new();
    while let Some(m) = client.try_event() {
        types.push(m["type"].as_str().unwrap_or("").to_owned());
    }
    types
}

/// The next event of `kind`, with the types of the events skipped on the way.
async fn event_noting(client: &mut Client, kind: &str, seen: &mut Vec<String>) -> Value {
    let wait = async {
        loop {
            let m = client.next_event().await;
            let t = m["type"].as_str().unwrap_or("").to_owned();
            seen.push(t.clone());
            if t == kind {
                return m;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {kind}; saw {seen:?}"))
}

/// Alice (behind `nat` when given) and Bob in one room, each publishing
/// Opus, each receiving the other.
async fn call(server: &TestServer, nat: Option<Arc<Nat>>) -> (Client, Client, Sending, Sending) {
    let room = unique_room();
    let alice = match nat {
        Some(nat) => Client::join_behind(server, &token(&room, "alice"), nat).await,
        None => Client::join(server, &token(&room, "alice")).await,
    };
    let bob = Client::join(server, &token(&room, "bob")).await;
    let a = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    let b = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&a]).await;
    bob.publish(&[&b]).await;
    let (a, b) = (Sending::start(a), Sending::start(b));
    hears_after(&bob, &alice.sid, 0).await;
    hears_after(&alice, &bob.sid, 0).await;
    (alice, bob, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_to_a_new_address_and_resumes_gets_media_both_ways_and_never_leaves() {
    let server = TestServer::start(&[]);
    let nat = Nat::start(ip(1), ip(2)).await;
    let (alice, mut bob, from_alice, from_bob) = call(&server, Some(nat.clone())).await;
    assert!(nat.outside_addrs().iter().all(|a| a.ip() == ip(2)));

    // Alice's network changes: her datagrams now come from 127.0.0.3 and
    // her WebSocket is gone with the old network.
    nat.rebind(ip(3));
    let (moved_a, moved_b) = (from_alice.last(), from_bob.last());
    let started = std::time::Instant::now();
    let resumed = alice.resume(&server).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["participant"]["sid"], alice.sid.as_str());
    assert_eq!(resumed["participants"][0]["identity"], "bob");
    alice.restart_publisher_ice().await;

    hears_after(&bob, &alice.sid, moved_a).await;
    hears_after(&alice, &bob.sid, moved_b).await;
    eprintln!("media both ways {:?} after the move", started.elapsed());
    assert!(
        nat.outside_addrs().iter().all(|a| a.ip() == ip(3)),
        "{:?}",
        nat.outside_addrs()
    );

    let mut seen = Vec::new();
    event_noting(&mut bob, "participant_resumed", &mut seen).await;
    seen.extend(event_types(&mut bob));
    assert!(
        seen.contains(&"participant_reconnecting".to_owned()),
        "{seen:?}"
    );
    assert!(!seen.contains(&"participant_left".to_owned()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_dropped_for_3s_then_resumed_keeps_the_session_and_its_media() {
    let server = TestServer::start(&[]);
    let (alice, mut bob, from_alice, _from_bob) = call(&server, None).await;

    alice.drop_signaling().await;
    let mut seen = Vec::new();
    let m = event_noting(&mut bob, "participant_reconnecting", &mut seen).await;
    assert_eq!(m["participant_sid"], alice.sid.as_str());
    assert_eq!(m["identity"], "alice");
    // The scenario: the client is offline for 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = alice.resume(&server).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["resume_secret"], alice.joined["resume_secret"]);
    let m = event_noting(&mut bob, "participant_resumed", &mut seen).await;
    assert_eq!(m["participant_sid"], alice.sid.as_str());
    hears_after(&bob, &alice.sid, from_alice.last()).await;
    seen.extend(event_types(&mut bob));
    assert!(!seen.contains(&"participant_left".to_owned()), "{seen:?}");
    assert_eq!(
        metric(
            &metrics_text(&server).await,
            "callgate_signaling_resumes_total",
            ""
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_resumed_within_the_grace_ends_connection_lost_and_rejoining_works() {
    let server = TestServer::start_with_env(&[("CALLGATE_ROOM_RECONNECT_GRACE", "2s")], &[]);
    let (alice, mut bob, _from_alice, _from_bob) = call(&server, None).await;
    assert_eq!(alice.joined["reconnect_grace_s"], 2);

    alice.drop_signaling().await;
    let mut seen = Vec::new();
    event_noting(&mut bob, "participant_reconnecting", &mut seen).await;
    let m = event_noting(&mut bob, "participant_left", &mut seen).await;
    assert_eq!(m["participant_sid"], alice.sid.as_str());
    assert_eq!(m["reason"], "connection_lost");

    let refused = alice.resume(&server).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "resume_failed");

    let again = Client::join(
        &server,
        &token(alice.joined["room"]["name"].as_str().unwrap(), "alice"),
    )
    .await;
    assert_ne!(again.sid, alice.sid);
    let m = bob.event("participant_joined").await;
    assert_eq!(m["participant"]["identity"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_a_wrong_secret_is_refused_with_4008_and_the_session_stays() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut alice, joined) = Signal::join(&server, &token(&room, "alice")).await;
    let (mut bob, _) = Signal::join(&server, &token(&room, "bob")).await;
    let secret = joined["resume_secret"].as_str().unwrap();
    assert_eq!(secret.len(), 43);

    let mut thief = Signal::connect(&server).await;
    thief
        .send(
            json!({"type": "resume", "participant_sid": joined["participant"]["sid"],
                     "secret": "A".repeat(43), "protocol": 1}),
        )
        .await;
    let m = thief.recv().await.unwrap();
    assert_eq!(m["code"], "resume_failed");
    let closed = thief.recv().await.unwrap_err();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4008, "resume_failed")
    );

    // Alice's own session is untouched: still there, still hers.
    alice
        .send(json!({"type": "mute", "track_sid": "TR_none", "muted": true}))
        .await;
    assert_eq!(alice.recv_type("error").await["code"], "unknown_track");
    bob.send(json!({"type": "leave"})).await;
    bob.recv_type("left").await;
    assert_eq!(alice.recv_type("participant_left").await["identity"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_checking_consent_every_5s_that_loses_one_check_stays_connected_for_60s() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let nat = Nat::start(ip(1), ip(2)).await;
    let alice = Client::join_checking_every(
        &server,
        &token(&room, "alice"),
        nat.clone(),
        Duration::from_secs(5),
    )
    .await;
    let mut bob = Client::join(&server, &token(&room, "bob")).await;
    let track = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    alice.publish(&[&track]).await;
    let sending = Sending::start(track);
    hears_after(&bob, &alice.sid, 0).await;
    event_types(&mut bob);
    let plis_before = metric(
        &metrics_text(&server).await,
        "callgate_keyframe_requests_total",
        "",
    );

    // The next consent check is lost; media keeps flowing.
    let mut lost = false;
    nat.drop_if(move |d| {
        let check = d.len() >= 20 && d[0..2] == [0, 1] && d[4..8] == [0x21, 0x12, 0xa4, 0x42];
        let drop = check && !lost;
        lost |= drop;
        drop
    });
    // The scenario: a minute of the call.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(nat.dropped(), 1, "exactly one consent check was lost");
    hears_after(&bob, &alice.sid, sending.last() - 5).await;
    let seen = event_types(&mut bob);
    assert!(
        !seen
            .iter()
            .any(|t| t == "participant_reconnecting" || t == "participant_left"),
        "{seen:?}"
    );
    let text = metrics_text(&server).await;
    assert_eq!(metric(&text, "callgate_participants_reconnecting", ""), 0.0);
    assert_eq!(metric(&text, "callgate_participant_resumes_total", ""), 0.0);
    assert_eq!(
        metric(&text, "callgate_keyframe_requests_total", ""),
        plis_before,
        "no keyframe was asked for again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_nat_rebinds_keeps_its_call_without_a_restart_or_a_new_websocket() {
    let server = TestServer::start(&[]);
    let nat = Nat::start(ip(1), ip(2)).await;
    let (alice, mut bob, from_alice, from_bob) = call(&server, Some(nat.clone())).await;

    // Alice's NAT gives her a new public address; her WebSocket and her
    // ICE agents carry on as before (their next consent checks come from
    // the new address).
    nat.rebind(ip(3));
    let (moved_a, moved_b) = (from_alice.last(), from_bob.last());
    hears_after(&bob, &alice.sid, moved_a).await;
    hears_after(&alice, &bob.sid, moved_b).await;
    assert!(nat.outside_addrs().iter().all(|a| a.ip() == ip(3)));
    let seen = event_types(&mut bob);
    assert!(!seen.contains(&"participant_left".to_owned()), "{seen:?}");
}
