//! What the parent keeps for the enclave's durable state and audit chain (issue 7):
//! the enclave's checkpoints, its audit records and the attestation documents that bind
//! its audit keys; and the two parent-side steps of every state change and decision:
//!
//! - [`Journal::settle`] — phase 2 of a state change ([`crate::relay`] and the API):
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
use ekms_shared::{Request, ResponseBody, SealedCheckpoint, SealedPolicy};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::error::Error;
use crate::relay::Relay;
use crate::store::Store;

/// Schema of the tables below (created by the store's migration).
pub const SCHEMA_JOURNAL: &str = "
CREATE TABLE checkpoints (
    seq       INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
    keyring   TEXT    NOT NULL,
    epoch     INTEGER NOT NULL,
    body      BLOB    NOT NULL,
    mac       BLOB    NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE TABLE audit_records (
    seq        INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
    record     TEXT    NOT NULL,
    signature  BLOB    NOT NULL,
    audit_key  BLOB    NOT NULL
);
CREATE TABLE audit_documents (
    audit_key            BLOB PRIMARY KEY NOT NULL,
    attestation_document BLOB NOT NULL
);
";

/// Checkpoints kept (the newest is the one that matters; a few older ones help an
/// investigation).
pub const KEPT_CHECKPOINTS: i64 = 16;
/// Largest page of `GET /v1/audit`.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// One stored audit record and its `seq` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The `seq` column (the record's own, as parsed when stored).
    pub seq: u64,
    /// The signed record.
    pub signed: SignedAuditRecord,
}

/// The parent's part of the durable state and the audit chain.
#[derive(Debug, Clone)]
pub struct Journal {
    store: Store,
}

impl Journal {
    /// The journal kept in `store`'s database.
    pub fn new(store: Store) -> Self {
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
        let s = i64::try_from(seq).map_err(|_| Error::UnexpectedResponse("audit record"))?;
        // Through the group-commit writer: committed (with the records of the other
        // requests in flight) before this returns.
        self.store.append_audit(s, signed.clone()).await?;
        Ok(seq)
    }

