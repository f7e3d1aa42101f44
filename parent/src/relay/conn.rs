//! One enclave connection: its writer task (frames batched into one flush), its
//! reader task (answers handed to their waiters by request id) and the map of pending
//! requests.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use ekms_shared::{
    decode_response, encode_request, frame_len, Request, RequestFrame, ResponseBody,
    FRAME_PREFIX_LEN, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{lock, Inner, WRITE_QUEUE};
use crate::error::Error;
use crate::io::EnclaveStream;

/// A connection: the writer's queue and the pending map.
#[derive(Clone, Debug)]
pub(super) struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pub(super) pending: Arc<Mutex<Pending>>,
}

/// Bytes read from the enclave's connection at once (answers are taken from it).
const READ_BUFFER: usize = 64 * 1024;

type Waiter = oneshot::Sender<Result<ResponseBody, Error>>;

#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Set when the connection is gone: no new request may wait on it.
    closed: bool,
    pub(super) waiters: HashMap<u64, Waiter>,
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
    pub(super) async fn call(
        &self,
        inner: &Inner,
        request: Request,
    ) -> Result<ResponseBody, Error> {
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
    pub(super) fn close(&self) {
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
pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Splits the stream and starts its writer and reader tasks.
pub(super) fn spawn_connection(stream: EnclaveStream) -> (Conn, AbortOnDrop, AbortOnDrop) {
    let (rd, wr) = tokio::io::split(stream);
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
        // Buffered: with many requests in flight one read takes in several answers.
        let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
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
