//! How good is `rtc`'s send-side estimate (GCC over transport-wide feedback)?
//!
//! Two `rtc` peer connections in memory, on a clock this program owns: a
//! sender (the default client chain plus `configure_congestion_control` with
//! `Gcc`) publishing 1,200-byte video packets at the rate the estimate
//! allows, and callgate's own server peer connection (`engine`) receiving
//! them, whose default TWCC receiver sends the feedback. Between them a
//! scripted bottleneck: the sender's datagrams are served at a set rate from
//! a drop-tail queue holding 60 ms, with optional random loss from a seeded
//! RNG, plus 20 ms propagation each way. Nothing sleeps; every instant is
//! simulated.
//!
//! ```text
//! cargo run --release -p callgate-sfu --example gcc_probe            # scenarios + cost
//! cargo run --release -p callgate-sfu --example gcc_probe -- series  # and the estimate every 0.5 s
//! cargo run --release -p callgate-sfu --example gcc_probe -- buffer-ms=400  # a deeper queue
//! ```
//!
//! Findings are in docs/congestion-control.md.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use callgate_sfu::bench_support::{client, client_with, loopback, video_track};
use callgate_sfu::engine::{Hooks, new_peer_connection};
use callgate_sfu::packet_filter::{Filtered, PacketFilter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, Gcc, Packet, PacketReport, Slot, TaggedPacket,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::interceptor_registry::{
    CongestionFeedback, configure_congestion_control,
};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

const SSRC: u32 = 0x5eed;
/// RTP packet size before SRTP: 12 header + 8 extension block + payload.
const PACKET_BYTES: usize = 1_200;
const PAYLOAD_BYTES: usize = PACKET_BYTES - 12 - 8;
/// The bottleneck's drop-tail queue, unless `buffer-ms=<n>` says otherwise.
const BUFFER: Duration = Duration::from_millis(60);
const PROPAGATION: Duration = Duration::from_millis(20);
const SAMPLE: Duration = Duration::from_millis(100);
const MAX_STEP: Duration = Duration::from_millis(1);

/// What the estimator last said, read by the sending application.
#[derive(Default, Clone, Copy)]
struct Estimate {
    target: f64,
    delay_based: f64,
    loss_based: f64,
    loss: f64,
    /// Feedback batches the estimator was handed.
    feedbacks: u64,
    /// Packets reported on, and of them reported lost.
    reported: u64,
    reported_lost: u64,
    /// Feedback batches after which the delay-based half went down.
    delay_decreases: u64,
    /// ... and the loss-based half.
    loss_decreases: u64,
}

/// `Gcc`, delegating every call, publishing its figures after each update.
struct Watched<E> {
    inner: E,
    out: Arc<Mutex<Estimate>>,
}

impl<E: BandwidthEstimator> Watched<E> {
    fn publish(&self) {
        let stats = self.inner.stats();
        let mut out = self.out.lock().unwrap();
        out.target = self.inner.target_bitrate();
        out.delay_based = stats.delay_based_bitrate.unwrap_or(f64::NAN);
        out.loss_based = stats.loss_based_bitrate.unwrap_or(f64::NAN);
        out.loss = stats.packet_loss.unwrap_or(f64::NAN);
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for Watched<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let before = self.inner.stats();
        self.inner.on_reports(now, reports);
        self.publish();
        let after = self.inner.stats();
        let mut out = self.out.lock().unwrap();
        if after.delay_based_bitrate < before.delay_based_bitrate {
            out.delay_decreases += 1;
        }
        if after.loss_based_bitrate < before.loss_based_bitrate {
            out.loss_decreases += 1;
        }
        out.feedbacks += 1;
        out.reported += reports.len() as u64;
        out.reported_lost += reports.iter().filter(|r| !r.arrived).count() as u64;
    }
    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.publish();
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// Passes everything through. Wire-most in the sender's chain it counts RTP
/// packets that repeat a sequence number already sent (NACK
/// retransmissions); in the NACK responder's slot it takes the responder's
/// place, so nothing is retransmitted.
#[derive(Default)]
struct Tap {
    retransmissions: Option<Arc<AtomicU64>>,
    highest: Option<u16>,
}

impl PacketFilter for Tap {
    fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let (Some(count), Packet::Rtp(packet)) = (&self.retransmissions, &msg.message.packet) {
            let seq = packet.header.sequence_number;
            match self.highest {
                Some(h) if seq.wrapping_sub(h) == 0 || seq.wrapping_sub(h) >= 0x8000 => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                _ => self.highest = Some(seq),
            }
        }
        Some(msg)
    }
}

/// The sender's uplink: a rate (or none), a drop-tail queue of `buffer`,
/// random loss, then propagation.
struct Bottleneck {
    cap: fn(Duration) -> Option<f64>,
    buffer: Duration,
    loss: f64,
    lossy: bool,
    rng: StdRng,
    free_at: Instant,
    in_flight: VecDeque<(Instant, BytesMut)>,
    tail_drops: u64,
    random_drops: u64,
    offered: u64,
    /// Bytes the queue accepted (each leaves at the link rate), for the
    /// delivered rate.
    delivered_bytes: u64,
}

impl Bottleneck {
    fn send(&mut self, now: Instant, elapsed: Duration, datagram: BytesMut) {
        self.offered += 1;
        if self.lossy && self.rng.random::<f64>() < self.loss {
            self.random_drops += 1;
            return;
        }
        let Some(rate) = (self.cap)(elapsed) else {
            self.delivered_bytes += datagram.len() as u64;
            self.in_flight.push_back((now + PROPAGATION, datagram));
            return;
        };
        let start = self.free_at.max(now);
        if start - now > self.buffer {
            self.tail_drops += 1;
            return;
        }
        let done = start + Duration::from_secs_f64(datagram.len() as f64 * 8.0 / rate);
        self.free_at = done;
        self.delivered_bytes += datagram.len() as u64;
        self.in_flight.push_back((done + PROPAGATION, datagram));
    }

    fn queue_delay(&self, now: Instant) -> Duration {
        self.free_at.saturating_duration_since(now)
    }
}

/// The return path: propagation only.
#[derive(Default)]
struct Delay {
    in_flight: VecDeque<(Instant, BytesMut)>,
}

fn transport(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext {
        local_addr: local,
        peer_addr: peer,
        ecn: None,
        transport_protocol: TransportProtocol::UDP,
    }
}

/// A sender and callgate's server peer connection, negotiated.
struct Pair {
    client: RTCPeerConnection,
    client_addr: SocketAddr,
    server: RTCPeerConnection,
    server_addr: SocketAddr,
    sender: RTCRtpSenderId,
    client_connected: bool,
    server_connected: bool,
    seq: u16,
}

impl Pair {
    fn new(now: Instant, client: RTCPeerConnection, client_addr: SocketAddr) -> Pair {
        let server_addr = loopback(1, 7882);
        let mut server = new_peer_connection(
            callgate_sfu::TransportRole::Publisher,
            server_addr,
            loopback(1, 7881),
            ("probeufrag", "probepasswordprobepassword"),
            &Hooks::default(),
            now,
        )
        .expect("server peer connection");
        let mut client = client;
        let sender = client.add_track(video_track(SSRC)).expect("video");
        let offer = client.create_offer(None).expect("offer");
        client.set_local_description(now, offer).expect("offer");
        let offer = client.local_description().expect("offer").sdp;
        server
            .set_remote_description(now, RTCSessionDescription::offer(offer).expect("sdp"))
            .expect("server takes the offer");
        let answer = server.create_answer(None).expect("answer");
        server.set_local_description(now, answer).expect("answer");
        let answer = server.local_description().expect("answer").sdp;
        client
            .set_remote_description(now, RTCSessionDescription::answer(answer).expect("sdp"))
            .expect("client takes the answer");
        Pair {
            client,
            client_addr,
            server,
            server_addr,
            sender,
            client_connected: false,
            server_connected: false,
            seq: 0,
        }
    }

    fn connected(&self) -> bool {
        self.client_connected && self.server_connected
    }

    fn server_reads(&mut self, now: Instant, message: BytesMut) {
        let _ = self.server.handle_read(TaggedBytesMut {
            now,
            transport: transport(self.server_addr, self.client_addr),
            message,
        });
    }

    fn client_reads(&mut self, now: Instant, message: BytesMut) {
        let _ = self.client.handle_read(TaggedBytesMut {
            now,
            transport: transport(self.client_addr, self.server_addr),
            message,
        });
    }

    fn timers(&mut self, now: Instant) {
        let _ = self.client.handle_timeout(now);
        let _ = self.server.handle_timeout(now);
    }

    /// Events and what each application is handed, dropped.
    fn drain(&mut self) {
        while let Some(event) = self.client.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.client_connected = state == RTCPeerConnectionState::Connected;
            }
        }
        while let Some(event) = self.server.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.server_connected = state == RTCPeerConnectionState::Connected;
            }
        }
        while self.client.poll_read().is_some() {}
        while self.server.poll_read().is_some() {}
    }

    fn send_video(&mut self, now: Instant) {
        self.seq = self.seq.wrapping_add(1);
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: self.seq.is_multiple_of(8),
                payload_type: 96,
                sequence_number: self.seq,
                timestamp: u32::from(self.seq / 8) * 3000,
                ssrc: SSRC,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0xab; PAYLOAD_BYTES]),
        };
        self.client
            .rtp_sender(self.sender)
            .expect("sender")
            .write_rtp(now, packet)
            .expect("client writes video");
    }
}

