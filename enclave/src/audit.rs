//! The enclave's end of the audit chain ([`ekms_shared::audit`]): this boot's audit key
//! and the chain head (the `seq` and SHA-256 of the newest record).
//!
//! Rules for maintainers:
//! - a record is appended for every decision on a key the enclave has authenticated
//!   (its sealed record opened): a signature, a refusal after opening, a key's
//!   creation, a policy change, a disable, an enable; and for a store-wide stop, a
//!   resume and each boot;
//! - a decision's answer always carries its record, and the parent stores the record
//!   before it releases the answer;
//! - [`AuditLog::append`] holds the head's lock while it numbers the record and hashes
//!   its canonical JSON (the next record's link), so records are numbered without gaps
//!   in the order they are appended; the ed25519 signature is made after the lock is
//!   released (records may reach the parent out of order; it stores each by `seq`).
//!
//! The head starts unknown: nothing is appended before `Restore` sets it
//! ([`AuditLog::start`]), from the newest record the parent holds, checked against the
//! newest checkpoint ([`crate::durable`]).

use std::sync::{Arc, Mutex};

use attestation::NsmProvider;
use ekms_shared::audit::{
    audit_user_data, AuditAction, AuditDecision, AuditRecord, SignedAuditRecord, GENESIS_HASH,
};
use ekms_shared::WireError;
use sha2::{Digest as _, Sha256};

use crate::identity::Identity;

/// The position of the newest record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    /// Its `seq` (0: no record yet).
    pub seq: u64,
    /// SHA-256 of its JSON ([`GENESIS_HASH`] when `seq` is 0).
    pub hash: [u8; 32],
}

impl AuditHead {
    /// The head of an empty chain.
    pub const GENESIS: AuditHead = AuditHead {
        seq: 0,
        hash: GENESIS_HASH,
    };
}

/// What a record says, but its number, time and link.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The key decided on.
    pub key_id: Option<String>,
    /// For `sign`: the payload kind's name.
    pub payload_kind: Option<&'static str>,
    /// For `sign`: SHA-256 of the payload bytes.
    pub payload_sha256: Option<[u8; 32]>,
    /// The policy version decided under (a change: the new one).
    pub policy_version: Option<u64>,
    /// SHA-256 of that policy's canonical JSON.
    pub policy_sha256: Option<[u8; 32]>,
    /// For a refusal: the rule or error code.
    pub rule: Option<String>,
}

/// This boot's audit key and the chain head.
pub struct AuditLog {
    key: Identity,
    head: Mutex<Option<AuditHead>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("audit_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Draws this boot's audit key from the NSM.
    ///
    /// # Errors
    /// The NSM's error message if it cannot produce the key.
    pub fn generate(nsm: &dyn NsmProvider) -> Result<Self, String> {
        Ok(Self {
            key: Identity::generate_bound(nsm, audit_user_data)?,
            head: Mutex::new(None),
        })
    }

    /// The audit key's ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public_key()
    }

    /// The attestation document binding the audit key (`user_data =
    /// "ekms/v1/audit-key:" || SHA-256(public key)`), made once per boot.
    ///
    /// # Errors
    /// [`WireError::Attestation`] if the NSM cannot make it.
    pub async fn document(&self, nsm: &Arc<dyn NsmProvider>) -> Result<Vec<u8>, WireError> {
        self.key.document(nsm).await
    }

    /// The current head, `None` before [`AuditLog::start`].
    pub fn head(&self) -> Option<AuditHead> {
        *self.lock()
    }

    /// Sets the head the chain continues from (at `Restore`'s commit).
    pub fn start(&self, head: AuditHead) {
        *self.lock() = Some(head);
    }

    /// Appends a record: the next `seq`, the enclave clock, the link to the head.
    ///
    /// # Errors
    /// [`WireError::NotReady`] before [`AuditLog::start`]; [`WireError::Internal`] if
    /// the sequence number would overflow.
    pub fn append(
        &self,
        action: AuditAction,
        decision: AuditDecision,
        entry: Entry,
    ) -> Result<SignedAuditRecord, WireError> {
        let mut head = self.lock();
        let current = head.ok_or(WireError::NotReady)?;
        let record = AuditRecord {
            seq: current.seq.checked_add(1).ok_or(WireError::Internal)?,
            time: crate::handlers::now_ms(),
            key_id: entry.key_id,
            action,
            payload_kind: entry.payload_kind.map(str::to_owned),
            payload_sha256: entry.payload_sha256.map(hex::encode),
            policy_version: entry.policy_version,
            policy_sha256: entry.policy_sha256.map(hex::encode),
            decision,
            rule: entry.rule,
            prev_hash: hex::encode(current.hash),
        };
        // The link is the hash of the text, not of the signature: the head moves on
        // under the lock, and the ed25519 signature (~25 µs) is made after it is
        // released, so concurrent decisions are signed in parallel.
        let json = record.canonical_json();
        *head = Some(AuditHead {
            seq: record.seq,
            hash: Sha256::digest(json.as_bytes()).into(),
        });
        drop(head);
        Ok(self.key.sign_audit_json(json))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<AuditHead>> {
        // Every critical section assigns the head in one step.
        self.head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> AuditLog {
        let ca = attestation::SimulatedCa::generate().unwrap();
        let nsm =
            attestation::SimulatedNsm::new(&ca, attestation::pcrs_from_digest(b"audit")).unwrap();
        AuditLog::generate(&nsm).unwrap()
    }

    #[test]
    fn records_chain_and_verify() {
        let log = log();
        assert_eq!(
            log.append(AuditAction::Boot, AuditDecision::Allowed, Entry::default()),
            Err(WireError::NotReady),
            "nothing is appended before the head is known"
        );
        log.start(AuditHead::GENESIS);
        let a = log
            .append(AuditAction::Boot, AuditDecision::Allowed, Entry::default())
            .unwrap();
        let b = log
            .append(
                AuditAction::Sign,
                AuditDecision::Refused,
                Entry {
                    key_id: Some("k".into()),
                    rule: Some("chain_id".into()),
                    ..Entry::default()
                },
            )
            .unwrap();
        let (ra, rb) = (a.verify().unwrap(), b.verify().unwrap());
        assert_eq!((ra.seq, rb.seq), (1, 2));
        assert_eq!(ra.prev_hash, hex::encode(GENESIS_HASH));
        assert_eq!(rb.prev_hash, hex::encode(a.record_sha256()));
        assert_eq!(a.audit_key, log.public_key());
        assert_eq!(
            log.head(),
            Some(AuditHead {
                seq: 2,
                hash: b.record_sha256()
            })
        );
    }

    #[test]
    fn continues_from_a_restored_head() {
        let log = log();
        log.start(AuditHead {
            seq: 41,
            hash: [9; 32],
        });
        let r = log
            .append(AuditAction::Boot, AuditDecision::Allowed, Entry::default())
            .unwrap()
            .verify()
            .unwrap();
        assert_eq!(r.seq, 42);
        assert_eq!(r.prev_hash, hex::encode([9u8; 32]));
    }
}
