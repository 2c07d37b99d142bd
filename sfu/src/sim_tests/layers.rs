//! A simulcast publisher (it follows dynacast, as the SDK does) and a
//! subscriber whose estimate (REMB) and downlink are scripted: which layer
//! the subscriber gets, when it changes, and what the subscriber reads
//! across the changes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::Sim;
use super::link::Link;
use super::simulcast::LAYERS;
use super::subscriber::RembScript;
use crate::session::{EstimateSource, ParticipantEvent};

const Q: usize = 0;
const H: usize = 1;
const F: usize = 2;

/// A keyframe on every layer every 4 s (100 frames), and when asked.
const KEYFRAME_EVERY: u32 = 100;
/// How often the subscriber reports its estimate.
const REMB_EVERY: Duration = Duration::from_millis(250);
/// How long after its estimate last fell a consumer may try the next layer
/// up (`shard::bandwidth::STEP_UP_AFTER_FALL`).
const STEP_UP_HOLD: Duration = Duration::from_secs(5);

/// The estimate the subscriber reports, set by the test as it goes.
#[derive(Clone)]
struct Estimate(Rc<Cell<f32>>);

impl Estimate {
    fn new(bps: f32) -> Estimate {
        Estimate(Rc::new(Cell::new(bps)))
    }

    fn set(&self, bps: f32) {
        self.0.set(bps);
    }

    fn script(&self) -> RembScript {
        let estimate = self.clone();
        Box::new(move |_, _| Some(estimate.0.get()))
    }
}

/// A simulcast publisher and a subscriber over an unlimited link reporting
/// `estimate`, both connected and the subscriber reading media.
fn connected(estimate: &Estimate) -> Sim {
    let mut sim = Sim::simulcast(KEYFRAME_EVERY);
    sim.run_until_connected();
    sim.subscribe(Link::unlimited(), REMB_EVERY, estimate.script());
    let deadline = sim.now + Duration::from_secs(5);
    while sim.sub().received.is_empty() {
        assert!(sim.now < deadline, "the subscriber got no media");
        sim.step();
    }
    sim
}

/// The layers of what the subscriber read in sequence from packet `from`
/// on (an index into `received`), each once, in the order first read.
fn layers_from(sim: &Sim, from: usize) -> Vec<usize> {
    let mut layers: Vec<usize> = sim.sub().received[from..]
        .iter()
        .filter(|r| !r.late)
        .map(|r| r.layer)
        .collect();
    layers.dedup();
    layers
}

/// Every layer the subscriber moved to started at a keyframe.
fn assert_switches_start_at_keyframes(sim: &Sim) {
    for switch in sim.sub().switches() {
        assert!(
            switch.keyframe,
            "layer {} started at a delta frame: {switch:?}",
            LAYERS[switch.layer].rid
        );
    }
}

/// Runs until the subscriber reads a packet of `layer` in sequence, at most
/// `limit`; returns its index in `received`.
fn run_until_layer(sim: &mut Sim, layer: usize, limit: Duration) -> Option<usize> {
    let mut next = sim.sub().received.len();
    let deadline = sim.now + limit;
    while sim.now < deadline {
        sim.step();
        let received = &sim.sub().received;
        if let Some(i) = (next..received.len()).find(|&i| {
            let r = received[i];
            r.layer == layer && !r.late
        }) {
            return Some(i);
        }
        next = received.len();
    }
    None
}

#[test]
fn at_3_mbits_the_subscriber_gets_f_and_within_1s_of_its_estimate_falling_to_600_kbits_h_from_a_keyframe()
 {
    let estimate = Estimate::new(3_000_000.0);
    let mut sim = connected(&estimate);
    let settling = sim.sub().received.len();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(layers_from(&sim, settling).last(), Some(&F));
    // Without transport-wide feedback, the browser's REMB is the estimate.
    let stats = sim.shard.participant_stats(super::ROOM, "bob").unwrap();
    assert_eq!(
        (stats.downlink_estimate_bps, stats.downlink_estimate_source),
        (Some(3_000_000), Some(EstimateSource::Remb))
    );
    let at_3_mbits = sim.sub().received.len() - 25;
    assert_eq!(layers_from(&sim, at_3_mbits), vec![F], "the last frames");

    estimate.set(600_000.0);
    let fell = sim.sub().received.len();
    let first_h = run_until_layer(&mut sim, H, Duration::from_secs(1)).unwrap_or_else(|| {
        panic!(
            "on h within 1 s of the estimate falling to 600 kbit/s: {:?} {:?}",
            layers_from(&sim, fell),
            sim.events()
        )
    });
    assert!(
        sim.sub().received[first_h].keyframe,
        "h started at a delta frame"
    );
    // Only h from then on: f does not come back, q is not needed.
    sim.run_for(Duration::from_secs(2));
    assert_eq!(layers_from(&sim, fell), vec![F, H]);
    assert_switches_start_at_keyframes(&sim);
}

