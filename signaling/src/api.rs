//! The server API under `/v1/`, for the app's backend and operators.
//! Every request carries `Authorization: Bearer <token>` with the admin grant.

use std::sync::Arc;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use callgate_sfu::{LeaveReason, RoomOptions, SfuError};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::moderation::{MuteChange, ParticipantChange};
use crate::token::{KeyRing, unix_now};

/// An API error: an HTTP status and a stable `code` (docs/operations.md).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        (self.status, body).into_response()
    }
}

impl From<SfuError> for ApiError {
    fn from(e: SfuError) -> Self {
        match e {
            SfuError::RoomNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "room_not_found", e.to_string())
            }
            SfuError::TrackNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "track_not_found", e.to_string())
            }
            SfuError::RemoteUnmuteRefused => ApiError::new(
                StatusCode::FORBIDDEN,
                "remote_unmute_refused",
                e.to_string(),
            ),
            SfuError::RoomExists => {
                ApiError::new(StatusCode::CONFLICT, "room_exists", e.to_string())
            }
            SfuError::ParticipantNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "participant_not_found",
                e.to_string(),
            ),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

/// Checks `Authorization: Bearer <token>`: signed by a configured key pair,
/// unexpired, with the admin grant. Shared by every `/v1/` route.
pub fn require_admin(keys: &KeyRing, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization: Bearer <token>",
            )
        })?;
    let claims = keys
        .verify(token.trim(), unix_now())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
    if !claims.grants.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token has no admin grant",
        ));
    }
    Ok(())
}

async fn list_rooms(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    Ok(Json(json!({"rooms": state.sfu.list_rooms().await})))
}

/// Longest room metadata accepted, in bytes.
pub const MAX_ROOM_METADATA_BYTES: usize = 4096;
/// Largest `max_participants` a room may ask for.
pub const MAX_ROOM_PARTICIPANTS: usize = 100_000;
/// Longest empty timeout a room may ask for.
pub const MAX_EMPTY_TIMEOUT: Duration = Duration::from_secs(86_400);

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", message)
}

fn check_metadata(metadata: &str) -> Result<(), ApiError> {
    if metadata.len() > MAX_ROOM_METADATA_BYTES {
        return Err(malformed(format!(
            "metadata is longer than {MAX_ROOM_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
    #[serde(default)]
    max_participants: Option<usize>,
    /// Seconds, or `"300s"`.
    #[serde(default)]
    empty_timeout: Option<serde_json::Value>,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    allow_remote_unmute: bool,
}

fn seconds(value: &serde_json::Value) -> Option<Duration> {
    match value {
        serde_json::Value::Number(n) => n.as_u64().map(Duration::from_secs),
        serde_json::Value::String(t) => t
            .strip_suffix('s')
            .unwrap_or(t)
            .trim()
            .parse()
            .ok()
            .map(Duration::from_secs),
        _ => None,
    }
}

async fn create_room(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let request: CreateRoom = serde_json::from_slice(&body).map_err(|e| {
        malformed(format!(
            "expected {{name, max_participants?, empty_timeout?, metadata?}}: {e}"
        ))
    })?;
    if request.name.is_empty()
        || request.name.len() > 256
        || request.name.chars().any(char::is_control)
    {
        return Err(malformed("name is 1-256 bytes of printable text"));
    }
    if request
        .max_participants
        .is_some_and(|n| !(1..=MAX_ROOM_PARTICIPANTS).contains(&n))
    {
        return Err(malformed(format!(
            "max_participants is 1 to {MAX_ROOM_PARTICIPANTS}"
        )));
    }
    let empty_timeout = match &request.empty_timeout {
        None => None,
        Some(v) => Some(
            seconds(v)
                .filter(|d| (Duration::from_secs(1)..=MAX_EMPTY_TIMEOUT).contains(d))
                .ok_or_else(|| malformed("empty_timeout is 1 to 86400 seconds, e.g. \"300s\""))?,
        ),
    };
    check_metadata(&request.metadata)?;
    let room = state
        .sfu
        .create_room(RoomOptions {
            name: request.name,
            max_participants: request.max_participants,
            empty_timeout,
            metadata: request.metadata,
            allow_remote_unmute: request.allow_remote_unmute,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"room": room}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRoom {
    metadata: String,
}

async fn update_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let request: UpdateRoom = serde_json::from_slice(&body)
        .map_err(|e| malformed(format!("expected {{metadata}}: {e}")))?;
    check_metadata(&request.metadata)?;
    let room = state
        .sfu
        .update_room_metadata(&room, request.metadata)
        .await?;
    Ok(Json(json!({"room": room})))
}

async fn update_participant(
    State(state): State<Arc<AppState>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let change: ParticipantChange = serde_json::from_slice(&body).map_err(|e| {
        malformed(format!(
            "expected {{can_publish?, can_subscribe?, can_publish_data?, name?, metadata?, attributes?}}: {e}"
        ))
    })?;
    let update = change.checked().map_err(malformed)?;
    let participant = state
        .sfu
        .update_participant(&room, &identity, update)
        .await?;
    Ok(Json(json!({"participant": participant})))
}

async fn mute_participant(
    State(state): State<Arc<AppState>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let change: MuteChange = serde_json::from_slice(&body)
        .map_err(|e| malformed(format!("expected {{track_sid | kind, muted?}}: {e}")))?;
    let which = change.selector().map_err(malformed)?;
    let tracks = state
        .sfu
        .moderate_mute(&room, &identity, which, change.muted)
        .await?;
    Ok(Json(json!({"tracks": tracks, "muted": change.muted})))
}

async fn list_participants(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let participants = state.sfu.list_participants(&room).await?;
    Ok(Json(json!({"participants": participants})))
}

async fn participant_stats(
    State(state): State<Arc<AppState>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    Ok(Json(state.sfu.participant_stats(&room, &identity).await?))
}

async fn remove_participant(
    State(state): State<Arc<AppState>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    require_admin(&state.keys, &headers)?;
    state
        .sfu
        .remove_participant(&room, &identity, LeaveReason::Removed)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn close_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    require_admin(&state.keys, &headers)?;
    state.sfu.close_room(&room, LeaveReason::RoomClosed).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rooms", get(list_rooms).post(create_room))
        .route("/v1/rooms/{room}", delete(close_room).patch(update_room))
        .route("/v1/rooms/{room}/participants", get(list_participants))
        .route(
            "/v1/rooms/{room}/participants/{identity}",
            delete(remove_participant).post(update_participant),
        )
        .route(
            "/v1/rooms/{room}/participants/{identity}/mute",
            post(mute_participant),
        )
        .route(
            "/v1/rooms/{room}/participants/{identity}/stats",
            get(participant_stats),
        )
        .route("/v1/{*rest}", axum::routing::any(not_found))
}
