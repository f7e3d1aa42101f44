//! The simulated Nitro Secure Module (feature `simulation`): a P-384 CA chain
//! ([`SimulatedCa`]) and an NSM ([`SimulatedNsm`]) that emits real COSE_Sign1 attestation
//! documents, byte-compatible with the NSM's, signed by a leaf of that chain.
//!
//! Chain, as on Nitro (`cabundle[0]` is the root, then intermediates towards the leaf):
//!
//! | cert | key | validity | extensions |
//! |---|---|---|---|
//! | root | P-384 | 30 years | CA, keyCertSign + cRLSign |
//! | intermediate | P-384 | 10 years | CA pathLen 0, keyCertSign + cRLSign |
//! | leaf | fresh P-384 per [`SimulatedNsm`] | 3 hours (like Nitro's) | CA:FALSE, digitalSignature, no EKU |
//!
//! A leaf is issued when the NSM is created and re-issued (new key) when less than 30
//! minutes of its validity remain, so a long-running simulation keeps verifying.
//!
//! [`SimulatedCa::load_or_create`] persists the chain in a directory: `sim-ca.pem` (mode
//! 0600: root certificate, root PKCS#8 key, intermediate certificate, intermediate
//! PKCS#8 key, as four PEM blocks) created atomically-if-absent, and `root.pem` (the root
//! certificate, for `kms-sim --attestation-root`) replaced atomically. Documents from
//! this module verify only through `Verifier::danger_trust_simulation_root`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coset::{iana, CborSerializable, CoseSign1Builder, HeaderBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P384_SHA384,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use zeroize::Zeroizing;

use crate::doc::{AttestationDoc, DIGEST_SHA384};
use crate::measure::measure_executable;
use crate::nsm::{AttestationRequest, NsmError, NsmProvider, NITRO_PCR_COUNT, NSM_MAX_PCRS};

/// Validity of a simulated leaf certificate (Nitro's leaves live about 3 hours).
pub const SIM_LEAF_VALIDITY: Duration = Duration::from_secs(3 * 3600);
/// A leaf with less than this validity left is replaced before signing.
pub const SIM_LEAF_RENEW_MARGIN: Duration = Duration::from_secs(30 * 60);
const ROOT_VALIDITY: Duration = Duration::from_secs(30 * 365 * 86400);
const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);
/// Backdating of every `notBefore`, so a verifier whose clock lags slightly still accepts.
const BACKDATE: Duration = Duration::from_secs(60);
const PCR_LEN: usize = 48;

/// File (mode 0600) holding the simulation chain and its private keys.
pub const SIM_CA_BUNDLE_FILE: &str = "sim-ca.pem";
/// File holding the simulation root certificate (PEM), for `kms-sim --attestation-root`.
pub const SIM_ROOT_PEM_FILE: &str = "root.pem";

