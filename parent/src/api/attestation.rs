//! `GET /v1/attestation?nonce=HEX` (any valid token): `{"document":"<base64>"}`, a fresh
//! COSE_Sign1 attestation document of the enclave with the caller's nonce.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::api::Attestation;
use ekms_shared::MAX_ATTESTATION_NONCE_LEN;

use super::extract::query_pairs;
use super::{ApiCode, ApiError, AppState};
use crate::auth::Caller;
use crate::format;

/// `GET /v1/attestation`.
pub(crate) async fn attestation(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut nonce = None;
    for (_, v) in query_pairs(query.as_deref(), &["nonce"])? {
        let digits = v.strip_prefix("0x").unwrap_or(&v);
        let bytes = hex::decode(digits)
            .ok()
            .filter(|b| !b.is_empty() && b.len() <= MAX_ATTESTATION_NONCE_LEN)
            .ok_or_else(|| {
                ApiError::new(
                    ApiCode::InvalidNonce,
                    format!("nonce must be 1 to {MAX_ATTESTATION_NONCE_LEN} bytes of hex"),
                )
            })?;
        nonce = Some(bytes);
    }
    let document = state.service.attestation(&caller, nonce).await?;
    Ok(Json(Attestation {
        document: format::to_base64(&document),
    })
    .into_response())
}
