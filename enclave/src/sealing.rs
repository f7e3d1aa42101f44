//! Sealing of execution keys and MACs of policies (DESIGN.md §3, §4).
//!
//! Everything here is keyed by a keyring's plaintext data key (DEK), which only the
//! attested enclave obtains from KMS. Per key, HKDF-SHA256 (RFC 5869) derives two
//! independent 256-bit keys:
//!
//! ```text
//! wrap key       = HKDF-SHA256(ikm = DEK, salt = record.salt, info = "ekms/v1/wrap/" || key_id)
//! policy-MAC key = HKDF-SHA256(ikm = DEK, salt = record.salt, info = "ekms/v1/policy-mac/" || key_id)
//! ```
//!
//! The execution key's 32 secret bytes are sealed with AES-256-GCM under the wrap key
//! with [`SealedKeyRecord::aad`] (every field but the ciphertext) as AAD, so a record
//! moved to another key id, owner, algorithm, keyring or epoch fails to open. The policy
//! is stored with HMAC-SHA256 over [`SealedPolicy::mac_input`], verified in constant
//! time (`verify_slice`).
//!
//! Rule for maintainers: every failure to open a record or verify a policy is the one
//! error [`SealingError::Invalid`]; the caller must not learn which check failed.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use ekms_shared::{Algorithm, SealedCheckpoint, SealedKeyRecord, SealedPolicy};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Version of the sealed record layout written by [`seal`].
pub const RECORD_VERSION: u8 = 1;

/// Length of an execution key's secret: a secp256k1 scalar or an ed25519 seed.
pub const SECRET_LEN: usize = 32;

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealingError {
    /// The record or policy failed its integrity check (AEAD tag, MAC, key id binding,
    /// version or length). Deliberately carries no detail.
    #[error("sealed record or policy failed its integrity check")]
    Invalid,
    /// The system random source failed.
    #[error("random source failed")]
    Random,
}

/// A keyring's plaintext data key: 32 bytes, zeroized on drop, never printed.
///
/// The bytes live on the heap from the start (written in place by
/// [`DataKey::from_slice`]), so moving a `DataKey` (out of a KMS answer, into an `Arc`,
/// out of a future) moves a pointer and leaves no copy of the key in a dead stack frame.
pub struct DataKey(Box<Zeroizing<[u8; 32]>>);

impl DataKey {
    /// Takes a data key from KMS's answer; `bytes` must be exactly 32 bytes (AES_256).
    ///
    /// # Errors
    /// [`SealingError::Invalid`] for any other length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SealingError> {
        if bytes.len() != 32 {
            return Err(SealingError::Invalid);
        }
        let mut key = Box::new(Zeroizing::new([0u8; 32]));
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// Derives one 32-byte key for `purpose` ("wrap" or "policy-mac") and `key_id`.
    fn derive(&self, salt: &[u8; 32], purpose: &str, key_id: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(salt), self.0.as_slice());
        let mut info = Vec::with_capacity(16 + purpose.len() + key_id.len());
        info.extend_from_slice(b"ekms/v1/");
        info.extend_from_slice(purpose.as_bytes());
        info.push(b'/');
        info.extend_from_slice(key_id.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        // HKDF-SHA256 can expand up to 255 * 32 bytes; 32 always fits.
        if hk.expand(&info, out.as_mut_slice()).is_err() {
            unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
        }
        out
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").finish_non_exhaustive()
    }
}

/// Seals a fresh execution key.
///
/// `secret` is the 32-byte scalar or seed; `salt` and `nonce` must be fresh random bytes
/// (the caller draws them from the NSM). Returns the record the parent stores.
///
/// # Errors
/// [`SealingError::Invalid`] if `secret` is not 32 bytes.
#[allow(clippy::too_many_arguments)]
pub fn seal(
    dek: &DataKey,
    key_id: &str,
    owner: Option<&str>,
    algorithm: Algorithm,
    public_key: &[u8],
    keyring: &str,
    epoch: u32,
    salt: [u8; 32],
    nonce: [u8; 12],
    secret: &[u8],
) -> Result<SealedKeyRecord, SealingError> {
    if secret.len() != SECRET_LEN {
        return Err(SealingError::Invalid);
    }
    let mut record = SealedKeyRecord {
        version: RECORD_VERSION,
        key_id: key_id.to_owned(),
        owner: owner.map(str::to_owned),
        algorithm,
        public_key: public_key.to_vec(),
        keyring: keyring.to_owned(),
        epoch,
        salt,
        nonce,
        ciphertext: Vec::new(),
    };
    let wrap = dek.derive(&record.salt, "wrap", key_id);
    let cipher = Aes256Gcm::new((&*wrap).into());
    let mut buf = Vec::with_capacity(SECRET_LEN + 16);
    buf.extend_from_slice(secret);
    let aad = record.aad();
    if cipher
        .encrypt_in_place(&Nonce::from(record.nonce), &aad, &mut buf)
        .is_err()
    {
        buf.zeroize();
        return Err(SealingError::Invalid);
    }
    record.ciphertext = buf;
    Ok(record)
}