/// Errors of the simulation CA and NSM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Reading or writing the CA directory failed.
    #[error("simulation CA: I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The persisted CA is incomplete or inconsistent.
    #[error("simulation CA file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Key or certificate generation failed.
    #[error("simulation CA: certificate generation failed: {0}")]
    Certificate(String),
    /// A PCR given to [`SimulatedNsm::new`] is out of range or not 48 bytes.
    #[error("simulated PCR{index}: {reason}")]
    Pcr {
        /// The PCR index.
        index: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// The enclave executable could not be measured.
    #[error("cannot measure {path}: {source}")]
    Measure {
        /// The executable.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The system clock is outside the range certificates can express.
    #[error("system clock out of range")]
    Clock,
}

fn cert_err(e: rcgen::Error) -> SimError {
    SimError::Certificate(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SimError + '_ {
    move |source| SimError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A simulated Nitro CA chain: root and intermediate, both P-384 with their keys.
pub struct SimulatedCa {
    root_der: Vec<u8>,
    root_key: KeyPair,
    intermediate_der: Vec<u8>,
    intermediate_key: KeyPair,
}

impl std::fmt::Debug for SimulatedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedCa")
            .field("root_der_len", &self.root_der.len())
            .field("intermediate_der_len", &self.intermediate_der.len())
            .finish_non_exhaustive()
    }
}

impl SimulatedCa {
    /// Generates a fresh chain (new root and intermediate keys), valid from now.
    ///
    /// # Errors
    /// [`SimError::Certificate`] if key generation or signing fails; [`SimError::Clock`]
    /// for a clock outside the certificate date range.
    pub fn generate() -> Result<Self, SimError> {
        let now = SystemTime::now();
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let mut root_params = ca_params(ROOT_CN, None)?;
        set_validity(&mut root_params, now, ROOT_VALIDITY)?;
        let root_der = root_params
            .self_signed(&root_key)
            .map_err(cert_err)?
            .der()
            .to_vec();

        let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let mut int_params = ca_params(INTERMEDIATE_CN, Some(0))?;
        set_validity(&mut int_params, now, INTERMEDIATE_VALIDITY)?;
        int_params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&root_params, &root_key);
        let intermediate_der = int_params
            .signed_by(&intermediate_key, &issuer)
            .map_err(cert_err)?
            .der()
            .to_vec();
        Ok(Self {
            root_der,
            root_key,
            intermediate_der,
            intermediate_key,
        })
    }

    /// Loads the chain persisted in `dir`, or generates and persists one if there is none.
    ///
    /// Creates `dir` (mode 0700) if missing. The bundle `sim-ca.pem` (mode 0600) is
    /// created atomically and never overwritten, so two processes racing here end up with
    /// the same CA; `dir/root.pem` is (re)written atomically from it on every call.
    ///
    /// # Errors
    /// [`SimError::Io`] for file-system failures, [`SimError::Corrupt`] for a bundle that
    /// does not hold a consistent chain, [`SimError::Certificate`] if generation fails.
    pub fn load_or_create(dir: &Path) -> Result<Self, SimError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let bundle = dir.join(SIM_CA_BUNDLE_FILE);
        let ca = match std::fs::read_to_string(&bundle) {
            Ok(text) => Self::from_bundle(&Zeroizing::new(text), &bundle)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ca = Self::generate()?;
                let text = ca.to_bundle();
                if create_new_atomically(&bundle, text.as_bytes(), 0o600)? {
                    ca
                } else {
                    // Another process created it first: use theirs.
                    let text =
                        Zeroizing::new(std::fs::read_to_string(&bundle).map_err(io_err(&bundle))?);
                    Self::from_bundle(&text, &bundle)?
                }
            }
            Err(e) => return Err(io_err(&bundle)(e)),
        };
        replace_atomically(
            &dir.join(SIM_ROOT_PEM_FILE),
            ca.root_pem().as_bytes(),
            0o644,
        )?;
        Ok(ca)
    }

    /// DER of the root certificate (what `Verifier::danger_trust_simulation_root` pins).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// PEM of the root certificate (the content of `root.pem`).
    pub fn root_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.root_der.clone()))
    }

    /// DER of the intermediate certificate (`cabundle[1]` of every document).
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    fn to_bundle(&self) -> Zeroizing<String> {
        let blocks = [
            pem::Pem::new("CERTIFICATE", self.root_der.clone()),
            pem::Pem::new("PRIVATE KEY", self.root_key.serialize_der()),
            pem::Pem::new("CERTIFICATE", self.intermediate_der.clone()),
            pem::Pem::new("PRIVATE KEY", self.intermediate_key.serialize_der()),
        ];
        Zeroizing::new(pem::encode_many(&blocks))
    }

    fn from_bundle(text: &str, path: &Path) -> Result<Self, SimError> {
        let corrupt = |reason| SimError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let blocks = pem::parse_many(text).map_err(|_| corrupt("not PEM"))?;
        let tags: Vec<&str> = blocks.iter().map(pem::Pem::tag).collect();
        if tags != ["CERTIFICATE", "PRIVATE KEY", "CERTIFICATE", "PRIVATE KEY"] {
            return Err(corrupt(
                "expected root certificate, root key, intermediate certificate, intermediate key",
            ));
        }
        let mut it = blocks.into_iter().map(pem::Pem::into_contents);
        let mut next = || Zeroizing::new(it.next().unwrap_or_default());
        let root_der = next().to_vec();
        let root_key = KeyPair::try_from(next().as_slice()).map_err(|_| corrupt("bad root key"))?;
        let intermediate_der = next().to_vec();
        let intermediate_key =
            KeyPair::try_from(next().as_slice()).map_err(|_| corrupt("bad intermediate key"))?;
        if spki_point(&root_der) != Some(root_key.public_key_raw().to_vec())
            || spki_point(&intermediate_der) != Some(intermediate_key.public_key_raw().to_vec())
        {
            return Err(corrupt("a key does not match its certificate"));
        }
        Ok(Self {
            root_der,
            root_key,
            intermediate_der,
            intermediate_key,
        })
    }
}

