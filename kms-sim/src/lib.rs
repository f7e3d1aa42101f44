//! `kms-sim`: a local AWS KMS emulator (SIMULATION ONLY) that speaks the KMS JSON 1.1
//! protocol, so `aws-sdk-kms`, boto3 and the AWS CLI talk to it unchanged through an
//! endpoint URL, and that enforces key policies gated on Nitro Enclaves attestation
//! documents (`Recipient`, `CiphertextForRecipient`) as AWS KMS does.
//!
//! Implemented operations: CreateKey, DescribeKey, GetKeyPolicy, PutKeyPolicy,
//! Encrypt, Decrypt, GenerateDataKey, GenerateRandom. Keys are symmetric
//! (`SYMMETRIC_DEFAULT`, AES-256-GCM); aliases, grants, key rotation, deletion and
//! IAM policies are not emulated.
//!
//! It serves HTTPS only ([`tls`]): a server certificate from a TLS CA kept in a
//! directory beside the simulation's attestation CA, so that the simulated enclave can
//! check it is talking to this kms-sim and nothing else.
//!
//! Not a security boundary: key material is stored IN PLAINTEXT in the state
//! directory (files 0600), SigV4 signatures are not checked, and a key policy's
//! `Principal` is not evaluated (there is one caller). The `Condition`s that matter
//! for attestation are evaluated faithfully.
//!
//! Modules: [`api`] (HTTP, one handler per operation), [`policy`] (key-policy
//! evaluator), [`recipient`] (attestation documents), [`blob`] (ciphertext format),
//! [`store`] (persistence), [`faults`] (fault injection), [`envelope`] (CMS
//! EnvelopedData for `CiphertextForRecipient`), [`error`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod api;
pub mod blob;
pub mod envelope;
pub mod error;
pub mod faults;
pub mod policy;
pub mod recipient;
pub mod store;
pub mod tls;

pub use error::{ApiError, ErrorKind, SimError};
pub use faults::FaultSettings;

/// Default `--max-document-age`: attestation documents older than this are refused.
pub const DEFAULT_MAX_DOCUMENT_AGE: Duration = Duration::from_secs(300);

/// Configuration of one emulator instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the keys (created if missing).
    pub state_dir: PathBuf,
    /// PEM file of the root certificate attestation documents must chain to; `None`
    /// trusts the pinned AWS Nitro Enclaves root (real enclaves' documents).
    pub attestation_root: Option<PathBuf>,
    /// Largest age of an attestation document at the time of the request.
    pub max_document_age: Duration,
    /// AWS region named in key ARNs (e.g. `us-east-1`).
    pub region: String,
    /// AWS account id named in key ARNs (12 digits).
    pub account_id: String,
    /// Faults injected from the start.
    pub faults: FaultSettings,
    /// Directory of the TLS CA ([`tls::TlsCa::load_or_create`]; `ekms sim` uses its
    /// simulation CA directory).
    pub tls_ca_dir: PathBuf,
}

impl Config {
    /// A configuration with the defaults of the command line: region `us-east-1`,
    /// account `111122223333`, documents at most 300 s old, no faults, the TLS CA in
    /// `tls_ca_dir`.
    pub fn new(state_dir: PathBuf, attestation_root: Option<PathBuf>, tls_ca_dir: PathBuf) -> Self {
        Self {
            state_dir,
            attestation_root,
            tls_ca_dir,
            max_document_age: DEFAULT_MAX_DOCUMENT_AGE,
            region: "us-east-1".into(),
            account_id: "111122223333".into(),
            faults: FaultSettings::default(),
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SimError::Config("account id must be 12 digits".into()));
        }
        let region_ok = !self.region.is_empty()
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(SimError::Config(
                "region must be lowercase letters, digits and '-'".into(),
            ));
        }
        Ok(())
    }
}

/// Loads the state and the attestation root: everything that can fail before serving.
///
/// # Errors
/// [`SimError`] for an invalid configuration, an unreadable or corrupted state
/// directory, or an unusable attestation root.
pub fn load(config: &Config) -> Result<Arc<api::AppState>, SimError> {
    config.validate()?;
    let verifier = match &config.attestation_root {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| SimError::AttestationRoot {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            attestation::Verifier::danger_trust_simulation_root_pem(&pem).map_err(|e| {
                SimError::AttestationRoot {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?
        }
        None => attestation::Verifier::aws_nitro(),
    };
    let store = store::KeyStore::open(&config.state_dir)?;
    Ok(Arc::new(api::AppState::new(
        config.region.clone(),
        config.account_id.clone(),
        store,
        recipient::RecipientVerifier::new(verifier, config.max_document_age),
        faults::Faults::new(config.faults),
    )))
}

/// Runs the emulator on `listener` (HTTPS, a server certificate from the TLS CA in
/// [`Config::tls_ca_dir`], created if missing) until `shutdown` completes, then drains
/// in-flight requests and returns.
///
/// # Errors
/// [`SimError`] from [`load`] or the TLS CA, or [`SimError::Serve`] when the server
/// fails.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let state = load(&config)?;
    let tls = tls::TlsCa::load_or_create(&config.tls_ca_dir)?.server_config()?;
    let listener = tls::TlsListener::new(listener, tls).map_err(SimError::Serve)?;
    if let Ok(addr) = axum::serve::Listener::local_addr(&listener) {
        tracing::info!(%addr, region = %config.region, account = %config.account_id, "kms-sim serving HTTPS");
    }
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(SimError::Serve)?;
    tracing::info!("kms-sim stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_default_config() {
        assert!(Config::new("/tmp/x".into(), None, "/tmp/x".into())
            .validate()
            .is_ok());
    }

    #[test]
    fn rejects_bad_account_and_region() {
        let mut config = Config::new("/tmp/x".into(), None, "/tmp/x".into());
        config.account_id = "12345".into();
        assert!(config.validate().is_err());
        let mut config = Config::new("/tmp/x".into(), None, "/tmp/x".into());
        config.region = "US East".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn rejects_missing_attestation_root() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(
            dir.path().into(),
            Some(dir.path().join("absent.pem")),
            dir.path().into(),
        );
        assert!(matches!(
            load(&config),
            Err(SimError::AttestationRoot { .. })
        ));
    }
}
