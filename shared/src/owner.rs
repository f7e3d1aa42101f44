//! Key owners and their authorizations (issue 7, DESIGN §4): the one place that says
//! what an owner is, what exact bytes an owner signs, and how that signature is
//! checked. The enclave verifies with it, the parent shows proposals with it, and
//! `ekms owner sign` signs with the same message builder.
//!
//! An owner is sealed into the key record as text ([`Owner::record_text`]):
//! `eip191:0x<40 lowercase hex>` or `ed25519:<base58 of 32 bytes>`. For a key with an
//! owner, a policy change or a re-enable needs the owner's signature over this
//! canonical UTF-8 message (LF line ends, no trailing newline):
//!
//! ```text
//! enclave-kms owner authorization
//! action: set_policy
//! key_id: <key_id>
//! version: <new policy version>
//! policy_sha256: <lowercase hex SHA-256 of the canonical policy JSON>
//! expires_at: <RFC 3339 UTC, seconds precision, e.g. 2026-12-02T12:00:00Z>
//! ```
//!
//! An `eip191` owner signs it with EIP-191 version 0x45 (`personal_sign`:
//! `keccak256("\x19Ethereum Signed Message:\n" || decimal length || message)`, a 65-byte
//! `r || s || v` signature, `v` ∈ {0, 1, 27, 28}, low `s` per EIP-2) and the signer's
//! address is recovered; an `ed25519` owner signs the same bytes (RFC 8032,
//! `verify_strict`).

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sha3::Keccak256;

/// Longest owner text accepted in a record, in bytes (the longest valid form is 52).
pub const MAX_OWNER_TEXT_LEN: usize = 64;
/// First line of every authorization message.
pub const AUTHORIZATION_HEADER: &str = "enclave-kms owner authorization";
/// Latest `expires_at` accepted: 9999-12-31T23:59:59Z, so the RFC 3339 form always has
/// a four-digit year.
pub const MAX_EXPIRES_AT: u64 = 253_402_300_799;

/// A key's owner: the party whose signature authorizes loosening its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// An Ethereum account: signs with EIP-191 `personal_sign`.
    Eip191 {
        /// The 20-byte address.
        address: [u8; 20],
    },
    /// An ed25519 key (e.g. a Solana wallet): signs the message bytes.
    Ed25519 {
        /// The 32-byte public key.
        public_key: [u8; 32],
    },
}

/// Why an owner does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid owner: {0}")]
pub struct OwnerError(pub &'static str);

/// The API's JSON form: `{"type":"eip191","address":"0x…"}` or
/// `{"type":"ed25519","public_key":"<base58>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OwnerJson {
    /// An Ethereum address, `0x` + 40 hex digits (any case; an EIP-55 mixed-case address
    /// must have a valid checksum).
    Eip191 {
        /// The address.
        address: String,
    },
    /// A base58 ed25519 public key (32 bytes).
    Ed25519 {
        /// The public key.
        public_key: String,
    },
}

impl Owner {
    /// Parses the API's JSON form.
    ///
    /// # Errors
    /// [`OwnerError`] for a malformed address (or a mixed-case address whose EIP-55
    /// checksum is wrong) or a public key that is not 32 bytes of base58 or not a valid
    /// ed25519 point.
    pub fn from_json(json: &OwnerJson) -> Result<Self, OwnerError> {
        match json {
            OwnerJson::Eip191 { address } => parse_eth_address(address),
            OwnerJson::Ed25519 { public_key } => parse_ed25519(public_key),
        }
    }

    /// The JSON form, with the address in EIP-55 mixed case.
    pub fn to_json(&self) -> OwnerJson {
        match self {
            Owner::Eip191 { address } => OwnerJson::Eip191 {
                address: eip55(address),
            },
            Owner::Ed25519 { public_key } => OwnerJson::Ed25519 {
                public_key: bs58::encode(public_key).into_string(),
            },
        }
    }

