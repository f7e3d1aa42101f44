//! The service layer: what the REST API ([`crate::api`]), the coming JSON-RPC endpoint
//! (issue 11) and tools share. It checks the caller's token scopes, reads and writes the
//! store, talks to the enclave through the relay and stores the audit trail; it knows
//! nothing of HTTP or JSON shapes (STYLE rule 17).
//!
//! Every operation takes the authenticated [`Caller`] (a token's scopes and key list,
//! from [`crate::auth::authenticate`]) and returns typed values or a [`ServiceError`]:
//!
//! | operation | scope |
//! |---|---|
//! | [`Service::create_key`] | `keys:create` |
//! | [`Service::list_keys`], [`Service::key`], [`Service::audit`] | `keys:read` |
//! | [`Service::signable_keys`], [`Service::key_by_address`] | `sign` (keys the token may use) |
//! | [`Service::sign`] | `sign` on that key |
//! | [`Service::propose_policy`], [`Service::set_policy`], [`Service::propose_enable`], [`Service::enable`] | `policy:write` |
//! | [`Service::disable`], [`Service::set_stop`], token management | `admin` |
//! | [`Service::attestation`] | any valid token |
//!
//! **For JSON-RPC** (`eth_accounts`, `eth_sign*`): authenticate the bearer token with
//! [`crate::auth::authenticate`]; `eth_accounts` is [`Service::signable_keys`] (EVM
//! keys' addresses); a signing method finds its key with [`Service::key_by_address`]
//! and calls [`Service::sign`] with a [`sign::SignRequest`] (the payload kind and the
//! bytes the method's parameters encode). A [`ServiceError::PolicyDenied`] carries the
//! rule (EIP-1474 `-32003`); [`ServiceError::KeyNotFound`] is an unknown account
//! (`-32602`); [`ServiceError::Forbidden`] an unauthorized token (`4100`).
//!
//! Layout: [`keys`] (create, list, get, statements, lookup by address), [`sign`],
//! [`policy`] (owner-authorized changes, emergency stop, audit), [`tokens`],
//! [`keyring`] (the relay's connection bootstrap and `Restore`), [`journal`] (the
//! audit record of each decision, the two phases of each state change), [`error`].

pub mod error;
pub mod journal;
pub mod keyring;
pub mod keys;
pub mod policy;
pub mod sign;
#[cfg(test)]
mod tests;
pub mod tokens;

use std::sync::Arc;

use ekms_shared::{Request as EnclaveRequest, ResponseBody};

pub use error::{Invalid, Refusal, ServiceError};
pub use keyring::Bootstrap;

use crate::auth::Caller;
use crate::identity::IdentityCheck;
use crate::relay::{Health, NotReady, Relay, RelayConfig};
use crate::store::SharedStore;

/// The service: cheap to clone (handles only).
#[derive(Clone, Debug)]
pub struct Service {
    relay: Relay,
    store: SharedStore,
    identity: Arc<IdentityCheck>,
    keyring: Arc<Bootstrap>,
    /// EVM address → key id, for addresses whose key's statement checked
    /// ([`Service::evm_key_for_address`]).
    evm_addresses: Arc<keys::Checked<[u8; 20], String>>,
    /// Key identity columns that checked against their statements
    /// ([`Service::signable_keys`], [`Service::key_by_address`]).
    checked_identities: Arc<keys::Checked<String, keys::Identity>>,
}

/// Whether the enclave serves, as `/v1/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnclaveStatus {
    /// At least one connection is initialised.
    Ready(Health),
    /// The enclave was configured by another KMS target (fatal; the reason).
    ConfiguredByAnother(String),
    /// Not ready; why, when the last initialisation failed.
    NotReady(Option<NotReady>),
}

impl Service {
    /// Starts the relay with `config` (its connections bootstrapped from `store`'s
    /// keyring `keyring`, [`Bootstrap`]) and returns the service around it.
    pub fn start(
        config: RelayConfig,
        store: SharedStore,
        keyring: &str,
        identity: Arc<IdentityCheck>,
    ) -> Service {
        let keyring = Bootstrap::new(store.clone(), keyring);
        let relay = Relay::start(config, keyring.clone());
        Service {
            relay,
            store,
            identity,
            keyring,
            evm_addresses: Arc::default(),
            checked_identities: Arc::default(),
        }
    }

    /// The relay (for the credentials refresher and shutdown).
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The key store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The keyring bootstrap.
    pub fn keyring(&self) -> &Bootstrap {
        &self.keyring
    }

    /// Whether the enclave serves.
    pub fn enclave_status(&self) -> EnclaveStatus {
        if let Some(reason) = self.relay.alarm() {
            return EnclaveStatus::ConfiguredByAnother(reason);
        }
        match self.relay.health() {
            Some(h) => EnclaveStatus::Ready(h),
            None => EnclaveStatus::NotReady(self.relay.not_ready()),
        }
    }

    /// A fresh attestation document of the enclave (COSE_Sign1 bytes) with `nonce`
    /// (at most [`ekms_shared::MAX_ATTESTATION_NONCE_LEN`] bytes). Any valid token:
    /// every document costs the enclave an NSM call.
    ///
    /// # Errors
    /// The relay's and the enclave's.
    pub async fn attestation(
        &self,
        _caller: &Caller,
        nonce: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ServiceError> {
        let request = EnclaveRequest::Attestation {
            nonce,
            user_data: None,
        };
        Ok(self
            .relay
            .call_for("Attestation", request, |a| match a {
                ResponseBody::Attestation { document } => Some(document),
                _ => None,
            })
            .await?)
    }

    /// PCR0 of the enclave the relay is connected to, as it reported it (`None` before
    /// the first connection is initialised).
    fn enclave_pcr0(&self) -> Option<Vec<u8>> {
        self.relay.health().and_then(|h| h.pcrs.get(&0).cloned())
    }
}
