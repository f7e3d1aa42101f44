//! The six payload kinds a key can sign, decoded from the bytes the caller sent
//! ([`decode`]) into what the policy evaluates ([`Decoded`]), and the identity of the
//! key that signs ([`SignerIdentity`]).
//!
//! | kind | bytes | decoded by | signed by |
//! |---|---|---|---|
//! | `evm_transaction` | unsigned EIP-2718 transaction | [`crate::evm::decode_unsigned`] | [`crate::sign_evm`] |
//! | `evm_message` | the message (EIP-191 `personal_sign`) | [`PersonalMessage::decode`] | [`crate::sign_evm_hash`] of [`Decoded::evm_signing_hash`] |
//! | `evm_typed_data` | EIP-712 JSON `{types, primaryType, domain, message}` | [`TypedDataPayload::decode`] | same |
//! | `evm_digest` | exactly 32 bytes | — | same |
//! | `solana_transaction` | a transaction or message, legacy or v0 | [`crate::solana::decode`] | [`crate::sign_solana`] |
//! | `solana_offchain_message` | an off-chain message, header version 0 | [`OffchainMessage::decode`] | [`crate::sign_solana_offchain`] |
//!
//! Every decoder checks its size bound before decoding (see each one).

use serde::{Deserialize, Serialize};

use crate::evm::{EvmTx, PersonalMessage, TypedDataPayload};
use crate::solana::{OffchainMessage, SolanaPayload};
use crate::SignerError;

/// What the caller says the payload is. The engine trusts this only to pick the
/// decoder: each decoder then refuses bytes that are not of its kind, and each kind
/// signs in its own domain (a transaction hash, an EIP-191 or EIP-712 prefix, the
/// Solana off-chain header), so a payload of one kind cannot be signed as another
/// except through `evm_digest`, which a policy must allow by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// An unsigned EVM transaction.
    EvmTransaction,
    /// An EIP-191 `personal_sign` message.
    EvmMessage,
    /// EIP-712 typed data.
    EvmTypedData,
    /// A raw 32-byte digest.
    EvmDigest,
    /// A Solana transaction or message.
    SolanaTransaction,
    /// A Solana off-chain message.
    SolanaOffchainMessage,
}

impl PayloadKind {
    /// Every kind.
    pub const ALL: [PayloadKind; 6] = [
        Self::EvmTransaction,
        Self::EvmMessage,
        Self::EvmTypedData,
        Self::EvmDigest,
        Self::SolanaTransaction,
        Self::SolanaOffchainMessage,
    ];

    /// The stable name (policy `allowed_kinds`, wire and API).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EvmTransaction => "evm_transaction",
            Self::EvmMessage => "evm_message",
            Self::EvmTypedData => "evm_typed_data",
            Self::EvmDigest => "evm_digest",
            Self::SolanaTransaction => "solana_transaction",
            Self::SolanaOffchainMessage => "solana_offchain_message",
        }
    }

    /// Reads a name; `None` unless exactly one of [`PayloadKind::as_str`]'s.
    pub fn from_name(s: &str) -> Option<PayloadKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a secp256k1 (EVM) key signs this kind; otherwise an ed25519 one.
    pub fn is_evm(self) -> bool {
        matches!(
            self,
            Self::EvmTransaction | Self::EvmMessage | Self::EvmTypedData | Self::EvmDigest
        )
    }
}

/// A decoded payload of one of the six kinds.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// An unsigned EVM transaction.
    EvmTransaction(EvmTx),
    /// An EIP-191 message.
    EvmMessage(PersonalMessage),
    /// EIP-712 typed data (boxed: the largest variant).
    EvmTypedData(Box<TypedDataPayload>),
    /// A raw digest, signed as is.
    EvmDigest([u8; 32]),
    /// A Solana transaction or message.
    SolanaTransaction(SolanaPayload),
    /// A Solana off-chain message.
    SolanaOffchainMessage(OffchainMessage),
}

impl Decoded {
    /// The kind.
    pub fn kind(&self) -> PayloadKind {
        match self {
            Self::EvmTransaction(_) => PayloadKind::EvmTransaction,
            Self::EvmMessage(_) => PayloadKind::EvmMessage,
            Self::EvmTypedData(_) => PayloadKind::EvmTypedData,
            Self::EvmDigest(_) => PayloadKind::EvmDigest,
            Self::SolanaTransaction(_) => PayloadKind::SolanaTransaction,
            Self::SolanaOffchainMessage(_) => PayloadKind::SolanaOffchainMessage,
        }
    }