/// What to measure of a scenario.
enum Measure {
    /// A constant cap: how fast the estimate gets there, and where it settles.
    Cap(f64),
    /// The cap drops to 500 kbit/s at 10 s and lifts at 30 s.
    Drop,
    /// No cap: where loss alone leaves the estimate.
    Loss,
}

struct Scenario {
    name: &'static str,
    measure: Measure,
    /// Bottleneck rate at an elapsed time since the media started; `None`: no cap.
    cap: fn(Duration) -> Option<f64>,
    loss: f64,
    initial: f64,
    duration: Duration,
}

struct Sample {
    at: Duration,
    estimate: Estimate,
    cap: Option<f64>,
    /// What the bottleneck accepted over the sample, bits per second.
    delivered: f64,
    queue_delay: Duration,
}

struct Outcome {
    samples: Vec<Sample>,
    tail_drops: u64,
    random_drops: u64,
    offered: u64,
    media: u64,
    retransmissions: u64,
}

/// One scenario. `nack`: the sender keeps `rtc`'s NACK responder (the
/// server's NACK generator asks for every gap); without it nothing is
/// retransmitted and the estimator is measured alone.
fn run(scenario: &Scenario, buffer: Duration, nack: bool) -> Outcome {
    let start = Instant::now();
    let estimate = Arc::new(Mutex::new(Estimate {
        target: scenario.initial,
        ..Estimate::default()
    }));
    let out = estimate.clone();
    let initial = scenario.initial;
    let client_addr = loopback(2, 10_000);
    let retransmissions = Arc::new(AtomicU64::new(0));
    let tap = Filtered::new(Tap {
        retransmissions: Some(retransmissions.clone()),
        ..Tap::default()
    });
    let sender = client_with(client_addr, start, move |registry, media_engine| {
        let gcc = Watched {
            inner: Gcc::new(initial, 100_000.0, 100_000_000.0),
            out,
        };
        let registry =
            configure_congestion_control(registry, gcc, CongestionFeedback::Twcc, media_engine)
                .expect("congestion control")
                .with(Slot::from(500), tap);
        if nack {
            registry
        } else {
            registry.with(Slot::NackResponder, Filtered::new(Tap::default()))
        }
    });
    let mut pair = Pair::new(start, sender, client_addr);
    let mut up = Bottleneck {
        cap: scenario.cap,
        buffer,
        loss: scenario.loss,
        lossy: false,
        rng: StdRng::seed_from_u64(1),
        free_at: start,
        in_flight: VecDeque::new(),
        tail_drops: 0,
        random_drops: 0,
        offered: 0,
        delivered_bytes: 0,
    };
    let mut down = Delay::default();

    let mut now = start;
    let mut media_start: Option<Instant> = None;
    let mut next_send = start;
    let mut next_sample = start;
    let mut delivered_at_sample = 0;
    let mut samples = Vec::new();
    let mut media = 0u64;
    loop {
        // The next thing that happens: a delivery, a timer, a send, or a
        // millisecond, whichever comes first.
        let mut next = now + MAX_STEP;
        let candidates = [
            up.in_flight.front().map(|(at, _)| *at),
            down.in_flight.front().map(|(at, _)| *at),
            pair.client.poll_timeout(),
            pair.server.poll_timeout(),
            media_start.map(|_| next_send),
        ];
        for at in candidates.into_iter().flatten() {
            if at > now && at < next {
                next = at;
            }
        }
        now = next;
        let elapsed = media_start.map_or(Duration::ZERO, |s| now - s);
        if media_start.is_some() && elapsed >= scenario.duration {
            break;
        }
        assert!(
            media_start.is_some() || now - start < Duration::from_secs(10),
            "the pair did not connect"
        );

        while up.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (at, d) = up.in_flight.pop_front().expect("front");
            pair.server_reads(at, d);
        }
        while down.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (at, d) = down.in_flight.pop_front().expect("front");
            pair.client_reads(at, d);
        }
        if media_start.is_some() {
            while next_send <= now {
                pair.send_video(now);
                media += 1;
                let target = estimate.lock().unwrap().target;
                next_send += Duration::from_secs_f64(PACKET_BYTES as f64 * 8.0 / target);
            }
        }
        pair.timers(now);
        while let Some(out) = pair.client.poll_write() {
            up.send(now, elapsed, out.message);
        }
        while let Some(out) = pair.server.poll_write() {
            down.in_flight.push_back((now + PROPAGATION, out.message));
        }
        pair.drain();

        if media_start.is_none() && pair.connected() {
            media_start = Some(now);
            next_send = now;
            next_sample = now + SAMPLE;
            up.lossy = true;
        }
        if media_start.is_some() && now >= next_sample {
            let delivered = up.delivered_bytes - delivered_at_sample;
            delivered_at_sample = up.delivered_bytes;
            samples.push(Sample {
                at: elapsed,
                estimate: *estimate.lock().unwrap(),
                cap: (scenario.cap)(elapsed),
                delivered: delivered as f64 * 8.0 / SAMPLE.as_secs_f64(),
                queue_delay: up.queue_delay(now),
            });
            next_sample += SAMPLE;
        }
    }
    Outcome {
        samples,
        tail_drops: up.tail_drops,
        random_drops: up.random_drops,
        offered: up.offered,
        media,
        retransmissions: retransmissions.load(Ordering::Relaxed),
    }
}

