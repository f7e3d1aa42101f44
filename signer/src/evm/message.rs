//! EIP-191 version `0x45` ("E") messages, as `personal_sign` signs them:
//! `keccak256("\x19Ethereum Signed Message:\n" || decimal(len(message)) || message)`.
//!
//! The prefix makes the digest unlike any transaction's signing hash (an RLP list or
//! an EIP-2718 type byte never starts with `0x19`), so a message signature cannot be
//! replayed as a transaction signature.

use alloy_primitives::keccak256;

use crate::SignerError;

/// Largest EIP-191 message accepted, in bytes (16 KiB). Checked before anything else.
pub const MAX_EVM_MESSAGE: usize = 16 * 1024;

/// A message to sign with `personal_sign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalMessage {
    bytes: Vec<u8>,
    hash: [u8; 32],
}

impl PersonalMessage {
    /// Reads a message: any bytes, 1 to [`MAX_EVM_MESSAGE`] of them.
    ///
    /// # Errors
    /// [`SignerError::Oversize`] above the limit; [`SignerError::Malformed`] if empty.
    pub fn decode(bytes: &[u8]) -> Result<PersonalMessage, SignerError> {
        if bytes.len() > MAX_EVM_MESSAGE {
            return Err(SignerError::Oversize {
                what: "EVM message",
                len: bytes.len(),
                limit: MAX_EVM_MESSAGE,
            });
        }
        if bytes.is_empty() {
            return Err(SignerError::malformed("empty EVM message"));
        }
        let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", bytes.len()).into_bytes();
        prefixed.extend_from_slice(bytes);
        Ok(PersonalMessage {
            bytes: bytes.to_vec(),
            hash: keccak256(&prefixed).0,
        })
    }

    /// The message as given.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The EIP-191 digest that gets signed.
    pub fn signing_hash(&self) -> [u8; 32] {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_alloy_eip191() {
        let m = PersonalMessage::decode(b"Hello World").unwrap();
        assert_eq!(
            m.signing_hash(),
            alloy_primitives::eip191_hash_message(b"Hello World").0
        );
        // eth-account: encode_defunct(text="Hello World") hashes to this.
        assert_eq!(
            hex::encode(m.signing_hash()),
            "a1de988600a42c4b4ab089b619297c17d53cffae5d5120d82d8a92d0bb3b78f2"
        );
    }

    #[test]
    fn rejects_empty_and_oversize() {
        assert!(PersonalMessage::decode(b"").is_err());
        assert!(matches!(
            PersonalMessage::decode(&vec![0u8; MAX_EVM_MESSAGE + 1]),
            Err(SignerError::Oversize { .. })
        ));
        assert!(PersonalMessage::decode(&vec![0u8; MAX_EVM_MESSAGE]).is_ok());
    }
}
