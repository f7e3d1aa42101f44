//! The emulator's ciphertext blob format and per-key material.
//!
//! A blob is this emulator's own (real KMS blobs are opaque too):
//!
//! ```text
//! version (1 byte, = 1) || key id (16 bytes, UUID) || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16)
//! ```
//!
//! The GCM AAD is the 29-byte header followed by the canonical encoding of the
//! encryption context ([`context_aad`]), so a blob moved to another key id, or opened
//! with another context, fails authentication. Nonces are random (96 bits): fine for
//! a simulator's volumes.

use std::collections::BTreeMap;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use uuid::Uuid;
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// The only blob version this emulator writes and reads.
pub const BLOB_VERSION: u8 = 1;
/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Header length: version, key id, nonce.
pub const HEADER_LEN: usize = 1 + 16 + NONCE_LEN;
/// Largest plaintext KMS `Encrypt` takes, in bytes.
pub const MAX_PLAINTEXT_LEN: usize = 4096;
/// Largest `CiphertextBlob` KMS accepts, in bytes.
pub const MAX_BLOB_LEN: usize = 6144;
/// Length of a key's material: 256 bits.
pub const KEY_MATERIAL_LEN: usize = 32;

/// An encryption context: string → string, sorted (KMS `EncryptionContext`).
pub type EncryptionContext = BTreeMap<String, String>;

/// Why a blob could not be made or opened. Every authentication failure looks the
/// same (no oracle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The blob is too short, too long or of an unknown version.
    #[error("the ciphertext blob is malformed")]
    Malformed,
    /// The tag did not verify: wrong key, tampered blob or different context.
    #[error("the ciphertext or its encryption context is invalid")]
    Authentication,
    /// The plaintext is longer than [`MAX_PLAINTEXT_LEN`].
    #[error("the plaintext is longer than 4096 bytes")]
    PlaintextTooLong,
    /// The operating system's random source failed.
    #[error("no randomness available")]
    Random,
}

/// 256-bit AES key material of one KMS key. Zeroized on drop; never printed.
#[derive(ZeroizeOnDrop)]
pub struct KeyMaterial([u8; KEY_MATERIAL_LEN]);

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial").finish_non_exhaustive()
    }
}

impl KeyMaterial {
    /// Fresh material from the operating system's random source.
    ///
    /// # Errors
    /// [`BlobError::Random`] when the random source fails.
    pub fn generate() -> Result<Self, BlobError> {
        let mut bytes = [0u8; KEY_MATERIAL_LEN];
        getrandom::fill(&mut bytes).map_err(|_| BlobError::Random)?;
        Ok(Self(bytes))
    }

