//! Verification of Nitro attestation documents, following AWS's procedure
//! ("Verifying the root of trust", AWS Nitro Enclaves User Guide, and
//! `aws-nitro-enclaves-nsm-api` `docs/attestation_process.md` §3):
//!
//! 1. bound the input (≤ [`MAX_DOCUMENT_LEN`]) before decoding anything;
//! 2. decode the COSE_Sign1 (untagged as the NSM emits it, or with tag 18) and require
//!    `alg` = ES384 in the protected header, with no `crit` parameters, and an empty
//!    unprotected header (AWS: `{}`; it is not signed);
//! 3. decode the payload and apply every field rule ([`AttestationDoc::from_cbor`]);
//! 4. build the chain leaf (`certificate`) → `cabundle[1..]` (intermediates only) → the
//!    **pinned** root, valid at the caller's explicit time, with rustls-webpki; the
//!    document's own `cabundle[0]` is never trusted; then what webpki leaves out of
//!    AWS's §3.2.3: the root's validity period and key usage (`digitalSignature` on the
//!    leaf, `keyCertSign` on every CA);
//! 5. check the signature, raw `r || s` (96 bytes), with the leaf's P-384 key over the
//!    COSE `Sig_structure` (RFC 9052 §4.4, empty external AAD);
//! 6. check freshness (not in the future beyond [`MAX_CLOCK_SKEW`], not older than the
//!    caller's maximum age), debug mode, expected PCRs and nonce.
//!
//! Production verifiers pin `AWS_NitroEnclaves_Root-G1` ([`Verifier::aws_nitro`]). A
//! simulation root is only reachable through [`Verifier::danger_trust_simulation_root`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coset::{iana, CborSerializable, CoseSign1, TaggedCborSerializable};
use der::Decode;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::Digest;

use crate::doc::AttestationDoc;

/// The AWS Nitro Enclaves root certificate, `AWS_NitroEnclaves_Root-G1` (PEM), from
/// <https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip>.
/// Subject `CN=aws.nitro-enclaves, OU=AWS, O=Amazon, C=US`, valid 2019-10-28 to 2049-10-28.
/// The SHA-256 of its DER is [`AWS_NITRO_ROOT_G1_SHA256`] (checked by a test).
pub const AWS_NITRO_ROOT_G1_PEM: &str = include_str!("aws_nitro_root_g1.pem");

/// SHA-256 (hex) of the DER of `AWS_NitroEnclaves_Root-G1`, as AWS publishes it.
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// Largest COSE_Sign1 accepted, in bytes. Real documents are 4–5 KiB (the NSM's response
/// buffer is 12 KiB); the bound is checked before any decoding.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;

/// How far in the future (relative to the validation time) a document's timestamp may be
/// before it is refused as [`VerifyError::Future`].
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(120);

/// Length of a raw ES384 signature: `r || s`, 48 bytes each.
const ES384_SIGNATURE_LEN: usize = 96;

/// The only algorithm accepted for the certificate chain (every Nitro certificate is
/// `ecdsa-with-SHA384` over P-384).
static CHAIN_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] =
    &[webpki::ring::ECDSA_P384_SHA384];

