//! Execution-key secrets and the public identities derived from them.
//!
//! [`Secp256k1Secret`] (EVM) and [`Ed25519Secret`] (Solana) are the only types in this
//! crate that hold private key material. Both zeroize on drop, print as
//! `Secp256k1Secret { .. }`, and are neither `Clone` nor `Serialize`.
//!
//! Public keys are computed here only at key creation ([`Secp256k1Secret::public_key`],
//! [`Ed25519Secret::public_key`]); the signing paths take the public key stored in the
//! sealed key record instead (DESIGN §9: deriving it costs more than the signature).

use k256::elliptic_curve::sec1::ToSec1Point;
use k256::{NonZeroScalar, PublicKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::SignerError;

/// How many draws [`Secp256k1Secret::generate`] makes before giving up on a source
/// whose output is never a valid scalar. An honest source fails one draw with
/// probability below 2^-127.
const MAX_DRAWS: usize = 4;

/// A secp256k1 private key: a scalar in `[1, n)`, held as its 32 big-endian bytes in a
/// zeroizing buffer. Zeroized on drop.
///
/// k256's `NonZeroScalar` is `Copy`, so a key stored in one is copied by value into
/// every frame that touches it. This type keeps only bytes and builds the scalar for
/// the duration of one operation (`Secp256k1Secret::with_scalar`), then zeroizes it;
/// the enclave runs that operation on a thread whose stack it scrubs afterwards.
pub struct Secp256k1Secret {
    bytes: Zeroizing<[u8; 32]>,
}

impl Secp256k1Secret {
    /// Builds a key from 32 big-endian bytes (the SEC1 / Ethereum private-key form).
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`] if `bytes` is not 32 bytes long or encodes 0 or a
    /// value ≥ the group order n.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignerError> {
        let invalid = SignerError::InvalidKey {
            message: "secp256k1 secret must be 32 bytes encoding a scalar in [1, n)",
        };
        if bytes.len() != 32 {
            return Err(invalid);
        }
        let mut key = Self {
            bytes: Zeroizing::new([0u8; 32]),
        };
        key.bytes.copy_from_slice(bytes);
        // Validates the range; the scalar built for the check is zeroized.
        if !key.with_scalar(|_| true).unwrap_or(false) {
            return Err(invalid);
        }
        Ok(key)
    }

    /// Generates a key from the caller's randomness (the enclave passes NSM random
    /// bytes). `fill` is called once per draw; a draw that is not a valid scalar (all
    /// zero, or ≥ n) is discarded and `fill` called again, up to a small bound.
    ///
    /// # Errors
    /// [`SignerError::Randomness`] if `fill` fails, or if its output is never a valid
    /// scalar (a broken source, e.g. one returning only zeros).
    pub fn generate<E: core::fmt::Display>(
        mut fill: impl FnMut(&mut [u8; 32]) -> Result<(), E>,
    ) -> Result<Self, SignerError> {
        let mut buf = Zeroizing::new([0u8; 32]);
        for _ in 0..MAX_DRAWS {
            fill(&mut buf).map_err(|e| SignerError::Randomness {
                message: e.to_string(),
            })?;
            if let Ok(key) = Self::from_bytes(&buf[..]) {
                return Ok(key);
            }
        }
        Err(SignerError::Randomness {
            message: "source never produced a valid secp256k1 scalar".into(),
        })
    }

    /// The public key as a 33-byte compressed SEC1 point (`02|03 || x`). Costs a scalar
    /// multiplication: call it at key creation, not per signature.
    pub fn public_key(&self) -> Vec<u8> {
        self.with_scalar(|scalar| {
            let point = PublicKey::from_secret_scalar(scalar).to_sec1_point(true);
            point.as_bytes().to_vec()
        })
        .unwrap_or_default()
    }

    /// Calls `f` with the secret scalar, built on the stack for this call only and
    /// zeroized after it. `None` only if the bytes are not a scalar in `[1, n)`, which
    /// [`Secp256k1Secret::from_bytes`] has already ruled out.
    pub(crate) fn with_scalar<R>(&self, f: impl FnOnce(&NonZeroScalar) -> R) -> Option<R> {
        let repr = k256::FieldBytes::from(*self.bytes);
        let scalar: Option<NonZeroScalar> = NonZeroScalar::from_repr(repr).into();
        let mut scalar = scalar?;
        let out = f(&scalar);
        scalar.zeroize();
        Some(out)
    }
}

impl ZeroizeOnDrop for Secp256k1Secret {}

impl core::fmt::Debug for Secp256k1Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Secp256k1Secret").finish_non_exhaustive()
    }
}

/// An ed25519 private key: the 32-byte seed of RFC 8032 §5.1.5. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Ed25519Secret {
    seed: [u8; 32],
}

impl Ed25519Secret {
    /// Builds a key from its 32-byte seed (RFC 8032 private key; the first half of a
    /// Solana 64-byte keypair file).
    ///
    /// # Errors
    /// [`SignerError::InvalidKey`] if `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignerError> {
        let seed: [u8; 32] = bytes.try_into().map_err(|_| SignerError::InvalidKey {
            message: "ed25519 secret must be 32 bytes",
        })?;
        Ok(Self { seed })
    }

    /// Generates a key from the caller's randomness (the enclave passes NSM random
    /// bytes). Every 32-byte string is a valid seed; an all-zero draw is nevertheless
    /// refused as the signature of a broken source.
    ///
    /// # Errors
    /// [`SignerError::Randomness`] if `fill` fails or returns all zeros.
    pub fn generate<E: core::fmt::Display>(
        fill: impl FnOnce(&mut [u8; 32]) -> Result<(), E>,
    ) -> Result<Self, SignerError> {
        let mut key = Self { seed: [0u8; 32] };
        fill(&mut key.seed).map_err(|e| SignerError::Randomness {
            message: e.to_string(),
        })?;
        if key.seed == [0u8; 32] {
            return Err(SignerError::Randomness {
                message: "source returned all-zero bytes".into(),
            });
        }
        Ok(key)
    }

    /// The 32-byte ed25519 public key (compressed Edwards point, RFC 8032 §5.1.5); the
    /// Solana address is its base58 form ([`solana_address`]). Costs a scalar
    /// multiplication: call it at key creation, not per signature.
    pub fn public_key(&self) -> Vec<u8> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&self.seed);
        signing.verifying_key().to_bytes().to_vec()
    }

    /// The seed, for the signing code of this crate only.
    pub(crate) fn seed(&self) -> &[u8; 32] {
        &self.seed
    }
}

