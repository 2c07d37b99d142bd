//! The embedded TURN relay against real TURN clients: webrtc-rs's TURN
//! client over UDP, TCP and TLS, and a raw STUN client for what that client
//! will not send. Every peer is a UDP echo on 127.0.0.1.

mod common;
mod turn_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestServer, WAIT, metric, metrics_text};
use rtc::stun::attributes::*;
use rtc::stun::message::*;
use rtc::turn::proto::channum::ChannelNumber;
use rtc::turn::proto::data::Data;
use rtc::turn::proto::lifetime::Lifetime;
use turn_support::*;

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A certificate for "localhost" written as PEM files, and its DER.
struct TlsFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: Vec<u8>,
}

impl TlsFiles {
    fn new() -> TlsFiles {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let base = std::env::temp_dir().join(format!(
            "callgate-turn-tls-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let cert = base.with_extension("crt");
        let key = base.with_extension("key");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        TlsFiles {
            cert,
            key,
            der: c.cert.der().to_vec(),
        }
    }

    fn config(&self) -> String {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert);
        let _ = std::fs::remove_file(&self.key);
    }
}

async fn relays_both_ways(transport: Transport) {
    let tls = TlsFiles::new();
    let (server, _cfg) = start(&tls.config());
    let echo = EchoPeer::start().await;
    let (user, pass) = credentials("alice");
    let addr = match transport {
        Transport::Udp => server.turn_udp,
        Transport::Tcp => server.turn_tcp,
        Transport::Tls => server.turn_tls,
    }
    .expect("the ready line names the listener");
    let mut c = TurnClient::connect(transport, addr, &user, &pass, Some(&tls.der)).await;
    let relay = c.allocate().await;
    assert_eq!(relay.ip(), localhost().ip(), "relayed address on loopback");
    round_trip(&mut c, relay, &echo, 40, 200).await;
    round_trip(&mut c, relay, &echo, 10, 1200).await;

    let text = metrics_text(&server).await;
    assert_eq!(metric(&text, "callgate_turn_allocations", ""), 1.0);
    assert_eq!(metric(&text, "callgate_turn_permissions", ""), 1.0);
    assert_eq!(metric(&text, "callgate_turn_channels", ""), 1.0);
    for dir in ["to_peer", "to_client"] {
        let label = format!("direction=\"{dir}\"");
        assert!(
            metric(&text, "callgate_turn_packets_total", &label) >= 50.0,
            "{text}"
        );
        assert!(metric(&text, "callgate_turn_bytes_total", &label) >= 40.0 * 200.0 + 10.0 * 1200.0);
    }
    // The connection (or a Refresh 0 over UDP) ends the allocation.
    c.close_allocation(relay).await;
    drop(c);
    let left = wait_metric(&server, "callgate_turn_allocations", "", |v| v == 0.0).await;
    assert_eq!(left, 0.0, "the allocation is gone");
    assert_eq!(
        wait_metric(&server, "callgate_turn_permissions", "", |v| v == 0.0).await,
        0.0
    );
    assert_eq!(
        wait_metric(&server, "callgate_turn_channels", "", |v| v == 0.0).await,
        0.0
    );
}

#[tokio::test]
async fn relays_both_ways_over_udp() {
    relays_both_ways(Transport::Udp).await;
}

#[tokio::test]
async fn relays_both_ways_over_tcp() {
    relays_both_ways(Transport::Tcp).await;
}

#[tokio::test]
async fn relays_both_ways_over_tls() {
    relays_both_ways(Transport::Tls).await;
}

#[tokio::test]
async fn refresh_keeps_an_allocation_until_it_expires_or_is_deleted() {
    let (server, _cfg) = start("default_lifetime = \"2s\"\nmax_lifetime = \"2s\"");
    let udp = server.turn_udp.unwrap();
    let (user, pass) = credentials("alice");

    // Granted lifetimes are clamped to the configured range.
    let mut raw = Raw::new(udp, &user, &pass).await;
    let r = raw
        .request(
            METHOD_ALLOCATE,
            vec![
                requested_udp(),
                Box::new(Lifetime(Duration::from_secs(3600))),
            ],
        )
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{r}");
    let mut l = Lifetime::default();
    l.get_from(&r).unwrap();
    assert_eq!(l.0, Duration::from_secs(2));

    // Refreshed every second, it outlives its lifetime twice over.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let r = raw
            .request(
                METHOD_REFRESH,
                vec![Box::new(Lifetime(Duration::from_secs(2)))],
            )
            .await;
        assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "refresh: {r}");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        metric(
            &metrics_text(&server).await,
            "callgate_turn_allocations",
            ""
        ),
        1.0
    );

    // Left alone it expires: the relay frees it and then knows it no more.
    let gone = wait_metric(&server, "callgate_turn_allocations", "", |v| v == 0.0).await;
    assert_eq!(gone, 0.0, "the allocation expired");
    let r = raw.request(METHOD_REFRESH, vec![]).await;
    assert_eq!(error_code(&r), Some(437), "refresh after expiry: {r}");

    // LIFETIME 0 deletes at once.
    let mut raw = Raw::new(udp, &user, &pass).await;
    assert_eq!(raw.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let r = raw
        .request(METHOD_REFRESH, vec![Box::new(Lifetime(Duration::ZERO))])
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{r}");
    let r = raw.request(METHOD_REFRESH, vec![]).await;
    assert_eq!(error_code(&r), Some(437), "{r}");

    // The TURN client refreshes on its own and keeps relaying past the lifetime.
    let echo = EchoPeer::start().await;
    let mut c = TurnClient::connect(Transport::Udp, udp, &user, &pass, None).await;
    let relay = c.allocate().await;
    round_trip(&mut c, relay, &echo, 5, 100).await;
    c.run_for(Duration::from_secs(4)).await;
    round_trip(&mut c, relay, &echo, 5, 100).await;
}

