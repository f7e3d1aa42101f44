//! Errors of the parent: [`Error`] (the crate boundary: configuration, I/O, key store,
//! relay) and [`ApiError`] (what the application API answers: an HTTP status and the
//! body `{"error":{"code":"…","message":"…"}}`, plus `"rule"` for a policy refusal).
//!
//! Rule for maintainers: the `code` strings are API: add new ones, never rename one.
//! Messages carry no secrets (credentials never reach an error).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ekms_shared::{ProtocolError, WireError};
use serde::Serialize;

/// Error of the parent's library API ([`crate::run`], [`crate::Store`],
/// [`crate::Relay`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag, environment variable or address is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A system call failed (socket, file).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed (open, schema, query, commit).
    #[error("key store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A stored row does not decode or contradicts itself (the database was changed
    /// outside the parent): the key cannot be used.
    #[error("key store row is invalid: {0}")]
    StoreCorrupt(String),
    /// A policy update lost the compare-and-set: the stored version is no longer the one
    /// the update started from.
    #[error("the policy was changed concurrently (expected version {expected})")]
    PolicyConflict {
        /// The version the update started from.
        expected: u64,
    },
    /// A row to insert already exists (keyring epoch or key id).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// As many API tokens as allowed are stored already.
    #[error("at most {0} API tokens may exist; revoke one first")]
    TooManyTokens(usize),
    /// No connection to the enclave, or it dropped while the request was in flight.
    #[error("enclave unavailable: {0}")]
    EnclaveUnavailable(String),
    /// The enclave is Ready for a KMS target that is not this parent's (someone else
    /// configured it first): a fatal alarm, nothing is sent to it any more.
    #[error("the enclave was configured by someone else: {0}")]
    EnclaveConfiguredByAnother(String),
    /// The enclave did not answer within the request deadline.
    #[error("the enclave did not answer within {0} s")]
    EnclaveTimeout(u64),
    /// A frame could not be encoded, or the enclave sent one that does not decode.
    #[error("enclave protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The enclave answered with a response of the wrong kind for the request.
    #[error("unexpected response from the enclave to a {0} request")]
    UnexpectedResponse(&'static str),
    /// The enclave refused the request.
    #[error("enclave: {0}")]
    Enclave(#[from] WireError),
    /// A blocking task panicked or was cancelled (a bug).
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Message for [`WireError::SealedStateInvalid`] and corrupt rows: the same for every
/// cause (no oracle on which check failed).
pub const SEALED_STATE_INVALID_MESSAGE: &str =
    "the key's sealed record or policy failed its integrity check; nothing was signed";

/// An error answer of the application API. Serialises as
/// `{"error":{"code":"…","message":"…"}}`, with `"rule"` added for `policy_denied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (snake case).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The policy rule that refused (only for `policy_denied`).
    pub rule: Option<String>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            rule: None,
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `key_not_found`.
    pub fn key_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            "no key with this id",
        )
    }

    /// 500 `sealed_state_invalid` with [`SEALED_STATE_INVALID_MESSAGE`].
    pub fn sealed_state_invalid() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sealed_state_invalid",
            SEALED_STATE_INVALID_MESSAGE,
        )
    }

    /// 401 `unauthenticated`: no `Authorization: Bearer` token, or one that is unknown,
    /// revoked or expired ([`crate::auth`]). The message says which of "none" and "not
    /// valid" it was, never why a presented token is not valid.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`: a valid token without the scope (or key) the route needs.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `token_not_found`.
    pub fn token_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "token_not_found",
            "no token with this id",
        )
    }

    /// 500 `internal` with a generic message (details go to the log, not the caller).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Enclave(wire) => wire.into(),
            Error::EnclaveUnavailable(message) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "enclave_unavailable",
                message,
            ),
            Error::EnclaveConfiguredByAnother(reason) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "enclave_configured_by_another",
                reason,
            ),
            Error::EnclaveTimeout(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "enclave_timeout",
                error.to_string(),
            ),
            Error::StoreCorrupt(detail) => {
                tracing::warn!(%detail, "stored key row is invalid");
                ApiError::sealed_state_invalid()
            }
            // Only encoding produces this here (an oversize answer from the enclave drops
            // the connection instead): the caller's request does not fit in one frame.
            Error::Protocol(ProtocolError::FrameTooLarge { max, .. }) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request does not fit in one enclave frame of {max} bytes"),
            ),
            Error::TooManyTokens(_) => {
                ApiError::new(StatusCode::CONFLICT, "too_many_tokens", error.to_string())
            }
            Error::PolicyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "policy_conflict", error.to_string())
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::internal()
            }
        }
    }
}

