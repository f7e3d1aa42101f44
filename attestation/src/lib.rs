//! AWS Nitro Enclaves attestation documents: producing them through a Nitro Secure
//! Module (real, over `/dev/nsm`, or simulated behind the `simulation` feature) and
//! verifying them against a pinned root.
//!
//! - [`NsmProvider`]: the NSM interface (attestation document, randomness, PCRs), with
//!   [`NitroNsm`] for the real device and, with feature `simulation`, `SimulatedNsm`,
//!   whose documents are real ES384 COSE_Sign1 signed by a simulated P-384 CA chain
//!   (`SimulatedCa`).
//! - [`Verifier`]: AWS's documented verification procedure (size bound, COSE structure,
//!   field rules, chain to `AWS_NitroEnclaves_Root-G1` at an explicit time, signature,
//!   freshness, debug mode, PCRs, nonce). A simulation root can only be trusted through
//!   [`Verifier::danger_trust_simulation_root`].
//! - [`measure_executable`]: the simulation's PCR0..2 of an enclave binary.
//!
//! A production enclave image never enables `simulation`: the simulated NSM and CA are
//! not even compiled there.

mod doc;
mod measure;
mod nitro;
mod nsm;
#[cfg(feature = "simulation")]
mod sim;
mod verify;

pub use doc::{AttestationDoc, DIGEST_SHA384, MAX_CERT_LEN, MAX_PCRS};
pub use measure::{measure_executable, pcrs_from_digest, SIM_PCR_DOMAIN};
pub use nitro::{NitroNsm, NSM_DEVICE_PATH};
pub use nsm::{
    AttestationRequest, NsmError, NsmErrorCode, NsmProvider, MAX_NONCE_LEN, MAX_PUBLIC_KEY_LEN,
    MAX_USER_DATA_LEN, NITRO_PCR_COUNT, NSM_MAX_PCRS,
};
#[cfg(feature = "simulation")]
pub use sim::{
    SimError, SimulatedCa, SimulatedNsm, SIM_CA_BUNDLE_FILE, SIM_LEAF_RENEW_MARGIN,
    SIM_LEAF_VALIDITY, SIM_ROOT_PEM_FILE,
};
pub use verify::{
    Verifier, VerifyError, VerifyOptions, AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256,
    MAX_CLOCK_SKEW, MAX_DOCUMENT_LEN,
};
