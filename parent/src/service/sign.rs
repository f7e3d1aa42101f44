//! Signing: one entry point, [`Service::sign`], for every front end (REST
//! `POST /v1/keys/{id}/sign`, JSON-RPC `eth_signTransaction`, `eth_sign`,
//! `personal_sign`, `eth_signTypedData_v4`).
//!
//! The key row comes from the store's in-memory cache when it is there (no database,
//! no blocking hop); a cached row the enclave refuses as `SealedStateInvalid` may be
//! stale (another parent on the store wrote a newer policy, which raised the enclave's
//! version floor), so the database is read once and the request tried again. The
//! decision's audit record is stored before the answer is released: no signature leaves
//! without it, and a refusal's record is stored too.

use ekms_shared::audit::Receipt;
use ekms_shared::{Request as EnclaveRequest, ResponseBody, SignOutput, SignPayload, WireError};

use super::journal::Journal;
use super::{Invalid, Service, ServiceError};
use crate::auth::{Caller, Scope};
use crate::error::Error;
use crate::store::algorithm_text;

/// What to sign, and with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    /// The key (a canonical UUID; [`Service::key_by_address`] finds one by address).
    pub key_id: String,
    /// The payload, decoded from the front end's encoding: its kind says what the
    /// bytes are (an unsigned EIP-2718 transaction, an EIP-191 message, EIP-712 typed
    /// data as JSON text, a Solana message, ...) and must match the key's algorithm.
    pub payload: SignPayload,
}

/// A signature the enclave made under the key's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signature (and signed transaction, for transactions), as the enclave answered
    /// for the request's kind.
    pub output: SignOutput,
    /// The receipt of the decision's audit record.
    pub receipt: Receipt,
}

impl Service {
    /// Signs `request.payload` with `request.key_id` if the caller may use the key and
    /// the key's policy allows it.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] without the `sign` scope on this key;
    /// [`ServiceError::KeyNotFound`]; [`Invalid::KindMismatch`];
    /// [`ServiceError::PolicyDenied`] with the rule that refused (its audit record
    /// stored); the enclave's other refusals (invalid or unsupported payload, key
    /// disabled, store stopped, sealed state invalid) and the relay's and store's
    /// errors as [`ServiceError::Parent`].
    pub async fn sign(
        &self,
        caller: &Caller,
        request: SignRequest,
    ) -> Result<Signed, ServiceError> {
        let SignRequest { key_id, payload } = request;
        caller.require(Scope::Sign, Some(&key_id))?;
        let (mut key, mut cached) = self
            .store
            .cached_key(&key_id)
            .await?
            .ok_or(ServiceError::KeyNotFound)?;
        let kind = payload.kind;
        if kind.algorithm() != key.row.record.algorithm {
            return Err(ServiceError::invalid(
                Invalid::KindMismatch,
                format!(
                    "kind {} does not match the key's algorithm {}",
                    kind.as_str(),
                    algorithm_text(key.row.record.algorithm)
                ),
            ));
        }
        let mut payload = Some(payload);
        let answer = loop {
            // Copied only while a retry may need it again.
            let payload = if cached {
                payload.clone()
            } else {
                payload.take()
            };
            let request = EnclaveRequest::Sign {
                record: key.row.record.clone(),
                keyring: key.keyring.clone(),
                policy: key.row.policy.clone(),
                payload: payload.ok_or_else(|| Error::Internal("sign payload".into()))?,
            };
            match self.relay.call(request).await {
                // A refusal of a row just read stands (module docs).
                Err(Error::Enclave(WireError::SealedStateInvalid)) if cached => {
                    self.store.forget_key(&key_id);
                    key = self
                        .store
                        .cached_key(&key_id)
                        .await?
                        .ok_or(ServiceError::KeyNotFound)?
                        .0;
                    cached = false;
                }
                other => break other?,
            }
        };
        // The decision's audit record is stored first: no signature leaves without it.
        let (answer, receipt) = Journal::new(self.store.clone()).record(answer).await?;
        let unexpected = || Error::UnexpectedResponse("Sign");
        let receipt = receipt.ok_or_else(unexpected)?;
        let ResponseBody::Signed { output, .. } = answer else {
            return Err(unexpected().into());
        };
        let matches = matches!(
            (kind, &output),
            (
                ekms_shared::PayloadKind::EvmTransaction,
                SignOutput::Evm { .. }
            ) | (
                ekms_shared::PayloadKind::SolanaTransaction,
                SignOutput::Solana { .. }
            ) | (
                ekms_shared::PayloadKind::EvmMessage
                    | ekms_shared::PayloadKind::EvmTypedData
                    | ekms_shared::PayloadKind::EvmDigest,
                SignOutput::EvmDigest { .. }
            ) | (
                ekms_shared::PayloadKind::SolanaOffchainMessage,
                SignOutput::SolanaMessage { .. }
            )
        );
        if !matches {
            return Err(unexpected().into());
        }
        Ok(Signed { output, receipt })
    }
}
