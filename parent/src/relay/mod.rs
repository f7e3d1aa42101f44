//! The relay to the enclave: N multiplexed connections, each with a writer task, a
//! reader task and a map of pending requests (`request_id → oneshot`), so many requests
//! share a connection and complete out of order.
//!
//! Life of a connection slot (one supervisor task each):
//! 1. connect (backoff 100 ms doubling to 5 s on failure);
//! 2. initialise: `Status`, then `Configure` with the current credentials (a `Booting`
//!    or `Configured` enclave gets ready; a `Ready` one takes them as a credentials
//!    refresh, a no-op when unchanged, and a failure there only logs: the enclave keeps
//!    serving with its previous ones); then the [`SessionInit`] the relay was started
//!    with prepares the connection through a [`Session`] (the service layer's keyring
//!    bootstrap and `Restore`, [`crate::service::keyring`]);
//! 3. publish the slot: requests may use it, health turns ready;
//! 4. when the reader or writer ends (the enclave restarted, a frame did not decode),
//!    unpublish the slot, fail every pending request with
//!    [`Error::EnclaveUnavailable`], and go back to 1.
//!
//! **Alarm.** An enclave whose `Status` reports a KMS target (region, endpoint, key)
//! other than ours, or that answers our `Configure` with `AlreadyConfigured` (it answers
//! that only when Ready for another target), was configured by someone else, with a KMS
//! of their choosing. That is fatal and
//! sticky ([`Relay::alarm`]): an error is logged, every connection is unpublished and
//! its supervisor stops, [`Relay::call`] fails with
//! [`Error::EnclaveConfiguredByAnother`] (signing stops), and `/v1/health` reports it.
//! Recovery is an operator's: restart the enclave (it boots unconfigured), then the
//! parent.
//!
//! Refreshed credentials ([`Relay::set_credentials`], from the IMDS refresher) replace
//! those of [`RelayConfig::kms`] and are sent in `Configure` on every ready connection
//! at once, and on every later (re)connection.
//!
//! Every request has a deadline ([`RelayConfig::request_timeout`]); a request whose
//! caller gives up is removed from the pending map, and a late answer is dropped.
//!
//! The parent is not trusted by the enclave: nothing here decides anything about keys
//! or policies. It only checks that answers have the right shape for the request.
//!
//! Rule for maintainers: this is transport only (STYLE rule 17). The relay never reads
//! or writes the key store; what a fresh connection needs from the store is the
//! [`SessionInit`]'s business. Layout: [`conn`] (one connection: writer, reader, pending
//! map), [`session`] (the supervisor of a slot: connect, initialise, alarm), this file
//! (the handle, typed calls), `tests.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use ekms_shared::{Mode, Request, ResponseBody, StatusInfo, WireError};
use tokio::task::JoinHandle;

use crate::config::{AwsCredentials, KmsSettings};
use crate::error::Error;

mod conn;
mod session;
#[cfg(test)]
mod tests;

use conn::Conn;

/// First and largest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Frames queued for one connection's writer before senders wait.
const WRITE_QUEUE: usize = 1024;

/// What the relay needs to know.
#[derive(Debug)]
pub struct RelayConfig {
    /// Enclave address.
    pub enclave: ekms_shared::Address,
    /// Number of connections (≥ 1).
    pub connections: usize,
    /// Deadline for one request.
    pub request_timeout: Duration,
    /// KMS settings sent in `Configure`.
    pub kms: KmsSettings,
    /// Data-key cache policy sent in `Configure`.
    pub dek_cache: ekms_shared::DekCachePolicy,
    /// Where round trips are timed ([`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A boxed, sendable future (what [`SessionInit::prepare`] returns: the trait stays
/// object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a configured connection needs before it serves, supplied by whoever started the
/// relay (the service layer's keyring bootstrap and `Restore`,
/// [`crate::service::keyring::Bootstrap`]). The relay calls it once per (re)connection,
/// after `Status` and `Configure`, and publishes the connection only when it succeeds;
/// on an error the connection is dropped, the error shows in [`Relay::not_ready`] and
/// the slot reconnects with backoff.
pub trait SessionInit: Send + Sync + std::fmt::Debug + 'static {
    /// Prepares the connection behind `session`; `status` is its enclave's `Status`
    /// answer from before `Configure`.
    ///
    /// # Errors
    /// Any: the connection is not published.
    fn prepare<'a>(
        &'a self,
        session: Session<'a>,
        status: &'a StatusInfo,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// One not yet published connection, as a [`SessionInit`] sees it: requests on it go to
/// that connection only (with the relay's deadline).
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    inner: &'a Inner,
    conn: &'a Conn,
}

