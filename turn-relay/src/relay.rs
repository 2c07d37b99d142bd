//! The relay thread: every allocation, the UDP listener and every relay
//! socket, in one `mio` poll loop.
//!
//! Hot path, client to peer: `recvmmsg` on the listener fills up to 32
//! slots; each ChannelData is looked up (client address → allocation →
//! channel → peer, permission, rate) and queued as a slice of its slot;
//! one `sendmmsg` per run of the same relay socket sends them. Peer to
//! client: each ready relay socket's datagrams are read into slots that
//! keep 48 bytes of headroom, a ChannelData or Data-indication header is
//! written in front of the payload in place, and one `sendmmsg` on the
//! listener sends the batch. Nothing on that path locks or allocates.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Events, Interest, Poll, Token, Waker};
use rtc::stun::attributes::*;
use rtc::stun::message::{
    CLASS_INDICATION, CLASS_REQUEST, Getter, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND, Message,
};
use rtc::stun::uattrs::UnknownAttributes;
use rtc::stun::xoraddr::XorMappedAddress;
use rtc::turn::proto::channum::ChannelNumber;
use rtc::turn::proto::data::Data;
use rtc::turn::proto::evenport::EvenPort;
use rtc::turn::proto::lifetime::Lifetime;
use rtc::turn::proto::relayaddr::RelayedAddress;
use rtc::turn::proto::reqfamily::RequestedAddressFamily;
use rtc::turn::proto::reqtrans::RequestedTransport;
use rustc_hash::FxHashMap;
use slab::Slab;
use tracing::{debug, error, info_span, warn};

use crate::auth::{NonceCheck, Nonces, UsernameError, parse_username, rest_password};
use crate::filter::PeerFilter;
use crate::metrics::TurnMetrics;
use crate::proto::{self, HEADROOM, Reply, TAILROOM};
use crate::{TurnConfig, TurnError};
use callgate_udp_batch::{BATCH, RecvBatch, SendBatch, send_one};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_RELAY: usize = 2;
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// recvmmsg rounds on one socket before others get a turn.
const ROUNDS: usize = 8;
/// Where client datagrams are received in their slot: a ChannelData
/// payload then starts at `HEADROOM`, where a header for another client
/// can be written in front of it.
pub(crate) const CLIENT_AT: usize = HEADROOM - 4;

/// What the server handle tells the relay thread.
pub(crate) enum Control {
    Shutdown,
}

/// What a TCP/TLS connection tells the relay thread, in order.
pub(crate) enum StreamEvent {
    Open {
        id: u64,
        remote: SocketAddr,
        tx: tokio::sync::mpsc::Sender<Vec<u8>>,
        /// Told once a request on the connection passes authentication.
        authenticated: tokio::sync::oneshot::Sender<()>,
    },
    /// One whole STUN message or ChannelData frame.
    Frame {
        id: u64,
        frame: Vec<u8>,
    },
    Closed {
        id: u64,
    },
}

/// Connection events waiting for the relay thread; a full queue holds the
/// connections back (TCP flow control) rather than drop.
const STREAM_QUEUE: usize = 4096;
/// Connection events handled per loop turn before the UDP sockets get theirs.
const STREAM_EVENTS_PER_TURN: usize = 1024;

#[derive(Clone)]
pub(crate) struct ControlTx {
    tx: mpsc::Sender<Control>,
    streams: tokio::sync::mpsc::Sender<StreamEvent>,
    waker: Arc<Waker>,
}

impl ControlTx {
    /// False when the relay thread is gone.
    pub(crate) fn send(&self, c: Control) -> bool {
        let ok = self.tx.send(c).is_ok();
        let _ = self.waker.wake();
        ok
    }

    /// Waits for room in the connection queue; false when the relay is gone.
    pub(crate) async fn stream(&self, e: StreamEvent) -> bool {
        let ok = self.streams.send(e).await.is_ok();
        let _ = self.waker.wake();
        ok
    }
}

/// Binds the UDP listener with large buffers.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    buffer: usize,
) -> Result<std::net::UdpSocket, TurnError> {
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::UdpSocket> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = s.set_recv_buffer_size(buffer);
        let _ = s.set_send_buffer_size(buffer);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    bind(addr).map_err(|source| TurnError::Bind {
        what: "udp",
        addr,
        source,
    })
}

