//! Voice-room moderation through a real server with real WebRTC clients
//! (docs/operations.md, "Server API"; docs/protocol.md, "Moderation"): a
//! listener promoted to speaker publishes and is heard; a demoted
//! speaker's tracks are unpublished for everyone; a moderator's mute stops
//! forwarding and remote unmute is refused unless the room allows it; a
//! host's app does the same over signaling, and nobody else can.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use callgate_signaling::token::Claims;
use common::money::post;
use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{Value, json};

fn with_role(room: &str, identity: &str, role: &str) -> String {
    let mut c: Claims = claims(room, identity);
    c.grants.role = Some(role.into());
    sign(&c)
}

/// Sends marked audio every 10 ms; the count of packets sent so far.
fn talk(mut track: LocalTrack) -> (tokio::task::JoinHandle<()>, Arc<AtomicU32>) {
    let sent = Arc::new(AtomicU32::new(0));
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        let mut i = 0;
        loop {
            tick.tick().await;
            track.send(marked_payload(i, 100)).await;
            i += 1;
            counter.store(i, Ordering::Release);
        }
    });
    (task, sent)
}

/// Waits until `sent` has grown by `n` packets from now.
async fn until_sent_more(sent: &AtomicU32, n: u32) {
    let from = sent.load(Ordering::Acquire);
    let wait = async {
        while sent.load(Ordering::Acquire) < from + n {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the talker keeps sending");
}

fn received_from(client: &Client, sid: &str) -> usize {
    client
        .received
        .tracks()
        .iter()
        .filter(|(stream, _)| stream == sid)
        .map(|(stream, track)| client.received.payloads(stream, track).len())
        .sum()
}

async fn update(server: &TestServer, room: &str, identity: &str, body: Value) -> (u16, Value) {
    post(
        server,
        &format!("/v1/rooms/{room}/participants/{identity}"),
        body,
    )
    .await
}

async fn mute(server: &TestServer, room: &str, identity: &str, body: Value) -> (u16, Value) {
    post(
        server,
        &format!("/v1/rooms/{room}/participants/{identity}/mute"),
        body,
    )
    .await
}

/// The next `participant_updated` about `identity`.
async fn updated(client: &mut Client, identity: &str) -> Value {
    loop {
        let m = client.event("participant_updated").await;
        if m["participant"]["identity"] == identity {
            return m["participant"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_listener_is_heard_and_a_demoted_speakers_tracks_are_unpublished_for_everyone() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut host = Client::join(&server, &with_role(&room, "host", "host")).await;
    let mut fan = Client::join(&server, &with_role(&room, "fan", "listener")).await;
    let mut other = Client::join(&server, &with_role(&room, "other", "listener")).await;

    // A listener may not publish.
    let audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    fan.publisher
        .add_track(audio.track.clone() as Arc<dyn webrtc::media_stream::track_local::TrackLocal>)
        .await
        .unwrap();
    let offer = fan.publisher.create_offer(None).await.unwrap();
    fan.send(json!({"type": "publish_offer", "sdp": offer.sdp}));
    assert_eq!(fan.event("error").await["code"], "publish_not_allowed");

    let (status, body) = update(&server, &room, "fan", json!({"can_publish": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["participant"]["can_publish"], true);
    for client in [&mut host, &mut fan, &mut other] {
        assert_eq!(updated(client, "fan").await["can_publish"], true);
    }
    // Promoted: it publishes without rejoining, and the host hears it.
    fan.negotiate_publisher().await;
    let (talking, _) = talk(audio);
    host.received
        .wait_for("the promoted listener's audio at the host", |map| {
            map.iter().any(|((stream, _), payloads)| {
                stream == &fan.sid && payloads.iter().any(|p| payload_index(p).is_some())
            })
        })
        .await;
    let track = fan.event("track_published").await["track"]["sid"].clone();

    // Demoted: its track is unpublished for everyone at once.
    let (status, body) = update(&server, &room, "fan", json!({"can_publish": false})).await;
    assert_eq!(status, 200, "{body}");
    for client in [&mut host, &mut other] {
        let gone = client.event("track_unpublished").await;
        assert_eq!(gone["participant_sid"], fan.sid.as_str());
        assert_eq!(gone["track_sid"], track);
        assert_eq!(updated(client, "fan").await["can_publish"], false);
    }
    talking.abort();
    let listed = api_json(&server, &format!("/v1/rooms/{room}/participants")).await;
    let fan_row = listed["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == "fan")
        .cloned()
        .unwrap();
    assert_eq!(fan_row["tracks"], json!([]), "{fan_row}");
    assert_eq!(fan_row["can_publish"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_mute_stops_forwarding_and_remote_unmute_is_refused_unless_the_room_allows_it()
{
    for allow in [false, true] {
        let server = TestServer::start(&[]);
        let room = unique_room();
        let (status, _) = post(
            &server,
            "/v1/rooms",
            json!({"name": room, "allow_remote_unmute": allow}),
        )
        .await;
        assert_eq!(status, 201);
        let mut speaker = Client::join(&server, &with_role(&room, "speaker", "speaker")).await;
        let listener = Client::join(&server, &with_role(&room, "fan", "listener")).await;
        let audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
        speaker.publish(&[&audio]).await;
        let (talking, sent) = talk(audio);
        listener
            .received
            .wait_for("the speaker's audio", |map| {
                map.keys().any(|(stream, _)| stream == &speaker.sid)
            })
            .await;

        let (status, body) = mute(&server, &room, "speaker", json!({"kind": "audio"})).await;
        assert_eq!(status, 200, "{body}");
        let told = speaker.event("track_muted").await;
        assert_eq!(told["muted"], true);
        assert_eq!(told["by_moderator"], true);
        assert_eq!(json!([told["track_sid"]]), body["tracks"]);
        // Packets in flight when the mute landed may still arrive; after
        // that nothing does while the speaker goes on sending.
        until_sent_more(&sent, 10).await;
        let at_mute = received_from(&listener, &speaker.sid);
        until_sent_more(&sent, 50).await;
        assert_eq!(
            received_from(&listener, &speaker.sid),
            at_mute,
            "forwarding stopped at the moderator's mute"
        );

        let (status, body) = mute(
            &server,
            &room,
            "speaker",
            json!({"kind": "audio", "muted": false}),
        )
        .await;
        if allow {
            assert_eq!(status, 200, "{body}");
            let told = speaker.event("track_muted").await;
            assert_eq!(
                (told["muted"].as_bool(), told["by_moderator"].as_bool()),
                (Some(false), Some(true))
            );
            let before = received_from(&listener, &speaker.sid);
            listener
                .received
                .wait_for("the speaker's audio again", |map| {
                    map.iter()
                        .filter(|((s, _), _)| s == &speaker.sid)
                        .map(|(_, p)| p.len())
                        .sum::<usize>()
                        > before
                })
                .await;
        } else {
            assert_eq!(status, 403, "{body}");
            assert_eq!(body["error"]["code"], "remote_unmute_refused");
            until_sent_more(&sent, 20).await;
            assert_eq!(
                received_from(&listener, &speaker.sid),
                at_mute,
                "still muted"
            );
        }
        talking.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_app_moderates_over_signaling_and_a_raised_hand_is_an_attribute() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (mut host, _) = Signal::join(&server, &with_role(&room, "host", "host")).await;
    let (mut fan, _) = Signal::join(&server, &with_role(&room, "fan", "listener")).await;
    let (mut fan2, _) = Signal::join(&server, &with_role(&room, "fan2", "listener")).await;

    // The fan raises its hand: everyone sees the attribute.
    fan.send(json!({"type": "set_attributes", "attributes": {"hand": "raised"}}))
        .await;
    let raised = host.recv_type("participant_updated").await;
    assert_eq!(raised["participant"]["identity"], "fan");
    assert_eq!(
        raised["participant"]["attributes"],
        json!({"hand": "raised"})
    );

    // A listener is no room_admin: its moderation is refused.
    fan2.send(
        json!({"type": "update_participant", "identity": "fan", "update": {"can_publish": true}}),
    )
    .await;
    assert_eq!(fan2.recv_type("error").await["code"], "permission_denied");

    // The host invites the fan to speak and lowers its hand in one change.
    host.send(json!({
        "type": "update_participant", "identity": "fan",
        "update": {"can_publish": true, "attributes": {"hand": ""}},
    }))
    .await;
    let promoted = fan.recv_type("participant_updated").await;
    let promoted = if promoted["participant"]["identity"] == "fan"
        && promoted["participant"]["attributes"] == json!({"hand": "raised"})
    {
        fan.recv_type("participant_updated").await
    } else {
        promoted
    };
    assert_eq!(promoted["participant"]["can_publish"], true, "{promoted}");
    assert_eq!(promoted["participant"]["attributes"], json!({}));

    // Bad moderation input is refused.
    host.send(json!({"type": "update_participant", "identity": "nobody", "update": {"can_publish": true}}))
        .await;
    assert_eq!(
        host.recv_type("error").await["code"],
        "participant_not_found"
    );
    host.send(json!({"type": "mute_participant", "identity": "fan", "mute": {}}))
        .await;
    assert_eq!(host.recv_type("error").await["code"], "malformed_message");
    fan.send(json!({"type": "set_attributes", "attributes": {"k": "v".repeat(257)}}))
        .await;
    assert_eq!(fan.recv_type("error").await["code"], "malformed_message");

    // And the host removes fan2.
    host.send(json!({"type": "remove_participant", "identity": "fan2"}))
        .await;
    assert_eq!(fan2.recv_type("left").await["reason"], "removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_changes_out_of_bounds_are_refused_and_change_nothing() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (_fan, joined) = Signal::join(&server, &token(&room, "fan")).await;
    let too_many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    for body in [
        json!({"attributes": too_many}),
        json!({"metadata": "m".repeat(4097)}),
        json!({"name": ""}),
        json!({"admin": true}),
    ] {
        let (status, refused) = update(&server, &room, "fan", body.clone()).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["error"]["code"], "malformed");
    }
    let (status, _) = update(&server, &room, "nobody", json!({"name": "x"})).await;
    assert_eq!(status, 404);
    let (status, refused) = mute(&server, &room, "fan", json!({"kind": "audio"})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (404, Some("track_not_found"))
    );
    let listed = api_json(&server, &format!("/v1/rooms/{room}/participants")).await;
    let fan = &listed["participants"][0];
    assert_eq!(fan["attributes"], json!({}));
    assert_eq!(fan["metadata"], "");
    assert_eq!(fan["name"], joined["participant"]["name"]);

    let (status, body) = update(
        &server,
        &room,
        "fan",
        json!({"name": "Fan", "metadata": "{\"seat\":3}", "attributes": {"hand": "raised"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["participant"]["name"], "Fan");
    assert_eq!(body["participant"]["metadata"], "{\"seat\":3}");
    assert_eq!(body["participant"]["attributes"], json!({"hand": "raised"}));
}
