//! EVM payloads: what the engine decodes and signs for the four EVM kinds.
//!
//! - [`tx`]: unsigned EIP-2718 transactions (legacy EIP-155, EIP-2930, EIP-1559);
//! - [`calldata`]: ERC-20 `transfer` / `transferFrom` / `approve` /
//!   `increaseAllowance` call data;
//! - [`message`]: EIP-191 `personal_sign` messages;
//! - [`eip712`]: EIP-712 typed data, with EIP-2612 `Permit` and Uniswap Permit2
//!   decoded;
//! - [`sign`]: secp256k1 signatures over transactions and digests.
//!
//! Rule for maintainers: every decoder bounds its input before decoding and refuses
//! trailing or non-canonical bytes, so one payload has one reading.

pub mod calldata;
pub mod eip712;
pub mod message;
pub mod sign;
pub mod tx;

pub use calldata::Erc20Call;
pub use eip712::{Permit, TypedDataPayload, MAX_TYPED_DATA_BYTES, MAX_TYPED_DATA_DEPTH};
pub use message::{PersonalMessage, MAX_EVM_MESSAGE};
pub use sign::{sign_evm, sign_evm_hash, EvmHashSignature, EvmSignature};
pub use tx::{decode_unsigned, EvmTx, EvmTxType, MAX_EVM_PAYLOAD};
