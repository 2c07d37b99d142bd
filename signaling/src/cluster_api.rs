//! The server API in a cluster: a request about one room is served by the
//! node the room lives on (forwarded there by whichever node it reached),
//! and the room list is every node's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use callgate_sfu::RoomInfo;
use tracing::warn;

use crate::AppState;
use crate::api::ApiError;
use crate::cluster::{NODE_HEADER, PLACED_CALL_HEADER, Placement, Route};

/// Largest request body forwarded to another node (room metadata is at
/// most 4 KiB).
const MAX_FORWARDED_BODY: usize = 64 * 1024;

/// How long a node waits for another node's answer.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn unavailable(message: impl Into<String>) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        message,
    )
    .into_response()
}

/// The room a `/v1/rooms/{room}…` path names, decoded.
fn room_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/rooms/")?;
    let encoded = rest.split('/').next().filter(|r| !r.is_empty())?;
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(|r| r.into_owned())
}

/// Middleware on the room routes: serves a request here when its room
/// lives here, nowhere yet, or it came from another node; forwards it to
/// the room's node otherwise. `POST /v1/rooms` places the new room first.
pub(crate) async fn to_room_node(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    if state.from_node(request.headers()) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    if path == "/v1/rooms" && request.method() == Method::POST {
        return create_on_its_node(cluster.as_ref(), request, next).await;
    }
    let Some(room) = room_of_path(&path) else {
        return next.run(request).await;
    };
    match cluster.locate_room(&room).await {
        Ok(Some(Route::There { url, .. })) => {
            let (parts, body) = request.into_parts();
            match read_body(body).await {
                Ok(body) => forward(cluster.as_ref(), &url, &parts, body).await,
                Err(refused) => refused,
            }
        }
        Ok(_) => next.run(request).await,
        Err(e) => unavailable(e.to_string()),
    }
}

/// `POST /v1/rooms`: the room is placed (on the least loaded node) and made
/// there.
async fn create_on_its_node(cluster: &dyn Placement, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    // A body the handler will refuse is refused here, by the handler.
    let name = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .filter(|n| !n.is_empty());
    let route = match &name {
        Some(name) => match cluster.place(name).await {
            Ok(route) => route,
            Err(e) => return unavailable(e.to_string()),
        },
        None => Route::Here,
    };
    match route {
        Route::Here => next.run(Request::from_parts(parts, Body::from(body))).await,
        Route::There { url, .. } => forward(cluster, &url, &parts, body).await,
    }
}

/// A request's body, up to what is forwarded; the refusal otherwise.
async fn read_body(body: Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "malformed", "body too big")
                .into_response()
        })
}

/// Sends the request to the node at `node_url` with this node's proof, and
/// its answer back as it came.
async fn forward(
    cluster: &dyn Placement,
    node_url: &str,
    parts: &axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Response {
    let uri = &parts.uri;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    forward_request(
        cluster,
        node_url,
        parts.method.clone(),
        path,
        &parts.headers,
        body,
    )
    .await
}

/// Sends `method path` with `body` to the node at `node_url` with this
/// node's proof (and the client's authorization and content type, and a
/// call id the sender placed), and its answer back as it came.
pub async fn forward_request(
    cluster: &dyn Placement,
    node_url: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let url = format!("{}{path}", node_url.trim_end_matches('/'));
    let mut outgoing = reqwest::Client::new()
        .request(method, &url)
        .timeout(FORWARD_TIMEOUT)
        .header(NODE_HEADER, cluster.proof().0)
        .body(body);
    for name in [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::HeaderName::from_static(PLACED_CALL_HEADER),
    ] {
        if let Some(value) = headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            warn!(error = %e, node = %node_url, "the room's node did not answer");
            return unavailable(format!("the room's node did not answer: {e}"));
        }
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = match answer.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => return unavailable(format!("the room's node's answer broke off: {e}")),
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// The rooms of every other node (this node's own are the caller's), asked
/// with the client's own authorization: `Err` when a node did not answer,
/// so that a partial list is never passed off as the whole.
pub(crate) async fn rooms_of_peers(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Vec<RoomInfo>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(Vec::new());
    };
    let peers = cluster.peers().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            e.to_string(),
        )
    })?;
    let proof = cluster.proof();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .cloned()
        .unwrap_or(HeaderValue::from_static(""));
    let asks = peers.into_iter().map(|(node_id, url)| {
        let (proof, authorization) = (proof.clone(), authorization.clone());
        async move {
            let answer = reqwest::Client::new()
                .get(format!("{}/v1/rooms", url.trim_end_matches('/')))
                .timeout(FORWARD_TIMEOUT)
                .header(NODE_HEADER, proof.0)
                .header(header::AUTHORIZATION, authorization)
                .send()
                .await
                .and_then(|a| a.error_for_status());
            #[derive(serde::Deserialize)]
            struct Rooms {
                rooms: Vec<RoomInfo>,
            }
            match answer {
                Ok(a) => a
                    .json::<Rooms>()
                    .await
                    .map(|r| r.rooms)
                    .map_err(|e| format!("{node_id}: {e}")),
                Err(e) => Err(format!("{node_id}: {e}")),
            }
        }
    });
    let mut rooms = Vec::new();
    for answer in futures_util::future::join_all(asks).await {
        rooms.extend(answer.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("a node did not list its rooms: {e}"),
            )
        })?);
    }
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_of_a_path_is_decoded() {
        assert_eq!(room_of_path("/v1/rooms/abc").as_deref(), Some("abc"));
        assert_eq!(
            room_of_path("/v1/rooms/a%20b/participants/x").as_deref(),
            Some("a b")
        );
        assert_eq!(room_of_path("/v1/rooms/"), None);
        assert_eq!(room_of_path("/v1/rooms"), None);
        assert_eq!(room_of_path("/v1/wallets/u"), None);
        assert_eq!(room_of_path("/v1/rooms/%ff"), None);
    }
}
