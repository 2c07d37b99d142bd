//! One load-test run: join everybody, wait until every expected track
//! flows, measure a window, drain, leave, report.

use std::io::{IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate_signaling::token::{Claims, Grants, KeyRing, unix_now};
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tracing::{Instrument, info_span, warn};

use super::error::LoadTestError;
use super::participant::{ClientKind, Participant, VideoShape};
use super::peer::{Clock, PeerContext};
use super::probe::{self, ServerCounters};
use super::report::{Report, ServerSummary, thousands};
use super::scenario::{Plan, Scenario, Sizes};
use super::stats::Recorder;

/// Everything one run needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// The signaling WebSocket, e.g. `ws://127.0.0.1:7880` (`/rtc` is added
    /// when there is no path).
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
    pub scenario: Scenario,
    pub sizes: Sizes,
    /// The WebRTC engine the simulated participants run.
    pub client: ClientKind,
    pub video: VideoShape,
    /// Length of the measurement window.
    pub duration: Duration,
    /// The server process, for its CPU time and peak RSS.
    pub server_pid: Option<u32>,
    /// Participants joining at once.
    pub join_concurrency: usize,
    /// Longest wait for every expected track to deliver its first packet.
    pub join_timeout: Duration,
    /// Print a progress line on stderr.
    pub progress: bool,
    /// Every participant moves its transports to a new loopback address
    /// once, at a random moment in the middle half of the window.
    pub reconnect: bool,
    /// Seed for those moments (random when absent; the report says which).
    pub seed: Option<u64>,
}

/// When each participant moves (offset into the window) and to which
/// address: uniformly in the middle half of the window, so media flows
/// for a quarter of it before and after; sorted by time.
fn move_schedule(participants: usize, window: Duration, seed: u64) -> Vec<(Duration, usize)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (lo, hi) = (window / 4, window * 3 / 4);
    let mut moves: Vec<(Duration, usize)> = (0..participants)
        .map(|i| {
            let at = if hi > lo {
                rng.random_range(lo..hi)
            } else {
                lo
            };
            (at, i)
        })
        .collect();
    moves.sort();
    moves
}

/// The loopback address participant `i` moves to: 127.0.x.y with x ≥ 1,
/// never the 127.0.0.1 everybody starts on, distinct for 64,516 of them.
fn move_address(i: usize) -> std::net::IpAddr {
    let x = 1 + (i / 254) % 254;
    let y = 1 + i % 254;
    std::net::IpAddr::from([127, 0, x as u8, y as u8])
}

/// Where the server is: the WebSocket URL and the HTTP authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportRole {
    pub ws_url: String,
    pub authority: String,
}

impl TransportRole {
    /// Parses `ws://host:port[/path]`; the host must be a loopback address.
    pub fn parse(url: &str) -> Result<TransportRole, LoadTestError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| LoadTestError::Usage(format!("--url {url}: expected ws://host:port")))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path == "/" {
            "/rtc"
        } else {
            path
        };
        let addrs: Vec<_> = authority
            .to_socket_addrs()
            .map_err(|e| LoadTestError::Usage(format!("--url {url}: {e}")))?
            .collect();
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(LoadTestError::NotLoopback(authority.to_owned()));
        }
        Ok(TransportRole {
            ws_url: format!("ws://{authority}{path}"),
            authority: authority.to_owned(),
        })
    }
}

/// The server's state at one moment.
struct Snapshot {
    at: Instant,
    cpu: Option<f64>,
    counters: Option<ServerCounters>,
}

async fn snapshot(target: &TransportRole, pid: Option<u32>) -> Snapshot {
    let counters = match probe::http_get(&target.authority, "/metrics").await {
        Ok(text) => Some(ServerCounters::parse(&text)),
        Err(e) => {
            warn!(error = %e, "no server metrics");
            None
        }
    };
    Snapshot {
        at: Instant::now(),
        cpu: pid.and_then(|p| probe::cpu_seconds(&p.to_string()).ok()),
        counters,
    }
}

fn server_summary(a: &Snapshot, b: &Snapshot, pid: Option<u32>) -> Option<ServerSummary> {
    let counters = b.counters?.since(&a.counters?);
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let cpu = match (a.cpu, b.cpu) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let per_packet =
        cpu.and_then(|c| (counters.packets_out > 0.0).then(|| c * 1e6 / counters.packets_out));
    Some(ServerSummary {
        packets_in: counters.packets_in,
        packets_out: counters.packets_out,
        forwarded_per_sec: counters.packets_out / secs,
        bytes_in: counters.bytes_in,
        bytes_out: counters.bytes_out,
        nacks: counters.nacks,
        plis: counters.plis,
        cpu_seconds: cpu,
        cpu_pct: cpu.map(|c| c * 100.0 / secs),
        cpu_us_per_forwarded_packet: per_packet,
        forwarded_per_core_sec: per_packet.filter(|us| *us > 0.0).map(|us| 1e6 / us),
        peak_rss_mib: pid.and_then(|p| probe::peak_rss_mib(&p.to_string()).ok()),
    })
}

