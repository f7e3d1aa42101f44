//! Errors of this crate: [`ProtocolError`] (framing, decoding, address parsing: local to
//! whoever calls the codec) and [`WireError`] (the stable error the enclave sends back in a
//! response, STYLE rule 8). The two are separate on purpose: internal errors of the enclave
//! crate map into `WireError` at its boundary and never cross the wire as they are.

use serde::{Deserialize, Serialize};

use crate::codec::PROTOCOL_VERSION;

/// Error from framing, encoding or decoding a frame, or from parsing an [`crate::Address`].
///
/// Decode errors that occur after the frame header (`version`, `request_id`) was read
/// carry the request id, so the enclave can answer that request with
/// [`ProtocolError::to_wire`] instead of dropping the connection; see
/// [`ProtocolError::request_id`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The length prefix (or an encoded body) exceeds [`crate::MAX_FRAME_LEN`].
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Declared or actual body length in bytes.
        len: usize,
        /// The maximum, [`crate::MAX_FRAME_LEN`].
        max: usize,
    },
    /// The length prefix is zero: no frame is empty.
    #[error("empty frame")]
    EmptyFrame,
    /// The CBOR body ends before the value does (includes a string or array header that
    /// declares more bytes than the frame holds).
    #[error("truncated frame: the CBOR body ends early")]
    Truncated,
    /// Bytes remain after the single CBOR value of a frame body.
    #[error("{count} trailing bytes after the CBOR value")]
    TrailingBytes {
        /// Number of leftover bytes.
        count: usize,
    },
    /// CBOR nesting deeper than [`crate::MAX_CBOR_DEPTH`].
    #[error("CBOR nesting deeper than {max} levels")]
    TooDeep {
        /// The limit, [`crate::MAX_CBOR_DEPTH`].
        max: usize,
    },
    /// The frame header could not be read (not CBOR, or not a map with `version`,
    /// `request_id` and `body`).
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What was wrong (at most 200 characters).
        reason: String,
    },
    /// The frame's `version` is not [`PROTOCOL_VERSION`].
    #[error(
        "unsupported protocol version {version} (this build speaks version {PROTOCOL_VERSION})"
    )]
    UnsupportedVersion {
        /// Version found in the frame.
        version: u16,
        /// Request id found in the frame.
        request_id: u64,
    },
    /// The header was valid but the body is not a valid message of this version (wrong
    /// types, unknown variant or field, missing field, a field over its limit).
    #[error("invalid message body: {reason}")]
    InvalidBody {
        /// Request id found in the frame header.
        request_id: u64,
        /// What was wrong (at most 200 characters).
        reason: String,
    },
    /// A frame could not be encoded (wrong version, field over its limit, body too large).
    #[error("cannot encode frame: {reason}")]
    Encode {
        /// What was wrong.
        reason: String,
    },
    /// A transport address string is not `vsock://CID:PORT` or `unix:/path`.
    #[error("invalid transport address {input:?}: {reason}")]
    InvalidAddress {
        /// The input (at most 128 characters of it).
        input: String,
        /// What was wrong.
        reason: &'static str,
    },
}

impl ProtocolError {
    /// The request id of the offending frame, when its header could be read: `Some` for
    /// [`ProtocolError::UnsupportedVersion`] and [`ProtocolError::InvalidBody`].
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ProtocolError::UnsupportedVersion { request_id, .. }
            | ProtocolError::InvalidBody { request_id, .. } => Some(*request_id),
            _ => None,
        }
    }

    /// The error to send back for a request that failed to decode:
    /// [`WireError::BadRequest`] with this error's message.
    pub fn to_wire(&self) -> WireError {
        WireError::BadRequest {
            message: self.to_string(),
        }
    }
}