/// Why a document was refused. The `Display` text names the failed check; it never
/// contains document bytes beyond PCR indices and lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The input is larger than [`MAX_DOCUMENT_LEN`].
    #[error("attestation document is {len} bytes; at most {max} are accepted")]
    InputTooLarge {
        /// Input length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The bytes are not a well-formed COSE_Sign1 carrying a CBOR map payload.
    #[error("malformed attestation document: {0}")]
    Malformed(&'static str),
    /// The protected header does not say ES384, or has critical parameters.
    #[error("attestation document is not signed with ES384 (protected header alg -35)")]
    Algorithm,
    /// A payload field breaks AWS's syntactic rules.
    #[error("attestation document field {field} {rule}")]
    Field {
        /// The field name.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A certificate of the chain is expired at the validation time.
    #[error("attestation certificate chain is expired at the validation time")]
    ChainExpired,
    /// A certificate of the chain is not yet valid at the validation time.
    #[error("attestation certificate chain is not yet valid at the validation time")]
    ChainNotYetValid,
    /// The chain does not lead to the pinned root, or a certificate is invalid.
    #[error("attestation certificate chain is not trusted: {0}")]
    ChainUntrusted(String),
    /// The COSE signature does not verify with the leaf certificate's key.
    #[error("attestation document signature is invalid")]
    Signature,
    /// A PCR differs from (or lacks) its expected value.
    #[error("PCR{index} does not have the expected value")]
    PcrMismatch {
        /// The PCR index.
        index: u16,
    },
    /// The nonce differs from (or lacks) the expected one.
    #[error("attestation document nonce does not match the expected nonce")]
    NonceMismatch,
    /// The document is older than the allowed maximum age.
    #[error("attestation document is {age_ms} ms old; at most {max_ms} ms are allowed")]
    TooOld {
        /// Age at the validation time, in milliseconds.
        age_ms: u64,
        /// Allowed maximum, in milliseconds.
        max_ms: u64,
    },
    /// The document's timestamp is after the validation time by more than the skew.
    #[error("attestation document timestamp is {ahead_ms} ms in the future")]
    Future {
        /// How far ahead, in milliseconds.
        ahead_ms: u64,
    },
    /// The enclave runs in debug mode (PCR0..2 all zero) and debug was not allowed.
    #[error("attestation document comes from a debug-mode enclave (PCR0..2 are zero)")]
    Debug,
    /// The trust root given to the verifier is not a usable certificate.
    #[error("invalid trust root: {0}")]
    InvalidRoot(&'static str),
}

/// What a verification expects besides a valid signature chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The validation time: certificates must be valid then, and the document's age and
    /// future-skew are measured from it. Pass the current time in production.
    pub time: SystemTime,
    /// Maximum age of the document (`time - timestamp`); `None` for no limit.
    pub max_age: Option<Duration>,
    /// PCR index → exact value required (48 bytes for SHA-384); empty for none.
    pub expected_pcrs: BTreeMap<u16, Vec<u8>>,
    /// The nonce the document must carry; `None` for no requirement.
    pub expected_nonce: Option<Vec<u8>>,
    /// Accept documents of debug-mode enclaves (PCR0..2 all zero). Never in production.
    pub allow_debug: bool,
}

impl VerifyOptions {
    /// Options validating at `time`, with no PCR or nonce expectations, no maximum age,
    /// and debug-mode documents refused.
    pub fn at(time: SystemTime) -> Self {
        Self {
            time,
            max_age: None,
            expected_pcrs: BTreeMap::new(),
            expected_nonce: None,
            allow_debug: false,
        }
    }
}

/// The COSE_Sign1 structure of a document of at most [`MAX_DOCUMENT_LEN`] bytes,
/// tagged (18, the single byte `0xd2`) or not (the NSM omits the tag). Nothing is
/// verified yet.
fn decode_sign1(cose_sign1: &[u8]) -> Result<CoseSign1, VerifyError> {
    if cose_sign1.len() > MAX_DOCUMENT_LEN {
        return Err(VerifyError::InputTooLarge {
            len: cose_sign1.len(),
            max: MAX_DOCUMENT_LEN,
        });
    }
    if cose_sign1.first() == Some(&0xd2) {
        CoseSign1::from_tagged_slice(cose_sign1)
    } else {
        CoseSign1::from_slice(cose_sign1)
    }
    .map_err(|_| VerifyError::Malformed("not a COSE_Sign1 structure"))
}

/// Verifies attestation documents against one pinned root certificate.
pub struct Verifier {
    root_der: Vec<u8>,
    anchor: TrustAnchor<'static>,
    simulation: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "root_sha256",
                &hex::encode(sha2::Sha256::digest(&self.root_der)),
            )
            .field("simulation", &self.simulation)
            .finish()
    }
}

