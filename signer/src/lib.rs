//! `ekms-signer`: the enclave's pure signing core. No I/O, no clock, no randomness of
//! its own: the caller (the enclave) hands in bytes, keys and policy text, and gets
//! back decisions and signatures.
//!
//! The flow for one request, as the enclave runs it (DESIGN §2, step 3–4):
//!
//! 1. decode the payload the application sent, by its [`PayloadKind`], with
//!    [`decode`] (bounded before decoding) into a [`Decoded`]: an EVM transaction,
//!    an EIP-191 message, EIP-712 typed data, a raw digest, a Solana transaction or
//!    a Solana off-chain message;
//! 2. evaluate the key's [`policy::Policy`] on what the decoded payload *does*
//!    ([`Policy::evaluate`] with the key's [`SignerIdentity`] and the time), never on
//!    what the caller claims it does; default deny. The [`Approval`] lists the
//!    [`Charge`]s against the rolling limits, which the enclave reserves before
//!    signing and commits or releases after. ([`Policy::evaluate_evm`] and
//!    [`Policy::evaluate_solana`] remain for version 1 policies.)
//! 3. sign with the unwrapped key: [`sign_evm`] (transactions), [`sign_evm_hash`] of
//!    [`Decoded::evm_signing_hash`] (the three EVM message kinds), [`sign_solana`],
//!    [`sign_solana_offchain`]; from the stored scalar and the public key of the
//!    sealed record, never recomputing it (DESIGN §9).
//!
//! Rules for maintainers: every decoder bounds its input size *before* decoding and
//! refuses trailing bytes; nothing here panics on hostile input; secrets live only in
//! the types of [`secret`]; error messages never carry key material.

pub mod address;
pub mod evm;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod payload;
pub mod policy;
pub mod secret;
pub mod solana;

pub use address::{eip55, evm_address, parse_evm_address, parse_solana_address, solana_address};
pub use evm::{
    decode_unsigned, sign_evm, sign_evm_hash, EvmHashSignature, EvmSignature, EvmTx, EvmTxType,
    MAX_EVM_PAYLOAD,
};
pub use payload::{decode, Decoded, PayloadKind, SignerIdentity};
pub use policy::{
    Approval, Charge, Denial, EvmRules, LimitId, Policy, Rule, SolanaRules, MAX_POLICY_BYTES,
};
pub use secret::{Ed25519Secret, Secp256k1Secret};
pub use solana::{
    decode as decode_solana, sign_solana, sign_solana_offchain, SolanaInstruction, SolanaPayload,
    SolanaSignature, SystemTransfer, SystemTransferKind, MAX_SOLANA_PAYLOAD, SYSTEM_PROGRAM_ID,
};

/// Every error this crate returns. Its `Display` is safe to log and to send back to
/// the caller: it never contains key material, and payload-derived text is limited to
/// short structural descriptions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The payload bytes do not decode (bad RLP / wire format, truncated, trailing
    /// bytes, non-canonical encoding).
    #[error("malformed payload: {message}")]
    Malformed {
        /// What did not decode.
        message: String,
    },
    /// The payload decodes to a kind this signer refuses on purpose (EIP-4844 blob or
    /// EIP-7702 transactions, unknown EIP-2718 types, Solana v1 messages, ...).
    #[error("unsupported payload: {message}")]
    UnsupportedPayload {
        /// Which kind, and why it is refused.
        message: String,
    },
    /// The payload decodes but is not valid as a thing to sign (chain id 0, pre-EIP-155
    /// legacy transaction, Solana message that fails sanitization, ...).
    #[error("invalid payload: {message}")]
    InvalidPayload {
        /// What is wrong with it.
        message: String,
    },
    /// An input is larger than its fixed bound; checked before any decoding.
    #[error("{what} too large: {len} bytes, limit {limit}")]
    Oversize {
        /// Which input ("EVM payload", "Solana payload", "policy").
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The signing key is not one of the message's required signers (Solana).
    #[error("the key is not a required signer of this message")]
    NotASigner,
    /// Key bytes are not a valid key (wrong length, zero or ≥ n for secp256k1, a
    /// public key that is not a curve point).
    #[error("invalid key: {message}")]
    InvalidKey {
        /// What is wrong; never the key bytes themselves.
        message: &'static str,
    },
    /// A policy document does not parse or breaks a limit.
    #[error("invalid policy: {message}")]
    InvalidPolicy {
        /// What is wrong with the document.
        message: String,
    },
    /// The caller's randomness source failed or returned unusable bytes.
    #[error("randomness source failed: {message}")]
    Randomness {
        /// The source's own error text, or why its output was unusable.
        message: String,
    },
}

impl SignerError {
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self::Malformed {
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::UnsupportedPayload {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidPayload {
            message: message.into(),
        }
    }

    pub(crate) fn policy(message: impl Into<String>) -> Self {
        Self::InvalidPolicy {
            message: message.into(),
        }
    }
}
