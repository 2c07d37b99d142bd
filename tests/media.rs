//! Media through the real server: known RTP payloads from a publisher reach
//! every subscriber byte-identical.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

const PACKETS: u32 = 400;

/// Sends warm-up packets until every subscriber has received from every
/// track, so that the counted run starts with all paths connected.
async fn warm_up(tracks: &mut [&mut LocalTrack], subscribers: &[&Client], publisher_sid: &str) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let wait = async {
        loop {
            tick.tick().await;
            for t in tracks.iter_mut() {
                t.send(bytes::Bytes::from_static(b"warm-up")).await;
            }
            let all = subscribers.iter().all(|s| {
                s.received
                    .tracks()
                    .iter()
                    .filter(|(stream, _)| stream == publisher_sid)
                    .count()
                    >= tracks.len()
            });
            if all {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("every subscriber receives every track");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_payloads_reach_every_subscriber_byte_identical() {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let bob = Client::join(&server, &token(&room, "bob")).await;
    let carol = Client::join(&server, &token(&room, "carol")).await;

    let mut video = LocalTrack::new(RtpCodecKind::Video, vp8(), 96);
    let mut audio = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&video, &audio]).await;
    // The server opens a producer when the first packet of a track arrives.
    warm_up(&mut [&mut video, &mut audio], &[&bob, &carol], &alice.sid).await;
    let sids = track_sids(&mut alice, 2).await;
    let sid_of = |kind: &str| sids.iter().find(|(_, k)| k == kind).unwrap().0.clone();
    let (video_sid, audio_sid) = (sid_of("video"), sid_of("audio"));

    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for i in 0..PACKETS {
        tick.tick().await;
        video.send(marked_payload(i, 1000)).await;
        audio.send(marked_payload(i, 120)).await;
    }
    for sub in [&bob, &carol] {
        let last = PACKETS - 1;
        let (a, v) = (alice.sid.clone(), video_sid.clone());
        let (a2, au) = (alice.sid.clone(), audio_sid.clone());
        sub.received
            .wait_for("the last packet of both tracks", move |map| {
                let has_last = |stream: &str, track: &str| {
                    map.get(&(stream.to_owned(), track.to_owned()))
                        .is_some_and(|ps| ps.iter().any(|p| payload_index(p) == Some(last)))
                };
                has_last(&a, &v) && has_last(&a2, &au)
            })
            .await;
        let v = counted(sub, &alice.sid, &video_sid, 1000);
        let a = counted(sub, &alice.sid, &audio_sid, 120);
        let need = (PACKETS as usize * 99).div_ceil(100);
        assert!(v.len() >= need, "{} got {}/{PACKETS} video packets", sub.identity, v.len());
        assert!(a.len() >= need, "{} got {}/{PACKETS} audio packets", sub.identity, a.len());
    }
    // The publisher does not receive its own tracks.
    assert!(alice.received.tracks().is_empty());
}
