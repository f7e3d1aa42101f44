//! Keys: creation (the enclave generates and seals; the parent checks the answer's
//! shape and the enclave's statement, stores the audit record, then the key), listing,
//! reading one, and finding a key by address among those a token may use (JSON-RPC's
//! `eth_accounts` and account selection).
//!
//! Every listed or shown address is one the enclave stated ([`Service::checked_statement`]).

use ekms_shared::audit::Receipt;
use ekms_shared::{Algorithm, Request as EnclaveRequest, ResponseBody};
use serde_json::Value;

use super::journal::Journal;
use super::{Invalid, Service, ServiceError};
use crate::auth::{Caller, Scope};
use crate::error::Error;
use crate::format;
use crate::store::{KeySummary, NewKey, StoredStatement};

/// Longest key label, in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// Most keys [`Service::signable_keys`] looks at (the store's listing bound).
pub const MAX_SIGNABLE_KEYS: u32 = 1000;

/// A key to create.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// Caller's label (at most [`MAX_LABEL_LEN`] bytes).
    pub label: Option<String>,
    /// The first policy, a JSON object's text (the enclave parses and seals it).
    pub policy_json: String,
    /// The owner, in its record text form ([`ekms_shared::owner::Owner::record_text`]).
    pub owner: Option<String>,
}

/// A created key.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// Its listed columns.
    pub summary: KeySummary,
    /// The owner's record text, if any.
    pub owner: Option<String>,
    /// The enclave's statement of the key, checked.
    pub statement: StoredStatement,
    /// The receipt of the creation's audit record.
    pub receipt: Option<Receipt>,
}

/// A key as listed or shown.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// Its listed columns.
    pub summary: KeySummary,
    /// The owner's record text, if any (only from [`Service::key`]).
    pub owner: Option<String>,
    /// The enclave's statement of the key, checked.
    pub statement: StoredStatement,
    /// The stored policy document (unauthenticated here: the enclave checks its MAC
    /// on use).
    pub policy: Value,
}

