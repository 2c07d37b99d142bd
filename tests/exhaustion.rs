//! Resource exhaustion against the real server: idle and slow connections,
//! over the caps of `[limits]`, from one and from many loopback addresses,
//! cannot lock real clients out of HTTP, signaling, ICE-TCP or the TURN
//! relay, nor use up the process's file descriptors.

mod common;
mod turn_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// What a slowloris client sends: a request whose headers never end.
const PARTIAL_HEADERS: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: callgate\r\nX-Slow: 1\r\n";

/// How soon a flooder reconnects once shed. The table stays full (there
/// are more flooders than places), and a connection is shed once a cap's
/// worth of newcomers came after it: at this pace, with 56 flooders for
/// 32 places, about 0.7 s after it arrived, far longer than a join takes.
const FLOOD_PACE: Duration = Duration::from_millis(500);

/// A server with `limits` as its `[limits]` section (and `--dev` defaults).
fn start_with_limits(limits: &str) -> (TestServer, turn_support::ConfigFile) {
    let path = std::env::temp_dir().join(format!(
        "callgate-limits-{}-{}.toml",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&path, format!("[limits]\n{limits}\n")).unwrap();
    let file = turn_support::ConfigFile(path);
    let server = TestServer::start(&["--config", file.0.to_str().unwrap()]);
    (server, file)
}

/// Loopback address `i` of block `block`: 127.block.x.y, y never 0.
fn source(block: u8, i: usize) -> Ipv4Addr {
    let x = u8::try_from(i / 250).expect("at most 64000 sources a block");
    let y = u8::try_from(i % 250 + 1).unwrap();
    Ipv4Addr::new(127, block, x, y)
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.into(), 0))?;
    socket.connect(to).await
}

/// Reads until the server closes `s`; what it sent before.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Idle connections, opened one after the other, each reported (by its
/// index) when the server closes it.
struct Idle {
    closed: mpsc::UnboundedReceiver<usize>,
    _watchers: JoinSet<()>,
}

impl Idle {
    async fn open(to: SocketAddr, sources: &[Ipv4Addr], hello: &'static [u8]) -> Idle {
        let (tx, closed) = mpsc::unbounded_channel();
        let mut watchers = JoinSet::new();
        for (i, &from) in sources.iter().enumerate() {
            let mut s = connect_from(from, to).await.expect("connect");
            s.write_all(hello).await.unwrap();
            let tx = tx.clone();
            watchers.spawn(async move {
                let sent = read_until_closed(&mut s).await;
                assert!(sent.is_empty(), "an idle connection got {sent:?}");
                let _ = tx.send(i);
            });
        }
        Idle {
            closed,
            _watchers: watchers,
        }
    }

    /// The indexes of the next `n` connections the server closes.
    async fn wait_closed(&mut self, n: usize) -> Vec<usize> {
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            let i = tokio::time::timeout(WAIT, self.closed.recv())
                .await
                .unwrap_or_else(|_| panic!("{} of {n} idle connections closed", got.len()))
                .unwrap();
            got.push(i);
        }
        got.sort();
        got
    }
}

/// Connections that send `hello` and then nothing, one per source, each
/// opened again `pace` after the server closed it: an attacker keeping
/// the server's tables full while real clients come and go. The first
/// connections are spread over one `pace` too.
struct Flood {
    closes: Arc<AtomicU64>,
    closed: Arc<tokio::sync::Notify>,
    _tasks: JoinSet<()>,
}

