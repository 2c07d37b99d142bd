//! The call routes of the server API (docs/calls.md): start a call, read
//! calls, ask presence. Admin token required, as on every `/v1/` route.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use callgate_calls::MAX_CALLEES;
use callgate_metering::{CallCursor, CallType, MAX_CALLS_PAGE, Meter};
use callgate_signaling::api::{
    ApiError, ApiPath, ApiQuery, ErrorBody, ErrorDetail, Seconds, require_admin,
};
use callgate_signaling::cluster::{NODE_HEADER, PLACED_CALL_HEADER, Placement, Route};
use callgate_signaling::cluster_api::forward_request;
use callgate_signaling::protocol::{MAX_IDENTITY_BYTES, MAX_WATCHED, PresenceStatus};
use callgate_signaling::token::{BillingClaims, KeyRing, unix_now};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::CallDesk;
use super::desk::{CreateError, DEFAULT_RING_TIMEOUT, NewCall, new_call_id, room_of_call};
use super::view::{CallView, CalleeView, call_view};

struct CallsState {
    keys: KeyRing,
    meter: Meter,
    desk: CallDesk,
    /// Where call rooms are placed, in a cluster.
    cluster: Option<Arc<dyn Placement>>,
}

/// The call routes, merged into the node's router when metering is on.
pub fn routes(
    keys: KeyRing,
    meter: Meter,
    desk: CallDesk,
    cluster: Option<Arc<dyn Placement>>,
) -> Router {
    Router::new()
        .route("/v1/calls", post(create).get(history))
        .route("/v1/calls/{id}", get(one))
        .route("/v1/presence", get(presence))
        .with_state(Arc::new(CallsState {
            keys,
            meter,
            desk,
            cluster,
        }))
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

#[derive(Deserialize, ToSchema)]
struct CreateBody {
    caller: String,
    /// Shown to the callees; at most 256 bytes of printable text.
    #[serde(default)]
    caller_name: Option<String>,
    callees: Vec<String>,
    /// `audio` (the default) or `video`.
    #[serde(default)]
    call_type: Option<String>,
    #[serde(default)]
    billing: Option<BillingClaims>,
    #[serde(default)]
    ring_timeout: Option<Seconds>,
    #[serde(default)]
    call_waiting: bool,
}

#[derive(Serialize, ToSchema)]
struct Created {
    call: CallView,
    /// An access token for each member, by identity.
    tokens: HashMap<String, String>,
}

#[derive(Serialize, ToSchema)]
struct OneCall {
    call: CallView,
}

#[derive(Serialize, ToSchema)]
struct CallPage {
    /// Newest first.
    calls: Vec<CallView>,
    /// The `after` of the next page; null on the last.
    next: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Presence {
    presence: BTreeMap<String, PresenceStatus>,
}

/// An error that names the call it logged.
#[derive(Serialize, ToSchema)]
struct RefusedCall {
    error: ErrorDetail,
    call: CallView,
}

fn refused_with_call(status: StatusCode, code: &str, message: String, call: CallView) -> Response {
    let body = RefusedCall {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
        call,
    };
    (status, Json(body)).into_response()
}

/// Starts a call: rings the callees (docs/calls.md, "Starting a call").
#[utoipa::path(post, path = "/v1/calls", tag = "calls", security(("bearer" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "the call, ringing, and its members' tokens", body = Created),
        (status = 400, description = "`malformed`, `callee_count`, `bad_identity`, `caller_is_callee`, `duplicate_callee`, `bad_ring_timeout`, or a code of the ledger's refusal (`invalid_identifier`, `invalid_terms`, …)", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 402, description = "`insufficient_balance`, with the logged call", body = RefusedCall),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`busy`: every callee is in another call, with the logged call", body = RefusedCall),
        (status = 422, description = "`billing_invalid`", body = ErrorBody),
        (status = 503, description = "`calls_unavailable`, or `cluster_unavailable` (Redis or the chosen node did not answer)", body = ErrorBody),
    ))]
