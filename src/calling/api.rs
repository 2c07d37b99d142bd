//! The call routes of the server API (docs/calls.md): start a call, read
//! calls, ask presence. Admin token required, as on every `/v1/` route.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use callgate_calls::MAX_CALLEES;
use callgate_metering::{CallCursor, CallType, MAX_CALLS_PAGE, Meter};
use callgate_signaling::api::{ApiError, require_admin};
use callgate_signaling::protocol::{MAX_IDENTITY_BYTES, MAX_WATCHED};
use callgate_signaling::token::{BillingClaims, KeyRing};
use serde::Deserialize;
use serde_json::{Value, json};

use super::CallDesk;
use super::desk::{CreateError, DEFAULT_RING_TIMEOUT, NewCall};
use super::view::call_json;

struct CallsState {
    keys: KeyRing,
    meter: Meter,
    desk: CallDesk,
}

/// The call routes, merged into the node's router when metering is on.
pub fn routes(keys: KeyRing, meter: Meter, desk: CallDesk) -> Router {
    Router::new()
        .route("/v1/calls", post(create).get(history))
        .route("/v1/calls/{id}", get(one))
        .route("/v1/presence", get(presence))
        .with_state(Arc::new(CallsState { keys, meter, desk }))
}

/// The same routes on a node without metering: each answers 503
/// `calls_unavailable` (there is no call log to keep calls in).
pub fn unavailable_routes() -> Router {
    async fn refuse() -> ApiError {
        unavailable("this node runs without metering, so without calls")
    }
    Router::new()
        .route("/v1/calls", post(refuse).get(refuse))
        .route("/v1/calls/{id}", get(refuse))
        .route("/v1/presence", get(refuse))
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", message)
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "calls_unavailable",
        message,
    )
}

/// `"45s"` or `45`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    fn duration(&self) -> Option<Duration> {
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

#[derive(Deserialize)]
struct CreateBody {
    caller: String,
    #[serde(default)]
    caller_name: Option<String>,
    callees: Vec<String>,
    #[serde(default)]
    call_type: Option<String>,
    #[serde(default)]
    billing: Option<BillingClaims>,
    #[serde(default)]
    ring_timeout: Option<Seconds>,
    #[serde(default)]
    call_waiting: bool,
}

/// An error that names the call it logged.
fn refused_with_call(status: StatusCode, code: &str, message: String, call: &Value) -> Response {
    let body = json!({"error": {"code": code, "message": message}, "call": call});
    (status, Json(body)).into_response()
}

async fn create(
    State(state): State<Arc<CallsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state.keys, &headers)?;
    let body: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        malformed(format!(
            "expected {{caller, callees, call_type?, billing?, ring_timeout?, call_waiting?}}: {e}"
        ))
    })?;
    // Bounded before anything else looks at it (the desk refuses too).
    if body.callees.len() > MAX_CALLEES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "callee_count",
            format!("a call rings 1 to {MAX_CALLEES} callees"),
        ));
    }
    let call_type = match body.call_type.as_deref() {
        None | Some("audio") => CallType::Audio,
        Some("video") => CallType::Video,
        Some(_) => return Err(malformed("call_type is audio or video")),
    };
    let ring_timeout = match &body.ring_timeout {
        None => DEFAULT_RING_TIMEOUT,
        Some(s) => s.duration().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_ring_timeout",
                "ring_timeout is a number of seconds or \"45s\"",
            )
        })?,
    };
    if body
        .caller_name
        .as_ref()
        .is_some_and(|n| n.len() > MAX_IDENTITY_BYTES || n.chars().any(char::is_control))
    {
        return Err(malformed(
            "caller_name is at most 256 bytes of printable text",
        ));
    }
    let request = NewCall {
        caller: body.caller,
        caller_name: body.caller_name,
        callees: body.callees,
        call_type,
        billing: body.billing,
        ring_timeout,
        call_waiting: body.call_waiting,
    };
    match state.desk.create(request).await {
        Ok(created) => {
            let body = json!({"call": call_json(&created.call), "tokens": created.tokens});
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        Err(CreateError::Call(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            e.code(),
            e.to_string(),
        )),
        Err(CreateError::BillingInvalid(message)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "billing_invalid",
            message,
        )),
        Err(CreateError::InsufficientBalance { message, call }) => Ok(refused_with_call(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_balance",
            message,
            &call_json(&call),
        )),
        Err(CreateError::Busy { call }) => Ok(refused_with_call(
            StatusCode::CONFLICT,
            "busy",
            "every callee is in another call".into(),
            &call_json(&call),
        )),
        Err(e @ (CreateError::Ledger(_) | CreateError::NoKey)) => Err(unavailable(e.to_string())),
    }
}

