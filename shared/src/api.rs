//! The application API's request and answer shapes (HTTP/JSON on the parent's socket),
//! in one place for the parent (which parses requests and writes errors with them),
//! the `ekms` CLI and the benchmark (which build requests and read errors with them).
//! No I/O: the one client is the `ekms-client` crate.
//!
//! Rule for maintainers: the JSON field names are API (the e2e tests, the Python and
//! TypeScript clients and the OpenAPI spec depend on them): add fields, never rename
//! one. Request bodies refuse unknown fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::owner::OwnerJson;

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// `secp256k1` or `ed25519`.
    pub algorithm: String,
    /// A label of the caller's (at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The first policy (a JSON object, docs/POLICY.md); `{"enabled":true}` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// The key's owner, who signs its policy changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerJson>,
}

/// `POST /v1/keys/{key_id}/sign`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The payload kind ([`crate::PayloadKind::as_str`]).
    pub kind: String,
    /// A string (`0x` hex, base64 or, for `evm_typed_data`, the JSON text) or, for
    /// `evm_typed_data` only, the JSON object itself.
    pub payload: Value,
}

/// Every error answer: `{"error":{"code","message","rule"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable machine-readable code (the parent's `ApiCode`).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The policy rule that refused (only for `policy_denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_wire_field_names() {
        let create = CreateKeyRequest {
            algorithm: "ed25519".into(),
            label: Some("bot".into()),
            policy: None,
            owner: None,
        };
        assert_eq!(
            serde_json::to_string(&create).unwrap_or_default(),
            r#"{"algorithm":"ed25519","label":"bot"}"#
        );
        let sign = SignRequest {
            kind: "evm_transaction".into(),
            payload: Value::String("0x02".into()),
        };
        assert_eq!(
            serde_json::to_string(&sign).unwrap_or_default(),
            r#"{"kind":"evm_transaction","payload":"0x02"}"#
        );
        let error: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"policy_denied","message":"no","rule":"evm.chain_ids"}}"#,
        )
        .expect("an error body");
        assert_eq!(error.error.rule.as_deref(), Some("evm.chain_ids"));
    }

    #[test]
    fn rejects_unknown_request_fields() {
        assert!(
            serde_json::from_str::<SignRequest>(r#"{"kind":"x","payload":"y","z":1}"#).is_err()
        );
        assert!(serde_json::from_str::<CreateKeyRequest>(r#"{"algorithm":"x","key":1}"#).is_err());
    }
}
