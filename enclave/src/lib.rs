//! The enclave side of enclave-kms: attested KMS recipient, key custody, policy and
//! signing (DESIGN.md §1–§4).
//!
//! Modules:
//! - [`recipient`]: the ephemeral RSA key whose public half goes into the attestation
//!   document, and the opening of KMS's `CiphertextForRecipient` (CMS EnvelopedData).
//! - [`sealing`]: sealing of execution keys and MACs of policies under a keyring's
//!   data key.
//! - [`state`]: the boot state machine (Booting → Configured → Ready) and which
//!   requests each state accepts.
//! - [`kms`]: the enclave's own `aws-sdk-kms` client and the attested `Recipient` flow.
//! - [`keyring`]: keyring data keys and their bounded cache.
//! - [`handlers`]: one handler per request kind.
//! - [`durable`]: checkpoints of the state that outlives a restart (policy floors, the
//!   store-wide stop, the audit head) and two-phase state changes.
//! - [`audit`]: this boot's audit key and the audit chain head.
//! - [`metrics`]: the counters `Request::Metrics` reports (atomics, no secrets).
//! - [`logs`]: the log forwarder (the enclave's events, as JSON lines, to the parent).
//! - [`server`]: connections, frames, per-request tasks, limits, graceful shutdown.
//! - [`io`]: every socket (Unix, vsock, the TCP→vsock KMS forwarder).
//! - [`hardening`]: no core dumps, not dumpable, memory locked.
//!
//! Build features: `simulation` (default) compiles the simulated NSM for
//! `--nsm simulation`. A production EIF is built with `--no-default-features`, so the
//! simulated NSM and its CA are not in the image and `--nsm simulation` fails at start
//! ([`EnclaveError::SimulationUnavailable`]).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use attestation::NsmProvider;
use ekms_shared::Mode;

pub mod audit;
pub mod durable;
pub mod floor;
pub mod handlers;
pub mod hardening;
pub mod identity;
pub mod io;
pub mod keyring;
pub mod kms;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod recipient;
pub mod sealing;
pub mod server;
pub mod state;
pub mod workers;

pub use server::Limits;
pub use state::Enclave;

/// Errors that stop the enclave from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnclaveError {
    /// The NSM could not be opened or could not describe the PCRs.
    #[error("NSM: {0}")]
    Nsm(#[source] attestation::NsmError),
    /// The simulated NSM could not be set up (CA directory, measuring the binary).
    #[error("simulated NSM: {0}")]
    Simulation(String),
    /// The identity key could not be drawn from the NSM.
    #[error("identity key: {0}")]
    Identity(String),
    /// `--nsm simulation` in a build without the `simulation` feature.
    #[error("this build has no simulated NSM (built without the `simulation` feature)")]
    SimulationUnavailable,
    /// A socket could not be bound or a system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Which NSM to use (`--nsm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsmKind {
    /// `/dev/nsm` of a real Nitro Enclave.
    Nitro,
    /// The simulated NSM (feature `simulation`), PCRs measured from this executable.
    Simulation,
}

/// Opens the NSM of `kind` and returns it with the matching [`Mode`].
///
/// For [`NsmKind::Simulation`], `sim_ca_dir` holds the simulation CA
/// (`SimulatedCa::load_or_create`) and PCR0..2 are measured from
/// `std::env::current_exe()`.
///
/// # Errors
/// [`EnclaveError::Nsm`] if `/dev/nsm` cannot be opened; [`EnclaveError::Simulation`] for
/// a CA or measurement failure; [`EnclaveError::SimulationUnavailable`] when the
/// feature is off.
pub fn open_nsm(
    kind: NsmKind,
    sim_ca_dir: &Path,
) -> Result<(Arc<dyn NsmProvider>, Mode), EnclaveError> {
    match kind {
        NsmKind::Nitro => {
            let nsm = attestation::NitroNsm::open().map_err(EnclaveError::Nsm)?;
            Ok((Arc::new(nsm), Mode::Nitro))
        }
        NsmKind::Simulation => open_simulated_nsm(sim_ca_dir),
    }
}

#[cfg(feature = "simulation")]
fn open_simulated_nsm(dir: &Path) -> Result<(Arc<dyn NsmProvider>, Mode), EnclaveError> {
    let ca = attestation::SimulatedCa::load_or_create(dir)
        .map_err(|e| EnclaveError::Simulation(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|source| EnclaveError::Io {
        context: "cannot locate the enclave executable".into(),
        source,
    })?;
    let nsm = attestation::SimulatedNsm::for_executable(&ca, &exe)
        .map_err(|e| EnclaveError::Simulation(e.to_string()))?;
    Ok((Arc::new(nsm), Mode::Simulation))
}

#[cfg(not(feature = "simulation"))]
fn open_simulated_nsm(_dir: &Path) -> Result<(Arc<dyn NsmProvider>, Mode), EnclaveError> {
    Err(EnclaveError::SimulationUnavailable)
}

/// Serves the parent↔enclave protocol on `listener` until `shutdown` resolves, then
/// stops accepting, drains in-flight requests and returns (dropping `listener`
/// removes a Unix socket file).
pub async fn run(
    listener: io::Listener,
    enclave: Arc<Enclave>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    server::serve(listener, enclave, limits, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "simulation"))]
    #[test]
    fn rejects_simulation_without_the_feature() {
        let r = open_nsm(NsmKind::Simulation, Path::new("/tmp"));
        assert!(matches!(r, Err(EnclaveError::SimulationUnavailable)));
    }

    #[cfg(feature = "simulation")]
    #[test]
    fn rejects_an_unusable_simulation_ca_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let r = open_nsm(NsmKind::Simulation, &file);
        assert!(
            matches!(r, Err(EnclaveError::Simulation(_))),
            "{:?}",
            r.err()
        );
    }

    #[test]
    fn rejects_nitro_without_the_device() {
        if Path::new(attestation::NSM_DEVICE_PATH).exists() {
            return; // on real hardware the device opens
        }
        let r = open_nsm(NsmKind::Nitro, Path::new("/tmp"));
        assert!(matches!(r, Err(EnclaveError::Nsm(_))), "{:?}", r.err());
    }
}
