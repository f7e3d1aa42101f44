//! What changes what a key may do (issue 7): owner-authorized policy changes and their
//! proposals, the emergency stop of one key and its re-enable, the store-wide stop and
//! resume; and the audit chain's pages.
//!
//! A token only lets a change reach the enclave: for a key with an owner, the enclave
//! applies it only with the owner's signature. A proposal is a convenience: it shows the
//! exact message ([`ekms_shared::owner`]) an owner signs for the change; the enclave
//! rebuilds and checks everything itself, and judges `expires_at` by its own clock.
//! Every change goes through the enclave's two phases ([`Journal::settle`]): its answer
//! is released only once the checkpoint is stored and committed, and the key's new
//! policy is written compare-and-set against the version the change started from.

use ekms_shared::owner::{policy_sha256, Authorization, OwnerAction};
use ekms_shared::{
    KeyringRef, OwnerApproval, Request as EnclaveRequest, SealedKeyRecord, SealedPolicy,
};
use ekms_signer::Policy;

use super::journal::{Journal, MAX_AUDIT_PAGE};
use super::{Invalid, Service, ServiceError};
use crate::auth::{Caller, Scope};
use crate::error::Error;
use crate::store::AuditRow;

/// A proposed change: what its owner signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The change.
    pub action: OwnerAction,
    /// The policy version the change makes.
    pub version: u64,
    /// SHA-256 of `canonical_policy`.
    pub policy_sha256: [u8; 32],
    /// The policy after the change, canonical JSON.
    pub canonical_policy: String,
    /// Expiry of the authorization, Unix seconds.
    pub expires_at: u64,
    /// The exact message the owner signs ([`Authorization::message`]).
    pub message: String,
}

/// One page of the audit chain.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// Records, ascending by `seq`.
    pub records: Vec<AuditRow>,
    /// The attestation documents binding the records' audit keys (those stored).
    pub documents: Vec<([u8; 32], Vec<u8>)>,
}

impl Service {
    /// The proposal of a new policy for key `key_id` (`policy_json` must parse).
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `policy:write`; [`Invalid::Policy`];
    /// [`ServiceError::KeyNotFound`]; the store's errors.
    pub async fn propose_policy(
        &self,
        caller: &Caller,
        key_id: &str,
        policy_json: &str,
        expires_at: u64,
    ) -> Result<Proposal, ServiceError> {
        caller.require(Scope::PolicyWrite, None)?;
        let canonical = Policy::parse_new(policy_json)
            .map_err(|e| ServiceError::invalid(Invalid::Policy, e.to_string()))?
            .canonical_json();
        self.propose(key_id, OwnerAction::SetPolicy, expires_at, |_| {
            Ok(canonical)
        })
        .await
    }

    /// The proposal of re-enabling disabled key `key_id`.
    ///
    /// # Errors
    /// As [`Service::propose_policy`]; [`Invalid::KeyNotDisabled`].
    pub async fn propose_enable(
        &self,
        caller: &Caller,
        key_id: &str,
        expires_at: u64,
    ) -> Result<Proposal, ServiceError> {
        caller.require(Scope::PolicyWrite, None)?;
        self.propose(key_id, OwnerAction::Enable, expires_at, |current| {
            let policy = Policy::parse(current)
                .map_err(|_| Error::StoreCorrupt("stored policy does not parse".into()))?;
            if policy.enabled() {
                return Err(ServiceError::invalid(
                    Invalid::KeyNotDisabled,
                    "the key is not disabled",
                ));
            }
            Ok(policy.with_enabled(true).canonical_json())
        })
        .await
    }

    /// The proposal of `action` on key `id`: the policy after the change is
    /// `after(current policy JSON)`, its version the current one plus one.
    async fn propose(
        &self,
        id: &str,
        action: OwnerAction,
        expires_at: u64,
        after: impl FnOnce(&str) -> Result<String, ServiceError>,
    ) -> Result<Proposal, ServiceError> {
        let row = self
            .store
            .key(id.to_owned())
            .await?
            .ok_or(ServiceError::KeyNotFound)?;
        let canonical_policy = after(&row.policy.policy_json)?;
        let version = row.policy.version.saturating_add(1);
        let digest = policy_sha256(&canonical_policy);
        let message = Authorization {
            action,
            key_id: id.to_owned(),
            version,
            policy_sha256: digest,
            expires_at,
        }
        .message();
        Ok(Proposal {
            action,
            version,
            policy_sha256: digest,
            canonical_policy,
            expires_at,
            message,
        })
    }

