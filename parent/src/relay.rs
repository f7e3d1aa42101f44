//! The relay to the enclave: N multiplexed connections, each with a writer task, a
//! reader task and a map of pending requests (`request_id → oneshot`), so many requests
//! share a connection and complete out of order.
//!
//! Life of a connection slot (one supervisor task each):
//! 1. connect (backoff 100 ms doubling to 5 s on failure);
//! 2. initialise: `Status`, then `Configure` with the current credentials (a `Booting`
//!    or `Configured` enclave gets ready; a `Ready` one takes them as a credentials
//!    refresh, a no-op when unchanged, and a failure there only logs: the enclave keeps
//!    serving with its previous ones); make sure the keyring exists (load it from the store, or `CreateKeyring` and store its data-key
//!    ciphertext durably, once for all slots);
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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ekms_shared::{
    decode_response, encode_request, frame_len, EnclaveState, KeyringRef, Mode, Request,
    RequestFrame, ResponseBody, StatusInfo, WireError, FRAME_PREFIX_LEN, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{AwsCredentials, KmsSettings};
use crate::error::Error;
use crate::io::{connect_enclave, EnclaveStream};
use crate::journal::Journal;
use crate::store::Store;

/// First and largest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Frames queued for one connection's writer before senders wait.
const WRITE_QUEUE: usize = 1024;

/// Epoch of a keyring created by the parent (rotation to later epochs is a next step).
const FIRST_EPOCH: u32 = 1;

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
    /// Keyring new keys are created in.
    pub keyring: String,
    /// Where round trips are timed ([`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
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
    store: Store,
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
    /// The current keyring; the async mutex makes creation happen once.
    keyring: tokio::sync::Mutex<Option<KeyringRef>>,
    /// One `Restore` at a time from this parent (each connection initialises itself).
    restoring: tokio::sync::Mutex<()>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl Relay {
    /// Starts one supervisor task per connection slot. Must be called inside a tokio
    /// runtime. Returns at once; [`Relay::health`] turns `Some` when a connection is
    /// initialised.
    pub fn start(config: RelayConfig, store: Store) -> Relay {
        let n = config.connections.max(1);
        let inner = Arc::new(Inner {
            config,
            store,
            slots: (0..n).map(|_| RwLock::new(None)).collect(),
            next_slot: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            health: RwLock::new(None),
            alarm: RwLock::new(None),
            not_ready: RwLock::new(None),
            refreshed: RwLock::new(None),
            keyring: tokio::sync::Mutex::new(None),
            restoring: tokio::sync::Mutex::new(()),
            supervisors: Mutex::new(Vec::new()),
        });
        let handles = (0..n)
            .map(|i| tokio::spawn(supervise(Arc::clone(&inner), i)))
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

    /// The keyring new keys go to, once initialised.
    ///
    /// # Errors
    /// [`Error::EnclaveConfiguredByAnother`] once the alarm is raised;
    /// [`Error::EnclaveUnavailable`] before the first connection is initialised.
    pub async fn current_keyring(&self) -> Result<KeyringRef, Error> {
        if let Some(reason) = self.alarm() {
            return Err(Error::EnclaveConfiguredByAnother(reason));
        }
        self.inner
            .keyring
            .lock()
            .await
            .clone()
            .ok_or_else(|| Error::EnclaveUnavailable("the relay is not ready".into()))
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
            let result = conn.call(&self.inner, configure_request(&self.inner)).await;
            match result {
                Ok(ResponseBody::Configured) => {}
                Ok(_) => {
                    first_error.get_or_insert(Error::UnexpectedResponse("Configure"));
                }
                // A connection that just dropped reconnects and sends them then.
                Err(Error::EnclaveUnavailable(_)) => {}
                Err(Error::Enclave(WireError::AlreadyConfigured)) => {
                    let e = raise_alarm(&self.inner, None);
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

/// A published connection: the writer's queue and the pending map.
#[derive(Clone, Debug)]
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Arc<Mutex<Pending>>,
}

type Waiter = oneshot::Sender<Result<ResponseBody, Error>>;

#[derive(Debug, Default)]
struct Pending {
    /// Set when the connection is gone: no new request may wait on it.
    closed: bool,
    waiters: HashMap<u64, Waiter>,
}

/// Removes a request from the pending map when its caller stops waiting.
struct PendingGuard<'a> {
    pending: &'a Mutex<Pending>,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiters.remove(&self.id);
    }
}

impl Conn {
    async fn call(&self, inner: &Inner, request: Request) -> Result<ResponseBody, Error> {
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(&RequestFrame::new(id, request))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if p.closed {
                return Err(Error::EnclaveUnavailable("the connection closed".into()));
            }
            p.waiters.insert(id, tx);
        }
        let _guard = PendingGuard {
            pending: &self.pending,
            id,
        };
        let timeout = inner.config.request_timeout;
        let exchange = async {
            self.tx
                .send(frame)
                .await
                .map_err(|_| Error::EnclaveUnavailable("the connection closed".into()))?;
            rx.await.map_err(|_| {
                Error::EnclaveUnavailable("the connection closed during the request".into())
            })?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::EnclaveTimeout(timeout.as_secs()))?
    }

    /// Fails every pending request and refuses new ones.
    fn close(&self) {
        let waiters = {
            let mut p = lock(&self.pending);
            p.closed = true;
            std::mem::take(&mut p.waiters)
        };
        // Dropping the senders wakes each caller with `EnclaveUnavailable`.
        drop(waiters);
    }
}

/// Aborts a task when dropped (so aborting a supervisor stops its connection tasks).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn supervise(inner: Arc<Inner>, slot: usize) {
    let addr = inner.config.enclave.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        let stream = match connect_enclave(&addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(slot, %addr, error = %e, "enclave connect failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let (conn, mut writer, mut reader) = spawn_connection(stream);
        match initialise(&inner, &conn).await {
            Ok(status) => {
                tracing::info!(slot, %addr, mode = ?status.mode, "enclave connection ready");
                *write(&inner.not_ready) = None;
                *write(&inner.health) = Some(Health {
                    mode: status.mode,
                    pcrs: status
                        .pcrs
                        .into_iter()
                        .map(|(k, v)| (k, v.into_vec()))
                        .collect(),
                });
                *write(&inner.slots[slot]) = Some(conn.clone());
                backoff = BACKOFF_MIN;
            }
            Err(e @ Error::EnclaveConfiguredByAnother(_)) => {
                // Fatal (module docs, "Alarm"): this slot stops for good.
                tracing::error!(slot, %addr, error = %e, "enclave connection abandoned");
                conn.close();
                return;
            }
            Err(e) => {
                let code = NotReadyCode::of(&e);
                match code {
                    NotReadyCode::ConfigureRefused => tracing::error!(
                        slot, %addr, error = %e, code = code.as_str(),
                        "the enclave refuses this parent's KMS settings (not the KMS key, \
                         region or endpoint its image is pinned to?)"
                    ),
                    NotReadyCode::KmsAccessDenied => tracing::error!(
                        slot, %addr, error = %e, code = code.as_str(),
                        "KMS refused the enclave's attested GenerateDataKey on the pinned key: \
                         the key policy does not release data keys to this enclave image \
                         (compare the policy's kms:RecipientAttestation:ImageSha384 with \
                         the EIF's PCR0; a debug-mode enclave has PCR0 all zeros) or the \
                         instance role may not use the key; the enclave stays not ready"
                    ),
                    _ => tracing::warn!(slot, %addr, error = %e, code = code.as_str(),
                        "enclave initialisation failed"),
                }
                *write(&inner.not_ready) = Some(NotReady {
                    code,
                    reason: e.to_string(),
                });
                conn.close();
                drop((writer, reader));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        // Runs until either half of the connection ends.
        tokio::select! {
            _ = &mut writer.0 => {}
            _ = &mut reader.0 => {}
        }
        *write(&inner.slots[slot]) = None;
        conn.close();
        drop((writer, reader));
        tracing::warn!(slot, %addr, "enclave connection lost; reconnecting");
        tokio::time::sleep(backoff).await;
    }
}

/// Splits the stream and starts its writer and reader tasks.
fn spawn_connection(stream: EnclaveStream) -> (Conn, AbortOnDrop, AbortOnDrop) {
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let pending = Arc::new(Mutex::new(Pending::default()));
    let writer = tokio::spawn(async move {
        let mut wr = BufWriter::new(wr);
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
            // Batch whatever else is queued into the same flush.
            while let Ok(more) = rx.try_recv() {
                if wr.write_all(&more).await.is_err() {
                    return;
                }
            }
            if wr.flush().await.is_err() {
                return;
            }
        }
    });
    let reader_pending = Arc::clone(&pending);
    let reader = tokio::spawn(async move {
        if let Err(e) = read_loop(&mut rd, &reader_pending).await {
            tracing::debug!(error = %e, "enclave reader stopped");
        }
    });
    (
        Conn { tx, pending },
        AbortOnDrop(writer),
        AbortOnDrop(reader),
    )
}

/// Reads frames until EOF or an undecodable frame, handing each answer to its waiter.
async fn read_loop(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    pending: &Mutex<Pending>,
) -> Result<(), Error> {
    loop {
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        rd.read_exact(&mut prefix)
            .await
            .map_err(|e| Error::io("reading a frame", e))?;
        let len = frame_len(prefix)?;
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body)
            .await
            .map_err(|e| Error::io("reading a frame", e))?;
        let (id, result) = match decode_response(&body) {
            Ok(frame) if frame.version == PROTOCOL_VERSION => {
                (frame.request_id, frame.body.map_err(Error::Enclave))
            }
            Ok(frame) => (
                frame.request_id,
                Err(Error::Internal(format!(
                    "response version {}",
                    frame.version
                ))),
            ),
            // The header was readable: fail that request, keep the connection.
            Err(e) => match e.request_id() {
                Some(id) => (id, Err(Error::Protocol(e))),
                None => return Err(Error::Protocol(e)),
            },
        };
        let waiter = lock(pending).waiters.remove(&id);
        match waiter {
            Some(w) => {
                let _ = w.send(result);
            }
            None => tracing::debug!(request_id = id, "answer for a request no longer waiting"),
        }
    }
}

/// `Configure` with the KMS settings and the current credentials.
fn configure_request(inner: &Inner) -> Request {
    let mut kms = inner.config.kms.to_wire();
    if let Some(fresh) = read(&inner.refreshed).as_ref() {
        kms.credentials = fresh.to_wire();
    }
    Request::Configure {
        kms,
        dek_cache: inner.config.dek_cache,
    }
}

/// Steps 2 and 3 of the module doc: status, configure, keyring, restore.
async fn initialise(inner: &Inner, conn: &Conn) -> Result<StatusInfo, Error> {
    let status = match conn.call(inner, Request::Status).await? {
        ResponseBody::Status(s) => s,
        _ => return Err(Error::UnexpectedResponse("Status")),
    };
    // A Ready enclave reports its target: compare before sending our credentials.
    if let Some(theirs) = &status.kms_target {
        if *theirs != inner.config.kms.to_wire().target() {
            return Err(raise_alarm(inner, Some(theirs)));
        }
    }
    match conn.call(inner, configure_request(inner)).await {
        Ok(ResponseBody::Configured) => {}
        Ok(_) => return Err(Error::UnexpectedResponse("Configure")),
        Err(Error::Enclave(WireError::AlreadyConfigured)) => {
            return Err(raise_alarm(inner, status.kms_target.as_ref()))
        }
        // A Ready enclave serves on with its previous credentials.
        Err(e) if status.state == EnclaveState::Ready => {
            tracing::warn!(error = %e, "credentials refresh refused by the enclave");
        }
        Err(e) => return Err(e),
    }
    ensure_keyring(inner, conn).await?;
    if !status.restored {
        restore(inner, conn).await?;
    }
    Ok(status)
}

/// Step 3: hands a freshly started enclave its durable state (`Restore` with the
/// newest stored checkpoint and audit record), stores the checkpoint it answers, and
/// commits it ([`crate::journal`]). An enclave restored meanwhile (through another
/// connection) answers `BadRequest`, which is fine. A refusal (a checkpoint that does
/// not verify, records the checkpoint contradicts) leaves the enclave unable to
/// serve keys: it is logged at error level, and the connection retried.
async fn restore(inner: &Inner, conn: &Conn) -> Result<(), Error> {
    let _one_at_a_time = inner.restoring.lock().await;
    // Another connection may have restored it while this one waited.
    if let ResponseBody::Status(s) = conn.call(inner, Request::Status).await? {
        if s.restored {
            return Ok(());
        }
    }
    let journal = Journal::new(inner.store.clone());
    let keyring = inner
        .keyring
        .lock()
        .await
        .clone()
        .ok_or(Error::UnexpectedResponse("Restore"))?;
    let checkpoint = journal.latest_checkpoint().await?;
    let last_audit = journal.latest_record().await?.map(|r| r.signed);
    let request = Request::Restore {
        keyring,
        checkpoint,
        last_audit,
    };
    let (checkpoint, policy) = match conn.call(inner, request).await {
        Ok(ResponseBody::CheckpointPending { checkpoint, policy }) => (checkpoint, policy),
        Ok(_) => return Err(Error::UnexpectedResponse("Restore")),
        Err(Error::Enclave(WireError::BadRequest { message }))
            if message.contains("already restored") =>
        {
            return Ok(())
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "the enclave refused the stored checkpoint or audit chain: keys stay unusable"
            );
            return Err(e);
        }
    };
    if policy.is_some() {
        return Err(Error::UnexpectedResponse("Restore"));
    }
    let seq = checkpoint.seq;
    journal.store_checkpoint(checkpoint, None).await?;
    let committed = conn.call(inner, Request::Commit { seq }).await?;
    journal.committed(committed).await?;
    tracing::info!(checkpoint = seq, "durable state restored");
    Ok(())
}

/// Raises the alarm (module docs): the enclave reported a KMS target (`theirs`, when
/// known) other than ours, or answered `AlreadyConfigured`, so it is Ready for another
/// KMS target. Logs at error level once, unpublishes every connection, and returns the
/// error callers pass on.
fn raise_alarm(inner: &Inner, theirs: Option<&ekms_shared::KmsTarget>) -> Error {
    let describe = |t: &ekms_shared::KmsTarget| {
        format!(
            "region {}, endpoint {}, key {}",
            t.region,
            t.endpoint_url.as_deref().unwrap_or("(regional)"),
            t.kms_key_id
        )
    };
    let ours = describe(&inner.config.kms.to_wire().target());
    let theirs = theirs.map_or_else(|| "another".to_owned(), |t| format!("({})", describe(t)));
    let reason = format!(
        "the enclave is serving a KMS target {theirs} other than this parent's ({ours}): \
         someone else configured it first, possibly with a KMS that knows its data keys. \
         Signing is stopped; restart the enclave, then the parent"
    );
    {
        let mut alarm = write(&inner.alarm);
        if alarm.is_none() {
            tracing::error!(alarm = %reason, "ALARM: enclave configured by another");
            *alarm = Some(reason.clone());
        }
    }
    for slot in &inner.slots {
        if let Some(conn) = write(slot).take() {
            conn.close();
        }
    }
    Error::EnclaveConfiguredByAnother(reason)
}

async fn ensure_keyring(inner: &Inner, conn: &Conn) -> Result<(), Error> {
    let mut current = inner.keyring.lock().await;
    if current.is_some() {
        return Ok(());
    }
    let name = inner.config.keyring.clone();
    if let Some(k) = inner.store.latest_keyring(name.clone()).await? {
        *current = Some(k);
        return Ok(());
    }
    let request = Request::CreateKeyring {
        keyring: name.clone(),
        epoch: FIRST_EPOCH,
    };
    let created = match conn.call(inner, request).await? {
        ResponseBody::KeyringCreated {
            keyring,
            epoch,
            dek_ciphertext,
        } if keyring == name && epoch == FIRST_EPOCH && !dek_ciphertext.is_empty() => KeyringRef {
            keyring,
            epoch,
            dek_ciphertext,
        },
        _ => return Err(Error::UnexpectedResponse("CreateKeyring")),
    };
    inner
        .store
        .insert_keyring(created.clone(), crate::now_ms())
        .await?;
    tracing::info!(keyring = %name, epoch = FIRST_EPOCH, "keyring created");
    *current = Some(created);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{relay_config, wait_ready, FakeEnclave, Harness};
    use ekms_shared::{PayloadKind, SealedKeyRecord, SealedPolicy, SignPayload};
    use std::sync::atomic::Ordering::SeqCst;

    /// A `Sign` request whose payload steers the fake (record and policy are dummies:
    /// the fake acts on `drop` and `hang` before looking at them).
    fn sign(payload: &[u8]) -> Request {
        Request::Sign {
            record: SealedKeyRecord {
                version: 1,
                key_id: "k".into(),
                owner: None,
                algorithm: ekms_shared::Algorithm::Secp256k1,
                public_key: vec![2; 33],
                keyring: "default".into(),
                epoch: 1,
                salt: [0; 32],
                nonce: [0; 12],
                ciphertext: vec![],
            },
            keyring: KeyringRef {
                keyring: "default".into(),
                epoch: 1,
                dek_ciphertext: vec![1],
            },
            policy: SealedPolicy {
                key_id: "k".into(),
                version: 1,
                policy_json: "{}".into(),
                mac: [0; 32],
            },
            payload: SignPayload {
                kind: PayloadKind::EvmTransaction,
                bytes: payload.to_vec(),
            },
        }
    }

    fn attest() -> Request {
        Request::Attestation {
            nonce: Some(vec![1, 2, 3]),
            user_data: None,
        }
    }

    #[tokio::test]
    async fn configures_booting_enclave_and_creates_keyring_once() {
        let h = Harness::start(3).await;
        // Let every slot finish initialising.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.fake.state.configures.load(SeqCst), 1);
        assert_eq!(h.fake.state.keyrings_created.load(SeqCst), 1);
        assert_eq!(h.fake.state.connections.load(SeqCst), 3);
        let stored = h
            .store
            .latest_keyring("default".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.dek_ciphertext, b"dek-ciphertext");
        assert_eq!(h.relay.current_keyring().await.unwrap(), stored);
        let health = h.relay.health().unwrap();
        assert_eq!(health.mode, Mode::Simulation);
        assert_eq!(health.pcrs[&0], crate::testing::fake_pcr0());
        // Requests are multiplexed and answered by id.
        let calls = (0..50).map(|_| h.relay.call(attest()));
        for r in futures_join_all(calls).await {
            assert!(matches!(r, Ok(ResponseBody::Attestation { .. })));
        }
    }

    /// Issue 9: a KMS that refuses the attested round trip (the key policy pins
    /// another PCR0) keeps the relay not ready, and says why; once the policy is right,
    /// the next attempt gets it ready and the reason is gone.
    #[tokio::test]
    async fn reports_why_the_enclave_is_not_ready_until_kms_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enclave.sock");
        let fake = FakeEnclave::start(&path);
        let denied = WireError::Kms {
            code: "AccessDeniedException".into(),
            message: "not authorized to perform: kms:GenerateDataKey".into(),
        };
        *fake.state.configure_error.lock().unwrap() = Some(denied);
        let relay = Relay::start(relay_config(&path, 1), Store::open_in_memory().unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let not_ready = loop {
            if let Some(n) = relay.not_ready() {
                break n;
            }
            assert!(tokio::time::Instant::now() < deadline, "no reason recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(not_ready.code, NotReadyCode::KmsAccessDenied);
        assert_eq!(not_ready.code.as_str(), "kms_access_denied");
        assert!(
            not_ready.reason.contains("AccessDeniedException"),
            "{not_ready:?}"
        );
        assert!(relay.health().is_none());
        assert_eq!(fake.state.configures.load(SeqCst), 0);

        *fake.state.configure_error.lock().unwrap() = None;
        wait_ready(&relay).await;
        assert_eq!(relay.not_ready(), None);
        relay.shutdown();
    }

    #[test]
    fn not_ready_codes_are_distinct_and_classified() {
        let all = [
            NotReadyCode::KmsAccessDenied,
            NotReadyCode::KmsError,
            NotReadyCode::ConfigureRefused,
            NotReadyCode::NotReady,
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), all.len());
        let kms = |code: &str| {
            Error::Enclave(WireError::Kms {
                code: code.into(),
                message: String::new(),
            })
        };
        assert_eq!(
            NotReadyCode::of(&kms("AccessDeniedException")),
            NotReadyCode::KmsAccessDenied
        );
        assert_eq!(
            NotReadyCode::of(&kms("ThrottlingException")),
            NotReadyCode::KmsError
        );
        let refused = Error::Enclave(WireError::BadRequest {
            message: "x".into(),
        });
        assert_eq!(NotReadyCode::of(&refused), NotReadyCode::ConfigureRefused);
        assert_eq!(
            NotReadyCode::of(&Error::EnclaveUnavailable("x".into())),
            NotReadyCode::NotReady
        );
    }

    /// Awaits all futures concurrently (a `join_all` without the futures crate), so the
    /// requests are in flight on the connections at the same time.
    async fn futures_join_all<F: std::future::Future>(
        fs: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let mut pinned: Vec<_> = fs.map(Box::pin).collect();
        let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut done = true;
            for (i, f) in pinned.iter_mut().enumerate() {
                if out[i].is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => out[i] = Some(v),
                        std::task::Poll::Pending => done = false,
                    }
                }
            }
            if done {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        out.into_iter().map(|o| o.unwrap()).collect()
    }

    #[tokio::test]
    async fn reuses_stored_keyring_on_a_new_run() {
        let h = Harness::start(1).await;
        let first = h.relay.current_keyring().await.unwrap();
        h.relay.shutdown();
        let fake2 = FakeEnclave::start(&h.dir.path().join("enclave2.sock"));
        let relay2 = Relay::start(relay_config(&fake2.path, 1), h.store.clone());
        wait_ready(&relay2).await;
        assert_eq!(fake2.state.keyrings_created.load(SeqCst), 0);
        assert_eq!(relay2.current_keyring().await.unwrap(), first);
        relay2.shutdown();
    }

    #[tokio::test]
    async fn rejects_requests_while_no_enclave_is_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().unwrap();
        let relay = Relay::start(relay_config(&dir.path().join("none.sock"), 2), store);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(relay.health().is_none());
        assert!(matches!(
            relay.call(attest()).await,
            Err(Error::EnclaveUnavailable(_))
        ));
        assert!(matches!(
            relay.current_keyring().await,
            Err(Error::EnclaveUnavailable(_))
        ));
        relay.shutdown();
    }

    #[tokio::test]
    async fn rejects_in_flight_request_when_connection_drops_then_recovers() {
        let h = Harness::start(1).await;
        assert!(matches!(
            h.relay.call(sign(b"drop")).await,
            Err(Error::EnclaveUnavailable(_))
        ));
        wait_ready(&h.relay).await;
        let mut ok = false;
        for _ in 0..100 {
            if let Ok(ResponseBody::Attestation { document }) = h.relay.call(attest()).await {
                assert_eq!(document, b"doc:\x01\x02\x03");
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "the relay reconnected");
        assert_eq!(h.fake.state.connections.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn reconfigures_a_restarted_enclave_without_a_new_keyring() {
        let mut h = Harness::start(2).await;
        let state = Arc::clone(&h.fake.state);
        let path = h.fake.path.clone();
        // Restart: every connection closes, the new enclave boots unconfigured.
        h.fake = FakeEnclave::start_with(&path, Arc::clone(&state));
        let mut ok = false;
        for _ in 0..200 {
            if h.relay.call(attest()).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "the relay came back");
        assert_eq!(state.configures.load(SeqCst), 2);
        assert_eq!(state.keyrings_created.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn raises_the_alarm_when_the_enclave_was_configured_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(crate::testing::FakeState::default());
        let fake = FakeEnclave::start_configured_by(
            &dir.path().join("e.sock"),
            Arc::clone(&state),
            Some("arn:aws:kms:us-east-1:444455556666:key/attacker"),
        );
        let relay = Relay::start(relay_config(&fake.path, 2), store_with_keyring().await);
        for _ in 0..300 {
            if relay.alarm().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let alarm = relay.alarm().expect("the alarm is raised");
        // It names both targets: ours and the one the enclave reported in Status.
        assert!(alarm.contains("alias/ekms"), "{alarm}");
        assert!(alarm.contains("key/attacker"), "{alarm}");
        assert!(relay.health().is_none());
        assert!(matches!(
            relay.call(sign(b"ok")).await,
            Err(Error::EnclaveConfiguredByAnother(_))
        ));
        assert!(matches!(
            relay.current_keyring().await,
            Err(Error::EnclaveConfiguredByAnother(_))
        ));
        // Sticky: the supervisors stopped, nothing is published again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(relay.inner.slots.iter().all(|s| read(s).is_none()));
        assert!(relay.alarm().is_some());
        assert_eq!(state.configures.load(SeqCst), 0);
        relay.shutdown();
    }

    #[tokio::test]
    async fn takes_a_same_target_configure_as_a_refresh_without_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(crate::testing::FakeState::default());
        // Configured first by someone else, but for exactly our target: a credentials
        // refresh, no alarm.
        let fake = FakeEnclave::start_configured_by(
            &dir.path().join("e.sock"),
            Arc::clone(&state),
            Some("alias/ekms"),
        );
        let relay = Relay::start(relay_config(&fake.path, 2), store_with_keyring().await);
        wait_ready(&relay).await;
        assert!(relay.alarm().is_none());
        assert!(relay.call(attest()).await.is_ok());
        relay.shutdown();
    }

    #[tokio::test]
    async fn raises_the_alarm_when_a_credentials_refresh_meets_another_target() {
        let h = Harness::start(1).await;
        let state = Arc::clone(&h.fake.state);
        // The enclave now serves another target (as if restarted and taken over between
        // two refreshes, on a connection the relay kept).
        *state.target.lock().unwrap() = Some("arn:aws:kms:us-east-1:444455556666:key/x".into());
        let r = h
            .relay
            .set_credentials(AwsCredentials::new("ASIANEW".into(), "s".into(), None))
            .await;
        assert!(
            matches!(r, Err(Error::EnclaveConfiguredByAnother(_))),
            "{r:?}"
        );
        assert!(h.relay.alarm().is_some());
        assert!(matches!(
            h.relay.call(attest()).await,
            Err(Error::EnclaveConfiguredByAnother(_))
        ));
    }

    #[tokio::test]
    async fn rejects_late_answers_after_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeEnclave::start(&dir.path().join("e.sock"));
        let mut cfg = relay_config(&fake.path, 1);
        cfg.request_timeout = Duration::from_millis(200);
        let relay = Relay::start(cfg, Store::open_in_memory().unwrap());
        wait_ready(&relay).await;
        assert!(matches!(
            relay.call(sign(b"hang")).await,
            Err(Error::EnclaveTimeout(_))
        ));
        let conn = relay.pick().unwrap();
        assert!(
            lock(&conn.pending).waiters.is_empty(),
            "the waiter was removed"
        );
        relay.shutdown();
    }

    /// A Ready enclave that records the access key id of every `Configure` and refuses
    /// those whose id starts with `REFUSE` with a KMS error, as the real one does when
    /// KMS rejects new credentials (it keeps its previous ones).
    async fn recording_enclave(
        path: &std::path::Path,
    ) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
        use ekms_shared::{decode_request, encode_response, ResponseFrame};
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    loop {
                        let mut prefix = [0u8; FRAME_PREFIX_LEN];
                        if stream.read_exact(&mut prefix).await.is_err() {
                            return;
                        }
                        let mut body = vec![0; frame_len(prefix).unwrap()];
                        stream.read_exact(&mut body).await.unwrap();
                        let frame = decode_request(&body).unwrap();
                        let answer = match frame.body {
                            Request::Status => Ok(ResponseBody::Status(StatusInfo {
                                state: EnclaveState::Ready,
                                mode: Mode::Simulation,
                                pcrs: BTreeMap::new(),
                                kms_target: None,
                                restored: true,
                                stopped: false,
                            })),
                            Request::Configure { kms, .. } => {
                                let id = kms.credentials.access_key_id;
                                let refuse = id.starts_with("REFUSE");
                                lock(&s).push(id);
                                if refuse {
                                    Err(WireError::Kms {
                                        code: "UnrecognizedClientException".into(),
                                        message: "invalid security token".into(),
                                    })
                                } else {
                                    Ok(ResponseBody::Configured)
                                }
                            }
                            _ => Ok(ResponseBody::Attestation {
                                document: b"doc".to_vec(),
                            }),
                        };
                        let frame = match answer {
                            Ok(b) => ResponseFrame::ok(frame.request_id, b),
                            Err(e) => ResponseFrame::err(frame.request_id, e),
                        };
                        let bytes = encode_response(&frame).unwrap();
                        if stream.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (seen, task)
    }

    async fn store_with_keyring() -> Store {
        let store = Store::open_in_memory().unwrap();
        let ring = KeyringRef {
            keyring: "default".into(),
            epoch: 1,
            dek_ciphertext: b"dek".to_vec(),
        };
        store.insert_keyring(ring, 0).await.unwrap();
        store
    }

    #[tokio::test]
    async fn pushes_refreshed_credentials_to_a_ready_enclave_on_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let (seen, task) = recording_enclave(&path).await;
        let relay = Relay::start(relay_config(&path, 2), store_with_keyring().await);
        wait_ready(&relay).await;
        for _ in 0..100 {
            if relay.inner.slots.iter().all(|s| read(s).is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Both connections sent Configure although the enclave was already Ready.
        assert_eq!(*lock(&seen), ["AKIATEST", "AKIATEST"]);
        relay
            .set_credentials(AwsCredentials::new(
                "ASIANEW".into(),
                "s2".into(),
                Some("t2".into()),
            ))
            .await
            .unwrap();
        assert_eq!(lock(&seen)[2..], ["ASIANEW", "ASIANEW"]);
        match configure_request(&relay.inner) {
            Request::Configure { kms, .. } => {
                assert_eq!(kms.credentials.secret_access_key, "s2");
                assert_eq!(kms.credentials.session_token.as_deref(), Some("t2"));
                assert_eq!(kms.kms_key_id, "alias/ekms");
            }
            other => panic!("{other:?}"),
        }
        relay.shutdown();
        task.abort();
    }

    #[tokio::test]
    async fn rejects_refused_credentials_but_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let (seen, task) = recording_enclave(&path).await;
        let relay = Relay::start(relay_config(&path, 1), store_with_keyring().await);
        wait_ready(&relay).await;
        let refused = relay
            .set_credentials(AwsCredentials::new("REFUSE1".into(), "s".into(), None))
            .await;
        assert!(
            matches!(&refused, Err(Error::Enclave(WireError::Kms { code, .. })) if code == "UnrecognizedClientException"),
            "{refused:?}"
        );
        // The connection is still up and serving.
        assert!(relay.call(attest()).await.is_ok());
        // A reconnection to a Ready enclave that refuses the refresh still serves.
        relay.shutdown();
        let relay = Relay::start(relay_config(&path, 1), store_with_keyring().await);
        relay
            .set_credentials(AwsCredentials::new("REFUSE2".into(), "s".into(), None))
            .await
            .unwrap(); // no connection yet: sent when one is made
        wait_ready(&relay).await;
        assert!(relay.call(attest()).await.is_ok());
        assert_eq!(lock(&seen).last().map(String::as_str), Some("REFUSE2"));
        relay.shutdown();
        task.abort();
    }
}