    /// The text sealed in the key record: `eip191:0x<lowercase hex>` or
    /// `ed25519:<base58>`.
    pub fn record_text(&self) -> String {
        match self {
            Owner::Eip191 { address } => format!("eip191:0x{}", hex::encode(address)),
            Owner::Ed25519 { public_key } => {
                format!("ed25519:{}", bs58::encode(public_key).into_string())
            }
        }
    }

    /// Parses [`Owner::record_text`]'s form (exactly: lowercase hex, canonical base58).
    ///
    /// # Errors
    /// [`OwnerError`] for anything else.
    pub fn from_record_text(text: &str) -> Result<Self, OwnerError> {
        if text.len() > MAX_OWNER_TEXT_LEN {
            return Err(OwnerError("owner text too long"));
        }
        let owner = if let Some(rest) = text.strip_prefix("eip191:") {
            parse_eth_address(rest)?
        } else if let Some(rest) = text.strip_prefix("ed25519:") {
            parse_ed25519(rest)?
        } else {
            return Err(OwnerError("unknown owner type"));
        };
        // One spelling per owner: the sealed text is compared as bytes nowhere, but a
        // second spelling of the same owner would be a second record AAD for it.
        if owner.record_text() != text {
            return Err(OwnerError("owner text is not in its canonical form"));
        }
        Ok(owner)
    }

    /// Whether `signature` is this owner's signature over `message` (see the module
    /// docs for each type's scheme). Never panics on hostile input.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Owner::Eip191 { address } => {
                recover_eip191(message, signature).is_some_and(|a| a == *address)
            }
            Owner::Ed25519 { public_key } => {
                let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
                    return false;
                };
                let Ok(sig) = <[u8; 64]>::try_from(signature) else {
                    return false;
                };
                key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
                    .is_ok()
            }
        }
    }
}

fn parse_eth_address(text: &str) -> Result<Owner, OwnerError> {
    let digits = text
        .strip_prefix("0x")
        .ok_or(OwnerError("an eip191 address starts with 0x"))?;
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OwnerError("an eip191 address is 0x and 40 hex digits"));
    }
    let mut address = [0u8; 20];
    hex::decode_to_slice(digits, &mut address)
        .map_err(|_| OwnerError("an eip191 address is 0x and 40 hex digits"))?;
    let mixed = digits.bytes().any(|b| b.is_ascii_uppercase())
        && digits.bytes().any(|b| b.is_ascii_lowercase());
    if mixed && eip55(&address)[2..] != *digits {
        return Err(OwnerError("the address's EIP-55 checksum is wrong"));
    }
    Ok(Owner::Eip191 { address })
}

fn parse_ed25519(text: &str) -> Result<Owner, OwnerError> {
    if text.is_empty() || text.len() > 44 {
        return Err(OwnerError("an ed25519 public key is 32 bytes of base58"));
    }
    let mut public_key = [0u8; 32];
    match bs58::decode(text).onto(&mut public_key) {
        Ok(32) => {}
        _ => return Err(OwnerError("an ed25519 public key is 32 bytes of base58")),
    }
    if ed25519_dalek::VerifyingKey::from_bytes(&public_key).is_err() {
        return Err(OwnerError("not a valid ed25519 public key"));
    }
    Ok(Owner::Ed25519 { public_key })
}

/// EIP-55 mixed-case checksum form of an address (`0x` + 40 digits).
pub fn eip55(address: &[u8; 20]) -> String {
    let lower = hex::encode(address);
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// The EIP-191 `personal_sign` digest of `message`:
/// `keccak256("\x19Ethereum Signed Message:\n" || len(message) in decimal || message)`.
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(message.len().to_string().as_bytes());
    h.update(message);
    h.finalize().into()
}

