//! Addresses: the one owner of their spellings (STYLE rule 16). EVM addresses are 20
//! bytes, written `0x` + 40 hex digits and displayed in EIP-55 checksum form; Solana
//! addresses (public keys, program ids, mints) are 32 bytes in base58 (Bitcoin
//! alphabet). Every parser here is strict: one spelling per value, or a checksum.

use alloy_primitives::Address;
use k256::elliptic_curve::sec1::ToSec1Point;
use k256::{PublicKey, Secp256k1};

use crate::SignerError;

/// The Ethereum address of a secp256k1 public key: the last 20 bytes of
/// `keccak256(x || y)` of the uncompressed point (Ethereum Yellow Paper, eq. 284).
///
/// # Errors
/// [`SignerError::InvalidKey`] if `pubkey33` is not a 33-byte compressed SEC1 point on
/// the curve.
pub fn evm_address(pubkey33: &[u8]) -> Result<[u8; 20], SignerError> {
    if pubkey33.len() != 33 {
        return Err(SignerError::InvalidKey {
            message: "secp256k1 public key must be 33 bytes (compressed SEC1)",
        });
    }
    let key = PublicKey::from_sec1_bytes(pubkey33).map_err(|_| SignerError::InvalidKey {
        message: "secp256k1 public key is not a valid curve point",
    })?;
    let uncompressed = ToSec1Point::<Secp256k1>::to_sec1_point(&key, false);
    // 0x04 || x || y: the address hashes x || y.
    let xy = uncompressed
        .as_bytes()
        .get(1..)
        .ok_or(SignerError::InvalidKey {
            message: "secp256k1 public key has no coordinates",
        })?;
    Ok(Address::from_raw_public_key(xy).into_array())
}

/// The EIP-55 mixed-case checksum form of an address, `0x`-prefixed (42 characters).
pub fn eip55(addr: &[u8; 20]) -> String {
    Address::from(*addr).to_checksum(None)
}

/// The Solana address of an ed25519 public key: its base58 form (Bitcoin alphabet).
pub fn solana_address(pubkey32: &[u8; 32]) -> String {
    bs58::encode(pubkey32).into_string()
}

/// Parses an EVM address: `0x` + 40 hex digits, all lowercase, all uppercase, or
/// mixed case carrying a valid EIP-55 checksum. `None` for anything else.
pub fn parse_evm_address(s: &str) -> Option<[u8; 20]> {
    let digits = s.strip_prefix("0x")?;
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        return Address::parse_checksummed(s, None)
            .ok()
            .map(Address::into_array);
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// The canonical policy spelling of an EVM address: `0x` + lowercase hex.
pub fn evm_lower_hex(addr: &[u8; 20]) -> String {
    format!("0x{}", hex::encode(addr))
}

/// Parses a Solana address: base58 of exactly 32 bytes in its canonical spelling (no
/// leading-zero variants). `None` for anything else.
pub fn parse_solana_address(s: &str) -> Option<[u8; 32]> {
    if s.len() > 44 {
        return None;
    }
    let mut out = [0u8; 32];
    let n = bs58::decode(s).onto(&mut out[..]).ok()?;
    (n == 32 && bs58::encode(out).into_string() == s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evm_addresses_parse_in_three_spellings_only() {
        let lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
        let checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let a = parse_evm_address(lower).unwrap();
        assert_eq!(parse_evm_address(checksummed), Some(a));
        assert_eq!(
            parse_evm_address(&lower.to_uppercase().replace("0X", "0x")),
            Some(a)
        );
        assert_eq!(eip55(&a), checksummed);
        assert_eq!(evm_lower_hex(&a), lower);
    }

    #[test]
    fn rejects_bad_evm_addresses() {
        for s in [
            "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg",
        ] {
            assert_eq!(parse_evm_address(s), None, "{s}");
        }
    }

    #[test]
    fn solana_addresses_are_canonical_base58_of_32_bytes() {
        let s = solana_address(&[0; 32]);
        assert_eq!(s, "11111111111111111111111111111111");
        assert_eq!(parse_solana_address(&s), Some([0; 32]));
        for bad in ["1111", "0OIl", "111111111111111111111111111111111"] {
            assert_eq!(parse_solana_address(bad), None, "{bad}");
        }
    }
}
