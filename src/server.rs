//! Starts every part of a callgate node and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use callgate_sfu::{Sfu, SfuMetrics};
use callgate_signaling::protocol::IceServer;
use callgate_signaling::token::KeyRing;
use callgate_signaling::{AppState, HttpMetrics, IceServerProvider, SignalingMetrics};
use callgate_turn::{TurnAddrs, TurnMetrics, TurnServer};
use tracing::info;

use callgate_metering::{Clock, EndReason, Meter};

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
    /// The embedded TURN relay's listeners, when it runs.
    pub turn_udp: Option<SocketAddr>,
    pub turn_tcp: Option<SocketAddr>,
    pub turn_tls: Option<SocketAddr>,
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
        )?;
        write_turn_addrs(f, self.turn_udp, self.turn_tcp, self.turn_tls)
    }
}

fn write_turn_addrs(
    f: &mut std::fmt::Formatter<'_>,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    tls: Option<SocketAddr>,
) -> std::fmt::Result {
    for (name, addr) in [("turn_udp", udp), ("turn_tcp", tcp), ("turn_tls", tls)] {
        if let Some(a) = addr {
            write!(f, " {name}={a}")?;
        }
    }
    Ok(())
}

/// The embedded relay's URLs, with REST credentials minted per join.
pub struct TurnIceServers {
    secret: String,
    ttl: std::time::Duration,
    urls: Vec<String>,
}

impl TurnIceServers {
    /// `turn:` URLs for the UDP and TCP listeners and a `turns:` one for
    /// TLS, at `host` (the configured domain or advertised address).
    pub fn new(secret: String, ttl: std::time::Duration, host: &str, addrs: TurnAddrs) -> Self {
        let mut urls = Vec::new();
        if let Some(a) = addrs.udp {
            urls.push(format!("turn:{host}:{}?transport=udp", a.port()));
        }
        if let Some(a) = addrs.tcp {
            urls.push(format!("turn:{host}:{}?transport=tcp", a.port()));
        }
        if let Some(a) = addrs.tls {
            urls.push(format!("turns:{host}:{}?transport=tcp", a.port()));
        }
        TurnIceServers { secret, ttl, urls }
    }
}

impl IceServerProvider for TurnIceServers {
    fn ice_servers(&self, identity: &str) -> Vec<IceServer> {
        let (username, credential) = callgate_turn::rest_credential(
            self.secret.as_bytes(),
            identity,
            callgate_signaling::token::unix_now(),
            self.ttl,
        );
        vec![IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }]
    }
}

/// Starts the embedded TURN relay when `[turn]` enables it; the SFU's
/// media addresses are always reachable through it.
fn start_turn(
    config: &Config,
    registry: &prometheus::Registry,
    media: &[SocketAddr],
) -> anyhow::Result<Option<(TurnServer, Arc<dyn IceServerProvider>)>> {
    if !config.turn.is_enabled() {
        return Ok(None);
    }
    let relay = config
        .turn
        .relay(media.to_vec(), &config.limits, crate::open_files::current())?;
    let server =
        TurnServer::start(relay, TurnMetrics::new(registry)?).context("starting the TURN relay")?;
    let ice: Arc<dyn IceServerProvider> = Arc::new(TurnIceServers::new(
        config.turn.auth_secret.clone().unwrap_or_default(),
        config.turn.credential_ttl,
        &config.turn.url_host(),
        server.addrs(),
    ));
    Ok(Some((server, ice)))
}

