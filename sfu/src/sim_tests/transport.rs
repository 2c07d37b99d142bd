//! A publishing client's transport: its address or transport changes, its
//! traffic stops or is lost, the DTLS handshake meets loss and reordering.

use std::time::Duration;

use rtc::shared::TransportProtocol;

use super::{Sim, TICK, lose_first, rtp_header, udp};
use crate::bench_support::{ROOM, join_request, loopback};
use crate::quality::{ConnectionQuality, QUALITY_WINDOW};
use crate::route::Route;
use crate::session::{LeaveReason, ParticipantEvent};

fn reconnected(events: &[ParticipantEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ParticipantEvent::Reconnecting { .. }))
}

#[test]
fn media_follows_a_client_whose_address_changes_without_an_ice_restart() {
    let (old, new) = (udp(2, 10_000), udp(3, 10_001));
    let mut sim = Sim::new(old);
    sim.run_until_connected();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.media_routes_since(sim.start), vec![old]);

    // NAT rebinding: the same client, its datagrams now from a new address.
    sim.from = Some(new);
    sim.listens = new;
    let moved = sim.now;
    let plis = sim.shard.metrics().plis.get();
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.shard.metrics().plis.get(),
        plis + 1,
        "one keyframe asked of the moved publisher"
    );
    let after: Vec<Route> = sim.media_routes_since(moved + Duration::from_secs(3));
    assert_eq!(after, vec![new], "media after the move went to {after:?}");
    assert!(sim.connected, "the client stayed connected");
    assert!(
        !reconnected(&sim.events()),
        "no reconnecting for a live client"
    );
}

#[test]
fn a_client_that_checked_over_ice_tcp_then_settled_on_udp_gets_media_on_udp_and_stays() {
    // What Chromium does: its ICE-TCP pair is checked (and the server's
    // agent selects it) before it settles on UDP and lets the TCP one go.
    // rtc's ICE-lite agent keeps its first selected pair for good, and its
    // STUN-only liveness then failed the transport 9 s later.
    let tcp: Route = (TransportProtocol::TCP, loopback(2, 40_000));
    let udp_route = udp(2, 10_000);
    let mut sim = Sim::new(tcp);
    sim.run_until_connected();
    assert_eq!(sim.media_routes_since(sim.start), vec![tcp]);

    sim.from = Some(udp_route);
    sim.listens = udp_route;
    let settled = sim.now;
    sim.run_for(Duration::from_secs(15));
    let after = sim.media_routes_since(settled + Duration::from_secs(3));
    assert_eq!(
        after,
        vec![udp_route],
        "media after settling went to {after:?}"
    );
    assert!(sim.connected);
    let events = sim.events();
    assert!(!reconnected(&events), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ParticipantEvent::Ended { .. })),
        "{events:?}"
    );
}

#[test]
fn five_seconds_of_silence_make_a_participant_reconnecting_and_the_grace_ends_it() {
    let mut sim = Sim::new(udp(2, 10_000));
    sim.run_until_connected();
    sim.run_for(Duration::from_secs(2));
    sim.events();
    // Everything from the client stops (a tunnel).
    sim.from = None;
    let stopped = sim.now;
    let mut declared = None;
    let mut ended = None;
    while ended.is_none() && sim.now < stopped + Duration::from_secs(40) {
        sim.step();
        for e in sim.events() {
            match e {
                ParticipantEvent::Reconnecting { silent_for, .. } => {
                    declared = Some((sim.now - stopped, silent_for))
                }
                ParticipantEvent::Ended { reason } => ended = Some((sim.now - stopped, reason)),
                _ => {}
            }
        }
    }
    let (after, silent_for) = declared.expect("declared reconnecting");
    // The silence window, read on a 250 ms liveness tick.
    assert!(
        after >= Duration::from_secs(5) && after <= Duration::from_millis(5_300),
        "reconnecting {after:?} after the silence began"
    );
    assert!(
        silent_for.abs_diff(after) <= TICK * 2,
        "{silent_for:?} vs {after:?}"
    );
    let (after, reason) = ended.expect("ended after the grace");
    assert_eq!(reason, LeaveReason::ConnectionLost);
    // Reconnecting at ~5 s, then the 20 s grace.
    assert!(
        after >= Duration::from_secs(25) && after <= Duration::from_millis(25_600),
        "ended {after:?} after the silence began"
    );
}

