//! The SQLite tables of the enclave's durable state and audit chain (issue 7):
//! checkpoints, audit records (written by the group-commit thread,
//! [`crate::store::group_commit`]) and the attestation documents binding audit keys.
//! Rows are written, never updated: an audit record's `seq` is its primary key.

use ekms_shared::audit::SignedAuditRecord;
use ekms_shared::{SealedCheckpoint, SealedPolicy};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::SqliteStore;
use crate::store::{AuditRow, StoreError};

/// Schema of the journal's tables: the enclave's checkpoints, its audit records and the
/// documents binding its audit keys (created by the migration, version 4).
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
impl SqliteStore {
    /// Stores the attestation document that binds `audit_key` (kept if one is stored).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub async fn put_audit_document(
        &self,
        audit_key: [u8; 32],
        document: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
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
    /// [`StoreError::PolicyConflict`]; [`StoreError::Sqlite`]. Nothing is written on error.
    pub async fn store_checkpoint(
        &self,
        checkpoint: SealedCheckpoint,
        policy: Option<(u64, SealedPolicy)>,
    ) -> Result<(), StoreError> {
        let range = |_| StoreError::Corrupt("checkpoint seq out of range".into());
        let seq = i64::try_from(checkpoint.seq).map_err(range)?;
        let now = crate::now_ms();
        self.with(move |c| {
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
                super::cas_policy(&tx, expected, &policy)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The newest checkpoint, if any.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a row of the wrong shape; [`StoreError::Sqlite`].
    pub async fn latest_checkpoint(&self) -> Result<Option<SealedCheckpoint>, StoreError> {
        self.with(|c| {
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
            let corrupt = || StoreError::Corrupt("checkpoint row".into());
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
    /// As [`SqliteStore::audit_records_after`].
    pub async fn latest_audit_record(&self) -> Result<Option<AuditRow>, StoreError> {
        let rows = self
            .query_rows("SELECT seq, record, signature, audit_key FROM audit_records ORDER BY seq DESC LIMIT 1", 0, 1)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Up to `limit` records with `seq > after`, ascending.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a row of the wrong shape; [`StoreError::Sqlite`].
    pub async fn audit_records_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.query_rows(
            "SELECT seq, record, signature, audit_key FROM audit_records
             WHERE seq > ?1 ORDER BY seq ASC LIMIT ?2",
            after,
            limit,
        )
        .await
    }

    async fn query_rows(
        &self,
        sql: &'static str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.with(move |c| {
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
                let corrupt = || StoreError::Corrupt("audit record row".into());
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
    /// [`StoreError::Sqlite`].
    pub async fn audit_documents(
        &self,
        keys: Vec<[u8; 32]>,
    ) -> Result<Vec<([u8; 32], Vec<u8>)>, StoreError> {
        self.with(move |c| {
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
}
