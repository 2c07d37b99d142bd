//! ICE-TCP: one passive TCP port (RFC 6544) shared by every worker, packets
//! framed with a 2-byte length (RFC 4571).
//!
//! The acceptor (its own thread) reads the first frame of a new connection,
//! which must be a STUN Binding request, takes our ufrag from its USERNAME,
//! and hands the socket to the worker the ufrag's prefix names
//! (`ids::worker_of_ufrag`). Until then the connection holds a place in the
//! pending table ([`Admission`]): a short deadline, and a newcomer over the
//! caps sheds the oldest pending connection rather than being refused, so
//! idle connections cannot crowd out a client that sends its request.
//!
//! In that worker each connection gets a reader task, which splits frames
//! and passes them to the worker loop as `TcpEvent`s, and a writer task fed
//! by a bounded queue the loop fills with `try_send`, so a slow client
//! loses packets instead of stalling the loop.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use callgate_admission::{Admission, Pass};
use rtc::shared::tcp_framing::{FRAMING_HEADER_LEN, TcpFrameDecoder, frame_packet_to};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, info_span, warn};

use crate::config::SfuConfig;
use crate::ids;
use crate::metrics::{SfuMetrics, TcpMetrics, TcpRefusal};
use crate::stun;
use crate::worker::Command;

/// Largest frame accepted once a connection belongs to a transport: far
/// above any DTLS record, RTP or RTCP packet a WebRTC stack sends (they are
/// sized for a 1500-byte path MTU), far below the 64 KiB framing allows.
pub(crate) const MAX_FRAME: usize = 16 * 1024;
/// Largest first frame: a STUN Binding request is a few hundred bytes.
pub(crate) const MAX_FIRST_FRAME: usize = 2048;
/// Frames queued for one connection before new output for it is dropped.
const SEND_QUEUE: usize = 512;
/// Bytes the writer gathers from its queue into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// A write that makes no progress for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for writers to flush their last frames.
const FLUSH_ON_SHUTDOWN: Duration = Duration::from_millis(300);
const READ_BUF: usize = 4096;

// ---- framing -------------------------------------------------------------

/// A frame whose length header exceeds the cap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Oversized;

/// Splits an RFC 4571 byte stream into frames with rtc's `TcpFrameDecoder`,
/// refusing any frame longer than `max`. Memory stays under
/// `max + 2 + ` one read, as an oversized frame is refused once more than
/// `max + 2` bytes of it are buffered.
pub(crate) struct FrameReader {
    decoder: TcpFrameDecoder,
    max: usize,
}

impl FrameReader {
    pub(crate) fn new(max: usize) -> Self {
        FrameReader {
            decoder: TcpFrameDecoder::with_capacity(READ_BUF),
            max,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.decoder.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Vec<u8>>, Oversized> {
        match self.decoder.next_packet() {
            Some(frame) if frame.len() > self.max => Err(Oversized),
            Some(frame) => Ok(Some(frame)),
            // The first frame is incomplete, so its length exceeds what is
            // buffered after its header.
            None if self.decoder.buffered_len() > self.max + FRAMING_HEADER_LEN => Err(Oversized),
            None => Ok(None),
        }
    }
}

/// Appends `packet` with its RFC 4571 length header to `out`.
fn append_frame(out: &mut Vec<u8>, packet: &[u8]) {
    let start = out.len();
    out.resize(start + FRAMING_HEADER_LEN + packet.len(), 0);
    if frame_packet_to(packet, &mut out[start..]).is_none() {
        // Longer than 65535 bytes: `TcpConns::send` refuses those first.
        out.truncate(start);
    }
}

// ---- the acceptor ----------------------------------------------------------

/// Binds the ICE-TCP port on `bind_ip`.
pub(crate) fn bind(config: &SfuConfig) -> io::Result<StdTcpListener> {
    let addr = SocketAddr::new(config.bind_ip, config.tcp_port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server rebinds while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("binding ICE-TCP port {addr}: {e}")))?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A new connection for a worker: the socket, its peer, and the first frame
/// (a STUN Binding request for `ufrag`), already read.
pub(crate) struct TcpHandoff {
    pub stream: StdTcpStream,
    pub peer: SocketAddr,
    pub ufrag: String,
    pub first_frame: Vec<u8>,
}

/// Starts the acceptor thread; sending on (or dropping) the returned sender stops it.
pub(crate) fn spawn_acceptor(
    listener: StdTcpListener,
    workers: Vec<mpsc::UnboundedSender<Command>>,
    metrics: SfuMetrics,
    config: &SfuConfig,
) -> io::Result<(JoinHandle<()>, oneshot::Sender<()>)> {
    let (stop_tx, stop_rx) = oneshot::channel();
    let pending = Admission::new(config.ice_tcp_pending, metrics.tcp_pending());
    let first_frame_timeout = config.ice_tcp_first_frame_timeout;
    let thread = std::thread::Builder::new()
        .name("ice-tcp-acceptor".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let _span = info_span!("ice_tcp_acceptor").entered();
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let acceptor = Acceptor {
                            workers: workers.into(),
                            metrics,
                            pending,
                            first_frame_timeout,
                        };
                        acceptor.run(listener, stop_rx).await
                    }
                    Err(e) => warn!(error = %e, "ICE-TCP listener unusable"),
                }
            });
        })?;
    Ok((thread, stop_tx))
}

