//! The registry and placement against a real `redis-server` (Debian's,
//! started per test on a free loopback port, as scripts/test.sh installs
//! it).

use std::time::Duration;

use callgate_cluster::testing::TestRedis;
use callgate_cluster::{Cluster, ClusterConfig, ClusterError, NodeLoad};

async fn node(redis: &TestRedis, id: &str) -> Cluster {
    Cluster::connect(ClusterConfig {
        redis_url: redis.url().to_owned(),
        node_id: id.into(),
        url: format!("http://{id}.test:7880"),
        node_ttl: Duration::from_secs(6),
        key_prefix: "callgate:".into(),
    })
    .await
    .unwrap()
}

async fn raw(redis: &TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn idle() -> NodeLoad {
    NodeLoad::default()
}

fn cpu(load: f64) -> NodeLoad {
    NodeLoad {
        cpu: load,
        ..NodeLoad::default()
    }
}

#[tokio::test]
async fn nodes_placing_one_new_room_at_once_all_get_the_same_node() {
    let redis = TestRedis::start();
    let nodes = [
        node(&redis, "n1").await,
        node(&redis, "n2").await,
        node(&redis, "n3").await,
    ];
    for n in &nodes {
        n.refresh(idle(), false, 1).await.unwrap();
    }
    for round in 0..20 {
        let room = format!("room-{round}");
        let placing = nodes.iter().flat_map(|n| {
            let (n, room) = (n.clone(), room.clone());
            (0..4).map(move |_| {
                let (n, room) = (n.clone(), room.clone());
                tokio::spawn(async move { n.place(&room).await.unwrap().id })
            })
        });
        let mut owners = Vec::new();
        for p in placing.collect::<Vec<_>>() {
            owners.push(p.await.unwrap());
        }
        assert_eq!(owners.len(), 12);
        assert!(owners.iter().all(|o| o == &owners[0]), "{room}: {owners:?}");
    }
}

#[tokio::test]
async fn idle_nodes_share_new_rooms_evenly_and_a_busier_or_draining_node_gets_none() {
    let redis = TestRedis::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    a.refresh(idle(), false, 1).await.unwrap();
    b.refresh(cpu(0.05), false, 1).await.unwrap();
    for i in 0..10 {
        a.place(&format!("r{i}")).await.unwrap();
    }
    assert_eq!(a.placed_here().await.unwrap().len(), 5);
    assert_eq!(b.placed_here().await.unwrap().len(), 5);

    // b is now a whole load step busier: new rooms go to a, however many
    // it has.
    b.refresh(cpu(0.35), false, 2).await.unwrap();
    for i in 10..14 {
        assert_eq!(b.place(&format!("r{i}")).await.unwrap().id, "a");
    }
    // a drains: it keeps its rooms, new ones go to b.
    a.refresh(idle(), true, 3).await.unwrap();
    assert_eq!(
        b.place("r0").await.unwrap().id,
        a.place("r0").await.unwrap().id
    );
    assert_eq!(a.place("new").await.unwrap().id, "b");
    // With every node draining, nobody takes a new room.
    b.refresh(idle(), true, 4).await.unwrap();
    assert!(matches!(
        a.place("nowhere").await,
        Err(ClusterError::NoNode)
    ));
}

#[tokio::test]
async fn a_room_of_a_node_whose_entry_expired_is_placed_again_on_a_live_node() {
    let redis = TestRedis::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    a.refresh(idle(), false, 1).await.unwrap();
    let mut conn = raw(&redis).await;
    // Looking does not forget anybody: only a scan does.
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg("callgate:node:a")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=6000).contains(&ttl_ms),
        "the entry expires within the node TTL: {ttl_ms} ms"
    );
    assert_eq!(a.place("call").await.unwrap().id, "a");
    b.refresh(idle(), false, 1).await.unwrap();
    assert_eq!(b.place("call").await.unwrap().id, "a", "a is alive");
    assert_eq!(
        b.owner("call").await.unwrap().unwrap().url,
        "http://a.test:7880"
    );

    // What the TTL does when a stops refreshing.
    redis::cmd("DEL")
        .arg("callgate:node:a")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(b.owner("call").await.unwrap(), None, "a is gone");
    assert_eq!(b.nodes().await.unwrap().len(), 1);
    let registered: Vec<String> = redis::cmd("SMEMBERS")
        .arg("callgate:nodes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        registered.contains(&"a".to_owned()),
        "not forgotten by a look"
    );
    // Of the nodes that notice, exactly one forgets a (and cleans up after it).
    let c = node(&redis, "c").await;
    c.refresh(idle(), false, 1).await.unwrap();
    let scans = tokio::join!(b.scan(), c.scan(), b.scan(), c.scan());
    let gone: Vec<String> = [scans.0, scans.1, scans.2, scans.3]
        .into_iter()
        .flat_map(|s| s.unwrap().gone)
        .collect();
    assert_eq!(gone, ["a"]);
    assert_eq!(b.place("call").await.unwrap().id, "b");
    let ids: Vec<String> = b.nodes().await.unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, ["b", "c"], "a is forgotten");
    let registered: Vec<String> = redis::cmd("SMEMBERS")
        .arg("callgate:nodes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!registered.contains(&"a".to_owned()));
    assert!(a.placed_here().await.unwrap().is_empty());
    assert_eq!(b.placed_here().await.unwrap(), ["call"]);
}

