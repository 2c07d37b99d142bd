//! A media worker: one thread, one UDP socket, the rooms hashed to it, and
//! the ICE-TCP connections of their transports. The thread owns the sockets
//! and the clock and drives its `Shard`; everything else reaches it as a
//! `Command` over a channel (new ICE-TCP connections too, from the acceptor).

use std::collections::HashMap;

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use callgate_udp_batch::{BATCH, SendBatch};
use rand::SeedableRng;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::shared::TransportProtocol;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info_span, warn};

use crate::config::SfuConfig;
use crate::load::LoadMeter;
use crate::metrics::{TcpMetrics, WorkerMetrics};
use crate::session::{
    IceCandidate, JoinRequest, Joined, LeaveReason, ParticipantEvent, ParticipantInfo,
    ParticipantStats, ParticipantUpdate, Resumed, RoomInfo, RoomOptions, SfuError,
    SubscriptionSettings, TrackSelector, TransportRole,
};
use crate::shard::{Shard, Transmit};
use crate::tcp::{SendError, TcpConns, TcpEvent, TcpHandoff};

type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

pub(crate) enum Command {
    Join(JoinRequest, Reply<(Joined, String)>),
    Leave {
        room: String,
        sid: String,
        reason: LeaveReason,
    },
    PublishOffer {
        room: String,
        sid: String,
        sdp: String,
        reply: Reply<String>,
    },
    SubscribeAnswer {
        room: String,
        sid: String,
        sdp: String,
        reply: Reply<()>,
    },
    Candidate {
        room: String,
        sid: String,
        role: TransportRole,
        candidate: IceCandidate,
        reply: Reply<()>,
    },
    Mute {
        room: String,
        sid: String,
        track_sid: String,
        muted: bool,
        reply: Reply<()>,
    },
    UpdateSubscription {
        room: String,
        sid: String,
        track_sid: String,
        settings: SubscriptionSettings,
        reply: Reply<()>,
    },
    ListRooms(oneshot::Sender<Vec<RoomInfo>>),
    ListParticipants(String, Reply<Vec<ParticipantInfo>>),
    ParticipantStats {
        room: String,
        identity: String,
        reply: Reply<ParticipantStats>,
    },
    RemoveParticipant {
        room: String,
        identity: String,
        reason: LeaveReason,
        reply: Reply<()>,
    },
    CloseRoom(String, LeaveReason, Reply<()>),
    CreateRoom(RoomOptions, Reply<RoomInfo>),
    UpdateParticipant {
        room: String,
        identity: String,
        update: ParticipantUpdate,
        reply: Reply<ParticipantInfo>,
    },
    ModerateMute {
        room: String,
        identity: String,
        which: TrackSelector,
        muted: bool,
        reply: Reply<Vec<String>>,
    },
    UpdateRoom {
        room: String,
        metadata: String,
        reply: Reply<RoomInfo>,
    },
    HoldMedia {
        room: String,
        sid: String,
        held: bool,
        reply: Reply<()>,
    },
    /// The participant's signaling connection dropped (no `leave`).
    Detach {
        room: String,
        sid: String,
    },
    /// The participant's signaling is back (`resume`).
    Attach {
        room: String,
        sid: String,
        reply: Reply<Resumed>,
    },
    IceRestart {
        room: String,
        sid: String,
        reply: Reply<()>,
    },
    /// An ICE-TCP connection whose first STUN request names one of our ufrags.
    TcpConnection(TcpHandoff),
    /// Every session ends for this reason, and the worker stops.
    Shutdown(LeaveReason),
}

pub(crate) struct WorkerHandle {
    pub tx: mpsc::UnboundedSender<Command>,
    pub local_addr: SocketAddr,
    pub thread: Option<JoinHandle<()>>,
}

/// Longest the loop sleeps with nothing scheduled; bounds how late a state
/// change nobody announced (an ICE consent timeout) can be noticed.
const IDLE_WAKE: Duration = Duration::from_millis(200);
/// Datagrams read per wake-up before commands and timers get a turn.
const READ_BATCH: usize = 64;

fn bind(config: &SfuConfig, index: usize) -> io::Result<StdUdpSocket> {
    let port = if config.udp_port == 0 {
        0
    } else {
        config.udp_port.checked_add(index as u16).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "rtc.udp_port + workers exceeds 65535",
            )
        })?
    };
    let addr = SocketAddr::new(config.bind_ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Large buffers ride out bursts (keyframes fanned out to many subscribers);
    // the kernel caps them at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(config.socket_buffer_bytes);
    let _ = socket.set_send_buffer_size(config.socket_buffer_bytes);
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("binding media port {addr}: {e}")))?;
    Ok(socket.into())
}