/// The address that signed `message` with EIP-191 `personal_sign`, or `None` for a
/// signature that is not 65 bytes, has a high `s` (EIP-2), a `v` outside
/// {0, 1, 27, 28}, or recovers no key.
pub fn recover_eip191(message: &[u8], signature: &[u8]) -> Option<[u8; 20]> {
    let sig: &[u8; 65] = signature.try_into().ok()?;
    let v = match sig[64] {
        0 | 27 => 0u8,
        1 | 28 => 1u8,
        _ => return None,
    };
    let signature = Signature::from_slice(&sig[..64]).ok()?;
    if signature.normalize_s() != signature {
        return None;
    }
    let recid = RecoveryId::from_byte(v)?;
    let key = VerifyingKey::recover_from_prehash(&eip191_hash(message), &signature, recid).ok()?;
    let point = key.to_sec1_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    Some(address)
}

/// What an authorization allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerAction {
    /// Replace the policy (`PUT /v1/keys/{id}/policy`).
    SetPolicy,
    /// Re-enable a disabled key (`POST /v1/keys/{id}/enable`).
    Enable,
}

impl OwnerAction {
    /// The `action:` value of the message.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerAction::SetPolicy => "set_policy",
            OwnerAction::Enable => "enable",
        }
    }
}

/// One authorization: the fields of the message (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// What is authorized.
    pub action: OwnerAction,
    /// The key.
    pub key_id: String,
    /// The policy version the change creates.
    pub version: u64,
    /// SHA-256 of the canonical policy JSON in force after the change.
    pub policy_sha256: [u8; 32],
    /// Last second (Unix time, UTC) at which the authorization is valid, judged by the
    /// enclave's clock; at most [`MAX_EXPIRES_AT`].
    pub expires_at: u64,
}

impl Authorization {
    /// The canonical message (module docs): UTF-8, LF line ends, no trailing newline.
    pub fn message(&self) -> String {
        format!(
            "{AUTHORIZATION_HEADER}\naction: {}\nkey_id: {}\nversion: {}\npolicy_sha256: {}\nexpires_at: {}",
            self.action.as_str(),
            self.key_id,
            self.version,
            hex::encode(self.policy_sha256),
            rfc3339(self.expires_at),
        )
    }
}

/// SHA-256 of a canonical policy JSON, as the message's `policy_sha256` shows it.
pub fn policy_sha256(canonical_policy: &str) -> [u8; 32] {
    Sha256::digest(canonical_policy.as_bytes()).into()
}

