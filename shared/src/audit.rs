//! The audit chain (issue 7 item 5): every decision the enclave makes — a signature, a
//! refusal with its rule, a policy change, a disable, an enable, a store-wide stop or
//! resume, a boot — is one [`AuditRecord`], hash-chained to the one before it across
//! enclave restarts and signed by the enclave's **audit key**.
//!
//! The audit key is an ed25519 key drawn from the NSM at each boot; an attestation
//! document binds it with `user_data = "ekms/v1/audit-key:" || SHA-256(public key)`
//! ([`audit_user_data`]). The parent stores the records and the documents, and cannot
//! edit, drop, reorder or insert a record without `ekms audit verify` finding it:
//!
//! - record `n`'s `prev_hash` is the SHA-256 of record `n-1`'s canonical JSON
//!   ([`SignedAuditRecord::record_sha256`]); the first record's is 32 zero bytes;
//! - `seq` goes up by one from record to record;
//! - each record is signed (ed25519, RFC 8032) over `"ekms/v1/audit-record\n" || JSON`
//!   by an audit key that a verified attestation document binds;
//! - a client keeps the `receipt` of each signature (`{seq, record_sha256, signature}`)
//!   and can check that the chain holds exactly that record.
//!
//! Records hold no secret and no payload, only its SHA-256.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Prefix of the signed bytes: `"ekms/v1/audit-record\n" || canonical JSON`.
pub const AUDIT_DOMAIN: &[u8] = b"ekms/v1/audit-record\n";
/// Prefix of the attestation document's `user_data` that binds an audit key; the
/// SHA-256 of the 32-byte ed25519 public key follows.
pub const AUDIT_USER_DATA_PREFIX: &[u8] = b"ekms/v1/audit-key:";
/// Longest record JSON accepted, in bytes (checked before parsing).
pub const MAX_AUDIT_RECORD_LEN: usize = 1024;
/// `prev_hash` of the first record of a chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// What was decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An enclave started and joined the chain (its audit key begins here).
    Boot,
    /// A key was generated.
    CreateKey,
    /// A signing request.
    Sign,
    /// A policy change.
    SetPolicy,
    /// An emergency stop of one key.
    Disable,
    /// A re-enable of one key.
    Enable,
    /// The store-wide stop.
    Stop,
    /// The end of the store-wide stop.
    Resume,
}

impl AuditAction {
    /// Every action, for tests that pin the names.
    pub const ALL: [AuditAction; 8] = [
        AuditAction::Boot,
        AuditAction::CreateKey,
        AuditAction::Sign,
        AuditAction::SetPolicy,
        AuditAction::Disable,
        AuditAction::Enable,
        AuditAction::Stop,
        AuditAction::Resume,
    ];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Boot => "boot",
            AuditAction::CreateKey => "create_key",
            AuditAction::Sign => "sign",
            AuditAction::SetPolicy => "set_policy",
            AuditAction::Disable => "disable",
            AuditAction::Enable => "enable",
            AuditAction::Stop => "stop",
            AuditAction::Resume => "resume",
        }
    }
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// Done (signed, changed).
    Allowed,
    /// Refused; `rule` says why.
    Refused,
}

/// One record. Field order is the canonical order of its JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain, from 1, no gaps.
    pub seq: u64,
    /// Enclave clock, milliseconds since the Unix epoch.
    pub time: u64,
    /// The key decided on (`None` for boot, stop, resume).
    pub key_id: Option<String>,
    /// What was decided on.
    pub action: AuditAction,
    /// For `sign`: the payload kind (`evm_transaction`, `solana_transaction`).
    pub payload_kind: Option<String>,
    /// For `sign`: lowercase hex SHA-256 of the payload bytes as sent.
    pub payload_sha256: Option<String>,
    /// The policy version the decision was made under (for a change: the new one).
    pub policy_version: Option<u64>,
    /// Lowercase hex SHA-256 of that policy's canonical JSON (the hash an owner signs):
    /// what a key's creation, each change and each signature ran under.
    pub policy_sha256: Option<String>,
    /// Allowed or refused.
    pub decision: AuditDecision,
    /// For a refusal: the rule or error code that refused it.
    pub rule: Option<String>,
    /// Lowercase hex SHA-256 of the previous record's canonical JSON.
    pub prev_hash: String,
}

impl AuditRecord {
    /// The canonical JSON (this struct's field order, no whitespace).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self)
            .expect("invariant: a struct of strings, integers and enums always serializes")
    }
}

/// A record as stored and sent: its exact JSON, the signature and the audit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAuditRecord {
    /// The record's canonical JSON.
    pub record: String,
    /// ed25519 signature over `AUDIT_DOMAIN || record`.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
    /// The audit key that signed it.
    #[serde(with = "serde_bytes")]
    pub audit_key: [u8; 32],
}

/// Why a record does not verify on its own (chain checks are the verifier's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Over [`MAX_AUDIT_RECORD_LEN`].
    #[error("audit record is larger than {MAX_AUDIT_RECORD_LEN} bytes")]
    TooLarge,
    /// Not a canonical record.
    #[error("audit record is not canonical JSON")]
    Malformed,
    /// The signature does not verify under the record's audit key.
    #[error("audit record signature does not verify")]
    BadSignature,
}

