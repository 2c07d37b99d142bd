//! Calls over a lossy, jittery link: 5% loss and 30 ± 30 ms of delay on
//! every client's link, both ways (the conditions under which 8 of 29
//! calls failed before the DTLS flight replay and liveness-from-any-traffic
//! fixes, and 7 of 7 peer-to-peer calls connected). Every call must
//! connect and stay connected.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::nat::{Link, Nat};
use common::*;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

const CALLS: u64 = 7;

async fn lossy_nat(seed: u64) -> (Arc<Nat>, Link) {
    let nat = Nat::start(IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])).await;
    let link = Link::new(
        0.05,
        Duration::from_millis(30),
        Duration::from_millis(30),
        seed,
    );
    nat.impair(link.clone());
    (nat, link)
}

/// One call of two clients, each behind its own lossy link: connects
/// (media both ways), then stays connected for 10 s (media keeps coming
/// both ways, nobody is seen reconnecting or leaving). Returns how long it
/// took to connect.
async fn one_call(server: &TestServer, call: u64) -> (Duration, u64, u64) {
    let room = unique_room();
    let started = std::time::Instant::now();
    let (nat_a, link_a) = lossy_nat(call * 2).await;
    let (nat_b, link_b) = lossy_nat(call * 2 + 1).await;
    let alice = Client::join_behind(server, &token(&room, "alice"), nat_a).await;
    let mut bob = Client::join_behind(server, &token(&room, "bob"), nat_b).await;
    let a = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    let b = LocalTrack::new(RtpCodecKind::Audio, opus(), 111);
    alice.publish(&[&a]).await;
    bob.publish(&[&b]).await;
    let (from_alice, from_bob) = (Sending::start(a), Sending::start(b));
    hears_after(&bob, &alice.sid, 0).await;
    hears_after(&alice, &bob.sid, 0).await;
    let connected = started.elapsed();

    // The call lasts: 10 s more of media both ways.
    tokio::time::sleep(Duration::from_secs(10)).await;
    hears_after(&bob, &alice.sid, from_alice.last() - 50).await;
    hears_after(&alice, &bob.sid, from_bob.last() - 50).await;
    let mut seen = Vec::new();
    while let Some(m) = bob.try_event() {
        seen.push(m["type"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        !seen
            .iter()
            .any(|t| t == "participant_left" || t == "participant_reconnecting" || t == "left"),
        "call {call}: {seen:?}"
    );
    let ((sent_a, lost_a), (sent_b, lost_b)) = (link_a.counts(), link_b.counts());
    (connected, sent_a + sent_b, lost_a + lost_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_calls_over_5_percent_loss_and_30ms_jitter_all_connect_and_stay_connected() {
    let server = TestServer::start(&[]);
    // Two calls at a time: this machine has two cores, and the clients'
    // DTLS timers should see the link, not a starved scheduler.
    let mut results = Vec::new();
    for pair in (0..CALLS).collect::<Vec<_>>().chunks(2) {
        let calls = pair.iter().map(|&call| one_call(&server, call));
        results.extend(futures_util::future::join_all(calls).await);
    }
    let took: Vec<Duration> = results.iter().map(|r| r.0).collect();
    let sent: u64 = results.iter().map(|r| r.1).sum();
    let lost: u64 = results.iter().map(|r| r.2).sum();
    eprintln!("connected after {took:?}; the links lost {lost} of {sent} datagrams");
    assert_eq!(took.len() as u64, CALLS);
    // The links really were lossy: about 5% of what crossed them was lost.
    let rate = lost as f64 / sent as f64;
    assert!((0.03..0.07).contains(&rate), "loss rate {rate}");
}
