//! A packet lost on the publisher's link and then on the subscriber's: the
//! subscriber asks for it while the server has nothing to resend, the
//! publisher's retransmission comes late, and its forwarded copy is lost
//! too. The subscriber's later asks must still be answered (module
//! `nack_limit`: asks for a packet not yet sent used to use up its resends,
//! and the subscriber never got the packet).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::link::Link;
use super::simulcast::LAYERS;
use super::{Sim, rtp_header};

/// A keyframe on every layer every 4 s (100 frames), and when asked.
const KEYFRAME_EVERY: u32 = 100;
/// Transmissions of the chosen packet lost on the publisher's link: the
/// first and the next three (retransmissions the server asked for).
const LOST_UPSTREAM: u32 = 4;

#[test]
fn a_packet_lost_on_both_links_reaches_the_subscriber_though_its_repair_came_late() {
    let mut sim = Sim::simulcast(KEYFRAME_EVERY);
    sim.run_until_connected();
    sim.subscribe(
        Link::unlimited(),
        Duration::from_secs(1),
        Box::new(|_, _| Some(10_000_000.0)),
    );
    sim.run_for(Duration::from_secs(3));
    let layer = sim.sub().layer().expect("the subscriber receives a layer");
    let ssrc = LAYERS[layer].ssrc;

    // The publisher's next packet of that layer, and its first three
    // retransmissions, are lost on its link.
    let upstream = Rc::new(Cell::new((None::<u16>, 0u32)));
    let seen = upstream.clone();
    sim.lose_client = Box::new(move |d| {
        let Some((seq, s)) = rtp_header(d) else {
            return false;
        };
        let (chosen, lost) = seen.get();
        let chosen = match chosen {
            None if s == ssrc => seq,
            Some(chosen) if s == ssrc && seq == chosen => chosen,
            _ => return false,
        };
        if lost >= LOST_UPSTREAM {
            return false;
        }
        seen.set((Some(chosen), lost + 1));
        true
    });
    // Toward the subscriber, the first packet sent behind the newest of
    // its stream (the late first transmission of the repaired packet) is
    // lost.
    let downstream = Rc::new(Cell::new(None::<u16>));
    let lost_down = downstream.clone();
    let mut newest: HashMap<u32, u16> = HashMap::new();
    sim.lose_to_subscriber = Box::new(move |d| {
        let Some((seq, s)) = rtp_header(d) else {
            return false;
        };
        let behind = newest
            .get(&s)
            .is_some_and(|n| n.wrapping_sub(seq).wrapping_sub(1) < 0x8000);
        if !behind {
            newest.insert(s, seq);
        }
        if behind && lost_down.get().is_none() {
            lost_down.set(Some(seq));
            return true;
        }
        false
    });
    sim.run_for(Duration::from_secs(3));

    assert_eq!(
        upstream.get().1,
        LOST_UPSTREAM,
        "the publisher's packet and its retransmissions were lost"
    );
    let lost = downstream
        .get()
        .expect("the repaired packet's forwarded copy was lost");
    let received = &sim.sub().received;
    assert!(
        received.iter().any(|r| r.seq == lost && r.late),
        "the subscriber got packet {lost} in the end, resent"
    );
    // And nothing else is missing from what it received.
    let first = received.first().expect("packets").seq;
    let newest = sim.sub().in_order().last().expect("packets").seq;
    let missing: Vec<u16> = (0..=newest.wrapping_sub(first))
        .map(|i| first.wrapping_add(i))
        .filter(|seq| !received.iter().any(|r| r.seq == *seq))
        .collect();
    assert!(missing.is_empty(), "never received: {missing:?}");
}
