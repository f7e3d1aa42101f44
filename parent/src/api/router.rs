//! The API router: every route, the request limits (body size, requests in flight) and
//! the fallbacks that keep axum's own rejections in the API's error shape.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tracing::Instrument as _;

use super::{
    attestation, health, jsonrpc, keys, openapi, policy, sign, tokens, ApiCode, ApiError, AppState,
};

/// The API router with its limits (body size, in-flight cap, error shapes).
pub fn router(state: AppState) -> Router {
    let max_body = state.max_body_bytes;
    Router::new()
        .route("/v1/health", get(health::health))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{key_id}", get(keys::get))
        .route("/v1/keys/{key_id}/policy", put(policy::set_policy))
        .route(
            "/v1/keys/{key_id}/policy/proposal",
            post(policy::propose_policy),
        )
        .route("/v1/keys/{key_id}/disable", post(policy::disable))
        .route("/v1/keys/{key_id}/enable", post(policy::enable))
        .route(
            "/v1/keys/{key_id}/enable/proposal",
            post(policy::propose_enable),
        )
        .route("/v1/admin/stop", post(policy::stop))
        .route("/v1/admin/resume", post(policy::resume))
        .route("/v1/audit", get(policy::audit))
        .route("/v1/keys/{key_id}/sign", post(sign::sign))
        .route("/v1/rpc/evm", post(jsonrpc::rpc_evm))
        .route("/v1/attestation", get(attestation::attestation))
        .merge(tokens::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Caps requests in flight (503 `overloaded` beyond) and opens a span per request.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        return ApiError::new(ApiCode::Overloaded, "too many requests in flight; retry")
            .into_response();
    };
    // `token_id` is recorded by the `Caller` extractor once the token is known.
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        token_id = tracing::field::Empty
    );
    next.run(request).instrument(span).await
}

async fn not_found() -> ApiError {
    ApiError::new(ApiCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ApiCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}
