//! The signaling protocol's edges against the real server: every bad token
//! is refused with its documented close code, bad messages get an `error`
//! and leave the connection open, oversized frames close with 1009, and
//! `update_subscription` reaches the track a participant receives.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

async fn join_closes(server: &TestServer, token: &str) -> Closed {
    let mut s = Signal::connect(server).await;
    s.send(json!({"type": "join", "token": token})).await;
    s.recv()
        .await
        .expect_err("the server closes the connection")
}

fn closed(code: u16, reason: &str) -> Closed {
    Closed {
        code,
        reason: reason.into(),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_documented_close_codes() {
    let server = TestServer::start(&[]);
    let room = unique_room();

    assert_eq!(
        join_closes(&server, "not-a-jwt").await,
        closed(4001, "token_malformed")
    );
    assert_eq!(
        join_closes(&server, "a.b.c").await,
        closed(4001, "token_malformed")
    );

    let wrong_secret = callgate_signaling::token::KeyRing::new([(DEV_KEY, "another-secret")])
        .sign(&claims(&room, "mallory"))
        .unwrap();
    assert_eq!(
        join_closes(&server, &wrong_secret).await,
        closed(4002, "token_bad_signature")
    );
    let mut unknown_key = claims(&room, "mallory");
    unknown_key.iss = "nokey".into();
    let unknown_key = callgate_signaling::token::KeyRing::new([("nokey", "secret")])
        .sign(&unknown_key)
        .unwrap();
    assert_eq!(
        join_closes(&server, &unknown_key).await,
        closed(4002, "token_bad_signature")
    );

    let mut expired = claims(&room, "alice");
    expired.exp = expired.iat - 3600;
    assert_eq!(
        join_closes(&server, &sign(&expired)).await,
        closed(4003, "token_expired")
    );
    let mut early = claims(&room, "alice");
    early.nbf = Some(early.iat + 3600);
    assert_eq!(
        join_closes(&server, &sign(&early)).await,
        closed(4003, "token_expired")
    );

    let mut no_join = claims(&room, "alice");
    no_join.grants.room_join = false;
    assert_eq!(
        join_closes(&server, &sign(&no_join)).await,
        closed(4004, "token_not_for_joining")
    );
    let mut no_room = claims(&room, "alice");
    no_room.grants.room = None;
    assert_eq!(
        join_closes(&server, &sign(&no_room)).await,
        closed(4004, "token_not_for_joining")
    );
    assert_eq!(
        join_closes(&server, &admin_token()).await,
        closed(4004, "token_not_for_joining")
    );

    let mut s = Signal::connect(&server).await;
    s.send(json!({"type": "join", "token": token(&room, "alice"), "protocol": 2}))
        .await;
    assert_eq!(
        s.recv().await.unwrap_err(),
        closed(4006, "protocol_unsupported")
    );

    // None of it opened a room.
    let rooms = api_json(&server, "/v1/rooms").await;
    assert_eq!(rooms["rooms"], json!([]));
}

#[tokio::test]
async fn messages_before_join_are_refused() {
    let server = TestServer::start(&[]);
    let mut s = Signal::connect(&server).await;
    s.send(json!({"type": "leave"})).await;
    assert_eq!(s.recv().await.unwrap()["code"], "not_joined");
    assert_eq!(s.recv().await.unwrap_err(), closed(1008, "not_joined"));

    let mut s = Signal::connect(&server).await;
    s.send_raw("{{{".into()).await;
    assert_eq!(s.recv().await.unwrap()["code"], "malformed_message");
    assert_eq!(s.recv().await.unwrap_err().code, 1008);
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_join_timeout() {
    let (path, _keep) = config_file("[signaling]\njoin_timeout = \"300ms\"\n");
    let server = TestServer::start(&["--config", path.to_str().unwrap()]);
    let mut s = Signal::connect(&server).await;
    assert_eq!(s.recv().await.unwrap_err(), closed(1008, "join_timeout"));
}

#[tokio::test]
async fn bad_messages_get_an_error_and_the_connection_stays() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut s, joined) = Signal::join(&server, &token(&room, "alice")).await;
    assert_eq!(joined["protocol"], 1);
    assert_eq!(joined["participant"]["identity"], "alice");
    assert_eq!(joined["room"]["name"], room.as_str());

    let cases = [
        ("not json".to_owned(), "malformed_message"),
        ("[1,2]".to_owned(), "malformed_message"),
        (r#"{"no_type":1}"#.to_owned(), "malformed_message"),
        (r#"{"type":"dance"}"#.to_owned(), "unknown_message"),
        (
            r#"{"type":"mute","track_sid":5}"#.to_owned(),
            "malformed_message",
        ),
        (
            r#"{"type":"publish_offer","sdp":"garbage"}"#.to_owned(),
            "invalid_sdp",
        ),
        (
            r#"{"type":"subscribe_answer","sdp":"v=0"}"#.to_owned(),
            "no_pending_offer",
        ),
        (
            r#"{"type":"candidate","target":"publisher","candidate":{"candidate":"candidate:x"}}"#
                .to_owned(),
            "invalid_candidate",
        ),
        (
            r#"{"type":"mute","track_sid":"TR_nope","muted":true}"#.to_owned(),
            "unknown_track",
        ),
        (
            r#"{"type":"update_subscription","track_sid":"TR_nope","width":640,"height":360}"#
                .to_owned(),
            "unknown_track",
        ),
        (
            r#"{"type":"update_subscription","disabled":true}"#.to_owned(),
            "malformed_message",
        ),
        (
            r#"{"type":"update_subscription","track_sid":""}"#.to_owned(),
            "malformed_message",
        ),
        (
            json!({"type": "update_subscription", "track_sid": "T".repeat(65)}).to_string(),
            "malformed_message",
        ),
        (
            r#"{"type":"update_subscription","track_sid":"TR_nope","width":0}"#.to_owned(),
            "malformed_message",
        ),
        (
            r#"{"type":"update_subscription","track_sid":"TR_nope","height":16385}"#.to_owned(),
            "malformed_message",
        ),
        (
            r#"{"type":"update_subscription","track_sid":"TR_nope","priority":256}"#.to_owned(),
            "malformed_message",
        ),
        (
            r#"{"type":"update_subscription","track_sid":"TR_nope","disabled":"yes"}"#.to_owned(),
            "malformed_message",
        ),
        (
            json!({"type": "join", "token": token(&room, "alice")}).to_string(),
            "already_joined",
        ),
        (
            json!({"type": "publish_offer", "sdp": "v".repeat(40_000)}).to_string(),
            "malformed_message",
        ),
    ];
    for (text, code) in cases {
        s.send_raw(text.clone()).await;
        let reply = s
            .recv()
            .await
            .unwrap_or_else(|c| panic!("{text:.40}: closed {c:?}"));
        assert_eq!(reply["type"], "error", "{text:.40}");
        assert_eq!(reply["code"], code, "{text:.40}: {reply}");
    }

    // Still joined: the server API lists alice.
    let list = api_json(&server, &format!("/v1/rooms/{room}/participants")).await;
    assert_eq!(list["participants"][0]["identity"], "alice");

    s.send(json!({"type": "leave"})).await;
    assert_eq!(
        s.recv().await.unwrap(),
        json!({"type": "left", "reason": "left"})
    );
    assert_eq!(s.recv().await.unwrap_err(), closed(1000, "left"));
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let server = TestServer::start(&[]);
    let (mut s, _) = Signal::join(&server, &token(&unique_room(), "alice")).await;
    s.send_raw(format!(
        r#"{{"type":"leave","pad":"{}"}}"#,
        "x".repeat(70_000)
    ))
    .await;
    assert_eq!(s.recv().await.unwrap_err(), closed(1009, "message_too_big"));

    let mut s = Signal::connect(&server).await;
    s.send_raw("x".repeat(65 * 1024)).await;
    assert_eq!(s.recv().await.unwrap_err(), closed(1009, "message_too_big"));

    // Frames far over the limit, before and after join: the server reads
    // only their header, and the close still reaches a client that keeps
    // writing the rest.
    for (size, joined) in [(300 * 1024, false), (4 << 20, true), (32 << 20, false)] {
        let s = if joined {
            Signal::join(&server, &token(&unique_room(), "bob")).await.0
        } else {
            Signal::connect(&server).await
        };
        let (mut sink, mut stream) = s.ws.split();
        let writer = tokio::spawn(async move {
            let _ = sink
                .send(tokio_tungstenite::tungstenite::Message::text(
                    "x".repeat(size),
                ))
                .await;
            sink
        });
        assert_eq!(
            recv_from(&mut stream).await.unwrap_err(),
            closed(1009, "message_too_big"),
            "a frame of {size} bytes"
        );
        writer.abort();
    }
    // The server carries on.
    let (_s, joined) = Signal::join(&server, &token(&unique_room(), "carol")).await;
    assert_eq!(joined["type"], "joined");
}

#[tokio::test]
async fn a_full_room_refuses_one_more() {
    let (path, _keep) = config_file("[room]\nmax_participants = 2\n");
    let server = TestServer::start(&["--config", path.to_str().unwrap()]);
    let room = unique_room();
    let (_a, _) = Signal::join(&server, &token(&room, "a")).await;
    let (_b, _) = Signal::join(&server, &token(&room, "b")).await;
    assert_eq!(
        join_closes(&server, &token(&room, "c")).await,
        closed(4005, "room_full")
    );
    // Another room is not affected.
    let (_c, joined) = Signal::join(&server, &token(&unique_room(), "c")).await;
    assert_eq!(joined["type"], "joined");
}

#[tokio::test]
async fn participants_see_each_other_come_and_go() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut alice, _) = Signal::join(&server, &token(&room, "alice")).await;
    let (mut bob, joined) = Signal::join(&server, &token(&room, "bob")).await;
    assert_eq!(joined["participants"][0]["identity"], "alice");
    let m = alice.recv_type("participant_joined").await;
    assert_eq!(m["participant"]["identity"], "bob");
    let bob_sid = m["participant"]["sid"].clone();

    // Closing the socket without `leave` is leaving too.
    bob.ws.close(None).await.unwrap();
    let m = alice.recv_type("participant_left").await;
    assert_eq!(m["participant_sid"], bob_sid);
    assert_eq!(m["reason"], "left");

    // Rejoining works and is a new session.
    let (_bob, joined) = Signal::join(&server, &token(&room, "bob")).await;
    assert_ne!(joined["participant"]["sid"], bob_sid);
    let m = alice.recv_type("participant_joined").await;
    assert_eq!(m["participant"]["identity"], "bob");

    // The same identity joining again replaces the older session.
    let (mut alice2, _) = Signal::join(&server, &token(&room, "alice")).await;
    assert_eq!(
        alice.recv_type("left").await,
        json!({"type": "left", "reason": "duplicate_identity"})
    );
    assert_eq!(
        alice.recv().await.unwrap_err(),
        closed(1000, "duplicate_identity")
    );
    alice2.send(json!({"type": "leave"})).await;
    alice2.recv_type("left").await;
}

/// The next `error` the client's driver passed on, skipping
/// `invalid_candidate` (the test client trickles candidates before its
/// description reaches the server).
async fn next_error(client: &mut Client) -> Value {
    loop {
        let e = client.event("error").await;
        if e["code"] != "invalid_candidate" {
            return e;
        }
    }
}

/// The sum of the server's `subscription_disabled` drops.
async fn disabled_drops(server: &TestServer) -> f64 {
    metric(
        &metrics_text(server).await,
        "callgate_dropped_packets_total",
        "reason=\"subscription_disabled\"",
    )
}

/// A message the server refuses without touching the media plane: the
/// first error after it is its own.
fn refused_sentinel(track_sid: &str) -> Value {
    json!({"type": "update_subscription", "track_sid": track_sid, "width": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_subscription_is_accepted_for_a_received_track_pauses_it_while_disabled_and_is_refused_for_tracks_not_received()
 {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let mut bob = Client::join(&server, &token(&room, "bob")).await;
    let [(mut video, _, _), (mut audio, _, _)] = camera_and_microphone();
    alice.publish(&[&video, &audio]).await;
    warm_up(&mut [&mut video, &mut audio], &[&bob], &alice.sid).await;
    let sids = track_sids(&mut alice, 2).await;
    let sid_of = |codec: &str| {
        sids.iter()
            .find(|(_, c)| c.eq_ignore_ascii_case(codec))
            .unwrap_or_else(|| panic!("no {codec} track in {sids:?}"))
            .0
            .clone()
    };
    let (video_sid, audio_sid) = (sid_of("video/VP8"), sid_of("audio/opus"));

    // Messages are handled in order and a successful update_subscription
    // has no answer: when the first error after it is the sentinel's, it
    // succeeded.
    bob.send(json!({
        "type": "update_subscription", "track_sid": video_sid,
        "width": 640, "height": 360, "priority": 200,
    }));
    bob.send(refused_sentinel(&video_sid));
    assert_eq!(next_error(&mut bob).await["code"], "malformed_message");

    // Alice publishes the track but does not receive it; nobody receives TR_nope.
    alice.send(json!({"type": "update_subscription", "track_sid": video_sid, "width": 640}));
    assert_eq!(next_error(&mut alice).await["code"], "unknown_track");
    bob.send(json!({"type": "update_subscription", "track_sid": "TR_nope"}));
    assert_eq!(next_error(&mut bob).await["code"], "unknown_track");

    // Disabled: bob receives nothing of the audio sent from then on.
    let talking = Sending::start(audio);
    hears_after(&bob, &alice.sid, talking.last()).await;
    assert_eq!(disabled_drops(&server).await, 0.0);
    bob.send(json!({"type": "update_subscription", "track_sid": audio_sid, "disabled": true}));
    bob.send(refused_sentinel(&audio_sid));
    assert_eq!(next_error(&mut bob).await["code"], "malformed_message");
    // Everything sent after this reaches the server after the disable.
    let disabled_from = talking.last();
    let wait = async {
        // Polled: the metric is the only outside view of the drops.
        while disabled_drops(&server).await < 10.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("packets of the disabled track are dropped");
    let late: Vec<u32> = bob
        .received
        .payloads(&alice.sid, &audio_sid)
        .iter()
        .filter_map(|p| payload_index(p))
        .filter(|&i| i > disabled_from)
        .collect();
    assert!(late.is_empty(), "forwarded while disabled: {late:?}");

    // Enabled again: it flows again, on the same connection.
    bob.send(json!({"type": "update_subscription", "track_sid": audio_sid, "disabled": false}));
    bob.send(refused_sentinel(&audio_sid));
    assert_eq!(next_error(&mut bob).await["code"], "malformed_message");
    hears_after(&bob, &alice.sid, talking.last()).await;
    drop(talking);

    bob.send(json!({"type": "leave"}));
    assert_eq!(bob.event("left").await["reason"], "left");
}