/// What the accept loop hands every new connection's task.
#[derive(Clone)]
struct Acceptor {
    workers: Arc<[mpsc::UnboundedSender<Command>]>,
    metrics: SfuMetrics,
    /// Connections still sending their first frame.
    pending: Admission,
    first_frame_timeout: Duration,
}

impl Acceptor {
    async fn run(self, listener: TcpListener, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Admitted here, in accept order, so that "oldest"
                        // means what it says.
                        let pass = self.pending.admit(peer.ip());
                        tokio::spawn(self.clone().first_frame(stream, peer, pass));
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: let some close.
                        warn!(error = %e, "ICE-TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Holds `pass` in the pending table until the first frame is read and
    /// the socket handed over, the deadline passes, or a newer connection
    /// sheds this one (the table counted that already).
    async fn first_frame(self, stream: TcpStream, peer: SocketAddr, pass: Pass) {
        tokio::select! {
            result = hand_off(stream, peer, &self.workers, self.first_frame_timeout) => {
                if let Err(reason) = result {
                    debug!(%peer, reason = reason.as_str(), "ICE-TCP connection refused");
                    self.metrics.tcp_refused(reason).inc();
                }
            }
            shed = pass.shed() => {
                debug!(%peer, reason = shed.as_str(), "ICE-TCP connection shed");
            }
        }
    }
}

/// Reads one frame of at most `MAX_FIRST_FRAME` bytes, and nothing after it.
async fn read_first_frame(stream: &mut TcpStream) -> Result<Vec<u8>, TcpRefusal> {
    let mut header = [0u8; FRAMING_HEADER_LEN];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|_| TcpRefusal::Closed)?;
    let len = usize::from(u16::from_be_bytes(header));
    if len > MAX_FIRST_FRAME {
        return Err(TcpRefusal::BadFrame);
    }
    let mut frame = vec![0u8; len];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|_| TcpRefusal::Closed)?;
    Ok(frame)
}

async fn hand_off(
    mut stream: TcpStream,
    peer: SocketAddr,
    workers: &[mpsc::UnboundedSender<Command>],
    first_frame_timeout: Duration,
) -> Result<(), TcpRefusal> {
    let first_frame = tokio::time::timeout(first_frame_timeout, read_first_frame(&mut stream))
        .await
        .map_err(|_| TcpRefusal::Timeout)??;
    if !stun::is_binding_request(&first_frame) {
        return Err(TcpRefusal::BadFrame);
    }
    let ufrag = stun::ice_username(&first_frame).ok_or(TcpRefusal::BadFrame)?;
    let worker = ids::worker_of_ufrag(&ufrag)
        .and_then(|i| workers.get(i))
        .ok_or(TcpRefusal::UnknownUfrag)?;
    // Media is latency-bound: never wait to coalesce small packets.
    let _ = stream.set_nodelay(true);
    // Leaves the socket non-blocking, ready for the worker's runtime.
    let stream = stream.into_std().map_err(|_| TcpRefusal::Closed)?;
    worker
        .send(Command::TcpConnection(TcpHandoff {
            stream,
            peer,
            ufrag,
            first_frame,
        }))
        .map_err(|_| TcpRefusal::Closed)
}