impl Flood {
    fn start(
        to: SocketAddr,
        sources: Vec<Ipv4Addr>,
        hello: &'static [u8],
        pace: Duration,
    ) -> Flood {
        let closes = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(tokio::sync::Notify::new());
        let mut tasks = JoinSet::new();
        let n = u32::try_from(sources.len()).unwrap();
        for (i, from) in (0u32..).zip(sources) {
            let (closes, closed) = (closes.clone(), closed.clone());
            tasks.spawn(async move {
                // The attacker's own pace, not a wait for the server.
                tokio::time::sleep(pace * i / n).await;
                loop {
                    if let Ok(mut s) = connect_from(from, to).await
                        && s.write_all(hello).await.is_ok()
                    {
                        read_until_closed(&mut s).await;
                        closes.fetch_add(1, Ordering::Relaxed);
                        closed.notify_waiters();
                    }
                    tokio::time::sleep(pace).await;
                }
            });
        }
        Flood {
            closes,
            closed,
            _tasks: tasks,
        }
    }

    fn closes(&self) -> u64 {
        self.closes.load(Ordering::Relaxed)
    }

    /// Waits until the server closed `n` of the flood's connections.
    async fn wait_closes(&self, n: u64) {
        let wait = async {
            loop {
                let notified = self.closed.notified();
                if self.closes() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{} of {n} flood connections closed", self.closes()));
    }
}

async fn healthz(server: &TestServer) -> reqwest::StatusCode {
    let response = tokio::time::timeout(WAIT, reqwest::get(server.api("/healthz")))
        .await
        .expect("/healthz answers within the wait")
        .expect("/healthz answers");
    response.status()
}

/// Alice publishes video and audio; Bob gets every packet byte-identical.
async fn call_with_media(server: &TestServer, tcp_only: bool) {
    let room = unique_room();
    let join = |identity: &'static str| {
        let token = token(&room, identity);
        async move {
            if tcp_only {
                Client::join_tcp(server, &token).await
            } else {
                Client::join(server, &token).await
            }
        }
    };
    let mut alice = join("alice").await;
    let bob = join("bob").await;
    let mut tracks = camera_and_microphone();
    publish_and_count(&mut alice, &mut tracks, &[&bob]).await;
    alice.close().await;
    bob.close().await;
}

fn shed(text: &str, reason: &str) -> f64 {
    metric(
        text,
        "callgate_http_connections_shed_total",
        &format!("reason=\"{reason}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_over_both_caps_leave_healthz_and_joins_working() {
    let (server, _config) = start_with_limits(
        "http_max_unauthenticated = 32\n\
         http_max_unauthenticated_per_address = 8\n\
         http_header_read_timeout = \"60s\"",
    );
    // 40 slow requests from 127.0.0.1, then 80 from 80 other addresses:
    // 120 connections for a table of 32.
    let mut sources = vec![Ipv4Addr::LOCALHOST; 40];
    sources.extend((0..80).map(|i| source(3, i)));
    let mut idle = Idle::open(server.http, &sources, PARTIAL_HEADERS).await;
    let closed = idle.wait_closed(88).await;
    // Admitted in accept order: 127.0.0.1 keeps its newest 8 (32 shed for
    // the address cap); the others fill the table, and their 56 past it
    // shed the oldest: those 8, then 48 of their own.
    assert_eq!(closed, (0..88).collect::<Vec<_>>());

    // Asking is a connection too: it sheds one more, the oldest.
    let text = metrics_text(&server).await;
    assert_eq!(shed(&text, "address_cap"), 32.0, "{text}");
    assert_eq!(shed(&text, "total_cap"), 57.0, "{text}");
    assert_eq!(
        metric(&text, "callgate_http_unauthenticated_connections", ""),
        32.0
    );
    assert_eq!(idle.wait_closed(1).await, vec![88]);
    assert_eq!(healthz(&server).await, reqwest::StatusCode::OK);

    // Now an attacker keeps the table full, from 127.0.0.1 and 48 other
    // addresses, while two real clients join and call.
    let before = shed(&metrics_text(&server).await, "total_cap");
    let mut flooders = vec![Ipv4Addr::LOCALHOST; 8];
    flooders.extend((0..48).map(|i| source(4, i)));
    let flood = Flood::start(server.http, flooders, PARTIAL_HEADERS, FLOOD_PACE);
    // The table is full and shedding.
    flood.wait_closes(8).await;
    assert_eq!(healthz(&server).await, reqwest::StatusCode::OK);
    call_with_media(&server, false).await;
    assert_eq!(healthz(&server).await, reqwest::StatusCode::OK);
    let text = metrics_text(&server).await;
    assert!(
        flood.closes() > 0 && shed(&text, "total_cap") > before,
        "the flood never filled the table: {text}"
    );
    assert!(metric(&text, "callgate_http_unauthenticated_connections", "") <= 32.0);
    assert_eq!(metric(&text, "callgate_http_accept_errors_total", ""), 0.0);
}

/// The soft and hard open-files limits of process `pid`.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let figures: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (figures[0], figures[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_open_files_limit_leave_the_server_reachable() {
    // Started with a soft limit of 128 under a hard one of 256: start-up
    // raises the soft limit to 256 and sizes the caps from it, 64 unproven
    // HTTP connections (16 per address).
    let server = TestServer::start_with_open_files_limit(128, 256, &[]);
    assert_eq!(open_files_limits(server.pid()), (256, 256));

    // 300 slow requests, 10 from each of 30 addresses: more than the
    // process may open. It holds 64 and closes the rest.
    let sources: Vec<Ipv4Addr> = (0..300).map(|i| source(8, i / 10)).collect();
    let mut idle = Idle::open(server.http, &sources, PARTIAL_HEADERS).await;
    assert_eq!(idle.wait_closed(236).await, (0..236).collect::<Vec<_>>());
    let text = metrics_text(&server).await;
    assert_eq!(shed(&text, "total_cap"), 237.0, "{text}");
    assert_eq!(shed(&text, "address_cap"), 0.0, "{text}");
    assert_eq!(
        metric(&text, "callgate_http_unauthenticated_connections", ""),
        64.0
    );

    // Health checks and a call work, and the server never ran out.
    assert_eq!(healthz(&server).await, reqwest::StatusCode::OK);
    call_with_media(&server, false).await;
    let text = metrics_text(&server).await;
    assert_eq!(metric(&text, "callgate_http_accept_errors_total", ""), 0.0);
}

/// Open file descriptors of process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_pauses_and_recovers() {
    // Caps far above what 64 open files allow, so that accepting fails.
    let path = std::env::temp_dir().join(format!(
        "callgate-limits-{}-{}.toml",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(
        &path,
        "[limits]\nhttp_max_unauthenticated = 1000\n\
         http_max_unauthenticated_per_address = 1000\n\
         http_header_read_timeout = \"60s\"\n",
    )
    .unwrap();
    let _config = turn_support::ConfigFile(path.clone());
    let server =
        TestServer::start_with_open_files_limit(64, 64, &["--config", path.to_str().unwrap()]);
    let pid = server.pid();

    // Idle connections until the process has no descriptor left; the rest
    // wait in the listen queue.
    let mut flood = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(server.http).await.unwrap();
        s.write_all(PARTIAL_HEADERS).await.unwrap();
        flood.push(s);
    }
    // Nothing signals the server's descriptor count: look, a bounded
    // number of times.
    let mut looks = 0;
    while open_files(pid) < 64 {
        looks += 1;
        assert!(looks < 400, "the server never ran out: {}", open_files(pid));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out_of_files = Instant::now();
    // Out of descriptors for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(flood);

    // The loop lived through it: it serves again once descriptors free up.
    assert_eq!(healthz(&server).await, reqwest::StatusCode::OK);
    let text = metrics_text(&server).await;
    let errors = metric(&text, "callgate_http_accept_errors_total", "");
    // It paused 50 ms after each failure rather than spinning.
    let most = (out_of_files.elapsed().as_millis() / 50 + 2) as f64;
    assert!(
        errors >= 1.0 && errors <= most,
        "{errors} accept errors, at most {most}"
    );
}

#[tokio::test]
async fn a_slow_client_is_closed_at_the_header_read_timeout() {
    let timeout = Duration::from_millis(500);
    let (server, _config) = start_with_limits("http_header_read_timeout = \"500ms\"");

    // Headers that never end: closed without an answer, not before time.
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.http).await.unwrap();
    slow.write_all(PARTIAL_HEADERS).await.unwrap();
    let answer = tokio::time::timeout(WAIT, read_until_closed(&mut slow))
        .await
        .expect("the server closes a slow client");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        started.elapsed() >= timeout,
        "closed after {:?}",
        started.elapsed()
    );

    // A kept-alive connection gets the same time for its next request.
    let mut kept = TcpStream::connect(server.http).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: callgate\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 15];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    let answered = Instant::now();
    let rest = tokio::time::timeout(WAIT, read_until_closed(&mut kept))
        .await
        .expect("the server closes an idle kept-alive connection");
    assert!(answered.elapsed() >= timeout - Duration::from_millis(50));
    assert!(String::from_utf8_lossy(&rest).ends_with(r#"{"status":"ok"}"#));

    let text = metrics_text(&server).await;
    assert_eq!(
        metric(&text, "callgate_http_header_timeouts_total", ""),
        2.0,
        "{text}"
    );
    // Nothing else was closed or shed, and the server serves on.
    assert_eq!(shed(&text, "address_cap") + shed(&text, "total_cap"), 0.0);
    assert_eq!(healthz(&server).await, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn one_address_over_its_cap_sheds_only_its_own_connections() {
    let (server, _config) = start_with_limits(
        "http_max_unauthenticated = 64\n\
         http_max_unauthenticated_per_address = 4\n\
         http_header_read_timeout = \"60s\"",
    );
    let patient = source(5, 0);
    let greedy = source(5, 1);
    let mut kept = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from(patient, server.http).await.unwrap();
        s.write_all(PARTIAL_HEADERS).await.unwrap();
        kept.push(s);
    }
    let mut idle = Idle::open(server.http, &[greedy; 20], PARTIAL_HEADERS).await;
    // The greedy address keeps its newest 4.
    assert_eq!(idle.wait_closed(16).await, (0..16).collect::<Vec<_>>());

    let text = metrics_text(&server).await;
    assert_eq!(shed(&text, "address_cap"), 16.0, "{text}");
    assert_eq!(shed(&text, "total_cap"), 0.0, "{text}");
    // The patient address lost nothing: each of its requests completes.
    for mut s in kept {
        s.write_all(b"\r\n").await.unwrap();
        let answer = tokio::time::timeout(WAIT, async {
            let mut status = [0u8; 15];
            s.read_exact(&mut status).await.map(|_| status)
        })
        .await
        .expect("an answer within the wait")
        .expect("the connection was kept");
        assert_eq!(&answer, b"HTTP/1.1 200 OK");
    }
}

/// A signaling connection from the loopback address `from`.
async fn signal_from(server: &TestServer, from: Ipv4Addr) -> Signal {
    let stream = connect_from(from, server.http).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), stream)
        .await
        .expect("websocket upgrade");
    Signal { ws }
}

#[tokio::test]
async fn a_websocket_is_shed_before_join_with_1013_and_never_after() {
    let (server, _config) = start_with_limits(
        "http_max_unauthenticated = 64\n\
         http_max_unauthenticated_per_address = 2\n\
         http_header_read_timeout = \"60s\"",
    );
    let from = source(6, 0);
    let room = unique_room();
    let mut bob = signal_from(&server, from).await;
    bob.send(json!({"type": "join", "token": token(&room, "bob"), "protocol": 1}))
        .await;
    assert_eq!(bob.recv().await.unwrap()["type"], "joined");
    let mut waiting = signal_from(&server, from).await;

    // Three more connections from that address: the second sheds the
    // oldest one still unproven, the WebSocket that has not joined, the
    // third the first of them; never Bob.
    let mut idle = Idle::open(server.http, &[from; 3], PARTIAL_HEADERS).await;
    assert_eq!(
        waiting.recv().await.unwrap_err(),
        Closed {
            code: 1013,
            reason: "server_busy".into()
        }
    );
    assert_eq!(idle.wait_closed(1).await, vec![0]);
    let text = metrics_text(&server).await;
    assert_eq!(shed(&text, "address_cap"), 2.0, "{text}");

    // Bob is still in the room and hears of Alice.
    let (_alice, _) = Signal::join(&server, &token(&room, "alice")).await;
    let joined = bob.recv_type("participant_joined").await;
    assert_eq!(joined["participant"]["identity"], "alice", "{joined}");
}

fn ice_tcp_refused(text: &str, reason: &str) -> f64 {
    metric(
        text,
        "callgate_ice_tcp_refused_total",
        &format!("reason=\"{reason}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ice_tcp_connections_over_both_caps_do_not_starve_tcp_only_clients() {
    let (server, _config) = start_with_limits(
        "ice_tcp_max_pending = 16\n\
         ice_tcp_max_pending_per_address = 4\n\
         ice_tcp_first_frame_timeout = \"60s\"",
    );
    // 8 idle connections from 127.0.0.1, where the clients connect from
    // too, then 40 from 40 other addresses: 48 for a table of 16.
    let mut sources = vec![Ipv4Addr::LOCALHOST; 8];
    sources.extend((0..40).map(|i| source(7, i)));
    let mut idle = Idle::open(server.tcp, &sources, b"").await;
    // 127.0.0.1 keeps its newest 4; the others fill the table and their 28
    // past it shed those 4, then 24 of their own.
    assert_eq!(idle.wait_closed(32).await, (0..32).collect::<Vec<_>>());
    let text = metrics_text(&server).await;
    assert_eq!(ice_tcp_refused(&text, "address_busy"), 4.0, "{text}");
    assert_eq!(ice_tcp_refused(&text, "busy"), 28.0, "{text}");
    assert_eq!(metric(&text, "callgate_ice_tcp_pending", ""), 16.0);

    // Two clients with no UDP call through the full table: their first
    // connection sheds the oldest idle one, and each is handed over to its
    // transport at its first request.
    call_with_media(&server, true).await;
    let text = metrics_text(&server).await;
    assert!(
        metric(&text, "callgate_ice_tcp_accepted_total", "") >= 2.0,
        "{text}"
    );
    let shed_for_clients = ice_tcp_refused(&text, "busy") - 28.0;
    assert!(shed_for_clients >= 1.0, "{text}");
    assert_eq!(ice_tcp_refused(&text, "address_busy"), 4.0, "{text}");
    assert_eq!(ice_tcp_refused(&text, "timeout"), 0.0, "{text}");
    assert!(metric(&text, "callgate_ice_tcp_pending", "") <= 16.0);
    // The idle connections the clients did not need are still held.
    let shed = usize::try_from(shed_for_clients as u64).unwrap();
    assert_eq!(
        idle.wait_closed(shed).await,
        (32..32 + shed).collect::<Vec<_>>()
    );
    assert!(idle.closed.try_recv().is_err());
}

#[tokio::test]
async fn an_ice_tcp_connection_without_a_first_request_is_closed_at_its_deadline() {
    let (server, _config) = start_with_limits("ice_tcp_first_frame_timeout = \"300ms\"");
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.tcp).await.unwrap();
    // Half a frame, then nothing.
    silent.write_all(&[0, 100, 0, 1]).await.unwrap();
    let got = tokio::time::timeout(WAIT, read_until_closed(&mut silent))
        .await
        .expect("the server closes a silent ICE-TCP connection");
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let text = metrics_text(&server).await;
    assert_eq!(ice_tcp_refused(&text, "timeout"), 1.0, "{text}");
    assert_eq!(metric(&text, "callgate_ice_tcp_pending", ""), 0.0);
    assert_eq!(metric(&text, "callgate_ice_tcp_accepted_total", ""), 0.0);
}

/// Sends a STUN request every 100 ms on `stream` — `next` makes it from
/// the last answer — until the server closes the connection. Returns the
/// answers (error code, `None` for a success) and when it closed.
async fn chat_until_closed<S>(
    stream: S,
    mut next: impl FnMut(Option<&rtc::stun::message::Message>) -> rtc::stun::message::Message,
) -> (Vec<Option<u16>>, Instant)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut answers = Vec::new();
    let mut last: Option<rtc::stun::message::Message> = None;
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A write may fail once the server has closed: the read
                // below sees the end.
                let _ = wr.write_all(&next(last.as_ref()).raw).await;
            }
            read = rd.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return (answers, Instant::now());
                }
                while buf.len() >= 20 {
                    let len = 20 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                    if buf.len() < len {
                        break;
                    }
                    let mut m = rtc::stun::message::Message::new();
                    m.unmarshal_binary(&buf[..len]).expect("a STUN answer");
                    buf.drain(..len);
                    answers.push(turn_support::error_code(&m));
                    last = Some(m);
                }
            }
        }
    }
}

