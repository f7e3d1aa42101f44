//! `GET /v1/health` (no token): `{"status":"ok","mode","pcrs"}` once the enclave serves;
//! 503 with the cause otherwise.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::api::{Health, HealthStatus};

use super::{ApiCode, ApiError, AppState};
use crate::service::EnclaveStatus;

/// `GET /v1/health`.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    match state.service.enclave_status() {
        EnclaveStatus::Ready(h) => {
            let pcrs = h
                .pcrs
                .iter()
                .map(|(i, v)| (i.to_string(), hex::encode(v)))
                .collect();
            Json(Health {
                status: HealthStatus::Ok,
                mode: h.mode.into(),
                pcrs,
            })
            .into_response()
        }
        EnclaveStatus::ConfiguredByAnother(reason) => {
            ApiError::new(ApiCode::EnclaveConfiguredByAnother, reason).into_response()
        }
        // Why, when the last initialisation failed (issue 9: a wrong PCR0 or key policy
        // shows here as 503 kms_access_denied with KMS's own message).
        EnclaveStatus::NotReady(Some(n)) => {
            ApiError::not_ready(n.code, format!("the enclave is not ready: {}", n.reason))
                .into_response()
        }
        EnclaveStatus::NotReady(None) => {
            ApiError::new(ApiCode::NotReady, "the enclave connection is not ready").into_response()
        }
    }
}
