//! Media through the real server: known RTP payloads from a publisher reach
//! every subscriber byte-identical.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_payloads_reach_every_subscriber_byte_identical() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let carol = Client::join(&server, &token(&room, "carol")).await;
    let mut tracks = [
        (
            LocalTrack::new(RtpCodecKind::Video, vp8(), 96),
            "video/VP8",
            1000,
        ),
        (
            LocalTrack::new(RtpCodecKind::Audio, opus(), 111),
            "audio/opus",
            120,
        ),
    ];
    publish_and_count(&mut alice, &mut tracks, &[&bob, &carol]).await;
    // The publisher does not receive its own tracks.
    assert!(alice.received.tracks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_is_forwarded_too() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let mut tracks = [(
        LocalTrack::new(RtpCodecKind::Video, h264(), 102),
        "video/H264",
        1100,
    )];
    publish_and_count(&mut alice, &mut tracks, &[&bob]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parties_each_receive_the_other_two() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut clients = Vec::new();
    let mut tracks = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let c = Client::join(&server, &token(&room, name)).await;
        let t = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
        c.publish(&[&t]).await;
        clients.push(c);
        tracks.push(t);
    }
    // Each publisher sends its own index in every payload until everyone has
    // heard everyone else.
    let sids: Vec<String> = clients.iter().map(|c| c.sid.clone()).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let everyone_heard = |clients: &[Client]| {
        clients.iter().enumerate().all(|(i, c)| {
            let streams: BTreeSet<String> =
                c.received.tracks().into_iter().map(|(s, _)| s).collect();
            let expected: BTreeSet<String> = sids
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s.clone())
                .collect();
            streams == expected
        })
    };
    let wait = async {
        let mut n = 0;
        while !everyone_heard(&clients) {
            tick.tick().await;
            for (i, t) in tracks.iter_mut().enumerate() {
                t.send(marked_payload(i as u32, 80 + n % 40)).await;
            }
            n += 1;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("everyone hears everyone");
    for (i, c) in clients.iter().enumerate() {
        for (stream, track) in c.received.tracks() {
            let from = sids.iter().position(|s| *s == stream).unwrap();
            assert_ne!(from, i, "{} received its own track", c.identity);
            for p in c.received.payloads(&stream, &track) {
                assert_eq!(
                    payload_index(&p),
                    Some(from as u32),
                    "payload from the wrong publisher"
                );
                assert_eq!(p, marked_payload(from as u32, p.len()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublishing_and_leaving_reach_the_others() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let mut bob = Client::join(&server, &token(&room, "bob")).await;
    let mut video = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&video, &audio]).await;
    warm_up(&mut [&mut video, &mut audio], &[&bob], &alice.sid).await;
    let sids = track_sids(&mut alice, 2).await;
    assert!(
        metric(
            &metrics_text(&server).await,
            "callgate_keyframe_requests_total",
            ""
        ) >= 1.0,
        "a new video subscriber makes the server ask for a keyframe"
    );

    // removeTrack + renegotiation unpublishes the video.
    let (video_sid, _) = sids.iter().find(|(_, c)| c == "video/VP8").unwrap().clone();
    let mut video_sender = None;
    for s in alice.publisher.get_senders().await {
        if s.track().track().await.kind() == RtpCodecKind::Video {
            video_sender = Some(s);
        }
    }
    let sender = video_sender.expect("the video sender");
    alice.publisher.remove_track(&sender).await.unwrap();
    alice.publish(&[]).await;
    let m = bob.event("track_unpublished").await;
    assert_eq!(m["track_sid"], video_sid.as_str());
    assert_eq!(m["participant_sid"], alice.sid.as_str());

    // Leaving takes her remaining track and herself away.
    alice.send(serde_json::json!({"type": "leave"}));
    let m = bob.event("track_unpublished").await;
    assert_ne!(m["track_sid"], video_sid.as_str());
    let m = bob.event("participant_left").await;
    assert_eq!(
        (m["identity"].as_str(), m["reason"].as_str()),
        (Some("alice"), Some("left"))
    );
    assert_eq!(
        metric(&metrics_text(&server).await, "callgate_tracks", ""),
        0.0
    );
    assert_eq!(
        metric(&metrics_text(&server).await, "callgate_participants", ""),
        1.0
    );
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_media_ports_is_dropped_and_counted() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&audio]).await;
    warm_up(&mut [&mut audio], &[&bob], &alice.sid).await;
    let (track_sid, _) = track_sids(&mut alice, 1).await.remove(0);

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 1500]];
    for n in [1usize, 12, 20, 100, 1200] {
        junk.push((0..n).map(|_| rand::random::<u8>()).collect());
    }
    // A STUN binding request with a known-looking USERNAME and a broken
    // MESSAGE-INTEGRITY, and an RTP packet for an SSRC nobody owns.
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
    stun.extend_from_slice(b"abcd:efg");
    junk.push(stun);
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    rtp.extend_from_slice(&[0; 100]);
    junk.push(rtp);
    for addr in &server.media {
        for j in &junk {
            socket.send_to(j, addr).await.unwrap();
        }
    }
    // The server answered none of it and kept going: media still flows.
    let before = bob.received.payloads(&alice.sid, &track_sid).len();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let wait = async {
        let mut i = 0;
        while bob.received.payloads(&alice.sid, &track_sid).len() < before + 20 {
            tick.tick().await;
            audio.send(marked_payload(i, 100)).await;
            i += 1;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("media flows after the garbage");
    let dropped = metric(
        &metrics_text(&server).await,
        "callgate_dropped_packets_total",
        "",
    );
    assert!(
        dropped >= (junk.len() * server.media.len()) as f64,
        "dropped {dropped}"
    );
    let mut buf = [0u8; 2048];
    assert!(
        socket.try_recv_from(&mut buf).is_err(),
        "the server sent something back to garbage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_its_transports_is_gone_at_once() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let mut bob = Client::join(&server, &token(&room, "bob")).await;
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&audio]).await;
    warm_up(&mut [&mut audio], &[&bob], &alice.sid).await;
    bob.event("track_published").await;

    // Alice's app dies without a word on signaling: its peer connections
    // close (DTLS close_notify); the server ends her session itself.
    let started = std::time::Instant::now();
    alice.close().await;
    let m = bob.event("participant_left").await;
    assert_eq!(
        (m["identity"].as_str(), m["reason"].as_str()),
        (Some("alice"), Some("disconnected"))
    );
    assert_eq!(alice.event("left").await["reason"], "disconnected");
    eprintln!("participant_left after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_over_ipv6() {
    let config = std::env::temp_dir().join(format!("callgate-{}.toml", rand::random::<u64>()));
    std::fs::write(
        &config,
        "[http]\nbind = \"::1\"\n[rtc]\nbind_ip = \"::1\"\n",
    )
    .unwrap();
    let server = TestServer::start(&["--config", config.to_str().unwrap()]);
    std::fs::remove_file(&config).unwrap();
    assert!(
        server.media.iter().all(|a| a.is_ipv6()),
        "{:?}",
        server.media
    );
    let room = unique_room();
    let mut alice = Client::join_over(&server, &token(&room, "alice"), None, Network::UdpV6).await;
    let bob = Client::join_over(&server, &token(&room, "bob"), None, Network::UdpV6).await;
    let mut tracks = [(
        LocalTrack::new(RtpCodecKind::Audio, opus(), 111),
        "audio/opus",
        160,
    )];
    publish_and_count(&mut alice, &mut tracks, &[&bob]).await;
}
