//! The application API: HTTP/1.1 + JSON (axum). HTTP only: handlers parse the request,
//! call the service layer ([`crate::service`]) and format its answer; every error code
//! is an [`ApiCode`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/health` | `{"status":"ok","mode":"simulation"\|"nitro","pcrs":{"0":"hex",…}}`, 503 `not_ready` until ready (or, once an initialisation failed, its cause: `kms_access_denied`, `kms_error`, `configure_refused`, with the enclave's error text), 503 `enclave_configured_by_another` (for good) once the enclave turned out configured for another KMS target |
//! | `POST /v1/keys` `{"algorithm","label"?,"policy"?}` | 201 `{"key_id","algorithm","label","public_key","address","policy_version","created_at"}` |
//! | `GET /v1/keys?limit=N` (1..=1000, default 100) | `{"keys":[…]}`, newest first, each with its `"statement"` (no document) and `"fee_cap"` as below |
//! | `GET /v1/keys/{key_id}` | the key, plus `"policy"` (the JSON document) and, when the policy has a section for the key's chain, `"fee_cap":"set"\|"none"` ([`format::fee_cap`]) |
//! | `PUT /v1/keys/{key_id}/policy` `{"policy":{…}}` | `{"policy_version":N}` |
//! | `POST /v1/keys/{key_id}/sign` `{"kind","payload"}` | EVM: `{"signature":{"r","s","y_parity","v"},"signed_transaction","transaction_hash"}`; Solana: `{"signature","signed_transaction"}` |
//! | `GET /v1/attestation?nonce=HEX` (≤ 512 bytes) | `{"document":"<base64>"}` |
//! | `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{token_id}` | see [`tokens`] |
//! | policy, owner, disable/enable, stop/resume, audit | see [`policy`] |
//!
//! Every route but `GET /v1/health` needs `Authorization: Bearer <token>` with a scope
//! ([`crate::auth`]): `POST /v1/keys` `keys:create`; `GET /v1/keys[/{id}]` `keys:read`;
//! `PUT …/policy` `policy:write`; `POST …/sign` `sign` (on a listed key, if the token
//! lists keys); `GET /v1/attestation` any token; the token routes `admin`. No, an
//! unknown, a revoked or an expired token is 401 `unauthenticated`; a valid token
//! without the scope is 403 `forbidden`.
//!
//! Bytes are `0x` hex for EVM and secp256k1 keys, base64 for Solana transactions and
//! base58 for Solana keys and signatures. Every error, including axum's own rejections,
//! has the body `{"error":{"code","message"}}` (see [`ApiError`]).
//!
//! The parent decides nothing about keys or policies: it checks shapes, looks rows up
//! and relays. A key without a policy gets `{"enabled":true}`, which the enclave's
//! default-deny evaluation refuses for every payload until rules are added.

//!
//! Layout: [`router`] (routes, limits, fallbacks), [`extract`] (JSON body, key id,
//! query), [`error`] ([`ApiCode`], [`ApiError`]), one module per route family
//! ([`health`], [`keys`], [`sign`], [`attestation`], [`policy`], [`tokens`]), and
//! `tests.rs`. A new route (e.g. `/v1/openapi.json`) is one line in [`router::router`];
//! a new front end (JSON-RPC) calls the same [`Service`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::service::Service;

pub mod attestation;
pub mod error;
pub mod extract;
pub mod health;
pub mod jsonrpc;
pub mod keys;
pub mod openapi;
pub mod policy;
pub mod router;
pub mod sign;
#[cfg(test)]
pub(crate) mod tests;
pub mod tokens;

pub use error::{ApiCode, ApiError};
pub use router::router;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service layer the handlers call.
    pub service: Service,
    /// Permits for requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// Deadline for reading a request body.
    pub read_timeout: Duration,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}