/// Starts worker `index`. `tcp_addr` is the advertised ICE-TCP address.
pub(crate) fn spawn(
    index: usize,
    config: &SfuConfig,
    tcp_addr: SocketAddr,
    metrics: WorkerMetrics,
    tcp_metrics: TcpMetrics,
) -> io::Result<WorkerHandle> {
    let std_socket = bind(config, index)?;
    let bound = std_socket.local_addr()?;
    let local_addr = SocketAddr::new(config.advertise_ip, bound.port());
    let (tx, rx) = mpsc::unbounded_channel();
    let rng = rand::rngs::StdRng::from_os_rng();
    let shard = Shard::new(config.clone(), index, local_addr, tcp_addr, metrics, rng);
    let thread = std::thread::Builder::new()
        .name(format!("media-worker-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let _span = info_span!("worker", index).entered();
            runtime.block_on(async move {
                match UdpSocket::from_std(std_socket) {
                    Ok(socket) => run(shard, socket, TcpConns::new(tcp_metrics), rx).await,
                    Err(e) => warn!(error = %e, "media socket unusable"),
                }
            });
        })?;
    Ok(WorkerHandle {
        tx,
        local_addr,
        thread: Some(thread),
    })
}

/// Each participant's event channel, by sid: where the events the shard
/// polls out go.
#[derive(Default)]
struct Mailboxes {
    by_sid: HashMap<String, mpsc::UnboundedSender<ParticipantEvent>>,
}

impl Mailboxes {
    fn open(&mut self, sid: String) -> mpsc::UnboundedReceiver<ParticipantEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.by_sid.insert(sid, tx);
        rx
    }

    fn deliver(&mut self, shard: &mut Shard) {
        while let Some((sid, event)) = shard.poll_event() {
            let ended = matches!(event, ParticipantEvent::Ended { .. });
            // A closed channel means the signaling side is gone; its leave
            // is on the way.
            if let Some(tx) = self.by_sid.get(&sid) {
                let _ = tx.send(event);
            }
            if ended {
                self.by_sid.remove(&sid);
            }
        }
    }
}

async fn run(
    mut shard: Shard,
    socket: UdpSocket,
    mut tcp: TcpConns,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut buf = vec![0u8; 2048];
    let mut mailboxes = Mailboxes::default();
    let mut udp = UdpOut::new(socket.as_raw_fd());
    let mut load = LoadMeter::new(Instant::now());
    loop {
        let now = Instant::now();
        if let Some(share) = load.poll(now) {
            shard.set_load(share);
        }
        let deadline = shard
            .poll_timeout()
            .map_or(now + IDLE_WAKE, |t| t.min(now + IDLE_WAKE));
        // Everything from a wake-up to the next wait counts as busy.
        let woke = tokio::select! {
            biased;
            command = rx.recv() => {
                let woke = Instant::now();
                match command {
                    None | Some(Command::Shutdown(_)) => {
                        let reason = match command {
                            Some(Command::Shutdown(reason)) => reason,
                            _ => LeaveReason::ServerShutdown,
                        };
                        shard.close_all(Instant::now(), reason);
                        send_all(&mut shard, &socket, &mut tcp, &mut udp);
                        mailboxes.deliver(&mut shard);
                        tcp.shutdown().await;
                        return;
                    }
                    Some(Command::TcpConnection(handoff)) => open_tcp(&mut shard, &mut tcp, handoff),
                    Some(command) => handle(&mut shard, &mut mailboxes, command),
                }
                woke
            }
            ready = socket.readable() => {
                let woke = Instant::now();
                if ready.is_ok() {
                    for _ in 0..READ_BATCH {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => shard.handle_datagram(
                                Instant::now(),
                                TransportProtocol::UDP,
                                from,
                                &buf[..n],
                            ),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            // ICMP port unreachable from a client that went away.
                            Err(e) => { debug!(error = %e, "recv failed"); break; }
                        }
                    }
                    // What the batch produced goes out together (below): a
                    // frame's packets to one subscriber leave as one GSO
                    // message; `UdpOut` sends whenever it holds `BATCH`.
                }
                // `biased` polls UDP first: give waiting ICE-TCP frames a
                // turn too, so a busy UDP socket cannot starve them.
                let next = tcp.try_recv();
                tcp_batch(&mut shard, &socket, &mut tcp, &mut udp, next);
                woke
            }
            event = tcp.recv() => {
                let woke = Instant::now();
                tcp_batch(&mut shard, &socket, &mut tcp, &mut udp, event);
                woke
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let woke = Instant::now();
                shard.handle_timeout(woke);
                woke
            }
        };
        send_all(&mut shard, &socket, &mut tcp, &mut udp);
        mailboxes.deliver(&mut shard);
        load.add_busy(woke.elapsed());
    }
}

