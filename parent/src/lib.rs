//! `ekms-parent`: the untrusted host process of enclave-kms (DESIGN §1–§2).
//!
//! It serves the application API ([`api`]) on a Unix socket, keeps sealed key records
//! and MAC'd policies in SQLite ([`store`]), and relays requests to the enclave over
//! vsock or, in simulation, a Unix socket ([`relay`]). It holds no key material and
//! decides nothing about keys or policies: a compromised parent can deny service but
//! cannot sign outside a policy or loosen one, because the enclave authenticates every
//! blob the parent sends back.
//!
//! The AWS credentials the enclave's KMS client uses come from the environment or, on
//! EC2, from IMDSv2, refreshed before they expire and pushed to the enclave with
//! `Configure` ([`credentials`]).
//!
//! Every route but health needs an API token ([`auth`], [`tokens`]); at its first start
//! the parent writes an admin token to `<state-dir>/admin.token` (mode 0600).
//!
//! `main` parses flags ([`config::Args`]), sets up tracing and calls [`run`] (or
//! [`Server::bind`] then [`Server::run`], to learn the bound address first).

pub mod api;
pub mod auth;
pub mod config;
pub mod control;
pub mod credentials;
pub mod enclave_logs;
pub mod error;
pub mod format;
pub mod identity;
pub mod io;
pub mod journal;
pub mod jsonrpc;
pub mod relay;
pub mod store;
pub mod tokens;

#[cfg(test)]
mod testing;

use std::future::Future;
use std::sync::Arc;

pub use config::{Config, CredentialsConfig, ListenAddr};
pub use error::{ApiError, Error};
pub use relay::{Relay, RelayConfig};
pub use store::Store;

use crate::io::{AppListener, ServeLimits};

/// A bound, not yet serving, parent: database open, application socket bound.
#[derive(Debug)]
pub struct Server {
    config: Config,
    store: Store,
    listener: AppListener,
}

impl Server {
    /// Opens the key store (creating its directory 0700 if missing), makes sure the
    /// admin token file holds a valid admin token ([`auth::ensure_admin_token`]) and
    /// binds the application socket.
    ///
    /// # Errors
    /// [`Error::Io`] for the directory or socket, [`Error::Store`] or [`Error::Config`]
    /// for the database.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        if let Some(dir) = config.db.parent().filter(|d| !d.as_os_str().is_empty()) {
            io::ensure_private_dir(dir)?;
        }
        // Sealed blobs are useless without the enclave, but still the operator's only.
        // SQLite gives its `-wal` and `-shm` files the mode of the database file, so the
        // file is made 0600 before SQLite opens (and writes the schema into the WAL);
        // files of an earlier run are restricted too.
        io::create_private_file(&config.db)?;
        let store = Store::open(&config.db)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = config.db.clone().into_os_string();
            side.push(suffix);
            let side = std::path::PathBuf::from(side);
            if side.exists() {
                io::restrict_file(&side)?;
            }
        }
        if let Some(dir) = config
            .admin_token
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            io::ensure_private_dir(dir)?;
        }
        auth::ensure_admin_token(&store, &config.admin_token).await?;
        let listener = AppListener::bind(&config.listen).await?;
        Ok(Server {
            config,
            store,
            listener,
        })
    }

    /// The bound application address (with the OS-chosen port for `tcp://…:0`).
    ///
    /// # Errors
    /// [`Error::Io`] if the OS cannot report it.
    pub fn local_addr(&self) -> Result<ListenAddr, Error> {
        self.listener.local_addr()
    }

    /// Gets the AWS credentials (with `--aws-credentials imds`: from IMDS, up to
    /// [`credentials::IMDS_START_ATTEMPTS`] tries, then a background refresher), starts
    /// the relay and serves until `shutdown` resolves; then drains open connections,
    /// removes the socket file and stops the relay and the refresher.
    ///
    /// # Errors
    /// [`Error::Config`] if IMDS gives no credentials at start; otherwise as
    /// [`io::serve`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let c = self.config;
        let mut shutdown = std::pin::pin!(shutdown);
        let (credentials, refresher) = match c.aws_credentials {
            CredentialsConfig::Env(credentials) => (credentials, None),
            CredentialsConfig::Imds { client, refresh } => {
                let first = tokio::select! {
                    r = client.fetch_with_retries(credentials::IMDS_START_ATTEMPTS, &refresh) => r,
                    () = &mut shutdown => return Ok(()),
                };
                let first =
                    first.map_err(|e| Error::Config(format!("--aws-credentials imds: {e}")))?;
                tracing::info!(
                    access_key_id = %first.credentials.access_key_id(),
                    "AWS credentials from IMDS"
                );
                (first.credentials, Some((client, refresh, first.expiration)))
            }
        };
        let relay = Relay::start(
            RelayConfig {
                enclave: c.enclave,
                connections: c.enclave_connections,
                request_timeout: c.enclave_timeout,
                kms: c.kms.with_credentials(credentials),
                dek_cache: c.dek_cache,
                keyring: c.keyring,
            },
            self.store.clone(),
        );
        let refresher = refresher.map(|(client, refresh, expiration)| {
            let relay = relay.clone();
            tokio::spawn(credentials::refresh_loop(
                client,
                refresh,
                expiration,
                move |fresh| {
                    let relay = relay.clone();
                    async move { relay.set_credentials(fresh).await.is_ok() }
                },
            ))
        });
        let log_reader = c
            .enclave_log
            .clone()
            .map(|addr| tokio::spawn(enclave_logs::follow(addr)));
        let identity = Arc::new(identity::IdentityCheck::new(&c.attestation_root)?);
        let router = api::router(api::AppState {
            relay: relay.clone(),
            store: self.store,
            identity,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                c.max_in_flight
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            read_timeout: c.read_timeout,
            max_body_bytes: c.max_body_bytes,
        });
        let limits = ServeLimits {
            max_connections: c.max_connections,
            header_read_timeout: c.read_timeout,
            write_stall_timeout: c.read_timeout,
        };
        let result = io::serve(self.listener, router, limits, shutdown).await;
        if let Some(task) = refresher {
            task.abort();
        }
        if let Some(task) = log_reader {
            task.abort();
        }
        relay.shutdown();
        result
    }
}

