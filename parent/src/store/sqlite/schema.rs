//! The SQLite schema and its migrations. Rule for maintainers: a schema change bumps
//! [`SCHEMA_VERSION`] and adds a step to [`migrate`].

use rusqlite::{params, Connection, TransactionBehavior};

use super::journal;
use crate::store::StoreError;

/// Version of the schema below, kept in the `schema_version` table.
pub const SCHEMA_VERSION: i64 = 5;

pub(super) const SCHEMA_V1: &str = "
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
pub(super) const SCHEMA_V2: &str = "
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
pub(super) const SCHEMA_V3: &str = "
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

/// Version 5: the address index of [`crate::store::KeyStore::keys_by_address`] (the
/// JSON-RPC endpoint finds keys by address), case-folded as the lookup compares.
pub(super) const SCHEMA_V5: &str = "
CREATE INDEX keys_by_lower_address ON keys (lower(address));
";

/// Creates the schema in an empty database, or checks the stored version.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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
        tx.execute_batch(journal::SCHEMA_JOURNAL)?;
        tx.execute_batch(SCHEMA_V5)?;
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
        return Err(StoreError::Schema(format!(
            "database schema version {version}, this build knows {SCHEMA_VERSION}"
        )));
    }
    // One step per version, in order, in one transaction.
    let steps: [(i64, &str); 4] = [
        (2, SCHEMA_V2),
        (3, SCHEMA_V3),
        // Version 4: the enclave's checkpoints and audit chain (crate::service::journal).
        (4, journal::SCHEMA_JOURNAL),
        (5, SCHEMA_V5),
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
