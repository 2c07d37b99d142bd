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