/// `callgate turn`: the relay alone (a relay-only host), with `/metrics`
/// and `/healthz` on the HTTP port. Prints
/// `callgate turn ready http=… turn_udp=… turn_tcp=… turn_tls=…`.
pub async fn run_turn(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&str),
) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let open_files = crate::open_files::current();
    let http_limits = config.limits.http(open_files);
    let http_metrics = HttpMetrics::new(&registry)?;
    let relay = config.turn.relay(Vec::new(), &config.limits, open_files)?;
    let mut server = TurnServer::start(relay, TurnMetrics::new(&registry)?)
        .context("starting the TURN relay")?;
    let addr = SocketAddr::new(config.http.bind, config.http.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding http {addr}"))?;
    let http = listener.local_addr()?;
    let addrs = server.addrs();
    struct Line(SocketAddr, TurnAddrs);
    impl std::fmt::Display for Line {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "callgate turn ready http={}", self.0)?;
            write_turn_addrs(f, self.1.udp, self.1.tcp, self.1.tls)
        }
    }
    on_ready(&Line(http, addrs).to_string());
    let router = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let families = registry.gather();
                async move {
                    prometheus::TextEncoder::new()
                        .encode_to_string(&families)
                        .unwrap_or_else(|e| format!("# {e}"))
                }
            }),
        );
    callgate_signaling::http::serve(listener, router, http_limits, http_metrics, shutdown).await;
    info!("shutting down the TURN relay");
    tokio::task::spawn_blocking(move || server.shutdown()).await?;
    Ok(())
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
    let http_metrics = HttpMetrics::new(&registry)?;
    let open_files = crate::open_files::current();
    let http_limits = config.limits.http(open_files);
    let sfu_config = config.sfu(open_files);
    info!(
        open_files,
        http_unauthenticated = http_limits.unauthenticated.max_total,
        http_unauthenticated_per_address = http_limits.unauthenticated.max_per_source,
        ice_tcp_pending = sfu_config.ice_tcp_pending.max_total,
        ice_tcp_pending_per_address = sfu_config.ice_tcp_pending.max_per_source,
        turn_unauthenticated = config.limits.turn_unauthenticated(open_files).max_total,
        "connection limits"
    );
    let sfu = Arc::new(Sfu::start(sfu_config, &sfu_metrics).context("starting media workers")?);
    let media = sfu.media_addrs();
    let tcp = sfu.tcp_addr();
    let (turn, ice_servers) = match start_turn(&config, &registry, &media)? {
        Some((server, ice)) => (Some(server), Some(ice)),
        None => (None, None),
    };
    let turn_addrs = turn.as_ref().map(|t| t.addrs()).unwrap_or_default();

    let participants = callgate_signaling::calls::Participants::default();
    let meter = match config.metering.enabled {
        true => Some(
            Meter::open(config.meter()?, Clock::system())
                .await
                .context("opening the ledger")?,
        ),
        false => None,
    };
    if let Some(meter) = &meter {
        meter.register_metrics(&registry)?;
        // Calls this node left ringing or on when it stopped end as failed
        // (their holds released) before it takes new ones.
        let failed = meter
            .fail_unended_calls()
            .await
            .context("closing the calls of the last run")?;
        if failed > 0 {
            info!(
                calls = failed,
                "calls left unended by the last run ended as failed"
            );
        }
    }
    let addr = SocketAddr::new(config.http.bind, config.http.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding http {addr}"))?;
    let bound = listener.local_addr()?;
    let cluster = match config.cluster.is_enabled() {
        true => {
            let url = config.cluster_url(bound.port());
            let node =
                crate::cluster::ClusterNode::join(&config.cluster, url, meter.clone(), &registry)
                    .await?;
            let refreshing = tokio::spawn(node.clone().keep_fresh(
                sfu.clone(),
                sfu_metrics.clone(),
                config.cluster.node_ttl / 3,
            ));
            Some((node, refreshing))
        }
        false => None,
    };
    let keys = KeyRing::new(config.keys.iter().map(|(k, s)| (k.as_str(), s.as_str())));
    let devices = callgate_signaling::devices::Devices::default();
    let plans: std::collections::HashMap<_, _> =
        config.metering.plans.clone().into_iter().collect();
    // The call desk signs call tokens with the first configured API key.
    let desk = match &meter {
        Some(meter) => Some(crate::calling::CallDesk::start(
            meter.clone(),
            crate::calling::CallMetrics::new(&registry)?,
            devices.clone(),
            keys.clone(),
            config.keys.keys().next().cloned(),
            plans.clone(),
            cluster
                .as_ref()
                .map(|(node, _)| crate::calling::Bus::new(node.registry().clone())),
        )),
        None => None,
    };
    if let (Some((node, _)), Some(desk)) = (&cluster, &desk) {
        node.set_desk(desk.clone());
    }
    let placement = cluster
        .as_ref()
        .map(|(c, _)| c.clone() as Arc<dyn callgate_signaling::cluster::Placement>);
    let observer: Arc<dyn callgate_signaling::calls::CallObserver> = match (&meter, &desk) {
        (Some(meter), Some(desk)) => Arc::new(callgate_signaling::calls::Observers(vec![
            Arc::new(crate::billing::start(
                meter.clone(),
                sfu.clone(),
                participants.clone(),
                plans,
            )),
            Arc::new(desk.clone()),
        ])),
        _ => Arc::new(callgate_signaling::calls::NoObserver),
    };

    let state = Arc::new(AppState {
        sfu: sfu.clone(),
        keys: keys.clone(),
        metrics: signaling_metrics,
        registry,
        join_timeout: config.signaling.join_timeout,
        ice_servers,
        observer,
        participants,
        connections: Default::default(),
        reconnect_grace: config.room.reconnect_grace,
        resumes: Default::default(),
        devices,
        roles: config.roles(),
        calls: desk
            .clone()
            .map(|d| Arc::new(d) as Arc<dyn callgate_signaling::ringing::CallControl>),
        cluster: placement.clone(),
    });
    info!(http = %bound, media = ?media, tcp = %tcp, "callgate listening");
    on_ready(&Listening {
        http: bound,
        media,
        ice_tcp: tcp,
        turn_udp: turn_addrs.udp,
        turn_tcp: turn_addrs.tcp,
        turn_tls: turn_addrs.tls,
    });

    // Sessions end first (every client gets `left`, every peer a DTLS
    // close), then the HTTP server stops taking requests.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stopping = sfu.clone();
    let drain_metrics = sfu_metrics.clone();
    let drain_timeout = config.cluster.drain_timeout;
    let draining = state.clone();
    let settling = meter.clone();
    tokio::spawn(async move {
        shutdown.await;
        let mut reason = callgate_sfu::LeaveReason::ServerShutdown;
        if let Some((cluster, refreshing)) = cluster {
            // A cluster node drains first: no new rooms here, the running
            // ones go on until they end or the drain times out.
            cluster.start_draining(&stopping, &drain_metrics).await;
            info!(timeout = ?drain_timeout, "draining: waiting for the rooms here to empty");
            if !cluster.drained(&stopping, drain_timeout).await {
                tracing::warn!("drain timed out: the sessions still here end as node_drained");
                reason = callgate_sfu::LeaveReason::NodeDrained;
            }
            refreshing.abort();
            cluster.leave().await;
        }
        info!("shutting down: closing every session");
        let _ = tokio::task::spawn_blocking(move || stopping.shutdown_with(reason)).await;
        // Paid calls still open end here, charged up to now.
        if let Some(meter) = settling {
            for result in meter.end_all(EndReason::Shutdown).await {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "a billed session did not settle at shutdown");
                }
            }
            meter.shutdown().await;
        }
        if let Some(mut relay) = turn {
            let _ = tokio::task::spawn_blocking(move || relay.shutdown()).await;
        }
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
    let mut app = callgate_signaling::router(state).merge(crate::openapi::routes());
    if config.dev
        && let Some(meter) = &meter
    {
        app = app.merge(crate::dev_api::routes(meter.clone()));
    }
    app = match (meter, desk) {
        (Some(meter), Some(desk)) => app
            .merge(crate::calling::routes(
                keys.clone(),
                meter.clone(),
                desk,
                placement,
            ))
            .merge(crate::money_api::routes(keys, meter)),
        _ => app.merge(crate::calling::unavailable_routes()),
    };
    callgate_signaling::http::serve(listener, app, http_limits, http_metrics, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    })
    .await;
    info!("stopped");
    Ok(())
}