/// `secs` (Unix time) as RFC 3339 UTC with seconds precision, `YYYY-MM-DDTHH:MM:SSZ`
/// (proleptic Gregorian; `secs` above [`MAX_EXPIRES_AT`] is clamped to it).
pub fn rfc3339(secs: u64) -> String {
    let secs = secs.min(MAX_EXPIRES_AT);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses exactly the form [`rfc3339`] prints (`YYYY-MM-DDTHH:MM:SSZ`, UTC, no
/// fraction, no offset) back to Unix seconds.
///
/// # Errors
/// `None` for any other text or an impossible date.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if y < 1970 || !(1..=12).contains(&mo) || d == 0 || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d)?;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    (rfc3339(secs) == text).then_some(secs)
}

/// Days since 1970-01-01 → (year, month, day). Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// (year ≥ 1970, month, day) → days since 1970-01-01; `None` for a day past the month's
/// end (the round trip in [`parse_rfc3339`] catches the rest).
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_676_800), "2025-12-02T12:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
        for secs in [0, 59, 86_399, 951_782_400, 1_764_676_800, MAX_EXPIRES_AT] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
    }

    #[test]
    fn rejects_other_rfc3339_forms() {
        for bad in [
            "2026-12-02T12:00:00+00:00",
            "2026-12-02T12:00:00.5Z",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-02 12:00:00Z",
            "1969-12-31T23:59:59Z",
            "+026-12-02T12:00:00Z",
            "2026-12-02T24:00:00Z",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn message_is_the_documented_text() {
        let a = Authorization {
            action: OwnerAction::SetPolicy,
            key_id: "k-1".into(),
            version: 7,
            policy_sha256: [0xab; 32],
            expires_at: 1_764_676_800,
        };
        assert_eq!(
            a.message(),
            format!(
                "enclave-kms owner authorization\naction: set_policy\nkey_id: k-1\nversion: 7\npolicy_sha256: {}\nexpires_at: 2025-12-02T12:00:00Z",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn owner_texts_round_trip_and_have_one_spelling() {
        let eth = Owner::from_json(&OwnerJson::Eip191 {
            address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
        })
        .unwrap();
        assert_eq!(
            eth.record_text(),
            "eip191:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
        );
        assert_eq!(Owner::from_record_text(&eth.record_text()).unwrap(), eth);
        let OwnerJson::Eip191 { address } = eth.to_json() else {
            panic!()
        };
        assert_eq!(address, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let ed = Owner::Ed25519 {
            public_key: key.verifying_key().to_bytes(),
        };
        assert_eq!(Owner::from_record_text(&ed.record_text()).unwrap(), ed);
    }

    #[test]
    fn rejects_malformed_owners() {
        for bad in [
            OwnerJson::Eip191 {
                address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".into(),
            },
            OwnerJson::Eip191 {
                address: "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed".into(),
            },
            OwnerJson::Eip191 {
                address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1bea".into(),
            },
            OwnerJson::Ed25519 {
                public_key: "11111111111111111111111111111111111".into(),
            },
            OwnerJson::Ed25519 {
                public_key: "0OIl".into(),
            },
        ] {
            assert!(Owner::from_json(&bad).is_err(), "{bad:?}");
        }
        for bad in [
            "eip191:0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED",
            "EIP191:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "alice",
            "",
        ] {
            assert!(Owner::from_record_text(bad).is_err(), "{bad}");
        }
    }

    /// A signature made with k256 over the EIP-191 digest recovers its signer and no
    /// one else (interop with eth-account's `sign_message` is in the e2e suite).
    #[test]
    fn recovers_a_personal_sign_signature() {
        let key = k256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap();
        let (s, recid) = key.sign_prehash_recoverable(&eip191_hash(b"hello"));
        let mut mine = s.to_bytes().to_vec();
        mine.push(27 + recid.to_byte());
        let point = key.verifying_key().to_sec1_point(false);
        let expect: [u8; 20] = Keccak256::digest(&point.as_bytes()[1..])[12..]
            .try_into()
            .unwrap();
        assert_eq!(recover_eip191(b"hello", &mine), Some(expect));
        assert_ne!(recover_eip191(b"hellO", &mine), Some(expect));
        let owner = Owner::Eip191 { address: expect };
        assert!(owner.verifies(b"hello", &mine));
        assert!(!owner.verifies(b"hello!", &mine));
    }

    #[test]
    fn rejects_malformed_eip191_signatures() {
        let key = k256::ecdsa::SigningKey::from_slice(&[0x22; 32]).unwrap();
        let (s, recid) = key.sign_prehash_recoverable(&eip191_hash(b"m"));
        let mut good = s.to_bytes().to_vec();
        good.push(recid.to_byte());
        assert!(recover_eip191(b"m", &good).is_some());
        let mut bad_v = good.clone();
        bad_v[64] = 29;
        assert_eq!(recover_eip191(b"m", &bad_v), None);
        assert_eq!(recover_eip191(b"m", &good[..64]), None);
        // High s (the other valid ECDSA signature of the same digest) is refused.
        let high = Signature::from_scalars(s.r(), -*s.s()).unwrap();
        let mut hs = high.to_bytes().to_vec();
        hs.push(recid.to_byte() ^ 1);
        assert_eq!(recover_eip191(b"m", &hs), None);
        assert_eq!(recover_eip191(b"m", &[0u8; 65]), None);
    }

    #[test]
    fn ed25519_owner_verifies_only_its_own_signature() {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let owner = Owner::Ed25519 {
            public_key: key.verifying_key().to_bytes(),
        };
        let sig = key.sign(b"msg").to_bytes();
        assert!(owner.verifies(b"msg", &sig));
        assert!(!owner.verifies(b"msG", &sig));
        assert!(!owner.verifies(b"msg", &sig[..63]));
        let other = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
        assert!(!owner.verifies(b"msg", &other.sign(b"msg").to_bytes()));
    }
}