const ROOT_CN: &str = "enclave-kms simulated Nitro root (NOT AWS)";
const INTERMEDIATE_CN: &str = "enclave-kms simulated Nitro intermediate (NOT AWS)";
const LEAF_CN: &str = "enclave-kms simulated enclave (NOT AWS)";

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "enclave-kms simulation");
    dn.push(DnType::CommonName, cn);
    dn
}

/// Parameters of a CA certificate; `path_len` `None` for the unconstrained root.
/// Also used, with the same subject, as the issuer description when signing below it.
fn ca_params(cn: &str, path_len: Option<u8>) -> Result<CertificateParams, SimError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::Ca(match path_len {
        None => BasicConstraints::Unconstrained,
        Some(n) => BasicConstraints::Constrained(n),
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn random_serial() -> Result<SerialNumber, SimError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| SimError::Certificate("no randomness for a serial number".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x01; // positive and exactly 16 bytes
    Ok(SerialNumber::from_slice(&serial))
}

fn to_offset(t: SystemTime) -> Result<time::OffsetDateTime, SimError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| SimError::Clock)?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| SimError::Clock)?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| SimError::Clock)
}

fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    validity: Duration,
) -> Result<SystemTime, SimError> {
    let not_after = now.checked_add(validity).ok_or(SimError::Clock)?;
    params.not_before = to_offset(now.checked_sub(BACKDATE).ok_or(SimError::Clock)?)?;
    params.not_after = to_offset(not_after)?;
    Ok(not_after)
}

/// The raw public key (SEC1 point) of a DER certificate.
fn spki_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    spki.subject_public_key.as_bytes().map(<[u8]>::to_vec)
}

/// Writes `bytes` to a fresh temporary file beside `path` with `mode`, syncs it, and
/// returns the temporary path.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, SimError> {
    let mut suffix = [0u8; 8];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| SimError::Certificate("no randomness for a file name".into()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    Ok(tmp)
}