impl Session<'_> {
    /// Sends `request` on this connection and waits for the answer.
    ///
    /// # Errors
    /// As [`Relay::call`] (no alarm check: the connection is not published yet).
    pub async fn call(&self, request: Request) -> Result<ResponseBody, Error> {
        self.conn.call(self.inner, request).await
    }
}

/// What `GET /v1/health` shows once ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Simulation or Nitro, as the enclave reports.
    pub mode: Mode,
    /// PCR index → value, as the enclave reports.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
}

/// Why the enclave is not ready, from the last failed initialisation (for
/// `/v1/health` and the log): a stable code and the enclave's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// [`NotReadyCode::as_str`] of the cause.
    pub code: NotReadyCode,
    /// The error text (e.g. `KMS error AccessDeniedException: ...`).
    pub reason: String,
}

/// Stable codes of [`NotReady`] (STYLE rule 18), as `/v1/health` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReadyCode {
    /// KMS refused the enclave's attested round trip on the pinned key
    /// (`AccessDeniedException`): the key policy does not release data keys to this
    /// image (wrong PCR0/PCR8, a debug-mode enclave), or the role may not use the key.
    KmsAccessDenied,
    /// Any other KMS failure of the round trip (unreachable endpoint, throttling, TLS).
    KmsError,
    /// The enclave refused this parent's `Configure` (not the pinned key, region or
    /// endpoint).
    ConfigureRefused,
    /// Anything else (no connection yet, restore refused, ...).
    NotReady,
}

impl NotReadyCode {
    /// The code as `/v1/health` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KmsAccessDenied => "kms_access_denied",
            Self::KmsError => "kms_error",
            Self::ConfigureRefused => "configure_refused",
            Self::NotReady => "not_ready",
        }
    }

    /// The code for an initialisation that failed with `e`.
    fn of(e: &Error) -> Self {
        match e {
            Error::Enclave(WireError::Kms { code, .. }) if code == "AccessDeniedException" => {
                Self::KmsAccessDenied
            }
            Error::Enclave(WireError::Kms { .. }) => Self::KmsError,
            Error::Enclave(WireError::BadRequest { .. }) => Self::ConfigureRefused,
            _ => Self::NotReady,
        }
    }
}

