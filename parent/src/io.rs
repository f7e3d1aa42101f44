//! Every system call of the parent lives here (STYLE rule 6): binding the application
//! socket (Unix or loopback TCP), accepting and serving its HTTP/1.1 connections,
//! connecting to the enclave (vsock or Unix, chosen at run time from the address, never
//! by cargo feature), and removing the socket file on shutdown.
//!
//! The HTTP server loop is ours rather than `axum::serve` because it must enforce what
//! axum's does not: a connection cap (a semaphore permit per connection), a header read
//! deadline (hyper's `header_read_timeout`), and a bounded drain on shutdown.
//!
//! No `unsafe` here: tokio, tokio-vsock and std wrap the raw calls.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use ekms_shared::Address;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio_vsock::{VsockAddr, VsockStream};

use crate::config::ListenAddr;
use crate::error::Error;

/// Permissions of the application socket: owner and group may connect. Whoever can
/// connect can ask for signatures within each key's policy, so the operator puts the
/// application's user in the parent's group (or tightens this with a umask'd directory).
const SOCKET_MODE: u32 = 0o660;

/// Deadline for connecting to the enclave.
const ENCLAVE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
///
/// # Errors
/// [`Error::Io`] if creation fails.
pub fn ensure_private_dir(dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Creates `path` with mode 0600 if it is missing, and sets an existing file to 0600.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or chmod fails.
pub fn create_private_file(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    restrict_file(path)
}

/// Sets `path` to mode 0600 (owner read/write only).
///
/// # Errors
/// [`Error::Io`] if the file is missing or chmod fails.
pub fn restrict_file(path: &std::path::Path) -> Result<(), Error> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// Writes `bytes` to `path` atomically, readable by the owner only from the first
/// byte: a new file `<path>.<random>.tmp` in the same directory is created with
/// `O_EXCL` and mode 0600, written and synced, then renamed over `path` (and the
/// directory synced). Readers see the old file or the whole new one, never a partial or
/// world-readable one.
///
/// # Errors
/// [`Error::Io`] for any step; the temporary file is removed on failure.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| Error::Internal(format!("OS random: {e}")))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", hex::encode(suffix)));
    let tmp = PathBuf::from(tmp);
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode given to open(2) is masked by the umask, which can only remove bits.
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), e)
    })
}

/// The bound application socket.
#[derive(Debug)]
pub enum AppListener {
    /// A Unix socket; the file is removed on shutdown.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
    },
    /// A loopback TCP socket.
    Tcp(TcpListener),
}

impl AppListener {
    /// Binds `addr`. For a Unix path, a stale socket file left by a previous run is
    /// removed first, but only if nothing accepts on it; any other file there is an
    /// error. The socket gets mode 0660.
    ///
    /// # Errors
    /// [`Error::Io`] if the path is in use, not a socket, or binding fails.
    pub async fn bind(addr: &ListenAddr) -> Result<Self, Error> {
        match addr {
            ListenAddr::Tcp(a) => TcpListener::bind(a)
                .await
                .map(AppListener::Tcp)
                .map_err(|e| Error::io(format!("binding {addr}"), e)),
            ListenAddr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    let busy = |msg: &str| {
                        Error::io(
                            format!("binding {addr}"),
                            io::Error::new(io::ErrorKind::AddrInUse, msg.to_owned()),
                        )
                    };
                    if !meta.file_type().is_socket() {
                        return Err(busy("the path exists and is not a socket"));
                    }
                    if UnixStream::connect(path).await.is_ok() {
                        return Err(busy("another process is serving on this socket"));
                    }
                    std::fs::remove_file(path)
                        .map_err(|e| Error::io(format!("removing stale {addr}"), e))?;
                }
                let listener = UnixListener::bind(path)
                    .map_err(|e| Error::io(format!("binding {addr}"), e))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
                    .map_err(|e| Error::io(format!("chmod {addr}"), e))?;
                Ok(AppListener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }

    /// The bound address (for TCP, with the port the OS chose for port 0).
    ///
    /// # Errors
    /// [`Error::Io`] if the OS cannot report the TCP address.
    pub fn local_addr(&self) -> Result<ListenAddr, Error> {
        match self {
            AppListener::Unix { path, .. } => Ok(ListenAddr::Unix(path.clone())),
            AppListener::Tcp(l) => l
                .local_addr()
                .map(ListenAddr::Tcp)
                .map_err(|e| Error::io("local address", e)),
        }
    }

    async fn accept(&self) -> io::Result<AppStream> {
        match self {
            AppListener::Unix { listener, .. } => {
                listener.accept().await.map(|(s, _)| AppStream::Unix(s))
            }
            AppListener::Tcp(l) => l.accept().await.map(|(s, _)| {
                // Latency over throughput for small request/response pairs.
                let _ = s.set_nodelay(true);
                AppStream::Tcp(s)
            }),
        }
    }

    /// Closes the listener and removes a Unix socket file.
    fn close(self) {
        if let AppListener::Unix { listener, path } = self {
            drop(listener);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove the socket file");
            }
        }
    }
}

