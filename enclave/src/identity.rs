//! The enclave's identity key: an ed25519 key drawn from the NSM at boot, held only in
//! this process, whose public half an attestation document binds
//! (`user_data = "ekms/v1/identity-key:" || public key`, see
//! [`ekms_shared::statement`]). It signs key statements now, and is the key later
//! records that must outlive the parent's honesty (audit records) will be signed with.
//!
//! A restart draws a new identity key; statements signed by an earlier one stay
//! verifiable with the document stored beside them, which verifies at its own
//! timestamp.

use std::sync::Arc;

use attestation::{AttestationRequest, NsmProvider};
use ed25519_dalek::SigningKey;
use ekms_shared::audit::{AuditRecord, SignedAuditRecord};
use ekms_shared::statement::{identity_user_data, KeyStatement, SignedKeyStatement};
use ekms_shared::WireError;
use zeroize::Zeroizing;

/// The identity key and, once made, the attestation document that binds it. The same
/// type holds the audit key ([`crate::audit`]): an ed25519 key of this boot bound by a
/// document whose `user_data` is `user_data(public key)`.
pub struct Identity {
    key: SigningKey,
    user_data: Vec<u8>,
    document: tokio::sync::OnceCell<Vec<u8>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Draws a new identity key from the NSM's randomness.
    ///
    /// # Errors
    /// The NSM's error message if it cannot produce 32 random bytes, or returns zeros.
    pub fn generate(nsm: &dyn NsmProvider) -> Result<Self, String> {
        Self::generate_bound(nsm, identity_user_data)
    }

    /// Draws a new key from the NSM's randomness, to be bound by an attestation
    /// document with `user_data = bind(public key)`.
    ///
    /// # Errors
    /// As [`Identity::generate`].
    pub fn generate_bound(
        nsm: &dyn NsmProvider,
        bind: fn(&[u8; 32]) -> Vec<u8>,
    ) -> Result<Self, String> {
        let mut seed = Zeroizing::new([0u8; 32]);
        nsm.random(seed.as_mut_slice())
            .map_err(|e| format!("NSM random for the identity key: {e}"))?;
        if *seed == [0u8; 32] {
            return Err("NSM returned all-zero randomness for the identity key".into());
        }
        // `SigningKey` zeroizes itself on drop (ed25519-dalek `zeroize` feature).
        let key = SigningKey::from_bytes(&seed);
        Ok(Self {
            user_data: bind(&key.verifying_key().to_bytes()),
            key,
            document: tokio::sync::OnceCell::new(),
        })
    }

    /// The identity key's ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The attestation document that binds the identity key, made on first use (one
    /// NSM call, on the blocking pool) and reused for the life of the process.
    ///
    /// # Errors
    /// [`WireError::Attestation`] if the NSM cannot produce it.
    pub async fn document(&self, nsm: &Arc<dyn NsmProvider>) -> Result<Vec<u8>, WireError> {
        let user_data = self.user_data.clone();
        let nsm = Arc::clone(nsm);
        self.document
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    nsm.attestation_document(&AttestationRequest {
                        user_data: Some(&user_data),
                        nonce: None,
                        public_key: None,
                    })
                })
                .await
                .map_err(|_| WireError::Internal)?
                .map_err(|e| WireError::Attestation {
                    message: e.to_string(),
                })
            })
            .await
            .cloned()
    }

    /// Signs `statement` (its canonical JSON, after the statement domain prefix).
    pub fn sign_statement(&self, statement: &KeyStatement) -> SignedKeyStatement {
        SignedKeyStatement::sign(&self.key, statement)
    }

    /// Signs an audit record (its canonical JSON, after the audit domain prefix).
    pub fn sign_audit(&self, record: &AuditRecord) -> SignedAuditRecord {
        SignedAuditRecord::sign(&self.key, record)
    }

    /// Signs an audit record given as its canonical JSON
    /// ([`AuditRecord::canonical_json`]).
    pub fn sign_audit_json(&self, json: String) -> SignedAuditRecord {
        SignedAuditRecord::sign_canonical(&self.key, json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation::{SimulatedCa, SimulatedNsm, Verifier, VerifyOptions};

    fn nsm_and_verifier() -> (Arc<dyn NsmProvider>, Verifier) {
        let ca = SimulatedCa::generate().unwrap();
        let pcrs = attestation::pcrs_from_digest(b"identity tests");
        let nsm = SimulatedNsm::new(&ca, pcrs).unwrap();
        let verifier = Verifier::danger_trust_simulation_root(ca.root_der()).unwrap();
        (Arc::new(nsm), verifier)
    }

    fn statement() -> KeyStatement {
        KeyStatement {
            statement_version: ekms_shared::statement::STATEMENT_VERSION,
            key_id: "k".into(),
            algorithm: "ed25519".into(),
            public_key: "x".into(),
            address: "x".into(),
            owner: None,
            created_at: Some(1),
            issued_at: 1,
        }
    }

    #[tokio::test]
    async fn document_binds_the_key_that_signs() {
        let (nsm, verifier) = nsm_and_verifier();
        let id = Identity::generate(nsm.as_ref()).unwrap();
        let doc = id.document(&nsm).await.unwrap();
        assert_eq!(doc, id.document(&nsm).await.unwrap(), "made once");
        let parsed = verifier
            .verify(&doc, &VerifyOptions::at(std::time::SystemTime::now()))
            .unwrap();
        let signed = id.sign_statement(&statement());
        assert_eq!(
            signed.verify(parsed.user_data.as_deref()).unwrap(),
            statement()
        );
    }

    #[test]
    fn rejects_a_statement_signed_by_another_boot() {
        let (nsm, _) = nsm_and_verifier();
        let a = Identity::generate(nsm.as_ref()).unwrap();
        let b = Identity::generate(nsm.as_ref()).unwrap();
        let mut signed = a.sign_statement(&statement());
        signed.identity_key = b.public_key();
        assert!(signed.verify_signature().is_err());
    }
}