// ---- a worker's connections ------------------------------------------------

/// What a worker's connection tasks tell its loop.
pub(crate) enum TcpEvent {
    Frame {
        conn: u64,
        peer: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        conn: u64,
        peer: SocketAddr,
        /// A frame over the size cap ended it.
        oversized: bool,
    },
}

/// Why output for a connection was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// No open connection from that address.
    NoConnection,
    /// The client reads slower than we send.
    QueueFull,
    /// More than the framing can carry.
    TooLarge,
}

struct Conn {
    id: u64,
    queue: mpsc::Sender<BytesMut>,
    reader: AbortHandle,
}

/// A worker's open ICE-TCP connections, by peer address. Lives on the
/// worker's thread; its tasks run on the worker's current-thread runtime.
pub(crate) struct TcpConns {
    conns: HashMap<SocketAddr, Conn>,
    next_id: u64,
    events_tx: mpsc::Sender<TcpEvent>,
    events_rx: mpsc::Receiver<TcpEvent>,
    writers: tokio::task::JoinSet<()>,
    pub(crate) metrics: TcpMetrics,
}

impl TcpConns {
    pub(crate) fn new(metrics: TcpMetrics) -> Self {
        // Readers wait when the loop falls behind: TCP flow control then
        // slows the client, rather than memory growing.
        let (events_tx, events_rx) = mpsc::channel(1024);
        TcpConns {
            conns: HashMap::new(),
            next_id: 1,
            events_tx,
            events_rx,
            writers: tokio::task::JoinSet::new(),
            metrics,
        }
    }

    /// The next event from any connection. Never `None`: `self` holds a sender.
    pub(crate) async fn recv(&mut self) -> Option<TcpEvent> {
        self.events_rx.recv().await
    }

    pub(crate) fn try_recv(&mut self) -> Option<TcpEvent> {
        self.events_rx.try_recv().ok()
    }

    /// Starts the reader and writer of a connection handed over by the
    /// acceptor. Must run inside the worker's runtime.
    pub(crate) fn open(&mut self, stream: StdTcpStream, peer: SocketAddr) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        // A new connection from the same address and port means the old
        // one is gone, whatever its reader has yet to notice.
        self.close(peer);
        let id = self.next_id;
        self.next_id += 1;
        let (read, write) = stream.into_split();
        let (queue_tx, queue_rx) = mpsc::channel(SEND_QUEUE);
        let reader = tokio::spawn(read_loop(read, self.events_tx.clone(), id, peer));
        // Drop stale finished writers so the set does not grow.
        while self.writers.try_join_next().is_some() {}
        self.writers.spawn(write_loop(
            write,
            queue_rx,
            self.events_tx.clone(),
            id,
            peer,
        ));
        self.conns.insert(
            peer,
            Conn {
                id,
                queue: queue_tx,
                reader: reader.abort_handle(),
            },
        );
        self.metrics.open.inc();
        self.metrics.accepted.inc();
        Ok(())
    }

    /// Queues `payload` for the connection from `to`, without waiting.
    pub(crate) fn send(&mut self, to: SocketAddr, payload: BytesMut) -> Result<(), SendError> {
        if payload.len() > usize::from(u16::MAX) {
            return Err(SendError::TooLarge);
        }
        let conn = self.conns.get(&to).ok_or(SendError::NoConnection)?;
        conn.queue.try_send(payload).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            // The writer gave up; its `Closed` event is on the way.
            mpsc::error::TrySendError::Closed(_) => SendError::NoConnection,
        })
    }

    /// Closes the connection from `peer`: reading stops now, the writer
    /// sends what is queued (a DTLS close, say) and then closes the socket.
    pub(crate) fn close(&mut self, peer: SocketAddr) {
        if let Some(conn) = self.conns.remove(&peer) {
            conn.reader.abort();
            self.metrics.open.dec();
        }
    }

    /// Whether connection `conn` from `peer` is still open (frames it read
    /// before the worker closed it may still be in the channel).
    pub(crate) fn is_open(&self, conn: u64, peer: SocketAddr) -> bool {
        self.conns.get(&peer).is_some_and(|c| c.id == conn)
    }

    /// A connection task reported its end. Returns whether the connection
    /// was still open (its address must then be forgotten by the shard).
    pub(crate) fn on_closed(&mut self, conn: u64, peer: SocketAddr, oversized: bool) -> bool {
        if oversized {
            self.metrics.drop_malformed.inc();
        }
        if self.is_open(conn, peer) {
            self.close(peer);
            true
        } else {
            false
        }
    }

    /// Closes every connection and gives writers a moment to flush.
    pub(crate) async fn shutdown(&mut self) {
        let peers: Vec<SocketAddr> = self.conns.keys().copied().collect();
        for peer in peers {
            self.close(peer);
        }
        let writers = &mut self.writers;
        let _ = tokio::time::timeout(FLUSH_ON_SHUTDOWN, async {
            while writers.join_next().await.is_some() {}
        })
        .await;
        self.writers.abort_all();
    }
}