    /// Stores the attestation document that binds `audit_key` (kept if one is stored).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn store_document(
        &self,
        audit_key: [u8; 32],
        document: Vec<u8>,
    ) -> Result<(), Error> {
        self.store
            .with(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO audit_documents (audit_key, attestation_document)
                     VALUES (?1, ?2)",
                    params![audit_key.as_slice(), document],
                )?;
                Ok(())
            })
            .await
    }

    /// Stores `checkpoint` and, when given, replaces the key's policy if its stored
    /// version is still `expected` (compare-and-set): both or neither. A checkpoint
    /// with the `seq` of one already stored replaces it (the enclave dropped that
    /// change uncommitted and reissued the number); older checkpoints beyond
    /// [`KEPT_CHECKPOINTS`] are deleted.
    ///
    /// # Errors
    /// [`Error::PolicyConflict`]; [`Error::Store`]. Nothing is written on error.
    pub async fn store_checkpoint(
        &self,
        checkpoint: SealedCheckpoint,
        policy: Option<(u64, SealedPolicy)>,
    ) -> Result<(), Error> {
        let range = |_| Error::UnexpectedResponse("checkpoint");
        let seq = i64::try_from(checkpoint.seq).map_err(range)?;
        let now = crate::now_ms();
        self.store
            .with(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute(
                    "INSERT OR REPLACE INTO checkpoints (seq, keyring, epoch, body, mac, stored_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        seq,
                        checkpoint.keyring,
                        checkpoint.epoch,
                        checkpoint.body,
                        checkpoint.mac.as_slice(),
                        now
                    ],
                )?;
                tx.execute(
                    "DELETE FROM checkpoints WHERE seq <= ?1",
                    params![seq - KEPT_CHECKPOINTS],
                )?;
                if let Some((expected, policy)) = policy {
                    crate::store::cas_policy(&tx, expected, &policy)?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// The newest checkpoint, if any.
    ///
    /// # Errors
    /// [`Error::StoreCorrupt`] for a row of the wrong shape; [`Error::Store`].
    pub async fn latest_checkpoint(&self) -> Result<Option<SealedCheckpoint>, Error> {
        self.store
            .with(|c| {
                let row = c
                    .query_row(
                        "SELECT seq, keyring, epoch, body, mac FROM checkpoints
                         ORDER BY seq DESC LIMIT 1",
                        [],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, u32>(2)?,
                                r.get::<_, Vec<u8>>(3)?,
                                r.get::<_, Vec<u8>>(4)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((seq, keyring, epoch, body, mac)) = row else {
                    return Ok(None);
                };
                let corrupt = || Error::StoreCorrupt("checkpoint row".into());
                Ok(Some(SealedCheckpoint {
                    seq: u64::try_from(seq).map_err(|_| corrupt())?,
                    keyring,
                    epoch,
                    body,
                    mac: mac.try_into().map_err(|_| corrupt())?,
                }))
            })
            .await
    }

    /// The newest audit record, if any.
    ///
    /// # Errors
    /// As [`Journal::records_after`].
    pub async fn latest_record(&self) -> Result<Option<AuditRow>, Error> {
        let rows = self
            .query_rows("SELECT seq, record, signature, audit_key FROM audit_records ORDER BY seq DESC LIMIT 1", 0, 1)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Up to `limit` records with `seq > after`, ascending.
    ///
    /// # Errors
    /// [`Error::StoreCorrupt`] for a row of the wrong shape; [`Error::Store`].
    pub async fn records_after(&self, after: u64, limit: u32) -> Result<Vec<AuditRow>, Error> {
        self.query_rows(
            "SELECT seq, record, signature, audit_key FROM audit_records
             WHERE seq > ?1 ORDER BY seq ASC LIMIT ?2",
            after,
            limit.min(MAX_AUDIT_PAGE),
        )
        .await
    }

    async fn query_rows(
        &self,
        sql: &'static str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, Error> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.store
            .with(move |c| {
                let mut stmt = c.prepare_cached(sql)?;
                let bind: Vec<&dyn rusqlite::ToSql> = if sql.contains("?1") {
                    vec![&after, &limit]
                } else {
                    vec![]
                };
                let rows = stmt.query_map(bind.as_slice(), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (seq, record, signature, audit_key) = row?;
                    let corrupt = || Error::StoreCorrupt("audit record row".into());
                    out.push(AuditRow {
                        seq: u64::try_from(seq).map_err(|_| corrupt())?,
                        signed: SignedAuditRecord {
                            record,
                            signature: signature.try_into().map_err(|_| corrupt())?,
                            audit_key: audit_key.try_into().map_err(|_| corrupt())?,
                        },
                    });
                }
                Ok(out)
            })
            .await
    }

    /// The documents binding `keys` (those stored), as `(key, document)`.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn documents(&self, keys: Vec<[u8; 32]>) -> Result<Vec<([u8; 32], Vec<u8>)>, Error> {
        self.store
            .with(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT attestation_document FROM audit_documents WHERE audit_key = ?1",
                )?;
                let mut out = Vec::new();
                for key in keys {
                    let doc: Option<Vec<u8>> = stmt
                        .query_row(params![key.as_slice()], |r| r.get(0))
                        .optional()?;
                    if let Some(doc) = doc {
                        out.push((key, doc));
                    }
                }
                Ok(out)
            })
            .await
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
        self.store_checkpoint(checkpoint, cas).await?;
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
            self.store_document(audit.audit_key, document).await?;
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
    use ekms_shared::audit::{AuditAction, AuditDecision, GENESIS_HASH};

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

    fn checkpoint(seq: u64) -> SealedCheckpoint {
        SealedCheckpoint {
            seq,
            keyring: "default".into(),
            epoch: 1,
            body: vec![seq as u8],
            mac: [seq as u8; 32],
        }
    }

    #[tokio::test]
    async fn stores_records_once_and_pages_them() {
        let j = Journal::new(Store::open_in_memory().unwrap());
        assert_eq!(j.latest_record().await.unwrap(), None);
        for seq in 1..=5 {
            assert_eq!(j.store_record(&signed(seq)).await.unwrap(), seq);
        }
        assert!(matches!(
            j.store_record(&signed(3)).await,
            Err(Error::AlreadyExists(_))
        ));
        let page = j.records_after(1, 2).await.unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(j.latest_record().await.unwrap().unwrap().seq, 5);
        assert_eq!(page[0].signed, signed(2));
    }

    /// The group-commit writer: records stored concurrently all land, each once, and a
    /// duplicate in a batch fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_concurrent_records_in_shared_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(Store::open(&dir.path().join("ekms.db")).unwrap());
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
        assert_eq!(j.records_after(0, 1000).await.unwrap().len(), 300);
        assert_eq!(j.latest_record().await.unwrap().unwrap().seq, 300);
    }

    #[tokio::test]
    async fn rejects_a_record_that_does_not_parse() {
        let j = Journal::new(Store::open_in_memory().unwrap());
        let mut bad = signed(1);
        bad.record = "{".into();
        assert!(matches!(
            j.store_record(&bad).await,
            Err(Error::UnexpectedResponse(_))
        ));
    }

    #[tokio::test]
    async fn keeps_the_newest_checkpoints() {
        let j = Journal::new(Store::open_in_memory().unwrap());
        assert_eq!(j.latest_checkpoint().await.unwrap(), None);
        for seq in 1..=20 {
            j.store_checkpoint(checkpoint(seq), None).await.unwrap();
        }
        // A reissued number replaces the dropped one.
        let mut again = checkpoint(20);
        again.body = vec![0xee];
        j.store_checkpoint(again.clone(), None).await.unwrap();
        assert_eq!(j.latest_checkpoint().await.unwrap(), Some(again));
        let n: i64 = j
            .store
            .with(|c| Ok(c.query_row("SELECT COUNT(*) FROM checkpoints", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, KEPT_CHECKPOINTS);
    }

    #[tokio::test]
    async fn documents_are_kept_once() {
        let j = Journal::new(Store::open_in_memory().unwrap());
        j.store_document([1; 32], vec![1]).await.unwrap();
        j.store_document([1; 32], vec![2]).await.unwrap();
        assert_eq!(
            j.documents(vec![[1; 32], [2; 32]]).await.unwrap(),
            vec![([1; 32], vec![1])]
        );
    }
}