/// Every default-denied range, in every form, on both methods and Send.
const DENIED: &[&str] = &[
    "127.0.0.2",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "224.0.0.1",
    "239.255.255.250",
    "0.0.0.0",
    "0.1.2.3",
    "100.64.0.1",
    "100.127.255.254",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:172.16.0.1",
    "::ffff:192.168.0.1",
    "::ffff:169.254.169.254",
    "::ffff:100.64.0.1",
    "::ffff:0.0.0.0",
    "::127.0.0.1",
    "::10.0.0.1",
    "64:ff9b::a00:1",
    "2002:7f00:1::1",
    "2002:c0a8:101::1",
    "2001:0:4136:e378::1",
];

#[tokio::test]
async fn every_denied_peer_is_refused_with_403() {
    let (server, _cfg) = start("");
    let udp = server.turn_udp.unwrap();
    let (user, pass) = credentials("mallory");
    let mut raw = Raw::new(udp, &user, &pass).await;
    assert_eq!(raw.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);

    for (i, ip) in DENIED.iter().enumerate() {
        let target = SocketAddr::new(ip.parse().unwrap(), 9);
        let r = raw
            .request(METHOD_CREATE_PERMISSION, vec![peer(target)])
            .await;
        assert_eq!(error_code(&r), Some(403), "CreatePermission {target}: {r}");
        let r = raw
            .request(
                METHOD_CHANNEL_BIND,
                vec![Box::new(ChannelNumber(0x4000 + i as u16)), peer(target)],
            )
            .await;
        assert_eq!(error_code(&r), Some(403), "ChannelBind {target}: {r}");
        // A Send indication gets no answer: it is dropped and counted.
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            peer(target),
            Box::new(Data(b"hello".to_vec())),
        ])
        .unwrap();
        raw.sock.send_to(&m.raw, udp).await.unwrap();
    }
    // One allowed peer installs fine, among denied ones it does not.
    let echo = EchoPeer::start().await;
    let r = raw
        .request(METHOD_CREATE_PERMISSION, vec![peer(echo.addr)])
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{r}");
    let mixed = SocketAddr::new("10.0.0.1".parse().unwrap(), 9);
    let r = raw
        .request(METHOD_CREATE_PERMISSION, vec![peer(echo.addr), peer(mixed)])
        .await;
    assert_eq!(error_code(&r), Some(403), "{r}");

    let n = DENIED.len() as f64;
    let sends = wait_metric(
        &server,
        "callgate_turn_denied_peers_total",
        "method=\"send\"",
        |v| v >= n,
    )
    .await;
    assert_eq!(sends, n, "every Send to a denied peer was counted");
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(
            &text,
            "callgate_turn_denied_peers_total",
            "method=\"create_permission\""
        ),
        n + 1.0
    );
    assert_eq!(
        metric(
            &text,
            "callgate_turn_denied_peers_total",
            "method=\"channel_bind\""
        ),
        n
    );
    assert_eq!(
        metric(&text, "callgate_turn_error_responses_total", "code=\"403\""),
        2.0 * n + 1.0
    );
    assert_eq!(metric(&text, "callgate_turn_permissions", ""), 1.0);
    assert_eq!(echo.count(), 0);
}