/// The stable error an enclave returns in a [`crate::ResponseFrame`].
///
/// Variant names are the CBOR encoding (externally tagged), and [`WireError::code`] is a
/// stable snake_case string for logs, metrics and the parent's HTTP API. Never renumber,
/// rename or reuse a variant; add new ones at the end (with a protocol version bump).
///
/// Failures of sealed state (AES-GCM open of a key record, policy MAC, data-key mismatch)
/// are all [`WireError::SealedStateInvalid`] without detail, so a caller who tampers with
/// stored blobs learns nothing about which check failed (no oracle, STYLE rule 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The enclave is not configured yet (state `Booting`), or not ready for this request.
    #[error("enclave not ready")]
    NotReady,
    /// `Configure` was sent to an enclave that is already configured.
    #[error("enclave already configured")]
    AlreadyConfigured,
    /// The request is malformed or not allowed in this form.
    #[error("bad request: {message}")]
    BadRequest {
        /// Human-readable reason.
        message: String,
    },
    /// The payload kind or format is not supported (for this key's algorithm).
    #[error("unsupported payload: {message}")]
    UnsupportedPayload {
        /// Human-readable reason.
        message: String,
    },
    /// The payload could not be decoded as the declared kind.
    #[error("invalid payload: {message}")]
    InvalidPayload {
        /// Human-readable reason.
        message: String,
    },
    /// The key's policy refuses this payload.
    #[error("denied by policy rule {rule}: {message}")]
    PolicyDenied {
        /// Identifier of the rule that denied.
        rule: String,
        /// Human-readable reason.
        message: String,
    },
    /// A policy document sent for `GenerateKey`/`SetPolicy` is not valid.
    #[error("invalid policy: {message}")]
    InvalidPolicy {
        /// Human-readable reason.
        message: String,
    },
    /// A sealed key record, policy or data key failed to verify. Deliberately no detail.
    #[error("sealed state invalid")]
    SealedStateInvalid,
    /// AWS KMS (or the emulator) returned an error.
    #[error("KMS error {code}: {message}")]
    Kms {
        /// KMS error code, e.g. `AccessDeniedException`.
        code: String,
        /// KMS error message.
        message: String,
    },
    /// Producing an attestation document failed.
    #[error("attestation failed: {message}")]
    Attestation {
        /// Human-readable reason.
        message: String,
    },
    /// The enclave is at its in-flight limit; retry later.
    #[error("enclave busy")]
    Busy,
    /// An internal error; details are in the enclave's log only.
    #[error("internal error")]
    Internal,
    /// A change that needs the key owner's authorization came without a valid one
    /// (missing, wrong signer, wrong version or policy hash, expired). Deliberately no
    /// detail beyond the message.
    #[error("owner authorization invalid: {message}")]
    OwnerAuthorizationInvalid {
        /// Human-readable reason.
        message: String,
    },
    /// The key's policy is disabled (emergency stop); only an enable brings it back.
    #[error("key disabled")]
    KeyDisabled,
    /// The store-wide stop is in force: nothing is signed.
    #[error("signing is stopped store-wide")]
    StoreStopped,
}

impl WireError {
    /// Stable snake_case code of the variant (e.g. `"sealed_state_invalid"`).
    pub fn code(&self) -> &'static str {
        match self {
            WireError::NotReady => "not_ready",
            WireError::AlreadyConfigured => "already_configured",
            WireError::BadRequest { .. } => "bad_request",
            WireError::UnsupportedPayload { .. } => "unsupported_payload",
            WireError::InvalidPayload { .. } => "invalid_payload",
            WireError::PolicyDenied { .. } => "policy_denied",
            WireError::InvalidPolicy { .. } => "invalid_policy",
            WireError::SealedStateInvalid => "sealed_state_invalid",
            WireError::Kms { .. } => "kms",
            WireError::Attestation { .. } => "attestation",
            WireError::Busy => "busy",
            WireError::Internal => "internal",
            WireError::OwnerAuthorizationInvalid { .. } => "owner_authorization_invalid",
            WireError::KeyDisabled => "key_disabled",
            WireError::StoreStopped => "store_stopped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<WireError> {
        let m = || "m".to_string();
        vec![
            WireError::NotReady,
            WireError::AlreadyConfigured,
            WireError::BadRequest { message: m() },
            WireError::UnsupportedPayload { message: m() },
            WireError::InvalidPayload { message: m() },
            WireError::PolicyDenied {
                rule: "chain_id".into(),
                message: m(),
            },
            WireError::InvalidPolicy { message: m() },
            WireError::SealedStateInvalid,
            WireError::Kms {
                code: "AccessDeniedException".into(),
                message: m(),
            },
            WireError::Attestation { message: m() },
            WireError::Busy,
            WireError::Internal,
            WireError::OwnerAuthorizationInvalid { message: m() },
            WireError::KeyDisabled,
            WireError::StoreStopped,
        ]
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let codes: Vec<_> = all().iter().map(WireError::code).collect();
        let set: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(set.len(), codes.len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        assert_eq!(WireError::SealedStateInvalid.code(), "sealed_state_invalid");
    }

    #[test]
    fn rejects_detail_in_sealed_state_error() {
        // No oracle: the message names no check.
        assert_eq!(
            WireError::SealedStateInvalid.to_string(),
            "sealed state invalid"
        );
    }

    #[test]
    fn request_id_only_after_header() {
        let e = ProtocolError::InvalidBody {
            request_id: 7,
            reason: "x".into(),
        };
        assert_eq!(e.request_id(), Some(7));
        assert_eq!(e.to_wire().code(), "bad_request");
        assert_eq!(ProtocolError::Truncated.request_id(), None);
    }
}
