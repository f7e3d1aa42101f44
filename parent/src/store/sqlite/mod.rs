//! The SQLite backend of the key store ([`super::KeyStore`]): rusqlite, bundled, holding what the enclave sealed — keyring
//! data-key ciphertexts, sealed key records and MAC'd policies — plus columns the API
//! lists (label, address, created_at).
//!
//! Nothing here is trusted by the enclave: every blob it reads back is authenticated
//! there (AES-GCM AAD, policy HMAC). The store's job is durability and atomicity:
//! - WAL journal with `synchronous=FULL`: a commit that returned is on disk;
//! - a key is inserted with its policy in one transaction, and reported created only
//!   after the commit;
//! - a policy update is a compare-and-set on the version (`UPDATE … WHERE version = ?`),
//!   so of two concurrent updates from the same version only one wins;
//! - every failure path returns before `COMMIT` (the transaction rolls back on drop).
//!
//! rusqlite is blocking: each call runs on `spawn_blocking` against one connection
//! behind a mutex. Two paths avoid that hop on the signing path (issue 10): audit
//! records are written by one group-commit thread that shares fsyncs between the
//! signatures in flight ([`group_commit`]), and the key rows a signature needs come from
//! a bounded in-memory cache kept coherent with the database ([`cache`]). Rule for
//! maintainers: a schema change bumps [`SCHEMA_VERSION`] and adds a migration step in
//! `migrate`; a write that changes a key's policy drops the key from the cache; the
//! backend passes [`super::conformance`] (its tests run it).
//!
//! API tokens (schema version 3, [`crate::auth`]) live here too: only their SHA-256
//! hashes, looked up by hash through a unique index. Valid tokens found by hash are kept
//! in a small in-memory cache (at most one entry per stored token), so the signing path
//! authenticates without a blocking SQLite call; a lookup that fills the cache and a
//! revocation that empties it both run under the connection's lock, so no cached entry
//! outlives a revoke.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, RwLock};

use ekms_shared::audit::SignedAuditRecord;
use ekms_shared::statement::SignedKeyStatement;
use ekms_shared::{Algorithm, KeyringRef, SealedKeyRecord, SealedPolicy};

use super::algorithm_text;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::cache::{CachedKey, KeyCache};
use super::group_commit;
use super::{KeyRow, KeySummary, NewKey, StoreError, StoredStatement, TokenRow};

mod journal;
mod keystore;
mod schema;
#[cfg(test)]
mod tests;
mod tokens;

