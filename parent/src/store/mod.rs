//! The key store: SQLite (rusqlite, bundled) holding what the enclave sealed — keyring
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
//! [`migrate`]; a write that changes a key's policy drops the key from the cache.
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
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::Error;

pub mod cache;
pub(crate) mod group_commit;

pub use cache::{CachedKey, KeyCache};

/// Version of the schema below, kept in the `schema_version` table.
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA_V1: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE keyrings (
    name           TEXT    NOT NULL,
    epoch          INTEGER NOT NULL CHECK (epoch >= 0),
    dek_ciphertext BLOB    NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (name, epoch)
);
CREATE TABLE keys (
    key_id        TEXT    PRIMARY KEY NOT NULL,
    algorithm     TEXT    NOT NULL CHECK (algorithm IN ('secp256k1', 'ed25519')),
    label         TEXT,
    owner         TEXT,
    public_key    BLOB    NOT NULL,
    address       TEXT    NOT NULL,
    keyring       TEXT    NOT NULL,
    epoch         INTEGER NOT NULL,
    sealed_record BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    FOREIGN KEY (keyring, epoch) REFERENCES keyrings (name, epoch)
);
CREATE INDEX keys_by_created_at ON keys (created_at DESC);
CREATE TABLE policies (
    key_id      TEXT    PRIMARY KEY NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version >= 0),
    policy_json TEXT    NOT NULL,
    mac         BLOB    NOT NULL
);
";

/// Version 2: the enclave's key statements (`ekms_shared::statement`) and the
/// attestation documents that bind the identity keys that signed them. A key stored
/// under version 1 has no statement until the parent asks the enclave for one.
const SCHEMA_V2: &str = "
CREATE TABLE enclave_identities (
    identity_key         BLOB PRIMARY KEY NOT NULL,
    attestation_document BLOB NOT NULL
);
CREATE TABLE key_statements (
    key_id       TEXT PRIMARY KEY NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
    statement    TEXT NOT NULL,
    signature    BLOB NOT NULL,
    identity_key BLOB NOT NULL
);
";

/// Version 3: API tokens ([`crate::auth`]). Only the SHA-256 of a token is stored
/// (`token_hash`, unique and so indexed); `scopes` is the space-separated scope names,
/// `key_ids` a JSON array of the keys a `sign` scope is limited to (NULL: every key),
/// times in milliseconds since the Unix epoch.
const SCHEMA_V3: &str = "
CREATE TABLE tokens (
    token_id   TEXT    PRIMARY KEY NOT NULL,
    name       TEXT    NOT NULL,
    token_hash BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    scopes     TEXT    NOT NULL,
    key_ids    TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
";

/// The SQLite key store. Cheap to clone (one shared connection and token cache).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Tokens found by hash (see the module docs); written only while `conn` is locked.
    tokens: Arc<RwLock<HashMap<[u8; 32], Arc<TokenRow>>>>,
    /// Key rows for the sign path ([`cache`]); filled and emptied while `conn` is locked.
    keys: Arc<KeyCache>,
    /// The group-commit writer of audit records ([`group_commit`]).
    audit: mpsc::Sender<group_commit::Job>,
}

/// A stored API token (never the token itself: its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Non-secret id (32 hex digits).
    pub token_id: String,
    /// Operator's name for the token.
    pub name: String,
    /// SHA-256 of the token string.
    pub token_hash: [u8; 32],
    /// Scope names ([`crate::auth::Scope::as_str`]), space-separated.
    pub scopes: String,
    /// Keys the `sign` scope is limited to; `None`: every key.
    pub key_ids: Option<Vec<String>>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Expiry, milliseconds since the Unix epoch; `None`: never.
    pub expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A key's listed columns (what `GET /v1/keys` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    /// UUID v4 chosen by the parent, bound into the sealed record.
    pub key_id: String,
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// Caller's label, if any.
    pub label: Option<String>,
    /// Public key bytes (33-byte compressed SEC1 or 32-byte ed25519).
    pub public_key: Vec<u8>,
    /// EIP-55 or base58 address (see [`crate::format::address`]).
    pub address: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Current policy version.
    pub policy_version: u64,
}

/// A key with everything the enclave needs to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// The listed columns.
    pub summary: KeySummary,
    /// The sealed record, decoded from its CBOR blob and checked against the columns.
    pub record: SealedKeyRecord,
    /// The current MAC'd policy.
    pub policy: SealedPolicy,
}

/// A key to insert: the enclave's sealed record and first policy, plus API columns.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Caller's label.
    pub label: Option<String>,
    /// Address computed from `record.public_key`.
    pub address: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Sealed record from `KeyGenerated`.
    pub record: SealedKeyRecord,
    /// First policy from `KeyGenerated` (its `key_id` must equal the record's).
    pub policy: SealedPolicy,
    /// The enclave's statement from `KeyGenerated` and the document binding its
    /// identity key.
    pub statement: StoredStatement,
}