/// What the worker sends on its UDP socket, a batch at a time: one
/// `sendmmsg` for up to `BATCH` datagrams, which in a fan-out go to as many
/// subscribers; with UDP GSO (where the kernel has it), the datagrams of a
/// batch to one destination are grouped (their order kept) so that a run
/// of equal-sized ones, e.g. a video frame's packets to a 1:1 call's other
/// side, is one message.
struct UdpOut {
    batch: SendBatch,
    gso: bool,
    /// The datagrams in `batch`: their payloads must live until it is sent.
    queued: Vec<Transmit>,
}

impl UdpOut {
    fn new(fd: RawFd) -> Self {
        let mut batch = SendBatch::new();
        let gso = batch.enable_gso(fd);
        debug!(gso, "media socket");
        UdpOut {
            batch,
            gso,
            queued: Vec::with_capacity(BATCH),
        }
    }

    fn flush(&mut self, fd: RawFd, shard: &Shard) {
        if self.gso {
            // Stable: each destination's datagrams keep their order.
            self.queued.sort_by_key(|t| t.to);
        }
        for t in &self.queued {
            // SAFETY: every payload is owned by `self.queued`, which is not
            // touched until the batch is flushed below.
            unsafe { self.batch.push(fd, &t.to, &t.payload) };
        }
        // A full send buffer drops the datagram, as a router would; RTCP
        // feedback recovers what matters.
        let sent = self.batch.flush();
        for _ in 0..sent.failed {
            shard.count_send_failure();
        }
        self.queued.clear();
    }
}

fn send_all(shard: &mut Shard, socket: &UdpSocket, tcp: &mut TcpConns, udp: &mut UdpOut) {
    let fd = socket.as_raw_fd();
    while let Some(t) = shard.poll_transmit() {
        match t.protocol {
            TransportProtocol::TCP => match tcp.send(t.to, t.payload) {
                Ok(()) => {}
                // A slow client loses packets rather than stalling the loop.
                Err(SendError::QueueFull) => tcp.metrics.drop_queue_full.inc(),
                // A closed connection's stragglers have nowhere to go.
                Err(SendError::NoConnection | SendError::TooLarge) => shard.count_send_failure(),
            },
            _ => {
                udp.queued.push(t);
                if udp.queued.len() == BATCH {
                    udp.flush(fd, shard);
                }
            }
        }
    }
    udp.flush(fd, shard);
    // After the transmits: a closed transport's DTLS close is queued first.
    while let Some(peer) = shard.poll_closed_tcp() {
        tcp.close(peer);
    }
}

/// Takes over a connection from the acceptor if a transport of ours has
/// its ufrag, and feeds it its first frame.
fn open_tcp(shard: &mut Shard, tcp: &mut TcpConns, handoff: TcpHandoff) {
    let TcpHandoff {
        stream,
        peer,
        ufrag,
        first_frame,
    } = handoff;
    if !shard.accepts_tcp(&ufrag) {
        debug!(%peer, "ICE-TCP connection for no transport of ours");
        tcp.metrics.refused_unknown_ufrag.inc();
        return;
    }
    // A stale route from an earlier connection from this address must not
    // survive into the new one.
    shard.forget_tcp(peer);
    if let Err(e) = tcp.open(stream, peer) {
        debug!(%peer, error = %e, "ICE-TCP connection unusable");
        return;
    }
    shard.handle_datagram(Instant::now(), TransportProtocol::TCP, peer, &first_frame);
}

/// Handles `first` and up to `READ_BATCH - 1` more waiting ICE-TCP events.
fn tcp_batch(
    shard: &mut Shard,
    socket: &UdpSocket,
    tcp: &mut TcpConns,
    udp: &mut UdpOut,
    first: Option<TcpEvent>,
) {
    let mut next = first;
    for _ in 0..READ_BATCH {
        let Some(event) = next else { break };
        handle_tcp(shard, tcp, event);
        send_all(shard, socket, tcp, udp);
        next = tcp.try_recv();
    }
}

fn handle_tcp(shard: &mut Shard, tcp: &mut TcpConns, event: TcpEvent) {
    match event {
        TcpEvent::Frame { conn, peer, data } => {
            if tcp.is_open(conn, peer) {
                shard.handle_datagram(Instant::now(), TransportProtocol::TCP, peer, &data);
            }
        }
        TcpEvent::Closed {
            conn,
            peer,
            oversized,
        } => {
            if tcp.on_closed(conn, peer, oversized) {
                debug!(%peer, oversized, "ICE-TCP connection closed");
                shard.forget_tcp(peer);
            }
        }
    }
}

