//! The frame server (STYLE rules 4 and 12, DESIGN §9): accepts parent connections,
//! turns bytes into frames, runs each request in its own task and writes the responses
//! back in completion order (matched by `request_id`).
//!
//! Per connection:
//! - a reader reads the 4-byte length prefix, checks it with [`frame_len`] *before*
//!   reading or allocating the body, and reads the body within [`FRAME_DEADLINE`] once a
//!   frame has started (an idle connection may stay open);
//! - each decoded request runs in its own task, bounded by the server-wide in-flight
//!   semaphore and by a budget of in-flight frame bytes ([`Limits::max_in_flight_bytes`];
//!   over either: [`WireError::Busy`]), so one pipelined connection uses every core but
//!   no pipeline of large frames can hold more than the budget in memory;
//! - a writer task owns the write half and sends the encoded responses it receives on
//!   an mpsc channel.
//!
//! A frame that fails to decode but whose `request_id` could be read is answered with
//! [`WireError::BadRequest`]; anything else (bad prefix, unreadable header, a deadline
//! missed mid-frame) closes the connection, since the stream can no longer be trusted
//! to be in sync.
//!
//! Shutdown: stop accepting, stop reading new frames, let in-flight requests finish and
//! their answers be written (within [`DRAIN_DEADLINE`]), then return.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ekms_shared::{
    decode_request, encode_response, frame_len, ResponseFrame, WireError, FRAME_PREFIX_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::handlers;
use crate::io::{Duplex, Listener};
use crate::state::{Enclave, RequestKind};
use crate::workers::{self, PoolSizes};

/// Deadline for the rest of a frame once its first byte has arrived.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// How long shutdown waits for in-flight requests before dropping them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Responses queued per connection before request tasks wait for the writer.
const WRITE_QUEUE: usize = 256;

/// Bytes read from the parent's connection at once (frames are taken from this buffer).
const READ_BUFFER: usize = 64 * 1024;

/// Bytes of answers gathered before a write (a larger answer is written directly).
const WRITE_BUFFER: usize = 64 * 1024;

/// Server limits (`--max-connections`, `--max-in-flight`, and the worker pools'
/// `--signing-threads`, `--signing-queue`, `--nsm-threads`, `--nsm-queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// Requests executing at once across all connections; more are answered `Busy`.
    pub max_in_flight: usize,
    /// Sum of the frame sizes of the requests executing at once, in bytes (counted in
    /// KiB, at least 1 KiB per request); a request that would exceed it is answered
    /// `Busy`. Bounds the memory a pipeline of large frames can hold.
    pub max_in_flight_bytes: usize,
    /// Threads and queue bounds of the signing and NSM pools ([`crate::workers`]);
    /// applied by the first [`serve`] of the process.
    pub pools: PoolSizes,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            max_in_flight: 512,
            max_in_flight_bytes: 64 * 1024 * 1024,
            pools: PoolSizes::default(),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then drains and returns.
