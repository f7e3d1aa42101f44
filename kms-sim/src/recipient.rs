//! The `Recipient` parameter of Decrypt, GenerateDataKey and GenerateRandom: verifying
//! the attestation document, turning it into policy condition keys, and sealing the
//! answer to the document's public key as `CiphertextForRecipient`.
//!
//! AWS references: KMS API Reference `RecipientInfo` (`AttestationDocument`,
//! `KeyEncryptionAlgorithm`, only `RSAES_OAEP_SHA_256`); KMS Developer Guide
//! "Cryptographic attestation support in AWS KMS" and "Condition keys for Nitro
//! Enclaves" (`kms:RecipientAttestation:ImageSha384` = PCR0,
//! `kms:RecipientAttestation:PCR<n>`).
//!
//! Error mapping:
//! - `KeyEncryptionAlgorithm` absent or not `RSAES_OAEP_SHA_256`, `AttestationDocument`
//!   absent or empty, a document without `public_key`, or a `public_key` that is not an
//!   RSA SubjectPublicKeyInfo → `ValidationException` (a parameter constraint).
//! - A document that fails verification (signature, chain to the configured root, age,
//!   format) → `AccessDeniedException`. The KMS Developer Guide, "Condition keys for
//!   Nitro Enclaves", says of `kms:RecipientAttestation:ImageSha384`: "If the request
//!   doesn't include a valid attestation document from an AWS Nitro enclave,
//!   permission is denied because this condition is not satisfied." The emulator
//!   denies such a request even when the key policy has no attestation condition: KMS
//!   "relies on the digital signature for the attestation document to prove that the
//!   public key in the request came from a valid source" ("How to make attested calls
//!   to AWS KMS"), so it never encrypts to an unverified key. Every verification
//!   failure gets the same message (no oracle); the reason is logged.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use attestation::{Verifier, VerifyOptions};
use spki::der::Decode;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::error::ApiError;
use crate::policy::RequestContext;

/// The only `KeyEncryptionAlgorithm` KMS accepts.
pub const KEY_ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";

/// `rsaEncryption` (RFC 8017, appendix C).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A verified recipient: the document's PCRs and RSA public key (SPKI, DER).
#[derive(Debug, Clone)]
pub struct AttestedRecipient {
    pcrs: BTreeMap<u16, Vec<u8>>,
    public_key: Vec<u8>,
}

impl AttestedRecipient {
    /// Adds `kms:RecipientAttestation:ImageSha384` (PCR0) and
    /// `kms:RecipientAttestation:PCR<n>` for every PCR of the document, as lowercase hex.
    pub fn add_condition_keys(&self, request: &mut RequestContext) {
        for (index, value) in &self.pcrs {
            let hex_value = hex::encode(value);
            if *index == 0 {
                request.insert("kms:RecipientAttestation:ImageSha384", hex_value.clone());
            }
            request.insert(&format!("kms:RecipientAttestation:PCR{index}"), hex_value);
        }
    }

    /// PCR0 of the document as hex (for logs).
    pub fn image_sha384(&self) -> String {
        self.pcrs.get(&0).map(hex::encode).unwrap_or_default()
    }

    /// `plaintext` sealed to the document's public key: a BER CMS EnvelopedData, the
    /// `CiphertextForRecipient` of the answer.
    ///
    /// # Errors
    /// `ValidationException` for an RSA key the envelope refuses (size outside
    /// 2048..=4096 bits); `KMSInternalException` for any other sealing failure.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, ApiError> {
        use crate::envelope::{seal_for_recipient, EnvelopeError};
        seal_for_recipient(&self.public_key, plaintext).map_err(|e| match e {
            EnvelopeError::NotRsaKey | EnvelopeError::UnsupportedKeySize { .. } => {
                ApiError::validation(format!("The public key in the attestation document: {e}"))
            }
            other => {
                tracing::error!(error = %other, "sealing CiphertextForRecipient failed");
                ApiError::internal("could not encrypt the answer for the recipient")
            }
        })
    }
}

/// Verifies `Recipient` attestation documents against one trust root.
pub struct RecipientVerifier {
    verifier: Verifier,
    max_age: Duration,
}

impl std::fmt::Debug for RecipientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientVerifier")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl RecipientVerifier {
    /// A verifier accepting documents that chain to `verifier`'s root and are at most
    /// `max_age` old.
    pub fn new(verifier: Verifier, max_age: Duration) -> Self {
        Self { verifier, max_age }
    }

    /// Checks a `Recipient` (`algorithm` and raw `document` bytes) at time `now`.
    ///
    /// # Errors
    /// `ValidationException` or `AccessDeniedException` as in the module docs.
    pub fn verify(
        &self,
        algorithm: Option<&str>,
        document: &[u8],
        now: SystemTime,
    ) -> Result<AttestedRecipient, ApiError> {
        match algorithm {
            Some(KEY_ENCRYPTION_ALGORITHM) => {}
            Some(_) => {
                return Err(ApiError::validation(
                    "1 validation error detected: Value at 'recipient.keyEncryptionAlgorithm' \
                     failed to satisfy constraint: Member must satisfy enum value set: \
                     [RSAES_OAEP_SHA_256]",
                ))
            }
            None => {
                return Err(ApiError::validation(
                    "Recipient.KeyEncryptionAlgorithm is required (RSAES_OAEP_SHA_256)",
                ))
            }
        }
        if document.is_empty() {
            return Err(ApiError::validation(
                "Recipient.AttestationDocument is required",
            ));
        }
        let mut options = VerifyOptions::at(now);
        options.max_age = Some(self.max_age);
        let doc = self.verifier.verify(document, &options).map_err(|e| {
            tracing::warn!(error = %e, "attestation document refused");
            ApiError::access_denied(
                "The attestation document in the Recipient parameter is not valid",
            )
        })?;
        let public_key = doc.public_key.ok_or_else(|| {
            ApiError::validation("The attestation document does not contain a public key")
        })?;
        check_rsa_spki(&public_key)?;
        Ok(AttestedRecipient {
            pcrs: doc.pcrs,
            public_key,
        })
    }
}