#[test]
fn held_at_600_kbits_past_the_step_up_hold_the_subscriber_probes_f_and_stays_on_it_once_its_estimate_covers_f()
 {
    let estimate = Estimate::new(3_000_000.0);
    let mut sim = connected(&estimate);
    sim.run_for(Duration::from_secs(3));
    estimate.set(600_000.0);
    let fell = sim.now;
    run_until_layer(&mut sim, H, Duration::from_secs(1)).expect("down to h");

    // The estimate holds at 600 kbit/s: after the hold (not before), the
    // consumer tries f, one layer above what the estimate allows. The
    // publisher follows dynacast, so f must not have been stopped.
    let probe = run_until_layer(&mut sim, F, STEP_UP_HOLD + Duration::from_secs(2))
        .expect("a step up to f after the hold");
    let after = sim.now - fell;
    assert!(
        after >= STEP_UP_HOLD && after <= STEP_UP_HOLD + Duration::from_secs(1),
        "stepped up {after:?} after the estimate fell"
    );
    assert!(
        sim.sub().received[probe].keyframe,
        "f started at a delta frame"
    );

    // The browser's estimate grows with what it now receives and covers f:
    // the consumer stays on f.
    estimate.set(2_000_000.0);
    sim.run_for(Duration::from_secs(15));
    assert_eq!(layers_from(&sim, probe), vec![F]);
    assert_switches_start_at_keyframes(&sim);
}

#[test]
fn across_every_layer_switch_the_subscriber_reads_sequence_numbers_one_apart_and_timestamps_that_never_go_back()
 {
    let estimate = Estimate::new(3_000_000.0);
    let mut sim = connected(&estimate);
    // f; h; a probe of f after the hold; q; a probe of h; f again.
    for (bps, secs) in [
        (3_000_000.0, 3),
        (600_000.0, 8),
        (200_000.0, 8),
        (3_000_000.0, 3),
    ] {
        estimate.set(bps);
        sim.run_for(Duration::from_secs(secs));
    }
    assert_eq!(layers_from(&sim, 0), vec![F, H, F, Q, H, F], "as scripted");
    // Nothing is lost on this link: every packet is read once, in order.
    let received = &sim.sub().received;
    assert!(received.len() > 2_000, "{} packets read", received.len());
    for pair in received.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let layers = (LAYERS[a.layer].rid, LAYERS[b.layer].rid);
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "sequence number {} then {} (layers {layers:?})",
            a.seq,
            b.seq,
        );
        assert!(
            b.timestamp.wrapping_sub(a.timestamp) < 1 << 31,
            "timestamp {} then {} (layers {layers:?})",
            a.timestamp,
            b.timestamp,
        );
    }
    assert_switches_start_at_keyframes(&sim);
}

/// A receiver's estimate in its simplest form: the link's rate while the
/// link delivers everything; 85% of what it delivered since the last report
/// when it dropped some (GCC's decrease on overuse).
fn estimate_following(cap: u64) -> RembScript {
    let mut last: Option<(Duration, u64, u64)> = None;
    Box::new(move |elapsed, link| {
        let now = (elapsed, link.delivered(), link.dropped());
        let estimate = match last.replace(now) {
            Some((at, delivered, dropped)) if link.dropped() > dropped && elapsed > at => {
                let bits = (link.delivered() - delivered) as f64 * 8.0;
                0.85 * bits / (elapsed - at).as_secs_f64()
            }
            _ => cap as f64,
        };
        Some(estimate as f32)
    })
}