fn kbps(bits: f64) -> String {
    format!("{:.0}", bits / 1000.0)
}

fn seconds(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn fmt_time(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// First sample in `[from, to)` where the target is within 20% of `cap`,
/// as time since `from`.
fn within_20(samples: &[Sample], from: Duration, to: Duration, cap: f64) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .find(|s| (s.estimate.target - cap).abs() <= 0.2 * cap)
        .map(|s| s.at - from)
}

/// First sample at or after `from` where the target is at least `level`,
/// as time since `from`.
fn reaches(samples: &[Sample], from: Duration, level: f64) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| s.at >= from)
        .find(|s| s.estimate.target >= level)
        .map(|s| s.at - from)
}

/// The target over `[from, to)`: mean, min, max; the share of samples within
/// 20% of `cap`; what the bottleneck delivered; mean queueing delay (ms).
struct Window {
    mean: f64,
    min: f64,
    max: f64,
    within: f64,
    delivered: f64,
    queue_ms: f64,
}

fn window(samples: &[Sample], from: Duration, to: Duration, cap: f64) -> Window {
    let w: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .collect();
    let n = w.len().max(1) as f64;
    let target = |s: &&Sample| s.estimate.target;
    Window {
        mean: w.iter().map(target).sum::<f64>() / n,
        min: w.iter().map(target).fold(f64::INFINITY, f64::min),
        max: w.iter().map(target).fold(0.0, f64::max),
        within: w
            .iter()
            .filter(|s| (s.estimate.target - cap).abs() <= 0.2 * cap)
            .count() as f64
            / n,
        delivered: w.iter().map(|s| s.delivered).sum::<f64>() / n,
        queue_ms: w
            .iter()
            .map(|s| s.queue_delay.as_secs_f64() * 1000.0)
            .sum::<f64>()
            / n,
    }
}

