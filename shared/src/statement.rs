//! Key statements: the enclave's signed word on what a key is (issue 6, "verifiable key
//! identity").
//!
//! The parent stores a key's address and public key in columns that a database admin can
//! rewrite: a user funding "their" key would then pay whoever chose the new address. So
//! the enclave, which alone has opened the sealed record, signs a statement
//! `{key_id, algorithm, public_key, address, owner, created_at}` with its **identity
//! key**: an ed25519 key drawn from the NSM at boot that never leaves the enclave, and
//! whose public half is bound into an attestation document as
//! `user_data = "ekms/v1/identity-key:" || public_key (32 bytes)`. Anyone holding the
//! statement, its signature and that document can check, without trusting the parent:
//!
//! 1. the document verifies to the AWS Nitro root (or the simulation root) with the
//!    expected PCRs (the caller does this with `attestation::Verifier`);
//! 2. the document's `user_data` binds the identity key ([`identity_user_data`]);
//! 3. the ed25519 signature (RFC 8032, `verify_strict`) over
//!    `"ekms/v1/key-statement\n" || statement` holds under that key;
//! 4. the statement is canonical JSON ([`KeyStatement::canonical_json`]) and names the
//!    key and address the caller was told.
//!
//! [`SignedKeyStatement::verify`] does steps 2–4. The domain prefix keeps a statement
//! from ever being confused with anything else the identity key signs (audit records).

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Prefix of the signed bytes: `"ekms/v1/key-statement\n" || canonical JSON`.
pub const STATEMENT_DOMAIN: &[u8] = b"ekms/v1/key-statement\n";

/// Prefix of the attestation document's `user_data` that binds an identity key; the
/// 32-byte ed25519 public key follows.
pub const IDENTITY_USER_DATA_PREFIX: &[u8] = b"ekms/v1/identity-key:";

/// Longest statement accepted, in bytes (a key id and owner are at most a few hundred
/// bytes; checked before parsing).
pub const MAX_STATEMENT_LEN: usize = 2048;

/// Version of the statement format below.
pub const STATEMENT_VERSION: u8 = 1;

/// What the enclave states about a key. Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStatement {
    /// Format version ([`STATEMENT_VERSION`]).
    pub statement_version: u8,
    /// Key id.
    pub key_id: String,
    /// `"secp256k1"` or `"ed25519"`.
    pub algorithm: String,
    /// Public key as the API shows it: `0x` hex of the 33-byte compressed SEC1 point
    /// (secp256k1), base58 of the 32 bytes (ed25519).
    pub public_key: String,
    /// EIP-55 address (secp256k1) or base58 Solana address (ed25519).
    pub address: String,
    /// The key's owner as sealed in its record, if any.
    pub owner: Option<String>,
    /// When the enclave generated the key, in milliseconds since the Unix epoch
    /// (enclave clock); `None` for a statement issued later for a key made before
    /// statements existed.
    pub created_at: Option<u64>,
    /// When the enclave signed this statement, in milliseconds since the Unix epoch.
    pub issued_at: u64,
}

impl KeyStatement {
    /// The canonical JSON: this struct's field order, no whitespace (`serde_json`). These
    /// are the bytes that are signed after [`STATEMENT_DOMAIN`].
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self)
            .expect("invariant: a struct of strings and integers always serializes")
    }

    /// The bytes the identity key signs: `STATEMENT_DOMAIN || canonical JSON`.
    pub fn signing_input(json: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATEMENT_DOMAIN.len() + json.len());
        out.extend_from_slice(STATEMENT_DOMAIN);
        out.extend_from_slice(json.as_bytes());
        out
    }
}

/// `user_data` of the attestation document that binds `identity_key`.
pub fn identity_user_data(identity_key: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(IDENTITY_USER_DATA_PREFIX.len() + 32);
    out.extend_from_slice(IDENTITY_USER_DATA_PREFIX);
    out.extend_from_slice(identity_key);
    out
}

/// A statement as stored and sent: its exact JSON, the signature and the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedKeyStatement {
    /// The statement's canonical JSON.
    pub statement: String,
    /// ed25519 signature (RFC 8032 `R || S`) over [`KeyStatement::signing_input`].
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
    /// The enclave identity key that signed it.
    #[serde(with = "serde_bytes")]
    pub identity_key: [u8; 32],
}

/// Why a statement does not verify. Deliberately coarse: the caller learns which step
/// failed, never anything secret (there is nothing secret here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// Longer than [`MAX_STATEMENT_LEN`].
    #[error("key statement is larger than {MAX_STATEMENT_LEN} bytes")]
    TooLarge,
    /// Not canonical statement JSON of a known version.
    #[error("key statement is not canonical JSON of version {STATEMENT_VERSION}")]
    Malformed,
    /// The attestation document does not bind this identity key.
    #[error("the attestation document does not bind the statement's identity key")]
    UnboundIdentity,
    /// The signature does not verify under the identity key.
    #[error("key statement signature does not verify")]
    BadSignature,
}

impl SignedKeyStatement {
    /// Signs `statement`'s canonical JSON with the identity key `key` (ed25519, RFC 8032,
    /// over [`KeyStatement::signing_input`]).
    pub fn sign(key: &ed25519_dalek::SigningKey, statement: &KeyStatement) -> Self {
        use ed25519_dalek::Signer as _;
        let json = statement.canonical_json();
        Self {
            signature: key.sign(&KeyStatement::signing_input(&json)).to_bytes(),
            statement: json,
            identity_key: key.verifying_key().to_bytes(),
        }
    }

