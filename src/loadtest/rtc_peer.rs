//! The light client: webrtc-rs's sans-I/O `rtc` peer connection, the same
//! engine the async `webrtc` crate wraps, driven by one small task per
//! transport on the load generator's single event loop. The task owns the
//! peer connection, its loopback UDP socket and, on a publisher, the
//! synthetic sources, so a packet costs no channel hop, no extra task
//! wake-up and no copy between the socket and the engine.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::error::LoadTestError;
use super::media::{self, MediaKind, VideoSource};
use super::participant::{VideoShape, codec};
use super::payload::Mark;
use callgate_client::TransportRole;

use super::peer::PeerContext;

/// Most datagrams read per wake-up before timers and media get a turn.
const READ_BATCH: usize = 64;
/// Longest sleep with nothing scheduled.
const IDLE_WAKE: Duration = Duration::from_millis(100);

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Command {
    /// Subscriber: apply the server's offer, answer.
    Offer(String, Reply<String>),
    /// Publisher: add the tracks, make the offer.
    Publish(Vec<(u32, MediaKind)>, Reply<String>),
    /// Publisher: apply the server's answer, start the sources.
    Answer(String, Reply<()>),
    /// Switch to a new socket on this address (`--reconnect`).
    Move(IpAddr),
    Close,
}

/// A transport's task, reached over a channel.
pub struct RtcPeer {
    commands: mpsc::UnboundedSender<Command>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl RtcPeer {
    pub async fn new(
        ctx: &PeerContext,
        target: TransportRole,
        video: VideoShape,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<RtcPeer, LoadTestError> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(LoadTestError::webrtc)?;
        let local = socket.local_addr().map_err(LoadTestError::webrtc)?;
        let pc = build(local).map_err(LoadTestError::webrtc)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            pc,
            socket,
            local,
            ctx: ctx.clone(),
            target,
            video,
            stop,
            sources: Vec::new(),
            sending: false,
            buf: vec![0u8; 2048],
            marks: Vec::new(),
            kick: false,
            unsent_move: None,
            unchecked_move: None,
        };
        tokio::spawn(driver.run(rx));
        Ok(RtcPeer { commands: tx })
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| "peer task ended".to_owned())?;
        rx.await.map_err(|_| "peer task ended".to_owned())?
    }

    pub async fn apply_offer(&self, sdp: String) -> Result<String, String> {
        self.ask(|r| Command::Offer(sdp, r)).await
    }

    pub async fn publish(&self, tracks: Vec<(u32, MediaKind)>) -> Result<String, String> {
        self.ask(|r| Command::Publish(tracks, r)).await
    }

    pub async fn apply_answer(&self, sdp: String) -> Result<(), String> {
        self.ask(|r| Command::Answer(sdp, r)).await
    }

    /// Moves the transport to a new source address: its task binds a new
    /// socket on `ip`, closes the old one and carries on from the new one.
    /// The engine is not told: what it writes leaves the new socket, what
    /// arrives there is handed to it as before.
    pub fn move_to(&self, ip: IpAddr) {
        let _ = self.commands.send(Command::Move(ip));
    }

    /// Closes the peer connection (DTLS close_notify goes out); its task ends.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

fn build(local: SocketAddr) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(
            SettingEngineBuilder::new()
                // No mDNS: nothing may leave loopback.
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                // Answer `a=setup:active` and dial DTLS, as browsers do.
                .with_answering_dtls_role(RTCDtlsRole::Client)
                .build(),
        )
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    Ok(pc)
}

/// One synthetic track on a publisher transport.
struct Source {
    id: u32,
    kind: MediaKind,
    sender: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
    video: VideoSource,
    interval: Duration,
    next: Instant,
    seq: u16,
    timestamp: u32,
}