fn print_window(label: &str, samples: &[Sample], from: Duration, to: Duration, cap: f64) {
    let w = window(samples, from, to, cap);
    let pct = |x: f64| (x / cap - 1.0) * 100.0;
    println!(
        "    {label} [{}-{} s]: target mean {} kbit/s ({:+.0}% of {} kbit/s), min {} ({:+.0}%), \
         max {} ({:+.0}%), within ±20% {:.0}% of the time; delivered {} kbit/s, queue {:.0} ms",
        from.as_secs(),
        to.as_secs(),
        kbps(w.mean),
        pct(w.mean),
        kbps(cap),
        kbps(w.min),
        pct(w.min),
        kbps(w.max),
        pct(w.max),
        w.within * 100.0,
        kbps(w.delivered),
        w.queue_ms,
    );
}

fn print_series(outcome: &Outcome) {
    println!("      t(s)   cap target delay-half loss-half loss% delivered queue(ms)");
    for s in outcome
        .samples
        .iter()
        .filter(|s| s.at.as_millis() % 500 == 0)
    {
        println!(
            "    {:6.1} {:>5} {:>6} {:>10} {:>9} {:>5.1} {:>9} {:>9.0}",
            s.at.as_secs_f64(),
            s.cap.map_or("-".into(), kbps),
            kbps(s.estimate.target),
            kbps(s.estimate.delay_based),
            kbps(s.estimate.loss_based),
            s.estimate.loss * 100.0,
            kbps(s.delivered),
            s.queue_delay.as_secs_f64() * 1000.0,
        );
    }
}