/// Handle to the relay. Cheap to clone; the supervisors stop when
/// [`Relay::shutdown`] is called.
#[derive(Clone, Debug)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RelayConfig,
    init: Arc<dyn SessionInit>,
    slots: Vec<RwLock<Option<Conn>>>,
    next_slot: AtomicUsize,
    next_id: AtomicU64,
    health: RwLock<Option<Health>>,
    /// Set, once and for good, when the enclave turns out configured by another.
    alarm: RwLock<Option<String>>,
    /// Why the last initialisation failed; cleared when a connection is ready.
    not_ready: RwLock<Option<NotReady>>,
    /// Credentials that replaced those of `config.kms` ([`Relay::set_credentials`]).
    refreshed: RwLock<Option<AwsCredentials>>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl Relay {
    /// Starts one supervisor task per connection slot. Must be called inside a tokio
    /// runtime. Returns at once; [`Relay::health`] turns `Some` when a connection is
    /// initialised. `init` prepares every new connection before it is published.
    pub fn start(config: RelayConfig, init: Arc<dyn SessionInit>) -> Relay {
        let n = config.connections.max(1);
        let inner = Arc::new(Inner {
            config,
            init,
            slots: (0..n).map(|_| RwLock::new(None)).collect(),
            next_slot: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            health: RwLock::new(None),
            alarm: RwLock::new(None),
            not_ready: RwLock::new(None),
            refreshed: RwLock::new(None),
            supervisors: Mutex::new(Vec::new()),
        });
        let handles = (0..n)
            .map(|i| tokio::spawn(session::supervise(Arc::clone(&inner), i)))
            .collect();
        *lock(&inner.supervisors) = handles;
        Relay { inner }
    }

    /// Why the relay stopped for good, if it did: the enclave was found configured for
    /// another KMS target than this parent's (module docs, "Alarm").
    pub fn alarm(&self) -> Option<String> {
        read(&self.inner.alarm).clone()
    }

    /// Mode and PCRs of the enclave if at least one connection is initialised, else
    /// `None` (not ready, or the alarm is raised).
    pub fn health(&self) -> Option<Health> {
        if self.alarm().is_some() {
            return None;
        }
        let any = self.inner.slots.iter().any(|s| read(s).is_some());
        if any {
            read(&self.inner.health).clone()
        } else {
            None
        }
    }

    /// Why no connection is ready, when the last initialisation failed (`None` when
    /// ready, or before the first attempt ended).
    pub fn not_ready(&self) -> Option<NotReady> {
        if self.health().is_some() {
            return None;
        }
        read(&self.inner.not_ready).clone()
    }

    /// Sends `request` on a ready connection (round robin) and waits for the answer.
    ///
    /// # Errors
    /// [`Error::EnclaveConfiguredByAnother`] once the alarm is raised;
    /// [`Error::EnclaveUnavailable`] if no connection is ready or it drops before the
    /// answer; [`Error::EnclaveTimeout`] after the deadline; [`Error::Enclave`] when the
    /// enclave refuses; [`Error::Protocol`] for an undecodable answer.
    pub async fn call(&self, request: Request) -> Result<ResponseBody, Error> {
        if let Some(reason) = self.alarm() {
            return Err(Error::EnclaveConfiguredByAnother(reason));
        }
        let conn = self.pick()?;
        let (name, started) = (request.name(), std::time::Instant::now());
        let answer = conn.call(&self.inner, request).await;
        self.inner
            .config
            .metrics
            .observe_round_trip(name, started.elapsed());
        answer
    }

    /// [`Relay::call`], then `expect` picks the answer the request must get; any other
    /// answer is [`Error::UnexpectedResponse`] naming `what` (the request kind).
    ///
    /// ```ignore
    /// let document = relay
    ///     .call_for("Attestation", request, |a| match a {
    ///         ResponseBody::Attestation { document } => Some(document),
    ///         _ => None,
    ///     })
    ///     .await?;
    /// ```
    ///
    /// # Errors
    /// As [`Relay::call`]; [`Error::UnexpectedResponse`].
    pub async fn call_for<T>(
        &self,
        what: &'static str,
        request: Request,
        expect: impl FnOnce(ResponseBody) -> Option<T>,
    ) -> Result<T, Error> {
        expect(self.call(request).await?).ok_or(Error::UnexpectedResponse(what))
    }

    fn pick(&self) -> Result<Conn, Error> {
        let slots = &self.inner.slots;
        let start = self.inner.next_slot.fetch_add(1, Ordering::Relaxed);
        (0..slots.len())
            .find_map(|k| read(&slots[(start + k) % slots.len()]).clone())
            .ok_or_else(|| Error::EnclaveUnavailable("no connection to the enclave".into()))
    }

    /// Replaces the AWS credentials sent in `Configure` and sends `Configure` with them
    /// on every ready connection (the enclave swaps its KMS client's credentials;
    /// identical ones are a no-op there). Connections made later send them too.
    ///
    /// # Errors
    /// The first failure among the connections
    /// ([`Error::EnclaveConfiguredByAnother`], raising the alarm, if the enclave runs
    /// for another KMS target, or a KMS error if KMS refused the new credentials: the
    /// enclave then keeps its previous ones). `Ok` when no connection is ready: the
    /// next one sends them.
    pub async fn set_credentials(&self, credentials: AwsCredentials) -> Result<(), Error> {
        *write(&self.inner.refreshed) = Some(credentials);
        let conns: Vec<Conn> = self
            .inner
            .slots
            .iter()
            .filter_map(|s| read(s).clone())
            .collect();
        let mut first_error = None;
        for conn in conns {
            let result = conn
                .call(&self.inner, session::configure_request(&self.inner))
                .await;
            match result {
                Ok(ResponseBody::Configured) => {}
                Ok(_) => {
                    first_error.get_or_insert(Error::UnexpectedResponse("Configure"));
                }
                // A connection that just dropped reconnects and sends them then.
                Err(Error::EnclaveUnavailable(_)) => {}
                Err(Error::Enclave(WireError::AlreadyConfigured)) => {
                    let e = session::raise_alarm(&self.inner, None);
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the enclave refused the refreshed credentials");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the supervisors (and with them every connection task).
    pub fn shutdown(&self) {
        for h in lock(&self.inner.supervisors).drain(..) {
            h.abort();
        }
    }
}

/// Locks a std mutex; a poisoned lock still guards consistent data here (every
/// critical section is a single map or field update).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