/// Opens a sealed record and returns the 32 secret bytes (zeroized on drop).
///
/// # Errors
/// [`SealingError::Invalid`] when the record's version or lengths are wrong or the
/// AES-GCM tag does not verify under this DEK and this record's fields.
pub fn open(dek: &DataKey, record: &SealedKeyRecord) -> Result<Zeroizing<Vec<u8>>, SealingError> {
    if record.version != RECORD_VERSION || record.ciphertext.len() != SECRET_LEN + 16 {
        return Err(SealingError::Invalid);
    }
    let wrap = dek.derive(&record.salt, "wrap", &record.key_id);
    let cipher = Aes256Gcm::new((&*wrap).into());
    let mut buf = Zeroizing::new(Vec::with_capacity(record.ciphertext.len()));
    buf.extend_from_slice(&record.ciphertext);
    cipher
        .decrypt_in_place(&Nonce::from(record.nonce), &record.aad(), &mut *buf)
        .map_err(|_| SealingError::Invalid)?;
    Ok(buf)
}

/// Computes the MAC of a policy for `record`'s key and returns the sealed policy.
///
/// `policy_json` must already be canonical (the exact bytes that are MAC'd).
pub fn mac_policy(
    dek: &DataKey,
    record: &SealedKeyRecord,
    version: u64,
    policy_json: String,
) -> SealedPolicy {
    let mut policy = SealedPolicy {
        key_id: record.key_id.clone(),
        version,
        policy_json,
        mac: [0; 32],
    };
    let mac = policy_mac(dek, record, &policy).finalize().into_bytes();
    policy.mac.copy_from_slice(&mac);
    policy
}

/// Verifies that `policy` belongs to `record`'s key and that its MAC is intact.
///
/// # Errors
/// [`SealingError::Invalid`] on a key id mismatch or a MAC that does not verify
/// (compared in constant time).
pub fn verify_policy(
    dek: &DataKey,
    record: &SealedKeyRecord,
    policy: &SealedPolicy,
) -> Result<(), SealingError> {
    if policy.key_id != record.key_id {
        return Err(SealingError::Invalid);
    }
    policy_mac(dek, record, policy)
        .verify_slice(&policy.mac)
        .map_err(|_| SealingError::Invalid)
}

/// Fills in `checkpoint.mac`: HMAC-SHA256 over [`SealedCheckpoint::mac_input`] with
/// the checkpoint-MAC key, `HKDF-SHA256(ikm = DEK, salt = none, info =
/// "ekms/v1/checkpoint-mac")` (no key id and no salt: one key per data key; the info
/// differs from every per-key purpose, which all end in `/` || key id).
pub fn mac_checkpoint(dek: &DataKey, checkpoint: &mut SealedCheckpoint) {
    let mac = checkpoint_mac(dek, checkpoint).finalize().into_bytes();
    checkpoint.mac.copy_from_slice(&mac);
}

/// Verifies a checkpoint's MAC (constant time).
///
/// # Errors
/// [`SealingError::Invalid`] when it does not verify.
pub fn verify_checkpoint(dek: &DataKey, checkpoint: &SealedCheckpoint) -> Result<(), SealingError> {
    checkpoint_mac(dek, checkpoint)
        .verify_slice(&checkpoint.mac)
        .map_err(|_| SealingError::Invalid)
}

fn checkpoint_mac(dek: &DataKey, checkpoint: &SealedCheckpoint) -> Hmac<Sha256> {
    let hk = Hkdf::<Sha256>::new(None, dek.0.as_slice());
    let mut key = Zeroizing::new([0u8; 32]);
    if hk
        .expand(b"ekms/v1/checkpoint-mac", key.as_mut_slice())
        .is_err()
    {
        unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
    }
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_slice())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&checkpoint.mac_input());
    mac
}