impl From<WireError> for ApiError {
    fn from(wire: WireError) -> Self {
        use StatusCode as S;
        match wire {
            WireError::PolicyDenied { rule, message } => ApiError {
                status: S::FORBIDDEN,
                code: "policy_denied",
                message,
                rule: Some(rule),
            },
            WireError::InvalidPayload { message } => {
                ApiError::bad_request("invalid_payload", message)
            }
            WireError::UnsupportedPayload { message } => {
                ApiError::bad_request("unsupported_payload", message)
            }
            WireError::InvalidPolicy { message } => {
                ApiError::bad_request("invalid_policy", message)
            }
            WireError::BadRequest { message } => ApiError::bad_request("bad_request", message),
            WireError::SealedStateInvalid => ApiError::sealed_state_invalid(),
            WireError::Kms { code, message } => ApiError::new(
                S::BAD_GATEWAY,
                "kms_error",
                format!("KMS error {code}: {message}"),
            ),
            WireError::Attestation { message } => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "attestation_error", message)
            }
            WireError::NotReady => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "enclave_unavailable",
                "the enclave is not ready",
            ),
            WireError::Busy => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "enclave_busy",
                "the enclave is busy; retry",
            ),
            WireError::OwnerAuthorizationInvalid { message } => {
                ApiError::new(S::FORBIDDEN, "owner_authorization_invalid", message)
            }
            WireError::KeyDisabled => ApiError::new(
                S::FORBIDDEN,
                "key_disabled",
                "the key is disabled (emergency stop); only its owner can re-enable it",
            ),
            WireError::StoreStopped => ApiError::new(
                S::FORBIDDEN,
                "store_stopped",
                "signing is stopped store-wide (POST /v1/admin/resume lifts it)",
            ),
            other => {
                tracing::error!(error = %other, "enclave error");
                ApiError::internal()
            }
        }
    }
}

/// Wire shape of an error body.
#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                rule: self.rule.as_deref(),
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_denied_carries_rule() {
        let e: ApiError = Error::Enclave(WireError::PolicyDenied {
            rule: "evm.chain_ids".into(),
            message: "chain 5 not allowed".into(),
        })
        .into();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code, "policy_denied");
        assert_eq!(e.rule.as_deref(), Some("evm.chain_ids"));
    }

    #[test]
    fn rejects_leaking_detail_of_sealed_state_errors() {
        let a: ApiError = Error::StoreCorrupt("mac column is 31 bytes".into()).into();
        let b: ApiError = WireError::SealedStateInvalid.into();
        assert_eq!(a, b);
        assert_eq!(a.message, SEALED_STATE_INVALID_MESSAGE);
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn maps_enclave_and_kms_failures() {
        let e: ApiError = Error::EnclaveUnavailable("gone".into()).into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
        );
        let e: ApiError = WireError::Kms {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        }
        .into();
        assert_eq!((e.status, e.code), (StatusCode::BAD_GATEWAY, "kms_error"));
        let e: ApiError = Error::PolicyConflict { expected: 3 }.into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "policy_conflict")
        );
        let e: ApiError = Error::EnclaveTimeout(30).into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::GATEWAY_TIMEOUT, "enclave_timeout")
        );
    }

    /// The codes of authentication and token management, pinned: clients match on them.
    #[test]
    fn pins_auth_and_token_codes() {
        let too_many: ApiError = Error::TooManyTokens(1000).into();
        let cases = [
            (
                ApiError::unauthenticated("x"),
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (ApiError::forbidden("x"), StatusCode::FORBIDDEN, "forbidden"),
            (
                ApiError::token_not_found(),
                StatusCode::NOT_FOUND,
                "token_not_found",
            ),
            (too_many, StatusCode::CONFLICT, "too_many_tokens"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status, e.code), (status, code));
        }
    }

    #[test]
    fn rejects_exposing_internal_errors() {
        let e: ApiError = Error::Internal("secret detail".into()).into();
        assert_eq!(e, ApiError::internal());
        assert!(!e.message.contains("secret"));
    }
}
