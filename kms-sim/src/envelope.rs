//! `CiphertextForRecipient`, emulator side: seals a plaintext (a data key, random bytes)
//! to the RSA public key of an attestation document as a CMS `EnvelopedData`, shaped
//! like the answers of AWS KMS (AWS KMS Developer Guide, "Cryptographic attestation for
//! AWS Nitro Enclaves"; RFC 5652 §6).
//!
//! Output layout (BER; lengths marked `∞` are indefinite, closed by `00 00`):
//! ```text
//! ContentInfo SEQUENCE ∞ {
//!   contentType id-envelopedData,
//!   [0] ∞ EnvelopedData SEQUENCE ∞ {
//!     version 2,
//!     recipientInfos SET (definite, DER) { KeyTransRecipientInfo {
//!       version 2, rid [0] subjectKeyIdentifier,
//!       keyEncryptionAlgorithm id-RSAES-OAEP { [0] sha256 NULL, [1] mgf1 { sha256 NULL } },
//!       encryptedKey OCTET STRING (RSA-OAEP of a fresh 32-byte CEK) } },
//!     encryptedContentInfo SEQUENCE ∞ {
//!       contentType id-data,
//!       contentEncryptionAlgorithm aes256-CBC (16-byte random IV, DER),
//!       encryptedContent [0] ∞ { OCTET STRING chunks of ≤ 1024 bytes } } } }
//! ```
//! This is the layout of a real KMS answer (indefinite lengths on the outer constructed
//! layers, the recipient infos and algorithm identifiers definite, the content as a
//! constructed `[0]` of primitive chunks): the outer layers are written by hand here,
//! every inner part is DER from the `cms`/`der` types.
//!
//! One deliberate difference: KMS does not document how it derives the
//! subjectKeyIdentifier (answers seen in the wild carry 32 bytes); we use RFC 7093 §2
//! method 1 (the leftmost 160 bits of SHA-256 over the subjectPublicKey BIT STRING
//! value). Recipients must not depend on the value: the enclave ignores it.

use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use cms::x509_cert::ext::pkix::SubjectKeyIdentifier;
use der::asn1::{ContextSpecific, ObjectIdentifier, OctetString, OctetStringRef, UintRef};
use der::{Any, Decode, Encode, Reader, SliceReader, Tag, TagMode, TagNumber};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

/// Largest plaintext sealed, in bytes. KMS itself never seals more than 1 KiB
/// (`GenerateRandom` and data keys are at most 1024 bytes); 32 KiB keeps every envelope
/// under the enclave's 64 KiB `CiphertextForRecipient` limit.
pub const MAX_PLAINTEXT_LEN: usize = 32 * 1024;

/// Accepted recipient RSA modulus sizes, in bits (inclusive).
pub const RSA_KEY_BITS: core::ops::RangeInclusive<usize> = 2048..=4096;

/// Largest primitive OCTET STRING chunk inside the constructed `encryptedContent`.
const CHUNK_LEN: usize = 1024;
/// Length of the AES-256 content-encryption key, in bytes.
const CEK_LEN: usize = 32;
/// Length of the AES-CBC IV, in bytes.
const IV_LEN: usize = 16;
/// Length of the subjectKeyIdentifier, in bytes (RFC 7093 §2 method 1: 160 bits).
const SKI_LEN: usize = 20;

/// `rsaEncryption`, RFC 8017 appendix A.1.
const ID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-envelopedData`, RFC 5652 §6.1.
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// `id-data`, RFC 5652 §4.
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-RSAES-OAEP`, RFC 8017 appendix A.2.1.
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// `id-mgf1`, RFC 8017 appendix B.2.1.
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// `id-sha256`, RFC 5754 §2.2.
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `id-aes256-CBC`, RFC 3565 §4.1.
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// Why a plaintext could not be sealed for a recipient. Display texts carry no secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The recipient key is not a DER `SubjectPublicKeyInfo` for `rsaEncryption`.
    #[error("recipient public key is not an RSA SubjectPublicKeyInfo")]
    NotRsaKey,
    /// The recipient RSA key is outside [`RSA_KEY_BITS`].
    #[error("recipient RSA key has {bits} bits; 2048 to 4096 are accepted")]
    UnsupportedKeySize {
        /// Modulus size of the key received, in bits.
        bits: usize,
    },
    /// The plaintext is larger than [`MAX_PLAINTEXT_LEN`].
    #[error("plaintext is {len} bytes, over the {max}-byte limit")]
    PlaintextTooLarge {
        /// Length received, in bytes.
        len: usize,
        /// Limit, in bytes.
        max: usize,
    },
    /// The operating system's random generator failed.
    #[error("random generator failed")]
    Random,
    /// RSA-OAEP or AES-CBC encryption failed.
    #[error("encryption for the recipient failed")]
    Encryption,
    /// An ASN.1 structure could not be encoded.
    #[error("CMS encoding failed: {0}")]
    Encoding(#[from] der::Error),
}

