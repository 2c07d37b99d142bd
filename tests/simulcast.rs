//! Simulcast through the real server: a publisher sends one VP8 camera as
//! three encodings (rids `q`, `h`, `f`, each a keyframe of its own picture
//! size), and each subscriber gets the one layer that fits the size it
//! shows the track at (`update_subscription`), on one track and one SSRC.
//!
//! The test clients send no REMB, so the server has no bandwidth estimate
//! for them and chooses by size alone. Every packet is a whole keyframe, so
//! a consumer switches layers at the next packet of the new one. What
//! arrived is read from the bytes: the picture width from each received
//! VP8 keyframe header, and which layer and frame it is from a mark after
//! it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::json;

/// The layers, lowest first: rid, width, height.
const LAYERS: [(&str, u16, u16); 3] = [("q", 320, 180), ("h", 640, 360), ("f", 1280, 720)];
const Q: usize = 0;
const F: usize = 2;
/// Bytes of each RTP payload.
const PAYLOAD_LEN: usize = 300;
/// Frames of a layer a subscriber must have received, all sent after the
/// last frame of another layer it got, before it counts as settled on it.
const SETTLED_AFTER: u32 = 25;
/// Frames a subscriber may receive before it must have settled.
const GIVE_UP_AFTER: usize = 150;

/// One frame of `layer` as one RTP payload: an RFC 7741 descriptor (S=1,
/// partition 0, no extensions), a VP8 keyframe (frame tag with P=0, start
/// code 9d 01 2a, 14-bit width and height little-endian: RFC 6386 §9.1) of
/// the layer's size, then `SC`, the layer and the frame's index.
fn layer_payload(layer: usize, index: u32) -> Bytes {
    let (_, width, height) = LAYERS[layer];
    let mut p = vec![0x10];
    // Frame tag: P=0 (keyframe), version 0, show_frame=1, first partition size 0.
    p.extend_from_slice(&[0x10, 0x00, 0x00]);
    p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
    p.extend_from_slice(&width.to_le_bytes());
    p.extend_from_slice(&height.to_le_bytes());
    p.extend_from_slice(b"SC");
    p.push(layer as u8);
    p.extend_from_slice(&index.to_be_bytes());
    while p.len() < PAYLOAD_LEN {
        p.push((p.len() as u32).wrapping_mul(31).wrapping_add(index) as u8);
    }
    Bytes::from(p)
}

/// What a received payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    /// From the mark: the layer it was sent on, and which frame it is (one
    /// frame of every layer is sent under each index).
    layer: usize,
    index: u32,
    /// From the VP8 keyframe header, as the server reads it.
    width: u16,
    height: u16,
}

/// Reads a payload `layer_payload` wrote; panics on anything else (a
/// payload that arrived altered, or is not a VP8 keyframe).
fn read_frame(p: &[u8]) -> Frame {
    assert!(p.len() >= 18, "a short payload: {p:02x?}");
    assert_eq!(p[0], 0x10, "VP8 descriptor: S=1, partition 0, no X");
    assert_eq!(p[1] & 0x01, 0, "the frame tag's P bit says keyframe");
    assert_eq!(p[4..7], [0x9d, 0x01, 0x2a], "the keyframe start code");
    let width = u16::from_le_bytes([p[7], p[8]]) & 0x3fff;
    let height = u16::from_le_bytes([p[9], p[10]]) & 0x3fff;
    assert_eq!(&p[11..13], b"SC", "our mark");
    let layer = usize::from(p[13]);
    let index = u32::from_be_bytes([p[14], p[15], p[16], p[17]]);
    assert_eq!(
        p,
        &layer_payload(layer, index)[..],
        "payload arrived altered"
    );
    Frame {
        layer,
        index,
        width,
        height,
    }
}

