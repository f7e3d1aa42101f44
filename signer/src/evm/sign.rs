//! Signing EVM payloads with secp256k1: transactions ([`sign_evm`]) and 32-byte
//! digests ([`sign_evm_hash`]: EIP-191 messages, EIP-712 typed data, raw digests).
//!
//! RFC 6979 deterministic ECDSA, low-s normalized (EIP-2) with the recovery parity
//! adjusted (k256's `hazmat` signer), from the stored scalar: the public key is not
//! recomputed (DESIGN §9).

use alloy_consensus::transaction::RlpEcdsaEncodableTx;
use alloy_primitives::{keccak256, Signature, U256};
use k256::Secp256k1;

use crate::evm::tx::{EvmTx, Inner};
use crate::secret::Secp256k1Secret;
use crate::SignerError;

/// `(r, s, y_parity)` of a low-s RFC 6979 signature over `hash`.
fn sign_prehash(
    hash: &[u8; 32],
    key: &Secp256k1Secret,
) -> Result<([u8; 32], [u8; 32], u8), SignerError> {
    // The scalar exists only inside this closure; the enclave runs it on a signing
    // thread whose stack is scrubbed afterwards (the hazmat signer copies it by value).
    let (sig, recovery_id) = key
        .with_scalar(|scalar| {
            ecdsa::hazmat::sign_prehashed_rfc6979::<Secp256k1, sha2::Sha256>(scalar, hash, &[])
        })
        .ok_or(SignerError::InvalidKey {
            message: "secp256k1 secret is not a scalar in [1, n)",
        })?;
    if recovery_id.is_x_reduced() {
        return Err(SignerError::InvalidKey {
            message: "signature has R.x >= n, not expressible with an EVM v",
        });
    }
    let (r_bytes, s_bytes) = sig.split_bytes();
    Ok((
        r_bytes.into(),
        s_bytes.into(),
        u8::from(recovery_id.is_y_odd()),
    ))
}

/// A recoverable signature over a 32-byte digest, in the shape `personal_sign` and
/// `eth_signTypedData_v4` return: 65 bytes `r ‖ s ‖ v` with `v` = 27 + y parity, `s`
/// low (EIP-2). Recoverable by eth-account's `recover_message` / `Account._recover_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmHashSignature {
    /// The digest that was signed (EIP-191 or EIP-712 hash, or the raw digest).
    pub hash: [u8; 32],
    /// `r`, 32 bytes big-endian.
    pub r: [u8; 32],
    /// `s`, 32 bytes big-endian, in the lower half of the order.
    pub s: [u8; 32],
    /// 27 or 28.
    pub v: u8,
}

impl EvmHashSignature {
    /// `r ‖ s ‖ v`, 65 bytes.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(&self.r);
        out[32..64].copy_from_slice(&self.s);
        out[64] = self.v;
        out
    }
}

/// Signs a 32-byte digest (see [`EvmHashSignature`]). The caller decides what the
/// digest is: [`crate::Decoded::evm_signing_hash`] gives it for the message kinds.
///
/// # Errors
/// [`SignerError::InvalidKey`] in the (probability ~2^-128) case where `R.x ≥ n`.
pub fn sign_evm_hash(
    hash: &[u8; 32],
    key: &Secp256k1Secret,
) -> Result<EvmHashSignature, SignerError> {
    let (r, s, parity) = sign_prehash(hash, key)?;
    Ok(EvmHashSignature {
        hash: *hash,
        r,
        s,
        v: 27 + parity,
    })
}

/// An ECDSA signature over an EVM transaction, and the signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmSignature {
    /// `r`, 32 bytes big-endian.
    pub r: [u8; 32],
    /// `s`, 32 bytes big-endian, always in the lower half of the order (EIP-2).
    pub s: [u8; 32],
    /// Parity of the y coordinate of `R` (0 or 1), after low-s normalization.
    pub y_parity: u8,
    /// The `v` as the transaction carries it: `chainId * 2 + 35 + yParity` for legacy
    /// (EIP-155), `yParity` for typed transactions.
    pub v: u64,
    /// The signed transaction, EIP-2718 encoded (what `eth_sendRawTransaction` takes).
    pub signed_transaction: Vec<u8>,
    /// The transaction hash: `keccak256(signed_transaction)`.
    pub transaction_hash: [u8; 32],
}

