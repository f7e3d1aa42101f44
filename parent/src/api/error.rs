//! What the application API answers when a request fails: [`ApiCode`] (every error code
//! the API returns, with its HTTP status) and [`ApiError`] (a code, a message and, for a
//! policy refusal, the rule), serialised as `{"error":{"code":"…","message":"…"}}` plus
//! `"rule"` for `policy_denied`.
//!
//! Rule for maintainers: the codes are API (clients, the e2e tests and the OpenAPI spec
//! match on them): add new ones, never rename one, and list every one in the test at
//! the bottom (STYLE rule 18). Messages carry no secrets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ekms_shared::api::{ErrorBody, ErrorInfo};
use ekms_shared::{ProtocolError, WireError};

use crate::error::{Error, SEALED_STATE_INVALID_MESSAGE};
use crate::relay::NotReadyCode;
use crate::service::{Invalid, ServiceError};

/// Every error code of the application API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiCode {
    /// 401: no token, or one that is unknown, revoked or expired.
    Unauthenticated,
    /// 403: a valid token without the scope (or key) the route needs.
    Forbidden,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 503: too many requests in flight.
    Overloaded,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 413: the body (or the enclave frame it makes) is too large.
    BodyTooLarge,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 400: the body could not be read.
    InvalidBody,
    /// 400: the body is not the JSON the route takes.
    InvalidJson,
    /// 400: an unexpected, repeated or malformed query parameter.
    InvalidQuery,
    /// 404: no key with this id.
    KeyNotFound,
    /// 404: no token with this id.
    TokenNotFound,
    /// 400: not `secp256k1` or `ed25519`.
    UnknownAlgorithm,
    /// 400: the label is too long.
    InvalidLabel,
    /// 400: the owner is malformed.
    InvalidOwner,
    /// 400: the policy is not a JSON object, or the engine refuses it.
    InvalidPolicy,
    /// 400: not a payload kind.
    UnknownKind,
    /// 400: the payload kind does not match the key's algorithm.
    KindMismatch,
    /// 400: the payload does not decode.
    InvalidPayload,
    /// 400: the payload decodes but is not supported.
    UnsupportedPayload,
    /// 400: the attestation nonce is malformed.
    InvalidNonce,
    /// 400: `expires_at` is malformed (or in the past for a token).
    InvalidExpiresAt,
    /// 400: `owner_signature` is malformed.
    InvalidOwnerSignature,
    /// 400: an owner authorization needs `version`, `expires_at` and `owner_signature`.
    InvalidOwnerAuthorization,
    /// 400: an enable proposal for a key that is not disabled.
    KeyNotDisabled,
    /// 400: a token name out of bounds.
    InvalidName,
    /// 400: an unknown or missing token scope.
    InvalidScope,
    /// 400: a token's key list is malformed.
    InvalidKeyId,
    /// 409: as many tokens as allowed exist.
    TooManyTokens,
    /// 409: the policy was changed concurrently.
    PolicyConflict,
    /// 403: the key's policy refused (with `rule`).
    PolicyDenied,
    /// 403: the owner's authorization is missing or does not verify.
    OwnerAuthorizationInvalid,
    /// 403: the key is disabled (emergency stop).
    KeyDisabled,
    /// 403: signing is stopped store-wide.
    StoreStopped,
    /// 400: the enclave refused the request as malformed.
    BadRequest,
    /// 500: a sealed record or policy failed its integrity check.
    SealedStateInvalid,
    /// 502 (503 in `/v1/health`): KMS failed.
    KmsError,
    /// 503 (`/v1/health`): KMS refused the enclave's attested round trip.
    KmsAccessDenied,
    /// 503 (`/v1/health`): the enclave refused this parent's `Configure`.
    ConfigureRefused,
    /// 500: the enclave could not produce an attestation document.
    AttestationError,
    /// 503 (`/v1/health`): the enclave connection is not ready.
    NotReady,
    /// 503: no connection to the enclave.
    EnclaveUnavailable,
    /// 503: the enclave is busy.
    EnclaveBusy,
    /// 504: the enclave did not answer in time.
    EnclaveTimeout,
    /// 503: the enclave was configured by another KMS target (fatal).
    EnclaveConfiguredByAnother,
    /// 500: anything else (details in the log).
    Internal,
}