fn report(scenario: &Scenario, outcome: &Outcome) {
    let samples = &outcome.samples;
    let end = scenario.duration;
    let last = samples.last().map(|s| s.estimate).unwrap_or_default();
    println!(
        "    {} media packets, {} retransmissions, {} datagrams offered to the link: {} tail-dropped, \
         {} lost at random; TWCC reported {} of {} packets lost; the delay-based half went down \
         after {} of {} feedback batches, the loss-based half after {}",
        outcome.media,
        outcome.retransmissions,
        outcome.offered,
        outcome.tail_drops,
        outcome.random_drops,
        last.reported_lost,
        last.reported,
        last.delay_decreases,
        last.feedbacks,
        last.loss_decreases,
    );
    match scenario.measure {
        Measure::Cap(cap) => {
            println!(
                "    within 20% of the cap after {}, at 80% of it after {}",
                fmt_time(within_20(samples, Duration::ZERO, end, cap)),
                fmt_time(reaches(samples, Duration::ZERO, 0.8 * cap)),
            );
            print_window("steady state", samples, seconds(30), end, cap);
        }
        Measure::Drop => {
            let before = window(samples, seconds(5), seconds(10), 2_000_000.0);
            println!(
                "    before the drop [5-10 s]: target mean {} kbit/s; after the drop at 10 s within 20% \
                 of 500 kbit/s after {}",
                kbps(before.mean),
                fmt_time(within_20(samples, seconds(10), seconds(30), 500_000.0)),
            );
            print_window(
                "under the cap",
                samples,
                seconds(15),
                seconds(30),
                500_000.0,
            );
            println!(
                "    after the cap lifts at 30 s: 1 Mbit/s after {}, 1.6 Mbit/s (80%) after {}",
                fmt_time(reaches(samples, seconds(30), 1_000_000.0)),
                fmt_time(reaches(samples, seconds(30), 1_600_000.0)),
            );
            print_window("end", samples, end - seconds(10), end, 2_000_000.0);
        }
        Measure::Loss => {
            for (from, to) in [(0, 10), (10, 30), (30, 60)] {
                let w = window(samples, seconds(from), seconds(to), f64::INFINITY);
                println!(
                    "    [{from}-{to} s]: target mean {} kbit/s, min {}, max {}; delivered {} kbit/s",
                    kbps(w.mean),
                    kbps(w.min),
                    kbps(w.max),
                    kbps(w.delivered)
                );
            }
            println!(
                "    at the end: delay-based half {} kbit/s, loss-based half {} kbit/s, loss average {:.1}%",
                kbps(last.delay_based),
                kbps(last.loss_based),
                last.loss * 100.0
            );
        }
    }
}