impl Verifier {
    /// A verifier pinned to `AWS_NitroEnclaves_Root-G1` ([`AWS_NITRO_ROOT_G1_PEM`]).
    pub fn aws_nitro() -> Self {
        let root = pem::parse(AWS_NITRO_ROOT_G1_PEM)
            .expect("invariant: the embedded AWS root PEM parses (tested)");
        Self::with_root(root.contents(), false)
            .expect("invariant: the embedded AWS root is a valid trust anchor (tested)")
    }

    /// **Danger**: a verifier that trusts `root_der` — meant for the simulation CA's root
    /// (see `SimulatedCa::root_der`). Documents it accepts prove nothing about AWS
    /// hardware; never use it where a real enclave is expected.
    ///
    /// # Errors
    /// [`VerifyError::InvalidRoot`] if `root_der` is not a DER X.509 certificate usable as
    /// a trust anchor.
    pub fn danger_trust_simulation_root(root_der: &[u8]) -> Result<Self, VerifyError> {
        Self::with_root(root_der, true)
    }

    /// **Danger**: like [`Verifier::danger_trust_simulation_root`], from a PEM
    /// `CERTIFICATE` block (e.g. the simulation CA's `root.pem`).
    ///
    /// # Errors
    /// [`VerifyError::InvalidRoot`] for text that is not one PEM certificate.
    pub fn danger_trust_simulation_root_pem(pem: &str) -> Result<Self, VerifyError> {
        let block = pem::parse(pem).map_err(|_| VerifyError::InvalidRoot("not PEM"))?;
        if block.tag() != "CERTIFICATE" {
            return Err(VerifyError::InvalidRoot("PEM block is not a CERTIFICATE"));
        }
        Self::danger_trust_simulation_root(block.contents())
    }

