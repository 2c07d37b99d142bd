//! The call lifecycle through a real server (docs/calls.md): a call
//! started with `POST /v1/calls` rings the callee's devices, is accepted,
//! rejected, cancelled or missed, and each test asserts the messages both
//! sides got, the call log row, and the payer's exact coins. Real server,
//! real SQLite ledger, real WebRTC clients for the media of an answered
//! call, a real HTTP receiver for the webhooks.

mod common;

use common::calls::*;
use common::money::*;
use common::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const HOOK_SECRET: &str = "calls-test-webhook-secret";

/// A server whose webhooks go to a receiver in this test: the events
/// arrive, signature checked, on the returned channel.
async fn server_with_hooks() -> (TestServer, mpsc::UnboundedReceiver<Value>, tempdir::TempDir) {
    let (tx, rx) = mpsc::unbounded_channel();
    let receiver = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let signature = headers
                    .get("callgate-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let now = callgate_signaling::token::unix_now() as i64;
                callgate_metering::verify_signature(
                    HOOK_SECRET,
                    signature,
                    body.as_bytes(),
                    now,
                    300,
                )
                .expect("a webhook signed with the configured secret");
                let _ = tx.send(serde_json::from_str::<Value>(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let data = tempdir::TempDir::new();
    let config = data.0.join("callgate.toml");
    std::fs::write(
        &config,
        format!("[metering.webhooks]\nurl = \"http://{at}/hooks\"\nsecret = \"{HOOK_SECRET}\"\n"),
    )
    .unwrap();
    let server = TestServer::start_in(&data.0, &["--config", config.to_str().unwrap()]);
    (server, rx, data)
}

/// The next call webhook of `call_id` (others are skipped).
async fn next_hook(hooks: &mut mpsc::UnboundedReceiver<Value>, call_id: &str) -> Value {
    loop {
        let hook = tokio::time::timeout(WAIT, hooks.recv())
            .await
            .expect("a webhook within the wait")
            .expect("the receiver runs");
        let data = &hook["data"];
        if data["id"] == call_id || data["call_id"] == call_id {
            return hook;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_call_rings_is_accepted_carries_media_and_bills_the_payer_exactly_on_hang_up() {
    let (server, mut hooks, _data) = server_with_hooks().await;
    credit(&server, "alice", 100, "pay_1").await;
    let mut host_phone = Signal::device(&server, "host1").await;
    let mut alice_phone = Signal::device(&server, "alice").await;

    let (status, created) = start_call(&server, paid_call(45)).await;
    assert_eq!(status, 201, "{created}");
    let call = &created["call"];
    let id = call["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("CA_"), "{id}");
    assert_eq!(call["state"], "ringing");
    assert_eq!(call["room"], format!("call-{id}"));
    // The first increment (60 s at 15 a minute) is held before anything rings.
    assert_eq!(wallet(&server, "alice").await, (100, 15));

    let ring = host_phone.recv_type("call_ring").await;
    assert_eq!(ring["call_id"], id.as_str());
    assert_eq!(ring["caller"], "alice");
    assert_eq!(ring["caller_name"], "Alice");
    assert_eq!(ring["call_type"], "audio");
    assert_eq!(ring["ring_timeout_s"], 45);
    assert_eq!(ring["token"], created["tokens"]["host1"]);
    assert_eq!(
        alice_phone.recv_type("call_state").await["state"],
        "ringing"
    );

    accept(&mut host_phone, &mut alice_phone, &id, "host1").await;

    // Both join the call's room with their tokens and talk.
    let talk = Talk::start(
        &server,
        created["tokens"]["alice"].as_str().unwrap(),
        &server,
        ring["token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        api_json(&server, "/v1/presence?identity=alice,host1").await["presence"],
        json!({"alice": "busy", "host1": "busy"})
    );

    // alice hangs up.
    talk.caller_hangs_up("alice", [&mut host_phone, &mut alice_phone])
        .await;

    let session = ended_sessions(&server, 1).await.remove(0);
    let coins = session["coins"].as_i64().unwrap();
    let row = logged(&server, &id).await;
    assert_eq!(row["outcome"], "completed", "{row}");
    assert_eq!(row["end_reason"], "hung_up");
    assert_eq!(row["ended_by"], "alice");
    assert_eq!(row["session_id"], session["session_id"], "{session}");
    assert_eq!(row["coins"], coins);
    assert_eq!(row["billed_seconds"], session["billed_seconds"]);
    // A call under a minute bills the first increment: 15 coins.
    assert_eq!(coins, 15);
    assert_eq!(wallet(&server, "alice").await, (85, 0));
    // Finance's export of calls says the same.
    let exported = export_rows(&server, "calls").await;
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0]["call_id"], id.as_str());
    assert_eq!(exported[0]["outcome"], "completed");
    assert_eq!(exported[0]["coins"], 15);

    // Webhooks, in order: started, answered, ended (no call.ring: the host
    // was connected).
    let started = next_hook(&mut hooks, &id).await;
    assert_eq!(started["type"], "call.started");
    let answered = next_hook(&mut hooks, &id).await;
    assert_eq!(answered["type"], "call.answered");
    let ended = next_hook(&mut hooks, &id).await;
    assert_eq!(ended["type"], "call.ended");
    assert_eq!(ended["data"]["outcome"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_call_ends_rejected_for_both_and_costs_nothing() {
    let server = TestServer::start(&[]);
    credit(&server, "alice", 100, "pay_1").await;
    let mut host_phone = Signal::device(&server, "host1").await;
    let mut alice_phone = Signal::device(&server, "alice").await;
    let (status, created) = start_call(&server, paid_call(45)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    host_phone.recv_type("call_ring").await;
    assert_eq!(wallet(&server, "alice").await, (100, 15));

    host_phone
        .send(json!({"type": "call_reject", "call_id": id, "reason": "decline"}))
        .await;
    for phone in [&mut host_phone, &mut alice_phone] {
        let state = next_state(phone).await;
        assert_eq!(state["state"], "rejected", "{state}");
        assert_eq!(state["by"], "host1");
        assert_eq!(state["end_reason"], "declined");
    }
    let row = logged(&server, &id).await;
    assert_eq!(row["outcome"], "rejected");
    assert_eq!(
        row["callees"],
        json!([{"identity": "host1", "ring": "rejected"}])
    );
    assert_eq!(row["coins"], Value::Null);
    assert_eq!(
        wallet(&server, "alice").await,
        (100, 0),
        "the hold is released"
    );

    // Accepting it now is refused, and changes nothing.
    host_phone
        .send(json!({"type": "call_accept", "call_id": id}))
        .await;
    let refused = host_phone.recv_type("error").await;
    assert_eq!(refused["code"], "call_ended", "{refused}");
    assert_eq!(refused["call_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_stops_the_ring_and_only_the_caller_may_cancel() {
    let server = TestServer::start(&[]);
    credit(&server, "alice", 100, "pay_1").await;
    let mut host_phone = Signal::device(&server, "host1").await;
    let mut alice_phone = Signal::device(&server, "alice").await;
    let mut stranger = Signal::device(&server, "mallory").await;
    let (_, created) = start_call(&server, paid_call(45)).await;
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    host_phone.recv_type("call_ring").await;

    // Refused inputs: a callee cancelling, a stranger rejecting, an
    // unknown call.
    host_phone
        .send(json!({"type": "call_cancel", "call_id": id}))
        .await;
    assert_eq!(host_phone.recv_type("error").await["code"], "not_caller");
    stranger
        .send(json!({"type": "call_reject", "call_id": id}))
        .await;
    assert_eq!(stranger.recv_type("error").await["code"], "not_invited");
    stranger
        .send(json!({"type": "call_accept", "call_id": "CA_nope"}))
        .await;
    assert_eq!(stranger.recv_type("error").await["code"], "call_not_found");
    assert_eq!(logged(&server, &id).await["state"], "ringing");

    alice_phone
        .send(json!({"type": "call_cancel", "call_id": id}))
        .await;
    let cancelled = next_state(&mut host_phone).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["by"], "alice");
    assert_eq!(
        cancelled["callees"],
        json!([{"identity": "host1", "ring": "cancelled"}])
    );
    let row = logged(&server, &id).await;
    assert_eq!(row["outcome"], "cancelled");
    assert_eq!(row["ended_by"], "alice");
    assert_eq!(wallet(&server, "alice").await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_call_pushes_a_background_callee_rings_it_when_it_connects_and_ends_missed() {
    let (server, mut hooks, _data) = server_with_hooks().await;
    credit(&server, "alice", 100, "pay_1").await;
    let mut alice_phone = Signal::device(&server, "alice").await;
    // host1 has no connection open: the app's backend is asked to push.
    let (status, created) = start_call(&server, paid_call(5)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    assert_eq!(next_hook(&mut hooks, &id).await["type"], "call.started");
    let push = next_hook(&mut hooks, &id).await;
    assert_eq!(push["type"], "call.ring");
    assert_eq!(push["data"]["callee"], "host1");
    assert_eq!(push["data"]["caller_name"], "Alice");

    // Woken by the push, the phone connects and rings at once.
    let mut host_phone = Signal::device(&server, "host1").await;
    let ring = host_phone.recv_type("call_ring").await;
    assert_eq!(ring["call_id"], id.as_str());

    // Nobody answers within the 5 s ring timeout.
    for phone in [&mut host_phone, &mut alice_phone] {
        let missed = next_state(phone).await;
        assert_eq!(missed["state"], "missed", "{missed}");
        assert_eq!(missed["by"], Value::Null);
        assert_eq!(missed["end_reason"], "no_answer");
    }
    let row = logged(&server, &id).await;
    assert_eq!(row["outcome"], "missed");
    assert_eq!(
        row["callees"],
        json!([{"identity": "host1", "ring": "missed"}])
    );
    assert_eq!(row["coins"], Value::Null);
    // A missed call costs nothing and leaves no hold.
    assert_eq!(wallet(&server, "alice").await, (100, 0));
    let ended = next_hook(&mut hooks, &id).await;
    assert_eq!(ended["type"], "call.ended");
    assert_eq!(ended["data"]["outcome"], "missed");
    let metrics = metrics_text(&server).await;
    assert_eq!(
        metric(&metrics, "callgate_call_rings_total", "via=\"webhook\""),
        1.0
    );
    assert_eq!(
        metric(&metrics, "callgate_calls_ended_total", "outcome=\"missed\""),
        1.0
    );
    assert_eq!(metric(&metrics, "callgate_calls_active", ""), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_in_another_call_is_busy_unless_the_call_allows_waiting() {
    let server = TestServer::start(&[]);
    let mut host_phone = Signal::device(&server, "host1").await;
    // host1 is in a room.
    let (_in_room, _) = Signal::join(&server, &token(&unique_room(), "host1")).await;

    let free_call = json!({"caller": "alice", "callees": ["host1"]});
    let (status, refused) = start_call(&server, free_call.clone()).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "busy");
    let id = refused["call"]["id"].as_str().unwrap().to_owned();
    let row = logged(&server, &id).await;
    assert_eq!(row["outcome"], "busy");
    assert_eq!(
        row["callees"],
        json!([{"identity": "host1", "ring": "busy"}])
    );

    let mut waiting = free_call;
    waiting["call_waiting"] = json!(true);
    let (status, created) = start_call(&server, waiting).await;
    assert_eq!(status, 201, "{created}");
    // The first ring host1's phone gets is of the call that waits.
    let ring = host_phone.recv_type("call_ring").await;
    assert_eq!(ring["call_id"], created["call"]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_coins_rings_nobody_and_the_refusal_is_logged() {
    let server = TestServer::start(&[]);
    credit(&server, "alice", 14, "pay_1").await;
    let mut host_phone = Signal::device(&server, "host1").await;
    let (status, refused) = start_call(&server, paid_call(45)).await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["error"]["code"], "insufficient_balance");
    let id = refused["call"]["id"].as_str().unwrap().to_owned();
    let row = logged(&server, &id).await;
    assert_eq!(row["outcome"], "insufficient_balance", "{row}");
    assert_eq!(wallet(&server, "alice").await, (14, 0));
    // Nothing rang: the next message host1's phone gets is the answer to
    // its own watch.
    host_phone
        .send(json!({"type": "presence_watch", "identities": ["alice"]}))
        .await;
    assert_eq!(
        host_phone.recv().await.unwrap(),
        json!({"type": "presence", "identity": "alice", "status": "offline"})
    );
    // Bad terms are refused before anything is logged.
    let mut bad = paid_call(45);
    bad["billing"]["rate"] = json!(0);
    let (status, refused) = start_call(&server, bad).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "billing_invalid");
    let history = api_json(&server, "/v1/calls?identity=alice").await;
    assert_eq!(history["calls"].as_array().unwrap().len(), 1, "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_learns_the_call_was_answered_elsewhere_and_cannot_answer_again() {
    let server = TestServer::start(&[]);
    let mut phone = Signal::device(&server, "host1").await;
    let mut tablet = Signal::device(&server, "host1").await;
    let (_, created) = start_call(&server, json!({"caller": "alice", "callees": ["host1"]})).await;
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    phone.recv_type("call_ring").await;
    tablet.recv_type("call_ring").await;
    phone
        .send(json!({"type": "call_accept", "call_id": id}))
        .await;
    let elsewhere = next_state(&mut tablet).await;
    assert_eq!(elsewhere["state"], "accepted");
    assert_eq!(elsewhere["by"], "host1");
    tablet
        .send(json!({"type": "call_accept", "call_id": id}))
        .await;
    let refused = tablet.recv_type("error").await;
    assert_eq!(refused["code"], "already_answered", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_online_busy_or_offline_and_watchers_hear_each_change() {
    let server = TestServer::start(&[]);
    let mut fan = Signal::device(&server, "fan").await;
    fan.send(json!({"type": "presence_watch", "identities": ["host1", "host2"]}))
        .await;
    let mut told = vec![fan.recv().await.unwrap(), fan.recv().await.unwrap()];
    told.sort_by_key(|m| m["identity"].as_str().unwrap().to_owned());
    assert_eq!(
        told,
        vec![
            json!({"type": "presence", "identity": "host1", "status": "offline"}),
            json!({"type": "presence", "identity": "host2", "status": "offline"}),
        ]
    );
    // The host goes online, then into a call, then out of it, then away.
    let host_phone = Signal::device(&server, "host1").await;
    let presence =
        |status: &str| json!({"type": "presence", "identity": "host1", "status": status});
    assert_eq!(fan.recv().await.unwrap(), presence("online"));
    assert_eq!(
        api_json(&server, "/v1/presence?identity=host1,host2,fan").await["presence"],
        json!({"host1": "online", "host2": "offline", "fan": "online"})
    );
    let (mut in_room, _) = Signal::join(&server, &token(&unique_room(), "host1")).await;
    assert_eq!(fan.recv().await.unwrap(), presence("busy"));
    in_room.send(json!({"type": "leave"})).await;
    assert_eq!(fan.recv().await.unwrap(), presence("online"));
    drop(host_phone);
    assert_eq!(fan.recv().await.unwrap(), presence("offline"));

    // Bad input is refused.
    fan.send(json!({"type": "presence_watch", "identities": vec!["x"; 101]}))
        .await;
    assert_eq!(fan.recv_type("error").await["code"], "malformed_message");
    let too_many = vec!["x"; 101].join(",");
    let (status, _) = get_status(&server, &format!("/v1/presence?identity={too_many}")).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_pages_newest_first_and_bad_requests_change_nothing() {
    let server = TestServer::start(&[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, created) =
            start_call(&server, json!({"caller": "alice", "callees": ["host1"]})).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["call"]["id"].as_str().unwrap().to_owned());
    }
    let first = api_json(&server, "/v1/calls?identity=host1&limit=2").await;
    let page: Vec<&str> = first["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, vec![ids[2].as_str(), ids[1].as_str()]);
    let next = first["next"].as_str().unwrap();
    let second = api_json(
        &server,
        &format!("/v1/calls?identity=host1&limit=2&after={next}"),
    )
    .await;
    assert_eq!(second["calls"][0]["id"], ids[0].as_str());
    assert_eq!(second["next"], Value::Null);

    for (body, code) in [
        (json!({"caller": "alice", "callees": []}), "callee_count"),
        (
            json!({"caller": "alice", "callees": ["alice"]}),
            "caller_is_callee",
        ),
        (
            json!({"caller": "alice", "callees": ["a", "a"]}),
            "duplicate_callee",
        ),
        (
            json!({"caller": "alice", "callees": ["a"], "ring_timeout": "2s"}),
            "bad_ring_timeout",
        ),
        (
            json!({"caller": "alice", "callees": vec!["h"; 17]}),
            "callee_count",
        ),
        (json!({"caller": "alice"}), "malformed"),
    ] {
        let (status, refused) = start_call(&server, body.clone()).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["error"]["code"], code, "{body}");
    }
    let (status, _) = get_status(&server, "/v1/calls/CA_unknown").await;
    assert_eq!(status, 404);
    let (status, _) = get_status(&server, "/v1/calls?identity=alice&limit=0").await;
    assert_eq!(status, 400);
    let all = api_json(&server, "/v1/calls?identity=alice&limit=100").await;
    assert_eq!(all["calls"].as_array().unwrap().len(), 3, "nothing logged");
}

async fn get_status(server: &TestServer, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(server.api(path))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ringing_when_the_server_dies_ends_failed_at_its_restart_and_its_hold_is_released() {
    let data = tempdir::TempDir::new();
    let mut server = TestServer::start_in(&data.0, &[]);
    credit(&server, "alice", 100, "pay_1").await;
    let (status, created) = start_call(&server, paid_call(45)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    assert_eq!(wallet(&server, "alice").await, (100, 15));
    server.kill9();

    let server = TestServer::start_in(&data.0, &[]);
    let row = logged(&server, &id).await;
    assert_eq!(row["state"], "ended", "{row}");
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["end_reason"], "failed");
    assert_eq!(
        row["callees"],
        json!([{"identity": "host1", "ring": "cancelled"}])
    );
    assert_eq!(wallet(&server, "alice").await, (100, 0));
    let platform = api_json(&server, "/v1/accounts/platform").await;
    assert_eq!(platform["balance"], 0, "nothing was charged: {platform}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_when_the_wallet_runs_dry_is_logged_completed_with_reason_insufficient_balance()
{
    let server = TestServer::start(&[]);
    // 30 coins at 600 a minute, billed by the second: 3 s of call.
    credit(&server, "alice", 30, "pay_1").await;
    let mut host_phone = Signal::device(&server, "host1").await;
    let (status, created) = start_call(
        &server,
        json!({
            "caller": "alice", "callees": ["host1"],
            "billing": {"payer": "alice", "payee": "host1", "rate": 600, "increments": "1/1"},
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    // The first increment (1 s at 600 a minute) is held.
    assert_eq!(wallet(&server, "alice").await, (30, 10));
    let ring = host_phone.recv_type("call_ring").await;
    let (_alice, alice_track) =
        join_with_media(&server, created["tokens"]["alice"].as_str().unwrap()).await;
    let alice_talks = keep_sending(alice_track);
    let (_host, host_track) = join_with_media(&server, ring["token"].as_str().unwrap()).await;
    let host_talks = keep_sending(host_track);

    let ended = next_state(&mut host_phone).await;
    let ended = if ended["state"] == "accepted" {
        next_state(&mut host_phone).await
    } else {
        ended
    };
    assert_eq!(ended["state"], "ended", "{ended}");
    assert_eq!(ended["end_reason"], "insufficient_balance");
    assert_eq!(ended["by"], Value::Null, "the server ended it");
    alice_talks.abort();
    host_talks.abort();
    ended_sessions(&server, 1).await;
    let row = logged(&server, &id).await;
    assert_eq!(row["outcome"], "completed", "{row}");
    assert_eq!(row["end_reason"], "insufficient_balance");
    assert_eq!(row["coins"], 30, "every coin the wallet had");
    assert_eq!(row["billed_seconds"], 3);
    assert_eq!(wallet(&server, "alice").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_metering_refuses_calls_call_inputs_and_billed_joins() {
    let data = tempdir::TempDir::new();
    let config = data.0.join("callgate.toml");
    std::fs::write(&config, "[metering]\nenabled = false\n").unwrap();
    let server = TestServer::start_in(&data.0, &["--config", config.to_str().unwrap()]);
    let (status, refused) = start_call(&server, json!({"caller": "a", "callees": ["b"]})).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "calls_unavailable");
    let mut phone = Signal::device(&server, "b").await;
    phone
        .send(json!({"type": "call_accept", "call_id": "CA_1"}))
        .await;
    assert_eq!(phone.recv_type("error").await["code"], "calls_unavailable");
    // It cannot bill, so a paid call must not run there for free.
    let room = unique_room();
    let mut s = Signal::connect(&server).await;
    s.send(json!({"type": "join", "token": paid_token(&room, "alice", "alice", Some("host"), 60)}))
        .await;
    let refused = s.recv().await.unwrap();
    assert_eq!(refused["code"], "billing_invalid", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("without metering"),
        "{refused}"
    );
    assert_eq!(s.recv().await.unwrap_err().code, 4007);
    // A free room still works.
    let (_free, joined) = Signal::join(&server, &token(&room, "bob")).await;
    assert_eq!(joined["type"], "joined", "{joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callgate_token_without_a_room_mints_a_presence_token() {
    let server = TestServer::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["token", "--dev", "--identity", "host7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut s = Signal::connect(&server).await;
    s.send(json!({"type": "connect", "token": token})).await;
    assert_eq!(
        s.recv().await.unwrap(),
        json!({"type": "connected", "protocol": 1, "identity": "host7"})
    );
    // It joins no room: `join` with it is refused.
    let mut joiner = Signal::connect(&server).await;
    joiner.send(json!({"type": "join", "token": token})).await;
    assert_eq!(joiner.recv().await.unwrap_err().code, 4004);
}