pub use journal::{KEPT_CHECKPOINTS, SCHEMA_JOURNAL};
use schema::migrate;
pub use schema::SCHEMA_VERSION;
/// The SQLite key store. Cheap to clone (one shared connection and token cache).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Tokens found by hash (see the module docs); written only while `conn` is locked.
    tokens: Arc<RwLock<HashMap<[u8; 32], Arc<TokenRow>>>>,
    /// Key rows for the sign path ([`cache`]); filled and emptied while `conn` is locked.
    keys: Arc<KeyCache>,
    /// The group-commit writer of audit records ([`group_commit`]).
    audit: mpsc::Sender<group_commit::Job>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`: WAL, `synchronous=FULL`,
    /// `foreign_keys=ON`, schema created or checked.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if SQLite fails; [`StoreError::Schema`] if the file has a schema
    /// version this build does not know.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn, Some(path))
    }

    /// An in-memory store (tests and tools).
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<&Path>) -> Result<Self, StoreError> {
        // journal_mode returns a row, so it is read rather than executed.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )?;
        migrate(&mut conn)?;
        // After the migration, so the watch sees the schema (and its first value is
        // taken after our last commit).
        let keys = Arc::new(KeyCache::new(path)?);
        let conn = Arc::new(Mutex::new(conn));
        let audit = group_commit::start(Arc::clone(&conn), Arc::clone(&keys))?;
        Ok(SqliteStore {
            conn,
            tokens: Arc::default(),
            keys,
            audit,
        })
    }

    /// Runs `f` on the connection in a blocking task.
    pub(crate) async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let keys = Arc::clone(&self.keys);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-call; SQLite rolled back any open
            // transaction when its guard dropped, so the connection is still sound.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            keys.check_external(&guard);
            let changes = guard.total_changes();
            let result = f(&mut guard).map_err(corrupt_on_wrong_type);
            // Any row this call changed may be one a cached key copies: start over
            // (writes other than audit records are rare: keys, policies, tokens,
            // checkpoints).
            if guard.total_changes() != changes {
                keys.clear();
                keys.note_commit(&guard);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task: {e}")))?
    }

    /// The keyring `name` at its highest epoch, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], or [`StoreError::Corrupt`] for an epoch out of `u32` range.
    pub async fn latest_keyring(&self, name: String) -> Result<Option<KeyringRef>, StoreError> {
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT epoch, dek_ciphertext FROM keyrings WHERE name = ?1
                     ORDER BY epoch DESC LIMIT 1",
                    params![name],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()?;
            row.map(|(epoch, dek)| keyring_ref(name, epoch, dek))
                .transpose()
        })
        .await
    }

    /// The keyring `name` at `epoch`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub async fn keyring(
        &self,
        name: String,
        epoch: u32,
    ) -> Result<Option<KeyringRef>, StoreError> {
        self.with(move |c| read_keyring(c, name, epoch)).await
    }

    /// Stores a new keyring epoch durably.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if `(name, epoch)` is stored; [`StoreError::Sqlite`].
    pub async fn insert_keyring(
        &self,
        keyring: KeyringRef,
        created_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT INTO keyrings (name, epoch, dek_ciphertext, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![
                    keyring.keyring,
                    keyring.epoch,
                    keyring.dek_ciphertext,
                    created_at_ms
                ],
            )?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!(
                    "keyring {:?} epoch {}",
                    keyring.keyring, keyring.epoch
                )));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Inserts a key and its first policy in one transaction; returns once committed.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the policy's key id differs from the record's;
    /// [`StoreError::AlreadyExists`] for a duplicate key id; [`StoreError::Sqlite`] (including a
    /// foreign-key failure for a keyring epoch not stored). Nothing is written on error.
    pub async fn insert_key(&self, key: NewKey) -> Result<(), StoreError> {
        if key.policy.key_id != key.record.key_id {
            return Err(StoreError::Corrupt(
                "policy and record name different keys".into(),
            ));
        }
        let mut blob = Vec::new();
        ciborium::into_writer(&key.record, &mut blob)
            .map_err(|e| StoreError::Internal(format!("encoding the sealed record: {e}")))?;
        let version = i64::try_from(key.policy.version)
            .map_err(|_| StoreError::Corrupt("policy version out of range".into()))?;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let r = &key.record;
            let n = tx.execute(
                "INSERT INTO keys (key_id, algorithm, label, owner, public_key, address,
                                   keyring, epoch, sealed_record, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
                params![
                    r.key_id,
                    algorithm_text(r.algorithm),
                    key.label,
                    r.owner,
                    r.public_key,
                    key.address,
                    r.keyring,
                    r.epoch,
                    blob,
                    key.created_at_ms
                ],
            )?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!("key {}", r.key_id)));
            }
            tx.execute(
                "INSERT INTO policies (key_id, version, policy_json, mac) VALUES (?1, ?2, ?3, ?4)",
                params![
                    r.key_id,
                    version,
                    key.policy.policy_json,
                    key.policy.mac.as_slice()
                ],
            )?;
            write_statement(&tx, &r.key_id, &key.statement)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The stored statement of `key_id` and its identity key's document, if any.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a signature or identity key of the wrong length, or a
    /// statement without its identity document; [`StoreError::Sqlite`].
    pub async fn statement(&self, key_id: String) -> Result<Option<StoredStatement>, StoreError> {
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT s.statement, s.signature, s.identity_key, i.attestation_document
                     FROM key_statements s
                     LEFT JOIN enclave_identities i ON i.identity_key = s.identity_key
                     WHERE s.key_id = ?1",
                    params![key_id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, Option<Vec<u8>>>(3)?,
                        ))
                    },
                )
                .optional()?;
            let Some((statement, signature, identity_key, document)) = row else {
                return Ok(None);
            };
            let corrupt = |what: &str| StoreError::Corrupt(format!("key statement: {what}"));
            Ok(Some(StoredStatement {
                signed: SignedKeyStatement {
                    statement,
                    signature: signature
                        .try_into()
                        .map_err(|_| corrupt("signature is not 64 bytes"))?,
                    identity_key: identity_key
                        .try_into()
                        .map_err(|_| corrupt("identity key is not 32 bytes"))?,
                },
                identity_document: document
                    .ok_or_else(|| corrupt("the identity key's document is missing"))?,
            }))
        })
        .await
    }

    /// Stores (or replaces) the statement of an existing key, e.g. one the enclave
    /// issued for a key made before statements existed; returns once committed.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] (a foreign-key failure if the key is gone). Nothing is written
    /// on error.
    pub async fn put_statement(
        &self,
        key_id: String,
        statement: StoredStatement,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write_statement(&tx, &key_id, &statement)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The key `key_id` with its sealed record and policy, if stored.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the record blob does not decode, contradicts the
    /// row's columns, or the policy row is malformed; [`StoreError::Sqlite`].
    pub async fn key(&self, key_id: String) -> Result<Option<KeyRow>, StoreError> {
        self.with(move |c| read_key(c, key_id)).await
    }

    /// The key `key_id` and the keyring epoch that seals it, read under one lock in one
    /// blocking call (the sign and policy paths need both).
    ///
    /// # Errors
    /// As [`SqliteStore::key`]; [`StoreError::Corrupt`] if the key's keyring epoch is missing.
    pub async fn key_with_keyring(
        &self,
        key_id: String,
    ) -> Result<Option<(KeyRow, KeyringRef)>, StoreError> {
        Ok(self
            .load_key(key_id)
            .await?
            .map(|k| (k.row.clone(), k.keyring.clone())))
    }

    /// What [`SqliteStore::key_with_keyring`] reads, from the key cache when it holds the key
    /// (no blocking call, no database read), else read and cached. The flag tells
    /// whether it came from the cache (see [`SqliteStore::forget_key`]).
    ///
    /// # Errors
    /// As [`SqliteStore::key_with_keyring`].
    pub async fn cached_key(
        &self,
        key_id: &str,
    ) -> Result<Option<(Arc<CachedKey>, bool)>, StoreError> {
        if let Some(hit) = self.keys.get(key_id) {
            return Ok(Some((hit, true)));
        }
        Ok(self.load_key(key_id.to_owned()).await?.map(|k| (k, false)))
    }

    /// Drops `key_id` from the key cache (the enclave refused its cached row; the next
    /// use reads the database).
    pub fn forget_key(&self, key_id: &str) {
        self.keys.invalidate(key_id);
    }

    /// The key cache (tests and diagnostics).
    pub fn key_cache(&self) -> &KeyCache {
        &self.keys
    }

    /// Reads key `key_id` and its keyring epoch under one lock and caches them.
    async fn load_key(&self, key_id: String) -> Result<Option<Arc<CachedKey>>, StoreError> {
        let keys = Arc::clone(&self.keys);
        self.with(move |c| {
            let Some(row) = read_key(c, key_id)? else {
                return Ok(None);
            };
            let keyring = read_keyring(c, row.record.keyring.clone(), row.record.epoch)?
                .ok_or_else(|| StoreError::Corrupt("the key's keyring epoch is missing".into()))?;
            // Under the connection lock: no write can come between the read and this.
            Ok(Some(keys.insert(CachedKey { row, keyring })))
        })
        .await
    }

    /// Stores an audit record through the group-commit writer ([`group_commit`]);
    /// returns once the transaction holding it committed.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if a record with this `seq` is stored;
    /// [`StoreError::Internal`] if the batch failed or the writer is gone.
    pub(crate) async fn append_audit(
        &self,
        seq: i64,
        signed: SignedAuditRecord,
    ) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.audit
            .send(group_commit::Job { seq, signed, done })
            .map_err(|_| StoreError::Internal("the audit writer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Internal("the audit writer stopped".into()))?
    }

    /// Up to `limit` keys, newest first, each with its stored (unauthenticated) policy
    /// document.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a malformed row; [`StoreError::Sqlite`].
    pub async fn list_keys(&self, limit: u32) -> Result<Vec<(KeySummary, String)>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT k.key_id, k.algorithm, k.label, k.public_key, k.address,
                        k.created_at, p.version, p.policy_json
                 FROM keys k JOIN policies p ON p.key_id = k.key_id
                 ORDER BY k.created_at DESC, k.rowid DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit], |r| {
                Ok((summary_columns(r)?, r.get::<_, String>(7)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (summary, policy_json) = row?;
                out.push((summary.check()?, policy_json));
            }
            Ok(out)
        })
        .await
    }

    /// [`KeyStore::keys_by_address`]: `lower(address)` is indexed
    /// (`keys_by_lower_address`), so a lookup does not scan the table.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a row that does not decode; [`StoreError::Sqlite`].
    pub async fn keys_by_address(&self, address: String) -> Result<Vec<KeySummary>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT k.key_id, k.algorithm, k.label, k.public_key, k.address,
                        k.created_at, p.version
                 FROM keys k JOIN policies p ON p.key_id = k.key_id
                 WHERE lower(k.address) = lower(?1)
                 ORDER BY k.created_at DESC, k.rowid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![address, super::MAX_KEYS_BY_ADDRESS], |r| {
                summary_columns(r)
            })?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?.check()?);
            }
            Ok(out)
        })
        .await
    }

    /// Replaces the policy of `policy.key_id` if its stored version is still
    /// `expected_version` (compare-and-set), and commits.
    ///
    /// # Errors
    /// [`StoreError::PolicyConflict`] if the stored version differs (or the key is gone);
    /// [`StoreError::Corrupt`] if `policy.version` is not above `expected_version`;
    /// [`StoreError::Sqlite`]. Nothing is written on error.
    pub async fn compare_and_set_policy(
        &self,
        expected_version: u64,
        policy: SealedPolicy,
    ) -> Result<(), StoreError> {
        let keys = Arc::clone(&self.keys);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            cas_policy(&tx, expected_version, &policy)?;
            tx.commit()?;
            keys.invalidate(&policy.key_id);
            Ok(())
        })
        .await
    }
}

/// The compare-and-set of [`SqliteStore::compare_and_set_policy`] inside the caller's
/// transaction (also used with a checkpoint, [`crate::service::journal`]).
///
/// # Errors
/// As [`SqliteStore::compare_and_set_policy`].
pub(crate) fn cas_policy(
    tx: &rusqlite::Transaction<'_>,
    expected_version: u64,
    policy: &SealedPolicy,
) -> Result<(), StoreError> {
    if policy.version <= expected_version {
        return Err(StoreError::Corrupt(
            "a new policy version must be above the current one".into(),
        ));
    }
    let range = |_| StoreError::Corrupt("policy version out of range".into());
    let expected = i64::try_from(expected_version).map_err(range)?;
    let version = i64::try_from(policy.version).map_err(range)?;
    let n = tx.execute(
        "UPDATE policies SET version = ?1, policy_json = ?2, mac = ?3
         WHERE key_id = ?4 AND version = ?5",
        params![
            version,
            policy.policy_json,
            policy.mac.as_slice(),
            policy.key_id,
            expected
        ],
    )?;
    if n != 1 {
        return Err(StoreError::PolicyConflict {
            expected: expected_version,
        });
    }
    Ok(())
}

/// SQLite columns are dynamically typed: a row edited outside the parent can hold TEXT
/// where a BLOB belongs, or an integer out of range. rusqlite reports that as a type
/// error while reading the row; it is a corrupt row (answered `sealed_state_invalid`),
/// not an internal failure of the store.
fn corrupt_on_wrong_type(error: StoreError) -> StoreError {
    use rusqlite::Error as E;
    match error {
        StoreError::Sqlite(
            e @ (E::InvalidColumnType(..)
            | E::FromSqlConversionFailure(..)
            | E::IntegralValueOutOfRange(..)),
        ) => StoreError::Corrupt(format!("a column has the wrong type: {e}")),
        other => other,
    }
}

/// Raw columns of a summary, checked by [`RawSummary::check`] (outside the rusqlite
/// row callback, so a bad value becomes [`StoreError::Corrupt`]).
struct RawSummary {
    key_id: String,
    algorithm: String,
    label: Option<String>,
    public_key: Vec<u8>,
    address: String,
    created_at_ms: i64,
    policy_version: i64,
}

fn summary_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawSummary> {
    Ok(RawSummary {
        key_id: r.get(0)?,
        algorithm: r.get(1)?,
        label: r.get(2)?,
        public_key: r.get(3)?,
        address: r.get(4)?,
        created_at_ms: r.get(5)?,
        policy_version: r.get(6)?,
    })
}

impl RawSummary {
    fn check(self) -> Result<KeySummary, StoreError> {
        let algorithm = match self.algorithm.as_str() {
            "secp256k1" => Algorithm::Secp256k1,
            "ed25519" => Algorithm::Ed25519,
            _ => return Err(StoreError::Corrupt("unknown algorithm".into())),
        };
        let policy_version = u64::try_from(self.policy_version)
            .map_err(|_| StoreError::Corrupt("negative policy version".into()))?;
        Ok(KeySummary {
            key_id: self.key_id,
            algorithm,
            label: self.label,
            public_key: self.public_key,
            address: self.address,
            created_at_ms: self.created_at_ms,
            policy_version,
        })
    }
}

fn keyring_ref(
    name: String,
    epoch: i64,
    dek_ciphertext: Vec<u8>,
) -> Result<KeyringRef, StoreError> {
    let epoch = u32::try_from(epoch)
        .map_err(|_| StoreError::Corrupt("keyring epoch out of range".into()))?;
    Ok(KeyringRef {
        keyring: name,
        epoch,
        dek_ciphertext,
    })
}

/// Reads one keyring epoch (see [`SqliteStore::keyring`]).
fn read_keyring(
    c: &Connection,
    name: String,
    epoch: u32,
) -> Result<Option<KeyringRef>, StoreError> {
    let dek = c
        .query_row(
            "SELECT dek_ciphertext FROM keyrings WHERE name = ?1 AND epoch = ?2",
            params![name, epoch],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?;
    Ok(dek.map(|dek_ciphertext| KeyringRef {
        keyring: name,
        epoch,
        dek_ciphertext,
    }))
}

/// Writes a key's statement and its identity document (kept once per identity key).
fn write_statement(
    tx: &rusqlite::Transaction<'_>,
    key_id: &str,
    statement: &StoredStatement,
) -> Result<(), StoreError> {
    let signed = &statement.signed;
    tx.execute(
        "INSERT INTO enclave_identities (identity_key, attestation_document) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
        params![
            signed.identity_key.as_slice(),
            statement.identity_document.as_slice()
        ],
    )?;
    tx.execute(
        "INSERT INTO key_statements (key_id, statement, signature, identity_key)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key_id) DO UPDATE SET statement = excluded.statement,
             signature = excluded.signature, identity_key = excluded.identity_key",
        params![
            key_id,
            signed.statement,
            signed.signature.as_slice(),
            signed.identity_key.as_slice()
        ],
    )?;
    Ok(())
}

/// Reads one key with its sealed record and policy (see [`SqliteStore::key`]).
fn read_key(c: &Connection, key_id: String) -> Result<Option<KeyRow>, StoreError> {
    let row = c
        .query_row(
            "SELECT k.key_id, k.algorithm, k.label, k.public_key, k.address,
                    k.created_at, p.version, k.sealed_record, k.keyring, k.epoch,
                    p.policy_json, p.mac
             FROM keys k JOIN policies p ON p.key_id = k.key_id
             WHERE k.key_id = ?1",
            params![key_id],
            |r| {
                Ok((
                    summary_columns(r)?,
                    r.get::<_, Vec<u8>>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, Vec<u8>>(11)?,
                ))
            },
        )
        .optional()?;
    let Some((summary, blob, keyring, epoch, policy_json, mac)) = row else {
        return Ok(None);
    };
    let summary = summary.check()?;
    let mut rest = blob.as_slice();
    let record: SealedKeyRecord =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, ekms_shared::MAX_CBOR_DEPTH)
            .ok()
            .filter(|_| rest.is_empty())
            .ok_or_else(|| StoreError::Corrupt("sealed record does not decode".into()))?;
    if record.key_id != summary.key_id
        || record.algorithm != summary.algorithm
        || record.public_key != summary.public_key
        || record.keyring != keyring
        || i64::from(record.epoch) != epoch
    {
        return Err(StoreError::Corrupt(
            "sealed record contradicts its row".into(),
        ));
    }
    let mac: [u8; 32] = mac
        .try_into()
        .map_err(|_| StoreError::Corrupt("policy MAC is not 32 bytes".into()))?;
    let policy = SealedPolicy {
        key_id: summary.key_id.clone(),
        version: summary.policy_version,
        policy_json,
        mac,
    };
    Ok(Some(KeyRow {
        summary,
        record,
        policy,
    }))
}