#[tokio::test]
async fn only_the_owner_releases_a_room_and_a_clean_stop_releases_all_of_its_rooms() {
    let redis = TestRedis::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    a.refresh(idle(), false, 1).await.unwrap();
    assert_eq!(a.place("one").await.unwrap().id, "a");
    assert_eq!(a.place("two").await.unwrap().id, "a");
    b.refresh(cpu(0.9), false, 1).await.unwrap();
    assert!(!b.release("one").await.unwrap(), "not b's to release");
    assert_eq!(b.owner("one").await.unwrap().unwrap().id, "a");
    assert!(a.release("one").await.unwrap());
    assert_eq!(b.owner("one").await.unwrap(), None);
    assert_eq!(a.placed_here().await.unwrap(), ["two"]);

    a.deregister().await.unwrap();
    assert_eq!(b.owner("two").await.unwrap(), None);
    let ids: Vec<String> = b.nodes().await.unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, ["b"]);
    assert_eq!(b.place("two").await.unwrap().id, "b");
}

#[tokio::test]
async fn a_participant_is_found_on_its_node_while_the_node_lives() {
    let redis = TestRedis::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    a.refresh(idle(), false, 1).await.unwrap();
    b.refresh(idle(), false, 1).await.unwrap();
    a.note_participant("PA_1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(b.participant_node("PA_1").await.unwrap().unwrap().id, "a");
    assert_eq!(b.participant_node("PA_2").await.unwrap(), None);
    a.forget_participant("PA_1").await.unwrap();
    assert_eq!(b.participant_node("PA_1").await.unwrap(), None);
}

#[tokio::test]
async fn names_that_cannot_be_key_parts_are_refused() {
    let redis = TestRedis::start();
    let a = node(&redis, "a").await;
    a.refresh(idle(), false, 1).await.unwrap();
    for bad in ["", "with space", "new\nline", &"x".repeat(257)] {
        assert!(
            matches!(a.place(bad).await, Err(ClusterError::Invalid { .. })),
            "{bad:?}"
        );
    }
    let refused = Cluster::connect(ClusterConfig {
        redis_url: redis.url().to_owned(),
        node_id: "two words".into(),
        url: "http://x".into(),
        node_ttl: Duration::from_secs(6),
        key_prefix: "callgate:".into(),
    })
    .await;
    assert!(matches!(refused, Err(ClusterError::Invalid { .. })));
}

#[tokio::test]
async fn presence_shares_of_each_node_add_up_each_write_is_announced_and_a_gone_nodes_shares_are_removed()
 {
    use callgate_cluster::PresenceShare;
    let redis = TestRedis::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let online = PresenceShare {
        devices: 1,
        ..PresenceShare::default()
    };
    let in_room = PresenceShare {
        rooms: 1,
        engaged: true,
        ..PresenceShare::default()
    };
    let mut heard = Box::pin(a.call_messages().await.unwrap());
    a.share_presence("alice", online, "alice changed")
        .await
        .unwrap();
    b.share_presence("alice", in_room, "alice changed")
        .await
        .unwrap();
    b.share_presence("bob", online, "bob changed")
        .await
        .unwrap();
    // Each write announces itself on the call channel.
    use futures_util::StreamExt;
    let announced: Vec<String> = heard.as_mut().take(3).collect().await;
    assert_eq!(announced, ["alice changed", "alice changed", "bob changed"]);
    let mut alice = a.presence_shares("alice").await.unwrap();
    alice.sort_by_key(|s| s.devices);
    assert_eq!(alice, vec![in_room, online]);

    // An empty share is removed, not written.
    a.share_presence("alice", PresenceShare::default(), "alice changed")
        .await
        .unwrap();
    assert_eq!(b.presence_shares("alice").await.unwrap(), vec![in_room]);

    let mut forgotten = a.forget_presence_of("b").await.unwrap();
    forgotten.sort();
    assert_eq!(forgotten, vec!["alice".to_owned(), "bob".to_owned()]);
    assert!(a.presence_shares("alice").await.unwrap().is_empty());
    assert!(a.presence_shares("bob").await.unwrap().is_empty());
    assert!(a.forget_presence_of("b").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_call_message_reaches_every_subscribed_node_the_sender_included() {
    use futures_util::StreamExt;
    let redis = TestRedis::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let mut at_a = Box::pin(a.call_messages().await.unwrap());
    let mut at_b = Box::pin(b.call_messages().await.unwrap());
    a.publish_call_message("one").await.unwrap();
    b.publish_call_message("two").await.unwrap();
    for stream in [&mut at_a, &mut at_b] {
        let got: Vec<String> = stream.as_mut().take(2).collect().await;
        assert_eq!(got, vec!["one".to_owned(), "two".to_owned()]);
    }
}