#[test]
fn a_transport_whose_dtls_stalls_ends_with_dtls_timeout_10s_after_the_clients_last_flight() {
    let mut sim = Sim::new(udp(2, 10_000));
    // ICE gets through; every DTLS datagram of the server is lost. The
    // client repeats its flight every second; after 6 s it sends nothing
    // more. The deadline runs from its last datagram, not from ICE (a
    // client still retransmitting under loss is given the time).
    sim.lose = Box::new(|d| d.first().is_some_and(|b| (20..=63).contains(b)));
    let mut ended = None;
    let mut last_client_dtls = None;
    while ended.is_none() && sim.elapsed() < Duration::from_secs(40) {
        if sim.elapsed() >= Duration::from_secs(6) {
            sim.from = None;
        }
        let before = sim.shard.metrics().bytes_in.get();
        sim.step();
        if sim.from.is_some() && sim.shard.metrics().bytes_in.get() > before {
            last_client_dtls = Some(sim.elapsed());
        }
        for e in sim.events() {
            if let ParticipantEvent::Ended { reason } = e {
                ended = Some((sim.elapsed(), reason));
            }
        }
    }
    let (after, reason) = ended.expect("the session ended");
    assert_eq!(reason, LeaveReason::DtlsTimeout);
    let last = last_client_dtls.expect("the client sent something");
    assert!(
        after >= last + Duration::from_secs(10) && after <= last + Duration::from_secs(11),
        "ended at {after:?}, the client's last datagram at {last:?}"
    );
    assert!(!sim.connected);
}

#[test]
fn dtls_completes_when_each_flight_arrives_in_reverse_order() {
    for (client, server) in [(true, false), (false, true), (true, true)] {
        let mut sim = Sim::new(udp(2, 10_000));
        sim.reverse_client = client;
        sim.reverse_server = server;
        sim.run_until_connected_within(Duration::from_secs(20));
        assert!(
            sim.connected,
            "no connection with client datagrams reversed: {client}, server's: {server}"
        );
    }
}

#[test]
fn a_lost_client_flight_is_sent_again_because_only_identical_copies_of_ours_are_resent() {
    // The client's flight 5 (Certificate … Finished) is lost once. Its
    // handshaker (rtc's) clears its retransmission timer on any new
    // handshake record; rtc's DTLS server on our side sends its flight 4
    // again on its own 1 s timer under new record numbers, which used to
    // reach the client before its own timer fired and leave it waiting
    // for ever. With those held back, the client's timer repeats flight 5.
    let mut sim = Sim::new(udp(2, 10_000));
    // With a one-way delay, our flight 4 (and so the client's flight 5)
    // goes out a tick before the client's: rtc's server timer fires first.
    sim.server_delay = TICK;
    // An epoch-0 handshake record carrying a Certificate (type 11): the
    // client's flight 5 starts with it.
    sim.lose_client =
        lose_first(|d| d.len() > 13 && d[0] == 22 && d[3..5] == [0, 0] && d[13] == 11);
    sim.run_until_connected_within(Duration::from_secs(5));
    assert!(
        sim.connected,
        "no connection 5 s after the client's flight 5 was lost"
    );
    assert!(sim.shard.metrics().drop_dtls_rtc_resend.get() >= 1);
}

#[test]
fn media_flows_after_our_last_dtls_flight_is_lost_once() {
    // Our flight 6 (ChangeCipherSpec + Finished) is lost; the client sends
    // its flight 5 again and gets it again. Its SRTP must then be ours.
    let mut sim = Sim::new(udp(2, 10_000));
    sim.server_delay = TICK;
    sim.lose = lose_first(|d| d.first() == Some(&20));
    sim.run_until_connected_within(Duration::from_secs(5));
    assert!(
        sim.connected,
        "no connection 5 s after our flight 6 was lost"
    );
    sim.run_for(Duration::from_secs(2));
    let m = sim.shard.metrics();
    assert!(m.packets_in.get() > 50, "{} packets in", m.packets_in.get());
    assert_eq!(m.drop_malformed.get(), 0);
}

#[test]
fn a_panic_in_one_transport_ends_its_participant_and_the_workers_other_rooms_go_on() {
    let mut sim = Sim::new(udp(2, 10_000));
    sim.run_until_connected();
    sim.run_for(Duration::from_secs(1));
    let alice_transport = sim.shard.transport_ids()[0];
    // Someone in another room of the same worker.
    let mut other = join_request("bob");
    other.room = "another-room".into();
    let bob = sim.shard.join(sim.now, other).unwrap().participant.sid;
    sim.shard.fail_transport = Some(alice_transport);

    // Its next datagram or timer fails.
    let mut ended = Vec::new();
    let deadline = sim.now + Duration::from_secs(1);
    while ended.is_empty() && sim.now < deadline {
        sim.step();
        ended.extend(sim.events().into_iter().filter_map(|e| match e {
            ParticipantEvent::Ended { reason } => Some(reason),
            _ => None,
        }));
    }
    assert_eq!(ended, vec![LeaveReason::InternalError]);
    assert_eq!(sim.shard.metrics().transport_panics.get(), 1);
    assert!(
        sim.shard.list_participants(ROOM).unwrap().is_empty(),
        "alice is gone"
    );
    let others = sim.shard.list_participants("another-room").unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].sid, bob);
    // The worker goes on: its timers and its other room still work.
    sim.shard.fail_transport = None;
    sim.run_for(Duration::from_secs(1));
    sim.shard
        .hold_media(sim.now, "another-room", &bob, true)
        .unwrap();
}

