//! The server API's contract: one OpenAPI 3.1 document of every `/v1/`
//! route, generated from the handlers and their types (each crate's
//! `#[utoipa::path]`s), served without auth at `GET /v1/openapi.json`
//! (docs/operations.md, "API contract").

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Where the document is served.
pub const PATH: &str = "/v1/openapi.json";

/// The document: signaling's rooms and participants, the calls and
/// presence, the money routes.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = callgate_signaling::api::ApiDoc::openapi();
    doc.merge(crate::calling::CallsDoc::openapi());
    doc.merge(crate::money_api::MoneyDoc::openapi());
    doc.merge(SelfDoc::openapi());
    doc.info.title = "callgate".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "The server API of a callgate node (docs/operations.md, \"Server API\"; \
         docs/calls.md; docs/metering.md). Every route but the Razorpay webhook \
         takes `Authorization: Bearer <token>` with the admin grant \
         (`callgate token --admin`). Errors are `{\"error\": {\"code\", \"message\"}}`. \
         On a node without metering the call and presence routes answer 503 \
         `calls_unavailable` and the money routes 404 `not_found`."
            .into(),
    );
    doc.info.license = Some(utoipa::openapi::License::new("Apache-2.0"));
    doc.info.contact = None;
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token signed by a configured API key pair, with the admin grant",
                ))
                .build(),
        ),
    );
    doc
}

/// The document as served, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .expect("the document serializes")
    })
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "contract",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

#[derive(OpenApi)]
#[openapi(paths(serve))]
struct SelfDoc;

/// `GET /v1/openapi.json`, without auth.
pub fn routes() -> Router {
    Router::new().route(PATH, get(serve))
}
