//! The parent's check of its own `address` / `public_key` columns against the
//! enclave's signed key statements (`ekms_shared::statement`).
//!
//! A database admin who rewrites a key's `address` would otherwise make `GET /v1/keys`
//! report an address they control, and a user funding "their" key would pay them. The
//! parent now answers a key's identity only when its columns equal a statement signed
//! by an **attested** enclave identity key: the key's attestation document must verify
//! to the configured root ([`AttestationRoot`]) as of its own timestamp and bind the
//! identity key in its `user_data`. A verified identity key is remembered (bounded), so
//! the document is checked once per enclave boot, not per request.
//!
//! This protects honest parents from their database. It is not what clients should
//! rely on against a compromised host: `ekms keys verify` checks the same statement
//! end to end on the client, with the PCRs it expects.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use attestation::{Verifier, VerifyOptions};
use ekms_shared::statement::KeyStatement;

use crate::error::Error;
use crate::format;
use crate::store::{algorithm_text, KeySummary, StoredStatement};

/// Identity keys remembered as verified (32 bytes each; one per enclave boot).
pub const MAX_VERIFIED_IDENTITIES: usize = 4096;

/// Which root the enclave's attestation documents must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationRoot {
    /// `AWS_NitroEnclaves_Root-G1`, pinned in the attestation crate (production).
    Aws,
    /// The simulation CA's root certificate, PEM at this path (`ekms sim`).
    Simulation(PathBuf),
}

/// Checks key rows against their statements (see the module docs).
pub struct IdentityCheck {
    verifier: Verifier,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for IdentityCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCheck")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl IdentityCheck {
    /// A check against `root`.
    ///
    /// # Errors
    /// [`Error::Config`] if the simulation root cannot be read or is not one PEM
    /// certificate.
    pub fn new(root: &AttestationRoot) -> Result<Self, Error> {
        let verifier = match root {
            AttestationRoot::Aws => Verifier::aws_nitro(),
            AttestationRoot::Simulation(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!(
                        "--attestation-root simulation: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                Verifier::danger_trust_simulation_root_pem(&pem)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
        };
        Ok(Self::with_verifier(verifier))
    }

    /// A check with a ready verifier (tests).
    pub fn with_verifier(verifier: Verifier) -> Self {
        Self {
            verifier,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Verifies `stored` (identity document, binding, signature, canonical form) and
    /// that it names exactly `summary`'s key id, algorithm, public key and address.
    ///
    /// `enclave_pcr0` is the PCR0 of the enclave this parent talks to: an identity
    /// document must carry it. Any Nitro enclave's document chains to the AWS root, so
    /// without the pin a database admin with an AWS account could store a statement
    /// signed by an enclave image of their own, naming their own address.
    ///
    /// # Errors
    /// [`Error::StoreCorrupt`] (answered `sealed_state_invalid`) for any failure: a
    /// statement that does not verify, or columns that differ from it;
    /// [`Error::EnclaveUnavailable`] if a document must be checked and `enclave_pcr0`
    /// is unknown.
    pub fn check(
        &self,
        summary: &KeySummary,
        stored: &StoredStatement,
        enclave_pcr0: Option<&[u8]>,
    ) -> Result<KeyStatement, Error> {
        let signed = &stored.signed;
        // The identity document is verified once per identity key; the statement's
        // signature on every call.
        let statement = if self.is_verified(&signed.identity_key) {
            signed.verify_signature()
        } else {
            let pcr0 = enclave_pcr0.ok_or_else(|| {
                Error::EnclaveUnavailable("the enclave's PCR0 is not known yet".into())
            })?;
            let now = SystemTime::now();
            let mut opts = VerifyOptions::at(now);
            opts.expected_pcrs.insert(0, pcr0.to_vec());
            let doc = self
                .verifier
                .verify_at_its_time(&stored.identity_document, now, &opts)
                .map_err(|e| corrupt(format!("identity document: {e}")))?;
            let statement = signed.verify(doc.user_data.as_deref());
            if statement.is_ok() {
                self.remember(signed.identity_key);
            }
            statement
        }
        .map_err(|e| corrupt(e.to_string()))?;
        let matches = statement.key_id == summary.key_id
            && statement.algorithm == algorithm_text(summary.algorithm)
            && statement.public_key
                == format::public_key_text(summary.algorithm, &summary.public_key)
            && statement.address == summary.address;
        if !matches {
            return Err(corrupt(
                "the stored address or public key differs from the enclave's statement".into(),
            ));
        }
        Ok(statement)
    }

    fn is_verified(&self, key: &[u8; 32]) -> bool {
        self.lock().contains(key)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut set = self.lock();
        if set.len() >= MAX_VERIFIED_IDENTITIES {
            set.clear();
        }
        set.insert(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A set of public keys: consistent whatever a panicking holder did.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn corrupt(detail: String) -> Error {
    Error::StoreCorrupt(format!("key statement: {detail}"))
}