/// Seals `plaintext` to `recipient_spki_der` as KMS's `CiphertextForRecipient`.
///
/// `recipient_spki_der` is the attestation document's `public_key`: an X.509
/// `SubjectPublicKeyInfo` (DER) for an RSA key of 2048 to 4096 bits. The result is a BER
/// `ContentInfo`/`EnvelopedData` (layout in the module docs): a fresh random 32-byte
/// CEK wrapped with RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label; RFC 8017 §7.1), the
/// plaintext encrypted with AES-256-CBC under a random IV with PKCS #7 padding. Each
/// call draws a new CEK and IV, so sealing twice gives different bytes.
///
/// # Errors
/// [`EnvelopeError::NotRsaKey`] / [`EnvelopeError::UnsupportedKeySize`] for an
/// unacceptable key, [`EnvelopeError::PlaintextTooLarge`] over [`MAX_PLAINTEXT_LEN`],
/// [`EnvelopeError::Random`], [`EnvelopeError::Encryption`] or
/// [`EnvelopeError::Encoding`] on internal failure.
pub fn seal_for_recipient(
    recipient_spki_der: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(EnvelopeError::PlaintextTooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let spki = SubjectPublicKeyInfoRef::from_der(recipient_spki_der)
        .map_err(|_| EnvelopeError::NotRsaKey)?;
    if spki.algorithm.oid != ID_RSA_ENCRYPTION {
        return Err(EnvelopeError::NotRsaKey);
    }
    let bits = rsa_modulus_bits(spki.subject_public_key.raw_bytes())
        .map_err(|_| EnvelopeError::NotRsaKey)?;
    check_key_bits(bits)?;
    let public_key =
        PublicEncryptingKey::from_der(recipient_spki_der).map_err(|_| EnvelopeError::NotRsaKey)?;
    check_key_bits(public_key.key_size_bits())?;
    let ski = subject_key_identifier(spki.subject_public_key.raw_bytes());

    let mut cek = Zeroizing::new([0u8; CEK_LEN]);
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(cek.as_mut_slice()).map_err(|_| EnvelopeError::Random)?;
    getrandom::fill(&mut iv).map_err(|_| EnvelopeError::Random)?;

    let oaep = OaepPublicEncryptingKey::new(public_key).map_err(|_| EnvelopeError::Encryption)?;
    let mut wrapped = vec![0u8; oaep.ciphertext_size()];
    let wrapped_len = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, cek.as_slice(), &mut wrapped, None)
        .map_err(|_| EnvelopeError::Encryption)?
        .len();
    wrapped.truncate(wrapped_len);

    let encrypted_content = cbc::Encryptor::<aes::Aes256>::new_from_slices(cek.as_slice(), &iv)
        .map_err(|_| EnvelopeError::Encryption)?
        .encrypt_padded_vec::<Pkcs7>(plaintext);

    encode(&ski, wrapped, &iv, &encrypted_content)
}

/// Bit length of the modulus of a DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER,
/// publicExponent INTEGER }` (RFC 8017 appendix A.1.1), read before aws-lc-rs sees the
/// key so that a size outside [`RSA_KEY_BITS`] is reported as such.
fn rsa_modulus_bits(rsa_public_key: &[u8]) -> der::Result<usize> {
    let mut reader = SliceReader::new(rsa_public_key)?;
    let modulus = reader.sequence(|r| {
        let modulus = UintRef::decode(r)?;
        UintRef::decode(r)?;
        Ok::<_, der::Error>(modulus)
    })?;
    reader.finish()?;
    let bytes = modulus.as_bytes();
    Ok(match bytes.first() {
        None => 0,
        Some(first) => (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    })
}

/// Checks the modulus size against [`RSA_KEY_BITS`].
fn check_key_bits(bits: usize) -> Result<(), EnvelopeError> {
    if RSA_KEY_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(EnvelopeError::UnsupportedKeySize { bits })
    }
}