/// Creates `path` with `bytes` atomically, only if it does not exist. Returns false if
/// it already existed (and leaves it untouched).
fn create_new_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, SimError> {
    let tmp = write_temp(path, bytes, mode)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Replaces `path` with `bytes` atomically (write a temporary file, then rename).
fn replace_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SimError> {
    let tmp = write_temp(path, bytes, mode)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// The current leaf: its certificate, signing key and expiry.
struct Leaf {
    cert_der: Vec<u8>,
    key: EcdsaKeyPair,
    not_after: SystemTime,
}

/// A simulated Nitro Secure Module with fixed PCRs, signing with a leaf of a
/// [`SimulatedCa`].
pub struct SimulatedNsm {
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate_key: KeyPair,
    pcrs: BTreeMap<u16, Vec<u8>>,
    module_id: String,
    leaf: Mutex<Leaf>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SimulatedNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedNsm")
            .field("module_id", &self.module_id)
            .finish_non_exhaustive()
    }
}

impl SimulatedNsm {
    /// A simulated NSM whose documents carry PCR0..=15: the given `pcrs` (index < 16,
    /// 48 bytes each), zeros for the rest. Issues a fresh leaf key and certificate.
    ///
    /// # Errors
    /// [`SimError::Pcr`] for an index ≥ 16 or a value that is not 48 bytes;
    /// [`SimError::Certificate`] if the leaf cannot be issued.
    pub fn new(ca: &SimulatedCa, pcrs: BTreeMap<u16, Vec<u8>>) -> Result<Self, SimError> {
        let mut all: BTreeMap<u16, Vec<u8>> = (0..NITRO_PCR_COUNT)
            .map(|i| (i, vec![0u8; PCR_LEN]))
            .collect();
        for (index, value) in pcrs {
            if index >= NITRO_PCR_COUNT {
                return Err(SimError::Pcr {
                    index,
                    reason: "index must be below 16",
                });
            }
            if value.len() != PCR_LEN {
                return Err(SimError::Pcr {
                    index,
                    reason: "value must be 48 bytes (SHA-384)",
                });
            }
            all.insert(index, value);
        }
        let intermediate_key =
            KeyPair::try_from(ca.intermediate_key.serialized_der()).map_err(cert_err)?;
        let rng = SystemRandom::new();
        let mut id = [0u8; 16];
        rng.fill(&mut id)
            .map_err(|_| SimError::Certificate("no randomness for the module id".into()))?;
        let module_id = format!(
            "i-{}-enc{}",
            &hex::encode(&id[..9])[..17],
            hex::encode(&id[8..])
        );
        let leaf = issue_leaf(&intermediate_key, SystemTime::now(), &rng)?;
        Ok(Self {
            root_der: ca.root_der.clone(),
            intermediate_der: ca.intermediate_der.clone(),
            intermediate_key,
            pcrs: all,
            module_id,
            leaf: Mutex::new(leaf),
            rng,
        })
    }

    /// A simulated NSM with PCR0..2 measured from the executable at `exe`
    /// ([`crate::measure_executable`]) and the other PCRs zero.
    ///
    /// # Errors
    /// [`SimError::Measure`] if the file cannot be read; as [`SimulatedNsm::new`].
    pub fn for_executable(ca: &SimulatedCa, exe: &Path) -> Result<Self, SimError> {
        let pcrs = measure_executable(exe).map_err(|source| SimError::Measure {
            path: exe.display().to_string(),
            source,
        })?;
        Self::new(ca, pcrs)
    }

    /// Like attestation_document, with an explicit timestamp (tests of stale documents).
    ///
    /// The document's `timestamp` is `time` (ms since the Unix epoch); the signing leaf
    /// is the current one, valid around the real present.
    ///
    /// # Errors
    /// As [`NsmProvider::attestation_document`]; [`NsmError::Simulation`] for a `time`
    /// before 1970 or a signing failure.
    pub fn attestation_document_at(
        &self,
        req: &AttestationRequest<'_>,
        time: SystemTime,
    ) -> Result<Vec<u8>, NsmError> {
        req.validate()?;
        let timestamp = time
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| NsmError::Simulation("timestamp out of range".into()))?;

        let mut leaf = self.leaf.lock().unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        if now + SIM_LEAF_RENEW_MARGIN >= leaf.not_after {
            *leaf = issue_leaf(&self.intermediate_key, now, &self.rng)
                .map_err(|e| NsmError::Simulation(e.to_string()))?;
        }
        let doc = AttestationDoc {
            module_id: self.module_id.clone(),
            digest: DIGEST_SHA384.to_owned(),
            timestamp,
            pcrs: self.pcrs.clone(),
            certificate: leaf.cert_der.clone(),
            cabundle: vec![self.root_der.clone(), self.intermediate_der.clone()],
            public_key: req.public_key.map(<[u8]>::to_vec),
            user_data: req.user_data.map(<[u8]>::to_vec),
            nonce: req.nonce.map(<[u8]>::to_vec),
        };
        let payload = doc
            .to_cbor()
            .map_err(|e| NsmError::Simulation(format!("payload encoding: {e}")))?;
        let sign1 = CoseSign1Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::ES384)
                    .build(),
            )
            .payload(payload)
            .try_create_signature(b"", |tbs| {
                leaf.key
                    .sign(&self.rng, tbs)
                    .map(|sig| sig.as_ref().to_vec())
                    .map_err(|_| NsmError::Simulation("ES384 signing failed".into()))
            })?
            .build();
        drop(leaf);
        // Untagged, as the NSM emits it.
        sign1
            .to_vec()
            .map_err(|e| NsmError::Simulation(format!("COSE encoding: {e}")))
    }

    /// All PCRs the documents carry (indices 0..=15, 48 bytes each).
    pub fn pcrs(&self) -> &BTreeMap<u16, Vec<u8>> {
        &self.pcrs
    }

    /// The `module_id` of this NSM's documents.
    pub fn module_id(&self) -> &str {
        &self.module_id
    }
}