impl Service {
    /// Creates a key in the current keyring; reported only once its row is committed.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `keys:create`; [`Invalid::Label`]; the
    /// enclave's refusal (e.g. an invalid policy) and the relay's and store's errors.
    pub async fn create_key(
        &self,
        caller: &Caller,
        new: CreateKey,
    ) -> Result<CreatedKey, ServiceError> {
        caller.require(Scope::KeysCreate, None)?;
        if new.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL_LEN) {
            return Err(ServiceError::invalid(
                Invalid::Label,
                format!("the label exceeds {MAX_LABEL_LEN} bytes"),
            ));
        }
        let CreateKey {
            algorithm,
            label,
            policy_json,
            owner,
        } = new;
        let keyring = self.keyring.current(&self.relay).await?;
        let answer = self
            .relay
            .call(EnclaveRequest::GenerateKey {
                algorithm,
                owner: owner.clone(),
                label: label.clone(),
                policy_json,
                keyring: keyring.clone(),
            })
            .await?;
        // The creation's audit record is stored before anything else; its receipt goes
        // back with the key (the record names the initial policy's SHA-256).
        let (answer, receipt) = Journal::new(self.store.clone()).record(answer).await?;
        let unexpected = || Error::UnexpectedResponse("GenerateKey");
        let ResponseBody::KeyGenerated {
            record,
            policy,
            statement,
            identity_document,
            ..
        } = answer
        else {
            return Err(unexpected().into());
        };
        // The enclave chose the key id (a UUID v4): the API's paths take only that form.
        let key_id = record.key_id.clone();
        if !is_key_id(&key_id)
            || record.algorithm != algorithm
            || record.keyring != keyring.keyring
            || record.epoch != keyring.epoch
            || record.owner != owner
            || policy.key_id != key_id
        {
            return Err(unexpected().into());
        }
        let address = format::address(algorithm, &record.public_key).ok_or_else(unexpected)?;
        let summary = KeySummary {
            key_id,
            algorithm,
            label: label.clone(),
            public_key: record.public_key.clone(),
            address: address.clone(),
            created_at_ms: crate::now_ms(),
            policy_version: policy.version,
        };
        let statement = StoredStatement {
            signed: *statement,
            identity_document,
        };
        // An enclave answer whose statement does not name this key is not stored.
        self.identity
            .check(&summary, &statement, self.enclave_pcr0().as_deref())
            .map_err(|_| unexpected())?;
        // Reported created only once the row is committed.
        self.store
            .insert_key(NewKey {
                label,
                address,
                created_at_ms: summary.created_at_ms,
                record,
                policy,
                statement: statement.clone(),
            })
            .await?;
        tracing::info!(key_id = %summary.key_id, "key created");
        Ok(CreatedKey {
            summary,
            owner,
            statement,
            receipt,
        })
    }

    /// Up to `limit` keys, newest first, each with its checked statement and policy.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `keys:read`; `sealed_state_invalid` (as
    /// [`Error::StoreCorrupt`]) for a key whose columns differ from its statement; the
    /// store's and relay's errors.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        limit: u32,
    ) -> Result<Vec<KeyView>, ServiceError> {
        caller.require(Scope::KeysRead, None)?;
        let summaries = self.store.list_keys(limit).await?;
        let mut keys = Vec::with_capacity(summaries.len());
        for (summary, policy_json) in summaries {
            let statement = self.checked_statement(&summary).await?;
            keys.push(KeyView {
                policy: policy_value(&policy_json)?,
                summary,
                owner: None,
                statement,
            });
        }
        Ok(keys)
    }

    /// Key `key_id` with its owner, checked statement and policy.
    ///
    /// # Errors
    /// As [`Service::list_keys`]; [`ServiceError::KeyNotFound`].
    pub async fn key(&self, caller: &Caller, key_id: &str) -> Result<KeyView, ServiceError> {
        caller.require(Scope::KeysRead, None)?;
        let row = self
            .store
            .key(key_id.to_owned())
            .await?
            .ok_or(ServiceError::KeyNotFound)?;
        let statement = self.checked_statement(&row.summary).await?;
        Ok(KeyView {
            policy: policy_value(&row.policy.policy_json)?,
            summary: row.summary,
            owner: row.record.owner,
            statement,
        })
    }

    /// The keys the caller may sign with (its token's listed keys, or every key for a
    /// token without a list), newest first: what JSON-RPC's `eth_accounts` lists (its
    /// EVM keys). A token without a list sees the newest [`MAX_SIGNABLE_KEYS`] keys;
    /// a token's listed keys are read by id, however many keys were created since
    /// (another app's new keys cannot push them out of reach). Addresses are the
    /// enclave's statements' ([`Service::checked_statement`]).
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `sign`; as [`Service::list_keys`].
    pub async fn signable_keys(&self, caller: &Caller) -> Result<Vec<KeySummary>, ServiceError> {
        let mut out = Vec::new();
        for summary in self.usable_keys(caller).await? {
            self.check_identity(&summary).await?;
            out.push(summary);
        }
        Ok(out)
    }

    /// The caller's usable keys' columns, newest first, unchecked ([`Service::signable_keys`]).
    async fn usable_keys(&self, caller: &Caller) -> Result<Vec<KeySummary>, ServiceError> {
        caller.require(Scope::Sign, None)?;
        let Some(ids) = caller.key_list() else {
            return Ok(self
                .store
                .list_keys(MAX_SIGNABLE_KEYS)
                .await?
                .into_iter()
                .map(|(summary, _)| summary)
                .collect());
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.store.key(id.clone()).await? {
                out.push(row.summary);
            }
        }
        // Newest first, as the listing (a stable sort keeps the token's order on ties).
        out.sort_by_key(|k| std::cmp::Reverse(k.created_at_ms));
        Ok(out)
    }

    /// The id of the secp256k1 key whose address is `address`, if the caller may sign
    /// with it: what JSON-RPC's `eth_sign*` methods name their key by.
    ///
    /// The first lookup of an address is [`Service::key_by_address`] (a store read and
    /// a statement check); its answer is kept ([`Checked`]), so later calls
    /// read no database. That is sound without invalidation: the pairing was checked
    /// against a statement the enclave signed about the sealed record, whose key id and
    /// public key never change, and the caller's scopes and key list are checked on
    /// every call. A key whose rows were since removed fails at the signature
    /// (`KeyNotFound`), as before.
    ///
    /// # Errors
    /// [`ServiceError::KeyNotFound`] when no such secp256k1 key is usable by the caller
    /// (the same answer whether it does not exist or is not the caller's); as
    /// [`Service::key_by_address`].
    pub async fn evm_key_for_address(
        &self,
        caller: &Caller,
        address: [u8; 20],
    ) -> Result<String, ServiceError> {
        caller.require(Scope::Sign, None)?;
        // A kept pair the caller may not use is not answered from memory: the lookup
        // runs as for an unknown address, so the answer's time does not tell a token
        // whether another caller's key has this address (an attack review's finding).
        if let Some(key_id) = self.evm_addresses.get_with(&address, String::clone) {
            if caller.require(Scope::Sign, Some(&key_id)).is_ok() {
                return Ok(key_id);
            }
        }
        let text = ekms_signer::address::eip55(&address);
        let key = self.key_by_address(caller, &text).await?;
        if key.algorithm != Algorithm::Secp256k1 {
            return Err(ServiceError::KeyNotFound);
        }
        self.evm_addresses.insert(address, key.key_id.clone());
        Ok(key.key_id)
    }

    /// The key with `address` (EVM: compared case-insensitively; Solana: exactly) among
    /// those the caller may sign with ([`Service::signable_keys`]). Only the match's
    /// statement is checked (a rewritten address column is `sealed_state_invalid`, not
    /// another key), so a lookup costs one listing and one statement check.
    ///
    /// # Errors
    /// [`ServiceError::KeyNotFound`] when no such key is usable by the caller; as
    /// [`Service::signable_keys`].
    pub async fn key_by_address(
        &self,
        caller: &Caller,
        address: &str,
    ) -> Result<KeySummary, ServiceError> {
        caller.require(Scope::Sign, None)?;
        // A token without a key list may use every key: look the address up (indexed)
        // rather than scan a bounded listing, which would miss older keys.
        let candidates = match caller.key_list() {
            Some(_) => self.usable_keys(caller).await?,
            None => self.store.keys_by_address(address.to_owned()).await?,
        };
        let found = candidates
            .into_iter()
            .find(|k| {
                let same = match k.algorithm {
                    Algorithm::Secp256k1 => k.address.eq_ignore_ascii_case(address),
                    Algorithm::Ed25519 => k.address == address,
                };
                same && caller.require(Scope::Sign, Some(&k.key_id)).is_ok()
            })
            .ok_or(ServiceError::KeyNotFound)?;
        self.check_identity(&found).await?;
        Ok(found)
    }

    /// Checks `summary`'s identity columns (algorithm, public key, address) as
    /// [`Service::checked_statement`] does, from memory when the same columns of this
    /// key id checked before ([`Checked`]): a key's identity never changes, so
    /// `eth_accounts` and address lookups check each key's statement once, not on every
    /// call. Columns that differ from the kept ones are checked against the statement
    /// again (a rewritten column is `sealed_state_invalid`, as before).
    ///
    /// # Errors
    /// As [`Service::checked_statement`].
    async fn check_identity(&self, summary: &KeySummary) -> Result<(), ServiceError> {
        let kept = self.checked_identities.get_with(
            &summary.key_id,
            |(algorithm, public_key, address)| {
                *algorithm == summary.algorithm
                    && *public_key == summary.public_key
                    && *address == summary.address
            },
        );
        if kept == Some(true) {
            return Ok(());
        }
        self.checked_statement(summary).await?;
        self.checked_identities.insert(
            summary.key_id.clone(),
            (
                summary.algorithm,
                summary.public_key.clone(),
                summary.address.clone(),
            ),
        );
        Ok(())
    }

    /// The key's statement, checked against its columns ([`crate::identity`]). A key
    /// stored before statements existed (or whose statement row is gone, or whose
    /// statement no longer checks, e.g. one from an enclave image since replaced) gets
    /// one from the enclave, which states what its sealed record holds; it is checked
    /// the same way and stored.
    ///
    /// # Errors
    /// `sealed_state_invalid` when the columns differ from the statement or the
    /// statement does not verify; the store's and the relay's errors.
    pub async fn checked_statement(
        &self,
        summary: &KeySummary,
    ) -> Result<StoredStatement, ServiceError> {
        let pcr0 = self.enclave_pcr0();
        if let Some(stored) = self.store.statement(summary.key_id.clone()).await? {
            if self
                .identity
                .check(summary, &stored, pcr0.as_deref())
                .is_ok()
            {
                return Ok(stored);
            }
        }
        let (row, keyring) = self
            .store
            .key_with_keyring(summary.key_id.clone())
            .await?
            .ok_or(ServiceError::KeyNotFound)?;
        let request = EnclaveRequest::CertifyKey {
            record: row.record,
            keyring,
        };
        let stored = self
            .relay
            .call_for("CertifyKey", request, |a| match a {
                ResponseBody::KeyCertified {
                    statement,
                    identity_document,
                } => Some(StoredStatement {
                    signed: *statement,
                    identity_document,
                }),
                _ => None,
            })
            .await?;
        self.identity.check(summary, &stored, pcr0.as_deref())?;
        self.store
            .put_statement(summary.key_id.clone(), stored.clone())
            .await?;
        tracing::info!(key_id = %summary.key_id, "key statement issued for a stored key");
        Ok(stored)
    }
}