impl ApiCode {
    /// Every code, in declaration order.
    pub const ALL: [ApiCode; 47] = [
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Overloaded,
        Self::UnsupportedMediaType,
        Self::BodyTooLarge,
        Self::RequestTimeout,
        Self::InvalidBody,
        Self::InvalidJson,
        Self::InvalidQuery,
        Self::KeyNotFound,
        Self::TokenNotFound,
        Self::UnknownAlgorithm,
        Self::InvalidLabel,
        Self::InvalidOwner,
        Self::InvalidPolicy,
        Self::UnknownKind,
        Self::KindMismatch,
        Self::InvalidPayload,
        Self::UnsupportedPayload,
        Self::InvalidNonce,
        Self::InvalidExpiresAt,
        Self::InvalidOwnerSignature,
        Self::InvalidOwnerAuthorization,
        Self::KeyNotDisabled,
        Self::InvalidName,
        Self::InvalidScope,
        Self::InvalidKeyId,
        Self::TooManyTokens,
        Self::PolicyConflict,
        Self::PolicyDenied,
        Self::OwnerAuthorizationInvalid,
        Self::KeyDisabled,
        Self::StoreStopped,
        Self::BadRequest,
        Self::SealedStateInvalid,
        Self::KmsError,
        Self::KmsAccessDenied,
        Self::ConfigureRefused,
        Self::AttestationError,
        Self::NotReady,
        Self::EnclaveUnavailable,
        Self::EnclaveBusy,
        Self::EnclaveTimeout,
        Self::EnclaveConfiguredByAnother,
        Self::Internal,
    ];

    /// The code as the API writes it (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Overloaded => "overloaded",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTooLarge => "body_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::InvalidBody => "invalid_body",
            Self::InvalidJson => "invalid_json",
            Self::InvalidQuery => "invalid_query",
            Self::KeyNotFound => "key_not_found",
            Self::TokenNotFound => "token_not_found",
            Self::UnknownAlgorithm => "unknown_algorithm",
            Self::InvalidLabel => "invalid_label",
            Self::InvalidOwner => "invalid_owner",
            Self::InvalidPolicy => "invalid_policy",
            Self::UnknownKind => "unknown_kind",
            Self::KindMismatch => "kind_mismatch",
            Self::InvalidPayload => "invalid_payload",
            Self::UnsupportedPayload => "unsupported_payload",
            Self::InvalidNonce => "invalid_nonce",
            Self::InvalidExpiresAt => "invalid_expires_at",
            Self::InvalidOwnerSignature => "invalid_owner_signature",
            Self::InvalidOwnerAuthorization => "invalid_owner_authorization",
            Self::KeyNotDisabled => "key_not_disabled",
            Self::InvalidName => "invalid_name",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidKeyId => "invalid_key_id",
            Self::TooManyTokens => "too_many_tokens",
            Self::PolicyConflict => "policy_conflict",
            Self::PolicyDenied => "policy_denied",
            Self::OwnerAuthorizationInvalid => "owner_authorization_invalid",
            Self::KeyDisabled => "key_disabled",
            Self::StoreStopped => "store_stopped",
            Self::BadRequest => "bad_request",
            Self::SealedStateInvalid => "sealed_state_invalid",
            Self::KmsError => "kms_error",
            Self::KmsAccessDenied => "kms_access_denied",
            Self::ConfigureRefused => "configure_refused",
            Self::AttestationError => "attestation_error",
            Self::NotReady => "not_ready",
            Self::EnclaveUnavailable => "enclave_unavailable",
            Self::EnclaveBusy => "enclave_busy",
            Self::EnclaveTimeout => "enclave_timeout",
            Self::EnclaveConfiguredByAnother => "enclave_configured_by_another",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status an error with this code has (`/v1/health` answers every
    /// not-ready cause, `kms_error` included, with 503: [`ApiError::not_ready`]).
    pub fn status(self) -> StatusCode {
        use StatusCode as S;
        match self {
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::Forbidden
            | Self::PolicyDenied
            | Self::OwnerAuthorizationInvalid
            | Self::KeyDisabled
            | Self::StoreStopped => S::FORBIDDEN,
            Self::NotFound | Self::KeyNotFound | Self::TokenNotFound => S::NOT_FOUND,
            Self::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => S::REQUEST_TIMEOUT,
            Self::InvalidBody
            | Self::InvalidJson
            | Self::InvalidQuery
            | Self::UnknownAlgorithm
            | Self::InvalidLabel
            | Self::InvalidOwner
            | Self::InvalidPolicy
            | Self::UnknownKind
            | Self::KindMismatch
            | Self::InvalidPayload
            | Self::UnsupportedPayload
            | Self::InvalidNonce
            | Self::InvalidExpiresAt
            | Self::InvalidOwnerSignature
            | Self::InvalidOwnerAuthorization
            | Self::KeyNotDisabled
            | Self::InvalidName
            | Self::InvalidScope
            | Self::InvalidKeyId
            | Self::BadRequest => S::BAD_REQUEST,
            Self::TooManyTokens | Self::PolicyConflict => S::CONFLICT,
            Self::SealedStateInvalid | Self::AttestationError | Self::Internal => {
                S::INTERNAL_SERVER_ERROR
            }
            Self::KmsError => S::BAD_GATEWAY,
            Self::Overloaded
            | Self::KmsAccessDenied
            | Self::ConfigureRefused
            | Self::NotReady
            | Self::EnclaveUnavailable
            | Self::EnclaveBusy
            | Self::EnclaveConfiguredByAnother => S::SERVICE_UNAVAILABLE,
            Self::EnclaveTimeout => S::GATEWAY_TIMEOUT,
        }
    }
}

impl std::fmt::Display for ApiCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer of the application API. Serialises as
/// `{"error":{"code":"…","message":"…"}}`, with `"rule"` added for `policy_denied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status (the code's, but for `/v1/health`'s not-ready causes).
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ApiCode,
    /// Human-readable message.
    pub message: String,
    /// The policy rule that refused (only for `policy_denied`).
    pub rule: Option<String>,
}

