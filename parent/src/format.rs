//! Text encodings of the application API: `0x` hex (EVM), base64 and base58 (Solana),
//! and the addresses derived from public keys (EIP-55 for secp256k1, base58 for
//! ed25519). Pure functions, no I/O.
//!
//! The parent computes addresses itself from the public key in the sealed record; an
//! address is a convenience for the caller, never an input to a security decision (the
//! enclave evaluates policies on the decoded payload).

use base64::Engine as _;
use ekms_shared::api::FeeCap;
use ekms_shared::{Algorithm, PayloadKind};
use k256::elliptic_curve::sec1::ToSec1Point as _;
use sha3::{Digest as _, Keccak256};

/// Whether a stored policy caps the fees of the key's chain (`GET /v1/keys/{id}`'s
/// `"fee_cap"`): `Some(FeeCap::Set)` when the key's section (`evm` for secp256k1,
/// `solana` for ed25519) states every fee cap a new policy must (`evm.max_fee_wei`;
/// `solana.max_fee_lamports` and `solana.max_lamports_per_transaction`),
/// `Some(FeeCap::None)` when the section lacks one (a policy stored before they were
/// required: its fees are not capped), `None` when there is no such section (that
/// chain is refused anyway).
/// Informational only: the enclave evaluates the MAC'd document, not this.
pub fn fee_cap(algorithm: Algorithm, policy: &serde_json::Value) -> Option<FeeCap> {
    let (section, fields): (&str, &[&str]) = match algorithm {
        Algorithm::Secp256k1 => ("evm", &["max_fee_wei"]),
        Algorithm::Ed25519 => (
            "solana",
            &["max_fee_lamports", "max_lamports_per_transaction"],
        ),
    };
    let section = policy.get(section)?;
    let all_set = fields
        .iter()
        .all(|f| section.get(f).is_some_and(|v| !v.is_null()));
    Some(if all_set { FeeCap::Set } else { FeeCap::None })
}

/// Length of a compressed SEC1 secp256k1 public key in bytes.
const SECP256K1_COMPRESSED_LEN: usize = 33;
/// Length of an ed25519 public key in bytes (RFC 8032 §5.1.5).
const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// Lower-case hex with a `0x` prefix, e.g. `0x02f8…`.
pub fn to_0x_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Decodes hex with a mandatory `0x` (or `0X`) prefix, either case; `None` if the prefix
/// is missing or the rest is not an even number of hex digits.
pub fn from_0x_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    hex::decode(digits).ok()
}

/// Standard base64 with padding (RFC 4648 §4), the encoding of Solana wire transactions
/// in JSON-RPC.
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of a signing request's `payload` for `kind`: `0x` hex for
/// `evm_transaction` and `evm_message`, `0x` + 64 hex digits for `evm_digest`, base64
/// for the Solana kinds, and for `evm_typed_data` the EIP-712 JSON, as an object or as
/// its text (sent on as UTF-8). `None` for anything else or an empty payload.
pub fn payload_bytes(kind: PayloadKind, payload: &serde_json::Value) -> Option<Vec<u8>> {
    use serde_json::Value;
    let bytes = match (kind, payload) {
        (PayloadKind::EvmTypedData, Value::Object(_)) => serde_json::to_vec(payload).ok(),
        (PayloadKind::EvmTypedData, Value::String(text)) => Some(text.as_bytes().to_vec()),
        (PayloadKind::EvmTransaction | PayloadKind::EvmMessage, Value::String(t)) => from_0x_hex(t),
        (PayloadKind::EvmDigest, Value::String(t)) => from_0x_hex(t).filter(|b| b.len() == 32),
        (PayloadKind::SolanaTransaction | PayloadKind::SolanaOffchainMessage, Value::String(t)) => {
            from_base64(t)
        }
        _ => None,
    };
    bytes.filter(|b| !b.is_empty())
}

/// What [`payload_bytes`] takes for `kind`, for the error message.
pub fn payload_shape(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::EvmTransaction | PayloadKind::EvmMessage => {
            "the payload must be non-empty 0x-prefixed hex"
        }
        PayloadKind::EvmDigest => "the payload must be 0x and 64 hex digits (32 bytes)",
        PayloadKind::EvmTypedData => {
            "the payload must be the EIP-712 JSON ({types, primaryType, domain, message}), as an object or a string"
        }
        PayloadKind::SolanaTransaction | PayloadKind::SolanaOffchainMessage => {
            "the payload must be non-empty base64"
        }
    }
}

/// Decodes standard padded base64 (RFC 4648 §4); `None` on any other alphabet or
/// padding.
pub fn from_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Bitcoin-alphabet base58, as Solana writes public keys and signatures.
pub fn to_base58(bytes: &[u8]) -> String {
    bs58::encode(bytes).into_string()
}

/// The public key as the API shows it: `0x` hex of the 33-byte compressed SEC1 point
/// for secp256k1, base58 of the 32 bytes for ed25519.
pub fn public_key_text(algorithm: Algorithm, public_key: &[u8]) -> String {
    match algorithm {
        Algorithm::Secp256k1 => to_0x_hex(public_key),
        Algorithm::Ed25519 => to_base58(public_key),
    }
}