struct Driver {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    ctx: PeerContext,
    target: TransportRole,
    video: VideoShape,
    stop: tokio::sync::watch::Receiver<bool>,
    sources: Vec<Source>,
    sending: bool,
    buf: Vec<u8>,
    /// Marks read since the recorder was last told.
    marks: Vec<(Mark, usize, u64)>,
    /// Run the engine's timers now, whatever it says is next.
    kick: bool,
    /// The recorder's id of this transport's move, until its first
    /// datagram has left the new socket.
    unsent_move: Option<usize>,
    /// … and until its first ICE check has.
    unchecked_move: Option<usize>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let now = Instant::now();
            let mut deadline = self.pc.poll_timeout().unwrap_or(now + IDLE_WAKE);
            if self.sending {
                for s in &self.sources {
                    deadline = deadline.min(s.next);
                }
            }
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Close) | None => {
                        let _ = self.pc.close();
                        self.flush();
                        return;
                    }
                    Some(c) => self.command(c),
                },
                ready = self.socket.readable() => {
                    if ready.is_ok() {
                        self.read();
                    }
                }
                _ = self.stop.changed(), if self.sending => {
                    self.sending = !*self.stop.borrow();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if self.kick || self.pc.poll_timeout().is_some_and(|t| t <= now) {
                self.kick = false;
                let _ = self.pc.handle_timeout(now);
            }
            if self.sending {
                self.send_due(now);
            }
            self.drain();
            self.record();
            self.flush();
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        // A new description starts ICE checks on the engine's next timeout,
        // which poll_timeout puts a check interval (200 ms) away.
        self.kick = !matches!(command, Command::Move(_));
        match command {
            Command::Offer(sdp, reply) => {
                debug!(
                    participant = self.ctx.participant,
                    at_ms = self.ctx.clock.now_us() / 1000,
                    "subscribe offer"
                );
                let answer = RTCSessionDescription::offer(sdp)
                    .and_then(|offer| self.pc.set_remote_description(now, offer))
                    .and_then(|()| self.pc.create_answer(None))
                    .and_then(|answer| self.pc.set_local_description(now, answer))
                    .map(|()| {
                        self.pc
                            .local_description()
                            .map(|d| d.sdp)
                            .unwrap_or_default()
                    });
                let _ = reply.send(answer.map_err(err));
            }
            Command::Publish(tracks, reply) => {
                let _ = reply.send(self.publish(now, tracks));
            }
            Command::Answer(sdp, reply) => {
                let applied = RTCSessionDescription::answer(sdp)
                    .and_then(|answer| self.pc.set_remote_description(now, answer))
                    .map_err(err);
                if applied.is_ok() {
                    self.sending = !*self.stop.borrow();
                    for s in &mut self.sources {
                        s.next = now;
                    }
                }
                let _ = reply.send(applied);
            }
            Command::Move(ip) => self.move_to(ip),
            Command::Close => {}
        }
    }

    /// Swaps the socket for a new one on `ip`; the old one is closed here.
    /// The local address the engine sees stays the old one (its candidate).
    fn move_to(&mut self, ip: IpAddr) {
        let bound = std::net::UdpSocket::bind((ip, 0)).and_then(|s| {
            s.set_nonblocking(true)?;
            UdpSocket::from_std(s)
        });
        let socket = match bound {
            Ok(s) => s,
            Err(e) => {
                self.ctx
                    .failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "participant {} {} could not bind {ip}: {e}",
                        self.ctx.participant,
                        self.target.as_str()
                    ));
                return;
            }
        };
        // Marks read on the old socket belong before the move.
        self.record();
        self.socket = socket;
        let tracks: Vec<u32> = self.sources.iter().map(|s| s.id).collect();
        let now_us = self.ctx.clock.now_us();
        let id = self
            .ctx
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .moved(self.ctx.participant, &tracks, now_us);
        self.unsent_move = Some(id);
        self.unchecked_move = Some(id);
        debug!(
            participant = self.ctx.participant,
            target = self.target.as_str(),
            new = ?self.socket.local_addr().ok(),
            at_ms = now_us / 1000,
            "moved"
        );
    }

    fn publish(&mut self, now: Instant, tracks: Vec<(u32, MediaKind)>) -> Result<String, String> {
        for (id, kind) in tracks {
            let ssrc = rand::random::<u32>();
            let (codec, payload_type) = codec(kind);
            let rtc_kind = match kind {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            let name = format!("{}-{id}", kind.as_str());
            let sender = self
                .pc
                .add_track(MediaStreamTrack::new(
                    "loadtest".into(),
                    name.clone(),
                    name,
                    rtc_kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec,
                        ..Default::default()
                    }],
                ))
                .map_err(err)?;
            let video = VideoSource::new(
                self.video.kbps,
                self.video.fps,
                self.video.keyframe_interval,
            );
            let interval = match kind {
                MediaKind::Audio => media::AUDIO_FRAME,
                MediaKind::Video => video.frame_interval(),
            };
            self.sources.push(Source {
                id,
                kind,
                sender,
                ssrc,
                payload_type,
                video,
                interval,
                next: now,
                seq: rand::random(),
                timestamp: rand::random(),
            });
        }
        let offer = self.pc.create_offer(None).map_err(err)?;
        self.pc.set_local_description(now, offer).map_err(err)?;
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| "no local description".to_owned())
    }

    /// Writes every frame that is due; a source late by more than a frame
    /// skips ahead rather than bursting (what was sent is what counts).
    fn send_due(&mut self, now: Instant) {
        for i in 0..self.sources.len() {
            if self.sources[i].next > now {
                continue;
            }
            let s = &mut self.sources[i];
            s.next += s.interval;
            if s.next + s.interval < now {
                s.next = now + s.interval;
            }
            let frame = match s.kind {
                MediaKind::Audio => media::audio_frame(),
                MediaKind::Video => s.video.next_frame(),
            };
            let last = frame.packet_lens.len() - 1;
            let (id, kind, sender, ssrc, payload_type) =
                (s.id, s.kind, s.sender, s.ssrc, s.payload_type);
            let timestamp = s.timestamp;
            s.timestamp = s.timestamp.wrapping_add(frame.timestamp_step);
            for (j, len) in frame.packet_lens.iter().enumerate() {
                let mark = {
                    let now_us = self.ctx.clock.now_us();
                    let mut r = self.ctx.recorder.lock().unwrap_or_else(|e| e.into_inner());
                    r.stamp(id, frame.keyframe, *len, now_us)
                };
                let s = &mut self.sources[i];
                s.seq = s.seq.wrapping_add(1);
                let packet = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: kind == MediaKind::Video && j == last,
                        payload_type,
                        sequence_number: s.seq,
                        timestamp,
                        ssrc,
                        ..Default::default()
                    },
                    payload: media::payload(kind, &mark, *len, j == 0),
                };
                if let Some(mut sender) = self.pc.rtp_sender(sender) {
                    let _ = sender.write_rtp(now, packet);
                }
                // Out at once, so a keyframe's packets leave as they are made.
                self.flush();
            }
        }
    }

    fn read(&mut self) {
        for _ in 0..READ_BATCH {
            match self.socket.try_recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let _ = self.pc.handle_read(TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext {
                            local_addr: self.local,
                            peer_addr: from,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&self.buf[..n]),
                    });
                    self.drain();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP unreachable from a server that went away.
                Err(_) => break,
            }
        }
    }

    /// Takes what the engine has for us: media, and events.
    fn drain(&mut self) {
        let now_us = self.ctx.clock.now_us();
        while let Some(m) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = m.message {
                let p = &packet.payload;
                if let Some(mark) =
                    Mark::find(MediaKind::Audio, p).or_else(|| Mark::find(MediaKind::Video, p))
                {
                    self.marks.push((mark, p.len(), now_us));
                }
            }
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = &event {
                debug!(
                    participant = self.ctx.participant,
                    target = self.target.as_str(),
                    %state,
                    at_ms = self.ctx.clock.now_us() / 1000,
                    "transport state"
                );
            }
            if let RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) = &event {
                // Likewise DTLS starts on the next timeout.
                if *state == RTCIceConnectionState::Connected {
                    self.kick = true;
                }
                debug!(
                    participant = self.ctx.participant,
                    target = self.target.as_str(),
                    %state,
                    at_ms = self.ctx.clock.now_us() / 1000,
                    "ice state"
                );
            }
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                RTCPeerConnectionState::Failed,
            ) = event
            {
                self.ctx
                    .failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "participant {} {} transport failed",
                        self.ctx.participant,
                        self.target.as_str()
                    ));
            }
        }
    }

    /// Hands the marks read to the recorder, under one lock.
    fn record(&mut self) {
        if self.marks.is_empty() {
            return;
        }
        let mut first = false;
        {
            let mut r = self.ctx.recorder.lock().unwrap_or_else(|e| e.into_inner());
            for (mark, len, now_us) in self.marks.drain(..) {
                first |= r.received(self.ctx.participant, &mark, len, now_us);
            }
        }
        if first {
            self.ctx.arrivals.notify_waiters();
        }
    }

    fn flush(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            // A full socket buffer drops the datagram, as a network would.
            let sent = self
                .socket
                .try_send_to(&out.message, out.transport.peer_addr);
            if sent.is_err() || self.unchecked_move.is_none() {
                continue;
            }
            let now_us = self.ctx.clock.now_us();
            let mut r = self.ctx.recorder.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = self.unsent_move.take() {
                r.sent_from_new_address(id, now_us);
            }
            // A STUN binding request: type 0x0001 (RFC 8489 section 5).
            if out.message.starts_with(&[0x00, 0x01])
                && let Some(id) = self.unchecked_move.take()
            {
                r.checked_from_new_address(id, now_us);
            }
        }
    }
}