/// Prints a progress line every second until dropped.
struct Progress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(
        enabled: bool,
        phase: Arc<Mutex<&'static str>>,
        joined: Arc<AtomicUsize>,
        participants: usize,
        recorder: Arc<Mutex<Recorder>>,
        expected: Arc<Vec<(usize, u32)>>,
    ) -> Progress {
        if !enabled {
            return Progress {
                stop: None,
                task: None,
            };
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = (Instant::now(), 0u64, 0u64);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut rx => break,
                }
                let (tracks, tx_packets, rx_packets) = {
                    let r = recorder.lock().unwrap_or_else(|e| e.into_inner());
                    let tracks = expected.iter().filter(|(s, t)| r.has(*s, *t)).count();
                    let (_, tx, rx) = r.progress();
                    (tracks, tx, rx)
                };
                let now = Instant::now();
                let secs = now.duration_since(last.0).as_secs_f64().max(1e-9);
                let line = format!(
                    "[{:>4.0}s {:<8}] joined {}/{}  tracks {}/{}  out {} pkt/s  in {} pkt/s",
                    started.elapsed().as_secs_f64(),
                    *phase.lock().unwrap_or_else(|e| e.into_inner()),
                    joined.load(Ordering::Relaxed),
                    participants,
                    tracks,
                    expected.len(),
                    thousands((tx_packets - last.1) as f64 / secs),
                    thousands((rx_packets - last.2) as f64 / secs),
                );
                last = (now, tx_packets, rx_packets);
                let mut err = std::io::stderr().lock();
                if terminal {
                    let _ = write!(err, "\r{line}\x1b[K");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
            if terminal {
                eprintln!();
            }
        });
        Progress {
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn token(
    keys: &KeyRing,
    key: &str,
    room: &str,
    identity: &str,
    publish: bool,
    subscribe: bool,
) -> Result<String, LoadTestError> {
    let now = unix_now();
    Ok(keys.sign(&Claims {
        iss: key.to_owned(),
        sub: identity.to_owned(),
        name: None,
        iat: now,
        nbf: Some(now),
        exp: now + 3600,
        grants: Grants {
            room: Some(room.to_owned()),
            room_join: true,
            can_publish: publish,
            can_subscribe: subscribe,
            ..Grants::default()
        },
        billing: None,
    })?)
}

/// Runs one scenario and reports what it measured.
pub async fn run(opts: &Options) -> Result<Report, LoadTestError> {
    let target = TransportRole::parse(&opts.url)?;
    if opts.reconnect && opts.client != ClientKind::Rtc {
        return Err(LoadTestError::Usage(
            "--reconnect needs --client rtc (the webrtc crate owns its sockets)".into(),
        ));
    }
    let seed = opts.seed.unwrap_or_else(rand::random);
    let clock = Clock(Instant::now());
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let plan = Plan::new(
        opts.scenario,
        opts.sizes,
        &mut recorder.lock().unwrap_or_else(|e| e.into_inner()),
    )
    .map_err(LoadTestError::Usage)?;
    let expected = Arc::new(plan.expected());
    let keys = KeyRing::new([(opts.api_key.as_str(), opts.api_secret.as_str())]);
    let run_id = format!("{:08x}", rand::random::<u32>());
    let room_name = |room: usize| format!("lt-{run_id}-{}-{room}", opts.scenario.name());
    let (stop_tx, stop_rx) = watch::channel(false);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let arrivals = Arc::new(Notify::new());
    let joined = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(Mutex::new("joining"));
    let progress = Progress::start(
        opts.progress,
        phase.clone(),
        joined.clone(),
        plan.participants.len(),
        recorder.clone(),
        expected.clone(),
    );

    // Publishers first, so that a subscriber's join time ends with media
    // that is already flowing; then everyone else.
    let mut participants = Vec::new();
    for publishing in [true, false] {
        let batch = plan
            .participants
            .iter()
            .filter(|p| p.tracks.is_empty() != publishing);
        let mut joins = futures_util::stream::iter(batch.map(|p| {
            let ctx = PeerContext {
                participant: p.index,
                signal: tokio::sync::mpsc::unbounded_channel().0,
                recorder: recorder.clone(),
                clock,
                failures: failures.clone(),
                arrivals: arrivals.clone(),
            };
            let token = token(
                &keys,
                &opts.api_key,
                &room_name(p.room),
                &p.identity,
                !p.tracks.is_empty(),
                p.subscribe,
            );
            let url = target.ws_url.clone();
            let stop = stop_rx.clone();
            let (client, video) = (opts.client, opts.video);
            let joined = joined.clone();
            async move {
                let p = Participant::join(&url, &token?, p, ctx, client, video, stop).await?;
                joined.fetch_add(1, Ordering::Relaxed);
                Ok::<_, LoadTestError>(p)
            }
            .instrument(info_span!("join", participant = p.index))
        }))
        .buffer_unordered(opts.join_concurrency.max(1));
        while let Some(result) = joins.next().await {
            match result {
                Ok(p) => participants.push(p),
                Err(e) => failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(e.to_string()),
            }
        }
    }
    if participants.is_empty() {
        progress.finish().await;
        let first = failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
            .unwrap_or_default();
        return Err(LoadTestError::Signaling {
            url: target.ws_url.clone(),
            message: format!("no participant could join: {first}"),
        });
    }

    // Every expected track delivers before the window opens (or the wait ends).
    *phase.lock().unwrap_or_else(|e| e.into_inner()) = "waiting";
    let all_flowing = || {
        let r = recorder.lock().unwrap_or_else(|e| e.into_inner());
        expected.iter().all(|(s, t)| r.has(*s, *t))
    };
    let _ = tokio::time::timeout(opts.join_timeout, async {
        loop {
            let arrived = arrivals.notified();
            if all_flowing() {
                return;
            }
            arrived.await;
        }
    })
    .await;

    *phase.lock().unwrap_or_else(|e| e.into_inner()) = "measuring";
    let before = snapshot(&target, opts.server_pid).await;
    let self_before = probe::cpu_seconds("self").ok();
    recorder
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .begin_window(clock.now_us());
    let window_start = Instant::now();
    if opts.reconnect {
        for (at, i) in move_schedule(participants.len(), opts.duration, seed) {
            tokio::time::sleep_until((window_start + at).into()).await;
            participants[i].move_to(move_address(i));
        }
    }
    tokio::time::sleep_until((window_start + opts.duration).into()).await;
    recorder
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .end_window(clock.now_us());
    let after = snapshot(&target, opts.server_pid).await;
    let self_after = probe::cpu_seconds("self").ok();

    // What was sent in the window has arrived once every track has
    // delivered a later packet; what has not by then is lost.
    *phase.lock().unwrap_or_else(|e| e.into_inner()) = "draining";
    let drain_until = Instant::now() + Duration::from_secs(2);
    let mut check = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < drain_until {
        check.tick().await;
        if recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drained(&expected)
        {
            break;
        }
    }
    let media = recorder
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summarize(&expected);
    let reconnect = opts.reconnect.then(|| {
        recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reconnect_summary(seed)
    });

    *phase.lock().unwrap_or_else(|e| e.into_inner()) = "leaving";
    let _ = stop_tx.send(true);
    let joined_count = participants.len();
    let leaving = futures_util::future::join_all(participants.into_iter().map(Participant::leave));
    if tokio::time::timeout(Duration::from_secs(10), leaving)
        .await
        .is_err()
    {
        warn!("some participants did not leave in time");
    }
    progress.finish().await;

    let failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|e| e.into_inner()));
    let window = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    Ok(Report {
        scenario: opts.scenario.name(),
        client: opts.client,
        rooms: plan.rooms,
        publishers_per_room: plan.publishers_per_room,
        subscribers_per_room: plan.subscribers_per_room,
        participants: plan.participants.len(),
        joined: joined_count,
        video_kbps: opts.video.kbps,
        duration_secs: opts.duration.as_secs_f64(),
        media,
        reconnect,
        server: server_summary(&before, &after, opts.server_pid),
        loadgen_cpu_pct: match (self_before, self_after) {
            (Some(a), Some(b)) => Some((b - a) * 100.0 / window),
            _ => None,
        },
        failures: failures.len(),
        failure_examples: failures.into_iter().take(5).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_targets() {
        let t = TransportRole::parse("ws://127.0.0.1:7880").unwrap();
        assert_eq!(t.ws_url, "ws://127.0.0.1:7880/rtc");
        assert_eq!(t.authority, "127.0.0.1:7880");
        assert_eq!(
            TransportRole::parse("ws://[::1]:9/x").unwrap().ws_url,
            "ws://[::1]:9/x"
        );
        assert!(matches!(
            TransportRole::parse("ws://192.0.2.1:7880"),
            Err(LoadTestError::NotLoopback(_))
        ));
        assert!(TransportRole::parse("http://127.0.0.1:7880").is_err());
    }

    #[test]
    fn moves_fall_in_the_middle_half_of_the_window_in_order_and_repeat_with_the_seed() {
        let window = Duration::from_secs(20);
        let moves = move_schedule(50, window, 42);
        assert_eq!(moves.len(), 50);
        assert!(
            moves
                .iter()
                .all(|(at, _)| *at >= window / 4 && *at < window * 3 / 4)
        );
        assert!(moves.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut who: Vec<usize> = moves.iter().map(|(_, i)| *i).collect();
        who.sort_unstable();
        assert_eq!(who, (0..50).collect::<Vec<_>>());
        assert_eq!(move_schedule(50, window, 42), moves);
        assert_ne!(move_schedule(50, window, 43), moves);
    }

    #[test]
    fn move_addresses_are_distinct_loopback_addresses_other_than_the_first() {
        let addrs: std::collections::HashSet<_> = (0..1000).map(move_address).collect();
        assert_eq!(addrs.len(), 1000);
        let first = std::net::IpAddr::from([127, 0, 0, 1]);
        assert!(addrs.iter().all(|a| a.is_loopback() && *a != first));
    }
}
