//! [`Error`]: the error of the parent's crate boundary (configuration, I/O, key store,
//! relay, enclave); the key store's own errors ([`crate::store::StoreError`]) map into it. What the application API answers is [`crate::api::ApiError`]; what
//! the service layer answers is [`crate::service::ServiceError`].
//!
//! Messages carry no secrets (credentials never reach an error).

use ekms_shared::{ProtocolError, WireError};

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
    /// The key store failed (open, schema, query, commit); its row-level refusals
    /// come as the variants below.
    #[error(transparent)]
    Store(crate::store::StoreError),
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

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::Corrupt(detail) => Error::StoreCorrupt(detail),
            S::PolicyConflict { expected } => Error::PolicyConflict { expected },
            S::AlreadyExists(what) => Error::AlreadyExists(what),
            S::TooManyTokens(max) => Error::TooManyTokens(max),
            S::Schema(message) => Error::Config(message),
            other => Error::Store(other),
        }
    }
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
