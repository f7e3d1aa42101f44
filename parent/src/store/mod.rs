//! The key store: what the parent keeps for the enclave (keyring data-key ciphertexts,
//! sealed key records, MAC'd policies, key statements, the enclave's checkpoints and
//! audit chain) and for itself (API tokens), behind one trait, [`KeyStore`].
//!
//! Nothing here is trusted by the enclave: every blob it reads back is authenticated
//! there (AES-GCM AAD, policy HMAC, checkpoint MAC, signed audit records). A store's job
//! is durability and atomicity, and every backend promises the same (the trait's docs;
//! [`conformance`] checks them):
//! - a write reports success only once committed durably;
//! - a key is inserted with its policy and statement in one transaction;
//! - a policy update is a compare-and-set on the version: of two updates from the same
//!   version one wins, the other is [`StoreError::PolicyConflict`] and changes nothing;
//! - a checkpoint and the policy it carries are stored together or not at all;
//! - audit records are never overwritten ([`StoreError::AlreadyExists`]);
//! - the sign path's key reads ([`KeyStore::cached_key`]) may come from memory, but a
//!   policy written through the store is the one the next read returns.
//!
//! Backends: [`sqlite`] (the embedded default, with its key-row [`cache`] and audit
//! [`group_commit`] writer). Rule for maintainers: a new backend implements
//! [`KeyStore`] and runs [`conformance::run_all`] in its tests; nothing else may know
//! which backend is in use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ekms_shared::audit::SignedAuditRecord;
use ekms_shared::statement::SignedKeyStatement;
use ekms_shared::{Algorithm, KeyringRef, SealedCheckpoint, SealedKeyRecord, SealedPolicy};

pub mod cache;
#[cfg(test)]
pub(crate) mod conformance;
pub(crate) mod group_commit;
pub mod sqlite;

pub use cache::{CachedKey, KeyCache};
pub use sqlite::SqliteStore;

/// A boxed, sendable future: the trait's methods return one so that the store is used
/// as `Arc<dyn KeyStore>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the store's methods return: a boxed future of a result.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// A key row from [`KeyStore::cached_key`] and whether it came from the cache.
pub type CacheHit = (Arc<CachedKey>, bool);

/// An audit key and the attestation document that binds it.
pub type AuditDocument = ([u8; 32], Vec<u8>);

/// A store shared by the service layer and the API's authentication.
pub type SharedStore = Arc<dyn KeyStore>;

/// Error of a key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed (open, query, commit).
    #[error("key store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not decode or contradicts itself (the database was changed
    /// outside the parent): what it holds cannot be used.
    #[error("key store row is invalid: {0}")]
    Corrupt(String),
    /// A policy update lost the compare-and-set: the stored version is no longer the
    /// one the update started from (or the key is gone). Nothing was written.
    #[error("the policy was changed concurrently (expected version {expected})")]
    PolicyConflict {
        /// The version the update started from.
        expected: u64,
    },
    /// A row to insert already exists (keyring epoch, key id, token, audit record).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// As many API tokens as allowed are stored already.
    #[error("at most {0} API tokens may exist; revoke one first")]
    TooManyTokens(usize),
    /// The database has a schema this build does not know.
    #[error("key store schema: {0}")]
    Schema(String),
    /// The store's own machinery failed (a worker thread stopped, a task panicked).
    #[error("key store internal error: {0}")]
    Internal(String),
}

/// One stored audit record and its `seq` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The `seq` column (the record's own, as parsed when stored).
    pub seq: u64,
    /// The signed record.
    pub signed: SignedAuditRecord,
}

/// Most rows [`KeyStore::keys_by_address`] returns (one, unless rows were tampered
/// with: the statement check then refuses the extra ones).
pub const MAX_KEYS_BY_ADDRESS: u32 = 16;