impl NsmProvider for SimulatedNsm {
    fn attestation_document(&self, req: &AttestationRequest<'_>) -> Result<Vec<u8>, NsmError> {
        self.attestation_document_at(req, SystemTime::now())
    }

    fn random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        self.rng.fill(out).map_err(|_| NsmError::NoEntropy)
    }

    fn describe_pcr(&self, index: u16) -> Result<Vec<u8>, NsmError> {
        if index >= NSM_MAX_PCRS {
            return Err(NsmError::InvalidIndex(index));
        }
        Ok(self
            .pcrs
            .get(&index)
            .cloned()
            .unwrap_or_else(|| vec![0u8; PCR_LEN]))
    }
}

/// Issues a leaf with a fresh P-384 key, signed by the intermediate.
fn issue_leaf(
    intermediate_key: &KeyPair,
    now: SystemTime,
    rng: &SystemRandom,
) -> Result<Leaf, SimError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(LEAF_CN);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    let not_after = set_validity(&mut params, now, SIM_LEAF_VALIDITY)?;
    let issuer_params = ca_params(INTERMEDIATE_CN, Some(0))?;
    let issuer = Issuer::from_params(&issuer_params, intermediate_key);
    let cert_der = params
        .signed_by(&key, &issuer)
        .map_err(cert_err)?
        .der()
        .to_vec();
    let pkcs8 = Zeroizing::new(key.serialize_der());
    let signing = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, rng)
        .map_err(|e| SimError::Certificate(format!("leaf key: {e}")))?;
    Ok(Leaf {
        cert_der,
        key: signing,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Verifier, VerifyError, VerifyOptions};
    use std::os::unix::fs::PermissionsExt;

    fn sim_verifier(ca: &SimulatedCa) -> Verifier {
        Verifier::danger_trust_simulation_root(ca.root_der()).unwrap()
    }

    fn pcrs_123() -> BTreeMap<u16, Vec<u8>> {
        (0..3u16).map(|i| (i, vec![i as u8 + 1; 48])).collect()
    }

    struct Fixture {
        ca: SimulatedCa,
        nsm: SimulatedNsm,
        verifier: Verifier,
    }

    fn fixture() -> Fixture {
        let ca = SimulatedCa::generate().unwrap();
        let nsm = SimulatedNsm::new(&ca, pcrs_123()).unwrap();
        let verifier = sim_verifier(&ca);
        Fixture { ca, nsm, verifier }
    }

    fn opts_now() -> VerifyOptions {
        VerifyOptions::at(SystemTime::now())
    }

    #[test]
    fn sim_document_verifies_against_the_sim_root() {
        let f = fixture();
        let nonce = b"fresh nonce".as_slice();
        let req = AttestationRequest {
            user_data: Some(b"user"),
            nonce: Some(nonce),
            public_key: Some(b"public key"),
        };
        let bytes = f.nsm.attestation_document(&req).unwrap();
        // Untagged COSE_Sign1 with protected {1: -35} and empty unprotected, as the NSM.
        assert_eq!(&bytes[..7], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0]);
        let mut opts = opts_now();
        opts.expected_pcrs = pcrs_123();
        opts.expected_pcrs.insert(15, vec![0; 48]);
        opts.expected_nonce = Some(nonce.to_vec());
        opts.max_age = Some(Duration::from_secs(60));
        let doc = f.verifier.verify(&bytes, &opts).unwrap();
        assert_eq!(doc.pcrs.len(), 16);
        assert_eq!(
            doc.cabundle,
            vec![f.ca.root_der().to_vec(), f.ca.intermediate_der().to_vec()]
        );
        assert_eq!(doc.user_data.as_deref(), Some(&b"user"[..]));
        assert_eq!(doc.public_key.as_deref(), Some(&b"public key"[..]));
        assert_eq!(doc.module_id, f.nsm.module_id());
        assert_eq!(doc.digest, "SHA384");
        // The leaf lives about 3 hours, like Nitro's.
        let leaf = {
            use der::Decode;
            x509_cert::Certificate::from_der(&doc.certificate).unwrap()
        };
        let v = leaf.tbs_certificate().validity();
        let life = v.not_after.to_unix_duration() - v.not_before.to_unix_duration();
        assert_eq!(life, SIM_LEAF_VALIDITY + BACKDATE);
    }

    #[test]
    fn rejects_sim_document_against_the_aws_root() {
        let f = fixture();
        let bytes = f
            .nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        assert!(matches!(
            Verifier::aws_nitro().verify(&bytes, &opts_now()),
            Err(VerifyError::ChainUntrusted(_))
        ));
    }

    #[test]
    fn rejects_document_signed_by_another_sim_ca() {
        let f = fixture();
        let other = SimulatedCa::generate().unwrap();
        let nsm = SimulatedNsm::new(&other, pcrs_123()).unwrap();
        let bytes = nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        assert!(matches!(
            f.verifier.verify(&bytes, &opts_now()),
            Err(VerifyError::ChainUntrusted(_))
        ));
    }

    #[test]
    fn rejects_wrong_pcr_and_wrong_nonce() {
        let f = fixture();
        let bytes = f
            .nsm
            .attestation_document(&AttestationRequest {
                nonce: Some(b"n1"),
                ..Default::default()
            })
            .unwrap();
        let mut opts = opts_now();
        opts.expected_pcrs.insert(1, vec![9; 48]);
        assert_eq!(
            f.verifier.verify(&bytes, &opts),
            Err(VerifyError::PcrMismatch { index: 1 })
        );
        let mut opts = opts_now();
        opts.expected_pcrs.insert(20, vec![0; 48]); // not in the document
        assert_eq!(
            f.verifier.verify(&bytes, &opts),
            Err(VerifyError::PcrMismatch { index: 20 })
        );
        let mut opts = opts_now();
        opts.expected_nonce = Some(b"n2".to_vec());
        assert_eq!(
            f.verifier.verify(&bytes, &opts),
            Err(VerifyError::NonceMismatch)
        );
        let no_nonce = f
            .nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        opts.expected_nonce = Some(b"n1".to_vec());
        assert_eq!(
            f.verifier.verify(&no_nonce, &opts),
            Err(VerifyError::NonceMismatch)
        );
    }

    #[test]
    fn rejects_too_old_and_future_documents() {
        let f = fixture();
        let now = SystemTime::now();
        let req = AttestationRequest::default();
        let old = f
            .nsm
            .attestation_document_at(&req, now - Duration::from_secs(3600))
            .unwrap();
        let mut opts = VerifyOptions::at(now);
        assert!(f.verifier.verify(&old, &opts).is_ok(), "no max age set");
        opts.max_age = Some(Duration::from_secs(600));
        assert!(matches!(
            f.verifier.verify(&old, &opts),
            Err(VerifyError::TooOld { .. })
        ));
        let future = f
            .nsm
            .attestation_document_at(&req, now + Duration::from_secs(600))
            .unwrap();
        assert!(matches!(
            f.verifier.verify(&future, &VerifyOptions::at(now)),
            Err(VerifyError::Future { .. })
        ));
        // Within the allowed clock skew.
        let slightly_ahead = f
            .nsm
            .attestation_document_at(&req, now + Duration::from_secs(30))
            .unwrap();
        assert!(f
            .verifier
            .verify(&slightly_ahead, &VerifyOptions::at(now))
            .is_ok());
    }

    #[test]
    fn rejects_documents_once_the_leaf_expired() {
        let f = fixture();
        let bytes = f
            .nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        let later = SystemTime::now() + SIM_LEAF_VALIDITY + Duration::from_secs(60);
        assert_eq!(
            f.verifier.verify(&bytes, &VerifyOptions::at(later)),
            Err(VerifyError::ChainExpired)
        );
        let earlier = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(
            f.verifier.verify(&bytes, &VerifyOptions::at(earlier)),
            Err(VerifyError::ChainNotYetValid)
        );
    }

    #[test]
    fn rejects_any_tampered_byte() {
        let f = fixture();
        let bytes = f
            .nsm
            .attestation_document(&AttestationRequest {
                user_data: Some(&[7; 32]),
                ..Default::default()
            })
            .unwrap();
        let len = bytes.len();
        // Header, payload (PCRs, certificate, cabundle, user data) and signature.
        for pos in [
            3,
            20,
            100,
            400,
            900,
            1500,
            len - 150,
            len - 120,
            len - 50,
            len - 1,
        ] {
            let mut t = bytes.clone();
            t[pos] ^= 0x01;
            assert!(
                f.verifier.verify(&t, &opts_now()).is_err(),
                "byte {pos} of {len} flipped"
            );
        }
        let mut sig = bytes.clone();
        sig[len - 10] ^= 0x80;
        assert_eq!(
            f.verifier.verify(&sig, &opts_now()),
            Err(VerifyError::Signature)
        );
    }

    #[test]
    fn accepts_tag_18() {
        let f = fixture();
        let bytes = f
            .nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(&bytes);
        assert!(f.verifier.verify(&tagged, &opts_now()).is_ok());
    }

    #[test]
    fn rejects_other_tags() {
        let f = fixture();
        let bytes = f
            .nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        let mut tagged = vec![0xd1]; // tag 17, COSE_Mac0
        tagged.extend_from_slice(&bytes);
        assert!(matches!(
            f.verifier.verify(&tagged, &opts_now()),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_debug_documents_unless_allowed() {
        let ca = SimulatedCa::generate().unwrap();
        let nsm = SimulatedNsm::new(&ca, BTreeMap::new()).unwrap();
        let verifier = sim_verifier(&ca);
        let bytes = nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        assert_eq!(
            verifier.verify(&bytes, &opts_now()),
            Err(VerifyError::Debug)
        );
        let mut opts = opts_now();
        opts.allow_debug = true;
        assert!(verifier.verify(&bytes, &opts).unwrap().is_debug_mode());
    }

    #[test]
    fn refuses_oversize_input() {
        let f = fixture();
        let mut bytes = f
            .nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        bytes.resize(crate::verify::MAX_DOCUMENT_LEN + 1, 0);
        assert!(matches!(
            f.verifier.verify(&bytes, &opts_now()),
            Err(VerifyError::InputTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_requests_over_the_nsm_limits() {
        let f = fixture();
        let big = [0u8; 600];
        assert!(matches!(
            f.nsm.attestation_document(&AttestationRequest {
                user_data: Some(&big),
                ..Default::default()
            }),
            Err(NsmError::InputTooLarge {
                field: "user_data",
                ..
            })
        ));
    }

    #[test]
    fn for_executable_measures_pcr0_to_2() {
        let ca = SimulatedCa::generate().unwrap();
        let exe = std::env::current_exe().unwrap();
        let nsm = SimulatedNsm::for_executable(&ca, &exe).unwrap();
        let measured = measure_executable(&exe).unwrap();
        for i in 0..3u16 {
            assert_eq!(nsm.pcrs()[&i], measured[&i]);
            assert_eq!(nsm.describe_pcr(i).unwrap(), measured[&i]);
        }
        assert_eq!(nsm.pcrs().len(), 16);
        assert_eq!(nsm.pcrs()[&3], vec![0; 48]);
        assert!(matches!(
            SimulatedNsm::for_executable(&ca, Path::new("/nonexistent/enclave")),
            Err(SimError::Measure { .. })
        ));
    }

    #[test]
    fn rejects_bad_pcrs_and_indices() {
        let ca = SimulatedCa::generate().unwrap();
        let bad_index = BTreeMap::from([(16u16, vec![0; 48])]);
        assert!(matches!(
            SimulatedNsm::new(&ca, bad_index),
            Err(SimError::Pcr { index: 16, .. })
        ));
        let bad_len = BTreeMap::from([(0u16, vec![0; 32])]);
        assert!(matches!(
            SimulatedNsm::new(&ca, bad_len),
            Err(SimError::Pcr { index: 0, .. })
        ));
        let nsm = SimulatedNsm::new(&ca, pcrs_123()).unwrap();
        assert_eq!(nsm.describe_pcr(31).unwrap(), vec![0; 48]);
        assert!(matches!(
            nsm.describe_pcr(32),
            Err(NsmError::InvalidIndex(32))
        ));
    }

    #[test]
    fn random_fills_the_buffer() {
        let f = fixture();
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        f.nsm.random(&mut a).unwrap();
        f.nsm.random(&mut b).unwrap();
        assert_ne!(a, [0u8; 64]);
        assert_ne!(a, b);
    }

    #[test]
    fn each_nsm_gets_a_fresh_leaf() {
        let f = fixture();
        let other = SimulatedNsm::new(&f.ca, pcrs_123()).unwrap();
        let opts = opts_now();
        let d1 = f
            .verifier
            .verify(
                &f.nsm
                    .attestation_document(&AttestationRequest::default())
                    .unwrap(),
                &opts,
            )
            .unwrap();
        let d2 = f
            .verifier
            .verify(
                &other
                    .attestation_document(&AttestationRequest::default())
                    .unwrap(),
                &opts,
            )
            .unwrap();
        assert_ne!(spki_point(&d1.certificate), spki_point(&d2.certificate));
    }

    #[test]
    fn load_or_create_persists_and_reloads_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = SimulatedCa::load_or_create(&ca_dir).unwrap();
        let bundle = ca_dir.join(SIM_CA_BUNDLE_FILE);
        let mode = std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(&ca_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let root_pem = std::fs::read_to_string(ca_dir.join(SIM_ROOT_PEM_FILE)).unwrap();
        assert_eq!(root_pem, ca.root_pem());

        let again = SimulatedCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(again.root_der(), ca.root_der());
        assert_eq!(again.intermediate_der(), ca.intermediate_der());
        // The reloaded intermediate key still issues leaves that chain to root.pem.
        let nsm = SimulatedNsm::new(&again, pcrs_123()).unwrap();
        let verifier = Verifier::danger_trust_simulation_root_pem(&root_pem).unwrap();
        let bytes = nsm
            .attestation_document(&AttestationRequest::default())
            .unwrap();
        assert!(verifier.verify(&bytes, &opts_now()).is_ok());
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(&ca_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn rejects_corrupt_persisted_chains() {
        let dir = tempfile::tempdir().unwrap();
        let a = SimulatedCa::load_or_create(dir.path()).unwrap();
        let bundle = dir.path().join(SIM_CA_BUNDLE_FILE);
        // Swap in another CA's intermediate key: keys no longer match certificates.
        let b = SimulatedCa::generate().unwrap();
        let text = pem::encode_many(&[
            pem::Pem::new("CERTIFICATE", a.root_der().to_vec()),
            pem::Pem::new("PRIVATE KEY", a.root_key.serialize_der()),
            pem::Pem::new("CERTIFICATE", a.intermediate_der().to_vec()),
            pem::Pem::new("PRIVATE KEY", b.intermediate_key.serialize_der()),
        ]);
        std::fs::write(&bundle, text).unwrap();
        assert!(matches!(
            SimulatedCa::load_or_create(dir.path()),
            Err(SimError::Corrupt { .. })
        ));
        std::fs::write(&bundle, a.root_pem()).unwrap();
        assert!(matches!(
            SimulatedCa::load_or_create(dir.path()),
            Err(SimError::Corrupt { .. })
        ));
    }

    #[test]
    fn concurrent_load_or_create_agrees_on_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || SimulatedCa::load_or_create(&p).unwrap().root_der)
            })
            .collect();
        let roots: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(roots.windows(2).all(|w| w[0] == w[1]));
        let on_disk = std::fs::read_to_string(path.join(SIM_ROOT_PEM_FILE)).unwrap();
        assert_eq!(pem::parse(on_disk).unwrap().contents(), &roots[0][..]);
    }
}