/// Whether `id` is a key id as the API's paths take it (a canonical UUID).
pub fn is_key_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

/// A stored policy's JSON document.
fn policy_value(policy_json: &str) -> Result<Value, Error> {
    serde_json::from_str(policy_json)
        .map_err(|_| Error::StoreCorrupt("stored policy is not JSON".into()))
}

/// Most entries a [`Checked`] map keeps (beyond it an arbitrary one goes): 10,000
/// key identities or addresses, a few hundred bytes each.
pub const MAX_CHECKED: usize = 10_000;

/// A bounded map of facts that checked against a key's enclave-signed statement and
/// never change (a key's id, algorithm, public key and address): EVM address → key id
/// ([`Service::evm_key_for_address`]) and key id → identity columns
/// ([`Service::check_identity`]). Bounded by [`MAX_CHECKED`].
#[derive(Debug)]
pub struct Checked<K, V> {
    map: std::sync::Mutex<std::collections::HashMap<K, V>>,
}

impl<K, V> Default for Checked<K, V> {
    fn default() -> Self {
        Self {
            map: std::sync::Mutex::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Checked<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<K, V>> {
        // Every critical section is one map call: a poisoned map is still whole.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `f` of the value kept for `key`, if any.
    pub fn get_with<R>(&self, key: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.lock().get(key).map(f)
    }

    /// Keeps `key` → `value` (checked by the caller).
    pub fn insert(&self, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= MAX_CHECKED && !map.contains_key(&key) {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(key, value);
    }

    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A key's identity columns as they checked: algorithm, public key, address.
pub type Identity = (Algorithm, Vec<u8>, String);
