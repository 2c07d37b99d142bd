//! The money routes of the server API: wallets, accounts, exports for
//! finance, and the payment provider's webhook. They live in the binary
//! because they join signaling's API auth to the meter.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use callgate_metering::{ExportFormat, ExportKind, Meter, MeterError, TimeRange};
use callgate_signaling::api::{ApiError, ApiPath, ApiQuery, ErrorBody, require_admin};
use callgate_signaling::token::KeyRing;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use utoipa::{IntoParams, OpenApi, ToSchema};

#[derive(Clone)]
struct MoneyState {
    keys: KeyRing,
    meter: Meter,
}

fn meter_error(e: MeterError) -> ApiError {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::new(status, e.code(), e.to_string())
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

#[derive(Deserialize, ToSchema)]
struct CreditRequest {
    /// Coins to add, a positive whole number.
    coins: i64,
    /// The payment's reference: a second credit with it changes nothing.
    reference: String,
}

#[derive(Serialize, ToSchema)]
struct CreditResponse {
    user: String,
    coins: i64,
    reference: String,
    /// False when this reference had been credited already.
    applied: bool,
    /// Of `coins`, what repaid the wallet's debt.
    debt_repaid: i64,
    balance: i64,
}

#[derive(Serialize, ToSchema)]
struct WalletResponse {
    user: String,
    balance: i64,
    held: i64,
    available: i64,
    debt: i64,
}

#[derive(Serialize, ToSchema)]
struct AccountResponse {
    account: String,
    balance: i64,
}

#[derive(Serialize, ToSchema)]
struct RazorpayResponse {
    /// `credited`, `refunded`, `duplicate`, `refund_pending`, `ignored` or
    /// `refused`.
    status: &'static str,
    /// Why an event was refused; null otherwise.
    reason: Option<&'static str>,
    detail: String,
}

/// Credits coins to a user's wallet (docs/metering.md).
#[utoipa::path(post, path = "/v1/wallets/{user}/credits", tag = "wallets",
    security(("bearer" = [])),
    params(("user" = String, Path, description = "the wallet's user id")),
    request_body = CreditRequest,
    responses(
        (status = 200, description = "credited, or credited before under this reference", body = CreditResponse),
        (status = 400, description = "`malformed`, `invalid_amount`, `invalid_identifier`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: a node without metering", body = ErrorBody),
        (status = 409, description = "`conflict`: the reference was credited with other terms", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
        (status = 500, description = "`database`, `io`, `internal`: a failure; nothing was committed", body = ErrorBody),
    ))]
async fn credit(
    State(state): State<Arc<MoneyState>>,
    ApiPath(user): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let request: CreditRequest = serde_json::from_slice(&body)
        .map_err(|e| bad_request("malformed", format!("expected {{coins, reference}}: {e}")))?;
    if request.reference.trim().is_empty() {
        return Err(bad_request("malformed", "reference must not be empty"));
    }
    let credited = state
        .meter
        .credit(&user, request.coins, &request.reference)
        .await
        .map_err(meter_error)?;
    Ok(Json(CreditResponse {
        user,
        coins: request.coins,
        reference: request.reference,
        applied: credited.applied,
        debt_repaid: credited.debt_repaid,
        balance: credited.balance,
    }))
}

/// A user's wallet.
#[utoipa::path(get, path = "/v1/wallets/{user}", tag = "wallets",
    security(("bearer" = [])),
    params(("user" = String, Path, description = "the wallet's user id")),
    responses(
        (status = 200, description = "the wallet", body = WalletResponse),
        (status = 400, description = "`malformed`, `invalid_identifier`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`unknown_account`; `not_found` on a node without metering", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
        (status = 500, description = "`database`, `io`, `internal`: a failure; nothing was committed", body = ErrorBody),
    ))]
async fn wallet(
    State(state): State<Arc<MoneyState>>,
    ApiPath(user): ApiPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let w = state.meter.wallet(&user).await.map_err(meter_error)?;
    Ok(Json(WalletResponse {
        user,
        balance: w.balance,
        held: w.held,
        available: w.available,
        debt: w.debt,
    }))
}

/// A ledger account's balance (`platform`, `funding`, a wallet, …).
#[utoipa::path(get, path = "/v1/accounts/{account}", tag = "accounts",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "the account's id")),
    responses(
        (status = 200, description = "its balance", body = AccountResponse),
        (status = 400, description = "`malformed`, `invalid_identifier`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`unknown_account`; `not_found` on a node without metering", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
        (status = 500, description = "`database`, `io`, `internal`: a failure; nothing was committed", body = ErrorBody),
    ))]