async fn create(
    State(state): State<Arc<CallsState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state.keys, &headers)?;
    let body: CreateBody = serde_json::from_slice(&bytes).map_err(|e| {
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
    let id = match &state.cluster {
        None => new_call_id(),
        Some(cluster) => match placed_call(cluster.as_ref(), &headers) {
            Some(id) => id,
            None => {
                // The call is driven where its room lives: placed like any
                // room, on the least loaded node.
                let id = new_call_id();
                match cluster.place(&room_of_call(&id)).await {
                    Ok(Route::Here) => id,
                    Ok(Route::There { url, .. }) => {
                        let mut headers = headers.clone();
                        headers.insert(
                            PLACED_CALL_HEADER,
                            id.parse()
                                .map_err(|_| unavailable("a call id unfit for a header"))?,
                        );
                        let answer = forward_request(
                            cluster.as_ref(),
                            &url,
                            axum::http::Method::POST,
                            "/v1/calls",
                            &headers,
                            bytes,
                        )
                        .await;
                        return Ok(answer);
                    }
                    Err(e) => {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "cluster_unavailable",
                            e.to_string(),
                        ));
                    }
                }
            }
        },
    };
    let request = NewCall {
        id,
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
            let body = Created {
                call: call_view(&created.call),
                tokens: created.tokens,
            };
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
            call_view(&call),
        )),
        Err(CreateError::Busy { call }) => Ok(refused_with_call(
            StatusCode::CONFLICT,
            "busy",
            "every callee is in another call".into(),
            call_view(&call),
        )),
        // A request the ledger refuses is the request's fault, not the node's.
        Err(CreateError::Ledger(e)) if e.http_status() == 400 => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            e.code(),
            e.to_string(),
        )),
        Err(e @ (CreateError::Ledger(_) | CreateError::NoKey)) => Err(unavailable(e.to_string())),
    }
}

/// The id of a call another node of the cluster placed here, if the
/// request comes from one.
fn placed_call(cluster: &dyn Placement, headers: &HeaderMap) -> Option<String> {
    let proof = headers.get(NODE_HEADER)?.to_str().ok()?;
    if !cluster.verify(proof, unix_now()) {
        return None;
    }
    let id = headers.get(PLACED_CALL_HEADER)?.to_str().ok()?;
    let well_formed =
        id.len() == 35 && id.starts_with("CA_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| id.to_owned())
}

/// One call.
#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls", security(("bearer" = [])),
    params(("id" = String, Path, description = "the call's id, `CA_…`")),
    responses(
        (status = 200, description = "the call", body = OneCall),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`call_not_found`", body = ErrorBody),
        (status = 503, description = "`calls_unavailable`", body = ErrorBody),
    ))]
async fn one(
    State(state): State<Arc<CallsState>>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state.keys, &headers)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "call_not_found", "no such call");
    if id.is_empty() || id.len() > 64 {
        return Err(not_found());
    }
    match state.meter.call(&id).await {
        Ok(Some(call)) => Ok(Json(OneCall {
            call: call_view(&call),
        })
        .into_response()),
        Ok(None) => Err(not_found()),
        // An id no call can have (control characters, …): none has it.
        Err(e) if e.http_status() == 400 => Err(not_found()),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Whose calls (required, 1-256 bytes).
    identity: Option<String>,
    /// Calls a page, 1 to 100 (20 when absent).
    limit: Option<u32>,
    /// The `next` of the previous page.
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

/// One member's calls, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "a page of calls", body = CallPage),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 503, description = "`calls_unavailable`", body = ErrorBody),
    ))]
async fn history(
    State(state): State<Arc<CallsState>>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
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
        .map_err(|e| match e.http_status() {
            // An identity the log refuses (control characters, …).
            400 => malformed(e.to_string()),
            _ => unavailable(e.to_string()),
        })?;
    let next = match calls.last() {
        Some(last) if calls.len() == limit as usize => Some(cursor_text(&CallCursor {
            created_ms: last.created_ms,
            id: last.id.clone(),
        })),
        _ => None,
    };
    let calls = calls.iter().map(call_view).collect();
    Ok(Json(CallPage { calls, next }).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PresenceQuery {
    /// Identities, comma-separated (required).
    identity: Option<String>,
}

/// Who is online, busy or offline (docs/calls.md, "Presence").
#[utoipa::path(get, path = "/v1/presence", tag = "presence", security(("bearer" = [])),
    params(PresenceQuery),
    responses(
        (status = 200, description = "each identity's presence", body = Presence),
        (status = 400, description = "`malformed`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 503, description = "`calls_unavailable`", body = ErrorBody),
    ))]
async fn presence(
    State(state): State<Arc<CallsState>>,
    ApiQuery(query): ApiQuery<PresenceQuery>,
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
    let presence = statuses.into_iter().collect();
    Ok(Json(Presence { presence }).into_response())
}

/// The OpenAPI document of these routes.
#[derive(OpenApi)]
#[openapi(
    paths(create, history, one, presence),
    components(schemas(CallView, CalleeView))
)]
pub struct CallsDoc;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::time::Duration;

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