fn cap_500k(_: Duration) -> Option<f64> {
    Some(500_000.0)
}
fn cap_300k(_: Duration) -> Option<f64> {
    Some(300_000.0)
}
fn cap_2m(_: Duration) -> Option<f64> {
    Some(2_000_000.0)
}
fn cap_drop(t: Duration) -> Option<f64> {
    let s = t.as_secs_f64();
    Some(if (10.0..30.0).contains(&s) {
        500_000.0
    } else {
        2_000_000.0
    })
}
fn no_cap(_: Duration) -> Option<f64> {
    None
}

/// Builds a sender peer connection at an address.
type MakeSender = fn(SocketAddr, Instant) -> RTCPeerConnection;

/// Wall time per packet of the sender's own work (write, timers, writes
/// out, feedback in), default chain versus default plus congestion control.
fn cost() {
    const PACKETS: usize = 30_000;
    let configs: [(&str, MakeSender); 2] = [
        ("default interceptors", client),
        ("default + congestion control (Gcc, TWCC)", |addr, now| {
            client_with(addr, now, |registry, media_engine| {
                configure_congestion_control(
                    registry,
                    // High enough that the pacer never holds a packet here.
                    Gcc::new(50_000_000.0, 100_000.0, 100_000_000.0),
                    CongestionFeedback::Twcc,
                    media_engine,
                )
                .expect("congestion control")
            })
        }),
    ];
    println!(
        "\nCPU per packet, sender side (release build, {PACKETS} packets, best of 5 interleaved rounds):"
    );
    let mut results = [f64::INFINITY; 2];
    for _ in 0..5 {
        for (best, (_, make)) in results.iter_mut().zip(configs) {
            *best = best.min(cost_once(make, PACKETS));
        }
    }
    for (best, (name, _)) in results.iter().zip(configs) {
        println!("  {name}: {best:.0} ns/packet");
    }
    println!(
        "  congestion control adds {:.0} ns/packet ({:+.0}%)",
        results[1] - results[0],
        (results[1] / results[0] - 1.0) * 100.0
    );
}

