//! The relay to the enclave: N multiplexed connections, each with a writer task, a
//! reader task and a map of pending requests (`request_id → oneshot`), so many requests
//! share a connection and complete out of order.
//!
//! Life of a connection slot (one supervisor task each):
//! 1. connect (backoff 100 ms doubling to 5 s on failure);
//! 2. initialise: `Status`; if the enclave is `Booting`, `Configure`; make sure the
//!    keyring exists (load it from the store, or `CreateKeyring` and store its data-key
//!    ciphertext durably, once for all slots);
//! 3. publish the slot: requests may use it, health turns ready;
//! 4. when the reader or writer ends (the enclave restarted, a frame did not decode),
//!    unpublish the slot, fail every pending request with
//!    [`Error::EnclaveUnavailable`], and go back to 1.
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

use crate::config::KmsSettings;
use crate::error::Error;
use crate::io::{connect_enclave, EnclaveStream};
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
}

/// What `GET /v1/health` shows once ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Simulation or Nitro, as the enclave reports.
    pub mode: Mode,
    /// PCR index → value, as the enclave reports.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
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
    /// The current keyring; the async mutex makes creation happen once.
    keyring: tokio::sync::Mutex<Option<KeyringRef>>,
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
            keyring: tokio::sync::Mutex::new(None),
            supervisors: Mutex::new(Vec::new()),
        });
        let handles = (0..n)
            .map(|i| tokio::spawn(supervise(Arc::clone(&inner), i)))
            .collect();
        *lock(&inner.supervisors) = handles;
        Relay { inner }
    }

    /// Mode and PCRs of the enclave if at least one connection is initialised, else
    /// `None` (not ready).
    pub fn health(&self) -> Option<Health> {
        let any = self.inner.slots.iter().any(|s| read(s).is_some());
        if any {
            read(&self.inner.health).clone()
        } else {
            None
        }
    }

    /// The keyring new keys go to, once initialised.
    ///
    /// # Errors
    /// [`Error::EnclaveUnavailable`] before the first connection is initialised.
    pub async fn current_keyring(&self) -> Result<KeyringRef, Error> {
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
    /// [`Error::EnclaveUnavailable`] if no connection is ready or it drops before the
    /// answer; [`Error::EnclaveTimeout`] after the deadline; [`Error::Enclave`] when the
    /// enclave refuses; [`Error::Protocol`] for an undecodable answer.
    pub async fn call(&self, request: Request) -> Result<ResponseBody, Error> {
        let conn = self.pick()?;
        conn.call(&self.inner, request).await
    }

    fn pick(&self) -> Result<Conn, Error> {
        let slots = &self.inner.slots;
        let start = self.inner.next_slot.fetch_add(1, Ordering::Relaxed);
        (0..slots.len())
            .find_map(|k| read(&slots[(start + k) % slots.len()]).clone())
            .ok_or_else(|| Error::EnclaveUnavailable("no connection to the enclave".into()))
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
            Err(e) => {
                tracing::warn!(slot, %addr, error = %e, "enclave initialisation failed");
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
                Err(Error::Internal(format!("response version {}", frame.version))),
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

/// Steps 2 of the module doc: status, configure, keyring.
async fn initialise(inner: &Inner, conn: &Conn) -> Result<StatusInfo, Error> {
    let status = match conn.call(inner, Request::Status).await? {
        ResponseBody::Status(s) => s,
        _ => return Err(Error::UnexpectedResponse("Status")),
    };
    if status.state == EnclaveState::Booting {
        let configure = Request::Configure {
            kms: inner.config.kms.to_wire(),
            dek_cache: inner.config.dek_cache,
        };
        match conn.call(inner, configure).await {
            Ok(ResponseBody::Configured) | Err(Error::Enclave(WireError::AlreadyConfigured)) => {}
            Ok(_) => return Err(Error::UnexpectedResponse("Configure")),
            Err(e) => return Err(e),
        }
    }
    ensure_keyring(inner, conn).await?;
    Ok(status)
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
