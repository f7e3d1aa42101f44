//! [`KeyStore`] for [`SqliteStore`]: each method is the inherent one of the same name
//! (see there for the SQL and the errors), boxed.

use std::sync::Arc;

use ekms_shared::audit::SignedAuditRecord;
use ekms_shared::{KeyringRef, SealedCheckpoint, SealedPolicy};

use super::SqliteStore;
use crate::store::{
    AuditDocument, AuditRow, CacheHit, KeyRow, KeyStore, KeySummary, NewKey, StoreError,
    StoreFuture, StoredStatement, TokenRow,
};

impl KeyStore for SqliteStore {
    fn latest_keyring(&self, name: String) -> StoreFuture<'_, Option<KeyringRef>> {
        Box::pin(SqliteStore::latest_keyring(self, name))
    }

    fn insert_keyring(&self, keyring: KeyringRef, created_at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(SqliteStore::insert_keyring(self, keyring, created_at_ms))
    }

    fn insert_key(&self, key: NewKey) -> StoreFuture<'_, ()> {
        Box::pin(SqliteStore::insert_key(self, key))
    }

    fn key(&self, key_id: String) -> StoreFuture<'_, Option<KeyRow>> {
        Box::pin(SqliteStore::key(self, key_id))
    }

    fn key_with_keyring(&self, key_id: String) -> StoreFuture<'_, Option<(KeyRow, KeyringRef)>> {
        Box::pin(SqliteStore::key_with_keyring(self, key_id))
    }

    fn cached_key<'a>(&'a self, key_id: &'a str) -> StoreFuture<'a, Option<CacheHit>> {
        Box::pin(SqliteStore::cached_key(self, key_id))
    }

    fn forget_key(&self, key_id: &str) {
        SqliteStore::forget_key(self, key_id);
    }

    fn list_keys(&self, limit: u32) -> StoreFuture<'_, Vec<(KeySummary, String)>> {
        Box::pin(SqliteStore::list_keys(self, limit))
    }

    fn keys_by_address(&self, address: String) -> StoreFuture<'_, Vec<KeySummary>> {
        Box::pin(SqliteStore::keys_by_address(self, address))
    }

    fn statement(&self, key_id: String) -> StoreFuture<'_, Option<StoredStatement>> {
        Box::pin(SqliteStore::statement(self, key_id))
    }

    fn put_statement(&self, key_id: String, statement: StoredStatement) -> StoreFuture<'_, ()> {
        Box::pin(SqliteStore::put_statement(self, key_id, statement))
    }

    fn compare_and_set_policy(
        &self,
        expected_version: u64,
        policy: SealedPolicy,
    ) -> StoreFuture<'_, ()> {
        Box::pin(SqliteStore::compare_and_set_policy(
            self,
            expected_version,
            policy,
        ))
    }

    fn insert_token(&self, token: TokenRow, max_tokens: Option<usize>) -> StoreFuture<'_, ()> {
        Box::pin(SqliteStore::insert_token(self, token, max_tokens))
    }

    fn token_by_hash(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<Arc<TokenRow>>> {
        Box::pin(SqliteStore::token_by_hash(self, hash))
    }

    fn list_tokens(&self) -> StoreFuture<'_, Vec<TokenRow>> {
        Box::pin(SqliteStore::list_tokens(self))
    }

    fn delete_token(&self, token_id: String) -> StoreFuture<'_, bool> {
        Box::pin(SqliteStore::delete_token(self, token_id))
    }

    fn append_audit(&self, seq: u64, signed: SignedAuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let seq = i64::try_from(seq)
                .map_err(|_| StoreError::Corrupt("audit record seq out of range".into()))?;
            SqliteStore::append_audit(self, seq, signed).await
        })
    }

    fn put_audit_document(&self, audit_key: [u8; 32], document: Vec<u8>) -> StoreFuture<'_, ()> {
        Box::pin(SqliteStore::put_audit_document(self, audit_key, document))
    }

    fn store_checkpoint(
        &self,
        checkpoint: SealedCheckpoint,
        policy: Option<(u64, SealedPolicy)>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(SqliteStore::store_checkpoint(self, checkpoint, policy))
    }

    fn latest_checkpoint(&self) -> StoreFuture<'_, Option<SealedCheckpoint>> {
        Box::pin(SqliteStore::latest_checkpoint(self))
    }

    fn latest_audit_record(&self) -> StoreFuture<'_, Option<AuditRow>> {
        Box::pin(SqliteStore::latest_audit_record(self))
    }

    fn audit_records_after(&self, after: u64, limit: u32) -> StoreFuture<'_, Vec<AuditRow>> {
        Box::pin(SqliteStore::audit_records_after(self, after, limit))
    }

    fn audit_documents(&self, keys: Vec<[u8; 32]>) -> StoreFuture<'_, Vec<AuditDocument>> {
        Box::pin(SqliteStore::audit_documents(self, keys))
    }
}