#[tokio::test]
async fn deny_beats_allow_and_the_sfu_is_reachable_on_its_ports_only() {
    let (server, _cfg) = start(
        "allow_peer_cidrs = [\"10.0.0.0/8\"]\ndeny_peer_cidrs = [\"10.9.0.0/16\", \"203.0.113.0/24\"]",
    );
    let udp = server.turn_udp.unwrap();
    let (user, pass) = credentials("carol");
    let mut raw = Raw::new(udp, &user, &pass).await;
    assert_eq!(raw.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let permit = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 9);
    // Permissions alone send nothing anywhere.
    let r = raw
        .request(METHOD_CREATE_PERMISSION, vec![peer(permit("10.1.2.3"))])
        .await;
    assert_eq!(
        r.typ.class, CLASS_SUCCESS_RESPONSE,
        "allowed private range: {r}"
    );
    for ip in ["10.9.1.1", "203.0.113.5", "::ffff:10.9.1.1"] {
        let r = raw
            .request(METHOD_CREATE_PERMISSION, vec![peer(permit(ip))])
            .await;
        assert_eq!(error_code(&r), Some(403), "{ip}: {r}");
    }

    // 127.0.0.1 is not allowed here, but the SFU's media ports on it are.
    let sfu = server.media[0];
    let r = raw.request(METHOD_CREATE_PERMISSION, vec![peer(sfu)]).await;
    assert_eq!(
        r.typ.class, CLASS_SUCCESS_RESPONSE,
        "the SFU's address: {r}"
    );
    let r = raw
        .request(
            METHOD_CHANNEL_BIND,
            vec![Box::new(ChannelNumber(0x4001)), peer(sfu)],
        )
        .await;
    assert_eq!(
        r.typ.class, CLASS_SUCCESS_RESPONSE,
        "a channel to the SFU: {r}"
    );
    let echo = EchoPeer::start().await;
    let r = raw
        .request(
            METHOD_CHANNEL_BIND,
            vec![Box::new(ChannelNumber(0x4002)), peer(echo.addr)],
        )
        .await;
    assert_eq!(
        error_code(&r),
        Some(403),
        "another port of the SFU's address: {r}"
    );
}