#[test]
fn with_its_estimate_following_a_700_kbits_link_the_subscriber_ends_on_h_and_tries_f_for_under_1s_at_a_time()
 {
    const CAP: u64 = 700_000;
    // A home router's buffer: 100 ms at the link's rate.
    let link = Link::capped(CAP, (CAP / 8 / 10) as usize);
    let mut sim = Sim::simulcast(KEYFRAME_EVERY);
    sim.run_until_connected();
    sim.subscribe(link, REMB_EVERY, estimate_following(CAP));
    sim.run_for(Duration::from_secs(30));

    // How long it spent on each layer over the last 15 s, and its longest
    // stay on f, by the packets it read in sequence.
    let (on, longest_on_f) = sim.sub().time_on_layers(sim.now - Duration::from_secs(15));
    let total: Duration = on.iter().sum();
    assert!(
        on[H] >= total.mul_f64(0.8),
        "on q, h, f: {on:?} of the last {total:?}"
    );
    assert!(on[F] > Duration::ZERO, "it tries f now and then: {on:?}");
    assert!(
        longest_on_f < Duration::from_secs(1),
        "{longest_on_f:?} on f"
    );
    assert_eq!(sim.sub().layer(), Some(H), "the layer it ends on");
    // h is the highest layer that fits.
    assert!(LAYERS[H].bitrate <= CAP && LAYERS[F].bitrate > CAP);
    assert_switches_start_at_keyframes(&sim);
}

#[test]
fn after_the_publisher_renegotiates_and_stops_labelling_its_layers_the_subscriber_still_gets_f() {
    let estimate = Estimate::new(3_000_000.0);
    let mut sim = connected(&estimate);
    assert!(
        run_until_layer(&mut sim, F, Duration::from_secs(3)).is_some(),
        "the subscriber never got f"
    );
    // A new offer from the publisher (as for an ICE restart or a second
    // track): rtc forgets which SSRC is which layer, and the browser no
    // longer says.
    let offer = sim.pc.create_offer(None).unwrap();
    sim.pc.set_local_description(sim.now, offer).unwrap();
    let sdp = sim.pc.local_description().unwrap().sdp;
    let answer = sim
        .shard
        .publish_offer(sim.now, super::ROOM, &sim.sid, sdp)
        .unwrap();
    sim.pc
        .set_remote_description(
            sim.now,
            rtc::peer_connection::sdp::RTCSessionDescription::answer(answer).unwrap(),
        )
        .unwrap();
    if let super::Media::Simulcast(encoder) = &mut sim.media {
        encoder.stop_labelling();
    }
    let renegotiated_at = sim.sub().received.len();
    sim.run_for(Duration::from_secs(2));
    let after: Vec<usize> = sim.sub().received[renegotiated_at..]
        .iter()
        .filter(|r| !r.late)
        .map(|r| r.layer)
        .collect();
    // 2 s of f is 50 frames of about 5 packets each.
    assert!(
        after.len() > 200 && after.iter().all(|&layer| layer == F),
        "after the renegotiation the subscriber read {} packets, of layers {:?}",
        after.len(),
        layers_from(&sim, renegotiated_at)
    );
}

#[test]
fn across_a_mute_and_unmute_the_subscriber_reads_sequence_numbers_one_apart_and_resumes_at_a_keyframe()
 {
    let estimate = Estimate::new(3_000_000.0);
    let mut sim = connected(&estimate);
    let track_sid = sim
        .events()
        .into_iter()
        .find_map(|e| match e {
            ParticipantEvent::TrackPublished { track, .. } => Some(track.sid),
            _ => None,
        })
        .expect("the publisher heard its track published");
    sim.run_for(Duration::from_secs(1));
    let sid = sim.sid.clone();
    sim.shard
        .mute(sim.now, super::ROOM, &sid, &track_sid, true)
        .unwrap();
    // What was on its way still arrives; then nothing while muted.
    sim.run_for(Duration::from_millis(200));
    let muted_at = sim.sub().received.len();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.sub().received.len(), muted_at, "media while muted");
    sim.shard
        .mute(sim.now, super::ROOM, &sid, &track_sid, false)
        .unwrap();
    sim.run_for(Duration::from_secs(2));
    let received = &sim.sub().received;
    assert!(
        received.len() > muted_at + 200,
        "{} packets read after the unmute",
        received.len() - muted_at
    );
    assert!(received[muted_at].keyframe, "resumed at a delta frame");
    for pair in received.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "sequence number {} then {}",
            a.seq,
            b.seq
        );
        assert!(
            b.timestamp.wrapping_sub(a.timestamp) < 1 << 31,
            "timestamp {} then {}",
            a.timestamp,
            b.timestamp
        );
    }
    // The pause shows in the timestamps (90 kHz): about the 2.2 s muted.
    let gap = received[muted_at]
        .timestamp
        .wrapping_sub(received[muted_at - 1].timestamp);
    assert!((150_000..250_000).contains(&gap), "timestamp gap {gap}");
}