    /// Replaces key `key_id`'s policy with `policy_json` (with the owner's `approval`
    /// for an owned key); the new version.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `policy:write`; [`ServiceError::KeyNotFound`];
    /// the enclave's refusals (invalid policy, owner authorization invalid),
    /// `policy_conflict` ([`Error::PolicyConflict`]) when another change won; the
    /// relay's and store's errors.
    pub async fn set_policy(
        &self,
        caller: &Caller,
        key_id: &str,
        policy_json: String,
        approval: Option<OwnerApproval>,
    ) -> Result<u64, ServiceError> {
        caller.require(Scope::PolicyWrite, None)?;
        let version = self
            .change(key_id, |record, keyring, current| {
                EnclaveRequest::SetPolicy {
                    record,
                    keyring,
                    current,
                    policy_json,
                    approval,
                }
            })
            .await?;
        tracing::info!(key_id, version, "policy updated");
        Ok(version)
    }

    /// The emergency stop of one key (needs no owner); the new policy version.
    ///
    /// # Errors
    /// As [`Service::set_policy`], with the `admin` scope.
    pub async fn disable(&self, caller: &Caller, key_id: &str) -> Result<u64, ServiceError> {
        caller.require(Scope::Admin, None)?;
        let version = self
            .change(key_id, |record, keyring, current| {
                EnclaveRequest::DisableKey {
                    record,
                    keyring,
                    current,
                }
            })
            .await?;
        tracing::warn!(key_id, version, "key disabled");
        Ok(version)
    }

    /// Re-enables a disabled key (with the owner's `approval` for an owned key); the
    /// new policy version.
    ///
    /// # Errors
    /// As [`Service::set_policy`].
    pub async fn enable(
        &self,
        caller: &Caller,
        key_id: &str,
        approval: Option<OwnerApproval>,
    ) -> Result<u64, ServiceError> {
        caller.require(Scope::PolicyWrite, None)?;
        let version = self
            .change(key_id, |record, keyring, current| {
                EnclaveRequest::EnableKey {
                    record,
                    keyring,
                    current,
                    approval,
                }
            })
            .await?;
        tracing::info!(key_id, version, "key enabled");
        Ok(version)
    }

    /// Loads key `id`, sends the policy change `build` makes of its record, keyring and
    /// current policy, and settles it (compare-and-set against the version it started
    /// from); the new version.
    async fn change(
        &self,
        id: &str,
        build: impl FnOnce(SealedKeyRecord, KeyringRef, SealedPolicy) -> EnclaveRequest,
    ) -> Result<u64, ServiceError> {
        let (row, keyring) = self
            .store
            .key_with_keyring(id.to_owned())
            .await?
            .ok_or(ServiceError::KeyNotFound)?;
        let expected = row.policy.version;
        let answer = self
            .relay
            .call(build(row.record, keyring, row.policy))
            .await?;
        let unexpected = || Error::UnexpectedResponse("policy change");
        let policy = Journal::new(self.store.clone())
            .settle(&self.relay, answer, Some(expected))
            .await?
            .ok_or_else(unexpected)?;
        if policy.key_id != id {
            return Err(unexpected().into());
        }
        Ok(policy.version)
    }

    /// Stops (`true`) or resumes (`false`) signing store-wide.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `admin`; the relay's and store's errors.
    pub async fn set_stop(&self, caller: &Caller, stopped: bool) -> Result<(), ServiceError> {
        caller.require(Scope::Admin, None)?;
        let request = if stopped {
            EnclaveRequest::StopAll
        } else {
            EnclaveRequest::ResumeAll
        };
        let answer = self.relay.call(request).await?;
        Journal::new(self.store.clone())
            .settle(&self.relay, answer, None)
            .await?;
        if stopped {
            tracing::warn!("store-wide stop: the enclave signs nothing until resumed");
        } else {
            tracing::warn!("store-wide stop lifted");
        }
        Ok(())
    }

    /// Up to `limit` (at most [`MAX_AUDIT_PAGE`]) audit records with `seq > after`,
    /// with the documents binding their audit keys.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without `keys:read`; the store's errors.
    pub async fn audit(
        &self,
        caller: &Caller,
        after: u64,
        limit: u32,
    ) -> Result<AuditPage, ServiceError> {
        caller.require(Scope::KeysRead, None)?;
        let records = self
            .store
            .audit_records_after(after, limit.min(MAX_AUDIT_PAGE))
            .await?;
        let mut keys: Vec<[u8; 32]> = records.iter().map(|r| r.signed.audit_key).collect();
        keys.sort_unstable();
        keys.dedup();
        let documents = self.store.audit_documents(keys).await?;
        Ok(AuditPage { records, documents })
    }
}
