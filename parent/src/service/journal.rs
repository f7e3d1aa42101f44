//! The parent's two steps of every enclave state change and decision (issue 7); the
//! rows (checkpoints, audit records, the documents binding audit keys) are the key
//! store's ([`crate::store::KeyStore`]):
//!
//! - [`Journal::settle`] — phase 2 of a state change (the service's policy changes
//!   and the keyring bootstrap's `Restore`):
//!   store the pending checkpoint (with the key's new policy, in one transaction),
//!   then send `Commit`, then store the audit record of the change;
//! - [`Journal::record`] — store the audit record a decision came with *before* its
//!   answer (a signature, a refusal) is released. A record that cannot be stored
//!   fails the request: no signature leaves without its record.
//!
//! Audit records are written by the store's group-commit thread
//! ([`crate::store::group_commit`]): a record is stored when its transaction committed,
//! and the records of the requests in flight share that transaction (one fsync).
//!
//! The parent checks nothing here (it is untrusted): the enclave verifies checkpoints
//! at `Restore`, and `ekms audit verify` checks the chain. Rows are written, never
//! updated: an audit record's `seq` is its primary key.

use ekms_shared::audit::{AuditRecord, Receipt, SignedAuditRecord, MAX_AUDIT_RECORD_LEN};
use ekms_shared::{Request, ResponseBody, SealedPolicy};

use crate::error::Error;
use crate::relay::Relay;
use crate::store::SharedStore;

/// Largest page of `GET /v1/audit` ([`crate::store::KeyStore::audit_records_after`]).
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// The parent's part of the durable state and the audit chain.
#[derive(Debug, Clone)]
pub struct Journal {
    store: SharedStore,
}

impl Journal {
    /// The journal kept in `store`.
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }

    /// Stores `signed` (parsing only its `seq`, to key the row).
    ///
    /// # Errors
    /// [`Error::UnexpectedResponse`] for a record that does not parse;
    /// [`Error::AlreadyExists`] if a record with this `seq` is stored (never
    /// overwritten); [`Error::Store`].
    pub async fn store_record(&self, signed: &SignedAuditRecord) -> Result<u64, Error> {
        let seq = record_seq(signed)?;
        if i64::try_from(seq).is_err() {
            return Err(Error::UnexpectedResponse("audit record"));
        }
        // SQLite: through the group-commit writer, committed (with the records of the
        // other requests in flight) before this returns.
        self.store.append_audit(seq, signed.clone()).await?;
        Ok(seq)
    }

    /// Stores the audit record of a decision and unwraps it: `Signed`'s and
    /// `KeyGenerated`'s answer with the record's receipt (record stored; its `seq` read
    /// once, when stored) or `Refused`'s error (as `Err`, record stored). Other answers
    /// pass through without a receipt.
    ///
    /// # Errors
    /// The refusal's [`WireError`] as [`Error::Enclave`]; a storage error (then the
    /// decision is not released).
    pub async fn record(
        &self,
        answer: ResponseBody,
    ) -> Result<(ResponseBody, Option<Receipt>), Error> {
        match answer {
            ResponseBody::Refused { error, audit } => {
                self.store_record(&audit).await?;
                Err(Error::Enclave(error))
            }
            ResponseBody::Signed { ref audit, .. }
            | ResponseBody::KeyGenerated { ref audit, .. } => {
                let seq = self.store_record(audit).await?;
                let receipt = Receipt::of(audit, seq);
                Ok((answer, Some(receipt)))
            }
            other => Ok((other, None)),
        }
    }

    /// Phase 2 of a state change: `answer` must be `CheckpointPending`; stores its
    /// checkpoint (and policy, compare-and-set against `expected_version`), commits it
    /// in the enclave, stores the change's audit record (and, for `Restore`, the audit
    /// key's document). Returns the new policy, if the change made one. A `Refused`
    /// answer has its record stored and comes back as its error.
    ///
    /// # Errors
    /// As [`Journal::record`]; [`Error::UnexpectedResponse`] for any other answer;
    /// the relay's errors for `Commit`.
    pub async fn settle(
        &self,
        relay: &Relay,
        answer: ResponseBody,
        expected_version: Option<u64>,
    ) -> Result<Option<SealedPolicy>, Error> {
        let (checkpoint, policy) = match answer {
            ResponseBody::CheckpointPending { checkpoint, policy } => (checkpoint, policy),
            other => {
                self.record(other).await?;
                return Err(Error::UnexpectedResponse("state change"));
            }
        };
        let seq = checkpoint.seq;
        let cas = match (&policy, expected_version) {
            (Some(p), Some(expected)) => Some((expected, p.clone())),
            (None, None) => None,
            _ => return Err(Error::UnexpectedResponse("state change")),
        };
        self.store.store_checkpoint(checkpoint, cas).await?;
        let committed = relay.call(Request::Commit { seq }).await?;
        self.committed(committed).await?;
        Ok(policy)
    }

    /// Stores what a `Commit` answered: the change's audit record and, for `Restore`,
    /// the document binding the new audit key (first, so the record always has it).
    ///
    /// # Errors
    /// [`Error::UnexpectedResponse`] for another answer; storage errors.
    pub async fn committed(&self, answer: ResponseBody) -> Result<(), Error> {
        let ResponseBody::Committed {
            audit,
            audit_document,
        } = answer
        else {
            return Err(Error::UnexpectedResponse("Commit"));
        };
        if let Some(document) = audit_document {
            self.store
                .put_audit_document(audit.audit_key, document)
                .await?;
        }
        self.store_record(&audit).await?;
        Ok(())
    }
}

