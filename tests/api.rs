//! The server API under /v1/, /healthz and /metrics, against the real server.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn call(method: reqwest::Method, url: String, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, body)
}

#[tokio::test]
async fn requests_without_an_admin_token_are_refused() {
    let server = TestServer::start(&[]);
    let url = server.api("/v1/rooms");
    let (status, body) = call(reqwest::Method::GET, url.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");

    let (status, body) = call(reqwest::Method::GET, url.clone(), Some("garbage")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");

    let mut expired = claims("", "admin");
    expired.grants.admin = true;
    expired.exp = expired.iat - 100;
    let (status, _) = call(reqwest::Method::GET, url.clone(), Some(&sign(&expired))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let room = unique_room();
    let (_alice, _) = Signal::join(&server, &token(&room, "alice")).await;
    let participant_token = token(&room, "alice");
    for (method, path) in [
        (reqwest::Method::GET, "/v1/rooms".to_owned()),
        (
            reqwest::Method::DELETE,
            format!("/v1/rooms/{room}/participants/alice"),
        ),
        (reqwest::Method::DELETE, format!("/v1/rooms/{room}")),
    ] {
        let (status, body) = call(method, server.api(&path), Some(&participant_token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // Nothing changed: alice is still there.
    let (status, body) = call(
        reqwest::Method::GET,
        server.api(&format!("/v1/rooms/{room}/participants")),
        Some(&admin_token()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["participants"][0]["identity"], "alice");
}

#[tokio::test]
async fn operators_list_remove_and_close() {
    let server = TestServer::start(&[]);
    let admin = admin_token();
    let room = unique_room();
    let (mut alice, _) = Signal::join(&server, &token(&room, "alice")).await;
    let (mut bob, _) = Signal::join(&server, &token(&room, "bob")).await;
    let (mut carol, _) = Signal::join(&server, &token(&room, "carol")).await;

    let (status, body) = call(reqwest::Method::GET, server.api("/v1/rooms"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rooms"][0]["name"], room.as_str());
    assert_eq!(body["rooms"][0]["num_participants"], 3);

    let (status, body) = call(
        reqwest::Method::GET,
        server.api(&format!("/v1/rooms/{room}/participants")),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);

    let (status, _) = call(
        reqwest::Method::DELETE,
        server.api(&format!("/v1/rooms/{room}/participants/bob")),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        bob.recv_type("left").await,
        json!({"type": "left", "reason": "removed"})
    );
    assert_eq!(
        bob.recv().await.unwrap_err(),
        Closed {
            code: 1000,
            reason: "removed".into()
        }
    );
    let m = alice.recv_type("participant_left").await;
    assert_eq!(
        (m["identity"].as_str(), m["reason"].as_str()),
        (Some("bob"), Some("removed"))
    );

    for (path, code) in [
        (
            format!("/v1/rooms/{room}/participants/bob"),
            "participant_not_found",
        ),
        (
            "/v1/rooms/no-such-room/participants/bob".to_owned(),
            "room_not_found",
        ),
        ("/v1/rooms/no-such-room".to_owned(), "room_not_found"),
    ] {
        let (status, body) = call(reqwest::Method::DELETE, server.api(&path), Some(&admin)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    let (status, body) = call(
        reqwest::Method::GET,
        server.api("/v1/rooms/no-such-room/participants"),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("room_not_found"))
    );
    let (status, body) = call(
        reqwest::Method::GET,
        server.api("/v1/nothing"),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let (status, _) = call(
        reqwest::Method::DELETE,
        server.api(&format!("/v1/rooms/{room}")),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for s in [&mut alice, &mut carol] {
        assert_eq!(
            s.recv_type("left").await,
            json!({"type": "left", "reason": "room_closed"})
        );
        assert_eq!(s.recv().await.unwrap_err().code, 1000);
    }
    let (_, body) = call(reqwest::Method::GET, server.api("/v1/rooms"), Some(&admin)).await;
    assert_eq!(body["rooms"], json!([]));
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestServer::start(&[]);
    let (status, body) = call(reqwest::Method::GET, server.api("/healthz"), None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let room = unique_room();
    let (_alice, _) = Signal::join(&server, &token(&room, "alice")).await;
    let text = metrics_text(&server).await;
    assert_eq!(metric(&text, "callgate_rooms", ""), 1.0);
    assert_eq!(metric(&text, "callgate_participants", ""), 1.0);
    assert_eq!(metric(&text, "callgate_signaling_connections", ""), 1.0);
    for name in [
        "callgate_tracks",
        "callgate_subscriptions",
        "callgate_packets_total",
        "callgate_bytes_total",
        "callgate_nacks_total",
        "callgate_keyframe_requests_total",
        "callgate_dropped_packets_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn sigterm_ends_every_session_then_exits_cleanly() {
    let mut server = TestServer::start(&[]);
    let room = unique_room();
    let (mut alice, _) = Signal::join(&server, &token(&room, "alice")).await;
    let (mut bob, _) = Signal::join(&server, &token(&room, "bob")).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    });
    for s in [&mut alice, &mut bob] {
        assert_eq!(
            s.recv_type("left").await,
            json!({"type": "left", "reason": "server_shutdown"})
        );
        assert_eq!(s.recv().await.unwrap_err().code, 1000);
    }
    let (status, _server) = status.await.unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn an_empty_room_closes_after_its_timeout() {
    let config = std::env::temp_dir().join(format!("callgate-{}.toml", rand::random::<u64>()));
    std::fs::write(&config, "[room]\nempty_timeout = \"200ms\"\n").unwrap();
    let server = TestServer::start(&["--config", config.to_str().unwrap()]);
    std::fs::remove_file(&config).unwrap();
    let admin = admin_token();
    let room = unique_room();
    let (mut alice, _) = Signal::join(&server, &token(&room, "alice")).await;
    alice.send(json!({"type": "leave"})).await;
    alice.recv_type("left").await;

    // Right after the last participant left the room is still open…
    let (_, body) = call(reqwest::Method::GET, server.api("/v1/rooms"), Some(&admin)).await;
    assert_eq!(body["rooms"][0]["num_participants"], 0);
    // …and it closes by itself once the timeout passed. Nothing signals that,
    // so the API is asked a bounded number of times.
    let mut polls = 0;
    loop {
        let (_, body) = call(reqwest::Method::GET, server.api("/v1/rooms"), Some(&admin)).await;
        if body["rooms"] == json!([]) {
            break;
        }
        polls += 1;
        assert!(polls < 200, "room still open: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