async fn read_loop(
    mut read: OwnedReadHalf,
    events: mpsc::Sender<TcpEvent>,
    conn: u64,
    peer: SocketAddr,
) {
    let mut frames = FrameReader::new(MAX_FRAME);
    let mut buf = vec![0u8; READ_BUF];
    let oversized = 'conn: loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break false,
            Ok(n) => n,
        };
        frames.push(&buf[..n]);
        loop {
            match frames.next_frame() {
                Ok(Some(data)) => {
                    let frame = TcpEvent::Frame { conn, peer, data };
                    if events.send(frame).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(Oversized) => break 'conn true,
            }
        }
    };
    let _ = events
        .send(TcpEvent::Closed {
            conn,
            peer,
            oversized,
        })
        .await;
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut queue: mpsc::Receiver<BytesMut>,
    events: mpsc::Sender<TcpEvent>,
    conn: u64,
    peer: SocketAddr,
) {
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = queue.recv().await {
        buf.clear();
        append_frame(&mut buf, &first);
        while buf.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(next) => append_frame(&mut buf, &next),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "ICE-TCP write failed");
                break;
            }
            Err(_) => {
                debug!(%peer, "ICE-TCP write stalled");
                break;
            }
        }
    }
    if queue.is_closed() {
        // The worker closed the connection and everything queued is sent.
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
    } else {
        let _ = events
            .send(TcpEvent::Closed {
                conn,
                peer,
                oversized: false,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            append_frame(&mut out, p);
        }
        out
    }

    fn drain(r: &mut FrameReader) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn frames_split_across_and_within_reads() {
        let a = vec![0xaa; 300];
        let b = b"stun".to_vec();
        let c = vec![0xcc; 1200];
        let stream = framed(&[&a, &b, &[], &c]);
        assert_eq!(&stream[..2], &[0x01, 0x2c]);

        // Every way of cutting the stream in two reads gives the same frames.
        for cut in 0..=stream.len() {
            let mut r = FrameReader::new(MAX_FRAME);
            r.push(&stream[..cut]);
            let mut got = drain(&mut r);
            r.push(&stream[cut..]);
            got.extend(drain(&mut r));
            assert_eq!(
                got,
                vec![a.clone(), b.clone(), vec![], c.clone()],
                "cut at {cut}"
            );
        }

        // One byte a read.
        let mut r = FrameReader::new(MAX_FRAME);
        let mut got = Vec::new();
        for byte in &stream {
            r.push(std::slice::from_ref(byte));
            got.extend(drain(&mut r));
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], c);
    }

    #[test]
    fn oversized_length_is_refused() {
        // Announced all at once, complete: refused.
        let mut r = FrameReader::new(1000);
        r.push(&framed(&[&[1; 1001]]));
        assert_eq!(r.next_frame(), Err(Oversized));

        // Announced by the header only, trickled in: refused once more than
        // the cap is buffered, before the frame completes.
        let mut r = FrameReader::new(1000);
        r.push(&[0xff, 0xff]);
        assert_eq!(r.next_frame(), Ok(None));
        r.push(&[0; 1000]);
        assert_eq!(r.next_frame(), Ok(None));
        r.push(&[0]);
        assert_eq!(r.next_frame(), Err(Oversized));

        // A frame of exactly the cap is fine, after a good one in the same read.
        let mut r = FrameReader::new(1000);
        r.push(&framed(&[b"ok", &[7; 1000]]));
        assert_eq!(r.next_frame(), Ok(Some(b"ok".to_vec())));
        assert_eq!(r.next_frame(), Ok(Some(vec![7; 1000])));
        assert_eq!(r.next_frame(), Ok(None));
    }

    #[test]
    fn frames_carry_a_big_endian_length() {
        assert_eq!(framed(&[b"abc"]), vec![0, 3, b'a', b'b', b'c']);
        // More than the framing can carry appends nothing.
        let mut out = vec![9];
        append_frame(&mut out, &vec![0; 65536]);
        assert_eq!(out, vec![9]);
    }

    #[tokio::test]
    async fn first_frame_is_read_exactly() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // The first frame and the start of the next in one write.
            let mut bytes = framed(&[b"first"]);
            bytes.extend_from_slice(&[0, 4, b'n']);
            s.write_all(&bytes).await.unwrap();
            s
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let _client = client.await.unwrap();
        assert_eq!(read_first_frame(&mut server).await.unwrap(), b"first");
        // What follows stays in the socket for the worker's reader.
        let mut rest = [0u8; 3];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, [0, 4, b'n']);

        let (mut server, _) = {
            let c = tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(&[0x08, 0x01]).await.unwrap();
                s
            });
            let accepted = listener.accept().await.unwrap();
            let _ = c.await.unwrap();
            accepted
        };
        assert_eq!(
            read_first_frame(&mut server).await,
            Err(TcpRefusal::BadFrame)
        );
    }

    fn binding_request(username: &str) -> Vec<u8> {
        use rtc::stun::attributes::ATTR_USERNAME;
        use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
        use rtc::stun::textattrs::Username;
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, username.into())),
        ];
        m.build(&setters).unwrap();
        m.raw
    }

    /// Connects to `listener`, writes `bytes`, and runs `hand_off` on the
    /// accepted side with two fake workers.
    async fn hand_off_of(
        listener: &TcpListener,
        bytes: Vec<u8>,
    ) -> (
        Result<(), TcpRefusal>,
        Vec<mpsc::UnboundedReceiver<Command>>,
    ) {
        let addr = listener.local_addr().unwrap();
        // The client closes after writing: what it wrote is still read.
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
        });
        let (stream, peer) = listener.accept().await.unwrap();
        client.await.unwrap();
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::unbounded_channel()).unzip();
        let timeout = Duration::from_millis(300);
        (hand_off(stream, peer, &txs, timeout).await, rxs)
    }

    #[tokio::test]
    async fn first_request_routes_to_the_worker_its_ufrag_names() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ufrag, _) = ids::ice_credentials(1, &mut rand::rng());
        let request = binding_request(&format!("{ufrag}:client"));
        let (result, mut rxs) = hand_off_of(&listener, framed(&[&request])).await;
        assert_eq!(result, Ok(()));
        assert!(rxs[0].try_recv().is_err());
        match rxs[1].try_recv() {
            Ok(Command::TcpConnection(h)) => {
                assert_eq!(h.ufrag, ufrag);
                assert_eq!(h.first_frame, request);
            }
            _ => panic!("worker 1 got no connection"),
        }

        // A worker that does not exist.
        let (ufrag, _) = ids::ice_credentials(2, &mut rand::rng());
        let request = binding_request(&format!("{ufrag}:client"));
        let (result, _) = hand_off_of(&listener, framed(&[&request])).await;
        assert_eq!(result, Err(TcpRefusal::UnknownUfrag));

        // Not STUN (a TLS ClientHello, say), and STUN without USERNAME.
        let (result, _) = hand_off_of(&listener, framed(&[&[0x16, 3, 1, 0, 0x2a]])).await;
        assert_eq!(result, Err(TcpRefusal::BadFrame));
        let mut no_user = binding_request("x:y");
        no_user.truncate(20);
        no_user[2..4].copy_from_slice(&[0, 0]);
        let (result, _) = hand_off_of(&listener, framed(&[&no_user])).await;
        assert_eq!(result, Err(TcpRefusal::BadFrame));

        // Closed half-way through the frame.
        let (result, _) = hand_off_of(&listener, vec![0, 100, 0, 1]).await;
        assert_eq!(result, Err(TcpRefusal::Closed));

        // Silent: nothing, or half a frame, within the time allowed.
        let addr = listener.local_addr().unwrap();
        for bytes in [vec![], vec![0, 100, 0, 1]] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(&bytes).await.unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            let (tx, _rx) = mpsc::unbounded_channel();
            let result = hand_off(stream, peer, &[tx], Duration::from_millis(100)).await;
            assert_eq!(result, Err(TcpRefusal::Timeout));
        }
    }

    /// A connection to `to` from the loopback address `from`.
    async fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Resolves when the server closed `s` (it never sent anything).
    async fn closed_by_server(mut s: TcpStream) {
        let mut buf = [0u8; 16];
        while let Ok(n) = s.read(&mut buf).await
            && n > 0
        {}
    }

    #[tokio::test]
    async fn idle_connections_never_crowd_out_a_binding_request() {
        use callgate_admission::AdmissionLimits;
        use std::net::Ipv4Addr;
        const WAIT: Duration = Duration::from_secs(20);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = SfuMetrics::new(&prometheus::Registry::new()).unwrap();
        let (worker, mut handed) = mpsc::unbounded_channel();
        let limits = AdmissionLimits {
            max_total: 8,
            max_per_source: 3,
        };
        let acceptor = Acceptor {
            workers: vec![worker].into(),
            metrics: metrics.clone(),
            pending: Admission::new(limits, metrics.tcp_pending()),
            // Never reached here: only shedding makes room.
            first_frame_timeout: Duration::from_secs(3600),
        };
        let (_stop, stop_rx) = oneshot::channel();
        tokio::spawn(acceptor.run(listener, stop_rx));

        // 20 idle connections from one address, then 20 from 20 others.
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let sources = std::iter::repeat_n(Ipv4Addr::new(127, 0, 0, 1), 20)
            .chain((1..=20).map(|i| Ipv4Addr::new(127, 0, 1, i)));
        for from in sources {
            let s = connect_from(from, addr).await;
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                closed_by_server(s).await;
                let _ = closed_tx.send(from);
            });
        }
        // The table holds 8: the other 32 are shed, and closed.
        let mut shed_from_first = 0;
        for _ in 0..32 {
            let from = tokio::time::timeout(WAIT, closed_rx.recv())
                .await
                .expect("an idle connection is shed")
                .unwrap();
            shed_from_first += usize::from(from == Ipv4Addr::new(127, 0, 0, 1));
        }
        // Admitted in accept order: 127.0.0.1 keeps its 3 newest until the
        // others fill the table, whose 15 newcomers then shed its oldest
        // (those 3 first).
        assert_eq!(shed_from_first, 20);
        let refused = |r| metrics.tcp_refused(r).get();
        assert_eq!(refused(TcpRefusal::AddressBusy), 17);
        assert_eq!(refused(TcpRefusal::Busy), 15);
        assert_eq!(metrics.tcp_pending().held.get(), 8);

        // A client from the busiest address still gets through at once.
        let (ufrag, _) = ids::ice_credentials(0, &mut rand::rng());
        let mut client = connect_from(Ipv4Addr::new(127, 0, 0, 1), addr).await;
        let request = binding_request(&format!("{ufrag}:client"));
        client.write_all(&framed(&[&request])).await.unwrap();
        match tokio::time::timeout(WAIT, handed.recv()).await {
            Ok(Some(Command::TcpConnection(h))) => {
                assert_eq!(h.ufrag, ufrag);
                assert_eq!(h.first_frame, request);
                assert_eq!(h.peer, client.local_addr().unwrap());
            }
            _ => panic!("the binding request was not handed to its worker"),
        }
        // It shed one more idle connection, then left the table.
        let _ = tokio::time::timeout(WAIT, closed_rx.recv())
            .await
            .expect("one more idle connection is shed");
        assert_eq!(refused(TcpRefusal::Busy), 16);
        assert_eq!(refused(TcpRefusal::AddressBusy), 17);
        assert_eq!(metrics.tcp_pending().held.get(), 7);
        assert!(closed_rx.try_recv().is_err(), "more were shed than needed");
    }

    fn tcp_metrics() -> TcpMetrics {
        SfuMetrics::new(&prometheus::Registry::new())
            .unwrap()
            .tcp_for_worker(0)
    }

    /// A connected pair: the client side, and the server side as the
    /// acceptor hands it over (a std stream).
    async fn pair() -> (TcpStream, StdTcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, server.into_std().unwrap(), peer)
    }

    #[tokio::test]
    async fn connection_splits_frames_and_closes_on_an_oversized_one() {
        let mut conns = TcpConns::new(tcp_metrics());
        let (mut client, server, peer) = pair().await;
        conns.open(server, peer).unwrap();
        assert_eq!(conns.metrics.open.get(), 1);

        // Two frames and the start of a third in one write, the rest later.
        let mut bytes = framed(&[b"one", b"two", b"three"]);
        let rest = bytes.split_off(bytes.len() - 2);
        client.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            match conns.recv().await.unwrap() {
                TcpEvent::Frame {
                    conn,
                    peer: p,
                    data,
                } => {
                    assert!(conns.is_open(conn, p));
                    assert_eq!(p, peer);
                    got.push(data);
                }
                TcpEvent::Closed { .. } => panic!("closed early"),
            }
        }
        client.write_all(&rest).await.unwrap();
        match conns.recv().await.unwrap() {
            TcpEvent::Frame { data, .. } => got.push(data),
            TcpEvent::Closed { .. } => panic!("closed early"),
        }
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);

        // A length over the cap ends the connection.
        client
            .write_all(&u16::try_from(MAX_FRAME + 1).unwrap().to_be_bytes())
            .await
            .unwrap();
        client.write_all(&vec![0; MAX_FRAME + 1]).await.unwrap();
        match conns.recv().await.unwrap() {
            TcpEvent::Closed {
                conn,
                peer: p,
                oversized,
            } => {
                assert!(oversized);
                assert!(conns.on_closed(conn, p, oversized));
            }
            TcpEvent::Frame { .. } => panic!("an oversized frame was delivered"),
        }
        assert_eq!(conns.metrics.open.get(), 0);
        assert_eq!(conns.metrics.drop_malformed.get(), 1);
        // The client sees the connection end.
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_loses_frames_not_the_loop() {
        let mut conns = TcpConns::new(tcp_metrics());
        let (mut client, server, peer) = pair().await;
        conns.open(server, peer).unwrap();
        assert_eq!(
            conns.send("127.0.0.1:9".parse().unwrap(), BytesMut::from(&b"x"[..])),
            Err(SendError::NoConnection)
        );
        assert_eq!(
            conns.send(peer, BytesMut::zeroed(65536)),
            Err(SendError::TooLarge)
        );

        // Without yielding, the writer cannot run: the queue fills and then
        // `send` refuses at once instead of waiting.
        let packet = BytesMut::from(&[0x5a; 1200][..]);
        let mut queued = 0;
        let full = loop {
            match conns.send(peer, packet.clone()) {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
            assert!(queued <= SEND_QUEUE, "the queue is unbounded");
        };
        assert_eq!(full, SendError::QueueFull);
        assert_eq!(queued, SEND_QUEUE);

        // Closing flushes what was queued, then ends the connection.
        conns.close(peer);
        assert_eq!(conns.metrics.open.get(), 0);
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        let mut frames = FrameReader::new(MAX_FRAME);
        frames.push(&received);
        let mut n = 0;
        while let Some(f) = frames.next_frame().unwrap() {
            assert_eq!(f, packet);
            n += 1;
        }
        assert_eq!(n, SEND_QUEUE);
    }
}
