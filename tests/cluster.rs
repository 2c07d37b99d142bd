//! Several nodes on one Redis and one PostgreSQL ledger (docs/operations.md
//! "Running several nodes"): three callgate nodes on 127.0.0.2–4 and real
//! WebRTC clients.

mod common;
mod turn_support;

use std::time::{Duration, Instant};

use callgate_client::{ClientError, Signaling};
use common::cluster::TestCluster;
use common::*;
use serde_json::{Value, json};

fn names(body: &Value, list: &str, field: &str) -> Vec<String> {
    let mut names: Vec<String> = body[list]
        .as_array()
        .unwrap_or_else(|| panic!("a list of {list}: {body}"))
        .iter()
        .map(|r| r[field].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_joining_through_different_nodes_meet_in_one_room_hear_each_other_and_are_managed_from_any_node()
 {
    let cluster = TestCluster::start(3).await;
    let room = unique_room();
    let before = cluster.room_counts().await;
    let mut alice = Client::join(&cluster.nodes[0], &token(&room, "alice")).await;
    let bob = Client::join(&cluster.nodes[1], &token(&room, "bob")).await;
    let mut carol = Client::join(&cluster.nodes[2], &token(&room, "carol")).await;

    // One room, on one node; the joins that reached another node were
    // relayed to it.
    let owner = cluster.node_of(&before).await;
    assert_eq!(
        names(&carol.joined, "participants", "identity"),
        ["alice", "bob"]
    );
    assert_eq!(cluster.total("callgate_signaling_relayed_total").await, 2.0);

    // Media goes to the room's node and comes back to everyone.
    let mut tracks = camera_and_microphone();
    publish_and_count(&mut alice, &mut tracks, &[&bob, &carol]).await;

    // The server API answers the same from every node, and acts through
    // a node the room does not live on.
    for node in &cluster.nodes {
        let (status, body) = api_send(
            node,
            reqwest::Method::GET,
            &format!("/v1/rooms/{room}/participants"),
            Value::Null,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            names(&body, "participants", "identity"),
            ["alice", "bob", "carol"]
        );
    }
    let elsewhere = &cluster.nodes[(owner + 1) % 3];
    let (status, body) = api_send(
        elsewhere,
        reqwest::Method::DELETE,
        &format!("/v1/rooms/{room}/participants/carol"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        carol.event("left").await,
        json!({"type": "left", "reason": "removed"})
    );
    let (status, body) = api_send(
        elsewhere,
        reqwest::Method::DELETE,
        &format!("/v1/rooms/{room}/participants/carol"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "participant_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_made_through_one_node_spread_over_all_and_every_node_lists_them_all() {
    let cluster = TestCluster::start(3).await;
    let rooms: Vec<String> = (0..6).map(|i| format!("{}-{i}", unique_room())).collect();
    for room in &rooms {
        let (status, body) = api_send(
            &cluster.nodes[0],
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"name": room}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["room"]["name"], room.as_str());
    }
    // Idle nodes take new rooms in turn.
    assert_eq!(cluster.room_counts().await, [2.0, 2.0, 2.0]);
    let mut expected = rooms.clone();
    expected.sort();
    for node in &cluster.nodes {
        let (status, body) = api_send(node, reqwest::Method::GET, "/v1/rooms", Value::Null).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(names(&body, "rooms", "name"), expected);
    }
    // Closing a room through any node closes it where it lives.
    let (status, body) = api_send(
        &cluster.nodes[2],
        reqwest::Method::DELETE,
        &format!("/v1/rooms/{}", rooms[0]),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (_, body) = api_send(
        &cluster.nodes[1],
        reqwest::Method::GET,
        "/v1/rooms",
        Value::Null,
    )
    .await;
    expected.retain(|r| r != &rooms[0]);
    assert_eq!(names(&body, "rooms", "name"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_limit_holds_when_joins_race_through_different_nodes() {
    let cluster = TestCluster::start(3).await;
    let room = unique_room();
    let (status, body) = api_send(
        &cluster.nodes[1],
        reqwest::Method::POST,
        "/v1/rooms",
        json!({"name": room, "max_participants": 2}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Nine joins at once, three through each node.
    let joins = (0..9).map(|i| {
        let url = cluster.nodes[i % 3].ws_url();
        let token = token(&room, &format!("user{i}"));
        tokio::spawn(async move { Signaling::join(&url, &token).await })
    });
    let mut joined = Vec::new();
    let mut refused = 0;
    for join in joins.collect::<Vec<_>>() {
        match join.await.unwrap() {
            Ok(session) => joined.push(session),
            Err(ClientError::Closed { code, reason }) => {
                assert_eq!((code, reason.as_str()), (4005, "room_full"));
                refused += 1;
            }
            Err(e) => panic!("neither joined nor room_full: {e}"),
        }
    }
    assert_eq!((joined.len(), refused), (2, 7));
    let (_, body) = api_send(
        &cluster.nodes[0],
        reqwest::Method::GET,
        &format!("/v1/rooms/{room}/participants"),
        Value::Null,
    )
    .await;
    assert_eq!(body["participants"].as_array().map(Vec::len), Some(2));
}

/// How long a killed node's rooms stay placed on it, at most: the node
/// TTL the test configures, plus one refresh of the node that notices.
const NODE_TTL: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call_has_its_sessions_closed_and_its_rooms_placed_again() {
    let mut cluster = TestCluster::start_with(
        3,
        &[
            ("CALLGATE_CLUSTER_NODE_TTL", "3s"),
            ("CALLGATE_METERING_CHECKPOINT_INTERVAL", "1s"),
        ],
    )
    .await;
    let (status, body) = api_send(
        &cluster.nodes[0],
        reqwest::Method::POST,
        "/v1/wallets/alice/credits",
        json!({"coins": 1000, "reference": "pay_1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let room = unique_room();
    let owner = cluster.make_room(&room, 0).await;
    let (a, b) = ((owner + 1) % 3, (owner + 2) % 3);

    // A paid call on the owner, its two ends relayed through the others.
    let (mut alice, _alice_track) = money::join_with_media(
        &cluster.nodes[a],
        &money::paid_token(&room, "alice", "alice", Some("bob"), 60),
    )
    .await;
    let (mut bob, _bob_track) =
        money::join_with_media(&cluster.nodes[b], &token(&room, "bob")).await;
    alice.event("balance").await;
    let billed = Instant::now();
    // A few checkpoints' worth of call.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    cluster.nodes[owner].kill9();
    let killed = Instant::now();
    for client in [&mut alice, &mut bob] {
        client.event("_closed").await;
        assert_eq!(
            client.closed,
            Some(Closed {
                code: 4011,
                reason: "node_lost".into()
            }),
            "{} is told its session's node is gone",
            client.identity
        );
    }

    // The room can be made again, on a node that lives, once the dead
    // node's entry has expired.
    let live = &cluster.nodes[a];
    TestCluster::eventually("the room placed again", || async {
        let (status, _) = api_send(
            live,
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"name": room}),
        )
        .await;
        status == 201
    })
    .await;
    let replaced_after = killed.elapsed();
    assert!(
        replaced_after < NODE_TTL + Duration::from_secs(3),
        "placed again {replaced_after:?} after the kill"
    );

    // Another node closed the dead node's billed session at its last
    // checkpoint: nothing charged after the kill, no hold left, every coin
    // charged went to the payee or the platform.
    TestCluster::eventually("the dead node's session closed", || async {
        let rows = money::export_rows(live, "sessions").await;
        rows.len() == 1 && !rows[0]["ended_at"].is_null()
    })
    .await;
    eprintln!(
        "after the kill: room placed again in {replaced_after:?}, session closed in {:?}",
        killed.elapsed()
    );
    let rows = money::export_rows(live, "sessions").await;
    assert_eq!(rows[0]["end_reason"], "recovered", "{}", rows[0]);
    let charged = rows[0]["coins"].as_i64().unwrap();
    let ran = (killed - billed).as_secs_f64();
    assert!(
        charged >= 1 && charged as f64 <= ran.ceil() + 1.0,
        "charged {charged} for {ran:.1} s"
    );
    let wallet = api_json(live, "/v1/wallets/alice").await;
    assert_eq!(wallet["held"], 0, "{wallet}");
    assert_eq!(wallet["balance"], 1000 - charged, "{wallet}");
    let earned = money::balance(live, "earnings:bob").await;
    let platform = money::balance(live, "platform").await;
    assert_eq!(earned + platform, charged);

    // The two rejoin (as the SDK does on node_lost) and hear each other on
    // the room's new node.
    let mut alice = Client::join(live, &token(&room, "alice")).await;
    let bob = Client::join(&cluster.nodes[b], &token(&room, "bob")).await;
    let mut tracks = camera_and_microphone();
    publish_and_count(&mut alice, &mut tracks, &[&bob]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_takes_no_new_rooms_keeps_its_calls_and_ends_the_rest_at_its_deadline() {
    let mut cluster = TestCluster::start_with(2, &[("CALLGATE_CLUSTER_DRAIN_TIMEOUT", "4s")]).await;
    let room = unique_room();
    let owner = cluster.make_room(&room, 0).await;
    let other = 1 - owner;
    let owner_id = format!("n{}", owner + 1);
    let mut alice = Client::join(&cluster.nodes[other], &token(&room, "alice")).await;

    cluster.drain(owner).await;
    // New rooms go to the other node, through either node.
    let counts = cluster.room_counts().await;
    for i in 0..4 {
        let (status, body) = api_send(
            &cluster.nodes[i % 2],
            reqwest::Method::POST,
            "/v1/rooms",
            json!({"name": format!("{room}-new-{i}")}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut expected = counts.clone();
    expected[other] += 4.0;
    assert_eq!(cluster.room_counts().await, expected);
    // The running room still takes its participants.
    let bob = Client::join(&cluster.nodes[other], &token(&room, "bob")).await;
    assert_eq!(names(&bob.joined, "participants", "identity"), ["alice"]);

    // At the deadline the sessions still there end as node_drained, and
    // the node stops cleanly and leaves the registry.
    assert_eq!(
        alice.event("left").await,
        json!({"type": "left", "reason": "node_drained"})
    );
    let exit = cluster.wait_exit(owner).await;
    assert!(exit.success(), "{exit}");
    assert_eq!(cluster.registry_entry(&owner_id).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_stops_once_its_last_session_ends() {
    let mut cluster =
        TestCluster::start_with(2, &[("CALLGATE_CLUSTER_DRAIN_TIMEOUT", "10m")]).await;
    let room = unique_room();
    let owner = cluster.make_room(&room, 1).await;
    let mut alice = Client::join(&cluster.nodes[owner], &token(&room, "alice")).await;
    cluster.drain(owner).await;
    assert!(cluster.nodes[owner].is_running(), "a call still runs there");
    alice.send(json!({"type": "leave"}));
    assert_eq!(
        alice.event("left").await,
        json!({"type": "left", "reason": "left"})
    );
    let exit = cluster.wait_exit(owner).await;
    assert!(exit.success(), "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_are_the_rooms_nodes_and_their_credentials_work_on_every_relay() {
    let cluster = TestCluster::start(3).await;
    let room = unique_room();
    let owner = cluster.make_room(&room, 0).await;
    let owner_ip = format!("127.0.0.{}", owner + 2);
    // Joined through another node: the TURN URLs are the room's node's.
    let elsewhere = &cluster.nodes[(owner + 1) % 3];
    let (_session, welcome) = Signaling::join(&elsewhere.ws_url(), &token(&room, "carol"))
        .await
        .unwrap();
    let server = welcome.ice_servers.first().expect("the relay is on");
    assert!(!server.urls.is_empty());
    for url in &server.urls {
        assert!(
            url.contains(&owner_ip),
            "{url} is not on the room's node {owner_ip}"
        );
    }
    // Minted with the shared secret: every node's relay takes them.
    let user = server.username.as_deref().unwrap();
    let pass = server.credential.as_deref().unwrap();
    for node in &cluster.nodes {
        let relay = node.turn_udp.expect("each node runs the relay");
        let mut turn = turn_support::TurnClient::connect(
            turn_support::Transport::Udp,
            relay,
            user,
            pass,
            None,
        )
        .await;
        let allocated = turn.allocate_result().await;
        assert!(allocated.is_ok(), "{relay}: {allocated:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rings_and_is_answered_across_nodes_and_presence_reads_the_same_on_every_node() {
    use common::calls::*;
    use common::money::*;
    let cluster = TestCluster::start(3).await;
    let [n1, n2, n3] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    credit(n3, "alice", 100, "pay_1").await;
    let presence =
        |who: &str, status: &str| json!({"type": "presence", "identity": who, "status": status});
    // Two presence messages, in identity order.
    async fn two(s: &mut Signal) -> Vec<Value> {
        let mut told = vec![s.recv().await.unwrap(), s.recv().await.unwrap()];
        told.sort_by_key(|m| m["identity"].as_str().unwrap_or_default().to_owned());
        told
    }

    // A fan on n3 watches a host whose phone is on n1 and a caller whose
    // phone is on n2.
    let mut fan = Signal::device(n3, "fan").await;
    fan.send(json!({"type": "presence_watch", "identities": ["host1", "alice"]}))
        .await;
    assert_eq!(
        two(&mut fan).await,
        [presence("alice", "offline"), presence("host1", "offline")]
    );
    let mut host_phone = Signal::device(n1, "host1").await;
    assert_eq!(fan.recv().await.unwrap(), presence("host1", "online"));
    let mut alice_phone = Signal::device(n2, "alice").await;
    assert_eq!(fan.recv().await.unwrap(), presence("alice", "online"));

    // The call is started through n3; it rings the host's phone on n1 and
    // tells the caller's phone on n2, wherever its room was placed.
    let (status, created) = start_call(n3, paid_call(45)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    let ring = host_phone.recv_type("call_ring").await;
    assert_eq!(ring["call_id"], id.as_str());
    assert_eq!(ring["token"], created["tokens"]["host1"]);
    assert_eq!(
        alice_phone.recv_type("call_state").await["state"],
        "ringing"
    );
    // The caller is busy from the start, the host once it answers.
    assert_eq!(fan.recv().await.unwrap(), presence("alice", "busy"));
    for node in &cluster.nodes {
        assert_eq!(
            api_json(node, "/v1/presence?identity=alice,host1,fan,nobody").await["presence"],
            json!({"alice": "busy", "host1": "online", "fan": "online", "nobody": "offline"})
        );
    }

    // The host answers on n1; both phones hear it.
    accept(&mut host_phone, &mut alice_phone, &id, "host1").await;
    assert_eq!(fan.recv().await.unwrap(), presence("host1", "busy"));

    // Each joins the call's room through the node its phone is on, and
    // they talk; then alice hangs up.
    let talk = Talk::start(
        n2,
        created["tokens"]["alice"].as_str().unwrap(),
        n1,
        ring["token"].as_str().unwrap(),
    )
    .await;
    talk.caller_hangs_up("alice", [&mut host_phone, &mut alice_phone])
        .await;

    // She pays the first increment, exactly.
    let driver = &cluster.nodes[cluster.owner_of(&format!("call-{id}")).await];
    let session = ended_sessions(driver, 1).await.remove(0);
    assert_eq!(session["coins"], 15);
    let row = logged(n2, &id).await;
    assert_eq!(row["outcome"], "completed", "{row}");
    assert_eq!(row["coins"], 15);
    assert_eq!(wallet(n1, "alice").await, (85, 0));

    // A call input for no call is refused, from any node.
    alice_phone
        .send(json!({"type": "call_accept", "call_id": "CA_0123"}))
        .await;
    let refused = alice_phone.recv_type("error").await;
    assert_eq!(refused["code"], "call_not_found", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_connects_to_another_node_while_a_call_rings_it_is_rung_there() {
    use common::calls::*;
    // Short refreshes, so that several pass while the call rings.
    let cluster = TestCluster::start_with(2, &[("CALLGATE_CLUSTER_NODE_TTL", "2s")]).await;
    let body = json!({"caller": "alice", "callees": ["host1"], "ring_timeout": "45s"});
    let (status, created) = start_call(&cluster.nodes[0], body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap();
    let room = format!("call-{id}");
    let driver = cluster.owner_of(&room).await;
    // Nobody has opened the call's room yet, and its node refreshes its
    // placements three times: the room stays placed there while it rings.
    let driver_id = format!("n{}", driver + 1);
    let placed_ms = cluster
        .registry_entry(&driver_id)
        .await
        .unwrap()
        .refreshed_ms;
    // Refreshes come every 667 ms: one 1.9 s later is the third at least
    // (a placement missing from two in a row is released).
    TestCluster::eventually("three refreshes of the call's node", || async {
        let entry = cluster.registry_entry(&driver_id).await.unwrap();
        entry.refreshed_ms >= placed_ms + 1900
    })
    .await;
    assert_eq!(cluster.owner_of(&room).await, driver);
    // The host's phone wakes (a push) and connects to the other node.
    let mut phone = Signal::device(&cluster.nodes[1 - driver], "host1").await;
    let ring = phone.recv_type("call_ring").await;
    assert_eq!(ring["call_id"], id);
    assert_eq!(ring["token"], created["tokens"]["host1"]);
    // It declines there; the call's node ends the call.
    phone
        .send(json!({"type": "call_reject", "call_id": id}))
        .await;
    let ended = next_state(&mut phone).await;
    assert_eq!(ended["state"], "rejected", "{ended}");
    assert_eq!(ended["end_reason"], "declined");
    assert_eq!(logged(&cluster.nodes[0], id).await["outcome"], "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_its_call_rings_has_the_call_ended_failed_and_its_presence_forgotten() {
    use common::calls::*;
    let mut cluster = TestCluster::start(2).await;
    let body = json!({"caller": "alice", "callees": ["host1"], "ring_timeout": "45s"});
    let (status, created) = start_call(&cluster.nodes[0], body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    let driver = cluster.owner_of(&format!("call-{id}")).await;
    let survivor = 1 - driver;
    let presence = |body: Value| body["presence"]["alice"].clone();
    let path = "/v1/presence?identity=alice";
    assert_eq!(
        presence(api_json(&cluster.nodes[survivor], path).await),
        "busy"
    );

    // The node driving the call dies: the survivor notices (its scan), ends
    // the call in the log, and alice is no longer busy anywhere.
    cluster.nodes[driver].kill9();
    let survivor = &cluster.nodes[survivor];
    TestCluster::eventually("the dead node's call ended", || async {
        logged(survivor, &id).await["state"] == "ended"
    })
    .await;
    let row = logged(survivor, &id).await;
    assert_eq!(row["outcome"], "failed", "{row}");
    assert_eq!(row["callees"][0]["ring"], "cancelled", "{row}");
    TestCluster::eventually("alice's presence forgotten", || async {
        presence(api_json(survivor, path).await) == "offline"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_drives_its_ringing_call_to_its_end_before_it_stops() {
    use common::calls::*;
    let mut cluster =
        TestCluster::start_with(2, &[("CALLGATE_CLUSTER_DRAIN_TIMEOUT", "10m")]).await;
    let body = json!({"caller": "alice", "callees": ["host1"], "ring_timeout": "45s"});
    let (status, created) = start_call(&cluster.nodes[0], body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["call"]["id"].as_str().unwrap().to_owned();
    let driver = cluster.owner_of(&format!("call-{id}")).await;
    let other = 1 - driver;
    let mut alice_phone = Signal::device(&cluster.nodes[other], "alice").await;

    // The call's node is told to stop while the call rings: with no
    // participant anywhere, its drain waits for the call.
    cluster.nodes[driver].sigterm();
    let node = &cluster.nodes[driver];
    TestCluster::eventually("the drain waiting for the call", || async {
        let text = metrics_text(node).await;
        metric(&text, "callgate_cluster_drain_waiting", "for=\"calls\"") == 1.0
    })
    .await;
    alice_phone
        .send(json!({"type": "call_cancel", "call_id": id}))
        .await;
    // The answer: the call's end, not a refusal from a node that stopped.
    let cancelled = loop {
        let m = alice_phone.recv().await.expect("the phone stays connected");
        if m["type"] == "error" || m["type"] == "call_state" {
            break m;
        }
    };
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["by"], "alice");
    // With its last call over, it stops.
    let exit = cluster.wait_exit(driver).await;
    assert!(exit.success(), "{exit}");
    assert_eq!(
        logged(&cluster.nodes[other], &id).await["outcome"],
        "cancelled"
    );
}
