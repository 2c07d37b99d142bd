//! Media through the real server: known RTP payloads from a publisher reach
//! every subscriber byte-identical.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_local::TrackLocal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_payloads_reach_every_subscriber_byte_identical() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let carol = Client::join(&server, &token(&room, "carol")).await;
    let mut tracks = camera_and_microphone();
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
async fn a_peer_whose_media_stops_is_reconnecting_then_lost_after_the_grace() {
    let server = TestServer::start_with_env(&[("CALLGATE_ROOM_RECONNECT_GRACE", "2s")], &[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let mut bob = Client::join(&server, &token(&room, "bob")).await;
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&audio]).await;
    warm_up(&mut [&mut audio], &[&bob], &alice.sid).await;
    bob.event("track_published").await;

    // Alice's peer connections close; her WebSocket stays. After the
    // silence window she is reconnecting (and told to restart ICE), after
    // the grace she is gone.
    let started = std::time::Instant::now();
    alice.close().await;
    let m = bob.event("participant_reconnecting").await;
    assert_eq!(m["identity"], "alice");
    let told = alice.event("reconnecting").await;
    assert_eq!(told["reason"], "media_silent");
    let silent_for = started.elapsed();
    assert!(
        silent_for >= Duration::from_secs(5),
        "reconnecting after {silent_for:?}, before the 5 s silence window"
    );
    let m = bob.event("participant_left").await;
    assert_eq!(
        (m["identity"].as_str(), m["reason"].as_str()),
        (Some("alice"), Some("connection_lost"))
    );
    assert_eq!(alice.event("left").await["reason"], "connection_lost");
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

/// Lines of `sdp`, less those starting with `prefix`.
fn without(sdp: &str, prefix: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !l.starts_with(prefix))
        .collect()
}

/// `sdp` with `line` added after every m-line's first line.
fn with_media_line(sdp: &str, line: &str) -> String {
    sdp.split_inclusive('\n')
        .flat_map(|l| {
            if l.starts_with("m=") {
                vec![l.to_owned(), format!("{line}\r\n")]
            } else {
                vec![l.to_owned()]
            }
        })
        .collect()
}