/// Sends one frame of every layer every 20 ms (frame indices from 1)
/// until dropped.
struct Publishing {
    last: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Publishing {
    fn start(mut camera: SimulcastTrack) -> Publishing {
        let last = Arc::new(AtomicU32::new(0));
        let sent = last.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for index in 1.. {
                tick.tick().await;
                for layer in 0..LAYERS.len() {
                    camera.send(layer, layer_payload(layer, index)).await;
                }
                sent.store(index, Ordering::Release);
            }
        });
        Publishing { last, task }
    }

    fn last(&self) -> u32 {
        self.last.load(Ordering::Acquire)
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A room where `alice` publishes the simulcast camera to `subscribers`
/// (joined before she publishes), and sends on all three layers.
struct Call {
    _server: TestServer,
    alice: Client,
    subscribers: Vec<Client>,
    /// The camera's track sid.
    track: String,
    publishing: Publishing,
}

async fn simulcast_call(subscribers: &[&str]) -> Call {
    let server = TestServer::start(&[]);
    let room = unique_room();
    let mut alice = Client::join(&server, &token(&room, "alice")).await;
    let mut subs = Vec::new();
    for name in subscribers {
        subs.push(Client::join(&server, &token(&room, name)).await);
    }
    let rids: Vec<&str> = LAYERS.iter().map(|(rid, _, _)| *rid).collect();
    let mut camera = SimulcastTrack::new(vp8(), 96, &rids);
    alice.publish_simulcast(&mut camera).await;
    let offer = alice
        .publisher
        .local_description()
        .await
        .expect("the publisher's offer")
        .sdp;
    let offered: Vec<&str> = offer.lines().map(str::trim).collect();
    for rid in &rids {
        let line = format!("a=rid:{rid} send");
        assert!(offered.contains(&line.as_str()), "no {line} in {offer}");
    }
    assert!(
        offered.contains(&"a=simulcast:send q;h;f"),
        "no a=simulcast:send q;h;f in {offer}"
    );
    let publishing = Publishing::start(camera);
    // The server opens the track at its first packet.
    let published = track_sids(&mut alice, 1).await;
    let (track, codec) = published[0].clone();
    assert!(codec.eq_ignore_ascii_case("video/VP8"), "{codec}");
    Call {
        _server: server,
        alice,
        subscribers: subs,
        track,
        publishing,
    }
}

/// Asks the server to forward `track` to `client` for a view of `width`×`height`.
fn show_at(client: &Client, track: &str, width: u32, height: u32) {
    client.send(json!({
        "type": "update_subscription",
        "track_sid": track,
        "width": width,
        "height": height,
    }));
}

/// The frames `client` received of `track`, in arrival order.
fn frames(client: &Client, publisher: &str, track: &str) -> Vec<Frame> {
    client
        .received
        .payloads(publisher, track)
        .iter()
        .map(|p| read_frame(p))
        .collect()
}

/// Of `frames`, the index after which every one is of `layer`: the highest
/// index of any other layer's frame (0 if none); and how many frames of
/// `layer` came after it. Frames of one index are sent on every layer at
/// once, so a frame of another layer with a higher index than a frame of
/// `layer` was forwarded after the consumer had moved to `layer`.
fn settled_run(frames: &[Frame], layer: usize) -> (u32, usize) {
    let last_other = frames
        .iter()
        .filter(|f| f.layer != layer)
        .map(|f| f.index)
        .max()
        .unwrap_or(0);
    let run = frames
        .iter()
        .filter(|f| f.layer == layer && f.index > last_other)
        .count();
    (last_other, run)
}

/// Waits until `client`, in the frames of `track` it received after the
/// first `skip`, has `SETTLED_AFTER` frames of `layer` with no frame of
/// another layer sent after them (or has received `GIVE_UP_AFTER` frames
/// without); checks that each frame of `layer` had the layer's size in its
/// VP8 keyframe header. Returns the index after which it got only `layer`.
async fn settles_on(
    client: &Client,
    publisher: &str,
    track: &str,
    skip: usize,
    layer: usize,
) -> u32 {
    let key = (publisher.to_owned(), track.to_owned());
    let rid = LAYERS[layer].0;
    client
        .received
        .wait_for(
            &format!("{} to receive frames of {track}", client.identity),
            |all| {
                all.get(&key).is_some_and(|payloads| {
                    let got: Vec<Frame> =
                        payloads.iter().skip(skip).map(|p| read_frame(p)).collect();
                    settled_run(&got, layer).1 >= SETTLED_AFTER as usize
                        || got.len() >= GIVE_UP_AFTER
                })
            },
        )
        .await;
    let got: Vec<Frame> = frames(client, publisher, track)
        .into_iter()
        .skip(skip)
        .collect();
    let (since, run) = settled_run(&got, layer);
    let per_layer: Vec<(&str, usize)> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, (rid, _, _))| (*rid, got.iter().filter(|f| f.layer == i).count()))
        .collect();
    assert!(
        run >= SETTLED_AFTER as usize,
        "{} did not settle on {rid}: of {} frames, by layer {per_layer:?}; {run} of {rid} after the last of another (frame {since})",
        client.identity,
        got.len(),
    );
    let (_, width, height) = LAYERS[layer];
    for f in got.iter().filter(|f| f.layer == layer) {
        assert_eq!(
            (f.width, f.height),
            (width, height),
            "the size in the VP8 keyframe header of the {rid} frames {} got",
            client.identity
        );
    }
    since
}

