//! Several nodes: where a room or a session lives, and carrying a client's
//! signaling or an API request to that node (docs/operations.md, "Running
//! several nodes").
//!
//! A room lives on exactly one node. A client may open its WebSocket on any
//! node: once its token is checked, the node asks [`Placement`] where the
//! room lives and, when it is elsewhere, relays the connection there frame
//! for frame (a proxy, not a redirect: every client, the SDKs' reconnects
//! and resumes included, works unchanged, and only signaling takes the
//! extra hop; media goes straight to the room's node, whose addresses are
//! in its SDP). Requests between nodes carry a [`NodeProof`] so that a
//! node serves them as the room's owner without asking again.

use std::future::Future;
use std::pin::Pin;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use ring::hmac;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::debug;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The header a node sends on requests to another node.
pub const NODE_HEADER: &str = "x-callgate-node";

/// The id of a call whose room the sending node placed on the receiving
/// one (`POST /v1/calls`); heeded only with a valid [`NODE_HEADER`].
pub const PLACED_CALL_HEADER: &str = "x-callgate-call";

/// Where something lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// On this node.
    Here,
    /// On another node, reached at `url` (`http://10.0.0.3:7880`).
    There { node_id: String, url: String },
}

/// The cluster could not answer (Redis unreachable, no node alive).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterUnavailable(pub String);

/// The room placement and session registry of a cluster, implemented by the
/// binary on Redis. A node without a cluster has none.
pub trait Placement: Send + Sync {
    /// The node room `room` lives on, placing it on the least loaded node
    /// that is alive if it lives nowhere yet.
    fn place<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Route, ClusterUnavailable>>;
    /// The node room `room` lives on, if it lives anywhere.
    fn locate_room<'a>(
        &'a self,
        room: &'a str,
    ) -> BoxFuture<'a, Result<Option<Route>, ClusterUnavailable>>;
    /// The node participant `sid` lives on, if it is known.
    fn locate_participant<'a>(
        &'a self,
        sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Route>, ClusterUnavailable>>;
    /// Notes that participant `sid` lives here (best effort, for resumes
    /// that reach another node).
    fn participant_joined(&self, sid: &str);
    fn participant_left(&self, sid: &str);
    /// Every other node that is alive: (id, url).
    fn peers(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, ClusterUnavailable>>;
    /// What this node sends to prove a request comes from a node.
    fn proof(&self) -> NodeProof;
    /// Whether `header` (the [`NODE_HEADER`] value) proves a request comes
    /// from a node of this cluster.
    fn verify(&self, header: &str, now_s: u64) -> bool;
}

/// `x-callgate-node: <node id> <unix seconds> <hex HMAC-SHA256>`: the node
/// id and time signed with the cluster secret, valid for a minute either
/// way (clocks of nodes are kept by NTP).
#[derive(Debug, Clone)]
pub struct NodeProof(pub String);

/// How far a proof's time may be from ours.
const PROOF_SKEW_S: u64 = 60;