impl ApiError {
    /// An error with `code` (and its status) and `message`.
    pub fn new(code: ApiCode, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            rule: None,
        }
    }

    /// 404 `key_not_found`.
    pub fn key_not_found() -> Self {
        Self::new(ApiCode::KeyNotFound, "no key with this id")
    }

    /// 404 `token_not_found`.
    pub fn token_not_found() -> Self {
        Self::new(ApiCode::TokenNotFound, "no token with this id")
    }

    /// 500 `sealed_state_invalid` with [`SEALED_STATE_INVALID_MESSAGE`].
    pub fn sealed_state_invalid() -> Self {
        Self::new(ApiCode::SealedStateInvalid, SEALED_STATE_INVALID_MESSAGE)
    }

    /// 401 `unauthenticated`: no `Authorization: Bearer` token, or one that is unknown,
    /// revoked or expired ([`crate::auth`]). The message says which of "none" and "not
    /// valid" it was, never why a presented token is not valid.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ApiCode::Unauthenticated, message)
    }

    /// 500 `internal` with a generic message (details go to the log, not the caller).
    pub fn internal() -> Self {
        Self::new(ApiCode::Internal, "internal error")
    }

    /// 503 with the cause of a failed enclave initialisation, for `/v1/health`.
    pub fn not_ready(code: NotReadyCode, message: impl Into<String>) -> Self {
        let code = match code {
            NotReadyCode::KmsAccessDenied => ApiCode::KmsAccessDenied,
            NotReadyCode::KmsError => ApiCode::KmsError,
            NotReadyCode::ConfigureRefused => ApiCode::ConfigureRefused,
            _ => ApiCode::NotReady,
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..Self::new(code, message)
        }
    }
}