#[tokio::test]
async fn quotas_answer_486_and_508() {
    let (server, _cfg) = start(
        "allow_peer_cidrs = [\"127.0.0.0/8\"]\nmax_allocations_per_user = 2\nmax_allocations = 3\nmax_permissions_per_allocation = 2",
    );
    let udp = server.turn_udp.unwrap();
    let (alice, alice_pass) = credentials("alice");
    let (bob, bob_pass) = credentials("bob");
    let mut first = Raw::new(udp, &alice, &alice_pass).await;
    assert_eq!(first.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let mut second = Raw::new(udp, &alice, &alice_pass).await;
    assert_eq!(second.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let mut third = Raw::new(udp, &alice, &alice_pass).await;
    let r = third.allocate().await;
    assert_eq!(error_code(&r), Some(486), "alice's third allocation: {r}");
    let mut b1 = Raw::new(udp, &bob, &bob_pass).await;
    assert_eq!(
        b1.allocate().await.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "bob has his own quota"
    );
    let mut b2 = Raw::new(udp, &bob, &bob_pass).await;
    let r = b2.allocate().await;
    assert_eq!(error_code(&r), Some(508), "the relay is full: {r}");
    // Freeing one makes room again.
    let r = second
        .request(METHOD_REFRESH, vec![Box::new(Lifetime(Duration::ZERO))])
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(third.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);

    // Permissions per allocation.
    let p = |i: u8| SocketAddr::new(std::net::IpAddr::from([127, 0, 0, i]), 9);
    let r = first
        .request(METHOD_CREATE_PERMISSION, vec![peer(p(2)), peer(p(3))])
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{r}");
    let r = first
        .request(METHOD_CREATE_PERMISSION, vec![peer(p(2))])
        .await;
    assert_eq!(
        r.typ.class, CLASS_SUCCESS_RESPONSE,
        "refreshing one is no new one: {r}"
    );
    let r = first
        .request(METHOD_CREATE_PERMISSION, vec![peer(p(4))])
        .await;
    assert_eq!(error_code(&r), Some(508), "a third permission: {r}");

    let text = metrics_text(&server).await;
    assert_eq!(
        metric(&text, "callgate_turn_error_responses_total", "code=\"486\""),
        1.0
    );
    assert_eq!(
        metric(&text, "callgate_turn_error_responses_total", "code=\"508\""),
        2.0
    );
    assert_eq!(metric(&text, "callgate_turn_allocations", ""), 3.0);
}

#[tokio::test]
async fn bytes_per_second_are_capped_per_allocation() {
    // 4000 bytes/s over both directions: a burst of 100 × 500 bytes mostly drops.
    let (server, _cfg) = start("max_bytes_per_second = 4000");
    let echo = EchoPeer::start().await;
    let (user, pass) = credentials("dave");
    let mut c =
        TurnClient::connect(Transport::Udp, server.turn_udp.unwrap(), &user, &pass, None).await;
    let relay = c.allocate().await;
    c.create_permission(relay, echo.addr).await.unwrap();
    for i in 0..100 {
        c.send_to(relay, echo.addr, &payload(i, 500));
    }
    let mut back = 0;
    while c.recv_within(Duration::from_millis(500)).await.is_some() {
        back += 1;
    }
    let reached = echo.count();
    assert!(reached <= 12, "{reached} of 100 reached the peer");
    assert!(back <= reached, "{back} came back");
    let dropped = wait_metric(
        &server,
        "callgate_turn_dropped_packets_total",
        "reason=\"rate_limited\"",
        |v| v > 0.0,
    )
    .await;
    assert!(dropped >= 80.0, "{dropped} dropped for the rate");
}

#[tokio::test]
async fn bad_credentials_get_401_and_nothing_is_allocated() {
    let (server, _cfg) = start("");
    let udp = server.turn_udp.unwrap();
    let (user, pass) = credentials("eve");
    let now = callgate_signaling::token::unix_now();
    let expired = format!("{}:eve", now - 10);
    let expired_pass = callgate_turn::rest_password(SECRET.as_bytes(), &expired);
    let cases = [
        (
            "wrong password",
            user.clone(),
            "not-the-password".to_owned(),
        ),
        ("expired username", expired, expired_pass),
        (
            "not a REST username",
            "eve".to_owned(),
            callgate_turn::rest_password(SECRET.as_bytes(), "eve"),
        ),
        (
            "another secret",
            user.clone(),
            callgate_turn::rest_password(b"some-other-secret-000", &user),
        ),
    ];
    for (what, u, p) in &cases {
        let mut raw = Raw::new(udp, u, p).await;
        let r = raw.allocate().await;
        assert_eq!(error_code(&r), Some(401), "{what}: {r}");
        assert!(
            text(&r, ATTR_REALM).is_some_and(|r| r == "callgate"),
            "{what}: REALM"
        );
        assert!(
            text(&r, ATTR_NONCE).is_some_and(|n| !n.is_empty()),
            "{what}: NONCE"
        );
        assert!(!r.contains(ATTR_XOR_RELAYED_ADDRESS));
    }
    // Integrity without a nonce is malformed: 400.
    let mut raw = Raw::new(udp, &user, &pass).await;
    raw.challenge().await;
    raw.nonce.clear();
    let m = raw.build(METHOD_ALLOCATE, vec![requested_udp()], true);
    let r = raw.send(&m).await;
    assert_eq!(error_code(&r), Some(400), "{r}");

    // The TURN client sees the refusal too.
    let mut c = TurnClient::connect(Transport::Udp, udp, &user, "wrong", None).await;
    let err = c.allocate_result().await.expect_err("refused");
    assert!(err.contains("401"), "{err}");

    let text = metrics_text(&server).await;
    assert_eq!(
        metric(&text, "callgate_turn_allocations_created_total", ""),
        0.0
    );
    assert_eq!(metric(&text, "callgate_turn_allocations", ""), 0.0);
    // Each case: the unsigned challenge and the refused signed request.
    assert!(
        metric(&text, "callgate_turn_error_responses_total", "code=\"401\"")
            >= 2.0 * cases.len() as f64 + 2.0
    );
}

#[tokio::test]
async fn a_stale_nonce_gets_438_and_a_fresh_one() {
    let (server, _cfg) = start("nonce_lifetime = \"1s\"");
    let (user, pass) = credentials("frank");
    let mut raw = Raw::new(server.turn_udp.unwrap(), &user, &pass).await;
    assert_eq!(raw.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let old = raw.nonce.clone();
    // No event says a nonce expired: ask until it has (bounded).
    let deadline = Instant::now() + WAIT;
    let stale = loop {
        assert!(Instant::now() < deadline, "the nonce never went stale");
        let m = raw.build(METHOD_REFRESH, vec![], true);
        let r = raw.send(&m).await;
        if error_code(&r) == Some(438) {
            break r;
        }
        assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let fresh = text(&stale, ATTR_NONCE).expect("438 carries a new NONCE");
    assert_ne!(fresh, old);
    assert!(stale.contains(ATTR_REALM));
    raw.nonce = fresh;
    let r = raw.request(METHOD_REFRESH, vec![]).await;
    assert_eq!(
        r.typ.class, CLASS_SUCCESS_RESPONSE,
        "with the fresh nonce: {r}"
    );
}

#[tokio::test]
async fn a_retransmitted_allocate_gets_the_original_answer() {
    let (server, _cfg) = start("");
    let (user, pass) = credentials("grace");
    let mut raw = Raw::new(server.turn_udp.unwrap(), &user, &pass).await;
    raw.challenge().await;
    let request = raw.build(METHOD_ALLOCATE, vec![requested_udp()], true);
    let first = raw.send(&request).await;
    assert_eq!(first.typ.class, CLASS_SUCCESS_RESPONSE, "{first}");
    let again = raw.send(&request).await;
    assert_eq!(again.raw, first.raw, "the same bytes again");
    assert_eq!(relayed(&again), relayed(&first));
    let other = raw.allocate().await;
    assert_eq!(
        error_code(&other),
        Some(437),
        "a new Allocate on the same 5-tuple: {other}"
    );
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(&text, "callgate_turn_allocations_created_total", ""),
        1.0
    );
}

#[tokio::test]
async fn joined_hands_out_working_turn_servers() {
    // --dev: the relay is on with the documented dev secret.
    let server = TestServer::start(&[]);
    let (_signal, joined) = common::Signal::join(&server, &common::token("r1", "alice")).await;
    let servers = joined["ice_servers"].as_array().expect("ice_servers");
    assert_eq!(servers.len(), 1, "{joined}");
    let s = &servers[0];
    let urls: Vec<&str> = s["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        vec![
            format!(
                "turn:127.0.0.1:{}?transport=udp",
                server.turn_udp.unwrap().port()
            ),
            format!(
                "turn:127.0.0.1:{}?transport=tcp",
                server.turn_tcp.unwrap().port()
            ),
            format!(
                "turns:127.0.0.1:{}?transport=tcp",
                server.turn_tls.unwrap().port()
            ),
        ]
    );
    let username = s["username"].as_str().unwrap();
    let (expiry, identity) = username.split_once(':').unwrap();
    assert_eq!(identity, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    let now = callgate_signaling::token::unix_now();
    assert!(
        expiry.abs_diff(now + 24 * 3600) < 60,
        "a day's credentials: {username}"
    );
    let credential = s["credential"].as_str().unwrap();
    assert_eq!(
        credential,
        callgate_turn::rest_password(b"callgate-dev-turn-secret", username)
    );
    // Every listener works with them, TLS with the self-signed dev certificate.
    for (transport, addr) in [
        (Transport::Udp, server.turn_udp),
        (Transport::Tcp, server.turn_tcp),
        (Transport::Tls, server.turn_tls),
    ] {
        let mut c = TurnClient::connect(transport, addr.unwrap(), username, credential, None).await;
        c.allocate().await;
    }
}

#[tokio::test]
async fn the_relay_runs_alone() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "turn",
            "--dev",
            "--http-port",
            "0",
            "--turn-udp-port",
            "0",
            "--turn-tcp-port",
            "0",
            "--turn-tls-port",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let line = BufReader::new(stdout)
        .lines()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("callgate turn ready "))
        .expect("a ready line");
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .parse()
            .unwrap()
    };
    let (http, udp) = (field("http"), field("turn_udp"));
    field("turn_tcp");
    field("turn_tls");
    let (user, pass) = callgate_turn::rest_credential(
        b"callgate-dev-turn-secret",
        "solo",
        callgate_signaling::token::unix_now(),
        Duration::from_secs(600),
    );
    let mut c = TurnClient::connect(Transport::Udp, udp, &user, &pass, None).await;
    c.allocate().await;
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "callgate_turn_allocations", ""),
        1.0,
        "{text}"
    );
    let health = reqwest::get(format!("http://{http}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(child.0.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn garbage_from_the_network_hurts_nothing() {
    use tokio::io::AsyncWriteExt;
    let tls = TlsFiles::new();
    let (mut server, _cfg) = start(&tls.config());
    let udp = server.turn_udp.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 7u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u8
    };
    let cookie = 0x2112A442u32.to_be_bytes();
    for i in 0..3000usize {
        let len = (i * 37) % 1600;
        let mut d: Vec<u8> = (0..len).map(|_| rnd()).collect();
        match i % 4 {
            // STUN-looking: right cookie, plausible length, random attributes.
            0 if len >= 20 => {
                d[0] &= 0x01;
                d[2..4].copy_from_slice(&((len as u16 - 20) & !3).to_be_bytes());
                d[4..8].copy_from_slice(&cookie);
            }
            // ChannelData-looking, lying about its length.
            1 if len >= 4 => d[0] = 0x40 | (d[0] & 0x3f),
            _ => {}
        }
        sock.send_to(&d, udp).await.unwrap();
    }
    for addr in [server.turn_tcp.unwrap(), server.turn_tls.unwrap()] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let junk: Vec<u8> = (0..5000).map(|_| rnd()).collect();
        let _ = s.write_all(&junk).await;
    }
    let echo = EchoPeer::start().await;
    let (user, pass) = credentials("henry");
    let mut c = TurnClient::connect(Transport::Udp, udp, &user, &pass, None).await;
    let relay = c.allocate().await;
    round_trip(&mut c, relay, &echo, 5, 100).await;
    assert!(server.is_running());
    let _ = WAIT;
}