/// The address of a public key: for secp256k1 (33-byte compressed SEC1) the EIP-55
/// checksummed Ethereum address, i.e. the last 20 bytes of keccak256 of the 64-byte
/// uncompressed point without its `0x04` tag (Ethereum yellow paper, appendix F); for
/// ed25519 (32 bytes) the base58 public key, which is the Solana address.
///
/// `None` if the key has the wrong length or is not a point on the curve.
pub fn address(algorithm: Algorithm, public_key: &[u8]) -> Option<String> {
    match algorithm {
        Algorithm::Secp256k1 => {
            // Compressed points only (tag 0x02 or 0x03): SEC1 also parses a 33-byte
            // "compact" (0x05, x only) encoding, which the enclave never produces.
            if public_key.len() != SECP256K1_COMPRESSED_LEN
                || !matches!(public_key.first(), Some(0x02 | 0x03))
            {
                return None;
            }
            let key = k256::PublicKey::from_sec1_bytes(public_key).ok()?;
            let point = key.to_sec1_point(false);
            // Uncompressed SEC1: 0x04 || X (32) || Y (32).
            let xy = point.as_bytes().get(1..)?;
            let hash = Keccak256::digest(xy);
            let raw = hash.get(12..)?;
            Some(eip55(raw))
        }
        Algorithm::Ed25519 => {
            (public_key.len() == ED25519_PUBLIC_KEY_LEN).then(|| to_base58(public_key))
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds, e.g. `2025-01-02T03:04:05.678Z`, from
/// milliseconds since the Unix epoch (out-of-range values print as the epoch).
pub fn timestamp_text(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// EIP-55 mixed-case checksum encoding of a 20-byte address: a hex letter is upper case
/// when the matching nibble of keccak256(lower-case hex) is ≥ 8.
fn eip55(raw: &[u8]) -> String {
    let lower = hex::encode(raw);
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(2 + lower.len());
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let byte = hash.get(i / 2).copied().unwrap_or(0);
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        if c.is_ascii_alphabetic() && nibble >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// secp256k1 generator G = 1·G, compressed (SEC 2 §2.4.1); its address is the
    /// well-known one of private key 1.
    const G_COMPRESSED: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn secp256k1_address_of_private_key_one() {
        let pk = hex::decode(G_COMPRESSED).unwrap();
        assert_eq!(
            address(Algorithm::Secp256k1, &pk).unwrap(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn eip55_spec_vectors() {
        // Test vectors from EIP-55.
        for want in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let raw = from_0x_hex(&want.to_lowercase()).unwrap();
            assert_eq!(eip55(&raw), want);
        }
    }

    #[test]
    fn rejects_invalid_secp256k1_public_keys() {
        let mut pk = hex::decode(G_COMPRESSED).unwrap();
        assert!(address(Algorithm::Secp256k1, &pk[..32]).is_none());
        for tag in [0x00, 0x04, 0x05, 0x08] {
            pk[0] = tag; // not a compressed-point tag
            assert!(address(Algorithm::Secp256k1, &pk).is_none(), "{tag}");
        }
        // x = 5 is not on secp256k1 (5³ + 7 = 132 is not a square mod p).
        let mut off = vec![0x02];
        off.extend_from_slice(&[0; 31]);
        off.push(5);
        assert!(address(Algorithm::Secp256k1, &off).is_none());
    }

    #[test]
    fn ed25519_address_is_base58_of_the_key() {
        // Solana's system program id is 32 zero bytes.
        assert_eq!(
            address(Algorithm::Ed25519, &[0; 32]).unwrap(),
            "11111111111111111111111111111111"
        );
        assert_eq!(public_key_text(Algorithm::Ed25519, &[0; 32]).len(), 32);
    }

    #[test]
    fn rejects_ed25519_key_of_wrong_length() {
        assert!(address(Algorithm::Ed25519, &[0; 31]).is_none());
        assert!(address(Algorithm::Ed25519, &[0; 33]).is_none());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(
            timestamp_text(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(timestamp_text(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rejects_out_of_range_timestamps_as_epoch() {
        assert_eq!(timestamp_text(i64::MAX), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_0x_hex(&[0x02, 0xf8]), "0x02f8");
        assert_eq!(from_0x_hex("0x02F8").unwrap(), vec![0x02, 0xf8]);
        assert_eq!(from_0x_hex("0x").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn rejects_hex_without_prefix_or_odd() {
        assert!(from_0x_hex("02f8").is_none());
        assert!(from_0x_hex("0x2f8").is_none());
        assert!(from_0x_hex("0xzz").is_none());
    }

    #[test]
    fn base64_round_trip_and_rejects_garbage() {
        assert_eq!(from_base64(&to_base64(b"solana")).unwrap(), b"solana");
        assert!(from_base64("not base64!").is_none());
        assert!(from_base64("c29sYW5h=").is_none());
    }

    #[test]
    fn fee_cap_is_set_only_when_the_keys_section_states_every_cap() {
        use serde_json::json;
        let evm = Algorithm::Secp256k1;
        let sol = Algorithm::Ed25519;
        assert_eq!(fee_cap(evm, &json!({"enabled": true})), None);
        assert_eq!(fee_cap(evm, &json!({"enabled": true, "solana": {}})), None);
        assert_eq!(
            fee_cap(evm, &json!({"enabled": true, "evm": {}})),
            Some(FeeCap::None)
        );
        assert_eq!(
            fee_cap(evm, &json!({"enabled": true, "evm": {"max_fee_wei": "0"}})),
            Some(FeeCap::Set)
        );
        assert_eq!(
            fee_cap(
                sol,
                &json!({"enabled": true, "solana": {"max_fee_lamports": 1}})
            ),
            Some(FeeCap::None)
        );
        assert_eq!(
            fee_cap(
                sol,
                &json!({"enabled": true, "solana": {"max_fee_lamports": 1, "max_lamports_per_transaction": 2}})
            ),
            Some(FeeCap::Set)
        );
    }

    #[test]
    fn rejects_null_fee_caps_as_set() {
        use serde_json::json;
        assert_eq!(
            fee_cap(
                Algorithm::Secp256k1,
                &json!({"enabled": true, "evm": {"max_fee_wei": null}})
            ),
            Some(FeeCap::None)
        );
    }
}
