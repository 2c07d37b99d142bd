//! The server API under `/v1/`, for the app's backend and operators.
//! Every request carries `Authorization: Bearer <token>` with the admin grant.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use callgate_sfu::{LeaveReason, SfuError};
use serde_json::json;

use crate::AppState;
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
        .route("/v1/rooms", get(list_rooms))
        .route("/v1/rooms/{room}", delete(close_room))
        .route("/v1/rooms/{room}/participants", get(list_participants))
        .route(
            "/v1/rooms/{room}/participants/{identity}",
            delete(remove_participant),
        )
        .route(
            "/v1/rooms/{room}/participants/{identity}/stats",
            get(participant_stats),
        )
        .route("/v1/{*rest}", axum::routing::any(not_found))
}