fn policy_mac(dek: &DataKey, record: &SealedKeyRecord, policy: &SealedPolicy) -> Hmac<Sha256> {
    let key = dek.derive(&record.salt, "policy-mac", &record.key_id);
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_slice())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&policy.mac_input());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dek(b: u8) -> DataKey {
        DataKey::from_slice(&[b; 32]).unwrap()
    }

    fn sealed(d: &DataKey) -> SealedKeyRecord {
        seal(
            d,
            "key-1",
            Some("alice"),
            Algorithm::Secp256k1,
            &[2; 33],
            "default",
            1,
            [3; 32],
            [4; 12],
            &[0x11; 32],
        )
        .unwrap()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let d = dek(1);
        let r = sealed(&d);
        assert_eq!(r.ciphertext.len(), 48);
        assert_ne!(&r.ciphertext[..32], &[0x11; 32]);
        assert_eq!(open(&d, &r).unwrap().as_slice(), &[0x11; 32]);
    }

    #[test]
    fn rejects_open_under_another_data_key() {
        let r = sealed(&dek(1));
        assert_eq!(open(&dek(2), &r).unwrap_err(), SealingError::Invalid);
    }

    #[test]
    fn rejects_record_with_any_field_changed() {
        let d = dek(1);
        let r = sealed(&d);
        let mut variants = Vec::new();
        let mut v = r.clone();
        v.key_id = "key-2".into();
        variants.push(v);
        let mut v = r.clone();
        v.owner = Some("mallory".into());
        variants.push(v);
        let mut v = r.clone();
        v.owner = None;
        variants.push(v);
        let mut v = r.clone();
        v.algorithm = Algorithm::Ed25519;
        variants.push(v);
        let mut v = r.clone();
        v.public_key[5] ^= 1;
        variants.push(v);
        let mut v = r.clone();
        v.keyring = "other".into();
        variants.push(v);
        let mut v = r.clone();
        v.epoch = 2;
        variants.push(v);
        let mut v = r.clone();
        v.salt[0] ^= 1;
        variants.push(v);
        let mut v = r.clone();
        v.nonce[0] ^= 1;
        variants.push(v);
        let mut v = r.clone();
        v.version = 2;
        variants.push(v);
        for i in 0..r.ciphertext.len() {
            let mut v = r.clone();
            v.ciphertext[i] ^= 0x80;
            variants.push(v);
        }
        let mut v = r.clone();
        v.ciphertext.pop();
        variants.push(v);
        for v in variants {
            assert_eq!(open(&d, &v).unwrap_err(), SealingError::Invalid, "{v:?}");
        }
    }

    #[test]
    fn rejects_records_swapped_between_keys() {
        let d = dek(1);
        let a = sealed(&d);
        let b = seal(
            &d,
            "key-2",
            Some("alice"),
            Algorithm::Secp256k1,
            &[2; 33],
            "default",
            1,
            [3; 32],
            [4; 12],
            &[0x22; 32],
        )
        .unwrap();
        // The parent stores b's sealed bytes under a's key id.
        let mut swapped = a.clone();
        swapped.ciphertext = b.ciphertext.clone();
        assert!(open(&d, &swapped).is_err());
    }

    #[test]
    fn rejects_secret_of_wrong_length() {
        let d = dek(1);
        let e = seal(
            &d,
            "k",
            None,
            Algorithm::Ed25519,
            &[1; 32],
            "default",
            1,
            [0; 32],
            [0; 12],
            &[1; 31],
        );
        assert_eq!(e.unwrap_err(), SealingError::Invalid);
        assert!(DataKey::from_slice(&[0; 16]).is_err());
    }

    #[test]
    fn policy_mac_verifies() {
        let d = dek(1);
        let r = sealed(&d);
        let p = mac_policy(&d, &r, 1, r#"{"enabled":true}"#.into());
        assert_eq!(p.key_id, "key-1");
        verify_policy(&d, &r, &p).unwrap();
    }

    #[test]
    fn rejects_policy_changed_without_the_enclave() {
        let d = dek(1);
        let r = sealed(&d);
        let p = mac_policy(&d, &r, 3, r#"{"enabled":false}"#.into());
        let mut changed = p.clone();
        changed.policy_json = r#"{"enabled":true}"#.into();
        assert!(verify_policy(&d, &r, &changed).is_err());
        let mut rolled_back = p.clone();
        rolled_back.version = 2;
        assert!(verify_policy(&d, &r, &rolled_back).is_err());
        let mut bad_mac = p.clone();
        bad_mac.mac[31] ^= 1;
        assert!(verify_policy(&d, &r, &bad_mac).is_err());
        assert!(verify_policy(&dek(2), &r, &p).is_err());
    }

    #[test]
    fn rejects_policy_of_another_key() {
        let d = dek(1);
        let a = sealed(&d);
        let mut b = a.clone();
        b.key_id = "key-2".into();
        let pb = mac_policy(&d, &b, 1, "{}".into());
        assert!(verify_policy(&d, &a, &pb).is_err());
    }

    #[test]
    fn data_key_debug_is_redacted() {
        let text = format!("{:?}", dek(0xab));
        assert!(!text.contains("171") && !text.contains("ab"), "{text}");
    }
}
