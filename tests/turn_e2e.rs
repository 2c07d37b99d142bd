//! End to end through the embedded relay: webrtc clients that may use relay
//! candidates only join with the ICE servers `joined` hands them, and media
//! flows between them through the TURN relay and the SFU.

mod common;
mod turn_support;

use common::{
    Client, Network, TestServer, camera_and_microphone, metric, metrics_text, publish_and_count,
    token, unique_room,
};
use webrtc::peer_connection::RTCIceServer;

/// The `ice_servers` of a `joined` message, as the webrtc client takes them.
fn ice_servers(joined: &serde_json::Value) -> Vec<RTCIceServer> {
    joined["ice_servers"]
        .as_array()
        .expect("joined carries ice_servers")
        .iter()
        .map(|s| RTCIceServer {
            urls: s["urls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_owned())
                .collect(),
            username: s["username"].as_str().unwrap_or_default().to_owned(),
            credential: s["credential"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Joins once to learn the ICE servers for `identity`, then for real with
/// relay candidates only.
async fn join_relayed(server: &TestServer, room: &str, identity: &str) -> Client {
    let t = token(room, identity);
    let servers = {
        let (mut probe, joined) = common::Signal::join(server, &t).await;
        probe.send(serde_json::json!({"type": "leave"})).await;
        let _ = probe.recv_type("left").await;
        ice_servers(&joined)
    };
    assert!(!servers.is_empty(), "the relay is on in --dev");
    Client::join_over(server, &t, Some(servers), Network::RelayOnly).await
}

#[tokio::test]
async fn media_flows_through_the_relay_only() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = join_relayed(&server, &room, "alice").await;
    let bob = join_relayed(&server, &room, "bob").await;

    let mut tracks = camera_and_microphone();
    publish_and_count(&mut alice, &mut tracks, &[&bob]).await;

    // It went through the relay: both directions counted there, alice's
    // publisher and bob's subscriber transport each holding an allocation.
    let text = metrics_text(&server).await;
    assert!(
        metric(&text, "callgate_turn_allocations", "") >= 2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "callgate_turn_packets_total",
            "direction=\"to_peer\""
        ) >= 400.0
    );
    assert!(
        metric(
            &text,
            "callgate_turn_packets_total",
            "direction=\"to_client\""
        ) >= 400.0
    );
    assert_eq!(metric(&text, "callgate_turn_denied_peers_total", ""), 0.0);
    alice.close().await;
    bob.close().await;
}
