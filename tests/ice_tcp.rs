//! ICE-TCP through the real server: clients with no UDP at all publish and
//! subscribe over the one passive TCP port, byte-identical; what is not an
//! ICE-TCP client is refused without harming anybody.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PACKETS: u32 = 400;

/// The sum over all label sets of metric `name` (a line `name{…} value`).
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let series = key.strip_prefix(name)?;
            (series.is_empty() || series.starts_with('{'))
                .then_some(())
                .filter(|()| series.contains(labels))?;
            value.parse::<f64>().ok()
        })
        .sum()
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.api("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn track_sids(publisher: &mut Client, n: usize) -> Vec<(String, String)> {
    let mut sids = Vec::new();
    while sids.len() < n {
        let m = publisher.event("track_published").await;
        if m["participant_sid"] == publisher.sid.as_str() {
            sids.push((
                m["track"]["sid"].as_str().unwrap().to_owned(),
                m["track"]["kind"].as_str().unwrap().to_owned(),
            ));
        }
    }
    sids
}

/// Every counted payload a subscriber got on `track`, checked byte for byte.
fn counted(client: &Client, publisher_sid: &str, track: &str, len: usize) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for p in client.received.payloads(publisher_sid, track) {
        if let Some(i) = payload_index(&p) {
            assert_eq!(p, marked_payload(i, len), "payload {i} arrived altered");
            seen.insert(i);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_only_clients_publish_and_subscribe_byte_identical() {
    // Two workers: the acceptor must route by the ufrag's worker prefix.
    let server = TestServer::start(&["--workers", "2"]);
    let room = unique_room();
    // Alice publishes over TCP, Bob subscribes over TCP, Carol over UDP.
    let mut alice = Client::join_tcp(&server, &token(&room, "alice")).await;
    let bob = Client::join_tcp(&server, &token(&room, "bob")).await;
    let carol = Client::join(&server, &token(&room, "carol")).await;

    let mut video = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
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

    // Warm up until both subscribers get both tracks.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let warm = async {
        loop {
            tick.tick().await;
            video.send(bytes::Bytes::from_static(b"warm-up")).await;
            audio.send(bytes::Bytes::from_static(b"warm-up")).await;
            let all = [&bob, &carol].iter().all(|s| {
                s.received
                    .tracks()
                    .iter()
                    .filter(|(stream, _)| *stream == alice.sid)
                    .count()
                    >= 2
            });
            if all {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, warm)
        .await
        .expect("every subscriber receives every track over its path");
    let sids = track_sids(&mut alice, 2).await;
    let sid_of = |kind: &str| sids.iter().find(|(_, k)| k == kind).unwrap().0.clone();
    let (video_sid, audio_sid) = (sid_of("video"), sid_of("audio"));

    // Alice's publisher and Bob's subscriber hold one connection each.
    let text = metrics(&server).await;
    let open = metric(&text, "callgate_ice_tcp_connections", "");
    assert!(open >= 2.0, "open ICE-TCP connections: {open}\n{text}");
    assert!(metric(&text, "callgate_ice_tcp_accepted_total", "") >= 2.0);

    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for i in 0..PACKETS {
        tick.tick().await;
        video.send(marked_payload(i, 1000)).await;
        audio.send(marked_payload(i, 120)).await;
    }
    for sub in [&bob, &carol] {
        let last = PACKETS - 1;
        let (a, v, au) = (alice.sid.clone(), video_sid.clone(), audio_sid.clone());
        sub.received
            .wait_for("the last packet of both tracks", move |map| {
                let has_last = |track: &str| {
                    map.get(&(a.clone(), track.to_owned()))
                        .is_some_and(|ps| ps.iter().any(|p| payload_index(p) == Some(last)))
                };
                has_last(&v) && has_last(&au)
            })
            .await;
        let v = counted(sub, &alice.sid, &video_sid, 1000);
        let a = counted(sub, &alice.sid, &audio_sid, 120);
        let need = (PACKETS as usize * 99).div_ceil(100);
        assert!(
            v.len() >= need,
            "{} got {}/{PACKETS} video packets",
            sub.identity,
            v.len()
        );
        assert!(
            a.len() >= need,
            "{} got {}/{PACKETS} audio packets",
            sub.identity,
            a.len()
        );
    }

    // Leaving closes the transports, and with them their TCP connections.
    alice.send(serde_json::json!({"type": "leave"}));
    bob.send(serde_json::json!({"type": "leave"}));
    let wait = async {
        loop {
            let text = metrics(&server).await;
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

    let text = metrics(&server).await;
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
