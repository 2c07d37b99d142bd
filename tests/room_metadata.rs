//! Rooms made ahead with the server API (docs/operations.md, "Server
//! API"): their own participant limit, empty timeout and metadata, shown
//! by `GET /v1/rooms` and `joined`, updated for everyone in the room with
//! `room_updated`; bad requests are refused and change nothing.

mod common;

use common::money::post;
use common::*;
use serde_json::{Value, json};

async fn patch(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    api_send(server, reqwest::Method::PATCH, path, body).await
}

async fn listed(server: &TestServer, name: &str) -> Option<Value> {
    api_json(server, "/v1/rooms").await["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_made_ahead_keeps_its_limit_and_metadata_and_tells_its_members_of_changes() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let metadata = r#"{"title":"Late night ghazals","topic":"music"}"#;
    let (status, created) = post(
        &server,
        "/v1/rooms",
        json!({"name": room, "max_participants": 2, "empty_timeout": "600s", "metadata": metadata}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["room"]["metadata"], metadata);
    assert_eq!(created["room"]["max_participants"], 2);
    assert_eq!(created["room"]["empty_timeout_s"], 600);
    let shown = listed(&server, &room)
        .await
        .expect("listed before anyone joined");
    assert_eq!(shown["metadata"], metadata);
    assert_eq!(shown["num_participants"], 0);

    let (mut host, joined) = Signal::join(&server, &token(&room, "host")).await;
    assert_eq!(joined["room"]["metadata"], metadata);
    let (_fan, _) = Signal::join(&server, &token(&room, "fan1")).await;
    // The room's own limit, not the node's 50.
    let mut third = Signal::connect(&server).await;
    third
        .send(json!({"type": "join", "token": token(&room, "fan2")}))
        .await;
    assert_eq!(third.recv().await.unwrap_err().code, 4005);

    let (status, updated) = patch(
        &server,
        &format!("/v1/rooms/{room}"),
        json!({"metadata": "{\"title\":\"Ghazals, part 2\"}"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let told = host.recv_type("room_updated").await;
    assert_eq!(told["room"]["metadata"], "{\"title\":\"Ghazals, part 2\"}");
    assert_eq!(told["room"]["num_participants"], 2);
    assert_eq!(
        listed(&server, &room).await.unwrap()["metadata"],
        "{\"title\":\"Ghazals, part 2\"}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_nobody_joins_closes_after_its_own_empty_timeout() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (status, _) = post(
        &server,
        "/v1/rooms",
        json!({"name": room, "empty_timeout": 1}),
    )
    .await;
    assert_eq!(status, 201);
    assert!(listed(&server, &room).await.is_some());
    // Polled: the listing is the only outside view of a room closing.
    let gone = async {
        while listed(&server, &room).await.is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("the room closed after its 1 s empty timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_room_requests_are_refused_and_change_nothing() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let (status, _) = post(&server, "/v1/rooms", json!({"name": room})).await;
    assert_eq!(status, 201);
    let (status, again) = post(&server, "/v1/rooms", json!({"name": room, "metadata": "x"})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "room_exists");
    assert_eq!(listed(&server, &room).await.unwrap()["metadata"], "");

    let long = "m".repeat(4097);
    for body in [
        json!({"name": ""}),
        json!({"name": "r1", "metadata": long}),
        json!({"name": "r2", "max_participants": 0}),
        json!({"name": "r3", "empty_timeout": 0}),
        json!({"name": "r4", "empty_timeout": "forever"}),
        json!({"name": "r5", "colour": "blue"}),
        json!({"metadata": "no name"}),
    ] {
        let (status, refused) = post(&server, "/v1/rooms", body.clone()).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["error"]["code"], "malformed", "{body}");
    }
    let rooms = api_json(&server, "/v1/rooms").await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1, "{rooms}");

    let (status, refused) = patch(&server, "/v1/rooms/nowhere", json!({"metadata": "x"})).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error"]["code"], "room_not_found");
    let (status, _) = patch(
        &server,
        &format!("/v1/rooms/{room}"),
        json!({"metadata": "m".repeat(4097)}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(listed(&server, &room).await.unwrap()["metadata"], "");
}