/// What the parent stores. Every method answers once its effect is durable (writes) or
/// from committed state (reads); errors are [`StoreError`]s, and a failed write
/// changes nothing.
pub trait KeyStore: Send + Sync + std::fmt::Debug + 'static {
    /// The keyring `name` at its highest epoch, if any.
    fn latest_keyring(&self, name: String) -> StoreFuture<'_, Option<KeyringRef>>;

    /// Stores a new keyring epoch; [`StoreError::AlreadyExists`] if `(name, epoch)` is
    /// stored.
    fn insert_keyring(&self, keyring: KeyringRef, created_at_ms: i64) -> StoreFuture<'_, ()>;

    /// Inserts a key, its first policy and its statement in one transaction
    /// ([`StoreError::AlreadyExists`] for a duplicate id; [`StoreError::Corrupt`] if
    /// the policy names another key).
    fn insert_key(&self, key: NewKey) -> StoreFuture<'_, ()>;

    /// The key `key_id` with its sealed record and policy, if stored.
    fn key(&self, key_id: String) -> StoreFuture<'_, Option<KeyRow>>;

    /// The key `key_id` and the keyring epoch that seals it.
    fn key_with_keyring(&self, key_id: String) -> StoreFuture<'_, Option<(KeyRow, KeyringRef)>>;

    /// As [`KeyStore::key_with_keyring`], from memory when the backend caches it (the
    /// sign path); the flag tells whether it came from the cache (see
    /// [`KeyStore::forget_key`]). A policy written through the store is never shadowed
    /// by a cached row.
    fn cached_key<'a>(&'a self, key_id: &'a str) -> StoreFuture<'a, Option<CacheHit>>;

    /// Drops `key_id` from any cache (the enclave refused its cached row).
    fn forget_key(&self, key_id: &str);

    /// Up to `limit` keys, newest first, each with its stored policy document.
    fn list_keys(&self, limit: u32) -> StoreFuture<'_, Vec<(KeySummary, String)>>;

    /// The keys whose address column is `address`, compared ASCII case-insensitively
    /// (an EIP-55 address in any case; base58 never has two keys that differ only in
    /// case), newest first, at most [`MAX_KEYS_BY_ADDRESS`]. Columns only: the caller
    /// checks the statement before trusting the address.
    fn keys_by_address(&self, address: String) -> StoreFuture<'_, Vec<KeySummary>>;

    /// The stored statement of `key_id` with its identity key's document, if any.
    fn statement(&self, key_id: String) -> StoreFuture<'_, Option<StoredStatement>>;

    /// Stores (or replaces) the statement of an existing key.
    fn put_statement(&self, key_id: String, statement: StoredStatement) -> StoreFuture<'_, ()>;

    /// Replaces the policy of `policy.key_id` if its stored version is still
    /// `expected_version` ([`StoreError::PolicyConflict`] otherwise;
    /// [`StoreError::Corrupt`] if `policy.version` is not above it).
    fn compare_and_set_policy(
        &self,
        expected_version: u64,
        policy: SealedPolicy,
    ) -> StoreFuture<'_, ()>;

    /// Stores an API token; with `max_tokens`, [`StoreError::TooManyTokens`] when that
    /// many are stored.
    fn insert_token(&self, token: TokenRow, max_tokens: Option<usize>) -> StoreFuture<'_, ()>;

    /// The token whose SHA-256 is `hash`, if stored (expiry is the caller's check).
    fn token_by_hash(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<Arc<TokenRow>>>;

    /// Every stored token, oldest first.
    fn list_tokens(&self) -> StoreFuture<'_, Vec<TokenRow>>;

    /// Deletes token `token_id` (refused from the next lookup on); whether it existed.
    fn delete_token(&self, token_id: String) -> StoreFuture<'_, bool>;

    /// Stores audit record `signed` under `seq` ([`StoreError::AlreadyExists`] if one
    /// is stored: never overwritten).
    fn append_audit(&self, seq: u64, signed: SignedAuditRecord) -> StoreFuture<'_, ()>;

    /// Stores the attestation document binding `audit_key` (the first one is kept).
    fn put_audit_document(&self, audit_key: [u8; 32], document: Vec<u8>) -> StoreFuture<'_, ()>;

    /// Stores `checkpoint` (replacing one with the same `seq`) and, when given, the
    /// key's policy compare-and-set against the version: both or neither.
    fn store_checkpoint(
        &self,
        checkpoint: SealedCheckpoint,
        policy: Option<(u64, SealedPolicy)>,
    ) -> StoreFuture<'_, ()>;

    /// The newest checkpoint, if any.
    fn latest_checkpoint(&self) -> StoreFuture<'_, Option<SealedCheckpoint>>;

    /// The newest audit record, if any.
    fn latest_audit_record(&self) -> StoreFuture<'_, Option<AuditRow>>;

    /// Up to `limit` audit records with `seq > after`, ascending.
    fn audit_records_after(&self, after: u64, limit: u32) -> StoreFuture<'_, Vec<AuditRow>>;

    /// The documents binding `keys` (those stored), as `(key, document)`.
    fn audit_documents(&self, keys: Vec<[u8; 32]>) -> StoreFuture<'_, Vec<AuditDocument>>;
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

/// The `keys.algorithm` column value (also the API's spelling).
pub fn algorithm_text(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Secp256k1 => "secp256k1",
        Algorithm::Ed25519 => "ed25519",
    }
}