fn proof_tag(key: &hmac::Key, node_id: &str, at_s: u64) -> String {
    let tag = hmac::sign(key, format!("{node_id} {at_s}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl NodeProof {
    pub fn new(secret: &[u8], node_id: &str, now_s: u64) -> NodeProof {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        NodeProof(format!(
            "{node_id} {now_s} {}",
            proof_tag(&key, node_id, now_s)
        ))
    }

    /// Whether `header` is a proof made with `secret` within the skew of
    /// `now_s`.
    pub fn verify(secret: &[u8], header: &str, now_s: u64) -> bool {
        let mut fields = header.split(' ');
        let (Some(node_id), Some(at), Some(tag), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let Ok(at_s) = at.parse::<u64>() else {
            return false;
        };
        if at_s.abs_diff(now_s) > PROOF_SKEW_S || tag.len() != 64 {
            return false;
        }
        let Some(tag) = (0..32)
            .map(|i| u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::verify(&key, format!("{node_id} {at_s}").as_bytes(), &tag).is_ok()
    }
}

/// The WebSocket URL of a node's signaling (`ws://…/rtc`) from its HTTP URL.
pub fn signaling_url(node_url: &str) -> String {
    let base = node_url.trim_end_matches('/');
    match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}/rtc"),
        Some((_, rest)) => format!("ws://{rest}/rtc"),
        None => format!("ws://{base}/rtc"),
    }
}

/// Why relaying to another node did not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("connecting to {url}: {message}")]
    Connect { url: String, message: String },
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket to a node's signaling at `url`, with this node's
/// proof and the frame limits of a client's connection.
async fn connect_upstream(url: &str, proof: &NodeProof) -> Result<Upstream, RelayError> {
    let failed = |e: &dyn std::fmt::Display| RelayError::Connect {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let mut request = url.into_client_request().map_err(|e| failed(&e))?;
    if let Ok(value) = proof.0.parse() {
        request.headers_mut().insert(NODE_HEADER, value);
    }
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(crate::protocol::MAX_FRAME_BYTES))
        .max_frame_size(Some(crate::protocol::MAX_FRAME_BYTES));
    let (upstream, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| failed(&e))?;
    Ok(upstream)
}

/// Relays `client` to the signaling of the node at `node_url`: `first` (the
/// client's join or resume) goes first, then every frame both ways until
/// either side closes; a close frame is passed on with its code and
/// reason. Returns once both directions have ended.
pub async fn relay(
    mut client: WebSocket,
    node_url: &str,
    proof: &NodeProof,
    first: String,
) -> Result<(), (WebSocket, RelayError)> {
    let mut upstream = match connect_upstream(&signaling_url(node_url), proof).await {
        Ok(upstream) => upstream,
        Err(e) => return Err((client, e)),
    };
    if upstream
        .send(tungstenite::Message::text(first))
        .await
        .is_err()
    {
        let _ = client.send(Message::Close(None)).await;
        return Ok(());
    }
    loop {
        tokio::select! {
            from_client = client.recv() => match from_client {
                Some(Ok(message)) => {
                    let closing = matches!(message, Message::Close(_));
                    if upstream.send(to_upstream(message)).await.is_err() || closing {
                        break;
                    }
                }
                // Gone without a close frame: so is the relayed connection,
                // and the session waits for a resume as it would for a
                // direct one.
                Some(Err(_)) | None => break,
            },
            from_node = upstream.next() => match from_node {
                Some(Ok(message)) => {
                    let closing = matches!(message, tungstenite::Message::Close(_));
                    if let Some(message) = to_client(message)
                        && (client.send(message).await.is_err() || closing)
                    {
                        break;
                    }
                }
                Some(Err(e)) => {
                    debug!(error = %e, "relayed signaling broke on the room's node");
                    node_lost(client).await;
                    return Ok(());
                }
                None => {
                    node_lost(client).await;
                    return Ok(());
                }
            },
        }
    }
    // Dropping both ends closes their TCP connections.
    Ok(())
}

/// The room's node went without a close frame (it died, or the network
/// to it broke): its sessions are gone with it, so the client is told to
/// join again, which places the room anew once the node's entry expires.
async fn node_lost(mut client: WebSocket) {
    let _ = client
        .send(Message::Close(Some(CloseFrame {
            code: crate::close_codes::NODE_LOST,
            reason: Utf8Bytes::from_static("node_lost"),
        })))
        .await;
}

fn to_upstream(message: Message) -> tungstenite::Message {
    match message {
        Message::Text(t) => tungstenite::Message::text(t.as_str()),
        Message::Binary(b) => tungstenite::Message::binary(b),
        Message::Ping(p) => tungstenite::Message::Ping(p),
        Message::Pong(p) => tungstenite::Message::Pong(p),
        Message::Close(frame) => {
            tungstenite::Message::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }))
        }
    }
}

fn to_client(message: tungstenite::Message) -> Option<Message> {
    Some(match message {
        tungstenite::Message::Text(t) => Message::Text(Utf8Bytes::from(t.as_str())),
        tungstenite::Message::Binary(b) => Message::Binary(b),
        // Pings are answered hop by hop, by each end's WebSocket.
        tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => return None,
        tungstenite::Message::Close(frame) => Message::Close(frame.map(|f| CloseFrame {
            code: f.code.into(),
            reason: Utf8Bytes::from(f.reason.as_str()),
        })),
        tungstenite::Message::Frame(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_with_its_secret_within_a_minute_only() {
        let secret = b"cluster secret of sixteen+";
        let proof = NodeProof::new(secret, "n1", 1_000_000);
        assert!(NodeProof::verify(secret, &proof.0, 1_000_000));
        assert!(NodeProof::verify(secret, &proof.0, 1_000_060));
        assert!(NodeProof::verify(secret, &proof.0, 999_940));
        assert!(!NodeProof::verify(secret, &proof.0, 1_000_061));
        assert!(!NodeProof::verify(
            b"another secret, long",
            &proof.0,
            1_000_000
        ));
        let forged = proof.0.replace("n1", "n2");
        assert!(!NodeProof::verify(secret, &forged, 1_000_000));
        for garbage in ["", "n1", "n1 1000000", "n1 x y", "n1 1000000 zz", "a b c d"] {
            assert!(
                !NodeProof::verify(secret, garbage, 1_000_000),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn signaling_urls_follow_the_scheme() {
        assert_eq!(
            signaling_url("http://10.0.0.2:7880"),
            "ws://10.0.0.2:7880/rtc"
        );
        assert_eq!(
            signaling_url("https://sfu.example/"),
            "wss://sfu.example/rtc"
        );
        assert_eq!(signaling_url("127.0.0.2:7880"), "ws://127.0.0.2:7880/rtc");
    }
}
