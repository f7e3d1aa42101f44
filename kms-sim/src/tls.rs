//! HTTPS for kms-sim (SIMULATION ONLY): a TLS CA kept beside the simulation's attestation
//! CA, a server certificate issued from it at every start, and an axum listener that
//! completes TLS handshakes before handing connections to the router.
//!
//! Why TLS in a simulation: the enclave must talk only to the KMS it was built for. On
//! Nitro that is TLS to `kms.<region>.amazonaws.com` checked against the Amazon roots; in
//! simulation it is TLS to kms-sim checked against this CA only (the enclave's
//! `danger_`-named simulation trust option). A fake KMS on another port, or on kms-sim's
//! port after kms-sim stopped, has no certificate from this CA and fails the handshake.
//!
//! Files in the CA directory (`ekms sim` uses its simulation CA directory):
//!
//! | file | mode | content |
//! |---|---|---|
//! | [`TLS_CA_FILE`] | 0600 | CA certificate and its PKCS#8 key (two PEM blocks), created once, atomically |
//! | [`TLS_ROOT_FILE`] | 0644 | the CA certificate alone: what clients trust |
//!
//! Not a security boundary against the host: whoever can read [`TLS_CA_FILE`] can issue
//! certificates that the simulated enclave accepts.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::SimError;

/// File (mode 0600) with the TLS CA certificate and key.
pub const TLS_CA_FILE: &str = "kms-tls-ca.pem";
/// File (mode 0644) with the TLS CA certificate: the root kms-sim's clients trust.
pub const TLS_ROOT_FILE: &str = "kms-tls-root.pem";
/// Names in the server certificate: kms-sim listens on the loopback interface.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Deadline of one TLS handshake; a client that stalls is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the router.
const ACCEPT_QUEUE: usize = 64;

const CA_CN: &str = "enclave-kms simulated KMS TLS CA (NOT AWS)";
const SERVER_CN: &str = "kms-sim (enclave-kms simulation)";

fn tls_err(what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Config(format!("kms-sim TLS: {what}: {e}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SimError + '_ {
    move |e| SimError::Config(format!("kms-sim TLS: {}: {e}", path.display()))
}

/// The kms-sim TLS CA: a P-256 certificate authority for loopback server certificates.
pub struct TlsCa {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCa").finish_non_exhaustive()
    }
}

/// The CA's certificate parameters; the same subject serves as the issuer description
/// when signing server certificates.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "enclave-kms simulation");
    dn.push(DnType::CommonName, CA_CN);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // rcgen's default validity (1975 to 4096): a simulation CA that never expires.
    params
}

impl TlsCa {
    /// Generates a new CA.
    ///
    /// # Errors
    /// [`SimError::Config`] if key generation or signing fails.
    pub fn generate() -> Result<Self, SimError> {
        let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
        let cert = ca_params()
            .self_signed(&key)
            .map_err(|e| tls_err("CA certificate", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads the CA from `dir` ([`TLS_CA_FILE`]), or creates it there (atomically: a
    /// concurrent start uses whichever was written first), and (re)writes
    /// [`TLS_ROOT_FILE`].
    ///
    /// # Errors
    /// [`SimError::Config`] for an unreadable, unwritable or corrupt file.
    pub fn load_or_create(dir: &Path) -> Result<Self, SimError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let path = dir.join(TLS_CA_FILE);
        let ca = match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_file_text(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ca = Self::generate()?;
                let text =
                    zeroize::Zeroizing::new(format!("{}{}", ca.cert_pem, ca.key.serialize_pem()));
                let tmp = write_temp(&path, text.as_bytes(), 0o600)?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => ca,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
                        Self::from_file_text(&text, &path)?
                    }
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let root = dir.join(TLS_ROOT_FILE);
        let tmp = write_temp(&root, ca.cert_pem.as_bytes(), 0o644)?;
        std::fs::rename(&tmp, &root).map_err(io_err(&root))?;
        Ok(ca)
    }

    fn from_file_text(text: &str, path: &Path) -> Result<Self, SimError> {
        let corrupt = |what: &str| SimError::Config(format!("{}: {what}", path.display()));
        let blocks = pem::parse_many(text).map_err(|_| corrupt("not PEM"))?;
        let [cert, key] = blocks.as_slice() else {
            return Err(corrupt("expected a certificate and a private key"));
        };
        if cert.tag() != "CERTIFICATE" || key.tag() != "PRIVATE KEY" {
            return Err(corrupt("expected a certificate and a private key"));
        }
        let key = KeyPair::try_from(key.contents()).map_err(|_| corrupt("bad private key"))?;
        let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        Ok(Self {
            cert_pem: pem::encode_config(cert, lf),
            key,
        })
    }

    /// The CA certificate (PEM): what kms-sim's clients trust.
    pub fn root_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A rustls server configuration with a fresh server certificate (P-256 key) for
    /// [`SERVER_NAMES`], issued by this CA; HTTP/1.1 by ALPN.
    ///
    /// # Errors
    /// [`SimError::Config`] if issuing fails.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, SimError> {
        let names: Vec<String> = SERVER_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(|e| tls_err("names", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_CN);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
        let issuer_params = ca_params();
        let issuer = Issuer::from_params(&issuer_params, &self.key);
        let leaf = params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| tls_err("server certificate", e))?;
        let ca_der = pem::parse(&self.cert_pem)
            .map_err(|e| tls_err("CA certificate", e))?
            .into_contents();
        let chain = vec![leaf.der().clone(), CertificateDer::from(ca_der)];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls_err("server certificate", e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Writes `bytes` to a fresh temporary file beside `path` with `mode` (synced) and
/// returns its path.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, SimError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    Ok(tmp)
}

/// An axum listener that accepts TCP connections and completes each TLS handshake on
/// its own task (a slow or failing client delays no one), yielding only connections
/// whose handshake succeeded.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The listener's `local_addr` error.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor task never ends on its own; if it did, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Test helper: a TLS connection to `addr` trusting only `root_pem`.
#[cfg(test)]
pub(crate) async fn test_connect(
    addr: SocketAddr,
    root_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut roots = rustls::RootCertStore::empty();
    let der = pem::parse(root_pem).expect("root PEM").into_contents();
    roots.add(der.into()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_or_create_persists_the_ca_and_writes_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let first = TlsCa::load_or_create(dir.path()).unwrap();
        let again = TlsCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.root_pem(), again.root_pem());
        let root = std::fs::read_to_string(dir.path().join(TLS_ROOT_FILE)).unwrap();
        assert_eq!(root, first.root_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(TLS_CA_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        again.server_config().unwrap();
    }

    #[test]
    fn rejects_a_corrupt_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TLS_CA_FILE), "not pem").unwrap();
        assert!(TlsCa::load_or_create(dir.path()).is_err());
    }
}