    fn with_root(root_der: &[u8], simulation: bool) -> Result<Self, VerifyError> {
        let der = CertificateDer::from(root_der);
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|_| VerifyError::InvalidRoot("not a DER X.509 certificate"))?
            .to_owned();
        Ok(Self {
            root_der: root_der.to_vec(),
            anchor,
            simulation,
        })
    }

    /// DER of the pinned root certificate.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// True when this verifier trusts a simulation root rather than AWS's.
    pub fn trusts_simulation_root(&self) -> bool {
        self.simulation
    }

    /// Verifies a COSE_Sign1 attestation document (steps 1–6 of the module docs) and
    /// returns its payload.
    ///
    /// # Errors
    /// The first failed check, as a [`VerifyError`].
    pub fn verify(
        &self,
        cose_sign1: &[u8],
        opts: &VerifyOptions,
    ) -> Result<AttestationDoc, VerifyError> {
        let sign1 = decode_sign1(cose_sign1)?;
        let header = &sign1.protected.header;
        let es384 = coset::Algorithm::Assigned(iana::Algorithm::ES384);
        if header.alg.as_ref() != Some(&es384) || !header.crit.is_empty() {
            return Err(VerifyError::Algorithm);
        }
        // AWS: `{}, /* We have nothing in unprotected */`. The signature does not cover
        // this bucket, so anything in it (a second `alg`, a `crit`, padding) is
        // attacker-chosen: refuse it rather than let one document have many encodings.
        if !sign1.unprotected.is_empty() {
            return Err(VerifyError::Malformed(
                "COSE unprotected header is not empty",
            ));
        }
        let payload = sign1
            .payload
            .as_deref()
            .ok_or(VerifyError::Malformed("COSE_Sign1 has no payload"))?;
        let doc = AttestationDoc::from_cbor(payload)?;

        let time_since_epoch = opts
            .time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| VerifyError::ChainUntrusted("validation time is before 1970".into()))?;
        self.verify_chain(&doc, time_since_epoch)?;
        verify_signature(&sign1, &doc.certificate)?;

        let now_ms = u64::try_from(time_since_epoch.as_millis()).unwrap_or(u64::MAX);
        let skew_ms = u64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        if doc.timestamp > now_ms.saturating_add(skew_ms) {
            return Err(VerifyError::Future {
                ahead_ms: doc.timestamp - now_ms,
            });
        }
        if let Some(max_age) = opts.max_age {
            let age_ms = now_ms.saturating_sub(doc.timestamp);
            let max_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
            if age_ms > max_ms {
                return Err(VerifyError::TooOld { age_ms, max_ms });
            }
        }
        if doc.is_debug_mode() && !opts.allow_debug {
            return Err(VerifyError::Debug);
        }
        for (index, expected) in &opts.expected_pcrs {
            if doc.pcrs.get(index) != Some(expected) {
                return Err(VerifyError::PcrMismatch { index: *index });
            }
        }
        if let Some(expected) = &opts.expected_nonce {
            if doc.nonce.as_ref() != Some(expected) {
                return Err(VerifyError::NonceMismatch);
            }
        }
        Ok(doc)
    }

    /// Verifies a document **as of its own timestamp** (for archived documents, e.g. the
    /// one that binds the identity key of an enclave that signed a key statement days
    /// ago, whose 3-hour leaf certificate has since expired): the chain must have been
    /// valid when the document says it was made, and that time must not lie in the
    /// future of `now` (beyond [`MAX_CLOCK_SKEW`]). `opts.time` is replaced by the
    /// document's timestamp; the other options apply as in [`Verifier::verify`].
    ///
    /// What this trades: a leaf key leaked after its certificate expired could sign a
    /// back-dated document. AWS's NSM leaf keys never leave the Nitro hypervisor.
    ///
    /// # Errors
    /// As [`Verifier::verify`]; [`VerifyError::Future`] for a timestamp after `now`.
    pub fn verify_at_its_time(
        &self,
        cose_sign1: &[u8],
        now: SystemTime,
        opts: &VerifyOptions,
    ) -> Result<AttestationDoc, VerifyError> {
        let sign1 = decode_sign1(cose_sign1)?;
        let payload = sign1
            .payload
            .as_deref()
            .ok_or(VerifyError::Malformed("COSE_Sign1 has no payload"))?;
        let claimed = AttestationDoc::from_cbor(payload)?.timestamp;
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let skew_ms = u64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        if claimed > now_ms.saturating_add(skew_ms) {
            return Err(VerifyError::Future {
                ahead_ms: claimed - now_ms,
            });
        }
        let mut at = opts.clone();
        at.time = UNIX_EPOCH + Duration::from_millis(claimed);
        self.verify(cose_sign1, &at)
    }

    /// Step 4: the path leaf → `cabundle[1..]` → pinned root, valid at `time` (since the
    /// Unix epoch), then the checks of AWS's procedure (`attestation_process.md`
    /// §3.2.3) that rustls-webpki does not make: the root's own validity period
    /// (§3.2.3.1; a trust anchor carries none in webpki) and key usage (§3.2.3.3:
    /// `digitalSignature` on the leaf, which has no `pathLenConstraint`; `keyCertSign`
    /// on every CA of the path).
    fn verify_chain(&self, doc: &AttestationDoc, time: Duration) -> Result<(), VerifyError> {
        let leaf_der = CertificateDer::from(doc.certificate.as_slice());
        let leaf = webpki::EndEntityCert::try_from(&leaf_der)
            .map_err(|e| VerifyError::ChainUntrusted(format!("leaf certificate: {e}")))?;
        // cabundle[0] is the document's claim of a root: skipped, never trusted.
        let intermediates: Vec<CertificateDer<'_>> = doc
            .cabundle
            .iter()
            .skip(1)
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let anchors = std::slice::from_ref(&self.anchor);
        let path = leaf
            .verify_for_usage(
                CHAIN_ALGS,
                anchors,
                &intermediates,
                UnixTime::since_unix_epoch(time),
                // Nitro leaves carry no EKU; `client_auth` requires it only if present.
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| match e {
                webpki::Error::CertExpired { .. } => VerifyError::ChainExpired,
                webpki::Error::CertNotValidYet { .. } => VerifyError::ChainNotYetValid,
                other => VerifyError::ChainUntrusted(other.to_string()),
            })?;
        check_validity(&self.root_der, time, "root")?;
        check_usage(&doc.certificate, CertRole::Leaf)?;
        for ca in path.intermediate_certificates() {
            check_usage(ca.der().as_ref(), CertRole::Ca)?;
        }
        check_usage(&self.root_der, CertRole::Ca)
    }
}