/// Signs an EVM transaction: RFC 6979 deterministic ECDSA over [`EvmTx::sighash`],
/// low-s normalized with the recovery parity adjusted (k256's `hazmat` signer). The
/// public key is not recomputed (DESIGN §9).
///
/// # Errors
/// [`SignerError::InvalidKey`] in the (probability ~2^-128) case where `R.x ≥ n`,
/// which Ethereum's `v` cannot express.
pub fn sign_evm(tx: &EvmTx, key: &Secp256k1Secret) -> Result<EvmSignature, SignerError> {
    let (r, s, y_parity) = sign_prehash(&tx.sighash, key)?;
    let y_odd = y_parity == 1;
    let signature = Signature::new(U256::from_be_bytes(r), U256::from_be_bytes(s), y_odd);

    let mut signed_transaction = Vec::new();
    match &tx.inner {
        Inner::Legacy(t) => t.eip2718_encode(&signature, &mut signed_transaction),
        Inner::Eip2930(t) => t.eip2718_encode(&signature, &mut signed_transaction),
        Inner::Eip1559(t) => t.eip2718_encode(&signature, &mut signed_transaction),
    }
    let transaction_hash = keccak256(&signed_transaction).0;
    let v = match tx.inner {
        // chain_id ≤ MAX_CHAIN_ID (checked at decode), so this cannot overflow.
        Inner::Legacy(_) => tx.chain_id * 2 + 35 + u64::from(y_parity),
        Inner::Eip2930(_) | Inner::Eip1559(_) => u64::from(y_parity),
    };
    Ok(EvmSignature {
        r,
        s,
        y_parity,
        v,
        signed_transaction,
        transaction_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::evm_address;
    use crate::evm::PersonalMessage;
    use k256::ecdsa::{RecoveryId, Signature as KSig, VerifyingKey};

    /// What eth-account's `Account._recover_hash` does: `v` 27/28, `r ‖ s`.
    fn recover(sig: &EvmHashSignature) -> [u8; 20] {
        let bytes = sig.to_bytes();
        let ksig = KSig::from_slice(&bytes[..64]).unwrap();
        let recid = RecoveryId::new(bytes[64] == 28, false);
        let vk = VerifyingKey::recover_from_prehash(&sig.hash, &ksig, recid).unwrap();
        evm_address(vk.to_sec1_point(true).as_bytes()).unwrap()
    }

    #[test]
    fn eip191_signature_recovers_to_the_key_with_low_s() {
        let key = Secp256k1Secret::from_bytes(&[0x46; 32]).unwrap();
        let address = evm_address(&key.public_key()).unwrap();
        let half_n =
            hex::decode("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0")
                .unwrap();
        for text in [
            "Hello World",
            "0x1234",
            "a much longer message, with commas",
        ] {
            let m = PersonalMessage::decode(text.as_bytes()).unwrap();
            let sig = sign_evm_hash(&m.signing_hash(), &key).unwrap();
            assert!(sig.v == 27 || sig.v == 28);
            assert!(sig.s.as_slice() <= half_n.as_slice());
            assert_eq!(recover(&sig), address, "{text}");
            // deterministic (RFC 6979)
            assert_eq!(sign_evm_hash(&m.signing_hash(), &key).unwrap(), sig);
        }
    }

    #[test]
    fn rejects_recovery_to_another_key() {
        let key = Secp256k1Secret::from_bytes(&[0x46; 32]).unwrap();
        let other = Secp256k1Secret::from_bytes(&[0x47; 32]).unwrap();
        let sig = sign_evm_hash(&[9; 32], &other).unwrap();
        assert_ne!(recover(&sig), evm_address(&key.public_key()).unwrap());
    }
}