#[tokio::test]
async fn two_allocations_relay_to_each_other() {
    // Client to client through the one relay (what `turnutils_uclient -y`
    // does): over UDP on one side and TCP on the other.
    let (server, _cfg) = start("");
    let (a_user, a_pass) = credentials("alice");
    let (b_user, b_pass) = credentials("bob");
    let mut a = TurnClient::connect(
        Transport::Udp,
        server.turn_udp.unwrap(),
        &a_user,
        &a_pass,
        None,
    )
    .await;
    let mut b = TurnClient::connect(
        Transport::Tcp,
        server.turn_tcp.unwrap(),
        &b_user,
        &b_pass,
        None,
    )
    .await;
    let (ra, rb) = (a.allocate().await, b.allocate().await);
    a.create_permission(ra, rb).await.unwrap();
    b.create_permission(rb, ra).await.unwrap();
    let mut got_b = std::collections::BTreeSet::new();
    let mut got_a = std::collections::BTreeSet::new();
    let (mut channels_a, mut channels_b) = (0, 0);
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    while (got_a.len() < 30 || got_b.len() < 30 || channels_a == 0 || channels_b == 0)
        && Instant::now() < deadline
    {
        a.send_to(ra, rb, &payload(i, 300));
        b.send_to(rb, ra, &payload(i, 301));
        i += 1;
        while let Some((ch, from, data)) = b.recv_within(Duration::from_millis(10)).await {
            assert_eq!(from, ra, "b hears a's relayed address");
            let n = u32::from_be_bytes(data[1..5].try_into().unwrap());
            assert_eq!(data, payload(n, 300));
            got_b.insert(n);
            channels_b += ch as u32;
        }
        while let Some((ch, from, data)) = a.recv_within(Duration::from_millis(10)).await {
            assert_eq!(from, rb, "a hears b's relayed address");
            let n = u32::from_be_bytes(data[1..5].try_into().unwrap());
            assert_eq!(data, payload(n, 301));
            got_a.insert(n);
            channels_a += ch as u32;
        }
    }
    assert!(
        got_a.len() >= 30 && got_b.len() >= 30,
        "{} and {}",
        got_a.len(),
        got_b.len()
    );
    assert!(channels_a > 0 && channels_b > 0, "ChannelData both ways");
    let text = metrics_text(&server).await;
    let to_peer = metric(
        &text,
        "callgate_turn_packets_total",
        "direction=\"to_peer\"",
    );
    let to_client = metric(
        &text,
        "callgate_turn_packets_total",
        "direction=\"to_client\"",
    );
    assert!(
        to_client >= 60.0 && to_peer >= to_client,
        "{to_peer} {to_client}"
    );
}

