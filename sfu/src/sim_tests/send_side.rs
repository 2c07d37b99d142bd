//! A simulcast publisher and a subscriber that sends transport-wide
//! congestion control feedback (no REMB) behind a bandwidth-limited
//! downlink: the shard's send-side estimate (module `bwe`) is the
//! subscriber's estimate, and picks its layer.

use std::time::Duration;

use super::Sim;
use super::link::Link;
use super::simulcast::LAYERS;
use crate::bench_support::ROOM;
use crate::session::EstimateSource;

const Q: usize = 0;
const H: usize = 1;
const F: usize = 2;
/// A keyframe on every layer every 4 s (100 frames), and when asked.
const KEYFRAME_EVERY: u32 = 100;

/// A link of `bps` whose buffer holds 100 ms at that rate (a home router's).
fn capped(bps: u64) -> Link {
    Link::capped(bps, (bps / 8 / 10) as usize)
}

/// The subscriber's estimate and its source, as the stats API shows them.
fn estimate(sim: &Sim) -> (Option<u64>, Option<EstimateSource>) {
    let stats = sim
        .shard
        .participant_stats(ROOM, "bob")
        .expect("the subscriber's stats");
    (stats.downlink_estimate_bps, stats.downlink_estimate_source)
}

/// Runs for `d`, sampling the estimate every 100 ms: (time since the
/// start, bits per second).
fn sample(sim: &mut Sim, d: Duration, into: &mut Vec<(Duration, u64)>) {
    let end = sim.now + d;
    while sim.now < end {
        sim.run_for(Duration::from_millis(100));
        if let (Some(bps), _) = estimate(sim) {
            into.push((sim.elapsed(), bps));
        }
    }
}

/// The estimates sampled at or after `from`.
fn since(series: &[(Duration, u64)], from: Duration) -> Vec<u64> {
    series
        .iter()
        .filter(|(at, _)| *at >= from)
        .map(|(_, bps)| *bps)
        .collect()
}

#[test]
fn on_a_700_kbits_downlink_the_send_side_estimate_stays_between_65_and_130_percent_of_the_link_rate_and_the_subscriber_stays_on_h()
 {
    const CAP: u64 = 700_000;
    let mut sim = Sim::simulcast(KEYFRAME_EVERY);
    sim.run_until_connected();
    sim.subscribe_send_side(capped(CAP));
    let mut series = Vec::new();
    sample(&mut sim, Duration::from_secs(30), &mut series);
    assert_eq!(estimate(&sim).1, Some(EstimateSource::SendSide));

    // The last 15 s: the estimate rises above the link while the
    // subscriber takes h (the acknowledged rate allows 1.5 × h), the
    // consumer steps up to f (module `layers`), the queue grows and the
    // estimate comes down to 85% of what was delivered.
    let settled = since(&series, Duration::from_secs(15));
    let (min, max) = (settled.iter().min(), settled.iter().max());
    let mean = settled.iter().sum::<u64>() / settled.len() as u64;
    assert!(min.is_some_and(|m| *m >= CAP * 65 / 100), "lowest {min:?}");
    assert!(max.is_some_and(|m| *m <= CAP * 13 / 10), "highest {max:?}");
    assert!(
        (CAP * 85 / 100..=CAP * 110 / 100).contains(&mean),
        "mean {mean}"
    );

    // h, the highest layer that fits, nearly all the time; f only tried.
    assert!(LAYERS[H].bitrate <= CAP && LAYERS[F].bitrate > CAP);
    let (on, longest_on_f) = sim
        .sub()
        .time_on_layers(sim.start + Duration::from_secs(15));
    let total: Duration = on.iter().sum();
    assert!(
        on[H] >= total.mul_f64(0.9),
        "on q, h, f: {on:?} of {total:?}"
    );
    assert!(
        longest_on_f < Duration::from_secs(1),
        "{longest_on_f:?} on f"
    );
    assert_eq!(on[Q], Duration::ZERO, "never down to q: {on:?}");
}

#[test]
fn when_the_downlink_drops_from_2_mbits_to_700_kbits_the_send_side_estimate_is_under_700_kbits_within_1s()
 {
    let mut sim = Sim::simulcast(KEYFRAME_EVERY);
    sim.run_until_connected();
    sim.subscribe_send_side(capped(2_000_000));
    let mut series = Vec::new();
    sample(&mut sim, Duration::from_secs(30), &mut series);
    // f (1.5 Mbit/s) fits and is what it takes; the estimate is bounded
    // by 1.5 × that (the acknowledged rate), not by the link.
    assert_eq!(sim.sub().layer(), Some(F));
    let before = estimate(&sim).0.expect("an estimate");
    assert!((2_000_000..=2_600_000).contains(&before), "{before}");

    let dropped_at = sim.elapsed();
    if let Some(sub) = sim.subscriber.as_mut() {
        sub.downlink.set_rate(700_000);
    }
    sample(&mut sim, Duration::from_secs(10), &mut series);
    let under = series
        .iter()
        .find(|(at, bps)| *at > dropped_at && *bps < 700_000)
        .map(|(at, _)| *at - dropped_at);
    assert!(
        under.is_some_and(|after| after <= Duration::from_secs(1)),
        "under 700 kbit/s {under:?} after the drop"
    );
    // And it stays in the band from then on, the subscriber back on h.
    let after = since(&series, dropped_at + Duration::from_secs(1));
    assert!(
        after.iter().all(|bps| (400_000..=900_000).contains(bps)),
        "{after:?}"
    );
    assert_eq!(sim.sub().layer(), Some(H));
}

#[test]
fn a_remb_beside_transport_wide_feedback_is_ignored() {
    let mut sim = Sim::simulcast(KEYFRAME_EVERY);
    sim.run_until_connected();
    // The client also claims, twice a second, that it takes 100 kbit/s.
    sim.subscribe_with_feedback(
        Link::unlimited(),
        Duration::from_millis(500),
        Box::new(|_, _| Some(100_000.0)),
    );
    let mut series = Vec::new();
    sample(&mut sim, Duration::from_secs(10), &mut series);
    let (bps, source) = estimate(&sim);
    assert_eq!(source, Some(EstimateSource::SendSide));
    // Nothing limits it but the acknowledged rate (1.5 × what was sent):
    // enough for f (1.97 Mbit/s measured, after starting on q).
    assert!(bps.is_some_and(|bps| bps >= 1_500_000), "{bps:?}");
    // (A REMB before the first feedback may count: until feedback comes
    // we cannot know that it will.)
    let after_start = since(&series, Duration::from_secs(3));
    assert!(
        after_start.iter().all(|bps| *bps > 100_000),
        "the REMB became the estimate: {series:?}"
    );
    assert_eq!(sim.sub().layer(), Some(F));
}