/// The document's `public_key` must be a DER SubjectPublicKeyInfo of an RSA key.
fn check_rsa_spki(der: &[u8]) -> Result<(), ApiError> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|_| {
        ApiError::validation(
            "The public key in the attestation document is not a DER SubjectPublicKeyInfo",
        )
    })?;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(ApiError::validation(
            "The public key in the attestation document is not an RSA key",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use attestation::{AttestationRequest, NsmProvider, SimulatedCa, SimulatedNsm};

    fn rsa_spki() -> Vec<u8> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        key.public_key().as_der().unwrap().as_ref().to_vec()
    }

    fn setup(pcr0: u8) -> (RecipientVerifier, SimulatedNsm) {
        let ca = SimulatedCa::generate().unwrap();
        let verifier = Verifier::danger_trust_simulation_root_pem(&ca.root_pem()).unwrap();
        let pcrs = BTreeMap::from([(0u16, vec![pcr0; 48]), (8u16, vec![0x88; 48])]);
        let nsm = SimulatedNsm::new(&ca, pcrs).unwrap();
        (
            RecipientVerifier::new(verifier, Duration::from_secs(300)),
            nsm,
        )
    }

    fn document(nsm: &SimulatedNsm, public_key: Option<&[u8]>) -> Vec<u8> {
        nsm.attestation_document(&AttestationRequest {
            user_data: None,
            nonce: None,
            public_key,
        })
        .unwrap()
    }

    #[test]
    fn verified_document_yields_condition_keys() {
        let (verifier, nsm) = setup(0xab);
        let spki = rsa_spki();
        let doc = document(&nsm, Some(&spki));
        let recipient = verifier
            .verify(Some(KEY_ENCRYPTION_ALGORITHM), &doc, SystemTime::now())
            .unwrap();
        assert_eq!(recipient.image_sha384(), "ab".repeat(48));
        let mut ctx = RequestContext::new("kms:Decrypt");
        recipient.add_condition_keys(&mut ctx);
        let policy = crate::policy::Policy::parse(&format!(
            r#"{{"Statement":{{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt",
                "Condition":{{"StringEquals":{{"kms:RecipientAttestation:ImageSha384":"{}",
                                               "kms:RecipientAttestation:PCR8":"{}"}}}}}}}}"#,
            "ab".repeat(48),
            "88".repeat(48)
        ))
        .unwrap();
        assert_eq!(policy.evaluate(&ctx), crate::policy::Decision::Allow);
    }

    #[test]
    fn rejects_bad_recipients() {
        let (verifier, nsm) = setup(0xab);
        let spki = rsa_spki();
        let doc = document(&nsm, Some(&spki));
        let now = SystemTime::now();
        let kind = |r: Result<AttestedRecipient, ApiError>| r.map(|_| ()).unwrap_err().kind;

        assert_eq!(
            kind(verifier.verify(Some("RSAES_OAEP_SHA_1"), &doc, now)),
            ErrorKind::Validation
        );
        assert_eq!(
            kind(verifier.verify(None, &doc, now)),
            ErrorKind::Validation
        );
        assert_eq!(
            kind(verifier.verify(Some(KEY_ENCRYPTION_ALGORITHM), &[], now)),
            ErrorKind::Validation
        );

        let mut tampered = doc.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            kind(verifier.verify(Some(KEY_ENCRYPTION_ALGORITHM), &tampered, now)),
            ErrorKind::AccessDenied
        );

        let later = now + Duration::from_secs(3600);
        assert_eq!(
            kind(verifier.verify(Some(KEY_ENCRYPTION_ALGORITHM), &doc, later)),
            ErrorKind::AccessDenied
        );

        let (_, foreign_nsm) = setup(0xab);
        let foreign = document(&foreign_nsm, Some(&spki));
        assert_eq!(
            kind(verifier.verify(Some(KEY_ENCRYPTION_ALGORITHM), &foreign, now)),
            ErrorKind::AccessDenied
        );

        let keyless = document(&nsm, None);
        assert_eq!(
            kind(verifier.verify(Some(KEY_ENCRYPTION_ALGORITHM), &keyless, now)),
            ErrorKind::Validation
        );

        let not_rsa = document(&nsm, Some(b"not a key"));
        assert_eq!(
            kind(verifier.verify(Some(KEY_ENCRYPTION_ALGORITHM), &not_rsa, now)),
            ErrorKind::Validation
        );
    }
}