#[tokio::test]
async fn send_indications_come_back_as_data_indications() {
    // Without a channel, data goes out in Send indications and comes back
    // in Data indications that the codec reads.
    let (server, _cfg) = start("");
    let echo = EchoPeer::start().await;
    let (user, pass) = credentials("ida");
    let mut raw = Raw::new(server.turn_udp.unwrap(), &user, &pass).await;
    assert_eq!(raw.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let r = raw
        .request(METHOD_CREATE_PERMISSION, vec![peer(echo.addr)])
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{r}");
    let body = payload(7, 333);
    let mut m = Message::new();
    m.build(&[
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
        peer(echo.addr),
        Box::new(Data(body.clone())),
    ])
    .unwrap();
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + WAIT;
    let data = loop {
        assert!(Instant::now() < deadline, "no Data indication came back");
        raw.sock
            .send_to(&m.raw, server.turn_udp.unwrap())
            .await
            .unwrap();
        let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), raw.sock.recv_from(&mut buf)).await
        else {
            continue;
        };
        let mut d = Message::new();
        d.unmarshal_binary(&buf[..n]).expect("a STUN message");
        break d;
    };
    assert_eq!(data.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    let mut from = rtc::turn::proto::peeraddr::PeerAddress::default();
    from.get_from(&data).unwrap();
    assert_eq!(SocketAddr::new(from.ip, from.port), echo.addr);
    let mut d = Data::default();
    d.get_from(&data).unwrap();
    assert_eq!(d.0, body);
}