    /// Material from its 32 bytes (as stored in the state directory).
    pub fn from_bytes(bytes: [u8; KEY_MATERIAL_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes (for persisting them).
    pub fn as_bytes(&self) -> &[u8; KEY_MATERIAL_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        // `KeyInit::new` takes a fixed-size array of exactly the AES-256 key length.
        Aes256Gcm::new(&self.0.into())
    }
}

/// Canonical encoding of an encryption context, bound as AAD: the pair count, then
/// each pair in byte order of its key, every field as a 4-byte big-endian length and
/// its UTF-8 bytes. Injective: no two different contexts encode the same.
pub fn context_aad(context: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    push_len(&mut out, context.len());
    for (key, value) in context {
        push_len(&mut out, key.len());
        out.extend_from_slice(key.as_bytes());
        push_len(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Every length here is bounded by the request body limit, far below u32::MAX.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

/// Encrypts `plaintext` (≤ [`MAX_PLAINTEXT_LEN`] bytes) under key `key_id` with
/// `material`, binding `context`. Returns the blob.
///
/// # Errors
/// [`BlobError::PlaintextTooLong`], [`BlobError::Random`].
pub fn seal(
    key_id: Uuid,
    material: &KeyMaterial,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, BlobError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(BlobError::PlaintextTooLong);
    }
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| BlobError::Random)?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.push(BLOB_VERSION);
    header.extend_from_slice(key_id.as_bytes());
    header.extend_from_slice(&nonce);
    let aad = [header.as_slice(), &context_aad(context)].concat();

    let mut buffer = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    buffer.extend_from_slice(plaintext);
    let tag = material
        .cipher()
        .encrypt_inout_detached(&Nonce::from(nonce), &aad, buffer.as_mut_slice().into())
        .map_err(|_| BlobError::PlaintextTooLong)?;
    let mut blob = header;
    blob.extend_from_slice(&buffer);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// The key id a blob names, read from its header without decrypting.
///
/// # Errors
/// [`BlobError::Malformed`] when the blob is too short, too long or of another version.
pub fn key_id(blob: &[u8]) -> Result<Uuid, BlobError> {
    if blob.len() < HEADER_LEN + TAG_LEN || blob.len() > MAX_BLOB_LEN {
        return Err(BlobError::Malformed);
    }
    if blob[0] != BLOB_VERSION {
        return Err(BlobError::Malformed);
    }
    let id: [u8; 16] = blob[1..17].try_into().map_err(|_| BlobError::Malformed)?;
    Ok(Uuid::from_bytes(id))
}

/// Decrypts `blob` with `material` under `context`; the plaintext is zeroized on drop.
///
/// # Errors
/// [`BlobError::Malformed`] for a bad header, [`BlobError::Authentication`] for a
/// wrong key, a tampered blob or a different context.
pub fn open(
    material: &KeyMaterial,
    context: &EncryptionContext,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BlobError> {
    key_id(blob)?;
    let (header, rest) = blob.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; NONCE_LEN] = header[17..].try_into().map_err(|_| BlobError::Malformed)?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| BlobError::Malformed)?;
    let aad = [header, &context_aad(context)].concat();
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    material
        .cipher()
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            &aad,
            plaintext.as_mut_slice().into(),
            &tag.into(),
        )
        .map_err(|_| BlobError::Authentication)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trips_with_same_context() {
        let material = KeyMaterial::generate().unwrap();
        let id = Uuid::new_v4();
        let ctx = context(&[("keyring", "main"), ("epoch", "3")]);
        let blob = seal(id, &material, &ctx, b"secret data key").unwrap();
        assert_eq!(blob.len(), HEADER_LEN + 15 + TAG_LEN);
        assert_eq!(key_id(&blob).unwrap(), id);
        assert_eq!(
            &open(&material, &ctx, &blob).unwrap()[..],
            b"secret data key"
        );
        // Two seals of the same plaintext differ (fresh nonce).
        assert_ne!(blob, seal(id, &material, &ctx, b"secret data key").unwrap());
    }

    #[test]
    fn rejects_wrong_context() {
        let material = KeyMaterial::generate().unwrap();
        let ctx = context(&[("keyring", "main"), ("epoch", "3")]);
        let blob = seal(Uuid::new_v4(), &material, &ctx, b"k").unwrap();
        for other in [
            context(&[("keyring", "main"), ("epoch", "4")]),
            context(&[("keyring", "main")]),
            context(&[]),
            context(&[("keyring", "main"), ("epoch", "3"), ("x", "")]),
        ] {
            assert_eq!(
                open(&material, &other, &blob),
                Err(BlobError::Authentication)
            );
        }
    }

    #[test]
    fn rejects_tampered_blob_and_wrong_key() {
        let material = KeyMaterial::generate().unwrap();
        let ctx = context(&[("a", "b")]);
        let blob = seal(Uuid::new_v4(), &material, &ctx, b"payload").unwrap();
        for i in 1..blob.len() {
            let mut tampered = blob.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                open(&material, &ctx, &tampered),
                Err(BlobError::Authentication),
                "byte {i}"
            );
        }
        let mut bad_version = blob.clone();
        bad_version[0] = 2;
        assert_eq!(
            open(&material, &ctx, &bad_version),
            Err(BlobError::Malformed)
        );
        assert_eq!(
            open(&material, &ctx, &blob[..20]),
            Err(BlobError::Malformed)
        );
        let other = KeyMaterial::generate().unwrap();
        assert_eq!(open(&other, &ctx, &blob), Err(BlobError::Authentication));
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let a = context(&[("ab", "c")]);
        let b = context(&[("a", "bc")]);
        assert_ne!(context_aad(&a), context_aad(&b));
        assert_eq!(context_aad(&context(&[])), vec![0, 0, 0, 0]);
    }

    #[test]
    fn rejects_oversized_plaintext() {
        let material = KeyMaterial::generate().unwrap();
        let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert_eq!(
            seal(Uuid::new_v4(), &material, &context(&[]), &big),
            Err(BlobError::PlaintextTooLong)
        );
        assert!(seal(Uuid::new_v4(), &material, &context(&[]), &big[1..]).is_ok());
    }
}
