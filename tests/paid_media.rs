//! Billing fails closed: in a paid call no media flows until the meter has
//! the first block of call time on hold, a call whose billing cannot start
//! ends before any media is forwarded, and billing terms the meter would
//! refuse are refused at join. Real server, real WebRTC clients, real
//! SQLite ledger.

mod common;

use callgate_signaling::token::BillingClaims;
use common::money::*;
use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::json;

/// The sum of the server's `media_held` drops.
async fn held_drops(server: &TestServer) -> f64 {
    metric(
        &metrics_text(server).await,
        "callgate_dropped_packets_total",
        "reason=\"media_held\"",
    )
}

/// alice joins `room` to pay bob 60 coins a minute and talks from then on
/// (until the returned task is aborted).
async fn talking_payer(server: &TestServer, room: &str) -> (Client, tokio::task::JoinHandle<()>) {
    let (alice, track) =
        join_with_media(server, &paid_token(room, "alice", "alice", Some("bob"), 60)).await;
    (alice, keep_sending(track))
}

/// Waits until the server has held at least `n` packets in all.
async fn until_held(server: &TestServer, n: f64) {
    let wait = async {
        // Polled: the metric is the only outside view of the hold.
        while held_drops(server).await < n {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} packets held"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_with_no_coins_is_cut_before_any_media_flows() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    // alice has never been credited.
    let (mut alice, alice_talks) = talking_payer(&server, &room).await;
    // Alone in the room and unbilled, alice talks into the hold.
    until_held(&server, 1.0).await;
    let (mut bob, bob_track) = join_with_media(&server, &token(&room, "bob")).await;
    let bob_talks = keep_sending(bob_track);

    // (Skipping `invalid_candidate`: the test client trickles candidates
    // before its description reaches the server.)
    let refused = loop {
        let e = alice.event("error").await;
        if e["code"] != "invalid_candidate" {
            break e;
        }
    };
    assert_eq!(refused["code"], "insufficient_balance", "{refused}");
    assert_eq!(alice.event("left").await["reason"], "insufficient_balance");
    // The other side is told why the call ended.
    assert_eq!(bob.event("left").await["reason"], "insufficient_balance");
    alice_talks.abort();
    bob_talks.abort();

    // Both talked the whole time; nothing was forwarded either way.
    assert!(alice.received.tracks().is_empty(), "alice heard bob");
    assert!(bob.received.tracks().is_empty(), "bob heard alice");
    // Nothing was charged and no session was recorded.
    assert!(export_rows(&server, "sessions").await.is_empty());
    let ledger = export_rows(&server, "ledger").await;
    assert!(
        ledger
            .iter()
            .all(|p| p["debit"] != "wallet:alice" && p["credit"] != "wallet:alice"),
        "{ledger:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_media_flows_only_once_the_first_hold_is_in_the_ledger() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    credit(&server, "alice", 100, "pay_1").await;
    let (mut alice, alice_talks) = talking_payer(&server, &room).await;
    until_held(&server, 1.0).await;
    let (bob, bob_track) = join_with_media(&server, &token(&room, "bob")).await;
    let bob_talks = keep_sending(bob_track);

    assert_eq!(alice.event("balance").await["seconds_left"], 100);
    bob.received
        .wait_for("alice's media at bob", |map| {
            map.keys().any(|(stream, _)| stream == &alice.sid)
        })
        .await;
    alice
        .received
        .wait_for("bob's media at alice", |map| {
            map.keys().any(|(stream, _)| stream == &bob.sid)
        })
        .await;
    alice_talks.abort();
    bob_talks.abort();

    // The session's row and its hold are written in one transaction that
    // starts at `started_at`; media is released only after it commits. So
    // the first packet either side got came after `started_at`, and every
    // packet sent before was held, not forwarded.
    alice.send(json!({"type": "leave"}));
    assert_eq!(alice.event("left").await["reason"], "left");
    let session = ended_sessions(&server, 1).await.remove(0);
    let started = humantime::parse_rfc3339(session["started_at"].as_str().unwrap()).unwrap();
    let started_ms = started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let first_at_bob = bob.received.first_at_ms(&alice.sid).unwrap();
    let first_at_alice = alice.received.first_at_ms(&bob.sid).unwrap();
    assert!(
        first_at_bob >= started_ms && first_at_alice >= started_ms,
        "media at {first_at_bob}/{first_at_alice} ms, session and hold from {started_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_terms_the_meter_would_refuse_are_refused_at_join() {
    let server = TestServer::start(&[]);
    credit(&server, "alice", 50, "pay_ok").await;
    let room = unique_room();
    let terms = |edit: &dyn Fn(&mut BillingClaims)| {
        let mut t = BillingClaims {
            payer: Some("alice".into()),
            payee: Some("bob".into()),
            rate: Some(10),
            ..BillingClaims::default()
        };
        edit(&mut t);
        t
    };
    let cases: Vec<(&str, BillingClaims)> = vec![
        ("rate 10^10", terms(&|t| t.rate = Some(10_000_000_000))),
        ("rate 2^63-1", terms(&|t| t.rate = Some(i64::MAX))),
        ("rate 0", terms(&|t| t.rate = Some(0))),
        ("rate -5", terms(&|t| t.rate = Some(-5))),
        (
            "a 10,000-character payer",
            terms(&|t| t.payer = Some("p".repeat(10_000))),
        ),
        (
            "a payer with a newline",
            terms(&|t| t.payer = Some("ali\nce".into())),
        ),
        (
            "a payee with a NUL",
            terms(&|t| t.payee = Some("b\0b".into())),
        ),
        ("payer = payee", terms(&|t| t.payee = Some("alice".into()))),
        (
            "increments 0/1",
            terms(&|t| t.increments = Some("0/1".into())),
        ),
        (
            "increments 99999/1",
            terms(&|t| t.increments = Some("99999/1".into())),
        ),
        (
            "commission 150%",
            terms(&|t| t.commission = Some("150%".into())),
        ),
        (
            "an unknown plan",
            terms(&|t| {
                t.rate = None;
                t.plan = Some("gold".into())
            }),
        ),
        (
            "call_type fax",
            terms(&|t| t.call_type = Some("fax".into())),
        ),
    ];
    for (what, billing) in cases {
        let mut c = claims(&room, "alice");
        c.billing = Some(billing);
        let mut s = Signal::connect(&server).await;
        s.send(json!({"type": "join", "token": sign(&c)})).await;
        let error = s.recv().await.unwrap();
        assert_eq!(error["code"], "billing_invalid", "{what}: {error}");
        assert_eq!(
            s.recv().await.unwrap_err(),
            Closed {
                code: 4007,
                reason: "billing_invalid".into()
            },
            "{what}"
        );
    }
    // Nothing changed: no room was opened, the wallet is whole, no session.
    let rooms = api_json(&server, "/v1/rooms").await;
    assert!(
        rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] != room.as_str()),
        "{rooms}"
    );
    assert_eq!(api_json(&server, "/v1/wallets/alice").await["balance"], 50);
    assert!(export_rows(&server, "sessions").await.is_empty());
}

#[test]
fn callgate_token_refuses_terms_the_server_would_refuse() {
    let run = |extra: &[&str]| {
        let mut args = vec!["token", "--dev", "--room", "r1", "--identity", "alice"];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(&args)
            .output()
            .unwrap()
    };
    for bad in [
        &["--payer", "alice", "--rate", "10000000000"][..],
        &["--payer", "alice", "--rate", "9223372036854775807"],
        &["--payer", "alice", "--payee", "alice", "--rate", "10"],
        &["--payer", "alice", "--rate", "10", "--increments", "0/60"],
        &["--payer", "alice", "--rate", "10", "--commission", "101%"],
        &["--payer", "alice\nbob", "--rate", "10"],
        &["--rate", "10"],
    ] {
        let out = run(bad);
        assert!(!out.status.success(), "{bad:?} was signed");
        assert!(out.stdout.is_empty(), "{bad:?} printed a token");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("billing terms refused"),
            "{bad:?}: {stderr}"
        );
    }
    let good = run(&["--payer", "alice", "--payee", "bob", "--rate", "10"]);
    assert!(good.status.success());
    assert_eq!(
        String::from_utf8_lossy(&good.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_payee_leaves_the_payers_media_waits_for_a_new_session() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    credit(&server, "alice", 100, "pay_1").await;
    let (mut alice, alice_talks) = talking_payer(&server, &room).await;
    // carol is in the room unpaid: she hears alice only while alice pays.
    let (carol, _carol_track) = join_with_media(&server, &token(&room, "carol")).await;
    let (bob, _bob_track) = join_with_media(&server, &token(&room, "bob")).await;
    assert_eq!(alice.event("balance").await["seconds_left"], 100);
    let alice_sid = alice.sid.clone();
    let heard = |c: &Client| {
        c.received
            .tracks()
            .iter()
            .filter(|(stream, _)| *stream == alice_sid)
            .map(|(s, t)| c.received.payloads(s, t).len())
            .sum::<usize>()
    };
    carol
        .received
        .wait_for("alice's media at carol", |map| {
            map.keys().any(|(stream, _)| stream == &alice.sid)
        })
        .await;

    // bob leaves: the session ends and alice's media is held again.
    bob.send(json!({"type": "leave"}));
    let ended = ended_sessions(&server, 1).await.remove(0);
    assert_eq!(ended["end_reason"], "payee_left");
    let held_before = held_drops(&server).await;
    let at_end = heard(&carol);
    // alice keeps talking (every 10 ms); wait until the server has held
    // 20 more of her packets: carol got none of them.
    until_held(&server, held_before + 20.0).await;
    // (Packets in flight when the hold came may still land: allow a few.)
    let during_gap = heard(&carol);
    assert!(
        during_gap <= at_end + 3,
        "carol heard {} packets of alice with no session",
        during_gap - at_end
    );

    // bob is back: a new session starts and alice is heard again.
    let (_bob, _bob_track) = join_with_media(&server, &token(&room, "bob")).await;
    let second = alice.event("balance").await;
    assert!(second["seconds_left"].as_u64().unwrap() > 0, "{second}");
    let wait = async {
        while heard(&carol) < during_gap + 20 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("carol hears alice again");
    alice_talks.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_type_the_token_leaves_out_is_what_payer_and_payee_publish() {
    let server = TestServer::start(&[]);
    let (video_room, audio_room) = (unique_room(), unique_room());
    credit(&server, "alice", 100, "pay_1").await;
    credit(&server, "carol", 100, "pay_2").await;

    // alice publishes her camera with her microphone; her token names no
    // call type.
    let alice = Client::join(
        &server,
        &paid_token(&video_room, "alice", "alice", Some("bob"), 60),
    )
    .await;
    let mut mic = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    let mut camera = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    alice.publish(&[&mic, &camera]).await;
    // First packets open the producers (a track is published from then on).
    mic.send(bytes::Bytes::from_static(b"hello")).await;
    camera.send(bytes::Bytes::from_static(b"hello")).await;
    let alice_talks = keep_sending(mic);
    let alice_films = keep_sending(camera);
    // Both of alice's tracks are in the room before the payee comes.
    let published = format!("/v1/rooms/{video_room}/participants");
    tokio::time::timeout(WAIT, async {
        // Polled: nothing tells a test the server saw a first packet.
        while !api_json(&server, &published).await["participants"]
            .as_array()
            .is_some_and(|people| {
                people.iter().any(|p| {
                    p["identity"] == "alice" && p["tracks"].as_array().is_some_and(|t| t.len() == 2)
                })
            })
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("alice's camera and microphone published");
    let (bob, bob_track) = join_with_media(&server, &token(&video_room, "bob")).await;
    let bob_talks = keep_sending(bob_track);

    // carol and dave only talk.
    let (carol, carol_track) = join_with_media(
        &server,
        &paid_token(&audio_room, "carol", "carol", Some("dave"), 60),
    )
    .await;
    let carol_talks = keep_sending(carol_track);
    let (dave, dave_track) = join_with_media(&server, &token(&audio_room, "dave")).await;
    let dave_talks = keep_sending(dave_track);

    let (mut alice, mut carol) = (alice, carol);
    assert_eq!(alice.event("balance").await["seconds_left"], 100);
    assert_eq!(carol.event("balance").await["seconds_left"], 100);
    alice.send(json!({"type": "leave"}));
    carol.send(json!({"type": "leave"}));
    let sessions = ended_sessions(&server, 2).await;
    let call_type = |payer: &str| {
        sessions
            .iter()
            .find(|s| s["payer"] == payer)
            .unwrap_or_else(|| panic!("{payer}'s session in {sessions:?}"))["call_type"]
            .clone()
    };
    assert_eq!(call_type("alice"), "video");
    assert_eq!(call_type("carol"), "audio");
    for task in [alice_talks, alice_films, bob_talks, carol_talks, dave_talks] {
        task.abort();
    }
    drop((bob, dave));
}