#[tokio::test]
async fn relays_over_ipv6() {
    // The relay on ::1 (allowed explicitly: loopback is denied by default),
    // IPv6 relayed addresses, an IPv6 echo peer.
    let (server, _cfg) = start(
        "bind_ip = \"::1\"\nlisteners = [\"udp\", \"tcp\"]\nallow_peer_cidrs = [\"::1/128\"]",
    );
    let udp = server.turn_udp.unwrap();
    assert!(udp.is_ipv6(), "{udp}");
    let echo = EchoPeer::start_on("[::1]:0").await;
    let (user, pass) = credentials("ivan");
    let mut c = TurnClient::connect(Transport::Udp, udp, &user, &pass, None).await;
    let relay = c.allocate().await;
    assert_eq!(relay.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    round_trip(&mut c, relay, &echo, 20, 200).await;

    // An IPv4 peer on an IPv6 allocation: 403 before family (the filter
    // refuses 127.0.0.2 here), and 443 for an allowed IPv4 peer (a
    // documentation address: nothing is sent to it either way).
    let mut raw = Raw::new(udp, &user, &pass).await;
    raw.sock = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    assert_eq!(raw.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let v4: SocketAddr = "127.0.0.2:9".parse().unwrap();
    let r = raw.request(METHOD_CREATE_PERMISSION, vec![peer(v4)]).await;
    assert_eq!(error_code(&r), Some(403), "{r}");
    let public_v4: SocketAddr = "192.0.2.10:9".parse().unwrap();
    let r = raw
        .request(METHOD_CREATE_PERMISSION, vec![peer(public_v4)])
        .await;
    assert_eq!(error_code(&r), Some(443), "{r}");
}