async fn one(
    State(state): State<Arc<CallsState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state.keys, &headers)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "call_not_found", "no such call");
    if id.is_empty() || id.len() > 64 {
        return Err(not_found());
    }
    match state.meter.call(&id).await {
        Ok(Some(call)) => Ok(Json(json!({"call": call_json(&call)})).into_response()),
        Ok(None) => Err(not_found()),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    identity: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

fn cursor_text(c: &CallCursor) -> String {
    format!("{}.{}", c.created_ms, c.id)
}

fn parse_cursor(text: &str) -> Option<CallCursor> {
    let (ms, id) = text.split_once('.')?;
    Some(CallCursor {
        created_ms: ms.parse().ok()?,
        id: id.to_owned(),
    })
    .filter(|c| !c.id.is_empty() && c.id.len() <= 64)
}

async fn history(
    State(state): State<Arc<CallsState>>,
    Query(query): Query<HistoryQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state.keys, &headers)?;
    let identity = query
        .identity
        .filter(|i| !i.is_empty() && i.len() <= MAX_IDENTITY_BYTES)
        .ok_or_else(|| malformed("identity=<identity> is required (1-256 bytes)"))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_CALLS_PAGE).contains(&limit) {
        return Err(malformed(format!("limit is 1 to {MAX_CALLS_PAGE}")));
    }
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            parse_cursor(text).ok_or_else(|| malformed("after is a `next` of a previous page"))?,
        ),
    };
    let calls = state
        .meter
        .calls_of(&identity, after.as_ref(), limit)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let next = match calls.last() {
        Some(last) if calls.len() == limit as usize => Some(cursor_text(&CallCursor {
            created_ms: last.created_ms,
            id: last.id.clone(),
        })),
        _ => None,
    };
    let calls: Vec<Value> = calls.iter().map(call_json).collect();
    Ok(Json(json!({"calls": calls, "next": next})).into_response())
}

#[derive(Deserialize)]
struct PresenceQuery {
    identity: Option<String>,
}

async fn presence(
    State(state): State<Arc<CallsState>>,
    Query(query): Query<PresenceQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state.keys, &headers)?;
    let list = query.identity.unwrap_or_default();
    let identities: Vec<String> = list.split(',').map(str::to_owned).collect();
    if list.is_empty()
        || identities.len() > MAX_WATCHED
        || identities
            .iter()
            .any(|i| i.is_empty() || i.len() > MAX_IDENTITY_BYTES)
    {
        return Err(malformed(format!(
            "identity=<a>,<b>,… names 1 to {MAX_WATCHED} identities of 1-256 bytes"
        )));
    }
    let statuses = state
        .desk
        .presence(identities)
        .await
        .ok_or_else(|| unavailable("the call desk has stopped"))?;
    let map: serde_json::Map<String, Value> = statuses
        .into_iter()
        .map(|(identity, status)| (identity, json!(status)))
        .collect();
    Ok(Json(json!({"presence": map})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_timeouts_read_as_seconds_with_or_without_the_unit() {
        let parse = |v: Value| serde_json::from_value::<Seconds>(v).unwrap().duration();
        assert_eq!(parse(json!(45)), Some(Duration::from_secs(45)));
        assert_eq!(parse(json!("45s")), Some(Duration::from_secs(45)));
        assert_eq!(parse(json!("30")), Some(Duration::from_secs(30)));
        assert_eq!(parse(json!("soon")), None);
        assert_eq!(parse(json!("-5s")), None);
    }

    #[test]
    fn a_cursor_reads_back_as_written_and_junk_is_refused() {
        let c = CallCursor {
            created_ms: 1_796_300_000_000,
            id: "CA_1.2".into(),
        };
        assert_eq!(parse_cursor(&cursor_text(&c)), Some(c));
        assert_eq!(parse_cursor("nope"), None);
        assert_eq!(parse_cursor("12."), None);
        assert_eq!(parse_cursor("x.CA_1"), None);
    }
}