/// Binds and serves until `shutdown` resolves (see [`Server`]).
///
/// # Errors
/// As [`Server::bind`] and [`Server::run`].
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    Server::bind(config).await?.run(shutdown).await
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AwsCredentials, KmsTarget};
    use crate::testing::FakeEnclave;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn config(dir: &std::path::Path, enclave: &std::path::Path) -> Config {
        Config {
            listen: ListenAddr::Unix(dir.join("api.sock")),
            enclave: ekms_shared::Address::Unix(enclave.to_owned()),
            enclave_log: None,
            db: dir.join("state/ekms.db"),
            admin_token: dir.join("state/admin.token"),
            kms: KmsTarget {
                region: "us-east-1".into(),
                endpoint_url: None,
                kms_key_id: "k".into(),
            },
            aws_credentials: CredentialsConfig::Env(AwsCredentials::new(
                "AKIA".into(),
                "s".into(),
                None,
            )),
            dek_cache: ekms_shared::DekCachePolicy {
                ttl_secs: 1,
                max_uses: 1,
            },
            keyring: "default".into(),
            enclave_connections: 2,
            max_body_bytes: 4096,
            max_in_flight: 16,
            max_connections: 4,
            enclave_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(2),
            attestation_root: crate::testing::attestation_root(dir),
        }
    }

    /// One HTTP/1.1 request over the Unix socket; returns the status line and body.
    async fn http(sock: &std::path::Path, request: &str) -> (String, String) {
        let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out.lines().next().unwrap_or_default().to_owned();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn serves_on_a_unix_socket_and_cleans_up_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEnclave::start(&dir.path().join("enclave.sock"));
        let server = Server::bind(config(dir.path(), &fake.path)).await.unwrap();
        let sock = dir.path().join("api.sock");
        assert_eq!(server.local_addr().unwrap(), ListenAddr::Unix(sock.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        let get = "GET /v1/health HTTP/1.1\r\nHost: ekms\r\nConnection: close\r\n\r\n";
        let mut last = (String::new(), String::new());
        for _ in 0..200 {
            last = http(&sock, get).await;
            if last.0.contains(" 200 ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(last.0.contains(" 200 "), "{last:?}");
        assert!(last.1.contains(r#""mode":"simulation""#), "{last:?}");
        let post = |auth: &str| {
            format!(
                "POST /v1/keys HTTP/1.1\r\nHost: ekms\r\nConnection: close\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: 23\r\n\r\n{{\"algorithm\":\"ed25519\"}}"
            )
        };
        let (status, body) = http(&sock, &post("")).await;
        assert!(status.contains(" 401 "), "{status} {body}");
        // The admin token written at the first start, owner-only.
        let token_file = dir.path().join("state/admin.token");
        let mode = std::fs::metadata(&token_file).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let token = std::fs::read_to_string(&token_file).unwrap();
        let auth = format!("Authorization: Bearer {}\r\n", token.trim());
        let (status, body) = http(&sock, &post(&auth)).await;
        assert!(status.contains(" 201 "), "{status} {body}");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!sock.exists(), "the socket file is removed");
        let mode = std::fs::metadata(dir.path().join("state/ekms.db"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // The key is durable: a new store sees it.
        let store = Store::open(&dir.path().join("state/ekms.db")).unwrap();
        assert_eq!(store.list_keys(10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn serves_with_credentials_from_imds() {
        use crate::credentials::tests::{credentials_json, fast_policy, imds, FakeImds};
        let imds = FakeImds::start(imds(|n| {
            (200, credentials_json(n, Duration::from_secs(3600)))
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEnclave::start(&dir.path().join("enclave.sock"));
        let mut cfg = config(dir.path(), &fake.path);
        cfg.aws_credentials = CredentialsConfig::Imds {
            client: imds.client(),
            refresh: fast_policy(0),
        };
        let server = Server::bind(cfg).await.unwrap();
        let task = tokio::spawn(server.run(std::future::pending()));
        let sock = dir.path().join("api.sock");
        let get = "GET /v1/health HTTP/1.1\r\nHost: ekms\r\nConnection: close\r\n\r\n";
        let mut last = (String::new(), String::new());
        for _ in 0..200 {
            last = http(&sock, get).await;
            if last.0.contains(" 200 ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(last.0.contains(" 200 "), "{last:?}");
        assert!(fake
            .state
            .configured
            .load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            imds.credential_fetches
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        task.abort();
    }

    #[tokio::test]
    async fn rejects_start_when_imds_has_no_credentials() {
        use crate::credentials::tests::{fast_policy, imds, FakeImds};
        let imds = FakeImds::start(imds(|_| (404, Vec::new()))).await;
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEnclave::start(&dir.path().join("enclave.sock"));
        let mut cfg = config(dir.path(), &fake.path);
        cfg.aws_credentials = CredentialsConfig::Imds {
            client: imds.client(),
            refresh: fast_policy(0),
        };
        let server = Server::bind(cfg).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), server.run(std::future::pending()))
            .await
            .unwrap();
        assert!(
            matches!(&r, Err(Error::Config(m)) if m.contains("HTTP 404")),
            "{r:?}"
        );
        assert_eq!(
            imds.credential_fetches
                .load(std::sync::atomic::Ordering::SeqCst),
            crate::credentials::IMDS_START_ATTEMPTS as usize
        );
        assert_eq!(
            fake.state
                .connections
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    #[tokio::test]
    async fn rejects_clients_that_never_read_their_answers() {
        // One connection slot. A client pipelines requests and never reads: hyper's
        // writes stall once the socket buffers fill. Without a write deadline that
        // connection holds the only slot for ever and nobody else is served.
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEnclave::start(&dir.path().join("enclave.sock"));
        let mut cfg = config(dir.path(), &fake.path);
        cfg.max_connections = 1;
        cfg.read_timeout = Duration::from_millis(300);
        let server = Server::bind(cfg).await.unwrap();
        let sock = dir.path().join("api.sock");
        let task = tokio::spawn(server.run(std::future::pending()));
        let get = "GET /v1/health HTTP/1.1\r\nHost: ekms\r\nConnection: close\r\n\r\n";
        for _ in 0..200 {
            if http(&sock, get).await.0.contains(" 200 ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut hog = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let pipelined = "GET /v1/keys?limit=1000 HTTP/1.1\r\nHost: ekms\r\n\r\n".repeat(64);
        let writer = tokio::spawn(async move {
            // Keeps writing until the server gives up on this connection.
            while hog.write_all(pipelined.as_bytes()).await.is_ok() {}
            hog
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), http(&sock, get))
            .await
            .expect("a second client is served once the stalled one is dropped");
        assert!(status.contains(" 200 "), "{status} {body}");
        writer.abort();
        task.abort();
    }

    #[tokio::test]
    async fn rejects_readable_database_files_even_in_an_open_directory() {
        // The state directory already exists and is world-readable (packaging created
        // it): the database and its WAL/SHM files must still be the owner's only.
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fake = FakeEnclave::start(&dir.path().join("enclave.sock"));
        let server = Server::bind(config(dir.path(), &fake.path)).await.unwrap();
        let mut seen = 0;
        for name in ["ekms.db", "ekms.db-wal", "ekms.db-shm"] {
            if let Ok(meta) = std::fs::metadata(state.join(name)) {
                seen += 1;
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            }
        }
        assert!(seen >= 2, "the database and its WAL exist");
        drop(server);
    }

    #[tokio::test]
    async fn rejects_requests_whose_headers_never_finish() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEnclave::start(&dir.path().join("enclave.sock"));
        let mut cfg = config(dir.path(), &fake.path);
        cfg.read_timeout = Duration::from_millis(200);
        let server = Server::bind(cfg).await.unwrap();
        let sock = dir.path().join("api.sock");
        let task = tokio::spawn(server.run(std::future::pending()));
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: e")
            .await
            .unwrap();
        let mut buf = Vec::new();
        // hyper closes the connection at the header deadline.
        let n = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
            .await
            .expect("closed by the header read deadline")
            .unwrap();
        assert!(
            n == 0 || String::from_utf8_lossy(&buf).contains("408"),
            "{buf:?}"
        );
        task.abort();
    }
}