/// What the task watching a connection gives once the server closed it,
/// within the wait, and when it ended.
async fn closed_within<T>(
    what: &str,
    watcher: tokio::task::JoinHandle<(T, Instant)>,
) -> (T, Instant) {
    tokio::time::timeout(WAIT, watcher)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_connections_that_never_authenticate_are_closed_at_the_deadline() {
    use rtc::stun::attributes::{ATTR_NONCE, ATTR_REALM};
    use rtc::stun::message::{BINDING_REQUEST, METHOD_ALLOCATE, Message, Setter, TransactionId};
    use turn_support::{EchoPeer, Raw, Transport, TurnClient};
    let deadline = Duration::from_secs(1);
    let (server, _config) =
        turn_support::start("\n[limits]\nturn_unauthenticated_timeout = \"1s\"");
    let (tcp, tls) = (server.turn_tcp.unwrap(), server.turn_tls.unwrap());

    // A client that authenticates, first, so that its deadline passes first.
    let echo = EchoPeer::start().await;
    let (user, pass) = turn_support::credentials("alice");
    let mut alice = TurnClient::connect(Transport::Tcp, tcp, &user, &pass, None).await;
    let relay = alice.allocate().await;

    let started = Instant::now();
    // Binding requests, answered, all along: never authentication.
    let binding = tokio::spawn({
        let s = TcpStream::connect(tcp).await.unwrap();
        chat_until_closed(s, |_| {
            let mut m = Message::new();
            let setters: Vec<Box<dyn Setter>> =
                vec![Box::new(BINDING_REQUEST), Box::new(TransactionId::new())];
            m.build(&setters).unwrap();
            m
        })
    });
    // Allocate requests signed with a wrong password, over TLS.
    let wrong_password = tokio::spawn({
        let s = TcpStream::connect(tls).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let s = turn_support::tls_connector_for_dev()
            .connect(name, s)
            .await
            .expect("TLS handshake");
        let mut raw = Raw::new(tcp, &user, "not-the-password").await;
        chat_until_closed(s, move |last| {
            if let Some(m) = last {
                raw.realm = turn_support::text(m, ATTR_REALM).unwrap_or_default();
                raw.nonce = turn_support::text(m, ATTR_NONCE).unwrap_or_default();
            }
            let signed = !raw.nonce.is_empty();
            raw.build(METHOD_ALLOCATE, vec![turn_support::requested_udp()], signed)
        })
    });
    // Silent: on TCP; on TLS after the handshake; on TLS without one.
    let silent_tcp = tokio::spawn({
        let mut s = TcpStream::connect(tcp).await.unwrap();
        async move { (read_until_closed(&mut s).await, Instant::now()) }
    });
    let no_handshake = tokio::spawn({
        let mut s = TcpStream::connect(tls).await.unwrap();
        async move { (read_until_closed(&mut s).await, Instant::now()) }
    });
    let silent_tls = tokio::spawn({
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = turn_support::tls_connector_for_dev()
            .connect(name, TcpStream::connect(tls).await.unwrap())
            .await
            .expect("TLS handshake");
        async move {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            (rest, Instant::now())
        }
    });

    // Each is closed at its deadline, not before.
    let (answers, at) = closed_within("binding", binding).await;
    assert!(at >= started + deadline);
    assert!(answers.len() >= 5, "{answers:?}");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    let (answers, at) = closed_within("wrong password", wrong_password).await;
    assert!(at >= started + deadline);
    assert!(answers.len() >= 5, "{answers:?}");
    assert!(answers.iter().all(|a| *a == Some(401)), "{answers:?}");
    for (what, task) in [
        ("silent tcp", silent_tcp),
        ("no handshake", no_handshake),
        ("silent tls", silent_tls),
    ] {
        let (sent, at) = closed_within(what, task).await;
        assert!(at >= started + deadline, "{what}");
        assert!(sent.is_empty(), "{what}: {sent:?}");
    }

    let text = metrics_text(&server).await;
    let closed = |transport: &str| {
        metric(
            &text,
            "callgate_turn_unauthenticated_closed_total",
            &format!("transport=\"{transport}\""),
        )
    };
    assert_eq!(closed("tcp"), 2.0, "{text}");
    assert_eq!(closed("tls"), 3.0, "{text}");
    // Nothing was allocated for them; Alice, past the deadline, relays on.
    assert_eq!(metric(&text, "callgate_turn_allocations", ""), 1.0);
    turn_support::round_trip(&mut alice, relay, &echo, 5, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_turn_connections_over_both_caps_do_not_lock_out_a_real_client() {
    use turn_support::{EchoPeer, Transport, TurnClient};
    let (server, _config) = turn_support::start(
        "\n[limits]\n\
         turn_max_unauthenticated = 8\n\
         turn_max_unauthenticated_per_address = 2\n\
         turn_unauthenticated_timeout = \"60s\"",
    );
    let tcp = server.turn_tcp.unwrap();
    // 4 idle connections from 127.0.0.1, then 12 from 12 other addresses.
    let mut sources = vec![Ipv4Addr::LOCALHOST; 4];
    sources.extend((0..12).map(|i| source(9, i)));
    let mut idle = Idle::open(tcp, &sources, b"").await;
    // 127.0.0.1 keeps its newest 2; the others fill the table and their 6
    // past it shed those 2, then 4 of their own.
    assert_eq!(idle.wait_closed(8).await, (0..8).collect::<Vec<_>>());
    let text = metrics_text(&server).await;
    let shed = |text: &str, reason: &str| {
        metric(
            text,
            "callgate_turn_connections_shed_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(shed(&text, "address_cap"), 2.0, "{text}");
    assert_eq!(shed(&text, "total_cap"), 6.0, "{text}");
    assert_eq!(
        metric(&text, "callgate_turn_unauthenticated_connections", ""),
        8.0
    );

    // A real client from 127.0.0.1 sheds the oldest idle one, authenticates
    // and leaves the table.
    let echo = EchoPeer::start().await;
    let (user, pass) = turn_support::credentials("alice");
    let mut alice = TurnClient::connect(Transport::Tcp, tcp, &user, &pass, None).await;
    let relay = alice.allocate().await;
    assert_eq!(idle.wait_closed(1).await, vec![8]);
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(&text, "callgate_turn_unauthenticated_connections", ""),
        7.0
    );
    // Authenticated, she is out of the table: 16 newcomers, twice what it
    // holds, shed every idle connection but cannot shed her.
    let newcomers: Vec<Ipv4Addr> = (0..16).map(|i| source(9, 100 + i)).collect();
    let _newcomers = Idle::open(tcp, &newcomers, b"").await;
    assert_eq!(idle.wait_closed(7).await, (9..16).collect::<Vec<_>>());
    turn_support::round_trip(&mut alice, relay, &echo, 5, 100).await;
    let text = metrics_text(&server).await;
    assert_eq!(metric(&text, "callgate_turn_allocations", ""), 1.0);
}