/// Sends `sdp` as a publish offer and expects `invalid_sdp`.
async fn refused_offer(client: &mut Client, what: &str, sdp: String) {
    client.send(serde_json::json!({"type": "publish_offer", "sdp": sdp}));
    let e = client.event("error").await;
    assert_eq!(e["code"], "invalid_sdp", "{what}: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_offer_leaves_the_publisher_ready_for_the_next() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice
        .publisher
        .add_track(audio.track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = alice.publisher.create_offer(None).await.unwrap().sdp;
    let fingerprint = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=fingerprint:"))
        .expect("the client's offer has a fingerprint")
        .to_owned();
    let hex = fingerprint.split_once(' ').unwrap().1.to_owned();
    let bad = [
        ("no ice-ufrag", without(&offer, "a=ice-ufrag:")),
        ("no ice-pwd", without(&offer, "a=ice-pwd:")),
        ("no fingerprint", without(&offer, "a=fingerprint:")),
        (
            "an unknown hash",
            offer.replace(&fingerprint, &format!("sha-3 {hex}")),
        ),
        (
            "a short fingerprint",
            offer.replace(&fingerprint, &format!("sha-256 {}", &hex[..hex.len() - 3])),
        ),
        (
            "a non-hex fingerprint",
            offer.replace(&fingerprint, &format!("sha-256 ZZ{}", &hex[2..])),
        ),
        (
            "an absurd fingerprint",
            offer.replace(&fingerprint, &format!("sha-256 {}", ["AB"; 4000].join(":"))),
        ),
        (
            "extmap id 0",
            with_media_line(
                &offer,
                "a=extmap:0 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            ),
        ),
        (
            "a hostname candidate",
            with_media_line(
                &offer,
                "a=candidate:1 1 udp 2122260223 example.invalid 9 typ host",
            ),
        ),
        // Passes every check of ours; rtc refuses it after it has changed
        // the transport's signaling state (the fresh-transport path).
        ("no mid", without(&offer, "a=mid:")),
    ];
    for (what, sdp) in bad {
        refused_offer(&mut alice, what, sdp).await;
    }
    // Nothing was published by the refused offers.
    assert_eq!(
        listed_tracks(&server, &room, "alice").await,
        Vec::<serde_json::Value>::new()
    );

    alice.negotiate_publisher().await;
    let mut audio_only = [(audio, "audio/opus", 120)];
    forward_and_count(&mut alice, &mut audio_only, &[&bob]).await;

    // A refused renegotiation is rolled back: the next one works, and the
    // track already published keeps flowing.
    let video = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    alice
        .publisher
        .add_track(video.track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let renegotiation = alice.publisher.create_offer(None).await.unwrap().sdp;
    refused_offer(&mut alice, "no mid", without(&renegotiation, "a=mid:")).await;
    alice.negotiate_publisher().await;
    let mut video_only = [(video, "video/VP8", 900)];
    forward_and_count(&mut alice, &mut video_only, &[&bob]).await;

    let audio_sid = listed_tracks(&server, &room, "alice")
        .await
        .iter()
        .find(|t| t["kind"] == "audio")
        .and_then(|t| t["sid"].as_str().map(str::to_owned))
        .expect("the audio track is still published");
    let [(mut audio, ..)] = audio_only;
    let before = counted(&bob, &alice.sid, &audio_sid, 120).len();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let wait = async {
        let mut i = PACKETS;
        while counted(&bob, &alice.sid, &audio_sid, 120).len() < before + 20 {
            tick.tick().await;
            audio.send(marked_payload(i, 120)).await;
            i += 1;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("audio still flows after the rolled-back offer");
}

/// The tracks `identity` has published in `room`, from the server API.
async fn listed_tracks(server: &TestServer, room: &str, identity: &str) -> Vec<serde_json::Value> {
    let listed = api_json(server, &format!("/v1/rooms/{room}/participants")).await;
    listed["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == identity)
        .and_then(|p| p["tracks"].as_array().cloned())
        .unwrap_or_default()
}

/// A STUN Binding request naming `username`, signed with `password`.
fn binding_request(username: &str, password: &str) -> Vec<u8> {
    use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
    let crypto = rtc::crypto::default_provider().unwrap();
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(rtc::stun::textattrs::Username::new(
            rtc::stun::attributes::ATTR_USERNAME,
            username.into(),
        )),
        Box::new(
            rtc::stun::integrity::MessageIntegrity::new_short_term_integrity_with_provider(
                password.into(),
                crypto.crypto(),
            ),
        ),
    ];
    m.build(&setters).unwrap();
    m.raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_ice_check_is_counted_and_moves_nothing() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice
        .publisher
        .add_track(audio.track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let answer = alice.negotiate_publisher().await;
    warm_up(&mut [&mut audio], &[&bob], &alice.sid).await;
    let (track_sid, _) = track_sids(&mut alice, 1).await.remove(0);

    // The server's ufrag for alice's publisher and its UDP port, from the answer.
    let ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_owned();
    let port: u16 = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[2].eq_ignore_ascii_case("udp"))
        .map(|f| f[5].parse().unwrap())
        .unwrap();
    let forger = tokio::net::UdpSocket::bind("127.0.0.7:0").await.unwrap();
    let counter = |text: &str| {
        metric(
            text,
            "callgate_dropped_packets_total",
            "reason=\"stun_unauthenticated\"",
        )
    };
    let before = counter(&metrics_text(&server).await);
    let forged = [
        binding_request(&format!("{ufrag}:forger"), "not-the-servers-password"),
        // Right password space, wrong transport: a ufrag prefix.
        binding_request(&format!("{}:forger", &ufrag[..ufrag.len() - 1]), "x"),
    ];
    for f in &forged {
        forger.send_to(f, ("127.0.0.1", port)).await.unwrap();
    }
    let wait = async {
        loop {
            if counter(&metrics_text(&server).await) >= before + 1.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the forged check is counted");

    // Media still flows on alice's real path, and the forger heard nothing.
    let already = bob.received.payloads(&alice.sid, &track_sid).len();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let flows = async {
        let mut i = 0;
        while bob.received.payloads(&alice.sid, &track_sid).len() < already + 20 {
            tick.tick().await;
            audio.send(marked_payload(i, 100)).await;
            i += 1;
        }
    };
    tokio::time::timeout(WAIT, flows)
        .await
        .expect("media flows after the forged checks");
    let mut buf = [0u8; 2048];
    assert!(
        forger.try_recv_from(&mut buf).is_err(),
        "the server answered a forged check"
    );
    // The one with our ufrag is `stun_unauthenticated`; the prefix names no
    // transport at all and is `unknown_source`.
    assert_eq!(counter(&metrics_text(&server).await), before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_stats_list_what_each_publishes_and_receives_and_follow_update_subscription() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let mut video = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&video, &audio]).await;
    warm_up(&mut [&mut video, &mut audio], &[&bob], &alice.sid).await;
    let mut sids: Vec<String> = track_sids(&mut alice, 2)
        .await
        .into_iter()
        .map(|(sid, _)| sid)
        .collect();
    sids.sort();
    let stats_of = |identity: &str| format!("/v1/rooms/{room}/participants/{identity}/stats");

    let alice_stats = api_json(&server, &stats_of("alice")).await;
    assert_eq!(alice_stats["sid"], alice.sid.as_str());
    let published: Vec<&str> = alice_stats["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["track_sid"].as_str().unwrap())
        .collect();
    assert_eq!(published, sids);
    // One stream each (no simulcast from this client), nothing received.
    for track in alice_stats["published"].as_array().unwrap() {
        assert_eq!(track["layers"], serde_json::json!([]));
    }
    assert_eq!(alice_stats["subscriptions"], serde_json::json!([]));

    let bob_stats = api_json(&server, &stats_of("bob")).await;
    let received: Vec<&str> = bob_stats["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["track_sid"].as_str().unwrap())
        .collect();
    assert_eq!(received, sids);
    for track in bob_stats["subscriptions"].as_array().unwrap() {
        assert_eq!(track["disabled"], false);
        assert_eq!(track["priority"], 128);
    }

    // Bob hides one track and shows the other small: the stats say so.
    let (hidden, small) = (&sids[0], &sids[1]);
    bob.send(
        serde_json::json!({"type": "update_subscription", "track_sid": hidden, "disabled": true}),
    );
    bob.send(serde_json::json!({
        "type": "update_subscription", "track_sid": small, "width": 320, "height": 180, "priority": 200
    }));
    let deadline = std::time::Instant::now() + WAIT;
    let bob_stats = loop {
        let stats = api_json(&server, &stats_of("bob")).await;
        if stats["subscriptions"][0]["disabled"] == true
            && stats["subscriptions"][1]["priority"] == 200
        {
            break stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stats never followed: {stats}"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(bob_stats["subscriptions"][1]["max_width"], 320);
    assert_eq!(bob_stats["subscriptions"][1]["max_height"], 180);

    let missing = api_text(&server, &stats_of("nobody")).await;
    assert!(missing.contains("participant_not_found"), "{missing}");
    alice.close().await;
}