    /// Steps 2–4 of the module docs: `attested_user_data` must be the `user_data` of an
    /// attestation document the caller has **already verified**; returns the parsed
    /// statement for the caller to compare with what it was told.
    ///
    /// # Errors
    /// [`StatementError`]: size (checked first), binding, signature, then canonical
    /// form.
    pub fn verify(
        &self,
        attested_user_data: Option<&[u8]>,
    ) -> Result<KeyStatement, StatementError> {
        if self.statement.len() > MAX_STATEMENT_LEN {
            return Err(StatementError::TooLarge);
        }
        if attested_user_data != Some(identity_user_data(&self.identity_key).as_slice()) {
            return Err(StatementError::UnboundIdentity);
        }
        self.verify_signature()
    }

    /// Steps 3–4 only, for a caller that has already established that
    /// `identity_key` is an attested enclave identity (e.g. the parent, which verified
    /// that key's document once and remembers it).
    ///
    /// # Errors
    /// As [`SignedKeyStatement::verify`], without the binding step.
    pub fn verify_signature(&self) -> Result<KeyStatement, StatementError> {
        if self.statement.len() > MAX_STATEMENT_LEN {
            return Err(StatementError::TooLarge);
        }
        let key = VerifyingKey::from_bytes(&self.identity_key)
            .map_err(|_| StatementError::BadSignature)?;
        key.verify_strict(
            &KeyStatement::signing_input(&self.statement),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| StatementError::BadSignature)?;
        let parsed: KeyStatement =
            serde_json::from_str(&self.statement).map_err(|_| StatementError::Malformed)?;
        if parsed.statement_version != STATEMENT_VERSION
            || parsed.canonical_json() != self.statement
        {
            return Err(StatementError::Malformed);
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn statement() -> KeyStatement {
        KeyStatement {
            statement_version: STATEMENT_VERSION,
            key_id: "k1".into(),
            algorithm: "ed25519".into(),
            public_key: "11111111111111111111111111111112".into(),
            address: "11111111111111111111111111111112".into(),
            owner: None,
            created_at: Some(1_700_000_000_000),
            issued_at: 1_700_000_000_000,
        }
    }

    fn signed(key: &SigningKey, json: &str) -> SignedKeyStatement {
        SignedKeyStatement {
            statement: json.to_owned(),
            signature: key.sign(&KeyStatement::signing_input(json)).to_bytes(),
            identity_key: key.verifying_key().to_bytes(),
        }
    }

    #[test]
    fn verifies_a_bound_signed_statement() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let s = SignedKeyStatement::sign(&key, &statement());
        assert_eq!(s, signed(&key, &statement().canonical_json()));
        let ud = identity_user_data(&s.identity_key);
        assert_eq!(s.verify(Some(&ud)).unwrap(), statement());
    }

    #[test]
    fn canonical_json_is_stable() {
        assert_eq!(
            statement().canonical_json(),
            r#"{"statement_version":1,"key_id":"k1","algorithm":"ed25519","public_key":"11111111111111111111111111111112","address":"11111111111111111111111111111112","owner":null,"created_at":1700000000000,"issued_at":1700000000000}"#
        );
    }

    #[test]
    fn rejects_a_changed_address() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut s = signed(&key, &statement().canonical_json());
        let ud = identity_user_data(&s.identity_key);
        s.statement = s.statement.replace("1112\",\"owner", "1113\",\"owner");
        assert_eq!(s.verify(Some(&ud)), Err(StatementError::BadSignature));
    }

    #[test]
    fn rejects_an_unbound_identity_key() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let s = signed(&key, &statement().canonical_json());
        let ud = identity_user_data(&other.verifying_key().to_bytes());
        assert_eq!(s.verify(Some(&ud)), Err(StatementError::UnboundIdentity));
        assert_eq!(s.verify(None), Err(StatementError::UnboundIdentity));
    }

    #[test]
    fn rejects_non_canonical_or_unknown_statements() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let spaced = statement().canonical_json().replace(",", ", ");
        let s = signed(&key, &spaced);
        assert_eq!(s.verify_signature(), Err(StatementError::Malformed));
        let mut v2 = statement();
        v2.statement_version = 2;
        let s = signed(&key, &v2.canonical_json());
        assert_eq!(s.verify_signature(), Err(StatementError::Malformed));
        let extra = statement().canonical_json().replace("}", ",\"x\":1}");
        assert_eq!(
            signed(&key, &extra).verify_signature(),
            Err(StatementError::Malformed)
        );
    }

    #[test]
    fn rejects_oversized_statements() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let s = signed(&key, &"x".repeat(MAX_STATEMENT_LEN + 1));
        assert_eq!(s.verify_signature(), Err(StatementError::TooLarge));
    }

    #[test]
    fn domain_prefix_is_part_of_the_signed_bytes() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let json = statement().canonical_json();
        let s = SignedKeyStatement {
            statement: json.clone(),
            signature: key.sign(json.as_bytes()).to_bytes(),
            identity_key: key.verifying_key().to_bytes(),
        };
        assert_eq!(s.verify_signature(), Err(StatementError::BadSignature));
    }
}