/// Waits until `client` has a frame of `track` sent after frame `upto`,
/// then checks that every frame it got after the first `skip` and sent
/// after frame `since` is of `layer`.
async fn stays_on(
    client: &Client,
    publisher: &str,
    track: &str,
    skip: usize,
    layer: usize,
    since: u32,
    upto: u32,
) {
    let key = (publisher.to_owned(), track.to_owned());
    client
        .received
        .wait_for(&format!("{} to get frame {upto}", client.identity), |all| {
            all.get(&key)
                .is_some_and(|ps| ps.iter().any(|p| read_frame(p).index > upto))
        })
        .await;
    for f in frames(client, publisher, track).into_iter().skip(skip) {
        if f.index > since {
            assert_eq!(
                LAYERS[f.layer].0, LAYERS[layer].0,
                "{} got frame {} of layer {} after it had settled on {} at frame {since}",
                client.identity, f.index, LAYERS[f.layer].0, LAYERS[layer].0,
            );
        }
    }
}

/// `client` received `track` of `publisher` as its only track, on one SSRC.
fn one_track_on_one_ssrc(client: &Client, publisher: &str, track: &str) {
    assert_eq!(
        client.received.tracks(),
        vec![(publisher.to_owned(), track.to_owned())],
        "{} receives the camera as one track",
        client.identity
    );
    let ssrcs = client.received.ssrcs(publisher, track);
    assert_eq!(
        ssrcs.len(),
        1,
        "{} receives the camera on one SSRC: {ssrcs:?}",
        client.identity
    );
}

/// No `error` among the signaling messages `client` has not read yet.
fn no_errors(client: &mut Client) {
    while let Some(m) = client.try_event() {
        assert_ne!(m["type"], "error", "{} got {m}", client.identity);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_320x180_view_gets_only_the_q_layer_and_an_unsized_one_only_f_each_on_one_ssrc() {
    let mut call = simulcast_call(&["bob", "carol"]).await;
    let (alice, track) = (call.alice.sid.clone(), call.track.clone());
    let [bob, carol] = &mut call.subscribers[..] else {
        unreachable!()
    };
    show_at(bob, &track, 320, 180);

    let bob_since = settles_on(bob, &alice, &track, 0, Q).await;
    let carol_since = settles_on(carol, &alice, &track, 0, F).await;
    // And they stay there while the publisher goes on sending every layer.
    let upto = call.publishing.last() + SETTLED_AFTER;
    stays_on(bob, &alice, &track, 0, Q, bob_since, upto).await;
    stays_on(carol, &alice, &track, 0, F, carol_since, upto).await;
    one_track_on_one_ssrc(bob, &alice, &track);
    one_track_on_one_ssrc(carol, &alice, &track);
    no_errors(bob);
    no_errors(carol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_grown_from_320x180_to_1280x720_moves_from_the_q_layer_to_f_on_the_same_ssrc() {
    let mut call = simulcast_call(&["bob"]).await;
    let (alice, track) = (call.alice.sid.clone(), call.track.clone());
    let bob = &mut call.subscribers[0];
    show_at(bob, &track, 320, 180);
    settles_on(bob, &alice, &track, 0, Q).await;
    let ssrcs = bob.received.ssrcs(&alice, &track);

    let before = bob.received.payloads(&alice, &track).len();
    show_at(bob, &track, 1280, 720);
    let since = settles_on(bob, &alice, &track, before, F).await;
    let upto = call.publishing.last() + SETTLED_AFTER;
    stays_on(bob, &alice, &track, before, F, since, upto).await;
    one_track_on_one_ssrc(bob, &alice, &track);
    assert_eq!(
        bob.received.ssrcs(&alice, &track),
        ssrcs,
        "the switch keeps the SSRC"
    );
    no_errors(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_is_told_every_layer_the_server_has_seen_is_wanted_when_one_view_is_unsized()
{
    let mut call = simulcast_call(&["carol"]).await;
    let m = call.alice.event("subscribed_layers").await;
    assert_eq!(m["track_sid"], call.track.as_str(), "{m}");
    let layers = m["layers"].as_array().expect("a list of layers");
    // The layers the server had seen a packet of when it first chose, in
    // quality order: one learnt later counts as sent, and is not announced.
    assert!((1..=LAYERS.len()).contains(&layers.len()), "{m}");
    for (layer, (rid, _, _)) in layers.iter().zip(LAYERS) {
        assert_eq!(layer["rid"], rid, "{m}");
        assert_eq!(layer["active"], true, "carol receives the top layer: {m}");
    }
}