/// RFC 7093 §2 method 1: the leftmost 160 bits of SHA-256 over the value of the
/// subjectPublicKey BIT STRING (without tag, length and unused-bits octet).
fn subject_key_identifier(subject_public_key: &[u8]) -> [u8; SKI_LEN] {
    let digest = Sha256::digest(subject_public_key);
    let mut ski = [0u8; SKI_LEN];
    ski.copy_from_slice(&digest[..SKI_LEN]);
    ski
}

/// DER of `RSAES-OAEP-params` with explicit SHA-256 and MGF1-SHA-256 and the default
/// (empty) label, hash parameters NULL as KMS writes them (RFC 4055 §3.1, RFC 8017 A.2.1).
fn oaep_sha256_params() -> Result<Any, EnvelopeError> {
    let sha256 = AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: Some(Any::null()),
    };
    let mgf1 = AlgorithmIdentifierOwned {
        oid: ID_MGF1,
        parameters: Some(Any::encode_from(&sha256)?),
    };
    let mut fields = ContextSpecific {
        tag_number: TagNumber(0),
        tag_mode: TagMode::Explicit,
        value: sha256,
    }
    .to_der()?;
    ContextSpecific {
        tag_number: TagNumber(1),
        tag_mode: TagMode::Explicit,
        value: mgf1,
    }
    .encode_to_vec(&mut fields)?;
    Ok(Any::new(Tag::Sequence, fields)?)
}