///
/// Accept errors (e.g. out of file descriptors) are logged and retried after a pause;
/// they do not stop the server.
pub async fn serve(
    listener: Listener,
    enclave: Arc<Enclave>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    if let Err(e) = workers::init(limits.pools) {
        // Requests that need a pool will answer `Internal`; Status still works.
        tracing::error!(error = %e, "worker pools not started");
    }
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let in_flight_kib = Arc::new(Semaphore::new(
        kib(limits.max_in_flight_bytes).max(kib(ekms_shared::MAX_FRAME_LEN)),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    let mut next_id: u64 = 0;
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let span = tracing::info_span!("connection", id = next_id, %peer);
        let connection = Connection {
            enclave: Arc::clone(&enclave),
            in_flight: Arc::clone(&in_flight),
            in_flight_kib: Arc::clone(&in_flight_kib),
            stop: stop_rx.clone(),
        };
        tasks.spawn(
            async move {
                tracing::debug!("connected");
                connection.run(stream).await;
                tracing::debug!("disconnected");
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracing::info!(connections = tasks.len(), "shutting down: draining");
    let _ = stop_tx.send(true);
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain deadline passed; dropping remaining requests");
        tasks.shutdown().await;
    }
}

/// What one connection's tasks share.
struct Connection {
    enclave: Arc<Enclave>,
    in_flight: Arc<Semaphore>,
    /// The in-flight byte budget, in KiB.
    in_flight_kib: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// `bytes` in KiB, rounded up, at least 1 (the unit of the in-flight byte budget).
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

/// Why the reader stopped.
enum ReadEnd {
    /// Peer closed between frames, or shutdown.
    Closed,
    /// Protocol or I/O failure (logged); the connection is dropped.
    Failed,
}

impl Connection {
    async fn run(mut self, stream: Box<dyn Duplex>) {
        let (reader, writer) = tokio::io::split(stream);
        // Buffered: with many requests in flight one read takes in several frames
        // (three reads per frame unbuffered).
        let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let write_failed = Arc::new(AtomicBool::new(false));
        let writer_task =
            tokio::spawn(write_loop(writer, rx, Arc::clone(&write_failed)).in_current_span());
        let mut requests = JoinSet::new();
        loop {
            while requests.try_join_next().is_some() {}
            let body = match self.read_frame(&mut reader).await {
                Ok(body) => body,
                Err(ReadEnd::Closed | ReadEnd::Failed) => break,
            };
            // No answer can reach the parent any more: take no further request (each
            // would be decided, audited and signed for nobody, leaving a gap in the
            // parent's copy of the audit chain).
            if write_failed.load(Ordering::Acquire) {
                tracing::info!("answers cannot be written: closing the connection");
                break;
            }
            let frame = match decode_request(&body) {
                Ok(frame) => frame,
                Err(e) => match e.request_id() {
                    Some(id) => {
                        tracing::info!(request_id = id, error = %e, "bad request frame");
                        if send(&tx, &ResponseFrame::err(id, e.to_wire()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    None => {
                        tracing::info!(error = %e, "unreadable frame; closing");
                        break;
                    }
                },
            };
            let size = u32::try_from(kib(body.len())).unwrap_or(u32::MAX);
            drop(body);
            let permits = Arc::clone(&self.in_flight)
                .try_acquire_owned()
                .and_then(|p| {
                    Arc::clone(&self.in_flight_kib)
                        .try_acquire_many_owned(size)
                        .map(|b| (p, b))
                });
            let Ok(permit) = permits else {
                tracing::warn!(request_id = frame.request_id, "busy");
                if send(&tx, &ResponseFrame::err(frame.request_id, WireError::Busy))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            };
            let enclave = Arc::clone(&self.enclave);
            let tx = tx.clone();
            let kind = RequestKind::of(&frame.body);
            let span = tracing::info_span!("request", id = frame.request_id, kind = kind.name());
            requests.spawn(
                async move {
                    let id = frame.request_id;
                    let answer = match handlers::handle(&enclave, frame.body).await {
                        Ok(body) => ResponseFrame::ok(id, body),
                        Err(e) => {
                            tracing::info!(error = e.code(), "refused");
                            ResponseFrame::err(id, e)
                        }
                    };
                    drop(permit);
                    let _ = send(&tx, &answer).await;
                }
                .instrument(span),
            );
        }
        // Let every started request answer, then close the writer.
        while requests.join_next().await.is_some() {}
        drop(tx);
        let _ = writer_task.await;
    }

    /// Reads one frame body. Waits without deadline (but stops on shutdown) for the
    /// first byte, then reads the rest within [`FRAME_DEADLINE`].
    async fn read_frame(
        &mut self,
        reader: &mut BufReader<ReadHalf<Box<dyn Duplex>>>,
    ) -> Result<Vec<u8>, ReadEnd> {
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        if *self.stop.borrow() {
            return Err(ReadEnd::Closed);
        }
        let first = tokio::select! {
            _ = self.stop.changed() => return Err(ReadEnd::Closed),
            n = reader.read(&mut prefix[..1]) => n,
        };
        match first {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                return Err(ReadEnd::Failed);
            }
        }
        let rest = async {
            reader.read_exact(&mut prefix[1..]).await?;
            let len = frame_len(prefix)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        match tokio::time::timeout(FRAME_DEADLINE, rest).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "bad or truncated frame; closing");
                Err(ReadEnd::Failed)
            }
            Err(_) => {
                tracing::info!("frame not completed within the deadline; closing");
                Err(ReadEnd::Failed)
            }
        }
    }
}

/// Encodes `frame` and queues it for the writer. A response too large to encode is
/// replaced by `Internal` for the same request id.
async fn send(tx: &mpsc::Sender<Vec<u8>>, frame: &ResponseFrame) -> Result<(), ()> {
    let bytes = match encode_response(frame) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode response");
            encode_response(&ResponseFrame::err(frame.request_id, WireError::Internal))
                .map_err(|_| ())?
        }
    };
    tx.send(bytes).await.map_err(|_| ())
}

/// Writes the queued answers, every answer queued by then in one flush (one write for
/// many answers when many requests are in flight).
async fn write_loop(
    writer: WriteHalf<Box<dyn Duplex>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    failed: Arc<AtomicBool>,
) {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, writer);
    while let Some(bytes) = rx.recv().await {
        let mut written = writer.write_all(&bytes).await;
        while written.is_ok() {
            match rx.try_recv() {
                Ok(more) => written = writer.write_all(&more).await,
                Err(_) => break,
            }
        }
        let flushed = match written {
            Ok(()) => writer.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = flushed {
            tracing::debug!(error = %e, "write failed; dropping the connection's answers");
            failed.store(true, Ordering::Release);
            // Keep draining so request tasks never block on a dead connection.
            while rx.recv().await.is_some() {}
            return;
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_shared::{
        decode_response, encode_request, Address, EnclaveState, Request, RequestFrame,
        ResponseBody, MAX_FRAME_LEN,
    };
    use tokio::net::UnixStream;

    struct Running {
        path: std::path::PathBuf,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    async fn start(limits: Limits) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enclave.sock");
        let enclave = Arc::new(crate::state::test_enclave());
        let listener = Listener::bind(&Address::Unix(path.clone())).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, enclave, limits, async {
            let _ = stopped.await;
        }));
        Running {
            path,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn read_response(s: &mut UnixStream) -> ResponseFrame {
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0; frame_len(prefix).unwrap()];
        s.read_exact(&mut body).await.unwrap();
        decode_response(&body).unwrap()
    }

    #[tokio::test]
    async fn answers_pipelined_requests_by_id() {
        let mut server = start(Limits::default()).await;
        let mut s = UnixStream::connect(&server.path).await.unwrap();
        let mut batch = Vec::new();
        for id in 1..=20u64 {
            batch.extend(encode_request(&RequestFrame::new(id, Request::Status)).unwrap());
        }
        s.write_all(&batch).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..20 {
            let r = read_response(&mut s).await;
            let Ok(ResponseBody::Status(info)) = r.body else {
                panic!("{r:?}");
            };
            assert_eq!(info.state, EnclaveState::Booting);
            ids.push(r.request_id);
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        let _ = server.stop.take().unwrap().send(());
        server.task.await.unwrap();
        assert!(!server.path.exists(), "socket file removed on shutdown");
    }

    #[tokio::test]
    async fn rejects_bad_body_with_bad_request_and_keeps_the_connection() {
        let server = start(Limits::default()).await;
        let mut s = UnixStream::connect(&server.path).await.unwrap();
        // A valid frame whose body has an extra field: request id readable, body not.
        let mut frame = encode_request(&RequestFrame::new(
            77,
            Request::CreateKeyring {
                keyring: "k".into(),
                epoch: 1,
            },
        ))
        .unwrap();
        // Change the epoch's type: the unsigned integer 1 (0x01) at the end becomes -1.
        let last = frame.len() - 1;
        assert_eq!(frame[last], 0x01);
        frame[last] = 0x20;
        s.write_all(&frame).await.unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(r.request_id, 77);
        assert!(matches!(r.body, Err(WireError::BadRequest { .. })), "{r:?}");
        // The connection still works.
        s.write_all(&encode_request(&RequestFrame::new(78, Request::Status)).unwrap())
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.request_id, 78);
    }

    #[tokio::test]
    async fn stops_taking_requests_once_its_answers_cannot_be_written() {
        // The parent stops reading (a half-closed socket): the first answer's write
        // fails, and the next frame closes the connection instead of being decided and
        // signed for nobody.
        let server = start(Limits::default()).await;
        let s = UnixStream::connect(&server.path).await.unwrap();
        let s = s.into_std().unwrap();
        s.shutdown(std::net::Shutdown::Read).unwrap();
        let mut s = UnixStream::from_std(s).unwrap();
        let status = |id| encode_request(&RequestFrame::new(id, Request::Status)).unwrap();
        s.write_all(&status(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Read by the enclave, which then closes; a later write finds no reader.
        let _ = s.write_all(&status(2)).await;
        let mut refused = false;
        for id in 3..250 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if s.write_all(&status(id)).await.is_err() {
                refused = true;
                break;
            }
        }
        assert!(
            refused,
            "the enclave kept reading requests it could not answer"
        );
    }

    #[tokio::test]
    async fn rejects_oversize_prefix_by_closing() {
        let server = start(Limits::default()).await;
        let mut s = UnixStream::connect(&server.path).await.unwrap();
        s.write_all(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            s.read(&mut buf).await.unwrap(),
            0,
            "closed without an answer"
        );
        // Garbage with no readable request id also closes.
        let mut s = UnixStream::connect(&server.path).await.unwrap();
        s.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn rejects_requests_over_the_in_flight_cap() {
        let server = start(Limits {
            max_connections: 4,
            max_in_flight: 1,
            ..Limits::default()
        })
        .await;
        let mut s = UnixStream::connect(&server.path).await.unwrap();
        // Attestation documents take a while; a burst of them must see `Busy`.
        let mut batch = Vec::new();
        for id in 1..=30u64 {
            let req = Request::Attestation {
                nonce: None,
                user_data: None,
            };
            batch.extend(encode_request(&RequestFrame::new(id, req)).unwrap());
        }
        s.write_all(&batch).await.unwrap();
        let mut busy = 0;
        let mut ok = 0;
        for _ in 0..30 {
            match read_response(&mut s).await.body {
                Err(WireError::Busy) => busy += 1,
                Ok(ResponseBody::Attestation { .. }) => ok += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(ok >= 1 && busy >= 1, "ok {ok} busy {busy}");
    }
}
