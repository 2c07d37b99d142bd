//! Data messages and roles in a room (docs/protocol.md, "Data messages"
//! and "Roles"): data reach the room's others in order with the sender's
//! identity, only the named destinations when there are some, are kept
//! for a receiver that is reconnecting, and are refused over the size, the
//! rate or the grant; a token's role decides what its holder may do.

mod common;

use callgate_signaling::token::Claims;
use common::*;
use serde_json::{Value, json};

fn with_role(room: &str, identity: &str, role: &str) -> String {
    let mut c: Claims = claims(room, identity);
    c.grants.role = Some(role.into());
    sign(&c)
}

/// The next `data` message on `s`, skipping others.
async fn next_data(s: &mut Signal) -> Value {
    s.recv_type("data").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_reach_the_others_in_order_with_the_senders_identity_and_only_named_destinations() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut host, _) = Signal::join(&server, &token(&room, "host")).await;
    let (mut fan1, _) = Signal::join(&server, &token(&room, "fan1")).await;
    let (mut fan2, _) = Signal::join(&server, &token(&room, "fan2")).await;
    let (_elsewhere, _) = Signal::join(&server, &token(&unique_room(), "fan3")).await;

    for i in 0..30 {
        host.send(json!({"type": "data", "topic": "chat", "payload": format!("m{i}")}))
            .await;
    }
    for fan in [&mut fan1, &mut fan2] {
        for i in 0..30 {
            let m = next_data(fan).await;
            assert_eq!(m["payload"], format!("m{i}"), "in order: {m}");
            assert_eq!(m["from"], "host");
            assert_eq!(m["topic"], "chat");
            assert_eq!(m["reliable"], true);
            assert!(m["from_sid"].as_str().unwrap().starts_with("PA_"), "{m}");
        }
    }

    // A raised hand to the host only.
    fan1.send(json!({
        "type": "data", "topic": "hand", "payload": "raised",
        "reliable": false, "destinations": ["host"],
    }))
    .await;
    let hand = next_data(&mut host).await;
    assert_eq!(
        (
            hand["from"].as_str(),
            hand["payload"].as_str(),
            hand["reliable"].as_bool()
        ),
        (Some("fan1"), Some("raised"), Some(false))
    );
    // fan2 got nothing of it: its next data message is the host's next one.
    host.send(json!({"type": "data", "payload": "after"})).await;
    let next = next_data(&mut fan2).await;
    assert_eq!(next["payload"], "after", "{next}");
    assert_eq!(next["topic"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_over_the_size_the_rate_or_the_grant_are_refused_and_not_relayed() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut sender, _) = Signal::join(&server, &token(&room, "sender")).await;
    let (mut receiver, _) = Signal::join(&server, &token(&room, "receiver")).await;
    let mut muted_claims: Claims = claims(&room, "quiet");
    muted_claims.grants.can_publish_data = false;
    let (mut quiet, _) = Signal::join(&server, &sign(&muted_claims)).await;

    let too_big = "x".repeat(16 * 1024 + 1);
    sender
        .send(json!({"type": "data", "payload": too_big}))
        .await;
    assert_eq!(sender.recv_type("error").await["code"], "malformed_message");
    quiet.send(json!({"type": "data", "payload": "psst"})).await;
    assert_eq!(quiet.recv_type("error").await["code"], "permission_denied");

    // 40 go at once (the burst); the 41st is refused.
    for i in 0..41 {
        sender
            .send(json!({"type": "data", "payload": format!("r{i}")}))
            .await;
    }
    let refused = sender.recv_type("error").await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    for i in 0..40 {
        assert_eq!(next_data(&mut receiver).await["payload"], format!("r{i}"));
    }
    // Nothing else was relayed: not the refused one, not the oversized
    // one, not the quiet one's.
    sender.send(json!({"type": "leave"})).await;
    let after = receiver.recv_type("participant_left").await;
    assert_eq!(after["identity"], "sender", "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_data_wait_for_a_reconnecting_receiver_and_lossy_ones_do_not() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut sender, _) = Signal::join(&server, &token(&room, "sender")).await;
    let (receiver, joined) = Signal::join(&server, &token(&room, "receiver")).await;
    // The receiver's network drops (no close frame).
    drop(receiver);
    sender.recv_type("participant_reconnecting").await;
    sender
        .send(json!({"type": "data", "payload": "kept-1"}))
        .await;
    sender
        .send(json!({"type": "data", "payload": "dropped", "reliable": false}))
        .await;
    sender
        .send(json!({"type": "data", "payload": "kept-2"}))
        .await;
    // The sender's session reads its frames in order: once it answers
    // this, all three were relayed.
    sender.send(json!({"type": "sync"})).await;
    assert_eq!(sender.recv_type("error").await["code"], "unknown_message");
    // Sent after both, so the server has queued them once this arrives.
    sender
        .send(json!({"type": "data", "payload": "x", "destinations": ["sender"]}))
        .await;

    let mut back = Signal::connect(&server).await;
    back.send(json!({
        "type": "resume",
        "participant_sid": joined["participant"]["sid"],
        "secret": joined["resume_secret"],
    }))
    .await;
    assert_eq!(back.recv_type("resumed").await["type"], "resumed");
    assert_eq!(next_data(&mut back).await["payload"], "kept-1");
    assert_eq!(next_data(&mut back).await["payload"], "kept-2");
    sender
        .send(json!({"type": "data", "payload": "live"}))
        .await;
    assert_eq!(next_data(&mut back).await["payload"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_role_decides_what_its_holder_may_do() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    // A listener subscribes but may not publish, even if its token says
    // can_publish: the role's grants replace the token's.
    let (mut listener, joined) = Signal::join(&server, &with_role(&room, "fan", "listener")).await;
    assert_eq!(joined["participant"]["can_publish"], false, "{joined}");
    listener
        .send(json!({"type": "publish_offer", "sdp": "v=0"}))
        .await;
    assert_eq!(
        listener.recv_type("error").await["code"],
        "publish_not_allowed"
    );
    let (mut speaker, joined) = Signal::join(&server, &with_role(&room, "talker", "speaker")).await;
    assert_eq!(joined["participant"]["can_publish"], true, "{joined}");
    // The listener may still react.
    listener
        .send(json!({"type": "data", "payload": "clap"}))
        .await;
    assert_eq!(next_data(&mut speaker).await["payload"], "clap");

    let mut stranger = Signal::connect(&server).await;
    stranger
        .send(json!({"type": "join", "token": with_role(&room, "x", "emperor")}))
        .await;
    let closed = stranger.recv().await.unwrap_err();
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4010, "unknown_role")
    );
}