/// Writes the BER envelope (module docs): indefinite outer layers by hand, DER inside.
fn encode(
    ski: &[u8],
    wrapped_cek: Vec<u8>,
    iv: &[u8; IV_LEN],
    encrypted_content: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    /// An indefinite-length header: the tag octet, then `0x80` (X.690 §8.1.3.6).
    fn open_indefinite(out: &mut Vec<u8>, tag_octet: u8) {
        out.extend_from_slice(&[tag_octet, 0x80]);
    }
    /// End-of-contents octets closing one indefinite-length value (X.690 §8.1.5).
    fn close_indefinite(out: &mut Vec<u8>) {
        out.extend_from_slice(&[0x00, 0x00]);
    }
    const SEQUENCE: u8 = 0x30;
    /// `[0]`, context-specific and constructed.
    const CONTEXT_0_CONSTRUCTED: u8 = 0xa0;

    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V2,
        rid: RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(OctetString::new(
            ski,
        )?)),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: ID_RSAES_OAEP,
            parameters: Some(oaep_sha256_params()?),
        },
        enc_key: OctetString::new(wrapped_cek)?,
    };
    let recipient_infos = RecipientInfos::try_from(vec![RecipientInfo::Ktri(ktri)])?;
    let content_encryption = AlgorithmIdentifierOwned {
        oid: ID_AES256_CBC,
        parameters: Some(Any::encode_from(&OctetStringRef::new(iv)?)?),
    };

    let mut out = Vec::with_capacity(encrypted_content.len() + 1024);
    open_indefinite(&mut out, SEQUENCE); // ContentInfo
    ID_ENVELOPED_DATA.encode_to_vec(&mut out)?;
    open_indefinite(&mut out, CONTEXT_0_CONSTRUCTED); // content [0] EXPLICIT
    open_indefinite(&mut out, SEQUENCE); // EnvelopedData
    CmsVersion::V2.encode_to_vec(&mut out)?;
    recipient_infos.encode_to_vec(&mut out)?;
    open_indefinite(&mut out, SEQUENCE); // EncryptedContentInfo
    ID_DATA.encode_to_vec(&mut out)?;
    content_encryption.encode_to_vec(&mut out)?;
    open_indefinite(&mut out, CONTEXT_0_CONSTRUCTED); // encryptedContent [0] IMPLICIT
    for chunk in encrypted_content.chunks(CHUNK_LEN) {
        OctetStringRef::new(chunk)?.encode_to_vec(&mut out)?;
    }
    for _ in 0..5 {
        close_indefinite(&mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use cbc::cipher::BlockModeDecrypt;
    use cms::content_info::ContentInfo;
    use cms::enveloped_data::EnvelopedData;
    use der::EncodingRules;
    use ekms_enclave::recipient::{RecipientError, RecipientKey};

    /// RSA-1024 SubjectPublicKeyInfo (openssl genpkey, then pkey -pubout -outform DER).
    const RSA_1024_SPKI: &str = "30819f300d06092a864886f70d010101050003818d0030818902818100e3a0e6d71aba7ab989045239a266c38163cbe71dca15eddfdaaefe57dc503a93c6aebea8c4ae65de709fa17957dab9f40ed2237166a4165f0f71ad6639892eb955138401426f9b68eae526ae17ccd32794b7953571d6b15363e517354bdc875d1e5fd2ce2e64ad4a445adeed51e73b28f17711da8042616bb7dac31f0a60db930203010001";
    /// P-256 SubjectPublicKeyInfo (openssl genpkey -algorithm EC, pkey -pubout).
    const P256_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200041ef6ad7cedf58b210f3a713ac0bc95f16385abb162ff471b1f9efc7e9ad8dfdabb621cbd26012f71343ca804f5cd6d35b027991c0e633d6ae447ebccbf72ad3d";
    /// The RSAES-OAEP-params in a real KMS answer (aws-nitro-enclaves-sdk-c,
    /// tests/cms_test.c, bytes 0x47..0x78): SHA-256 NULL, MGF1 with SHA-256 NULL.
    const KMS_OAEP_PARAMS: &str = "302fa00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500";

    #[test]
    fn round_trips_through_the_enclave_recipient() {
        let key = RecipientKey::generate().unwrap();
        for len in [0usize, 1, 15, 16, 17, 32, 1024, 1025, 3000] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let envelope = seal_for_recipient(key.public_key_der(), &plaintext).unwrap();
            assert_eq!(
                key.open(&envelope).unwrap().as_slice(),
                plaintext,
                "len {len}"
            );
        }
    }

    #[test]
    fn rejects_opening_with_another_key() {
        let key = RecipientKey::generate().unwrap();
        let other = RecipientKey::generate().unwrap();
        let envelope = seal_for_recipient(key.public_key_der(), b"data key").unwrap();
        assert!(matches!(
            other.open(&envelope),
            Err(RecipientError::DecryptionFailed)
        ));
    }

    #[test]
    fn seals_with_a_fresh_cek_and_iv_each_time() {
        let key = RecipientKey::generate().unwrap();
        let a = seal_for_recipient(key.public_key_der(), b"same").unwrap();
        let b = seal_for_recipient(key.public_key_der(), b"same").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn layout_matches_kms() {
        let private =
            aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .unwrap();
        let spki_der = private.public_key().as_der().unwrap().as_ref().to_vec();
        let envelope = seal_for_recipient(&spki_der, &[0x42; 32]).unwrap();

        // Indefinite outer layers as in a KMS answer: 30 80 06 09 <oid> a0 80 30 80 02 01 02 31.
        assert_eq!(&envelope[..4], &[0x30, 0x80, 0x06, 0x09]);
        assert_eq!(
            &envelope[13..21],
            &[0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x02, 0x31]
        );
        assert!(envelope.ends_with(&[0u8; 10]));
        // A DER-only parser must refuse it (it really is BER with indefinite lengths).
        assert!(ContentInfo::from_der(&envelope).is_err());

        let content_info = ContentInfo::from_ber(&envelope).unwrap();
        assert_eq!(content_info.content_type, ID_ENVELOPED_DATA);
        let enveloped: EnvelopedData = content_info
            .content
            .decode_as_encoding(EncodingRules::Ber)
            .unwrap();
        assert_eq!(enveloped.version, CmsVersion::V2);
        assert_eq!(enveloped.recip_infos.0.len(), 1);
        let Some(RecipientInfo::Ktri(ktri)) = enveloped.recip_infos.0.iter().next() else {
            panic!("expected one KeyTransRecipientInfo");
        };
        assert_eq!(ktri.version, CmsVersion::V2);
        assert_eq!(ktri.key_enc_alg.oid, ID_RSAES_OAEP);
        assert_eq!(
            hex::encode(
                ktri.key_enc_alg
                    .parameters
                    .as_ref()
                    .unwrap()
                    .to_der()
                    .unwrap()
            ),
            KMS_OAEP_PARAMS
        );
        assert_eq!(ktri.enc_key.as_bytes().len(), 256);

        // SKI: leftmost 160 bits of SHA-256 over the subjectPublicKey value.
        let spki = SubjectPublicKeyInfoRef::from_der(&spki_der).unwrap();
        let expected = Sha256::digest(spki.subject_public_key.raw_bytes());
        let RecipientIdentifier::SubjectKeyIdentifier(ski) = &ktri.rid else {
            panic!("expected a subjectKeyIdentifier");
        };
        assert_eq!(ski.0.as_bytes(), &expected[..20]);

        let eci = &enveloped.encrypted_content;
        assert_eq!(eci.content_type, ID_DATA);
        assert_eq!(eci.content_enc_alg.oid, ID_AES256_CBC);
        let iv: OctetString = eci
            .content_enc_alg
            .parameters
            .as_ref()
            .unwrap()
            .decode_as()
            .unwrap();
        assert_eq!(iv.as_bytes().len(), 16);
        // 32 bytes of plaintext + a full block of PKCS #7 padding.
        assert_eq!(eci.encrypted_content.as_ref().unwrap().as_bytes().len(), 48);

        // Independent decryption with aws-lc-rs and cbc, without the enclave's parser.
        let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(private).unwrap();
        let mut cek = [0u8; 256];
        let cek = oaep
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                ktri.enc_key.as_bytes(),
                &mut cek,
                None,
            )
            .unwrap();
        let plaintext = cbc::Decryptor::<aes::Aes256>::new_from_slices(cek, iv.as_bytes())
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(eci.encrypted_content.as_ref().unwrap().as_bytes())
            .unwrap();
        assert_eq!(plaintext, [0x42; 32]);
    }

    #[test]
    fn chunks_long_content() {
        let key = RecipientKey::generate().unwrap();
        let envelope = seal_for_recipient(key.public_key_der(), &[7u8; 2500]).unwrap();
        // 2512 bytes of ciphertext → chunks of 1024, 1024 and 464: three `04 82 ...` headers.
        let headers = envelope
            .windows(4)
            .filter(|w| *w == [0x04, 0x82, 0x04, 0x00] || *w == [0x04, 0x82, 0x01, 0xd0])
            .count();
        assert_eq!(headers, 3);
        assert_eq!(key.open(&envelope).unwrap().as_slice(), &[7u8; 2500]);
    }

    #[test]
    fn rejects_non_rsa_and_malformed_keys() {
        let p256 = hex::decode(P256_SPKI).unwrap();
        assert!(matches!(
            seal_for_recipient(&p256, b"x"),
            Err(EnvelopeError::NotRsaKey)
        ));
        assert!(matches!(
            seal_for_recipient(b"not a key", b"x"),
            Err(EnvelopeError::NotRsaKey)
        ));
        let key = RecipientKey::generate().unwrap();
        let mut trailing = key.public_key_der().to_vec();
        trailing.push(0);
        assert!(seal_for_recipient(&trailing, b"x").is_err());
    }

    #[test]
    fn rejects_small_rsa_keys() {
        let rsa1024 = hex::decode(RSA_1024_SPKI).unwrap();
        assert!(matches!(
            seal_for_recipient(&rsa1024, b"x"),
            Err(EnvelopeError::UnsupportedKeySize { bits: 1024 })
        ));
    }

    #[test]
    fn reads_modulus_bits() {
        let key = RecipientKey::generate().unwrap();
        let spki = SubjectPublicKeyInfoRef::from_der(key.public_key_der()).unwrap();
        assert_eq!(
            rsa_modulus_bits(spki.subject_public_key.raw_bytes()).unwrap(),
            2048
        );
        let rsa1024 = hex::decode(RSA_1024_SPKI).unwrap();
        let spki = SubjectPublicKeyInfoRef::from_der(&rsa1024).unwrap();
        assert_eq!(
            rsa_modulus_bits(spki.subject_public_key.raw_bytes()).unwrap(),
            1024
        );
    }

    #[test]
    fn rejects_malformed_rsa_public_key() {
        assert!(rsa_modulus_bits(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(rsa_modulus_bits(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(rsa_modulus_bits(&[]).is_err());
    }

    #[test]
    fn key_size_bounds() {
        assert!(check_key_bits(2048).is_ok());
        assert!(check_key_bits(3072).is_ok());
        assert!(check_key_bits(4096).is_ok());
        assert!(matches!(
            check_key_bits(2047),
            Err(EnvelopeError::UnsupportedKeySize { bits: 2047 })
        ));
        assert!(matches!(
            check_key_bits(8192),
            Err(EnvelopeError::UnsupportedKeySize { bits: 8192 })
        ));
    }

    #[test]
    fn rejects_oversized_plaintext() {
        let key = RecipientKey::generate().unwrap();
        let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            seal_for_recipient(key.public_key_der(), &big),
            Err(EnvelopeError::PlaintextTooLarge { .. })
        ));
        let max = vec![0u8; MAX_PLAINTEXT_LEN];
        let envelope = seal_for_recipient(key.public_key_der(), &max).unwrap();
        assert_eq!(key.open(&envelope).unwrap().len(), MAX_PLAINTEXT_LEN);
    }
}