impl core::fmt::Debug for Ed25519Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ed25519Secret").finish_non_exhaustive()
    }
}

pub use crate::address::{eip55, evm_address, solana_address};

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-known test key 0x4646…46 (EIP-155's example); its address is published in
    /// the EIP (signer of the example transaction).
    const EIP155_KEY: [u8; 32] = [0x46; 32];

    #[test]
    fn secp256k1_address_of_eip155_key() {
        let key = Secp256k1Secret::from_bytes(&EIP155_KEY).unwrap();
        let pubkey = key.public_key();
        assert_eq!(pubkey.len(), 33);
        let addr = evm_address(&pubkey).unwrap();
        assert_eq!(eip55(&addr), "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F");
    }

    #[test]
    fn rejects_secp256k1_zero_order_and_wrong_length() {
        assert!(Secp256k1Secret::from_bytes(&[0u8; 32]).is_err());
        // n, the group order, and n + 1 (both ≥ n)
        let n = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
            .unwrap();
        assert!(Secp256k1Secret::from_bytes(&n).is_err());
        let mut n1 = n.clone();
        n1[31] += 1;
        assert!(Secp256k1Secret::from_bytes(&n1).is_err());
        let mut n_minus_1 = n;
        n_minus_1[31] -= 1;
        assert!(Secp256k1Secret::from_bytes(&n_minus_1).is_ok());
        assert!(Secp256k1Secret::from_bytes(&[1u8; 31]).is_err());
        assert!(Secp256k1Secret::from_bytes(&[1u8; 33]).is_err());
    }

    #[test]
    fn generate_uses_callers_randomness() {
        let key = Secp256k1Secret::generate(|b: &mut [u8; 32]| {
            b.copy_from_slice(&EIP155_KEY);
            Ok::<(), String>(())
        })
        .unwrap();
        let expected = Secp256k1Secret::from_bytes(&EIP155_KEY).unwrap();
        assert_eq!(key.public_key(), expected.public_key());

        let ed = Ed25519Secret::generate(|b: &mut [u8; 32]| {
            b.fill(7);
            Ok::<(), String>(())
        })
        .unwrap();
        assert_eq!(ed.seed(), &[7u8; 32]);
    }

    #[test]
    fn rejects_generate_from_broken_source() {
        let zeros = Secp256k1Secret::generate(|b: &mut [u8; 32]| {
            b.fill(0);
            Ok::<(), String>(())
        });
        assert!(matches!(zeros, Err(SignerError::Randomness { .. })));
        let failing = Secp256k1Secret::generate(|_: &mut [u8; 32]| Err("nsm down"));
        assert_eq!(
            failing.unwrap_err().to_string(),
            "randomness source failed: nsm down"
        );
        let ed_zero = Ed25519Secret::generate(|b: &mut [u8; 32]| {
            b.fill(0);
            Ok::<(), String>(())
        });
        assert!(matches!(ed_zero, Err(SignerError::Randomness { .. })));
        assert!(Ed25519Secret::generate(|_: &mut [u8; 32]| Err("nsm down")).is_err());
    }

    #[test]
    fn ed25519_public_key_rfc8032_test1() {
        // RFC 8032 §7.1, TEST 1.
        let sk = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let key = Ed25519Secret::from_bytes(&sk).unwrap();
        assert_eq!(
            hex::encode(key.public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn rejects_ed25519_wrong_length() {
        assert!(Ed25519Secret::from_bytes(&[1u8; 31]).is_err());
        assert!(Ed25519Secret::from_bytes(&[1u8; 64]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = Secp256k1Secret::from_bytes(&EIP155_KEY).unwrap();
        let ed = Ed25519Secret::from_bytes(&EIP155_KEY).unwrap();
        let shown = format!("{key:?} {ed:?}");
        assert_eq!(shown, "Secp256k1Secret { .. } Ed25519Secret { .. }");
        assert!(!shown.contains("46"));
    }

    #[test]
    fn rejects_evm_address_of_bad_point() {
        assert!(evm_address(&[2u8; 32]).is_err());
        // x = 5 is not the x coordinate of a secp256k1 point (y² = 132 has no root).
        let mut bad = [0u8; 33];
        bad[0] = 2;
        bad[32] = 5;
        assert!(evm_address(&bad).is_err());
        let mut uncompressed_prefix = [1u8; 33];
        uncompressed_prefix[0] = 4;
        assert!(evm_address(&uncompressed_prefix).is_err());
    }

    #[test]
    fn solana_address_is_base58() {
        assert_eq!(
            solana_address(&[0u8; 32]),
            "11111111111111111111111111111111"
        );
    }
}