pub(crate) fn spawn(
    config: Arc<TurnConfig>,
    udp: Option<std::net::UdpSocket>,
    metrics: TurnMetrics,
) -> Result<(ControlTx, std::thread::JoinHandle<()>), TurnError> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let (streams, streams_rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
    let mut listener = udp.map(mio::net::UdpSocket::from_std);
    if let Some(l) = listener.as_mut() {
        poll.registry().register(l, LISTENER, Interest::READABLE)?;
    }
    let thread = std::thread::Builder::new()
        .name("turn-relay".into())
        .spawn(move || {
            let span = info_span!("relay");
            let _enter = span.enter();
            let relay = Relay::new(config, poll, listener, rx, streams_rx, metrics);
            // A bug must not take the relay down silently.
            if catch_unwind(AssertUnwindSafe(|| relay.run())).is_err() {
                error!("the TURN relay thread panicked and stopped");
            }
        })?;
    Ok((ControlTx { tx, streams, waker }, thread))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum ClientKey {
    Udp(SocketAddr),
    Stream(u64),
}

struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// Token bucket over bytes; `rate` 0 is unlimited.
struct Bucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    #[inline]
    fn take(&mut self, n: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let n = n as u64;
        if self.tokens < n {
            let elapsed = now.saturating_duration_since(self.last).as_nanos();
            let add = (elapsed * self.rate as u128 / 1_000_000_000) as u64;
            if add > 0 {
                self.tokens = (self.tokens + add).min(self.rate);
                self.last = now;
            }
        }
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

struct Allocation {
    client: ClientKey,
    socket: mio::net::UdpSocket,
    fd: RawFd,
    relay_addr: SocketAddr,
    identity: Box<str>,
    username: Box<str>,
    key: [u8; 16],
    expires: Instant,
    perms: FxHashMap<IpAddr, Instant>,
    channels: FxHashMap<u16, Channel>,
    by_peer: FxHashMap<SocketAddr, u16>,
    allocate_txid: [u8; 12],
    allocate_response: Vec<u8>,
    bucket: Bucket,
}

struct StreamClient {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    remote: SocketAddr,
    /// Until a request passes authentication.
    authenticated: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Who asked, after authentication.
struct Auth {
    username: String,
    identity: String,
    key: [u8; 16],
}

/// Per-batch counts, added to the shared counters once per batch.
#[derive(Default)]
struct Tally {
    packets_to_peer: u64,
    bytes_to_peer: u64,
    packets_to_client: u64,
    bytes_to_client: u64,
    no_allocation: u64,
    no_permission: u64,
    rate_limited: u64,
    malformed: u64,
    too_big: u64,
}

pub(crate) struct Relay {
    cfg: Arc<TurnConfig>,
    poll: Poll,
    /// Kept open here; used through `listener_fd`.
    _listener: Option<mio::net::UdpSocket>,
    listener_fd: RawFd,
    allocs: Slab<Allocation>,
    by_udp: FxHashMap<SocketAddr, usize>,
    by_stream: FxHashMap<u64, usize>,
    /// Allocations by relayed address, to relay between two of them
    /// without a round trip through the kernel.
    by_relay: FxHashMap<SocketAddr, usize>,
    streams: FxHashMap<u64, StreamClient>,
    per_user: FxHashMap<Box<str>, usize>,
    nonces: Nonces,
    filter: PeerFilter,
    metrics: TurnMetrics,
    control: mpsc::Receiver<Control>,
    stream_events: tokio::sync::mpsc::Receiver<StreamEvent>,
    /// Connection events were left in the queue at the end of a turn.
    streams_pending: bool,
    from_clients: Option<RecvBatch>,
    to_peers: SendBatch,
    from_peers: Option<RecvBatch>,
    to_clients: SendBatch,
    listener_ready: bool,
    ready: Vec<usize>,
    again: Vec<usize>,
    txid: [u8; 12],
    tally: Tally,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Relay {
    pub(crate) fn new(
        cfg: Arc<TurnConfig>,
        poll: Poll,
        listener: Option<mio::net::UdpSocket>,
        control: mpsc::Receiver<Control>,
        stream_events: tokio::sync::mpsc::Receiver<StreamEvent>,
        metrics: TurnMetrics,
    ) -> Relay {
        let filter = PeerFilter::new(
            cfg.allow_peers.clone(),
            cfg.deny_peers.clone(),
            cfg.always_allowed.clone(),
        );
        Relay {
            nonces: Nonces::new(cfg.nonce_lifetime),
            listener_fd: listener.as_ref().map_or(-1, |l| l.as_raw_fd()),
            cfg,
            poll,
            _listener: listener,
            allocs: Slab::new(),
            by_udp: FxHashMap::default(),
            by_stream: FxHashMap::default(),
            by_relay: FxHashMap::default(),
            streams: FxHashMap::default(),
            per_user: FxHashMap::default(),
            filter,
            metrics,
            control,
            stream_events,
            streams_pending: false,
            from_clients: Some(RecvBatch::new(CLIENT_AT, TAILROOM)),
            to_peers: SendBatch::new(),
            from_peers: Some(RecvBatch::new(HEADROOM, TAILROOM)),
            to_clients: SendBatch::new(),
            listener_ready: false,
            ready: Vec::with_capacity(1024),
            again: Vec::with_capacity(1024),
            txid: rand::random(),
            tally: Tally::default(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        loop {
            let timeout = if self.listener_ready || !self.ready.is_empty() || self.streams_pending {
                Duration::ZERO
            } else {
                next_sweep.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                error!(error = %e, "poll failed; the TURN relay stops");
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.listener_ready = true,
                    WAKER => {}
                    Token(t) => self.ready.push(t - FIRST_RELAY),
                }
            }
            let now = Instant::now();
            if !self.drain_control(now) {
                break;
            }
            if self.listener_ready {
                self.listener_ready = self.drain_listener(now);
            }
            if !self.ready.is_empty() {
                self.drain_relays(now);
            }
            self.publish_tally();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
        self.remove_all();
    }

    /// Frees every allocation.
    pub(crate) fn remove_all(&mut self) {
        let slots: Vec<usize> = self.allocs.iter().map(|(k, _)| k).collect();
        for slot in slots {
            self.remove(slot);
        }
    }

    fn publish_tally(&mut self) {
        let t = std::mem::take(&mut self.tally);
        let m = &self.metrics;
        if t.packets_to_peer > 0 {
            m.packets_to_peer.inc_by(t.packets_to_peer);
            m.bytes_to_peer.inc_by(t.bytes_to_peer);
        }
        if t.packets_to_client > 0 {
            m.packets_to_client.inc_by(t.packets_to_client);
            m.bytes_to_client.inc_by(t.bytes_to_client);
        }
        m.dropped("no_allocation", t.no_allocation);
        m.dropped("no_permission", t.no_permission);
        m.dropped("rate_limited", t.rate_limited);
        m.dropped("malformed", t.malformed);
        m.dropped("too_big", t.too_big);
    }

    /// False on shutdown.
    pub(crate) fn drain_control(&mut self, now: Instant) -> bool {
        match self.control.try_recv() {
            Ok(Control::Shutdown) => return false,
            Err(mpsc::TryRecvError::Empty) => {}
            // Every sender is gone only once the server handle is.
            Err(mpsc::TryRecvError::Disconnected) => return false,
        }
        self.streams_pending = false;
        for _ in 0..STREAM_EVENTS_PER_TURN {
            match self.stream_events.try_recv() {
                Ok(StreamEvent::Open {
                    id,
                    remote,
                    tx,
                    authenticated,
                }) => {
                    let client = StreamClient {
                        tx,
                        remote,
                        authenticated: Some(authenticated),
                    };
                    self.streams.insert(id, client);
                }
                Ok(StreamEvent::Frame { id, frame }) => self.on_stream_frame(id, frame, now),
                Ok(StreamEvent::Closed { id }) => {
                    self.streams.remove(&id);
                    if let Some(&slot) = self.by_stream.get(&id) {
                        self.remove(slot);
                    }
                }
                Err(_) => return true,
            }
        }
        self.streams_pending = true;
        true
    }

    /// Reads client datagrams; true when the listener may have more.
    fn drain_listener(&mut self, now: Instant) -> bool {
        let Some(mut batch) = self.from_clients.take() else {
            return false;
        };
        let mut more = false;
        for round in 0..ROUNDS {
            batch.clear();
            let n = match batch.recv(self.listener_fd) {
                Ok(n) => n,
                Err(e) => {
                    debug!(error = %e, "reading the UDP listener");
                    0
                }
            };
            for i in 0..n {
                let (len, from) = batch.got[i];
                let Some(from) = from else { continue };
                if let Some(reply) = self.on_client_datagram(from, batch.slot_mut(i), len, now) {
                    send_one(self.listener_fd, &from, &reply);
                }
            }
            self.flush_to_peers();
            self.flush_to_clients();
            if n < BATCH {
                break;
            }
            if round + 1 == ROUNDS {
                more = true;
            }
        }
        self.from_clients = Some(batch);
        more
    }

    /// One datagram from a client on the UDP listener, at
    /// `slot[CLIENT_AT..CLIENT_AT + len]` (`len` `usize::MAX` when the
    /// kernel truncated it): ChannelData is queued for its peer (batched:
    /// `slot` must live until the next flush), a STUN message handled.
    /// Returns the reply to send back, if any.
    pub(crate) fn on_client_datagram(
        &mut self,
        from: SocketAddr,
        slot: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Option<Vec<u8>> {
        if len == usize::MAX || len < 4 {
            self.tally.malformed += 1;
            return None;
        }
        if proto::is_channel_data(slot[CLIENT_AT]) {
            self.channel_data_to_peer(ClientKey::Udp(from), slot, len, now, true);
            return None;
        }
        // A request may close a relay socket whose descriptor a new one
        // then reuses: what is queued goes out first.
        self.flush_to_peers();
        self.flush_to_clients();
        let data = &slot[CLIENT_AT..CLIENT_AT + len];
        self.on_stun(ClientKey::Udp(from), from, data, now)
    }

    pub(crate) fn flush_to_peers(&mut self) {
        if !self.to_peers.is_empty() {
            let sent = self.to_peers.flush();
            self.metrics.dropped("send_failed", sent.failed);
        }
    }

    pub(crate) fn flush_to_clients(&mut self) {
        if !self.to_clients.is_empty() {
            let sent = self.to_clients.flush();
            self.metrics.dropped("send_failed", sent.failed);
        }
    }

    /// ChannelData from a client, at `slot[CLIENT_AT..CLIENT_AT + len]`:
    /// to its peer, or dropped. `batched`: the slot lives in `from_clients`
    /// until the next flush; otherwise it is sent at once.
    #[inline]
    fn channel_data_to_peer(
        &mut self,
        client: ClientKey,
        slot: &mut [u8],
        len: usize,
        now: Instant,
        batched: bool,
    ) {
        let found = match client {
            ClientKey::Udp(a) => self.by_udp.get(&a),
            ClientKey::Stream(id) => self.by_stream.get(&id),
        };
        let Some(a) = found.and_then(|&s| self.allocs.get_mut(s)) else {
            self.tally.no_allocation += 1;
            return;
        };
        let data = &slot[CLIENT_AT..CLIENT_AT + len];
        let number = u16::from_be_bytes([data[0], data[1]]);
        let size = u16::from_be_bytes([data[2], data[3]]) as usize;
        if 4 + size > len {
            self.tally.malformed += 1;
            return;
        }
        let peer = match a.channels.get(&number) {
            Some(c) if c.expires > now => c.peer,
            _ => {
                self.tally.no_permission += 1;
                return;
            }
        };
        if !permitted(&a.perms, peer.ip(), now) {
            self.tally.no_permission += 1;
            return;
        }
        if !a.bucket.take(size, now) {
            self.tally.rate_limited += 1;
            return;
        }
        let (fd, source) = (a.fd, a.relay_addr);
        self.tally.packets_to_peer += 1;
        self.tally.bytes_to_peer += size as u64;
        if let Some(&other) = self.by_relay.get(&peer) {
            // The peer is another allocation here: what its relay socket
            // would receive from ours goes straight to its client.
            self.deliver(other, slot, size, source, now, batched);
            return;
        }
        let payload = &slot[HEADROOM..HEADROOM + size];
        if batched {
            // SAFETY: `payload` is in the `from_clients` batch, which is not
            // refilled before `flush_to_peers` runs at the end of this round.
            if !unsafe { self.to_peers.push(fd, &peer, payload) } {
                self.metrics.dropped("send_failed", 1);
            }
        } else if !send_one(fd, &peer, payload) {
            self.metrics.dropped("send_failed", 1);
        }
    }

    fn drain_relays(&mut self, now: Instant) {
        let Some(mut batch) = self.from_peers.take() else {
            return;
        };
        batch.clear();
        let mut ready = std::mem::take(&mut self.ready);
        for &slot in &ready {
            let Some(a) = self.allocs.get(slot) else {
                continue;
            };
            let fd = a.fd;
            let mut drained = false;
            for _ in 0..ROUNDS {
                let start = batch.filled;
                let want = batch.free();
                let n = match batch.recv(fd) {
                    Ok(n) => n,
                    Err(e) => {
                        debug!(error = %e, "reading a relay socket");
                        0
                    }
                };
                for i in start..start + n {
                    let (len, from) = batch.got[i];
                    match from {
                        Some(from) if len != usize::MAX => {
                            self.deliver(slot, batch.slot_mut(i), len, from, now, true)
                        }
                        _ => self.tally.malformed += 1,
                    }
                }
                if batch.free() == 0 {
                    self.flush_to_clients();
                    batch.clear();
                }
                if n < want {
                    drained = true;
                    break;
                }
            }
            if !drained {
                // It may have more; let the others go first.
                self.again.push(slot);
            }
        }
        self.flush_to_clients();
        batch.clear();
        self.from_peers = Some(batch);
        ready.clear();
        self.ready = ready;
        std::mem::swap(&mut self.ready, &mut self.again);
    }

    /// `len` bytes from `from` for allocation `slot`'s client, at
    /// `buf[HEADROOM..]` with room for a header in front: framed in place
    /// and sent, batched in `to_clients` when `batched` (the buffer then
    /// lives until the next flush).
    #[inline]
    fn deliver(
        &mut self,
        slot: usize,
        buf: &mut [u8],
        len: usize,
        from: SocketAddr,
        now: Instant,
        batched: bool,
    ) {
        let Some(a) = self.allocs.get_mut(slot) else {
            return;
        };
        if !permitted(&a.perms, from.ip(), now) {
            self.tally.no_permission += 1;
            return;
        }
        if !a.bucket.take(len, now) {
            self.tally.rate_limited += 1;
            return;
        }
        let stream = matches!(a.client, ClientKey::Stream(_));
        let channel = a
            .by_peer
            .get(&from)
            .copied()
            .filter(|n| a.channels.get(n).is_some_and(|c| c.expires > now));
        let range = match channel {
            Some(n) => proto::frame_channel_data(buf, n, len, stream),
            None => {
                let c = u64::from_be_bytes(self.txid[4..].try_into().unwrap_or_default());
                self.txid[4..].copy_from_slice(&c.wrapping_add(1).to_be_bytes());
                match proto::frame_data_indication(buf, from, len, &self.txid) {
                    Some(range) => range,
                    None => {
                        self.tally.too_big += 1;
                        return;
                    }
                }
            }
        };
        match a.client {
            ClientKey::Udp(addr) if batched => {
                // SAFETY: the caller keeps `buf` alive and unchanged until
                // `flush_to_clients`.
                if !unsafe { self.to_clients.push(self.listener_fd, &addr, &buf[range]) } {
                    self.metrics.dropped("send_failed", 1);
                    return;
                }
            }
            ClientKey::Udp(addr) => {
                if !send_one(self.listener_fd, &addr, &buf[range]) {
                    self.metrics.dropped("send_failed", 1);
                    return;
                }
            }
            ClientKey::Stream(id) => {
                let Some(s) = self.streams.get(&id) else {
                    return;
                };
                if s.tx.try_send(buf[range].to_vec()).is_err() {
                    self.metrics.dropped("stream_queue_full", 1);
                    return;
                }
            }
        }
        self.tally.packets_to_client += 1;
        self.tally.bytes_to_client += len as u64;
    }

    fn on_stream_frame(&mut self, id: u64, frame: Vec<u8>, now: Instant) {
        let Some(remote) = self.streams.get(&id).map(|s| s.remote) else {
            return;
        };
        if frame.len() < 4 {
            return;
        }
        if proto::is_channel_data(frame[0]) {
            let mut slot = vec![0u8; CLIENT_AT + frame.len() + TAILROOM];
            slot[CLIENT_AT..CLIENT_AT + frame.len()].copy_from_slice(&frame);
            self.channel_data_to_peer(ClientKey::Stream(id), &mut slot, frame.len(), now, false);
            return;
        }
        if let Some(reply) = self.on_stun(ClientKey::Stream(id), remote, &frame, now)
            && let Some(s) = self.streams.get(&id)
            && s.tx.try_send(reply).is_err()
        {
            self.metrics.dropped("stream_queue_full", 1);
        }
    }

    /// A STUN message from a client; the reply to send back, if any.
    /// Never panics out: a bug here drops the message, not the relay.
    fn on_stun(
        &mut self,
        client: ClientKey,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let Some(m) = proto::decode(data) else {
            self.tally.malformed += 1;
            return None;
        };
        match catch_unwind(AssertUnwindSafe(|| self.on_message(client, from, m, now))) {
            Ok(reply) => reply,
            Err(_) => {
                error!(%from, "handling a STUN message panicked; message dropped");
                self.metrics.dropped("internal_error", 1);
                None
            }
        }
    }

    fn reply_error(&self, m: &Message, code: u16, key: Option<&[u8]>) -> Vec<u8> {
        self.metrics.error(code);
        Reply::error(m, code).finish(key)
    }

    /// The relayed address of every allocation.
    pub(crate) fn relayed_addrs(&self) -> Vec<SocketAddr> {
        self.by_relay.keys().copied().collect()
    }

    /// A NONCE this relay accepts from `from` now (what a 401 hands out).
    pub(crate) fn issue_nonce(&self, from: SocketAddr) -> String {
        self.nonces.issue(from, unix_now())
    }

    /// 401 or 438: REALM and a fresh NONCE, no integrity.
    fn challenge(&self, m: &Message, code: u16, from: SocketAddr) -> Vec<u8> {
        self.metrics.error(code);
        let mut r = Reply::error(m, code);
        r.add_raw(ATTR_REALM, self.cfg.realm.as_bytes());
        r.add_raw(ATTR_NONCE, self.issue_nonce(from).as_bytes());
        r.finish(None)
    }

    fn lookup(&self, client: ClientKey) -> Option<usize> {
        match client {
            ClientKey::Udp(a) => self.by_udp.get(&a).copied(),
            ClientKey::Stream(id) => self.by_stream.get(&id).copied(),
        }
    }

    fn on_message(
        &mut self,
        client: ClientKey,
        from: SocketAddr,
        mut m: Message,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let method = m.typ.method;
        if m.typ.class == CLASS_INDICATION {
            if method == METHOD_SEND {
                self.on_send(client, &m, now);
            }
            return None;
        }
        if m.typ.class != CLASS_REQUEST {
            return None;
        }
        if method == METHOD_BINDING {
            let mut r = Reply::success(&m);
            r.add(&XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            });
            return Some(r.finish(None));
        }
        if ![
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ]
        .contains(&method)
        {
            return Some(self.reply_error(&m, 400, None));
        }
        let unknown = proto::unknown_required(&m);
        if !unknown.is_empty() {
            self.metrics.error(420);
            let mut r = Reply::error(&m, 420);
            r.add(&UnknownAttributes(unknown));
            return Some(r.finish(None));
        }
        let auth = match self.authenticate(client, from, &mut m) {
            Ok(a) => a,
            Err(reply) => return Some(reply),
        };
        // The connection holds valid credentials: it may stay idle as
        // long as any client (its task stops the unauthenticated deadline).
        if let ClientKey::Stream(id) = client
            && let Some(told) = self
                .streams
                .get_mut(&id)
                .and_then(|s| s.authenticated.take())
        {
            let _ = told.send(());
        }
        let slot = self.lookup(client);
        if method == METHOD_ALLOCATE {
            return Some(self.on_allocate(client, from, &m, auth, slot, now));
        }
        let Some(slot) = slot else {
            return Some(self.reply_error(&m, 437, Some(&auth.key)));
        };
        if *self.allocs[slot].username != *auth.username {
            return Some(self.reply_error(&m, 441, Some(&auth.key)));
        }
        Some(match method {
            METHOD_REFRESH => self.on_refresh(slot, &m, &auth, now),
            METHOD_CREATE_PERMISSION => self.on_create_permission(slot, &m, &auth, now),
            _ => self.on_channel_bind(slot, &m, &auth, now),
        })
    }

    /// RFC 8489 §9.2.4 long-term credential checks, in the RFC's order.
    fn authenticate(
        &self,
        client: ClientKey,
        from: SocketAddr,
        m: &mut Message,
    ) -> Result<Auth, Vec<u8>> {
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(self.challenge(m, 401, from));
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            proto::text(m, ATTR_USERNAME),
            proto::text(m, ATTR_REALM),
            proto::text(m, ATTR_NONCE),
        ) else {
            return Err(self.reply_error(m, 400, None));
        };
        let now_unix = unix_now();
        if self.nonces.check(&nonce, from, now_unix) == NonceCheck::Stale {
            return Err(self.challenge(m, 438, from));
        }
        if realm != self.cfg.realm || username.len() > 512 {
            return Err(self.challenge(m, 401, from));
        }
        let identity = match parse_username(&username, now_unix) {
            Ok(i) => i.to_owned(),
            Err(UsernameError::Malformed | UsernameError::Expired) => {
                return Err(self.challenge(m, 401, from));
            }
        };
        // The allocation's key saves an HMAC and an MD5 per request.
        let cached = self
            .lookup(client)
            .and_then(|s| self.allocs.get(s))
            .filter(|a| *a.username == *username)
            .map(|a| a.key);
        let key = match cached {
            Some(k) => k,
            None => {
                let password = rest_password(self.cfg.auth_secret.as_bytes(), &username);
                match proto::long_term_key(&username, &realm, &password) {
                    Some(k) => k,
                    None => return Err(self.reply_error(m, 500, None)),
                }
            }
        };
        if !proto::integrity_ok(m, &key) {
            return Err(self.challenge(m, 401, from));
        }
        Ok(Auth {
            username,
            identity,
            key,
        })
    }

    fn granted_lifetime(&self, m: &Message) -> Option<Duration> {
        let mut l = Lifetime::default();
        if l.get_from(m).is_ok() {
            Some(l.0)
        } else {
            None
        }
    }

    fn on_allocate(
        &mut self,
        client: ClientKey,
        from: SocketAddr,
        m: &Message,
        auth: Auth,
        existing: Option<usize>,
        now: Instant,
    ) -> Vec<u8> {
        let key = auth.key;
        if let Some(slot) = existing {
            let a = &self.allocs[slot];
            // A retransmission of the request that made it: same answer.
            if a.allocate_txid == m.transaction_id.0 && *a.username == *auth.username {
                return a.allocate_response.clone();
            }
            return self.reply_error(m, 437, Some(&key));
        }
        let mut transport = RequestedTransport::default();
        if transport.get_from(m).is_err() {
            return self.reply_error(m, 400, Some(&key));
        }
        if transport.protocol.0 != 17 {
            return self.reply_error(m, 442, Some(&key));
        }
        let even = m.contains(ATTR_EVEN_PORT);
        if m.contains(ATTR_RESERVATION_TOKEN) {
            if even {
                return self.reply_error(m, 400, Some(&key));
            }
            // No port is ever reserved, so no token is known.
            return self.reply_error(m, 508, Some(&key));
        }
        if even {
            let mut e = EvenPort::default();
            if e.get_from(m).is_err() {
                return self.reply_error(m, 400, Some(&key));
            }
        }
        if m.contains(ATTR_REQUESTED_ADDRESS_FAMILY) {
            let mut fam = RequestedAddressFamily::default();
            let wanted_v4 = match fam.get_from(m).map(|_| fam.0) {
                Ok(0x01) => true,
                Ok(0x02) => false,
                _ => return self.reply_error(m, 440, Some(&key)),
            };
            if wanted_v4 != self.cfg.relay_ip.is_ipv4() {
                return self.reply_error(m, 440, Some(&key));
            }
        }
        if self.allocs.len() >= self.cfg.max_allocations {
            return self.reply_error(m, 508, Some(&key));
        }
        let identity: Box<str> = auth.identity.into();
        if self.per_user.get(&identity).copied().unwrap_or(0) >= self.cfg.max_allocations_per_user {
            return self.reply_error(m, 486, Some(&key));
        }
        let lifetime = self
            .granted_lifetime(m)
            .map_or(self.cfg.default_lifetime, |l| {
                l.clamp(self.cfg.default_lifetime, self.cfg.max_lifetime)
            });
        let dont_fragment = m.contains(ATTR_DONT_FRAGMENT);
        let entry = self.allocs.vacant_entry();
        let token = Token(FIRST_RELAY + entry.key());
        let Some(mut socket) = relay_socket(&self.cfg, even, dont_fragment) else {
            warn!("no free relay port in the configured range");
            return self.reply_error(m, 508, Some(&key));
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)
        {
            warn!(error = %e, "registering a relay socket");
            return self.reply_error(m, 508, Some(&key));
        }
        let port = socket.local_addr().map_or(0, |a| a.port());
        let relay_addr = SocketAddr::new(self.cfg.advertised_ip, port);
        let mut r = Reply::success(m);
        r.add(&RelayedAddress {
            ip: relay_addr.ip(),
            port,
        })
        .add(&Lifetime(Duration::from_secs(lifetime.as_secs().max(1))))
        .add(&XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        });
        let response = r.finish(Some(&key));
        let fd = socket.as_raw_fd();
        let slot = entry.key();
        entry.insert(Allocation {
            client,
            socket,
            fd,
            relay_addr,
            identity: identity.clone(),
            username: auth.username.into(),
            key,
            expires: now + lifetime,
            perms: FxHashMap::default(),
            channels: FxHashMap::default(),
            by_peer: FxHashMap::default(),
            allocate_txid: m.transaction_id.0,
            allocate_response: response.clone(),
            bucket: Bucket {
                rate: self.cfg.max_bytes_per_second,
                tokens: self.cfg.max_bytes_per_second,
                last: now,
            },
        });
        match client {
            ClientKey::Udp(a) => self.by_udp.insert(a, slot),
            ClientKey::Stream(id) => self.by_stream.insert(id, slot),
        };
        self.by_relay.insert(relay_addr, slot);
        *self.per_user.entry(identity).or_insert(0) += 1;
        self.metrics.allocations.inc();
        self.metrics.allocations_created.inc();
        debug!(%from, relay = %relay_addr, lifetime = lifetime.as_secs(), "allocation created");
        response
    }

    fn on_refresh(&mut self, slot: usize, m: &Message, auth: &Auth, now: Instant) -> Vec<u8> {
        let key = auth.key;
        if m.contains(ATTR_REQUESTED_ADDRESS_FAMILY) {
            let mut fam = RequestedAddressFamily::default();
            let v4 = fam.get_from(m).map(|_| fam.0 == 0x01).unwrap_or(false);
            if v4 != self.allocs[slot].relay_addr.is_ipv4() {
                return self.reply_error(m, 443, Some(&key));
            }
        }
        let lifetime = match self.granted_lifetime(m) {
            Some(l) if l.is_zero() => Duration::ZERO,
            Some(l) => l.min(self.cfg.max_lifetime),
            None => self.cfg.default_lifetime,
        };
        if lifetime.is_zero() {
            self.remove(slot);
        } else {
            self.allocs[slot].expires = now + lifetime;
        }
        let mut r = Reply::success(m);
        r.add(&Lifetime(Duration::from_secs(lifetime.as_secs())));
        r.finish(Some(&key))
    }

    fn on_create_permission(
        &mut self,
        slot: usize,
        m: &Message,
        auth: &Auth,
        now: Instant,
    ) -> Vec<u8> {
        let key = auth.key;
        let peers = match proto::peer_addresses(m) {
            Some(p) if !p.is_empty() => p,
            _ => return self.reply_error(m, 400, Some(&key)),
        };
        if let Some(p) = peers.iter().find(|p| !self.filter.ip_allowed(p.ip())) {
            debug!(peer = %p, "permission refused by the peer filter");
            self.metrics.denied("create_permission");
            return self.reply_error(m, 403, Some(&key));
        }
        let relay_v4 = self.allocs[slot].relay_addr.is_ipv4();
        if peers.iter().any(|p| p.is_ipv4() != relay_v4) {
            return self.reply_error(m, 443, Some(&key));
        }
        let a = &self.allocs[slot];
        let mut new: Vec<IpAddr> = peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| !a.perms.contains_key(ip))
            .collect();
        new.sort();
        new.dedup();
        if a.perms.len() + new.len() > self.cfg.max_permissions_per_allocation {
            return self.reply_error(m, 508, Some(&key));
        }
        let expires = now + self.cfg.permission_lifetime;
        let a = &mut self.allocs[slot];
        for p in &peers {
            a.perms.insert(p.ip(), expires);
        }
        self.metrics.permissions.add(new.len() as i64);
        Reply::success(m).finish(Some(&key))
    }

    fn on_channel_bind(&mut self, slot: usize, m: &Message, auth: &Auth, now: Instant) -> Vec<u8> {
        let key = auth.key;
        let mut number = ChannelNumber::default();
        if number.get_from(m).is_err() || !proto::valid_channel(number.0) {
            return self.reply_error(m, 400, Some(&key));
        }
        let number = number.0;
        let peer = match proto::peer_addresses(m).as_deref() {
            Some([p]) => *p,
            _ => return self.reply_error(m, 400, Some(&key)),
        };
        if !self.filter.peer_allowed(peer) {
            debug!(%peer, "channel refused by the peer filter");
            self.metrics.denied("channel_bind");
            return self.reply_error(m, 403, Some(&key));
        }
        let max = self.cfg.max_permissions_per_allocation;
        let a = &self.allocs[slot];
        if peer.is_ipv4() != a.relay_addr.is_ipv4() {
            return self.reply_error(m, 443, Some(&key));
        }
        let same_channel = a.channels.get(&number).map(|c| c.peer);
        let same_peer = a.by_peer.get(&peer).copied();
        match (same_channel, same_peer) {
            (Some(p), _) if p != peer => return self.reply_error(m, 400, Some(&key)),
            (_, Some(n)) if n != number => return self.reply_error(m, 400, Some(&key)),
            _ => {}
        }
        let new_channel = same_channel.is_none();
        let new_perm = !a.perms.contains_key(&peer.ip());
        if (new_channel && a.channels.len() >= max) || (new_perm && a.perms.len() >= max) {
            return self.reply_error(m, 508, Some(&key));
        }
        let channel_expires = now + self.cfg.channel_lifetime;
        let perm_expires = now + self.cfg.permission_lifetime;
        let a = &mut self.allocs[slot];
        a.channels.insert(
            number,
            Channel {
                peer,
                expires: channel_expires,
            },
        );
        a.by_peer.insert(peer, number);
        let e = a.perms.entry(peer.ip()).or_insert(perm_expires);
        *e = (*e).max(perm_expires);
        if new_channel {
            self.metrics.channels.inc();
        }
        if new_perm {
            self.metrics.permissions.inc();
        }
        Reply::success(m).finish(Some(&key))
    }

    fn on_send(&mut self, client: ClientKey, m: &Message, now: Instant) {
        let Some(slot) = self.lookup(client) else {
            self.tally.no_allocation += 1;
            return;
        };
        let peer = match proto::peer_addresses(m).as_deref() {
            Some([p, ..]) => *p,
            _ => {
                self.tally.malformed += 1;
                return;
            }
        };
        let mut data = Data::default();
        if data.get_from(m).is_err() {
            self.tally.malformed += 1;
            return;
        }
        if !self.filter.peer_allowed(peer) {
            self.metrics.denied("send");
            return;
        }
        let a = &mut self.allocs[slot];
        if !permitted(&a.perms, peer.ip(), now) {
            self.tally.no_permission += 1;
            return;
        }
        if !a.bucket.take(data.0.len(), now) {
            self.tally.rate_limited += 1;
            return;
        }
        let (fd, source) = (a.fd, a.relay_addr);
        let len = data.0.len();
        self.tally.packets_to_peer += 1;
        self.tally.bytes_to_peer += len as u64;
        if let Some(&other) = self.by_relay.get(&peer) {
            let mut buf = vec![0u8; HEADROOM + len + TAILROOM];
            buf[HEADROOM..HEADROOM + len].copy_from_slice(&data.0);
            self.deliver(other, &mut buf, len, source, now, false);
        } else if !send_one(fd, &peer, &data.0) {
            self.metrics.dropped("send_failed", 1);
        }
    }

    fn remove(&mut self, slot: usize) {
        if !self.allocs.contains(slot) {
            return;
        }
        let mut a = self.allocs.remove(slot);
        let _ = self.poll.registry().deregister(&mut a.socket);
        match a.client {
            ClientKey::Udp(addr) => self.by_udp.remove(&addr),
            ClientKey::Stream(id) => self.by_stream.remove(&id),
        };
        self.by_relay.remove(&a.relay_addr);
        if let Some(n) = self.per_user.get_mut(&a.identity) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.identity);
            }
        }
        self.metrics.allocations.dec();
        self.metrics.permissions.sub(a.perms.len() as i64);
        self.metrics.channels.sub(a.channels.len() as i64);
        debug!(relay = %a.relay_addr, "allocation removed");
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(k, _)| k)
            .collect();
        for slot in expired {
            self.remove(slot);
        }
        let mut perms_gone = 0i64;
        let mut channels_gone = 0i64;
        for (_, a) in self.allocs.iter_mut() {
            let before = a.perms.len();
            a.perms.retain(|_, e| *e > now);
            perms_gone += (before - a.perms.len()) as i64;
            let before = a.channels.len();
            let by_peer = &mut a.by_peer;
            a.channels.retain(|_, c| {
                let keep = c.expires > now;
                if !keep {
                    by_peer.remove(&c.peer);
                }
                keep
            });
            channels_gone += (before - a.channels.len()) as i64;
        }
        self.metrics.permissions.sub(perms_gone);
        self.metrics.channels.sub(channels_gone);
    }
}