async fn account(
    State(state): State<Arc<MoneyState>>,
    ApiPath(account): ApiPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&state.keys, &headers)?;
    let balance = state.meter.account(&account).await.map_err(meter_error)?;
    Ok(Json(AccountResponse { account, balance }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// Start of the range (inclusive): RFC 3339, a date or unix milliseconds.
    from: Option<String>,
    /// End of the range (exclusive), as `from`.
    to: Option<String>,
    /// `csv` (the default) or `jsonl`.
    format: Option<String>,
    /// Only this user's rows (as payer or payee, or its usage).
    user: Option<String>,
}

/// Rows for finance, streamed (docs/metering.md, "Exports").
#[utoipa::path(get, path = "/v1/exports/{kind}", tag = "exports",
    security(("bearer" = [])),
    params(
        ("kind" = String, Path, description = "`sessions`, `ledger`, `usage` or `calls`"),
        ExportQuery,
    ),
    responses(
        (status = 200, description = "the rows: CSV with a header line, or JSON lines",
            content(
                (String = "text/csv"),
                (String = "application/x-ndjson"),
            )),
        (status = 400, description = "`malformed`, `invalid_range`, `invalid_identifier`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`unknown_account` (no such user); `not_found` on a node without metering", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
        (status = 500, description = "`database`, `io`, `internal`: a failure; nothing was committed", body = ErrorBody),
    ))]
async fn export(
    State(state): State<Arc<MoneyState>>,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(query): ApiQuery<ExportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state.keys, &headers)?;
    let kind: ExportKind = kind.parse().map_err(meter_error)?;
    let format: ExportFormat = query
        .format
        .as_deref()
        .unwrap_or("csv")
        .parse()
        .map_err(meter_error)?;
    let range =
        TimeRange::parse(query.from.as_deref(), query.to.as_deref()).map_err(meter_error)?;
    // The export writes into one end of a pipe while the response streams
    // the other, so a year of rows never sits in memory.
    let (writer, mut reader) = tokio::io::duplex(64 * 1024);
    let meter = state.meter.clone();
    let user = query.user.clone();
    let mut task = Some(tokio::spawn(async move {
        match user {
            Some(user) => {
                meter
                    .export_for_user(kind, range, format, &user, writer)
                    .await
            }
            None => meter.export(kind, range, format, writer).await,
        }
    }));
    // A request the meter refuses (an unknown user) fails before its first
    // byte; wait for that byte, or for the refusal, before answering.
    let mut first = vec![0u8; 16 * 1024];
    let read = tokio::select! {
        done = task.as_mut().expect("just spawned") => {
            task = None;
            match done {
                Ok(Err(e)) => return Err(meter_error(e)),
                Err(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
                Ok(Ok(_)) => reader.read(&mut first).await,
            }
        }
        read = reader.read(&mut first) => read,
    };
    let n = read
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if n == 0
        && let Some(task) = task
        && let Ok(Err(e)) = task.await
    {
        return Err(meter_error(e));
    }
    first.truncate(n);
    let head = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(
        Bytes::from(first),
    )));
    let body = Body::from_stream(head.chain(tokio_util::io::ReaderStream::new(reader)));
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// Razorpay's webhook (docs/metering.md, "Razorpay intake"): signed with
/// HMAC-SHA256 of the body, not with a bearer token.
#[utoipa::path(post, path = "/v1/hooks/razorpay", tag = "hooks",
    params(("X-Razorpay-Signature" = String, Header,
        description = "hex HMAC-SHA256 of the raw body under the webhook secret")),
    request_body(content = Object, description = "Razorpay's event", content_type = "application/json"),
    responses(
        (status = 200, description = "every signed event, refusals too", body = RazorpayResponse),
        (status = 401, description = "`bad_signature`", body = ErrorBody),
        (status = 404, description = "`not_configured`: no webhook secret; `not_found` on a node without metering", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
        (status = 500, description = "`database`, `io`, `internal`: a failure; nothing was committed", body = ErrorBody),
    ))]
async fn razorpay(
    State(state): State<Arc<MoneyState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let signature = headers
        .get("x-razorpay-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "missing X-Razorpay-Signature",
            )
        })?;
    let outcome = state
        .meter
        .razorpay_webhook(signature, &body)
        .await
        .map_err(meter_error)?;
    // Every signed event is answered 200, refusals too: Razorpay redelivers
    // anything else for a day, and a refused payment stays refused.
    Ok(Json(RazorpayResponse {
        status: outcome.status(),
        reason: outcome.refusal().map(|r| r.as_str()),
        detail: outcome.to_string(),
    }))
}

/// The OpenAPI document of these routes.
#[derive(OpenApi)]
#[openapi(paths(wallet, credit, account, export, razorpay))]
pub struct MoneyDoc;

pub fn routes(keys: KeyRing, meter: Meter) -> Router {
    Router::new()
        .route("/v1/wallets/{user}", get(wallet))
        .route("/v1/wallets/{user}/credits", post(credit))
        .route("/v1/accounts/{account}", get(account))
        .route("/v1/exports/{kind}", get(export))
        .route("/v1/hooks/razorpay", post(razorpay))
        .with_state(Arc::new(MoneyState { keys, meter }))
}
