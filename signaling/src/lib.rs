//! callgate's control plane: the HTTP server with WebSocket signaling, the
//! server API, health, metrics and the demo page.

pub mod api;
pub mod calls;
pub mod cluster;
pub mod cluster_api;
mod connection;
pub mod data;
pub mod devices;
pub mod drain;
pub mod http;
mod metrics;
pub mod moderation;
mod presence_connection;
pub mod protocol;
pub mod resume;
pub mod ringing;
pub mod token;

pub use connection::close as close_codes;
pub use metrics::{HttpMetrics, SignalingMetrics};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use callgate_sfu::Sfu;

use calls::{CallObserver, Participants};
use protocol::MAX_FRAME_BYTES;
use token::KeyRing;

/// Hands each joining participant the ICE servers (TURN URLs with fresh
/// credentials) for its `joined` message. Implemented by the binary, which
/// owns the TURN relay, so signaling depends on no relay crate.
pub trait IceServerProvider: Send + Sync {
    fn ice_servers(&self, identity: &str) -> Vec<protocol::IceServer>;
}

/// What every request handler shares.
pub struct AppState {
    pub sfu: Arc<Sfu>,
    pub keys: KeyRing,
    pub metrics: SignalingMetrics,
    pub registry: prometheus::Registry,
    /// How long a new WebSocket may take to send `join`.
    pub join_timeout: Duration,
    /// ICE servers for `joined`; `None` when no TURN relay is configured.
    pub ice_servers: Option<Arc<dyn IceServerProvider>>,
    /// Who watches calls (metering); `NoObserver` when nobody does.
    pub observer: Arc<dyn CallObserver>,
    /// Open signaling connections, for the observer to message.
    pub participants: Participants,
    /// Open signaling connections, counted for a clean shutdown.
    pub connections: drain::Connections,
    /// How long a participant whose connection is lost is kept (told to
    /// clients in `joined`; the media plane enforces it).
    pub reconnect_grace: Duration,
    pub resumes: resume::Resumes,
    /// Every identity's open connections, for rings and presence.
    pub devices: devices::Devices,
    /// The call desk; `None` on a node without calls (no metering), where
    /// call inputs are refused with `calls_unavailable`.
    pub calls: Option<Arc<dyn ringing::CallControl>>,
    /// The roles a token may name, with what each grants.
    pub roles: std::collections::HashMap<String, token::RoleGrants>,
    /// Where rooms live when several nodes share the work; `None` on a
    /// node of its own.
    pub cluster: Option<Arc<dyn cluster::Placement>>,
}

impl AppState {
    /// Whether a request carries a valid proof that another node of this
    /// cluster sent it (and so is to be served here, without asking where).
    pub fn from_node(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        headers
            .get(cluster::NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| cluster.verify(v, token::unix_now()))
    }
}

const INDEX_HTML: &str = include_str!("../../web/index.html");
const CLIENT_JS: &str = include_str!("../../clients/js/callgate.js");

async fn rtc(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    pass: Option<Extension<http::ConnectionPass>>,
) -> Response {
    // The codec refuses a larger frame from its header, before reading it;
    // the connection turns that into a 1009 close.
    let pass = pass.map(|Extension(p)| p);
    let from_node = state.from_node(&headers);
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| connection::serve(socket, state, pass, from_node))
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let families = state.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn client_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CLIENT_JS,
    )
}

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/callgate.js", get(client_js))
        .route("/rtc", get(rtc))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api::routes(state.clone()))
        .with_state(state)
}
