//! Routes that exist only when the server runs with `--dev`, so that the
//! demo page (web/index.html) can try a paid call's recharge end to end
//! without holding the server API secret. Without `--dev` they are not
//! mounted at all: their paths answer 404.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use callgate_metering::{Meter, MeterError};
use callgate_signaling::api::ApiError;
use serde::Deserialize;
use serde_json::json;

/// The most coins one dev credit may add.
pub const MAX_DEV_CREDIT: i64 = 10_000;

/// Dev credits' references start with this, so the ledger tells them apart.
const DEV_REFERENCE: &str = "dev:";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevCreditRequest {
    user: String,
    coins: i64,
    /// The idempotency key (a repeated request credits once); one is made
    /// up when absent. Stored as `dev:<reference>`.
    #[serde(default)]
    reference: Option<String>,
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn meter_error(e: MeterError) -> ApiError {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::new(status, e.code(), e.to_string())
}

/// `POST /v1/dev/credits` `{user, coins, reference?}`: the same credit as
/// `POST /v1/wallets/{user}/credits` (`Meter::credit`, which also hands
/// the coins to the user's running sessions), unauthenticated and bounded
/// to [`MAX_DEV_CREDIT`] coins.
async fn dev_credit(
    State(meter): State<Arc<Meter>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: DevCreditRequest = serde_json::from_slice(&body).map_err(|e| {
        bad_request(
            "malformed",
            format!("expected {{user, coins, reference?}}: {e}"),
        )
    })?;
    if !(1..=MAX_DEV_CREDIT).contains(&request.coins) {
        return Err(bad_request(
            "invalid_amount",
            format!("a dev credit is 1 to {MAX_DEV_CREDIT} coins"),
        ));
    }
    let reference = match request.reference {
        Some(r) if r.trim().is_empty() => {
            return Err(bad_request("malformed", "reference must not be empty"));
        }
        Some(r) => format!("{DEV_REFERENCE}{r}"),
        None => format!("{DEV_REFERENCE}{:032x}", rand::random::<u128>()),
    };
    let credited = meter
        .credit(&request.user, request.coins, &reference)
        .await
        .map_err(meter_error)?;
    Ok(Json(json!({
        "user": request.user,
        "coins": request.coins,
        "reference": reference,
        "applied": credited.applied,
        "debt_repaid": credited.debt_repaid,
        "balance": credited.balance,
    })))
}

/// The dev-only routes; mount them only with `--dev`.
pub fn routes(meter: Meter) -> Router {
    Router::new()
        .route("/v1/dev/credits", post(dev_credit))
        .with_state(Arc::new(meter))
}
