//! TURN over TCP and TLS-over-TCP (RFC 8656 §3.1): tokio tasks that split
//! the byte stream into STUN messages and ChannelData frames for the relay
//! thread, and write back what it answers.
//!
//! A connection has `unauthenticated_timeout` from its accept (TLS
//! handshake included) until a request on it passes authentication, the
//! relay thread says so; whatever it sends meanwhile, it is then closed.
//! Until then it also holds a place in the table of unauthenticated
//! connections ([`Admission`]), where a newcomer over a cap sheds the
//! oldest. An authenticated connection is closed only after `idle` without
//! a byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info_span, warn};

use callgate_admission::{Admission, Pass};

use crate::metrics::TurnMetrics;
use crate::relay::{ControlTx, StreamEvent};
use crate::{TurnConfig, TurnError};

const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// A connection with no allocation yet must send something this often.
const FIRST_FRAME: Duration = Duration::from_secs(30);
/// Frames queued to a slow reader before new ones are dropped.
const QUEUE: usize = 512;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
pub(crate) struct Limits {
    connections: Arc<Semaphore>,
    idle: Duration,
    unauthenticated: Duration,
    /// Connections of both listeners without an authenticated request yet.
    unproven: Admission,
}

impl Limits {
    pub(crate) fn new(cfg: &TurnConfig, metrics: &TurnMetrics) -> Limits {
        Limits {
            connections: Arc::new(Semaphore::new(cfg.max_allocations.saturating_add(256))),
            // An allocation is refreshed within its lifetime; twice that
            // without a byte means the client is gone.
            idle: (cfg.max_lifetime * 2).max(FIRST_FRAME),
            unauthenticated: cfg.unauthenticated_timeout,
            unproven: Admission::new(cfg.unauthenticated, metrics.unauthenticated.clone()),
        }
    }
}

pub(crate) fn bind(
    addr: SocketAddr,
    what: &'static str,
) -> Result<std::net::TcpListener, TurnError> {
    let bind = || -> std::io::Result<std::net::TcpListener> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        Ok(s.into())
    };
    bind().map_err(|source| TurnError::Bind { what, addr, source })
}

pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    control: ControlTx,
    metrics: TurnMetrics,
    limits: Limits,
) {
    let transport = if tls.is_some() { "tls" } else { "tcp" };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, transport, "TURN listener unusable");
            return;
        }
    };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "accepting a TURN connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
            metrics.dropped("connection_limit", 1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Admitted here, in accept order, so that "oldest" means what it says.
        let pass = limits.unproven.admit(remote.ip());
        let control = control.clone();
        let metrics = metrics.clone();
        let tls = tls.clone();
        let deadlines = Deadlines {
            idle: limits.idle,
            unauthenticated: Instant::now() + limits.unauthenticated,
        };
        let span = info_span!("connection", %remote, transport);
        tokio::spawn(
            async move {
                let _permit = permit;
                let gauge = metrics.stream_connections.with_label_values(&[transport]);
                gauge.inc();
                let ended = match tls {
                    None => serve(stream, remote, control, &metrics, deadlines, pass).await,
                    Some(acceptor) => match tls_handshake(acceptor, stream, deadlines, &pass).await
                    {
                        Ok(s) => serve(s, remote, control, &metrics, deadlines, pass).await,
                        Err(ended) => ended,
                    },
                };
                if ended == Ended::Unauthenticated {
                    debug!("not authenticated in time; closed");
                    metrics
                        .unauthenticated_closed
                        .with_label_values(&[transport])
                        .inc();
                }
                gauge.dec();
            }
            .instrument(span),
        );
    }
}

/// The server side of a TLS handshake, which must end within
/// `TLS_HANDSHAKE` and before the unauthenticated deadline, unless the
/// connection is shed first.
async fn tls_handshake(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    deadlines: Deadlines,
    pass: &Pass,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Ended> {
    let by = (Instant::now() + TLS_HANDSHAKE).min(deadlines.unauthenticated);
    tokio::select! {
        accepted = tokio::time::timeout_at(by, acceptor.accept(stream)) => match accepted {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                Err(Ended::Other)
            }
            Err(_) if by == deadlines.unauthenticated => Err(Ended::Unauthenticated),
            Err(_) => {
                debug!("TLS handshake timed out");
                Err(Ended::Other)
            }
        },
        why = pass.shed() => {
            debug!(reason = why.as_str(), "shed to make room during the TLS handshake");
            Err(Ended::Other)
        }
    }
}

