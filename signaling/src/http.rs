//! The HTTP server: an accept loop on hyper's HTTP/1.1 connection builder
//! that keeps idle and slow clients from using up the process's file
//! descriptors.
//!
//! - A request's headers must arrive within `header_read_timeout`, the
//!   first request's counted from the connection's start and a kept-alive
//!   connection's from the end of its previous response.
//! - Every connection holds a [`Pass`] of the unauthenticated-connection
//!   table while it has not proven itself: a plain HTTP connection for its
//!   whole life, a signaling WebSocket until its `join` is accepted. The
//!   table is capped in total and per source address; a newcomer over a
//!   cap sheds the oldest unproven connection (its own address's first),
//!   so `/healthz` and joins keep working however many idle connections
//!   are open. Joined participants hold no pass and are never shed.
//! - Accept errors (out of file descriptors) pause the loop briefly
//!   instead of spinning or ending it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use callgate_admission::{Admission, AdmissionLimits, Pass, Shed};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics::HttpMetrics;

/// How long the accept loop pauses after an accept error such as EMFILE,
/// for connections to close and free their descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the server holds slow and unproven clients to.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections not yet proven, in all and per source address.
    pub unauthenticated: AdmissionLimits,
}

/// The pass of the connection a request came on, put in the request's
/// extensions: the `/rtc` handler releases it once `join` is accepted.
#[derive(Clone)]
pub(crate) struct ConnectionPass(Arc<Pass>);

impl ConnectionPass {
    /// Resolves when the connection is shed to make room (the table
    /// counted it).
    pub(crate) async fn shed(&self) -> Shed {
        self.0.shed().await
    }

    /// The connection proved itself: it can no longer be shed.
    pub(crate) fn release(&self) {
        self.0.release();
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, lets every connection finish its request in flight (idle
/// ones close at once) and returns when all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let server = Arc::new(Server {
        http,
        router,
        unproven: Admission::new(limits.unauthenticated, metrics.unauthenticated.clone()),
        metrics,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut failing = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    failing = false;
                    // Admitted here, in accept order, so that "oldest"
                    // means what it says.
                    let pass = ConnectionPass(Arc::new(server.unproven.admit(peer.ip())));
                    let stop = stop_rx.clone();
                    connections.spawn(server.clone().connection(stream, peer, pass, stop));
                }
                Err(e) => {
                    server.metrics.accept_errors.inc();
                    // Once per run of failures: EMFILE repeats until
                    // descriptors free up.
                    if !failing {
                        warn!(error = %e, "HTTP accept failed; pausing");
                    }
                    failing = true;
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

struct Server {
    http: hyper::server::conn::http1::Builder,
    router: Router,
    unproven: Admission,
    metrics: HttpMetrics,
}

impl Server {
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        pass: ConnectionPass,
        mut stop: watch::Receiver<bool>,
    ) {
        // Signaling is small messages that must go at once: with Nagle, a
        // WebSocket frame written in two pieces waits for the client's
        // delayed ACK (40 ms on Linux) before its second piece leaves.
        let _ = stream.set_nodelay(true);
        let router = TowerToHyperService::new(self.router.clone());
        let for_requests = pass.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(for_requests.clone());
            router.call(request)
        });
        let conn = self
            .http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        if e.is_timeout() {
                            self.metrics.header_timeouts.inc();
                        }
                        debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    return;
                }
                why = pass.shed() => {
                    // Dropping the connection closes the socket.
                    debug!(%peer, reason = why.as_str(), "HTTP connection shed");
                    return;
                }
                _ = stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
