//! The server API under `/v1/`, for the app's backend and operators.
//! Every request carries `Authorization: Bearer <token>` with the admin grant.

use std::sync::Arc;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use callgate_sfu::{
    LeaveReason, ParticipantInfo, ParticipantStats, RoomInfo, RoomOptions, SfuError,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

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

/// Every error's body: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code (docs/operations.md) and a text for people.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// The body this error is answered with.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_owned(),
            message: self.message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: self.detail(),
        });
        (self.status, body).into_response()
    }
}

/// A path's parameters, refused as 400 `malformed` (the API's error body)
/// where axum's own extractor would answer in plain text.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(e) => Err(malformed(e.body_text())),
        }
    }
}

/// A query string, refused as 400 `malformed` like [`ApiPath`].
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(malformed(e.body_text())),
        }
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

#[derive(Serialize, ToSchema)]
struct Rooms {
    rooms: Vec<RoomInfo>,
}

#[derive(Serialize, ToSchema)]
struct OneRoom {
    room: RoomInfo,
}

#[derive(Serialize, ToSchema)]
struct Participants {
    participants: Vec<ParticipantInfo>,
}

#[derive(Serialize, ToSchema)]
struct OneParticipant {
    participant: ParticipantInfo,
}

#[derive(Serialize, ToSchema)]
struct Muted {
    /// The sids of the tracks the mute changed.
    tracks: Vec<String>,
    muted: bool,
}

/// Open rooms.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])),
    responses(
        (status = 200, description = "the open rooms", body = Rooms),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
    ))]
async fn list_rooms(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let mut rooms = state.sfu.list_rooms().await;
    // In a cluster, every node's rooms (a node asked by another lists its own).
    if !state.from_node(&headers) {
        rooms.extend(crate::cluster_api::rooms_of_peers(&state, &headers).await?);
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(Json(Rooms { rooms }))
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    /// 1-256 bytes of printable text.
    name: String,
    /// 1 to 100,000; the node's `room.max_participants` when absent.
    #[serde(default)]
    max_participants: Option<usize>,
    /// Seconds (1 to 86,400), or `"300s"`.
    #[serde(default)]
    empty_timeout: Option<Seconds>,
    /// At most 4,096 bytes.
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    allow_remote_unmute: bool,
}

/// A duration as requests spell it: whole seconds (`45`), or a text of
/// them with or without the unit (`"45s"`, `"45"`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    /// The duration, or `None` for a text that is no whole number.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            Seconds::Number(n) => Some(Duration::from_secs(*n)),
            Seconds::Text(t) => t
                .strip_suffix('s')
                .unwrap_or(t)
                .trim()
                .parse()
                .ok()
                .map(Duration::from_secs),
        }
    }
}

/// Opens a room ahead of its first join.
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])),
    request_body = CreateRoom,
    responses(
        (status = 201, description = "the room", body = OneRoom),
        (status = 400, description = "`malformed`: out of bounds or an unknown field", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`room_exists`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
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
            v.duration()
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
    Ok((StatusCode::CREATED, Json(OneRoom { room })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateRoom {
    /// At most 4,096 bytes.
    metadata: String,
}

/// Sets a room's metadata.
#[utoipa::path(patch, path = "/v1/rooms/{room}", tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path, description = "the room's name")),
    request_body = UpdateRoom,
    responses(
        (status = 200, description = "the room", body = OneRoom),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
async fn update_room(
    State(state): State<Arc<AppState>>,
    ApiPath(room): ApiPath<String>,
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
    Ok(Json(OneRoom { room }))
}

/// Changes a participant in place (docs/protocol.md, "Moderation").
#[utoipa::path(post, path = "/v1/rooms/{room}/participants/{identity}", tag = "participants",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room's name"),
        ("identity" = String, Path, description = "the participant's identity")),
    request_body = ParticipantChange,
    responses(
        (status = 200, description = "the participant", body = OneParticipant),
        (status = 400, description = "`malformed`: out of bounds or an unknown field", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
async fn update_participant(
    State(state): State<Arc<AppState>>,
    ApiPath((room, identity)): ApiPath<(String, String)>,
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
    Ok(Json(OneParticipant { participant }))
}

/// A moderator's mute of a track, or of every track of a kind.
#[utoipa::path(post, path = "/v1/rooms/{room}/participants/{identity}/mute", tag = "participants",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room's name"),
        ("identity" = String, Path, description = "the participant's identity")),
    request_body = MuteChange,
    responses(
        (status = 200, description = "the tracks muted or unmuted", body = Muted),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`; `remote_unmute_refused` for an unmute the room does not allow", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`, `track_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
async fn mute_participant(
    State(state): State<Arc<AppState>>,
    ApiPath((room, identity)): ApiPath<(String, String)>,
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
    Ok(Json(Muted {
        tracks,
        muted: change.muted,
    }))
}

/// The participants in a room.
#[utoipa::path(get, path = "/v1/rooms/{room}/participants", tag = "participants",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room's name")),
    responses(
        (status = 200, description = "its participants", body = Participants),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
async fn list_participants(
    State(state): State<Arc<AppState>>,
    ApiPath(room): ApiPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let participants = state.sfu.list_participants(&room).await?;
    Ok(Json(Participants { participants }))
}

/// The media plane's view of one participant (docs/media.md).
#[utoipa::path(get, path = "/v1/rooms/{room}/participants/{identity}/stats", tag = "participants",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room's name"),
        ("identity" = String, Path, description = "the participant's identity")),
    responses(
        (status = 200, description = "its media now", body = ParticipantStats),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
async fn participant_stats(
    State(state): State<Arc<AppState>>,
    ApiPath((room, identity)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    Ok(Json(state.sfu.participant_stats(&room, &identity).await?))
}

/// Removes a participant from its room.
#[utoipa::path(delete, path = "/v1/rooms/{room}/participants/{identity}", tag = "participants",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "the room's name"),
        ("identity" = String, Path, description = "the participant's identity")),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `participant_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
async fn remove_participant(
    State(state): State<Arc<AppState>>,
    ApiPath((room, identity)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    require_admin(&state.keys, &headers)?;
    state
        .sfu
        .remove_participant(&room, &identity, LeaveReason::Removed)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes a room; everyone in it leaves.
#[utoipa::path(delete, path = "/v1/rooms/{room}", tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path, description = "the room's name")),
    responses(
        (status = 204, description = "closed"),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`room_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the media plane failed", body = ErrorBody),
    ))]
async fn close_room(
    State(state): State<Arc<AppState>>,
    ApiPath(room): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    require_admin(&state.keys, &headers)?;
    state.sfu.close_room(&room, LeaveReason::RoomClosed).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
}

/// The OpenAPI document of these routes (merged with the binary's in its
/// `/v1/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    paths(
        list_rooms,
        create_room,
        close_room,
        update_room,
        list_participants,
        remove_participant,
        update_participant,
        mute_participant,
        participant_stats
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

pub(crate) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
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
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::cluster_api::to_room_node,
        ))
        .route("/v1/{*rest}", axum::routing::any(not_found))
}