/// Where a certificate sits in the path, for [`check_usage`].
#[derive(Clone, Copy)]
enum CertRole {
    Leaf,
    Ca,
}

/// `notBefore <= time <= notAfter` for one certificate (RFC 5280 §4.1.2.5).
fn check_validity(cert_der: &[u8], time: Duration, which: &str) -> Result<(), VerifyError> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|_| VerifyError::ChainUntrusted(format!("{which} certificate does not parse")))?;
    let validity = cert.tbs_certificate().validity();
    if time < validity.not_before.to_unix_duration() {
        return Err(VerifyError::ChainNotYetValid);
    }
    if time > validity.not_after.to_unix_duration() {
        return Err(VerifyError::ChainExpired);
    }
    Ok(())
}

/// AWS `attestation_process.md` §3.2.3.2–3: the leaf's key usage has
/// `digitalSignature` and its basic constraints no `pathLenConstraint`; a CA's key usage
/// has `keyCertSign`. A missing key-usage extension fails.
fn check_usage(cert_der: &[u8], role: CertRole) -> Result<(), VerifyError> {
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
    let which = match role {
        CertRole::Leaf => "leaf",
        CertRole::Ca => "CA",
    };
    let untrusted = |rule: &str| VerifyError::ChainUntrusted(format!("{which} certificate {rule}"));
    let cert =
        x509_cert::Certificate::from_der(cert_der).map_err(|_| untrusted("does not parse"))?;
    let tbs = cert.tbs_certificate();
    let usage = match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, usage))) => usage,
        Ok(None) => return Err(untrusted("has no key usage extension")),
        Err(_) => return Err(untrusted("has an invalid key usage extension")),
    };
    match role {
        CertRole::Leaf => {
            if !usage.digital_signature() {
                return Err(untrusted("key usage lacks digitalSignature"));
            }
            match tbs.get_extension::<BasicConstraints>() {
                Ok(Some((_, bc))) if bc.path_len_constraint.is_some() => {
                    Err(untrusted("has a pathLenConstraint"))
                }
                Ok(_) => Ok(()),
                Err(_) => Err(untrusted("has invalid basic constraints")),
            }
        }
        CertRole::Ca if !usage.key_cert_sign() => Err(untrusted("key usage lacks keyCertSign")),
        CertRole::Ca => Ok(()),
    }
}

