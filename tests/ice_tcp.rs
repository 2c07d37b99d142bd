//! ICE-TCP through the real server: clients with no UDP at all publish and
//! subscribe over the one passive TCP port, byte-identical; what is not an
//! ICE-TCP client is refused without harming anybody.

mod common;

use std::time::Duration;

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_only_clients_publish_and_subscribe_byte_identical() {
    // Two workers: the acceptor must route by the ufrag's worker prefix.
    let server = TestServer::start(&["--workers", "2"]);
    let room = unique_room();
    // Alice publishes over TCP, Bob subscribes over TCP, Carol over UDP.
    let mut alice = Client::join_tcp(&server, &token(&room, "alice")).await;
    let bob = Client::join_tcp(&server, &token(&room, "bob")).await;
    let carol = Client::join(&server, &token(&room, "carol")).await;

    let video = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    let audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&video, &audio]).await;

    // The answer offers both host candidates: the worker's UDP port and the
    // shared passive TCP port.
    let answer = alice.publisher.remote_description().await.unwrap().sdp;
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let tcp_port = format!(" {} ", server.tcp.port());
    assert!(
        candidates
            .iter()
            .any(|c| c.contains(" tcp ") && c.contains(&tcp_port) && c.contains("tcptype passive")),
        "{answer}"
    );
    assert!(candidates.iter().any(|c| c.contains(" udp ")), "{answer}");

    let mut tracks = [(video, "video/VP8", 1000), (audio, "audio/opus", 120)];
    forward_and_count(&mut alice, &mut tracks, &[&bob, &carol]).await;

    // Alice's publisher and Bob's subscriber hold one connection each.
    let text = metrics_text(&server).await;
    let open = metric(&text, "callgate_ice_tcp_connections", "");
    assert!(open >= 2.0, "open ICE-TCP connections: {open}\n{text}");
    assert!(metric(&text, "callgate_ice_tcp_accepted_total", "") >= 2.0);

    // Leaving closes the transports, and with them their TCP connections.
    alice.send(serde_json::json!({"type": "leave"}));
    bob.send(serde_json::json!({"type": "leave"}));
    let wait = async {
        loop {
            let text = metrics_text(&server).await;
            if metric(&text, "callgate_ice_tcp_connections", "") == 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("ICE-TCP connections close with their transports");
}

/// Connects to the ICE-TCP port, writes `bytes`, and waits for the server
/// to close the connection.
async fn refused(server: &TestServer, bytes: &[u8]) {
    let mut s = TcpStream::connect(server.tcp).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept a connection that sent {bytes:02x?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tcp_connections_are_refused_and_counted() {
    let mut server = TestServer::start(&[]);
    // Not STUN: an HTTP request.
    refused(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // A frame longer than any first frame may be.
    refused(&server, &[0xff, 0xff, 0, 1, 0, 0]).await;
    // A well-formed Binding request for a ufrag nobody has.
    let mut m = rtc::stun::message::Message::new();
    let setters: Vec<Box<dyn rtc::stun::message::Setter>> = vec![
        Box::new(rtc::stun::message::BINDING_REQUEST),
        Box::new(rtc::stun::message::TransactionId::new()),
        Box::new(rtc::stun::textattrs::Username::new(
            rtc::stun::attributes::ATTR_USERNAME,
            "0000nobodyhasthis:client".into(),
        )),
    ];
    m.build(&setters).unwrap();
    let mut framed = (m.raw.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m.raw);
    refused(&server, &framed).await;

    let text = metrics_text(&server).await;
    let refused = |reason: &str| {
        metric(
            &text,
            "callgate_ice_tcp_refused_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert!(refused("bad_frame") >= 2.0, "{text}");
    assert!(refused("unknown_ufrag") >= 1.0, "{text}");
    assert_eq!(metric(&text, "callgate_ice_tcp_connections", ""), 0.0);
    assert!(server.is_running());
    // The server still serves UDP clients.
    let room = unique_room();
    let _alice = Client::join(&server, &token(&room, "alice")).await;
}