fn cost_once(make: MakeSender, packets: usize) -> f64 {
    let start = Instant::now();
    let client_addr = loopback(2, 10_000);
    let mut pair = Pair::new(start, make(client_addr, start), client_addr);
    let mut now = start;
    for _ in 0..10_000 {
        now += Duration::from_millis(1);
        pair.timers(now);
        let ups: Vec<_> = std::iter::from_fn(|| pair.client.poll_write()).collect();
        for d in ups {
            pair.server_reads(now, d.message);
        }
        let downs: Vec<_> = std::iter::from_fn(|| pair.server.poll_write()).collect();
        for d in downs {
            pair.client_reads(now, d.message);
        }
        pair.drain();
        if pair.connected() {
            break;
        }
    }
    assert!(pair.connected(), "cost pair did not connect");
    let mut spent = Duration::ZERO;
    let mut feedback = Vec::new();
    let mut sent = 0;
    for _ in 0..packets {
        // 1,200 bytes a millisecond: 9.6 Mbit/s, under the pacer's rate.
        now += Duration::from_millis(1);
        let mut datagrams = Vec::new();
        let t0 = Instant::now();
        for d in feedback.drain(..) {
            pair.client_reads(now, d);
        }
        pair.send_video(now);
        let _ = pair.client.handle_timeout(now);
        while let Some(d) = pair.client.poll_write() {
            datagrams.push(d.message);
        }
        while pair.client.poll_read().is_some() {}
        spent += t0.elapsed();
        sent += datagrams.len();
        for d in datagrams {
            pair.server_reads(now, d);
        }
        let _ = pair.server.handle_timeout(now);
        while let Some(d) = pair.server.poll_write() {
            feedback.push(d.message);
        }
        while pair.server.poll_read().is_some() {}
    }
    assert!(sent >= packets, "every packet left ({sent} datagrams)");
    spent.as_nanos() as f64 / packets as f64
}

fn main() {
    let series = std::env::args().any(|a| a == "series");
    let buffer = std::env::args()
        .find_map(|a| a.strip_prefix("buffer-ms=")?.parse().ok())
        .map_or(BUFFER, Duration::from_millis);
    let scenarios = [
        Scenario {
            name: "cap 500 kbit/s",
            measure: Measure::Cap(500_000.0),
            cap: cap_500k,
            loss: 0.0,
            initial: 300_000.0,
            duration: seconds(60),
        },
        Scenario {
            name: "cap 300 kbit/s",
            measure: Measure::Cap(300_000.0),
            cap: cap_300k,
            loss: 0.0,
            initial: 300_000.0,
            duration: seconds(60),
        },
        Scenario {
            name: "cap 2 Mbit/s (ramp-up from the 300 kbit/s start)",
            measure: Measure::Cap(2_000_000.0),
            cap: cap_2m,
            loss: 0.0,
            initial: 300_000.0,
            duration: seconds(60),
        },
        Scenario {
            name: "cap 2 Mbit/s, 500 kbit/s from 10 s to 30 s (estimate starts at 300 kbit/s)",
            measure: Measure::Drop,
            cap: cap_drop,
            loss: 0.0,
            initial: 300_000.0,
            duration: seconds(90),
        },
        Scenario {
            name: "cap 2 Mbit/s, 500 kbit/s from 10 s to 30 s (estimate starts at 2 Mbit/s)",
            measure: Measure::Drop,
            cap: cap_drop,
            loss: 0.0,
            initial: 2_000_000.0,
            duration: seconds(90),
        },
        Scenario {
            name: "no cap, 2% random loss",
            measure: Measure::Loss,
            cap: no_cap,
            loss: 0.02,
            initial: 300_000.0,
            duration: seconds(60),
        },
    ];
    println!(
        "Gcc (rtc-interceptor 0.21.1) on TWCC feedback from callgate's server peer connection: \
         {PACKET_BYTES}-byte RTP at the target, drop-tail {} ms, {} ms each way, Gcc::new(initial, 100 kbit/s, 100 Mbit/s)",
        buffer.as_millis(),
        PROPAGATION.as_millis()
    );
    for scenario in &scenarios {
        println!("\n{}", scenario.name);
        for (nack, label) in [
            (false, "estimator alone (sender without NACK responder)"),
            (true, "rtc's default chain on both ends (NACK on)"),
        ] {
            let outcome = run(scenario, buffer, nack);
            println!("  {label}:");
            report(scenario, &outcome);
            if series {
                print_series(&outcome);
            }
        }
    }
    cost();
}
