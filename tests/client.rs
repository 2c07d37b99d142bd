//! The Rust client crate (`client/`, `callgate-client`) against the real
//! server: it joins, reads the room and its events in the server's own
//! types, and reports refusals with their close codes.

mod common;

use callgate_client::{
    ClientError, ClientMessage, LeaveReason, ParticipantEvent, ServerMessage, Signaling,
};
use common::*;

/// The next message that is not one of the server's periodic reports.
async fn next(signaling: &mut Signaling) -> ServerMessage {
    loop {
        let message = tokio::time::timeout(WAIT, signaling.recv())
            .await
            .expect("a message in time")
            .expect("the connection works")
            .expect("the connection is open");
        if !matches!(
            message,
            ServerMessage::Event(ParticipantEvent::ConnectionQuality { .. })
                | ServerMessage::Event(ParticipantEvent::SpeakersChanged { .. })
        ) {
            return message;
        }
    }
}

#[tokio::test]
async fn a_client_joins_sees_others_come_and_go_and_leaves() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut alice, welcome) = Signaling::join(&server.ws_url(), &token(&room, "alice"))
        .await
        .unwrap();
    assert_eq!(welcome.room.name, room);
    assert_eq!(welcome.participant.identity, "alice");
    assert!(welcome.participants.is_empty());
    assert!(!welcome.resume_secret.is_empty());

    let (mut bob, bobs) = Signaling::join(&server.ws_url(), &token(&room, "bob"))
        .await
        .unwrap();
    assert_eq!(bobs.participants.len(), 1, "bob sees alice");
    match next(&mut alice).await {
        ServerMessage::Event(ParticipantEvent::ParticipantJoined { participant }) => {
            assert_eq!(participant.identity, "bob");
            assert_eq!(participant.sid, bobs.participant.sid);
        }
        other => panic!("expected participant_joined, got {other:?}"),
    }

    bob.send(&ClientMessage::Leave).await.unwrap();
    assert_eq!(
        next(&mut bob).await,
        ServerMessage::Left {
            reason: LeaveReason::Left
        }
    );
    match next(&mut alice).await {
        ServerMessage::Event(ParticipantEvent::ParticipantLeft {
            identity, reason, ..
        }) => {
            assert_eq!(identity, "bob");
            assert_eq!(reason, LeaveReason::Left);
        }
        other => panic!("expected participant_left, got {other:?}"),
    }

    // A message the protocol refuses is answered with a typed error.
    alice
        .send(&ClientMessage::Mute {
            track_sid: "TR_nope".into(),
            muted: true,
        })
        .await
        .unwrap();
    match next(&mut alice).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, "unknown_track"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals_come_back_as_the_close_code_and_reason() {
    let (path, _keep) = config_file("[room]\nmax_participants = 1\n");
    let server = TestServer::start(&["--config", path.to_str().unwrap()]);
    let room = unique_room();
    let (_alice, _) = Signaling::join(&server.ws_url(), &token(&room, "alice"))
        .await
        .unwrap();
    let full = Signaling::join(&server.ws_url(), &token(&room, "bob")).await;
    assert_eq!(
        full.err(),
        Some(ClientError::Closed {
            code: 4005,
            reason: "room_full".into()
        })
    );
    let forged = Signaling::join(&server.ws_url(), "not.a.token").await;
    assert!(
        matches!(forged, Err(ClientError::Closed { code: 4001, .. })),
        "{:?}",
        forged.err()
    );
    let nowhere = Signaling::join("ws://127.0.0.1:1/rtc", "t").await;
    assert!(matches!(nowhere, Err(ClientError::Connect { .. })));
}

/// Payloads of remote tracks, in arrival order, by publishing participant.
#[derive(Default)]
struct Collected {
    payloads: std::sync::Mutex<Vec<(String, bytes::Bytes)>>,
    arrived: tokio::sync::Notify,
}

impl callgate_client::PeerObserver for Collected {
    fn on_rtp(&self, track: &callgate_client::RemoteTrack, packet: &rtc::rtp::Packet) {
        self.payloads
            .lock()
            .unwrap()
            .push((track.stream_id.clone(), packet.payload.clone()));
        self.arrived.notify_waiters();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_publishes_and_another_receives_the_same_bytes() {
    use callgate_client::{Participant, ParticipantOptions};
    use std::sync::Arc;

    let server = TestServer::start(&[]);
    let room = unique_room();
    let heard = Arc::new(Collected::default());
    let listener = Participant::join(
        &server.ws_url(),
        &token(&room, "listener"),
        ParticipantOptions::default(),
        heard.clone(),
    )
    .await
    .unwrap();
    let speaker = Participant::join(
        &server.ws_url(),
        &token(&room, "speaker"),
        ParticipantOptions::default(),
        Arc::new(callgate_client::IgnoreMedia),
    )
    .await
    .unwrap();
    let mut track = LocalTrack::new(
        rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio,
        opus(),
        111,
    );
    let answer = speaker.publish(&[track.track.clone()]).await.unwrap();
    assert!(answer.contains("opus"), "the answer accepts Opus: {answer}");

    // Sent until the first arrives (the subscriber transport connects
    // meanwhile), then 50 more: those arrive, each as it was sent.
    let mut sent = 0u32;
    loop {
        let arrived = heard.arrived.notified();
        track.send(marked_payload(sent, 160)).await;
        sent += 1;
        if !heard.payloads.lock().unwrap().is_empty() {
            break;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(20), arrived).await;
        assert!(sent < 1000, "nothing arrived after {sent} packets");
    }
    let first_wanted = sent;
    for _ in 0..50 {
        track.send(marked_payload(sent, 160)).await;
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let wait = async {
        loop {
            let arrived = heard.arrived.notified();
            let got: Vec<u32> = heard
                .payloads
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(_, p)| payload_index(p))
                .filter(|i| *i >= first_wanted)
                .collect();
            if got.len() >= 50 {
                return;
            }
            arrived.await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("50 packets arrive");
    for (stream, payload) in heard.payloads.lock().unwrap().iter() {
        assert_eq!(stream, speaker.sid(), "named after the speaker");
        let index = payload_index(payload).expect("a marked payload");
        assert_eq!(payload, &marked_payload(index, 160), "the bytes as sent");
    }
    assert_eq!(listener.welcome().participant.identity, "listener");
}
