//! Starts every part of a callgate node and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use callgate_sfu::{Sfu, SfuMetrics};
use callgate_signaling::token::KeyRing;
use callgate_signaling::{AppState, SignalingMetrics};
use tracing::info;

use crate::config::Config;

/// How long a shutdown waits for clients to be told their session ended.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a started node listens.
#[derive(Debug, Clone)]
pub struct Listening {
    pub http: SocketAddr,
    /// One UDP media port per worker.
    pub media: Vec<SocketAddr>,
    pub ice_tcp: SocketAddr,
}

impl std::fmt::Display for Listening {
    /// The one line `serve` prints on stdout when ready, for scripts and tests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let media: Vec<String> = self.media.iter().map(|a| a.to_string()).collect();
        write!(
            f,
            "callgate ready http={} media={} tcp={}",
            self.http,
            media.join(","),
            self.ice_tcp
        )
    }
}

/// Runs the server until `shutdown` completes. `on_ready` learns where it
/// listens once clients can connect.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;

    let registry = prometheus::Registry::new();
    let sfu_metrics = SfuMetrics::new(&registry)?;
    let signaling_metrics = SignalingMetrics::new(&registry)?;
    let sfu = Arc::new(Sfu::start(config.sfu(), &sfu_metrics).context("starting media workers")?);
    let media = sfu.media_addrs();
    let tcp = sfu.tcp_addr();

    let state = Arc::new(AppState {
        sfu: sfu.clone(),
        keys: KeyRing::new(config.keys.iter().map(|(k, s)| (k.as_str(), s.as_str()))),
        metrics: signaling_metrics,
        registry,
        join_timeout: config.signaling.join_timeout,
        observer: Arc::new(callgate_signaling::calls::NoObserver),
        participants: callgate_signaling::calls::Participants::default(),
        connections: Default::default(),
    });
    let addr = SocketAddr::new(config.http.bind, config.http.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding http {addr}"))?;
    let bound = listener.local_addr()?;
    info!(http = %bound, media = ?media, tcp = %tcp, "callgate listening");
    on_ready(&Listening {
        http: bound,
        media,
        ice_tcp: tcp,
    });

    // Sessions end first (every client gets `left`, every peer a DTLS
    // close), then the HTTP server stops taking requests.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stopping = sfu.clone();
    let draining = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: closing every session");
        let _ = tokio::task::spawn_blocking(move || stopping.shutdown()).await;
        // Each connection task now sends `left` and a close frame; give
        // them a bounded time to do it before the process goes.
        if tokio::time::timeout(DRAIN_TIMEOUT, draining.connections.all_closed())
            .await
            .is_err()
        {
            tracing::warn!("signaling connections still open after {DRAIN_TIMEOUT:?}");
        }
        let _ = stop_tx.send(true);
    });
    axum::serve(listener, callgate_signaling::router(state))
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .await
        .context("http server")?;
    info!("stopped");
    Ok(())
}