impl Command {
    /// The participant a command acts for, if it names one.
    fn participant(&self) -> Option<(&str, &str)> {
        match self {
            Command::Leave { room, sid, .. }
            | Command::PublishOffer { room, sid, .. }
            | Command::SubscribeAnswer { room, sid, .. }
            | Command::Candidate { room, sid, .. }
            | Command::Mute { room, sid, .. }
            | Command::UpdateSubscription { room, sid, .. }
            | Command::HoldMedia { room, sid, .. }
            | Command::Detach { room, sid }
            | Command::Attach { room, sid, .. }
            | Command::IceRestart { room, sid, .. } => Some((room, sid)),
            _ => None,
        }
    }
}

/// Handles one command. A panic inside it ends the participant it acts for
/// with `internal_error` (its reply is dropped: the caller sees the worker
/// gone for that call only) and is counted, so the worker's other calls go on.
fn handle(shard: &mut Shard, mailboxes: &mut Mailboxes, command: Command) {
    let owner = command
        .participant()
        .map(|(room, sid)| (room.to_owned(), sid.to_owned()));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_command(shard, mailboxes, command)
    }));
    if outcome.is_err() {
        warn!(?owner, "panic while handling a command");
        shard.count_panic();
        if let Some((room, sid)) = owner {
            shard.remove_participant(Instant::now(), &room, &sid, LeaveReason::InternalError);
        }
    }
}

fn run_command(shard: &mut Shard, mailboxes: &mut Mailboxes, command: Command) {
    let now = Instant::now();
    match command {
        Command::Join(req, reply) => {
            let joined = shard.join(now, req).map(|admission| {
                let sid = admission.participant.sid.clone();
                let events = mailboxes.open(sid.clone());
                let joined = Joined {
                    room: admission.room,
                    participant: admission.participant,
                    others: admission.others,
                    events,
                };
                (joined, sid)
            });
            let _ = reply.send(joined);
        }
        Command::Leave { room, sid, reason } => shard.remove_participant(now, &room, &sid, reason),
        Command::Detach { room, sid } => shard.detach(now, &room, &sid),
        Command::Attach { room, sid, reply } => {
            let _ = reply.send(shard.attach(now, &room, &sid));
        }
        Command::IceRestart { room, sid, reply } => {
            let _ = reply.send(shard.ice_restart(now, &room, &sid));
        }
        Command::PublishOffer {
            room,
            sid,
            sdp,
            reply,
        } => {
            let _ = reply.send(shard.publish_offer(now, &room, &sid, sdp));
        }
        Command::SubscribeAnswer {
            room,
            sid,
            sdp,
            reply,
        } => {
            let _ = reply.send(shard.subscribe_answer(now, &room, &sid, sdp));
        }
        Command::Candidate {
            room,
            sid,
            role,
            candidate,
            reply,
        } => {
            let init = RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_m_line_index,
                ..Default::default()
            };
            let _ = reply.send(shard.add_candidate(now, &room, &sid, role, init));
        }
        Command::Mute {
            room,
            sid,
            track_sid,
            muted,
            reply,
        } => {
            let _ = reply.send(shard.mute(now, &room, &sid, &track_sid, muted));
        }
        Command::UpdateSubscription {
            room,
            sid,
            track_sid,
            settings,
            reply,
        } => {
            let _ = reply.send(shard.update_subscription(now, &room, &sid, &track_sid, settings));
        }
        Command::ListRooms(reply) => {
            let _ = reply.send(shard.list_rooms());
        }
        Command::ParticipantStats {
            room,
            identity,
            reply,
        } => {
            let _ = reply.send(shard.participant_stats(&room, &identity));
        }
        Command::ListParticipants(room, reply) => {
            let _ = reply.send(shard.list_participants(&room));
        }
        Command::RemoveParticipant {
            room,
            identity,
            reason,
            reply,
        } => {
            let _ = reply.send(shard.remove_identity(now, &room, &identity, reason));
        }
        Command::CloseRoom(room, reason, reply) => {
            let _ = reply.send(shard.close_room(now, &room, reason));
        }
        Command::CreateRoom(options, reply) => {
            let _ = reply.send(shard.create_room(now, options));
        }
        Command::UpdateParticipant {
            room,
            identity,
            update,
            reply,
        } => {
            let _ = reply.send(shard.update_participant(now, &room, &identity, update));
        }
        Command::ModerateMute {
            room,
            identity,
            which,
            muted,
            reply,
        } => {
            let _ = reply.send(shard.moderate_mute(now, &room, &identity, &which, muted));
        }
        Command::UpdateRoom {
            room,
            metadata,
            reply,
        } => {
            let _ = reply.send(shard.update_room(&room, metadata));
        }
        Command::HoldMedia {
            room,
            sid,
            held,
            reply,
        } => {
            let _ = reply.send(shard.hold_media(now, &room, &sid, held));
        }
        // The loop handles these itself.
        Command::TcpConnection(_) | Command::Shutdown(_) => {}
    }
}