/// Limits of the server loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most open connections; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Deadline for receiving a request's headers (hyper `header_read_timeout`).
    pub header_read_timeout: Duration,
    /// Longest a write to the client may make no progress (a client that never reads
    /// its answers would otherwise hold a connection slot for ever); then the
    /// connection is closed.
    pub write_stall_timeout: Duration,
}

/// Serves `router` on `listener` with HTTP/1.1 until `shutdown` resolves, then stops
/// accepting, lets open connections finish their current request (at most 30 s), and
/// removes the socket file.
///
/// # Errors
/// None today: accept errors (e.g. `EMFILE`) are logged and retried after a pause.
pub async fn serve(
    listener: AppListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            s = listener.accept() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let mut drain = drain_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let stream = WriteDeadline::new(stream, limits.write_stall_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = pin!(conn);
            let draining = async move {
                // Err: the sender is gone, which also means shutdown.
                let _ = drain.wait_for(|d| *d).await;
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = draining => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    listener.close();
    let _ = drain_tx.send(true);
    // Every connection holds a permit: all permits back means all connections closed.
    // `max` ≤ u32::MAX by the clamp above.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain deadline");
    }
    Ok(())
}

/// A connection accepted on the application socket.
#[derive(Debug)]
enum AppStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// An application connection whose writes fail with `TimedOut` once they have made no
/// progress for `timeout` (hyper has no write deadline of its own). Reads pass through:
/// hyper's header deadline and the handlers' body deadline bound them.
struct WriteDeadline {
    inner: AppStream,
    timeout: Duration,
    /// Armed while a write or flush is pending; cleared on progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(inner: AppStream, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stall: None,
        }
    }

    /// Maps a write-side poll: progress disarms the deadline, `Pending` arms it (once)
    /// and turns into `TimedOut` when it expires.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let timeout = self.timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A connection to the enclave.
#[derive(Debug)]
pub enum EnclaveStream {
    /// Simulation: a Unix socket.
    Unix(UnixStream),
    /// Nitro: `AF_VSOCK`.
    Vsock(VsockStream),
}

/// Connects to the enclave at `addr` (5 s deadline).
///
/// # Errors
/// The OS error, or `TimedOut`.
pub async fn connect_enclave(addr: &Address) -> io::Result<EnclaveStream> {
    let connect = async {
        match addr {
            Address::Unix(path) => UnixStream::connect(path).await.map(EnclaveStream::Unix),
            Address::Vsock { cid, port } => VsockStream::connect(VsockAddr::new(*cid, *port))
                .await
                .map(EnclaveStream::Vsock),
        }
    };
    tokio::time::timeout(ENCLAVE_CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the enclave"))?
}

/// Delegates `AsyncRead`/`AsyncWrite` to the variant (all variants are `Unpin`).
macro_rules! delegate_io {
    ($ty:ident { $($variant:ident),+ }) => {
        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)+ }
            }
        }
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_write(cx, buf),)+ }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_flush(cx),)+ }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_shutdown(cx),)+ }
            }
            fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+ }
            }
            fn is_write_vectored(&self) -> bool {
                match self { $($ty::$variant(s) => s.is_write_vectored(),)+ }
            }
        }
    };
}

delegate_io!(AppStream { Unix, Tcp });
delegate_io!(EnclaveStream { Unix, Vsock });

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replaces_stale_socket_and_removes_it_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        // A stale socket: bound, then the listener dropped without unlinking.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let l = AppListener::bind(&ListenAddr::Unix(path.clone()))
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        l.close();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn rejects_socket_path_in_use_or_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let first = AppListener::bind(&ListenAddr::Unix(path.clone()))
            .await
            .unwrap();
        assert!(AppListener::bind(&ListenAddr::Unix(path.clone()))
            .await
            .is_err());
        drop(first);
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(AppListener::bind(&ListenAddr::Unix(file.clone()))
            .await
            .is_err());
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"x",
            "a regular file is never removed"
        );
    }

    #[tokio::test]
    async fn connects_to_unix_enclave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enclave.sock");
        let _l = UnixListener::bind(&path).unwrap();
        let s = connect_enclave(&Address::Unix(path)).await.unwrap();
        assert!(matches!(s, EnclaveStream::Unix(_)));
    }

    #[tokio::test]
    async fn rejects_connect_to_missing_enclave() {
        let dir = tempfile::tempdir().unwrap();
        assert!(connect_enclave(&Address::Unix(dir.path().join("none")))
            .await
            .is_err());
    }
}