/// `id-ecPublicKey` (RFC 5480).
const ID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp384r1` (RFC 5480).
const SECP384R1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");

fn verify_signature(sign1: &CoseSign1, leaf_der: &[u8]) -> Result<(), VerifyError> {
    let leaf = x509_cert::Certificate::from_der(leaf_der)
        .map_err(|_| VerifyError::ChainUntrusted("leaf certificate does not parse".into()))?;
    let spki = leaf.tbs_certificate().subject_public_key_info();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
    match curve {
        Some(curve) if spki.algorithm.oid == ID_EC_PUBLIC_KEY && curve == SECP384R1 => {}
        _ => {
            return Err(VerifyError::ChainUntrusted(
                "leaf key is not a P-384 key".into(),
            ))
        }
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(VerifyError::Signature)?;
    if sign1.signature.len() != ES384_SIGNATURE_LEN {
        return Err(VerifyError::Signature);
    }
    sign1.verify_signature(b"", |sig, tbs| {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, point)
            .verify(tbs, sig)
            .map_err(|_| VerifyError::Signature)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_aws_root_has_the_published_sha256() {
        let verifier = Verifier::aws_nitro();
        let digest = hex::encode(sha2::Sha256::digest(verifier.root_der()));
        assert_eq!(digest, AWS_NITRO_ROOT_G1_SHA256);
        assert!(!verifier.trusts_simulation_root());
        let cert = x509_cert::Certificate::from_der(verifier.root_der()).unwrap();
        assert_eq!(
            cert.tbs_certificate().subject().to_string(),
            "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
        );
    }

    #[test]
    fn rejects_invalid_simulation_roots() {
        assert!(matches!(
            Verifier::danger_trust_simulation_root(b"not a certificate"),
            Err(VerifyError::InvalidRoot(_))
        ));
        assert!(matches!(
            Verifier::danger_trust_simulation_root_pem("garbage"),
            Err(VerifyError::InvalidRoot(_))
        ));
        let key_block = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        assert!(matches!(
            Verifier::danger_trust_simulation_root_pem(&key_block),
            Err(VerifyError::InvalidRoot(_))
        ));
    }

    #[test]
    fn accepts_a_root_pem_through_the_danger_api() {
        let v = Verifier::danger_trust_simulation_root_pem(AWS_NITRO_ROOT_G1_PEM).unwrap();
        assert!(v.trusts_simulation_root());
        assert_eq!(v.root_der(), Verifier::aws_nitro().root_der());
    }

    #[test]
    fn rejects_oversize_and_garbage_input_before_decoding() {
        let v = Verifier::aws_nitro();
        let opts = VerifyOptions::at(SystemTime::now());
        let big = vec![0x84; MAX_DOCUMENT_LEN + 1];
        assert_eq!(
            v.verify(&big, &opts),
            Err(VerifyError::InputTooLarge {
                len: MAX_DOCUMENT_LEN + 1,
                max: MAX_DOCUMENT_LEN
            })
        );
        for garbage in [&[][..], &[0x84], &[0xd2, 0x84], &[0xa0], &[0xff; 10]] {
            assert!(matches!(
                v.verify(garbage, &opts),
                Err(VerifyError::Malformed(_))
            ));
        }
    }

    #[test]
    fn rejects_wrong_algorithm_and_detached_payload() {
        let v = Verifier::aws_nitro();
        let opts = VerifyOptions::at(SystemTime::now());
        let es256 = coset::CoseSign1Builder::new()
            .protected(
                coset::HeaderBuilder::new()
                    .algorithm(iana::Algorithm::ES256)
                    .build(),
            )
            .payload(vec![0xa0])
            .signature(vec![0; 64])
            .build()
            .to_vec()
            .unwrap();
        assert_eq!(v.verify(&es256, &opts), Err(VerifyError::Algorithm));
        let detached = coset::CoseSign1Builder::new()
            .protected(
                coset::HeaderBuilder::new()
                    .algorithm(iana::Algorithm::ES384)
                    .build(),
            )
            .signature(vec![0; 96])
            .build()
            .to_vec()
            .unwrap();
        assert!(matches!(
            v.verify(&detached, &opts),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn verify_options_at_expects_nothing_and_refuses_debug() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let o = VerifyOptions::at(t);
        assert_eq!(o.time, t);
        assert!(o.max_age.is_none() && o.expected_pcrs.is_empty() && o.expected_nonce.is_none());
        assert!(!o.allow_debug);
    }

    /// Documents under hand-made chains: what the simulated CA never issues.
    #[cfg(feature = "simulation")]
    mod crafted_chains {
        use super::*;
        use coset::{CoseSign1Builder, HeaderBuilder};
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            PKCS_ECDSA_P384_SHA384,
        };
        use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

        const HOUR: i64 = 3600;
        /// The validation time of every document here.
        const NOW: i64 = 1_750_000_000;

        struct Spec {
            root_validity: (i64, i64),
            intermediate_usage: Vec<KeyUsagePurpose>,
            leaf_usage: Vec<KeyUsagePurpose>,
        }

        impl Default for Spec {
            fn default() -> Self {
                Self {
                    root_validity: (NOW - HOUR, NOW + HOUR),
                    intermediate_usage: vec![KeyUsagePurpose::KeyCertSign],
                    leaf_usage: vec![KeyUsagePurpose::DigitalSignature],
                }
            }
        }

        fn params(
            cn: &str,
            ca: bool,
            usage: Vec<KeyUsagePurpose>,
            from_to: (i64, i64),
        ) -> CertificateParams {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = if ca {
                IsCa::Ca(BasicConstraints::Unconstrained)
            } else {
                IsCa::ExplicitNoCa
            };
            p.key_usages = usage;
            p.not_before = time::OffsetDateTime::from_unix_timestamp(from_to.0).unwrap();
            p.not_after = time::OffsetDateTime::from_unix_timestamp(from_to.1).unwrap();
            p
        }

        /// (verifier pinned to the crafted root, signed document).
        fn build(spec: Spec) -> (Verifier, Vec<u8>) {
            let day = (NOW - 24 * HOUR, NOW + 24 * HOUR);
            let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
            let root_params = params(
                "root",
                true,
                vec![KeyUsagePurpose::KeyCertSign],
                spec.root_validity,
            );
            let root = root_params.self_signed(&root_key).unwrap();
            let int_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
            let int_params = params("intermediate", true, spec.intermediate_usage, day);
            let int = int_params
                .signed_by(&int_key, &Issuer::from_params(&root_params, &root_key))
                .unwrap();
            let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
            let leaf = params("leaf", false, spec.leaf_usage, day)
                .signed_by(&leaf_key, &Issuer::from_params(&int_params, &int_key))
                .unwrap();
            let doc = AttestationDoc {
                module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
                digest: "SHA384".into(),
                timestamp: u64::try_from(NOW).unwrap() * 1000,
                pcrs: (0..16u16).map(|i| (i, vec![i as u8 + 1; 48])).collect(),
                certificate: leaf.der().to_vec(),
                cabundle: vec![root.der().to_vec(), int.der().to_vec()],
                public_key: None,
                user_data: None,
                nonce: None,
            };
            let rng = ring::rand::SystemRandom::new();
            let signer = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &leaf_key.serialize_der(),
                &rng,
            )
            .unwrap();
            let bytes = CoseSign1Builder::new()
                .protected(
                    HeaderBuilder::new()
                        .algorithm(iana::Algorithm::ES384)
                        .build(),
                )
                .payload(doc.to_cbor().unwrap())
                .create_signature(b"", |tbs| signer.sign(&rng, tbs).unwrap().as_ref().to_vec())
                .build()
                .to_vec()
                .unwrap();
            let verifier = Verifier::danger_trust_simulation_root(root.der()).unwrap();
            (verifier, bytes)
        }

        fn opts() -> VerifyOptions {
            VerifyOptions::at(UNIX_EPOCH + Duration::from_secs(NOW.unsigned_abs()))
        }

        #[test]
        fn crafted_chain_with_aws_key_usages_verifies() {
            let (v, bytes) = build(Spec::default());
            assert!(v.verify(&bytes, &opts()).is_ok());
        }

        #[test]
        fn rejects_leaf_without_digital_signature_usage() {
            for usage in [vec![], vec![KeyUsagePurpose::KeyEncipherment]] {
                let (v, bytes) = build(Spec {
                    leaf_usage: usage,
                    ..Spec::default()
                });
                assert!(matches!(
                    v.verify(&bytes, &opts()),
                    Err(VerifyError::ChainUntrusted(_))
                ));
            }
        }

        #[test]
        fn rejects_intermediate_without_key_cert_sign_usage() {
            for usage in [vec![], vec![KeyUsagePurpose::DigitalSignature]] {
                let (v, bytes) = build(Spec {
                    intermediate_usage: usage,
                    ..Spec::default()
                });
                assert!(matches!(
                    v.verify(&bytes, &opts()),
                    Err(VerifyError::ChainUntrusted(_))
                ));
            }
        }

        #[test]
        fn rejects_root_outside_its_validity_period() {
            // Intermediate and leaf are valid at NOW; only the pinned root is not.
            let (v, bytes) = build(Spec {
                root_validity: (NOW - 2 * HOUR, NOW - HOUR),
                ..Spec::default()
            });
            assert_eq!(v.verify(&bytes, &opts()), Err(VerifyError::ChainExpired));
            let (v, bytes) = build(Spec {
                root_validity: (NOW + HOUR, NOW + 2 * HOUR),
                ..Spec::default()
            });
            assert_eq!(
                v.verify(&bytes, &opts()),
                Err(VerifyError::ChainNotYetValid)
            );
        }
    }
}