#[test]
fn after_an_outage_of_the_publishers_link_the_subscriber_resumes_at_a_keyframe_asked_for_at_once_with_no_sequence_gap()
 {
    // No periodic keyframes: only the ones asked for come.
    let mut sim = Sim::simulcast(u32::MAX);
    sim.run_until_connected();
    let estimate = Estimate::new(3_000_000.0);
    sim.subscribe(Link::unlimited(), REMB_EVERY, estimate.script());
    let on_f = run_until_layer(&mut sim, F, Duration::from_secs(5));
    assert!(on_f.is_some(), "never on f: {:?}", layers_from(&sim, 0));
    sim.run_for(Duration::from_secs(1));
    // 1.5 s of a dead uplink: the encoder goes on, nothing arrives.
    sim.lose_client = Box::new(|_| true);
    sim.run_for(Duration::from_millis(1500));
    let before = sim.sub().received.len();
    sim.lose_client = Box::new(|_| false);
    let back = sim.now;
    sim.run_for(Duration::from_secs(1));
    let received = &sim.sub().received;
    // Every layer came back at once, none settled yet: the lowest first
    // (module `layers`, `SETTLED_AFTER`), a frame every 40 ms.
    assert_eq!(
        layers_from(&sim, before),
        vec![Q],
        "layers after the outage"
    );
    assert!(
        received.len() >= before + 20,
        "{} packets read after the outage",
        received.len() - before
    );
    let first = received[before];
    assert!(first.keyframe, "resumed at a delta frame: {first:?}");
    // The keyframe was asked for when the stream came back, not after the
    // subscriber's own request: one frame interval and a round trip.
    assert!(
        first.at - back <= Duration::from_millis(150),
        "first packet {:?} after the link came back",
        first.at - back
    );
    // The subscriber reads no hole it would ask to have filled.
    assert_eq!(
        first.seq,
        received[before - 1].seq.wrapping_add(1),
        "sequence number {} then {}",
        received[before - 1].seq,
        first.seq
    );
    // Back on f once the layers have been sent for a second again.
    assert!(
        run_until_layer(&mut sim, F, Duration::from_secs(2)).is_some(),
        "not back on f: {:?}",
        layers_from(&sim, before)
    );
    assert_switches_start_at_keyframes(&sim);
}

#[test]
fn with_the_publishers_packets_reordered_the_subscriber_reads_every_packet_of_each_keyframe_it_starts_or_switches_at()
 {
    // Each tick's packets reach the server last first: a keyframe's first
    // packet, where a consumer may start, comes after the rest of it.
    let estimate = Estimate::new(3_000_000.0);
    let mut sim = Sim::simulcast(KEYFRAME_EVERY);
    sim.reverse_client = true;
    sim.run_until_connected();
    sim.subscribe(Link::unlimited(), REMB_EVERY, estimate.script());
    // f; h (down at once); f again after the step-up hold.
    for (bps, secs) in [(3_000_000.0, 3), (600_000.0, 3), (3_000_000.0, 8)] {
        estimate.set(bps);
        sim.run_for(Duration::from_secs(secs));
    }
    assert_eq!(layers_from(&sim, 0), vec![F, H, F], "as scripted");
    assert_switches_start_at_keyframes(&sim);
    // Nothing is lost on this link: from the first packet read to the
    // last, every sequence number was read (a hole is one the subscriber
    // would NACK in vain: we never sent it).
    let received = &sim.sub().received;
    let first = received[0].seq;
    let mut read: Vec<u16> = received.iter().map(|r| r.seq.wrapping_sub(first)).collect();
    read.sort_unstable();
    read.dedup();
    let last = *read.last().expect("packets read");
    assert!(last > 1_500, "{last} packets read");
    let holes: Vec<u16> = (0..=last)
        .filter(|d| read.binary_search(d).is_err())
        .map(|d| first.wrapping_add(d))
        .collect();
    assert!(holes.is_empty(), "never read: {holes:?}");
}
