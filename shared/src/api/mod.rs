//! The application API's request and answer shapes (HTTP/JSON on the parent's socket),
//! in one place for the parent (which parses requests and writes errors with them),
//! the `ekms` CLI and the benchmark (which build requests and read errors with them).
//! No I/O: the one client is the `ekms-client` crate.
//!
//! Rule for maintainers: the JSON field names are API (the e2e tests, the Python and
//! TypeScript clients and docs/openapi.json depend on them): add fields, never rename
//! one. Request bodies refuse unknown fields; answers other than the sign answers (whose
//! untagged enum tells kinds apart by their fields) accept them, so that an older CLI
//! reads a newer parent. A field the spec lists as required but nullable is always
//! written (`null` when empty) and must be present to read ([`required_nullable`]); an
//! optional one is left out when empty.
//!
//! One module per route family: [`keys`], [`tokens`], [`policy`] (changes, stop, audit)
//! and [`status`] (health, attestation); this file holds the requests, the sign
//! answers and the error body.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::audit::Receipt;
use crate::owner::OwnerJson;

pub mod keys;
pub mod policy;
pub mod status;
pub mod tokens;

pub use keys::{
    CreatedKey, FeeCap, KeyAlgorithm, KeyDetail, KeyFields, KeyList, KeyListItem, KeyStatement,
};
pub use policy::{AuditEntry, AuditPage, EnabledState, PolicyVersion, Proposal, StopState};
pub use status::{Attestation, Health, HealthMode, HealthStatus};
pub use tokens::{CreatedToken, RevokedToken, TokenInfo, TokenList};

/// Reads a field the spec lists as required but nullable: `null` is `None`, absence
/// is an error (serde's default for an `Option` field would take absence as `None`).
/// Use as `#[serde(deserialize_with = "required_nullable")]`.
///
/// # Errors
/// The deserializer's, for a value that is neither `null` nor a `T`.
pub fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// `secp256k1` or `ed25519` ([`KeyAlgorithm`]); the parent answers any other
    /// string ([`KeyAlgorithm::Other`]) with 400 `unknown_algorithm`.
    pub algorithm: KeyAlgorithm,
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

/// The answer of `POST /v1/keys/{key_id}/sign`, by payload kind (untagged: the
/// fields tell them apart; bytes are `0x` hex for EVM, base58 for Solana signatures
/// and base64 for Solana transactions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SignResponse {
    /// `evm_transaction`.
    EvmTransaction(EvmTransactionSigned),
    /// `evm_message`, `evm_typed_data`, `evm_digest`.
    EvmDigest(EvmDigestSigned),
    /// `solana_transaction`.
    SolanaTransaction(SolanaTransactionSigned),
    /// `solana_offchain_message`.
    SolanaMessage(SolanaMessageSigned),
}

/// A signed EVM transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmTransactionSigned {
    /// The signature's parts.
    pub signature: EvmSignature,
    /// The signed EIP-2718 transaction, `0x` hex.
    pub signed_transaction: String,
    /// Its keccak-256 hash, `0x` hex.
    pub transaction_hash: String,
    /// The receipt of the decision's audit record.
    pub receipt: Receipt,
}

/// An EVM transaction's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmSignature {
    /// `r`, `0x` hex (32 bytes).
    pub r: String,
    /// `s`, `0x` hex (32 bytes, low-s).
    pub s: String,
    /// The recovery parity (0 or 1).
    pub y_parity: u8,
    /// `v` as the transaction encodes it (EIP-155 for legacy, else `y_parity`).
    pub v: u64,
}

/// A signed EVM digest (EIP-191 message, EIP-712 typed data, raw digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmDigestSigned {
    /// `eth_sign`'s 65 bytes `r || s || v` (`v` = 27 + parity), `0x` hex.
    pub signature: String,
    /// `r`, `0x` hex.
    pub r: String,
    /// `s`, `0x` hex.
    pub s: String,
    /// 27 + `y_parity`.
    pub v: u8,
    /// The recovery parity (0 or 1).
    pub y_parity: u8,
    /// The signed digest, `0x` hex.
    pub digest: String,
    /// The receipt of the decision's audit record.
    pub receipt: Receipt,
}

/// A signed Solana transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolanaTransactionSigned {
    /// The ed25519 signature, base58.
    pub signature: String,
    /// The signed transaction, base64.
    pub signed_transaction: String,
    /// The receipt of the decision's audit record.
    pub receipt: Receipt,
}

/// A signed Solana off-chain message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolanaMessageSigned {
    /// The ed25519 signature, base58.
    pub signature: String,
    /// The receipt of the decision's audit record.
    pub receipt: Receipt,
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
            algorithm: KeyAlgorithm::Ed25519,
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
    fn tells_sign_answers_apart_by_their_fields() {
        let receipt = r#""receipt":{"seq":1,"record_sha256":"ab","signature":"0x01"}"#;
        let solana_tx = format!(r#"{{"signature":"5x","signed_transaction":"AA==",{receipt}}}"#);
        let solana_msg = format!(r#"{{"signature":"5x",{receipt}}}"#);
        let evm = format!(
            r#"{{"signature":{{"r":"0x1","s":"0x2","y_parity":1,"v":38}},"signed_transaction":"0x02","transaction_hash":"0x3",{receipt}}}"#
        );
        let parse = |t: &str| serde_json::from_str::<SignResponse>(t).ok();
        assert!(matches!(
            parse(&solana_tx),
            Some(SignResponse::SolanaTransaction(_))
        ));
        assert!(matches!(
            parse(&solana_msg),
            Some(SignResponse::SolanaMessage(_))
        ));
        assert!(matches!(parse(&evm), Some(SignResponse::EvmTransaction(_))));
        for answer in [&solana_tx, &solana_msg, &evm] {
            let back = parse(answer).and_then(|r| serde_json::to_string(&r).ok());
            let same = back.and_then(|b| serde_json::from_str::<Value>(&b).ok());
            assert_eq!(same, serde_json::from_str::<Value>(answer).ok(), "{answer}");
        }
    }

    #[test]
    fn rejects_unknown_request_fields() {
        assert!(
            serde_json::from_str::<SignRequest>(r#"{"kind":"x","payload":"y","z":1}"#).is_err()
        );
        assert!(serde_json::from_str::<CreateKeyRequest>(r#"{"algorithm":"x","key":1}"#).is_err());
    }
}