/// The `seq` of a record, read from its JSON (bounded; nothing else is checked).
fn record_seq(signed: &SignedAuditRecord) -> Result<u64, Error> {
    if signed.record.len() > MAX_AUDIT_RECORD_LEN {
        return Err(Error::UnexpectedResponse("audit record"));
    }
    serde_json::from_str::<AuditRecord>(&signed.record)
        .map(|r| r.seq)
        .map_err(|_| Error::UnexpectedResponse("audit record"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use ekms_shared::audit::{AuditAction, AuditDecision, AuditRecord, GENESIS_HASH};
    use std::sync::Arc;

    pub(crate) fn signed(seq: u64) -> SignedAuditRecord {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        SignedAuditRecord::sign(
            &key,
            &AuditRecord {
                seq,
                time: 1,
                key_id: None,
                action: AuditAction::Boot,
                payload_kind: None,
                payload_sha256: None,
                policy_version: None,
                policy_sha256: None,
                decision: AuditDecision::Allowed,
                rule: None,
                prev_hash: hex::encode(GENESIS_HASH),
            },
        )
    }

    #[tokio::test]
    async fn stores_records_once_under_their_own_seq() {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().unwrap());
        let j = Journal::new(Arc::clone(&store));
        for seq in 1..=5 {
            assert_eq!(j.store_record(&signed(seq)).await.unwrap(), seq);
        }
        assert!(matches!(
            j.store_record(&signed(3)).await,
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(store.latest_audit_record().await.unwrap().unwrap().seq, 5);
    }

    /// The group-commit writer: records stored concurrently all land, each once, and a
    /// duplicate in a batch fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_concurrent_records_in_shared_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("ekms.db")).unwrap());
        let j = Journal::new(Arc::clone(&store));
        let mut tasks = Vec::new();
        for seq in 1..=300u64 {
            let j = j.clone();
            tasks.push(tokio::spawn(
                async move { j.store_record(&signed(seq)).await },
            ));
        }
        // The same numbers again, concurrently: each fails on its own.
        for seq in [5u64, 150, 300] {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                tokio::task::yield_now().await;
                j.store_record(&signed(seq)).await
            }));
        }
        let mut ok = 0;
        let mut dup = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::AlreadyExists(_)) => dup += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((ok, dup), (300, 3));
        assert_eq!(store.audit_records_after(0, 1000).await.unwrap().len(), 300);
        assert_eq!(store.latest_audit_record().await.unwrap().unwrap().seq, 300);
    }

    #[tokio::test]
    async fn rejects_a_record_that_does_not_parse() {
        let j = Journal::new(Arc::new(SqliteStore::open_in_memory().unwrap()));
        let mut bad = signed(1);
        bad.record = "{".into();
        assert!(matches!(
            j.store_record(&bad).await,
            Err(Error::UnexpectedResponse(_))
        ));
    }
}