/// The qualities the participant was told of since `events` were last read.
fn qualities(events: Vec<ParticipantEvent>) -> Vec<ConnectionQuality> {
    events
        .into_iter()
        .filter_map(|e| match e {
            ParticipantEvent::ConnectionQuality { updates } => {
                updates.into_iter().next().map(|u| u.quality)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_publisher_losing_5_percent_of_its_video_goes_from_excellent_to_good_after_two_windows() {
    let mut sim = Sim::new(udp(2, 10_000));
    sim.run_until_connected();
    sim.events();
    sim.run_for(QUALITY_WINDOW * 2);
    assert_eq!(qualities(sim.events()), vec![ConnectionQuality::Excellent]);

    // Every 20th RTP packet is lost, and so is each retransmission of it.
    sim.lose_client = Box::new(|d| rtp_header(d).is_some_and(|(seq, _)| seq.is_multiple_of(20)));
    // One bad window is not news; the second confirms it. (5% video loss:
    // 100 - 5 × 10 - delay ≈ 50, "good".)
    sim.run_for(QUALITY_WINDOW);
    assert_eq!(qualities(sim.events()), vec![]);
    sim.run_for(QUALITY_WINDOW);
    assert_eq!(qualities(sim.events()), vec![ConnectionQuality::Good]);

    sim.lose_client = Box::new(|_| false);
    sim.run_for(QUALITY_WINDOW * 3);
    assert_eq!(qualities(sim.events()), vec![ConnectionQuality::Excellent]);
}

/// Where the subscriber of `Sim` sends from (module `subscriber`).
fn subscriber_route() -> Route {
    udp(3, 20_000)
}

#[test]
fn a_new_client_at_the_address_of_a_silent_transport_connects_and_takes_the_address_over() {
    // The publisher's client sends from the address the subscriber's
    // client will have: the OS, or a NAT, gave a closed socket's port to
    // a new client. Without the claim by ufrag, the new client's checks
    // go to the old transport, fail its credentials, and it never connects.
    let mut sim = Sim::new(subscriber_route());
    sim.run_until_connected();
    sim.run_for(Duration::from_secs(1));
    sim.from = None;
    let silent_at = sim.now;
    sim.subscribe(
        super::link::Link::unlimited(),
        Duration::from_secs(1),
        Box::new(|_, _| None),
    );
    while !sim.sub().connected && sim.now < silent_at + Duration::from_secs(10) {
        sim.step();
    }
    assert!(sim.sub().connected, "the new client connects");
    // Its first checks came while the old transport had heard from that
    // address within `ROUTE_SILENCE`: they were refused, not routed.
    let connected_after = sim.now - silent_at;
    assert!(
        connected_after >= crate::route::ROUTE_SILENCE,
        "{connected_after:?}"
    );
    let metrics = sim.shard.metrics();
    assert_eq!(metrics.routes_taken_over.get(), 1);
    assert!(metrics.drop_stun_unauthenticated.get() > 0);
    // The old transport sends nothing there any more: its RTCP and
    // keep-alives are dropped, not delivered to the new client.
    sim.run_for(Duration::from_secs(3));
    assert!(sim.shard.metrics().drop_route_taken.get() > 0);
}

#[test]
fn a_live_transports_address_is_not_claimed_by_another_transports_checks() {
    // A client that keeps sending keeps its address: checks for another
    // transport from there (a spoofer's, say) are refused as unauthenticated.
    let mut sim = Sim::new(subscriber_route());
    sim.run_until_connected();
    sim.subscribe(
        super::link::Link::unlimited(),
        Duration::from_secs(1),
        Box::new(|_, _| None),
    );
    let refused_before = sim.shard.metrics().drop_stun_unauthenticated.get();
    sim.run_for(Duration::from_secs(5));
    assert!(!sim.sub().connected);
    let metrics = sim.shard.metrics();
    assert_eq!(metrics.routes_taken_over.get(), 0);
    assert!(metrics.drop_stun_unauthenticated.get() > refused_before);
    assert!(sim.connected, "the publisher's call goes on");
}