/// Length of the first frame of `buf` when it is complete; `Err` when the
/// stream is not TURN.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = match buf[0] >> 6 {
        // ChannelData, padded to 4 bytes over streams (RFC 8656 §12.5).
        1 => 4 + ((len + 3) & !3),
        0 => {
            if !len.is_multiple_of(4) {
                return Err(());
            }
            if buf.len() >= 8 && buf[4..8] != rtc::stun::message::MAGIC_COOKIE.to_be_bytes() {
                return Err(());
            }
            20 + len
        }
        _ => return Err(()),
    };
    Ok((buf.len() >= total).then_some(total))
}

/// How long a connection may last without a byte or without credentials.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// Most time between two reads once authenticated.
    idle: Duration,
    /// When the connection is closed unless a request on it authenticated.
    unauthenticated: Instant,
}

/// How a connection ended, as far as the metrics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// No request on it authenticated before its deadline.
    Unauthenticated,
    Other,
}

async fn serve<S>(
    stream: S,
    remote: SocketAddr,
    control: ControlTx,
    metrics: &TurnMetrics,
    deadlines: Deadlines,
    pass: Pass,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let (authenticated_tx, mut authenticated_rx) = oneshot::channel();
    let open = StreamEvent::Open {
        id,
        remote,
        tx,
        authenticated: authenticated_tx,
    };
    if !control.stream(open).await {
        return Ended::Other;
    }
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut first = true;
    let mut authenticated = false;
    // Whether the relay may still say the connection authenticated.
    let mut listening = true;
    let unauthenticated = tokio::time::sleep_until(deadlines.unauthenticated);
    tokio::pin!(unauthenticated);
    let mut ended = Ended::Other;
    'read: loop {
        loop {
            match frame_len(&buf) {
                Ok(Some(n)) => {
                    let rest = buf.split_off(n);
                    let frame = std::mem::replace(&mut buf, rest);
                    first = false;
                    if !control.stream(StreamEvent::Frame { id, frame }).await {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    debug!("not a TURN stream; closing");
                    metrics.dropped("malformed", 1);
                    break 'read;
                }
            }
        }
        let wait = if first { FIRST_FRAME } else { deadlines.idle };
        buf.reserve(4096);
        tokio::select! {
            read = tokio::time::timeout(wait, rd.read_buf(&mut buf)) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => {
                    debug!("idle; closing");
                    break;
                }
            },
            told = &mut authenticated_rx, if listening => {
                listening = false;
                authenticated = told.is_ok();
                if authenticated {
                    pass.release();
                }
            }
            () = &mut unauthenticated, if !authenticated => {
                ended = Ended::Unauthenticated;
                break;
            }
            why = pass.shed(), if !authenticated => {
                debug!(reason = why.as_str(), "shed to make room; closing");
                break;
            }
        }
    }
    control.stream(StreamEvent::Closed { id }).await;
    // The relay drops its sender on StreamClosed, which ends the writer.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(frame_len(&[0x40, 0, 0]), Ok(None));
        assert_eq!(
            frame_len(&[0x40, 0x01, 0, 5, 1, 2, 3, 4, 5, 0, 0]),
            Ok(None)
        );
        assert_eq!(
            frame_len(&[0x40, 0x01, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]),
            Ok(Some(12))
        );
        let mut stun = vec![0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        stun.extend_from_slice(&[0; 12]);
        assert_eq!(frame_len(&stun), Ok(Some(20)));
        stun[7] = 0;
        assert_eq!(frame_len(&stun), Err(()));
        // A TLS ClientHello sent to the plain TCP port.
        assert_eq!(frame_len(&[0x16, 3, 1, 2, 0, 1, 0, 1]), Err(()));
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(()));
    }
}
