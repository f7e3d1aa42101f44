//! `ekms-parent`: the untrusted host process of enclave-kms (DESIGN §1–§2).
//!
//! It serves the application API ([`api`]) on a Unix socket, keeps sealed key records
//! and MAC'd policies in SQLite ([`store`]), and relays requests to the enclave over
//! vsock or, in simulation, a Unix socket ([`relay`]). It holds no key material and
//! decides nothing about keys or policies: a compromised parent can deny service but
//! cannot sign outside a policy or loosen one, because the enclave authenticates every
//! blob the parent sends back.
//!
//! `main` parses flags ([`config::Args`]), sets up tracing and calls [`run`] (or
//! [`Server::bind`] then [`Server::run`], to learn the bound address first).

pub mod api;
pub mod config;
pub mod error;
pub mod format;
pub mod io;
pub mod relay;
pub mod store;

#[cfg(test)]
mod testing;

use std::future::Future;
use std::sync::Arc;

pub use config::{Config, ListenAddr};
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
    /// Opens the key store (creating its directory 0700 if missing) and binds the
    /// application socket.
    ///
    /// # Errors
    /// [`Error::Io`] for the directory or socket, [`Error::Store`] or [`Error::Config`]
    /// for the database.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        if let Some(dir) = config.db.parent().filter(|d| !d.as_os_str().is_empty()) {
            io::ensure_private_dir(dir)?;
        }
        let store = Store::open(&config.db)?;
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

    /// Starts the relay and serves until `shutdown` resolves; then drains open
    /// connections, removes the socket file and stops the relay.
    ///
    /// # Errors
    /// As [`io::serve`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let c = self.config;
        let relay = Relay::start(
            RelayConfig {
                enclave: c.enclave,
                connections: c.enclave_connections,
                request_timeout: c.enclave_timeout,
                kms: c.kms,
                dek_cache: c.dek_cache,
                keyring: c.keyring,
            },
            self.store.clone(),
        );
        let router = api::router(api::AppState {
            relay: relay.clone(),
            store: self.store,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                c.max_in_flight.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            read_timeout: c.read_timeout,
            max_body_bytes: c.max_body_bytes,
        });
        let limits = ServeLimits {
            max_connections: c.max_connections,
            header_read_timeout: c.read_timeout,
        };
        let result = io::serve(self.listener, router, limits, shutdown).await;
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