impl From<crate::auth::Forbidden> for ApiError {
    fn from(f: crate::auth::Forbidden) -> Self {
        ApiError::new(ApiCode::Forbidden, f.0)
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Forbidden(message) => ApiError::new(ApiCode::Forbidden, message),
            ServiceError::KeyNotFound => ApiError::key_not_found(),
            ServiceError::TokenNotFound => ApiError::token_not_found(),
            ServiceError::Invalid { what, message } => {
                let code = match what {
                    Invalid::Label => ApiCode::InvalidLabel,
                    Invalid::Policy => ApiCode::InvalidPolicy,
                    Invalid::KindMismatch => ApiCode::KindMismatch,
                    Invalid::KeyNotDisabled => ApiCode::KeyNotDisabled,
                };
                ApiError::new(code, message)
            }
            ServiceError::PolicyDenied(refusal) => ApiError {
                rule: Some(refusal.rule),
                ..ApiError::new(ApiCode::PolicyDenied, refusal.message)
            },
            ServiceError::Parent(e) => e.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Enclave(wire) => wire.into(),
            Error::EnclaveUnavailable(message) => {
                ApiError::new(ApiCode::EnclaveUnavailable, message)
            }
            Error::EnclaveConfiguredByAnother(reason) => {
                ApiError::new(ApiCode::EnclaveConfiguredByAnother, reason)
            }
            Error::EnclaveTimeout(_) => ApiError::new(ApiCode::EnclaveTimeout, error.to_string()),
            Error::StoreCorrupt(detail) => {
                tracing::warn!(%detail, "stored key row is invalid");
                ApiError::sealed_state_invalid()
            }
            // Only encoding produces this here (an oversize answer from the enclave drops
            // the connection instead): the caller's request does not fit in one frame.
            Error::Protocol(ProtocolError::FrameTooLarge { max, .. }) => ApiError::new(
                ApiCode::BodyTooLarge,
                format!("the request does not fit in one enclave frame of {max} bytes"),
            ),
            Error::TooManyTokens(_) => ApiError::new(ApiCode::TooManyTokens, error.to_string()),
            Error::PolicyConflict { .. } => {
                ApiError::new(ApiCode::PolicyConflict, error.to_string())
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
        match wire {
            WireError::PolicyDenied { rule, message } => ApiError {
                rule: Some(rule),
                ..ApiError::new(ApiCode::PolicyDenied, message)
            },
            WireError::InvalidPayload { message } => {
                ApiError::new(ApiCode::InvalidPayload, message)
            }
            WireError::UnsupportedPayload { message } => {
                ApiError::new(ApiCode::UnsupportedPayload, message)
            }
            WireError::InvalidPolicy { message } => ApiError::new(ApiCode::InvalidPolicy, message),
            WireError::BadRequest { message } => ApiError::new(ApiCode::BadRequest, message),
            WireError::SealedStateInvalid => ApiError::sealed_state_invalid(),
            WireError::Kms { code, message } => {
                ApiError::new(ApiCode::KmsError, format!("KMS error {code}: {message}"))
            }
            WireError::Attestation { message } => ApiError::new(ApiCode::AttestationError, message),
            WireError::NotReady => {
                ApiError::new(ApiCode::EnclaveUnavailable, "the enclave is not ready")
            }
            WireError::Busy => ApiError::new(ApiCode::EnclaveBusy, "the enclave is busy; retry"),
            WireError::OwnerAuthorizationInvalid { message } => {
                ApiError::new(ApiCode::OwnerAuthorizationInvalid, message)
            }
            WireError::KeyDisabled => ApiError::new(
                ApiCode::KeyDisabled,
                "the key is disabled (emergency stop); only its owner can re-enable it",
            ),
            WireError::StoreStopped => ApiError::new(
                ApiCode::StoreStopped,
                "signing is stopped store-wide (POST /v1/admin/resume lifts it)",
            ),
            other => {
                tracing::error!(error = %other, "enclave error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorInfo {
                code: self.code.as_str().to_owned(),
                message: self.message,
                rule: self.rule,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code and its status, pinned: clients, the e2e tests and the OpenAPI spec
    /// match on them. A new code is added here; none is ever renamed.
    #[test]
    fn pins_every_code_and_status() {
        use StatusCode as S;
        let expected: [(&str, StatusCode); 47] = [
            ("unauthenticated", S::UNAUTHORIZED),
            ("forbidden", S::FORBIDDEN),
            ("not_found", S::NOT_FOUND),
            ("method_not_allowed", S::METHOD_NOT_ALLOWED),
            ("overloaded", S::SERVICE_UNAVAILABLE),
            ("unsupported_media_type", S::UNSUPPORTED_MEDIA_TYPE),
            ("body_too_large", S::PAYLOAD_TOO_LARGE),
            ("request_timeout", S::REQUEST_TIMEOUT),
            ("invalid_body", S::BAD_REQUEST),
            ("invalid_json", S::BAD_REQUEST),
            ("invalid_query", S::BAD_REQUEST),
            ("key_not_found", S::NOT_FOUND),
            ("token_not_found", S::NOT_FOUND),
            ("unknown_algorithm", S::BAD_REQUEST),
            ("invalid_label", S::BAD_REQUEST),
            ("invalid_owner", S::BAD_REQUEST),
            ("invalid_policy", S::BAD_REQUEST),
            ("unknown_kind", S::BAD_REQUEST),
            ("kind_mismatch", S::BAD_REQUEST),
            ("invalid_payload", S::BAD_REQUEST),
            ("unsupported_payload", S::BAD_REQUEST),
            ("invalid_nonce", S::BAD_REQUEST),
            ("invalid_expires_at", S::BAD_REQUEST),
            ("invalid_owner_signature", S::BAD_REQUEST),
            ("invalid_owner_authorization", S::BAD_REQUEST),
            ("key_not_disabled", S::BAD_REQUEST),
            ("invalid_name", S::BAD_REQUEST),
            ("invalid_scope", S::BAD_REQUEST),
            ("invalid_key_id", S::BAD_REQUEST),
            ("too_many_tokens", S::CONFLICT),
            ("policy_conflict", S::CONFLICT),
            ("policy_denied", S::FORBIDDEN),
            ("owner_authorization_invalid", S::FORBIDDEN),
            ("key_disabled", S::FORBIDDEN),
            ("store_stopped", S::FORBIDDEN),
            ("bad_request", S::BAD_REQUEST),
            ("sealed_state_invalid", S::INTERNAL_SERVER_ERROR),
            ("kms_error", S::BAD_GATEWAY),
            ("kms_access_denied", S::SERVICE_UNAVAILABLE),
            ("configure_refused", S::SERVICE_UNAVAILABLE),
            ("attestation_error", S::INTERNAL_SERVER_ERROR),
            ("not_ready", S::SERVICE_UNAVAILABLE),
            ("enclave_unavailable", S::SERVICE_UNAVAILABLE),
            ("enclave_busy", S::SERVICE_UNAVAILABLE),
            ("enclave_timeout", S::GATEWAY_TIMEOUT),
            ("enclave_configured_by_another", S::SERVICE_UNAVAILABLE),
            ("internal", S::INTERNAL_SERVER_ERROR),
        ];
        for (code, (text, status)) in ApiCode::ALL.iter().zip(expected) {
            assert_eq!((code.as_str(), code.status()), (text, status), "{code:?}");
        }
        let mut names: Vec<_> = ApiCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ApiCode::ALL.len(), "codes are distinct");
    }

    #[test]
    fn health_answers_every_not_ready_cause_with_503() {
        for (cause, code) in [
            (NotReadyCode::KmsAccessDenied, "kms_access_denied"),
            (NotReadyCode::KmsError, "kms_error"),
            (NotReadyCode::ConfigureRefused, "configure_refused"),
            (NotReadyCode::NotReady, "not_ready"),
        ] {
            let e = ApiError::not_ready(cause, "x");
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, code)
            );
            assert_eq!(
                e.code.as_str(),
                cause.as_str(),
                "health codes are the relay's"
            );
        }
    }

    #[test]
    fn policy_denied_carries_rule() {
        let e: ApiError = Error::Enclave(WireError::PolicyDenied {
            rule: "evm.chain_ids".into(),
            message: "chain 5 not allowed".into(),
        })
        .into();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code, ApiCode::PolicyDenied);
        assert_eq!(e.rule.as_deref(), Some("evm.chain_ids"));
        let s: ApiError = ServiceError::from(Error::Enclave(WireError::PolicyDenied {
            rule: "evm.chain_ids".into(),
            message: "chain 5 not allowed".into(),
        }))
        .into();
        assert_eq!(s, e, "the service's typed refusal answers the same");
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
        assert_eq!(e.code, ApiCode::EnclaveUnavailable);
        let e: ApiError = WireError::Kms {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        }
        .into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_GATEWAY, ApiCode::KmsError)
        );
        let e: ApiError = Error::PolicyConflict { expected: 3 }.into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, ApiCode::PolicyConflict)
        );
        let e: ApiError = Error::EnclaveTimeout(30).into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::GATEWAY_TIMEOUT, ApiCode::EnclaveTimeout)
        );
        let e: ApiError = Error::TooManyTokens(1000).into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, ApiCode::TooManyTokens)
        );
    }

    #[test]
    fn rejects_exposing_internal_errors() {
        let e: ApiError = Error::Internal("secret detail".into()).into();
        assert_eq!(e, ApiError::internal());
        assert!(!e.message.contains("secret"));
    }
}
