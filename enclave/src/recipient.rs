//! The KMS `Recipient` flow, enclave side: the ephemeral RSA-2048 key whose public half
//! goes into the attestation document's `public_key`, and the opening of the
//! `CiphertextForRecipient` that AWS KMS answers with.
//!
//! Spec: AWS KMS Developer Guide, "How AWS Nitro Enclaves uses AWS KMS" / "Cryptographic
//! attestation for AWS Nitro Enclaves": when a `Decrypt`, `GenerateDataKey` or
//! `GenerateRandom` request carries `Recipient = {AttestationDocument,
//! KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256}`, KMS leaves `Plaintext` empty and returns
//! `CiphertextForRecipient`: a CMS `ContentInfo` (RFC 5652 §3) holding `EnvelopedData`
//! (§6.1), encoded in BER with indefinite lengths, with
//! - exactly one `KeyTransRecipientInfo` (§6.2.1, version 2, `rid` = subjectKeyIdentifier)
//!   whose key-encryption algorithm is `id-RSAES-OAEP` with SHA-256 and MGF1-SHA-256
//!   (RFC 4055 §3.1, RFC 8017 appendix A.2.1), wrapping a 32-byte content-encryption key;
//! - content type `id-data`, content encryption `aes256-CBC` (RFC 3565) with a 16-byte
//!   IV, PKCS #7 padding (RFC 5652 §6.3); the encrypted content may be a primitive or a
//!   constructed (chunked) OCTET STRING.
//!
//! Rules for maintainers: everything that reaches [`RecipientKey::open`] is hostile. Sizes
//! are bounded before parsing; every failure is a [`RecipientError`], never a panic; an
//! RSA-OAEP failure and a CBC padding failure are the same error
//! ([`RecipientError::DecryptionFailed`]) so that no padding oracle exists; the CEK and
//! the plaintext live only in `Zeroizing` buffers. The `rid` value is not compared with
//! our key: KMS does not document how it derives the subjectKeyIdentifier (observed
//! answers carry 32 bytes), and a wrong key fails OAEP anyway.

use core::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Decode, EncodingRules, Sequence};
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

/// Largest `CiphertextForRecipient` accepted, in bytes, checked before any parsing.
/// KMS data keys and `GenerateRandom` answers are at most 1 KiB of plaintext.
pub const MAX_ENVELOPE_LEN: usize = 64 * 1024;

/// Largest plaintext returned by [`RecipientKey::open`], in bytes.
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;

/// Size of the recipient RSA modulus, in bits (what KMS expects for `RSAES_OAEP_SHA_256`).
pub const RSA_KEY_BITS: usize = 2048;

/// Length of the AES-256 content-encryption key, in bytes.
const CEK_LEN: usize = 32;
/// Length of the AES-CBC IV and block, in bytes.
const AES_BLOCK_LEN: usize = 16;