/// A key statement as stored, with the attestation document of its identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStatement {
    /// The signed statement.
    pub signed: SignedKeyStatement,
    /// COSE_Sign1 attestation document binding `signed.identity_key`.
    pub identity_document: Vec<u8>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`: WAL, `synchronous=FULL`,
    /// `foreign_keys=ON`, schema created or checked.
    ///
    /// # Errors
    /// [`Error::Store`] if SQLite fails; [`Error::Config`] if the file has a schema
    /// version this build does not know.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let conn = Connection::open(path)?;
        Self::init(conn, Some(path))
    }

    /// An in-memory store (tests and tools).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_in_memory() -> Result<Self, Error> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<&Path>) -> Result<Self, Error> {
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
        Ok(Store {
            conn,
            tokens: Arc::default(),
            keys,
            audit,
        })
    }

    /// Runs `f` on the connection in a blocking task.
    pub(crate) async fn with<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
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
        .map_err(|e| Error::Internal(format!("store task: {e}")))?
    }

    /// The keyring `name` at its highest epoch, if any.
    ///
    /// # Errors
    /// [`Error::Store`], or [`Error::StoreCorrupt`] for an epoch out of `u32` range.
    pub async fn latest_keyring(&self, name: String) -> Result<Option<KeyringRef>, Error> {
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
    /// [`Error::Store`].
    pub async fn keyring(&self, name: String, epoch: u32) -> Result<Option<KeyringRef>, Error> {
        self.with(move |c| read_keyring(c, name, epoch)).await
    }

    /// Stores a new keyring epoch durably.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if `(name, epoch)` is stored; [`Error::Store`].
    pub async fn insert_keyring(
        &self,
        keyring: KeyringRef,
        created_at_ms: i64,
    ) -> Result<(), Error> {
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
                return Err(Error::AlreadyExists(format!(
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
    /// [`Error::StoreCorrupt`] if the policy's key id differs from the record's;
    /// [`Error::AlreadyExists`] for a duplicate key id; [`Error::Store`] (including a
    /// foreign-key failure for a keyring epoch not stored). Nothing is written on error.
    pub async fn insert_key(&self, key: NewKey) -> Result<(), Error> {
        if key.policy.key_id != key.record.key_id {
            return Err(Error::StoreCorrupt(
                "policy and record name different keys".into(),
            ));
        }
        let mut blob = Vec::new();
        ciborium::into_writer(&key.record, &mut blob)
            .map_err(|e| Error::Internal(format!("encoding the sealed record: {e}")))?;
        let version = i64::try_from(key.policy.version)
            .map_err(|_| Error::StoreCorrupt("policy version out of range".into()))?;
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
                return Err(Error::AlreadyExists(format!("key {}", r.key_id)));
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
    /// [`Error::StoreCorrupt`] for a signature or identity key of the wrong length, or a
    /// statement without its identity document; [`Error::Store`].
    pub async fn statement(&self, key_id: String) -> Result<Option<StoredStatement>, Error> {
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
            let corrupt = |what: &str| Error::StoreCorrupt(format!("key statement: {what}"));
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
    /// [`Error::Store`] (a foreign-key failure if the key is gone). Nothing is written
    /// on error.
    pub async fn put_statement(
        &self,
        key_id: String,
        statement: StoredStatement,
    ) -> Result<(), Error> {
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
    /// [`Error::StoreCorrupt`] if the record blob does not decode, contradicts the
    /// row's columns, or the policy row is malformed; [`Error::Store`].
    pub async fn key(&self, key_id: String) -> Result<Option<KeyRow>, Error> {
        self.with(move |c| read_key(c, key_id)).await
    }

    /// The key `key_id` and the keyring epoch that seals it, read under one lock in one
    /// blocking call (the sign and policy paths need both).
    ///
    /// # Errors
    /// As [`Store::key`]; [`Error::StoreCorrupt`] if the key's keyring epoch is missing.
    pub async fn key_with_keyring(
        &self,
        key_id: String,
    ) -> Result<Option<(KeyRow, KeyringRef)>, Error> {
        Ok(self
            .load_key(key_id)
            .await?
            .map(|k| (k.row.clone(), k.keyring.clone())))
    }

    /// What [`Store::key_with_keyring`] reads, from the key cache when it holds the key
    /// (no blocking call, no database read), else read and cached. The flag tells
    /// whether it came from the cache (see [`Store::forget_key`]).
    ///
    /// # Errors
    /// As [`Store::key_with_keyring`].
    pub async fn cached_key(&self, key_id: &str) -> Result<Option<(Arc<CachedKey>, bool)>, Error> {
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
    async fn load_key(&self, key_id: String) -> Result<Option<Arc<CachedKey>>, Error> {
        let keys = Arc::clone(&self.keys);
        self.with(move |c| {
            let Some(row) = read_key(c, key_id)? else {
                return Ok(None);
            };
            let keyring = read_keyring(c, row.record.keyring.clone(), row.record.epoch)?
                .ok_or_else(|| Error::StoreCorrupt("the key's keyring epoch is missing".into()))?;
            // Under the connection lock: no write can come between the read and this.
            Ok(Some(keys.insert(CachedKey { row, keyring })))
        })
        .await
    }

    /// Stores an audit record through the group-commit writer ([`group_commit`]);
    /// returns once the transaction holding it committed.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a record with this `seq` is stored;
    /// [`Error::Internal`] if the batch failed or the writer is gone.
    pub(crate) async fn append_audit(
        &self,
        seq: i64,
        signed: SignedAuditRecord,
    ) -> Result<(), Error> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.audit
            .send(group_commit::Job { seq, signed, done })
            .map_err(|_| Error::Internal("the audit writer stopped".into()))?;
        wait.await
            .map_err(|_| Error::Internal("the audit writer stopped".into()))?
    }

    /// Up to `limit` keys, newest first, each with its stored (unauthenticated) policy
    /// document.
    ///
    /// # Errors
    /// [`Error::StoreCorrupt`] for a malformed row; [`Error::Store`].
    pub async fn list_keys(&self, limit: u32) -> Result<Vec<(KeySummary, String)>, Error> {
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

    /// Replaces the policy of `policy.key_id` if its stored version is still
    /// `expected_version` (compare-and-set), and commits.
    ///
    /// # Errors
    /// [`Error::PolicyConflict`] if the stored version differs (or the key is gone);
    /// [`Error::StoreCorrupt`] if `policy.version` is not above `expected_version`;
    /// [`Error::Store`]. Nothing is written on error.
    pub async fn compare_and_set_policy(
        &self,
        expected_version: u64,
        policy: SealedPolicy,
    ) -> Result<(), Error> {
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

    /// Stores a new API token; returns once committed. With `max_tokens`, refuses when
    /// that many tokens are stored already (the bootstrap admin token passes `None`).
    ///
    /// # Errors
    /// [`Error::TooManyTokens`]; [`Error::AlreadyExists`] for a duplicate id or hash;
    /// [`Error::Store`]. Nothing is written on error.
    pub async fn insert_token(
        &self,
        token: TokenRow,
        max_tokens: Option<usize>,
    ) -> Result<(), Error> {
        let key_ids = token
            .key_ids
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Internal(format!("encoding key ids: {e}")))?;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(max) = max_tokens {
                let n: i64 = tx.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))?;
                if usize::try_from(n).map_or(true, |n| n >= max) {
                    return Err(Error::TooManyTokens(max));
                }
            }
            let n = tx.execute(
                "INSERT INTO tokens (token_id, name, token_hash, scopes, key_ids, created_at,
                                     expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    token.token_id,
                    token.name,
                    token.token_hash.as_slice(),
                    token.scopes,
                    key_ids,
                    token.created_at_ms,
                    token.expires_at_ms
                ],
            )?;
            if n == 0 {
                return Err(Error::AlreadyExists(format!("token {}", token.token_id)));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The token whose SHA-256 is `hash`, if stored: from the cache, else one indexed
    /// query (which caches what it finds). Expiry is the caller's check.
    ///
    /// # Errors
    /// [`Error::StoreCorrupt`] for a malformed row; [`Error::Store`].
    pub async fn token_by_hash(&self, hash: [u8; 32]) -> Result<Option<Arc<TokenRow>>, Error> {
        if let Some(row) = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
        {
            return Ok(Some(Arc::clone(row)));
        }
        let cache = Arc::clone(&self.tokens);
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!("{TOKEN_COLUMNS} WHERE token_hash = ?1"),
                    params![hash.as_slice()],
                    token_columns,
                )
                .optional()?;
            let Some(row) = row else { return Ok(None) };
            let row = Arc::new(row.check()?);
            // Under the connection lock: a revoke cannot run between the query and this.
            cache
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash, Arc::clone(&row));
            Ok(Some(row))
        })
        .await
    }

    /// Every stored token, oldest first.
    ///
    /// # Errors
    /// [`Error::StoreCorrupt`] for a malformed row; [`Error::Store`].
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, Error> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{TOKEN_COLUMNS} ORDER BY created_at ASC, rowid ASC"
            ))?;
            let rows = stmt.query_map([], token_columns)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?.check()?);
            }
            Ok(out)
        })
        .await
    }

    /// Deletes the token `token_id` and drops it from the cache, before returning.
    /// Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn delete_token(&self, token_id: String) -> Result<bool, Error> {
        let cache = Arc::clone(&self.tokens);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let hash: Option<Vec<u8>> = tx
                .query_row(
                    "DELETE FROM tokens WHERE token_id = ?1 RETURNING token_hash",
                    params![token_id],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
            match hash.as_deref().map(<[u8; 32]>::try_from) {
                Some(Ok(h)) => {
                    cache.remove(&h);
                }
                // A hash of the wrong shape was never cached; drop every entry of this
                // id anyway.
                _ => cache.retain(|_, row| row.token_id != token_id),
            }
            Ok(hash.is_some())
        })
        .await
    }
}

/// The compare-and-set of [`Store::compare_and_set_policy`] inside the caller's
/// transaction (also used with a checkpoint, [`crate::journal`]).
///
/// # Errors
/// As [`Store::compare_and_set_policy`].
pub(crate) fn cas_policy(
    tx: &rusqlite::Transaction<'_>,
    expected_version: u64,
    policy: &SealedPolicy,
) -> Result<(), Error> {
    if policy.version <= expected_version {
        return Err(Error::StoreCorrupt(
            "a new policy version must be above the current one".into(),
        ));
    }
    let range = |_| Error::StoreCorrupt("policy version out of range".into());
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
        return Err(Error::PolicyConflict {
            expected: expected_version,
        });
    }
    Ok(())
}

/// SQLite columns are dynamically typed: a row edited outside the parent can hold TEXT
/// where a BLOB belongs, or an integer out of range. rusqlite reports that as a type
/// error while reading the row; it is a corrupt row (answered `sealed_state_invalid`),
/// not an internal failure of the store.
fn corrupt_on_wrong_type(error: Error) -> Error {
    use rusqlite::Error as E;
    match error {
        Error::Store(
            e @ (E::InvalidColumnType(..)
            | E::FromSqlConversionFailure(..)
            | E::IntegralValueOutOfRange(..)),
        ) => Error::StoreCorrupt(format!("a column has the wrong type: {e}")),
        other => other,
    }
}

/// Creates the schema in an empty database, or checks the stored version.
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_table: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        tx.execute_batch(SCHEMA_V1)?;
        tx.execute_batch(SCHEMA_V2)?;
        tx.execute_batch(SCHEMA_V3)?;
        tx.execute_batch(crate::journal::SCHEMA_JOURNAL)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![SCHEMA_VERSION],
        )?;
        tx.commit()?;
        return Ok(());
    }
    let mut version: i64 = tx.query_row("SELECT MAX(version) FROM schema_version", [], |r| {
        r.get::<_, Option<i64>>(0).map(|v| v.unwrap_or(0))
    })?;
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(Error::Config(format!(
            "database schema version {version}, this build knows {SCHEMA_VERSION}"
        )));
    }
    // One step per version, in order, in one transaction.
    let steps: [(i64, &str); 3] = [
        (2, SCHEMA_V2),
        (3, SCHEMA_V3),
        // Version 4: the enclave's checkpoints and audit chain (crate::journal).
        (4, crate::journal::SCHEMA_JOURNAL),
    ];
    for (to, sql) in steps {
        if version == to - 1 {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![to],
            )?;
            version = to;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The columns [`token_columns`] reads.
const TOKEN_COLUMNS: &str = "SELECT token_id, name, token_hash, scopes, key_ids, created_at,
    expires_at FROM tokens";

/// A token row as read, checked by [`RawToken::check`].
struct RawToken {
    token_id: String,
    name: String,
    token_hash: Vec<u8>,
    scopes: String,
    key_ids: Option<String>,
    created_at_ms: i64,
    expires_at_ms: Option<i64>,
}

fn token_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawToken> {
    Ok(RawToken {
        token_id: r.get(0)?,
        name: r.get(1)?,
        token_hash: r.get(2)?,
        scopes: r.get(3)?,
        key_ids: r.get(4)?,
        created_at_ms: r.get(5)?,
        expires_at_ms: r.get(6)?,
    })
}

impl RawToken {
    fn check(self) -> Result<TokenRow, Error> {
        let corrupt = |what: &str| Error::StoreCorrupt(format!("token {}: {what}", self.token_id));
        let token_hash = <[u8; 32]>::try_from(self.token_hash.as_slice())
            .map_err(|_| corrupt("hash is not 32 bytes"))?;
        let key_ids = match &self.key_ids {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Vec<String>>(text)
                    .map_err(|_| corrupt("key_ids is not a JSON array of strings"))?,
            ),
        };
        Ok(TokenRow {
            token_id: self.token_id,
            name: self.name,
            token_hash,
            scopes: self.scopes,
            key_ids,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
        })
    }
}

/// Raw columns of a summary, checked by [`RawSummary::check`] (outside the rusqlite
/// row callback, so a bad value becomes [`Error::StoreCorrupt`]).
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
    fn check(self) -> Result<KeySummary, Error> {
        let algorithm = match self.algorithm.as_str() {
            "secp256k1" => Algorithm::Secp256k1,
            "ed25519" => Algorithm::Ed25519,
            _ => return Err(Error::StoreCorrupt("unknown algorithm".into())),
        };
        let policy_version = u64::try_from(self.policy_version)
            .map_err(|_| Error::StoreCorrupt("negative policy version".into()))?;
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

fn keyring_ref(name: String, epoch: i64, dek_ciphertext: Vec<u8>) -> Result<KeyringRef, Error> {
    let epoch = u32::try_from(epoch)
        .map_err(|_| Error::StoreCorrupt("keyring epoch out of range".into()))?;
    Ok(KeyringRef {
        keyring: name,
        epoch,
        dek_ciphertext,
    })
}

/// The `keys.algorithm` column value (also the API's spelling).
pub fn algorithm_text(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Secp256k1 => "secp256k1",
        Algorithm::Ed25519 => "ed25519",
    }
}

/// Reads one keyring epoch (see [`Store::keyring`]).
fn read_keyring(c: &Connection, name: String, epoch: u32) -> Result<Option<KeyringRef>, Error> {
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
) -> Result<(), Error> {
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

/// Reads one key with its sealed record and policy (see [`Store::key`]).
fn read_key(c: &Connection, key_id: String) -> Result<Option<KeyRow>, Error> {
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
            .ok_or_else(|| Error::StoreCorrupt("sealed record does not decode".into()))?;
    if record.key_id != summary.key_id
        || record.algorithm != summary.algorithm
        || record.public_key != summary.public_key
        || record.keyring != keyring
        || i64::from(record.epoch) != epoch
    {
        return Err(Error::StoreCorrupt(
            "sealed record contradicts its row".into(),
        ));
    }
    let mac: [u8; 32] = mac
        .try_into()
        .map_err(|_| Error::StoreCorrupt("policy MAC is not 32 bytes".into()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;

    fn keyring() -> KeyringRef {
        KeyringRef {
            keyring: "default".into(),
            epoch: 1,
            dek_ciphertext: vec![0xde; 40],
        }
    }

    fn new_key(key_id: &str, created_at_ms: i64) -> NewKey {
        NewKey {
            label: Some("bot".into()),
            address: "0xabc".into(),
            created_at_ms,
            record: SealedKeyRecord {
                version: 1,
                key_id: key_id.into(),
                owner: None,
                algorithm: Algorithm::Secp256k1,
                public_key: vec![2; 33],
                keyring: "default".into(),
                epoch: 1,
                salt: [7; 32],
                nonce: [9; 12],
                ciphertext: vec![1, 2, 3],
            },
            policy: SealedPolicy {
                key_id: key_id.into(),
                version: 1,
                policy_json: r#"{"enabled":true}"#.into(),
                mac: [5; 32],
            },
            statement: StoredStatement {
                signed: SignedKeyStatement {
                    statement: format!(r#"{{"key_id":"{key_id}"}}"#),
                    signature: [3; 64],
                    identity_key: [4; 32],
                },
                identity_document: vec![0xd2; 8],
            },
        }
    }

    #[tokio::test]
    async fn stores_replaces_and_migrates_statements() {
        let store = store_with_keyring().await;
        store.insert_key(new_key("k1", 1)).await.unwrap();
        let got = store.statement("k1".into()).await.unwrap().unwrap();
        assert_eq!(got, new_key("k1", 1).statement);
        let mut other = got.clone();
        other.signed.statement = "replaced".into();
        other.signed.identity_key = [9; 32];
        store
            .put_statement("k1".into(), other.clone())
            .await
            .unwrap();
        assert_eq!(store.statement("k1".into()).await.unwrap(), Some(other));
        assert_eq!(store.statement("nope".into()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn migrates_a_version_1_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute("INSERT INTO schema_version (version) VALUES (1)", [])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        store.insert_keyring(keyring(), 1).await.unwrap();
        store.insert_key(new_key("k1", 1)).await.unwrap();
        drop(store);
        // Reopening a migrated database is a no-op.
        let store = Store::open(&path).unwrap();
        assert!(store.statement("k1".into()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn migrates_a_version_2_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(SCHEMA_V2).unwrap();
            c.execute("INSERT INTO schema_version (version) VALUES (1), (2)", [])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        store.insert_token(token_row("t1", 1), None).await.unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.list_tokens().await.unwrap(), [token_row("t1", 1)]);
        let version: i64 = store
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    fn token_row(id: &str, hash_byte: u8) -> TokenRow {
        TokenRow {
            token_id: id.into(),
            name: "bot".into(),
            token_hash: [hash_byte; 32],
            scopes: "sign keys:read".into(),
            key_ids: Some(vec!["k1".into()]),
            created_at_ms: 5,
            expires_at_ms: Some(9),
        }
    }

    #[tokio::test]
    async fn finds_tokens_by_hash_until_they_are_deleted() {
        let s = Store::open_in_memory().unwrap();
        s.insert_token(token_row("t1", 1), None).await.unwrap();
        s.insert_token(token_row("t2", 2), None).await.unwrap();
        for _ in 0..2 {
            // The second round is served from the cache.
            let got = s.token_by_hash([1; 32]).await.unwrap().unwrap();
            assert_eq!(*got, token_row("t1", 1));
        }
        assert!(s.token_by_hash([3; 32]).await.unwrap().is_none());
        assert!(s.delete_token("t1".into()).await.unwrap());
        assert!(s.token_by_hash([1; 32]).await.unwrap().is_none());
        assert!(!s.delete_token("t1".into()).await.unwrap());
        assert_eq!(s.list_tokens().await.unwrap(), [token_row("t2", 2)]);
    }

    #[tokio::test]
    async fn rejects_tokens_over_the_limit_or_duplicated() {
        let s = Store::open_in_memory().unwrap();
        s.insert_token(token_row("t1", 1), Some(2)).await.unwrap();
        s.insert_token(token_row("t2", 2), Some(2)).await.unwrap();
        assert!(matches!(
            s.insert_token(token_row("t3", 3), Some(2)).await,
            Err(Error::TooManyTokens(2))
        ));
        // The bootstrap path has no limit; a duplicate hash or id is refused.
        s.insert_token(token_row("t3", 3), None).await.unwrap();
        assert!(s.insert_token(token_row("t4", 3), None).await.is_err());
        assert!(s.insert_token(token_row("t3", 4), None).await.is_err());
        assert_eq!(s.list_tokens().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn rejects_a_token_row_of_the_wrong_shape() {
        let s = Store::open_in_memory().unwrap();
        s.insert_token(token_row("t1", 1), None).await.unwrap();
        s.conn
            .lock()
            .unwrap()
            .execute("UPDATE tokens SET key_ids = '{'", [])
            .unwrap();
        assert!(matches!(
            s.token_by_hash([1; 32]).await,
            Err(Error::StoreCorrupt(_))
        ));
    }

    #[tokio::test]
    async fn rejects_a_statement_row_of_the_wrong_shape() {
        let store = store_with_keyring().await;
        store.insert_key(new_key("k1", 1)).await.unwrap();
        store
            .with(|c| {
                c.execute("UPDATE key_statements SET signature = x'00'", [])?;
                Ok(())
            })
            .await
            .unwrap();
        assert!(matches!(
            store.statement("k1".into()).await,
            Err(Error::StoreCorrupt(_))
        ));
    }

    async fn store_with_keyring() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.insert_keyring(keyring(), 1).await.unwrap();
        s
    }

    #[tokio::test]
    async fn key_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ekms.db");
        {
            let s = Store::open(&path).unwrap();
            s.insert_keyring(keyring(), 1).await.unwrap();
            s.insert_key(new_key("k1", 10)).await.unwrap();
        }
        let s = Store::open(&path).unwrap();
        let row = s.key("k1".into()).await.unwrap().unwrap();
        let want = new_key("k1", 10);
        assert_eq!(row.record, want.record);
        assert_eq!(row.policy, want.policy);
        assert_eq!(row.summary.label.as_deref(), Some("bot"));
        assert_eq!(row.summary.policy_version, 1);
        assert_eq!(
            s.latest_keyring("default".into()).await.unwrap(),
            Some(keyring())
        );
        let mode: String = s
            .conn
            .lock()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .lock()
            .unwrap()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    #[tokio::test]
    async fn key_with_keyring_reads_both_in_one_call() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        let (row, ring) = s.key_with_keyring("k1".into()).await.unwrap().unwrap();
        assert_eq!(row.record, new_key("k1", 10).record);
        assert_eq!(ring, keyring());
        assert!(s.key_with_keyring("nope".into()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_key_whose_keyring_row_is_gone() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        {
            let c = s.conn.lock().unwrap();
            c.execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM keyrings;")
                .unwrap();
        }
        assert!(matches!(
            s.key_with_keyring("k1".into()).await,
            Err(Error::StoreCorrupt(_))
        ));
    }

    #[tokio::test]
    async fn rejects_duplicate_key_and_writes_nothing() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        let mut dup = new_key("k1", 11);
        dup.policy.policy_json = r#"{"enabled":false}"#.into();
        assert!(matches!(
            s.insert_key(dup).await,
            Err(Error::AlreadyExists(_))
        ));
        let row = s.key("k1".into()).await.unwrap().unwrap();
        assert_eq!(row.policy.policy_json, r#"{"enabled":true}"#);
    }

    #[tokio::test]
    async fn rejects_key_for_unknown_keyring_and_writes_nothing() {
        let s = Store::open_in_memory().unwrap();
        assert!(matches!(
            s.insert_key(new_key("k1", 10)).await,
            Err(Error::Store(_))
        ));
        assert!(s.key("k1".into()).await.unwrap().is_none());
        assert!(s.list_keys(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn rejects_mismatched_policy_key_id() {
        let s = store_with_keyring().await;
        let mut k = new_key("k1", 10);
        k.policy.key_id = "k2".into();
        assert!(matches!(s.insert_key(k).await, Err(Error::StoreCorrupt(_))));
        assert!(s.key("k1".into()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn lists_newest_first_with_limit() {
        let s = store_with_keyring().await;
        for (id, t) in [("a", 1), ("b", 3), ("c", 2)] {
            s.insert_key(new_key(id, t)).await.unwrap();
        }
        let ids: Vec<_> = s
            .list_keys(2)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.key_id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[tokio::test]
    async fn policy_compare_and_set_has_one_winner() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        let update = |json: &str| SealedPolicy {
            key_id: "k1".into(),
            version: 2,
            policy_json: json.into(),
            mac: [6; 32],
        };
        let (a, b) = tokio::join!(
            s.compare_and_set_policy(1, update(r#"{"a":1}"#)),
            s.compare_and_set_policy(1, update(r#"{"b":1}"#)),
        );
        assert_eq!(
            usize::from(a.is_ok()) + usize::from(b.is_ok()),
            1,
            "exactly one update wins"
        );
        let loser = if a.is_err() { a } else { b };
        assert!(matches!(loser, Err(Error::PolicyConflict { expected: 1 })));
        let row = s.key("k1".into()).await.unwrap().unwrap();
        assert_eq!(row.policy.version, 2);
        assert_eq!(row.policy.mac, [6; 32]);
    }

    #[tokio::test]
    async fn rejects_policy_version_that_does_not_increase() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        let mut p = new_key("k1", 10).policy;
        p.policy_json = r#"{"x":1}"#.into();
        assert!(matches!(
            s.compare_and_set_policy(1, p).await,
            Err(Error::StoreCorrupt(_))
        ));
        let row = s.key("k1".into()).await.unwrap().unwrap();
        assert_eq!(row.policy.policy_json, r#"{"enabled":true}"#);
    }

    #[tokio::test]
    async fn rejects_tampered_rows_as_corrupt() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        s.insert_key(new_key("k2", 11)).await.unwrap();
        s.insert_key(new_key("k3", 12)).await.unwrap();
        {
            let c = s.conn.lock().unwrap();
            c.execute(
                "UPDATE keys SET sealed_record = x'ff00' WHERE key_id = 'k1'",
                [],
            )
            .unwrap();
            c.execute("UPDATE keys SET public_key = x'03' WHERE key_id = 'k2'", [])
                .unwrap();
            c.execute("UPDATE policies SET mac = x'00' WHERE key_id = 'k3'", [])
                .unwrap();
        }
        for id in ["k1", "k2", "k3"] {
            assert!(
                matches!(s.key(id.into()).await, Err(Error::StoreCorrupt(_))),
                "{id}"
            );
        }
    }

    #[tokio::test]
    async fn rejects_rows_with_wrong_column_types_as_corrupt() {
        let s = store_with_keyring().await;
        let tamper = [
            "UPDATE keys SET public_key = 'text' WHERE key_id = 'k1'",
            "UPDATE policies SET mac = 'text' WHERE key_id = 'k2'",
            "UPDATE keys SET sealed_record = 'text' WHERE key_id = 'k3'",
            "UPDATE policies SET policy_json = x'00ff' WHERE key_id = 'k4'",
            "UPDATE keys SET epoch = 99999999999 WHERE key_id = 'k5'",
        ];
        for (i, _) in tamper.iter().enumerate() {
            s.insert_key(new_key(&format!("k{}", i + 1), 10))
                .await
                .unwrap();
        }
        // Positive twin: untouched rows read back.
        assert!(s.key("k1".into()).await.unwrap().is_some());
        {
            let c = s.conn.lock().unwrap();
            c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
            for sql in tamper {
                c.execute(sql, []).unwrap();
            }
        }
        for i in 1..=tamper.len() {
            let got = s.key(format!("k{i}")).await;
            assert!(matches!(got, Err(Error::StoreCorrupt(_))), "k{i}: {got:?}");
        }
        assert!(matches!(s.list_keys(10).await, Err(Error::StoreCorrupt(_))));
        {
            let c = s.conn.lock().unwrap();
            c.execute("UPDATE keyrings SET dek_ciphertext = 'text'", [])
                .unwrap();
        }
        assert!(matches!(
            s.keyring("default".into(), 1).await,
            Err(Error::StoreCorrupt(_))
        ));
    }

    #[tokio::test]
    async fn rejects_sealed_record_with_trailing_bytes() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        {
            let c = s.conn.lock().unwrap();
            c.execute("UPDATE keys SET sealed_record = sealed_record || x'00'", [])
                .unwrap();
        }
        assert!(matches!(
            s.key("k1".into()).await,
            Err(Error::StoreCorrupt(_))
        ));
    }

    #[tokio::test]
    async fn rejects_duplicate_keyring_epoch() {
        let s = store_with_keyring().await;
        let mut other = keyring();
        other.dek_ciphertext = vec![1; 8];
        assert!(matches!(
            s.insert_keyring(other, 2).await,
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(
            s.keyring("default".into(), 1).await.unwrap(),
            Some(keyring())
        );
        assert_eq!(s.keyring("default".into(), 2).await.unwrap(), None);
    }

    #[tokio::test]
    async fn cached_key_is_served_until_a_policy_write() {
        let s = store_with_keyring().await;
        s.insert_key(new_key("k1", 10)).await.unwrap();
        let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
        assert!(!hit);
        assert_eq!(k.keyring, keyring());
        let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
        assert!(hit);
        assert_eq!(k.row.policy.version, 1);
        let mut p = new_key("k1", 10).policy;
        p.version = 2;
        p.policy_json = r#"{"enabled":false}"#.into();
        s.compare_and_set_policy(1, p.clone()).await.unwrap();
        let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
        assert!(!hit, "a policy write drops the cached key");
        assert_eq!(k.row.policy, p);
        assert!(s.cached_key("k1").await.unwrap().unwrap().1);
        // Any other write through the store empties the cache too.
        s.insert_key(new_key("k2", 11)).await.unwrap();
        assert!(!s.cached_key("k1").await.unwrap().unwrap().1);
        s.forget_key("k1");
        assert!(!s.cached_key("k1").await.unwrap().unwrap().1);
        assert!(s.cached_key("nope").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_cached_rows_once_another_connection_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ekms.db");
        let s = Store::open(&path).unwrap();
        s.insert_keyring(keyring(), 1).await.unwrap();
        s.insert_key(new_key("k1", 10)).await.unwrap();
        s.cached_key("k1").await.unwrap();
        assert!(s.cached_key("k1").await.unwrap().unwrap().1);
        // The group-commit writer's own commits keep the cache.
        Journal::new(s.clone())
            .store_record(&crate::journal::tests::signed(1))
            .await
            .unwrap();
        assert!(s.cached_key("k1").await.unwrap().unwrap().1);
        let other = Connection::open(&path).unwrap();
        other
            .execute("UPDATE policies SET version = 9 WHERE key_id = 'k1'", [])
            .unwrap();
        let (k, hit) = s.cached_key("k1").await.unwrap().unwrap();
        assert!(!hit, "served a row another connection replaced");
        assert_eq!(k.row.policy.version, 9);
        assert!(s.cached_key("k1").await.unwrap().unwrap().1);
    }

    #[tokio::test]
    async fn key_cache_is_bounded_in_entries_and_bytes() {
        let s = store_with_keyring().await;
        for i in 0..4 {
            s.insert_key(new_key(&format!("k{i}"), i)).await.unwrap();
        }
        let read = |id: &str| {
            let s = s.clone();
            let id = id.to_owned();
            async move { s.key_with_keyring(id).await.unwrap().unwrap() }
        };
        let cache = KeyCache::new(None).unwrap().with_bounds(2, 1 << 20);
        for id in ["k0", "k1"] {
            let (row, keyring) = read(id).await;
            cache.insert(CachedKey { row, keyring });
        }
        assert!(
            cache.get("k0").is_some(),
            "k0 is now the most recently used"
        );
        let (row, keyring) = read("k2").await;
        cache.insert(CachedKey { row, keyring });
        assert_eq!(cache.len_and_bytes().0, 2);
        assert!(
            cache.get("k1").is_none(),
            "the least recently used went first"
        );
        assert!(cache.get("k0").is_some() && cache.get("k2").is_some());
        // A byte bound of one entry keeps one.
        let (row, keyring) = read("k3").await;
        let one = KeyCache::new(None).unwrap().with_bounds(100, 700);
        one.insert(CachedKey {
            row: row.clone(),
            keyring: keyring.clone(),
        });
        let (row0, keyring0) = read("k0").await;
        one.insert(CachedKey {
            row: row0,
            keyring: keyring0,
        });
        let (n, bytes) = one.len_and_bytes();
        assert_eq!(n, 1);
        assert!(bytes <= 700);
        // Too large for the bound: not kept at all.
        let none = KeyCache::new(None).unwrap().with_bounds(100, 10);
        none.insert(CachedKey { row, keyring });
        assert_eq!(none.len_and_bytes(), (0, 0));
    }

    #[test]
    fn rejects_unknown_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ekms.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        assert!(matches!(Store::open(&path), Err(Error::Config(_))));
    }
}