impl SignedAuditRecord {
    /// Signs `record` with the audit key `key`.
    pub fn sign(key: &ed25519_dalek::SigningKey, record: &AuditRecord) -> Self {
        Self::sign_canonical(key, record.canonical_json())
    }

    /// Signs `json`, which must be a record's [`AuditRecord::canonical_json`] (so that
    /// a caller can hash the text, and link the next record to it, before it signs).
    pub fn sign_canonical(key: &ed25519_dalek::SigningKey, json: String) -> Self {
        use ed25519_dalek::Signer as _;
        Self {
            signature: key.sign(&signing_input(&json)).to_bytes(),
            record: json,
            audit_key: key.verifying_key().to_bytes(),
        }
    }

    /// SHA-256 of the record's JSON: what the next record's `prev_hash` and a receipt's
    /// `record_sha256` name.
    pub fn record_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.record.as_bytes()).into()
    }

    /// Parses the record (bounded, canonical) and checks its signature under
    /// `audit_key`. Whether that key is bound by a verified attestation document is the
    /// caller's check ([`audit_user_data`]).
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn verify(&self) -> Result<AuditRecord, AuditError> {
        if self.record.len() > MAX_AUDIT_RECORD_LEN {
            return Err(AuditError::TooLarge);
        }
        let record: AuditRecord =
            serde_json::from_str(&self.record).map_err(|_| AuditError::Malformed)?;
        if record.canonical_json() != self.record {
            return Err(AuditError::Malformed);
        }
        let key =
            VerifyingKey::from_bytes(&self.audit_key).map_err(|_| AuditError::BadSignature)?;
        key.verify_strict(
            &signing_input(&self.record),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| AuditError::BadSignature)?;
        Ok(record)
    }
}

fn signing_input(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUDIT_DOMAIN.len() + json.len());
    out.extend_from_slice(AUDIT_DOMAIN);
    out.extend_from_slice(json.as_bytes());
    out
}

/// `user_data` of the attestation document that binds `audit_key`:
/// `"ekms/v1/audit-key:" || SHA-256(audit_key)`.
pub fn audit_user_data(audit_key: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUDIT_USER_DATA_PREFIX.len() + 32);
    out.extend_from_slice(AUDIT_USER_DATA_PREFIX);
    out.extend_from_slice(&Sha256::digest(audit_key));
    out
}

/// What a client keeps of a signing answer to check later that the chain holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The record's `seq`.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the record's JSON.
    pub record_sha256: String,
    /// `0x` hex of the record's ed25519 signature.
    pub signature: String,
}

impl Receipt {
    /// The receipt of `record`.
    pub fn of(record: &SignedAuditRecord, seq: u64) -> Self {
        Self {
            seq,
            record_sha256: hex::encode(record.record_sha256()),
            signature: format!("0x{}", hex::encode(record.signature)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> AuditRecord {
        AuditRecord {
            seq,
            time: 1,
            key_id: Some("k".into()),
            action: AuditAction::Sign,
            payload_kind: Some("evm_transaction".into()),
            payload_sha256: Some("00".repeat(32)),
            policy_version: Some(1),
            policy_sha256: None,
            decision: AuditDecision::Refused,
            rule: Some("chain_id".into()),
            prev_hash: hex::encode(GENESIS_HASH),
        }
    }

    #[test]
    fn action_names_are_pinned() {
        let names: Vec<_> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "boot",
                "create_key",
                "sign",
                "set_policy",
                "disable",
                "enable",
                "stop",
                "resume"
            ]
        );
        for a in AuditAction::ALL {
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
        }
    }

    #[test]
    fn signed_record_verifies_and_names_its_hash() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let signed = SignedAuditRecord::sign(&key, &record(1));
        assert_eq!(signed.verify().unwrap(), record(1));
        assert_eq!(
            signed.record_sha256(),
            <[u8; 32]>::from(Sha256::digest(signed.record.as_bytes()))
        );
        let r = Receipt::of(&signed, 1);
        assert_eq!(r.record_sha256.len(), 64);
    }

    #[test]
    fn rejects_edited_or_non_canonical_records() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let signed = SignedAuditRecord::sign(&key, &record(1));
        let mut edited = signed.clone();
        edited.record = edited.record.replace("\"refused\"", "\"allowed\"");
        assert_eq!(edited.verify(), Err(AuditError::BadSignature));
        let mut spaced = signed.clone();
        spaced.record = spaced.record.replacen(':', ": ", 1);
        assert_eq!(spaced.verify(), Err(AuditError::Malformed));
        let mut other_key = signed.clone();
        other_key.audit_key = ed25519_dalek::SigningKey::from_bytes(&[4; 32])
            .verifying_key()
            .to_bytes();
        assert_eq!(other_key.verify(), Err(AuditError::BadSignature));
        let mut big = signed;
        big.record = "x".repeat(MAX_AUDIT_RECORD_LEN + 1);
        assert_eq!(big.verify(), Err(AuditError::TooLarge));
    }

    #[test]
    fn audit_user_data_binds_the_key_hash() {
        let ud = audit_user_data(&[7; 32]);
        assert!(ud.starts_with(AUDIT_USER_DATA_PREFIX));
        assert_eq!(
            &ud[AUDIT_USER_DATA_PREFIX.len()..],
            &Sha256::digest([7u8; 32])[..]
        );
    }
}