/// `id-envelopedData`, RFC 5652 §6.1.
pub(crate) const ID_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// `id-data`, RFC 5652 §4.
pub(crate) const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-RSAES-OAEP`, RFC 8017 appendix A.2.1.
pub(crate) const ID_RSAES_OAEP: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// `id-mgf1`, RFC 8017 appendix B.2.1.
pub(crate) const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// `id-pSpecified`, RFC 8017 appendix A.2.1.
pub(crate) const ID_P_SPECIFIED: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9");
/// `id-sha256`, RFC 5754 §2.2.
pub(crate) const ID_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `id-aes256-CBC`, RFC 3565 §4.1.
pub(crate) const ID_AES256_CBC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// Why a recipient key could not be made or a KMS answer could not be opened.
///
/// Display texts carry no secret. Every cryptographic failure (RSA-OAEP unwrap, CEK
/// length, CBC padding) is [`RecipientError::DecryptionFailed`], so a caller cannot tell
/// them apart (no padding oracle).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecipientError {
    /// The RSA key pair could not be generated or serialised.
    #[error("could not generate the recipient RSA key")]
    KeyGeneration,
    /// A supplied private key is not an acceptable RSA-2048 PKCS #8 key.
    #[error("the recipient private key is not an RSA-2048 PKCS #8 key")]
    InvalidKey,
    /// The envelope is larger than [`MAX_ENVELOPE_LEN`]; it was not parsed.
    #[error("CiphertextForRecipient is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Length received, in bytes.
        len: usize,
        /// Limit, in bytes.
        max: usize,
    },
    /// The envelope is not well-formed BER for CMS `ContentInfo`/`EnvelopedData`.
    #[error("CiphertextForRecipient is not a well-formed CMS structure: {0}")]
    Malformed(#[source] der::Error),
    /// The `ContentInfo` holds something other than `EnvelopedData`.
    #[error("CiphertextForRecipient is not CMS EnvelopedData")]
    NotEnvelopedData,
    /// Well-formed CMS, but not the profile KMS uses (the text names the part).
    #[error("unsupported CiphertextForRecipient: {0}")]
    Unsupported(&'static str),
    /// RSA-OAEP unwrap or AES-CBC decryption/unpadding failed (deliberately not told apart).
    #[error("decryption failed")]
    DecryptionFailed,
    /// The plaintext would exceed [`MAX_PLAINTEXT_LEN`].
    #[error("CiphertextForRecipient plaintext is over the {max}-byte limit")]
    PlaintextTooLarge {
        /// Limit, in bytes.
        max: usize,
    },
    /// A KMS answer to a request that carried a `Recipient` also carried `Plaintext`.
    #[error("KMS answered with Plaintext to a request that carried a Recipient")]
    PlaintextInAnswer,
    /// A KMS answer to a request that carried a `Recipient` had no `CiphertextForRecipient`.
    #[error("KMS answer has no CiphertextForRecipient")]
    MissingCiphertextForRecipient,
}

/// An ephemeral RSA-2048 key pair for the KMS `Recipient` parameter.
///
/// The public half ([`RecipientKey::public_key_der`]) goes into the attestation
/// document's `public_key` field; KMS encrypts to it. The private half never leaves this
/// value: no `Clone`, no serialisation, and `Debug` is redacted.
pub struct RecipientKey {
    key: OaepPrivateDecryptingKey,
    public_key_der: Vec<u8>,
}

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipientKey").finish_non_exhaustive()
    }
}

impl RecipientKey {
    /// Generates a fresh RSA-2048 key pair (aws-lc-rs; about 100 ms on the build machine).
    ///
    /// # Errors
    /// [`RecipientError::KeyGeneration`] if aws-lc-rs fails to generate or encode the key.
    pub fn generate() -> Result<Self, RecipientError> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| RecipientError::KeyGeneration)?;
        Self::from_private(private).map_err(|_| RecipientError::KeyGeneration)
    }

    /// Loads an RSA-2048 private key from PKCS #8 DER. Only for test vectors: a
    /// production recipient key is always generated fresh inside the enclave.
    ///
    /// # Errors
    /// [`RecipientError::InvalidKey`] if the bytes are not an RSA-2048 PKCS #8 key.
    #[cfg(test)]
    pub(crate) fn from_pkcs8(pkcs8_der: &[u8]) -> Result<Self, RecipientError> {
        let private =
            PrivateDecryptingKey::from_pkcs8(pkcs8_der).map_err(|_| RecipientError::InvalidKey)?;
        Self::from_private(private)
    }

    fn from_private(private: PrivateDecryptingKey) -> Result<Self, RecipientError> {
        if private.key_size_bits() != RSA_KEY_BITS {
            return Err(RecipientError::InvalidKey);
        }
        let public_key_der = private
            .public_key()
            .as_der()
            .map_err(|_| RecipientError::InvalidKey)?
            .as_ref()
            .to_vec();
        let key = OaepPrivateDecryptingKey::new(private).map_err(|_| RecipientError::InvalidKey)?;
        Ok(Self {
            key,
            public_key_der,
        })
    }

    /// The public key as X.509 `SubjectPublicKeyInfo` DER (RFC 5280 §4.1.2.7; algorithm
    /// `rsaEncryption`, 2048-bit modulus), the form KMS expects in the attestation
    /// document's `public_key`.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// Opens a KMS `CiphertextForRecipient` addressed to this key and returns the
    /// plaintext (for `GenerateDataKey`/`Decrypt`, the data key bytes).
    ///
    /// Accepts BER or DER; see the module documentation for the exact profile.
    ///
    /// # Errors
    /// - [`RecipientError::TooLarge`] over [`MAX_ENVELOPE_LEN`] bytes (checked first);
    /// - [`RecipientError::Malformed`] / [`RecipientError::NotEnvelopedData`] /
    ///   [`RecipientError::Unsupported`] for structure and algorithm mismatches;
    /// - [`RecipientError::PlaintextTooLarge`] if the content exceeds [`MAX_PLAINTEXT_LEN`];
    /// - [`RecipientError::DecryptionFailed`] for any RSA-OAEP or AES-CBC/padding failure.
    pub fn open(
        &self,
        ciphertext_for_recipient: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RecipientError> {
        let parts = parse_envelope(ciphertext_for_recipient)?;
        let cek = self.unwrap_cek(&parts.encrypted_key)?;
        decrypt_content(&cek, parts.iv, parts.encrypted_content)
    }

    /// RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) unwrap of the 32-byte CEK.
    fn unwrap_cek(&self, encrypted_key: &[u8]) -> Result<Zeroizing<[u8; CEK_LEN]>, RecipientError> {
        let mut out = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let cek = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, encrypted_key, &mut out, None)
            .map_err(|_| RecipientError::DecryptionFailed)?;
        let cek: &[u8; CEK_LEN] = (&*cek)
            .try_into()
            .map_err(|_| RecipientError::DecryptionFailed)?;
        Ok(Zeroizing::new(*cek))
    }
}

/// Opens the answer to a KMS request that carried a `Recipient`, failing closed.
///
/// `ciphertext_for_recipient` and `plaintext` are the answer's `CiphertextForRecipient`
/// and `Plaintext` fields (`None` when absent). Such an answer must carry the former and
/// not the latter: an emulator or proxy that ignores `Recipient` (moto does) and returns
/// the key in the clear is refused rather than trusted (DESIGN.md §8).
///
/// # Errors
/// [`RecipientError::PlaintextInAnswer`] if `plaintext` is present (even empty),
/// [`RecipientError::MissingCiphertextForRecipient`] if `ciphertext_for_recipient` is
/// absent, otherwise whatever [`RecipientKey::open`] returns.
pub fn open_kms_answer(
    key: &RecipientKey,
    ciphertext_for_recipient: Option<&[u8]>,
    plaintext: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, RecipientError> {
    if plaintext.is_some() {
        return Err(RecipientError::PlaintextInAnswer);
    }
    let envelope = ciphertext_for_recipient.ok_or(RecipientError::MissingCiphertextForRecipient)?;
    key.open(envelope)
}

/// `RSAES-OAEP-params`, RFC 8017 appendix A.2.1 (every field has a SHA-1 based DEFAULT,
/// which is why an absent field is refused below rather than defaulted).
#[derive(Sequence)]
struct RsaesOaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash_func: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen_func: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    p_source_func: Option<AlgorithmIdentifierOwned>,
}

/// The parts of a checked envelope that decryption needs.
struct EnvelopeParts {
    encrypted_key: Vec<u8>,
    iv: [u8; AES_BLOCK_LEN],
    encrypted_content: Vec<u8>,
}

/// Parses and checks the envelope against the KMS profile (module docs).
fn parse_envelope(bytes: &[u8]) -> Result<EnvelopeParts, RecipientError> {
    if bytes.len() > MAX_ENVELOPE_LEN {
        return Err(RecipientError::TooLarge {
            len: bytes.len(),
            max: MAX_ENVELOPE_LEN,
        });
    }
    // `from_ber` rejects trailing bytes.
    let content_info = ContentInfo::from_ber(bytes).map_err(RecipientError::Malformed)?;
    if content_info.content_type != ID_ENVELOPED_DATA {
        return Err(RecipientError::NotEnvelopedData);
    }
    let enveloped: EnvelopedData = content_info
        .content
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(RecipientError::Malformed)?;

    if enveloped.version != CmsVersion::V2 {
        return Err(RecipientError::Unsupported(
            "EnvelopedData version is not 2",
        ));
    }
    if enveloped.originator_info.is_some() {
        return Err(RecipientError::Unsupported("originatorInfo is present"));
    }
    if enveloped.unprotected_attrs.is_some() {
        return Err(RecipientError::Unsupported("unprotectedAttrs are present"));
    }

    let mut recipients = enveloped.recip_infos.0.iter();
    let (Some(recipient), None) = (recipients.next(), recipients.next()) else {
        return Err(RecipientError::Unsupported("not exactly one recipient"));
    };
    let RecipientInfo::Ktri(ktri) = recipient else {
        return Err(RecipientError::Unsupported(
            "recipient is not KeyTransRecipientInfo",
        ));
    };
    if ktri.version != CmsVersion::V2
        || !matches!(ktri.rid, RecipientIdentifier::SubjectKeyIdentifier(_))
    {
        return Err(RecipientError::Unsupported(
            "recipient is not identified by subjectKeyIdentifier (version 2)",
        ));
    }
    check_oaep_sha256(&ktri.key_enc_alg)?;

    let eci = &enveloped.encrypted_content;
    if eci.content_type != ID_DATA {
        return Err(RecipientError::Unsupported("content type is not id-data"));
    }
    let iv = aes256_cbc_iv(&eci.content_enc_alg)?;
    let Some(encrypted_content) = &eci.encrypted_content else {
        return Err(RecipientError::Unsupported("encrypted content is absent"));
    };
    let encrypted_content = encrypted_content.as_bytes();
    if encrypted_content.len() > MAX_PLAINTEXT_LEN + AES_BLOCK_LEN {
        return Err(RecipientError::PlaintextTooLarge {
            max: MAX_PLAINTEXT_LEN,
        });
    }
    if encrypted_content.is_empty() || encrypted_content.len() % AES_BLOCK_LEN != 0 {
        return Err(RecipientError::Unsupported(
            "encrypted content is not a positive multiple of the AES block size",
        ));
    }
    Ok(EnvelopeParts {
        encrypted_key: ktri.enc_key.as_bytes().to_vec(),
        iv,
        encrypted_content: encrypted_content.to_vec(),
    })
}

/// Checks `id-RSAES-OAEP` with explicit SHA-256, MGF1-SHA-256 and the empty label
/// (RFC 4055 §3.1). Absent parameters or fields mean the SHA-1 defaults: refused.
fn check_oaep_sha256(alg: &AlgorithmIdentifierOwned) -> Result<(), RecipientError> {
    const WRONG: RecipientError = RecipientError::Unsupported(
        "key encryption is not RSAES-OAEP with SHA-256 and MGF1-SHA-256",
    );
    if alg.oid != ID_RSAES_OAEP {
        return Err(WRONG);
    }
    let params: RsaesOaepParams = alg
        .parameters
        .as_ref()
        .ok_or(WRONG)?
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(|_| WRONG)?;
    if !is_sha256(params.hash_func.as_ref()) {
        return Err(WRONG);
    }
    let mgf = params.mask_gen_func.as_ref().ok_or(WRONG)?;
    if mgf.oid != ID_MGF1 {
        return Err(WRONG);
    }
    let mgf_hash: AlgorithmIdentifierOwned = mgf
        .parameters
        .as_ref()
        .ok_or(WRONG)?
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(|_| WRONG)?;
    if !is_sha256(Some(&mgf_hash)) {
        return Err(WRONG);
    }
    if let Some(p_source) = &params.p_source_func {
        // pSpecified with an empty label is the DEFAULT; anything else is a label we do
        // not pass to OAEP.
        let label: Option<OctetString> = p_source
            .parameters
            .as_ref()
            .map(|p| p.decode_as_encoding(EncodingRules::Ber))
            .transpose()
            .map_err(|_| WRONG)?;
        if p_source.oid != ID_P_SPECIFIED || label.is_some_and(|l| !l.as_bytes().is_empty()) {
            return Err(WRONG);
        }
    }
    Ok(())
}

/// `id-sha256` with absent or NULL parameters (RFC 5754 §2: both encodings occur; KMS
/// sends NULL, OpenSSL omits it).
fn is_sha256(alg: Option<&AlgorithmIdentifierOwned>) -> bool {
    alg.is_some_and(|a| a.oid == ID_SHA256 && a.parameters.as_ref().is_none_or(Any::is_null))
}

/// Checks `aes256-CBC` and returns its IV (`AES-IV ::= OCTET STRING (SIZE(16))`, RFC 3565).
fn aes256_cbc_iv(alg: &AlgorithmIdentifierOwned) -> Result<[u8; AES_BLOCK_LEN], RecipientError> {
    const WRONG: RecipientError =
        RecipientError::Unsupported("content encryption is not aes256-CBC with a 16-byte IV");
    if alg.oid != ID_AES256_CBC {
        return Err(WRONG);
    }
    let iv: OctetString = alg
        .parameters
        .as_ref()
        .ok_or(WRONG)?
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(|_| WRONG)?;
    iv.as_bytes().try_into().map_err(|_| WRONG)
}

/// AES-256-CBC decryption and PKCS #7 unpadding, in place in a zeroizing buffer.
fn decrypt_content(
    cek: &[u8; CEK_LEN],
    iv: [u8; AES_BLOCK_LEN],
    encrypted_content: Vec<u8>,
) -> Result<Zeroizing<Vec<u8>>, RecipientError> {
    let mut buf = Zeroizing::new(encrypted_content);
    let decryptor = cbc::Decryptor::<aes::Aes256>::new_from_slices(cek, &iv)
        .map_err(|_| RecipientError::DecryptionFailed)?;
    let len = decryptor
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| RecipientError::DecryptionFailed)?
        .len();
    if len > MAX_PLAINTEXT_LEN {
        return Err(RecipientError::PlaintextTooLarge {
            max: MAX_PLAINTEXT_LEN,
        });
    }
    // The dropped padding stays in the Vec's capacity, which `Zeroizing` wipes on drop.
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_PKCS8: &[u8] = include_bytes!("../tests/vectors/key.pk8.der");
    const DATA: &[u8] = include_bytes!("../tests/vectors/data.bin");
    const ENVELOPE_BER: &[u8] = include_bytes!("../tests/vectors/envelope.ber");
    const ENVELOPE_DEFINITE: &[u8] = include_bytes!("../tests/vectors/envelope-definite.der");
    const ENVELOPE_OTHER_KEY: &[u8] = include_bytes!("../tests/vectors/envelope-other-key.ber");
    const ENVELOPE_OAEP_SHA1: &[u8] = include_bytes!("../tests/vectors/envelope-oaep-sha1.ber");
    const ENVELOPE_AES128: &[u8] = include_bytes!("../tests/vectors/envelope-aes128.ber");
    const ENVELOPE_KMS_SIM: &[u8] = include_bytes!("../tests/vectors/envelope-kms-sim.ber");

    fn fixture_key() -> RecipientKey {
        RecipientKey::from_pkcs8(KEY_PKCS8).unwrap()
    }

    /// Position of `needle` in `haystack` (unique in the fixtures where it is used).
    fn find(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    }

    #[test]
    fn rejects_deeply_nested_indefinite_length_ber() {
        // ContentInfo { id-envelopedData, [0] { SEQUENCE(indef) { SEQUENCE(indef) ... } } }
        // nested as deep as the size limit allows: refused, without exhausting the
        // stack of the (small) thread that parses it.
        let depth = (MAX_ENVELOPE_LEN - 64) / 4;
        let mut inner = Vec::with_capacity(4 * depth);
        inner.extend(std::iter::repeat_n([0x30u8, 0x80], depth).flatten());
        inner.extend(std::iter::repeat_n([0u8, 0], depth).flatten());
        let mut envelope = vec![0x30, 0x80, 0x06, 0x09];
        envelope.extend_from_slice(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03]);
        envelope.extend_from_slice(&[0xa0, 0x80]);
        envelope.extend_from_slice(&inner);
        envelope.extend_from_slice(&[0, 0, 0, 0]);
        assert!(envelope.len() <= MAX_ENVELOPE_LEN);
        let key = fixture_key();
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || key.open(&envelope).is_err())
            .unwrap()
            .join();
        assert_eq!(result.ok(), Some(true), "panicked or overflowed the stack");
    }

    #[test]
    fn generates_rsa_2048_spki() {
        let key = RecipientKey::generate().unwrap();
        let spki = spki::SubjectPublicKeyInfoRef::from_der(key.public_key_der()).unwrap();
        assert_eq!(spki.algorithm.oid.to_string(), "1.2.840.113549.1.1.1");
        let public = aws_lc_rs::rsa::PublicEncryptingKey::from_der(key.public_key_der()).unwrap();
        assert_eq!(public.key_size_bits(), 2048);
        let other = RecipientKey::generate().unwrap();
        assert_ne!(key.public_key_der(), other.public_key_der());
    }

    #[test]
    fn rejects_non_pkcs8_key() {
        assert!(matches!(
            RecipientKey::from_pkcs8(&KEY_PKCS8[..100]),
            Err(RecipientError::InvalidKey)
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let key = fixture_key();
        assert_eq!(format!("{key:?}"), "RecipientKey { .. }");
    }

    #[test]
    fn fixture_uses_indefinite_lengths_and_chunked_content() {
        // ContentInfo, [0] and EnvelopedData all start with a 0x80 (indefinite) length.
        assert_eq!(&ENVELOPE_BER[..2], &[0x30, 0x80]);
        assert_eq!(&ENVELOPE_BER[13..17], &[0xa0, 0x80, 0x30, 0x80]);
        assert!(ENVELOPE_BER.ends_with(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        // The definite variant is DER-like: no indefinite lengths at the top.
        assert_eq!(&ENVELOPE_DEFINITE[..2], &[0x30, 0x82]);
    }

    #[test]
    fn opens_openssl_streamed_ber_envelope() {
        let plaintext = fixture_key().open(ENVELOPE_BER).unwrap();
        assert_eq!(plaintext.as_slice(), DATA);
    }

    #[test]
    fn opens_openssl_definite_length_envelope() {
        let plaintext = fixture_key().open(ENVELOPE_DEFINITE).unwrap();
        assert_eq!(plaintext.as_slice(), DATA);
    }

    #[test]
    fn opens_kms_sim_envelope_checked_by_openssl() {
        // KMS layout: SHA-256 AlgorithmIdentifiers with NULL parameters (OpenSSL omits them).
        let plaintext = fixture_key().open(ENVELOPE_KMS_SIM).unwrap();
        assert_eq!(plaintext.as_slice(), DATA);
    }

    #[test]
    fn rejects_kms_sim_envelope_with_label() {
        // Append a pSourceFunc [2] { id-pSpecified, OCTET STRING "x" } to RSAES-OAEP-params:
        // a non-empty label that OAEP here does not use must be refused, not ignored.
        let params_at = find(ENVELOPE_KMS_SIM, &[0x30, 0x2f, 0xa0, 0x0f]);
        let p_source: &[u8] = &[
            0xa2, 0x12, 0x30, 0x10, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
            0x09, 0x04, 0x03, b'x', b'y', b'z',
        ];
        let mut altered = ENVELOPE_KMS_SIM.to_vec();
        let params_end = params_at + 2 + 0x2f;
        altered.splice(params_end..params_end, p_source.iter().copied());
        // Fix the lengths: params SEQUENCE, AlgorithmIdentifier, KTRI and the SET.
        let grow = u8::try_from(p_source.len()).unwrap();
        altered[params_at + 1] += grow;
        altered[params_at - 12] += grow; // AlgorithmIdentifier `30 3c`, before the 11-byte OID
        let set_len = usize::from(altered[22]) << 8 | usize::from(altered[23]);
        let ktri_len = usize::from(altered[26]) << 8 | usize::from(altered[27]);
        altered[22..24].copy_from_slice(
            &u16::try_from(set_len + p_source.len())
                .unwrap()
                .to_be_bytes(),
        );
        altered[26..28].copy_from_slice(
            &u16::try_from(ktri_len + p_source.len())
                .unwrap()
                .to_be_bytes(),
        );
        assert!(matches!(
            fixture_key().open(&altered),
            Err(RecipientError::Unsupported(_))
        ));
        // The same surgery with an empty label (`04 00`) is the DEFAULT and is accepted.
        let empty_label: &[u8] = &[
            0xa2, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
            0x09, 0x04, 0x00,
        ];
        let mut ok = ENVELOPE_KMS_SIM.to_vec();
        ok.splice(params_end..params_end, empty_label.iter().copied());
        let grow = u8::try_from(empty_label.len()).unwrap();
        ok[params_at + 1] += grow;
        ok[params_at - 12] += grow;
        ok[22..24].copy_from_slice(
            &u16::try_from(set_len + empty_label.len())
                .unwrap()
                .to_be_bytes(),
        );
        ok[26..28].copy_from_slice(
            &u16::try_from(ktri_len + empty_label.len())
                .unwrap()
                .to_be_bytes(),
        );
        assert_eq!(fixture_key().open(&ok).unwrap().as_slice(), DATA);
    }

    #[test]
    fn opens_mixed_indefinite_outer_definite_inner() {
        // Re-wrap the definite envelope's outer SEQUENCE (30 82 LL LL) as indefinite.
        assert_eq!(&ENVELOPE_DEFINITE[..2], &[0x30, 0x82]);
        let mut mixed = vec![0x30, 0x80];
        mixed.extend_from_slice(&ENVELOPE_DEFINITE[4..]);
        mixed.extend_from_slice(&[0, 0]);
        assert_eq!(fixture_key().open(&mixed).unwrap().as_slice(), DATA);
    }

    #[test]
    fn rejects_mixed_without_end_of_contents() {
        let mut mixed = vec![0x30, 0x80];
        mixed.extend_from_slice(&ENVELOPE_DEFINITE[4..]);
        assert!(matches!(
            fixture_key().open(&mixed),
            Err(RecipientError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_every_truncation() {
        let key = fixture_key();
        for len in 0..ENVELOPE_BER.len() {
            assert!(
                key.open(&ENVELOPE_BER[..len]).is_err(),
                "truncated to {len}"
            );
        }
        for len in 0..ENVELOPE_DEFINITE.len() {
            assert!(
                key.open(&ENVELOPE_DEFINITE[..len]).is_err(),
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut long = ENVELOPE_BER.to_vec();
        long.push(0);
        assert!(matches!(
            fixture_key().open(&long),
            Err(RecipientError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_single_byte_alterations() {
        let key = fixture_key();
        let parts = parse_envelope(ENVELOPE_BER).unwrap();
        // The rid (subjectKeyIdentifier) value is deliberately not checked (module docs).
        let content_info = ContentInfo::from_ber(ENVELOPE_BER).unwrap();
        let enveloped: EnvelopedData = content_info
            .content
            .decode_as_encoding(EncodingRules::Ber)
            .unwrap();
        let Some(RecipientInfo::Ktri(ktri)) = enveloped.recip_infos.0.iter().next() else {
            panic!("fixture has one KTRI");
        };
        let RecipientIdentifier::SubjectKeyIdentifier(ski) = &ktri.rid else {
            panic!("fixture uses an SKI");
        };
        let ski = ski.0.as_bytes();
        let ski_start = find(ENVELOPE_BER, ski);
        let ski_range = ski_start..ski_start + ski.len();
        // From the IV on, CBC has no integrity: an alteration may give a different
        // plaintext that still unpads. Before it, everything must be an error.
        let iv_start = find(ENVELOPE_BER, &parts.iv);
        assert!(iv_start > find(ENVELOPE_BER, &parts.encrypted_key));

        let mut errors = 0;
        for pos in 0..ENVELOPE_BER.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut altered = ENVELOPE_BER.to_vec();
                altered[pos] ^= mask;
                let result = key.open(&altered);
                if ski_range.contains(&pos) {
                    assert_eq!(result.unwrap().as_slice(), DATA, "rid byte {pos}");
                } else if pos < iv_start {
                    assert!(result.is_err(), "byte {pos} ^ {mask:#x} accepted");
                } else {
                    match result {
                        Err(_) => errors += 1,
                        Ok(plaintext) => assert_ne!(plaintext.as_slice(), DATA, "byte {pos}"),
                    }
                }
            }
        }
        assert!(errors > 0);
    }

    #[test]
    fn rejects_envelope_for_another_key() {
        assert!(matches!(
            fixture_key().open(ENVELOPE_OTHER_KEY),
            Err(RecipientError::DecryptionFailed)
        ));
        let fresh = RecipientKey::generate().unwrap();
        assert!(matches!(
            fresh.open(ENVELOPE_BER),
            Err(RecipientError::DecryptionFailed)
        ));
    }

    #[test]
    fn padding_and_oaep_failures_look_the_same() {
        // Flipping the last byte of the next-to-last ciphertext block flips the last
        // plaintext byte (a padding byte): a padding failure with a correct CEK.
        let parts = parse_envelope(ENVELOPE_DEFINITE).unwrap();
        let ct_start = find(ENVELOPE_DEFINITE, &parts.encrypted_content);
        let pos = ct_start + parts.encrypted_content.len() - AES_BLOCK_LEN - 1;
        let mut bad_padding = ENVELOPE_DEFINITE.to_vec();
        bad_padding[pos] ^= 0x01;
        let key = fixture_key();
        let padding_err = key.open(&bad_padding).unwrap_err();
        let oaep_err = key.open(ENVELOPE_OTHER_KEY).unwrap_err();
        assert!(matches!(padding_err, RecipientError::DecryptionFailed));
        assert_eq!(padding_err.to_string(), oaep_err.to_string());
        assert_eq!(padding_err.to_string(), "decryption failed");
    }

    #[test]
    fn rejects_oaep_sha1_defaults() {
        assert!(matches!(
            fixture_key().open(ENVELOPE_OAEP_SHA1),
            Err(RecipientError::Unsupported(_))
        ));
    }

    #[test]
    fn rejects_aes128_content() {
        assert!(matches!(
            fixture_key().open(ENVELOPE_AES128),
            Err(RecipientError::Unsupported(_))
        ));
    }

    #[test]
    fn rejects_other_content_type() {
        // Same bytes with the outer contentType changed from envelopedData (…07 03) to
        // data (…07 01).
        let mut altered = ENVELOPE_BER.to_vec();
        assert_eq!(altered[12], 0x03);
        altered[12] = 0x01;
        assert!(matches!(
            fixture_key().open(&altered),
            Err(RecipientError::NotEnvelopedData)
        ));
    }

    #[test]
    fn rejects_oversized_envelope_before_parsing() {
        let big = vec![0u8; MAX_ENVELOPE_LEN + 1];
        assert!(matches!(
            fixture_key().open(&big),
            Err(RecipientError::TooLarge { len, max }) if len == MAX_ENVELOPE_LEN + 1 && max == MAX_ENVELOPE_LEN
        ));
    }

    #[test]
    fn rejects_garbage_and_empty() {
        let key = fixture_key();
        assert!(key.open(&[]).is_err());
        assert!(key.open(&[0x30, 0x80, 0x00, 0x00]).is_err());
        // Deeply nested indefinite lengths must not overflow the stack.
        let mut nested = Vec::new();
        for _ in 0..10_000 {
            nested.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(key.open(&nested).is_err());
    }

    #[test]
    fn opens_kms_answer_with_ciphertext_for_recipient() {
        let plaintext = open_kms_answer(&fixture_key(), Some(ENVELOPE_BER), None).unwrap();
        assert_eq!(plaintext.as_slice(), DATA);
    }

    #[test]
    fn rejects_kms_answer_with_plaintext() {
        let key = fixture_key();
        assert!(matches!(
            open_kms_answer(&key, Some(ENVELOPE_BER), Some(DATA)),
            Err(RecipientError::PlaintextInAnswer)
        ));
        assert!(matches!(
            open_kms_answer(&key, None, Some(DATA)),
            Err(RecipientError::PlaintextInAnswer)
        ));
        assert!(matches!(
            open_kms_answer(&key, None, Some(&[])),
            Err(RecipientError::PlaintextInAnswer)
        ));
    }

    #[test]
    fn rejects_kms_answer_with_neither_field() {
        assert!(matches!(
            open_kms_answer(&fixture_key(), None, None),
            Err(RecipientError::MissingCiphertextForRecipient)
        ));
    }
}
