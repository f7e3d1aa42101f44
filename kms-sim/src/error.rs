//! Errors of the emulator: [`ApiError`], the KMS-shaped error a request gets back
//! (`__type` + `message` body, `x-amzn-ErrorType` header, KMS's HTTP status), and
//! [`SimError`], the crate-boundary error of startup and serving.
//!
//! Rule for maintainers: an [`ApiError`] message goes to the caller; it never carries
//! key material, plaintext or the text of a request body.

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The KMS exception names this emulator answers with, as in the `__type` field of a
/// KMS JSON 1.1 error body (AWS KMS API Reference, "Common Errors" and each
/// operation's "Errors" section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `NotFoundException` (400): the key id or ARN names no key.
    NotFound,
    /// `AccessDeniedException` (400): the key policy does not allow the request.
    AccessDenied,
    /// `InvalidCiphertextException` (400): the ciphertext or its encryption context is
    /// corrupted, missing or otherwise invalid.
    InvalidCiphertext,
    /// `IncorrectKeyException` (400): the `KeyId` of a Decrypt is not the key of the blob.
    IncorrectKey,
    /// `ValidationException` (400): a parameter violates a constraint.
    Validation,
    /// `SerializationException` (400): the body is not a JSON object of the right shape.
    Serialization,
    /// `MalformedPolicyDocumentException` (400): a key policy does not parse or uses
    /// something this evaluator does not support.
    MalformedPolicyDocument,
    /// `UnknownOperationException` (400): `X-Amz-Target` names no operation.
    UnknownOperation,
    /// `UnsupportedOperationException` (400): a valid KMS request the emulator does not
    /// implement (for example an asymmetric `KeySpec`).
    UnsupportedOperation,
    /// `InvalidKeyUsageException` (400): an encryption algorithm the key cannot use.
    InvalidKeyUsage,
    /// `DryRunOperationException` (412): `DryRun` was set and the request would succeed.
    DryRunOperation,
    /// `ThrottlingException` (400): too many requests (also injected on demand).
    Throttling,
    /// `KMSInternalException` (500): an internal failure (also injected on demand).
    Internal,
    /// `DependencyTimeoutException` (503): the service timed out; retryable.
    DependencyTimeout,
}

impl ErrorKind {
    /// The exception name sent in `__type` and `x-amzn-ErrorType`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::NotFound => "NotFoundException",
            Self::AccessDenied => "AccessDeniedException",
            Self::InvalidCiphertext => "InvalidCiphertextException",
            Self::IncorrectKey => "IncorrectKeyException",
            Self::Validation => "ValidationException",
            Self::Serialization => "SerializationException",
            Self::MalformedPolicyDocument => "MalformedPolicyDocumentException",
            Self::UnknownOperation => "UnknownOperationException",
            Self::UnsupportedOperation => "UnsupportedOperationException",
            Self::InvalidKeyUsage => "InvalidKeyUsageException",
            Self::DryRunOperation => "DryRunOperationException",
            Self::Throttling => "ThrottlingException",
            Self::Internal => "KMSInternalException",
            Self::DependencyTimeout => "DependencyTimeoutException",
        }
    }

    /// The HTTP status KMS answers this exception with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::DryRunOperation => StatusCode::PRECONDITION_FAILED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DependencyTimeout => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A KMS error answer: the exception and a human-readable message (no secrets, no
/// echo of the request body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.type_name())]
pub struct ApiError {
    /// Which KMS exception.
    pub kind: ErrorKind,
    /// The `message` field of the answer.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// `ValidationException` with `message`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    /// `AccessDeniedException` with `message`.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AccessDenied, message)
    }

    /// `KMSInternalException` with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "__type": self.kind.type_name(),
            "message": self.message,
        });
        let mut response = (self.kind.status(), body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(crate::api::JSON_CONTENT_TYPE),
        );
        headers.insert(
            "x-amzn-ErrorType",
            HeaderValue::from_static(self.kind.type_name()),
        );
        response
    }
}

/// Failure to start or run the emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A file or directory of the state could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A state file exists but does not parse: the emulator refuses to start rather
    /// than forget a key.
    #[error("corrupted state file {path}: {reason}")]
    CorruptState {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The attestation root (PEM) could not be loaded.
    #[error("attestation root {path}: {reason}")]
    AttestationRoot {
        /// The configured root file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration is inconsistent (for example an empty region).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The HTTP server failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_has_kms_shape() {
        let response = ApiError::new(ErrorKind::NotFound, "no such key").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response
                .headers()
                .get("x-amzn-ErrorType")
                .map(|v| v.as_bytes()),
            Some(&b"NotFoundException"[..])
        );
    }

    #[test]
    fn rejects_success_status_for_server_faults() {
        assert_eq!(
            ErrorKind::Internal.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ErrorKind::DependencyTimeout.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ErrorKind::Throttling.status(), StatusCode::BAD_REQUEST);
    }
}