/// Does `perms` hold an unexpired permission for `ip`?
#[inline]
fn permitted(perms: &FxHashMap<IpAddr, Instant>, ip: IpAddr, now: Instant) -> bool {
    perms.get(&ip).is_some_and(|&e| e > now)
}

/// A relay socket on a free port of the range (even when asked).
fn relay_socket(cfg: &TurnConfig, even: bool, dont_fragment: bool) -> Option<mio::net::UdpSocket> {
    let (lo, hi) = (*cfg.relay_ports.start(), *cfg.relay_ports.end());
    let span = u32::from(hi - lo) + 1;
    for attempt in 0..64u32 {
        // Random first, then a linear scan from a random start when the
        // range is crowded.
        let mut port = if attempt < 32 {
            lo + (rand::random::<u32>() % span) as u16
        } else {
            let base: u32 = rand::random::<u32>() % span;
            lo + ((base + attempt) % span) as u16
        };
        if even && port % 2 == 1 {
            if port == hi {
                continue;
            }
            port += 1;
        }
        let addr = SocketAddr::new(cfg.relay_ip, port);
        let Ok(s) = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        ) else {
            return None;
        };
        if addr.is_ipv6() && s.set_only_v6(true).is_err() {
            continue;
        }
        if s.set_nonblocking(true).is_err() || s.bind(&addr.into()).is_err() {
            continue;
        }
        if dont_fragment && addr.is_ipv4() {
            set_dont_fragment(&s);
        }
        let std: std::net::UdpSocket = s.into();
        return Some(mio::net::UdpSocket::from_std(std));
    }
    None
}

fn set_dont_fragment(s: &socket2::Socket) {
    let v: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: a valid fd and a c_int option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
