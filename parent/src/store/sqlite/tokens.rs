//! API tokens in SQLite (schema version 3, [`crate::auth`]): only their SHA-256 hashes,
//! looked up by hash through a unique index, with the valid ones found by hash kept in
//! a small in-memory cache that a revocation empties under the connection's lock.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::SqliteStore;
use crate::store::{StoreError, TokenRow};

impl SqliteStore {
    /// Stores a new API token; returns once committed. With `max_tokens`, refuses when
    /// that many tokens are stored already (the bootstrap admin token passes `None`).
    ///
    /// # Errors
    /// [`StoreError::TooManyTokens`]; [`StoreError::AlreadyExists`] for a duplicate id or hash;
    /// [`StoreError::Sqlite`]. Nothing is written on error.
    pub async fn insert_token(
        &self,
        token: TokenRow,
        max_tokens: Option<usize>,
    ) -> Result<(), StoreError> {
        let key_ids = token
            .key_ids
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Internal(format!("encoding key ids: {e}")))?;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(max) = max_tokens {
                let n: i64 = tx.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))?;
                if usize::try_from(n).map_or(true, |n| n >= max) {
                    return Err(StoreError::TooManyTokens(max));
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
                return Err(StoreError::AlreadyExists(format!(
                    "token {}",
                    token.token_id
                )));
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
    /// [`StoreError::Corrupt`] for a malformed row; [`StoreError::Sqlite`].
    pub async fn token_by_hash(&self, hash: [u8; 32]) -> Result<Option<Arc<TokenRow>>, StoreError> {
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
    /// [`StoreError::Corrupt`] for a malformed row; [`StoreError::Sqlite`].
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
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
    /// [`StoreError::Sqlite`].
    pub async fn delete_token(&self, token_id: String) -> Result<bool, StoreError> {
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
    fn check(self) -> Result<TokenRow, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("token {}: {what}", self.token_id));
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