    /// The digest an EVM key signs with [`crate::sign_evm_hash`] for the three message
    /// kinds: the EIP-191 hash, the EIP-712 hash, or the raw digest. `None` for
    /// transactions (signed with [`crate::sign_evm`]) and Solana kinds.
    pub fn evm_signing_hash(&self) -> Option<[u8; 32]> {
        match self {
            Self::EvmMessage(m) => Some(m.signing_hash()),
            Self::EvmTypedData(t) => Some(t.signing_hash()),
            Self::EvmDigest(d) => Some(*d),
            _ => None,
        }
    }
}

/// Decodes `bytes` as a payload of `kind` (table in the module docs).
///
/// # Errors
/// The decoder's: [`SignerError::Oversize`] before decoding, then
/// [`SignerError::Malformed`], [`SignerError::UnsupportedPayload`] or
/// [`SignerError::InvalidPayload`].
pub fn decode(kind: PayloadKind, bytes: &[u8]) -> Result<Decoded, SignerError> {
    Ok(match kind {
        PayloadKind::EvmTransaction => Decoded::EvmTransaction(crate::evm::decode_unsigned(bytes)?),
        PayloadKind::EvmMessage => Decoded::EvmMessage(PersonalMessage::decode(bytes)?),
        PayloadKind::EvmTypedData => {
            Decoded::EvmTypedData(Box::new(TypedDataPayload::decode(bytes)?))
        }
        PayloadKind::EvmDigest => {
            let digest = <[u8; 32]>::try_from(bytes).map_err(|_| {
                if bytes.len() > 32 {
                    SignerError::Oversize {
                        what: "EVM digest",
                        len: bytes.len(),
                        limit: 32,
                    }
                } else {
                    SignerError::malformed(format!(
                        "an EVM digest is 32 bytes, not {}",
                        bytes.len()
                    ))
                }
            })?;
            Decoded::EvmDigest(digest)
        }
        PayloadKind::SolanaTransaction => Decoded::SolanaTransaction(crate::solana::decode(bytes)?),
        PayloadKind::SolanaOffchainMessage => {
            Decoded::SolanaOffchainMessage(OffchainMessage::decode(bytes)?)
        }
    })
}

/// The key a request signs with, as the policy needs to know it: an EVM address or a
/// Solana (ed25519) public key. Build it from the public key in the sealed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignerIdentity {
    /// A secp256k1 key, by its address.
    Evm([u8; 20]),
    /// An ed25519 key, by its public key.
    Solana([u8; 32]),
}

impl SignerIdentity {
    /// The identity of a secp256k1 key from its 33-byte compressed public key.
    ///
    /// # Errors
    /// As [`crate::evm_address`].
    pub fn from_secp256k1_public_key(pubkey33: &[u8]) -> Result<SignerIdentity, SignerError> {
        crate::address::evm_address(pubkey33).map(SignerIdentity::Evm)
    }

    /// The EVM address, if an EVM key.
    pub fn evm_address(&self) -> Option<[u8; 20]> {
        match self {
            Self::Evm(a) => Some(*a),
            Self::Solana(_) => None,
        }
    }

    /// The ed25519 public key, if a Solana key.
    pub fn solana_public_key(&self) -> Option<[u8; 32]> {
        match self {
            Self::Solana(k) => Some(*k),
            Self::Evm(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_pinned() {
        let names: Vec<&str> = PayloadKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "evm_transaction",
                "evm_message",
                "evm_typed_data",
                "evm_digest",
                "solana_transaction",
                "solana_offchain_message"
            ]
        );
        for k in PayloadKind::ALL {
            assert_eq!(PayloadKind::from_name(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(PayloadKind::from_name("EvmDigest"), None);
    }

    #[test]
    fn digest_is_exactly_32_bytes() {
        assert!(matches!(
            decode(PayloadKind::EvmDigest, &[7; 32]),
            Ok(Decoded::EvmDigest(d)) if d == [7; 32]
        ));
        assert!(decode(PayloadKind::EvmDigest, &[7; 31]).is_err());
        assert!(matches!(
            decode(PayloadKind::EvmDigest, &[7; 33]),
            Err(SignerError::Oversize { .. })
        ));
    }

    #[test]
    fn rejects_a_payload_under_another_kind() {
        let offchain = crate::solana::OffchainMessage::encode(&[0; 32], &[[1; 32]], b"hi").unwrap();
        assert!(decode(PayloadKind::SolanaTransaction, &offchain).is_err());
        assert!(decode(PayloadKind::EvmTransaction, &offchain).is_err());
        assert!(decode(PayloadKind::EvmTypedData, &offchain).is_err());
    }
}
