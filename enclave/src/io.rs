//! Every socket the enclave opens (STYLE rule 6): the listener for the parent's frames,
//! chosen at run time from an [`Address`] (`vsock://CID:PORT` on Nitro hardware,
//! `unix:/path` in simulation), and the optional TCP→vsock forwarder that carries the KMS
//! client's TLS bytes to `vsock-proxy` on the parent.
//!
//! Rule for maintainers: no other module opens sockets or files; they receive the
//! [`Duplex`] streams made here. No `unsafe`: tokio and tokio-vsock wrap the system calls.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ekms_shared::Address;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

/// A connected byte stream (a Unix or vsock connection), readable and writable.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A bound listener for the parent↔enclave protocol.
///
/// A Unix listener removes its socket file when dropped.
#[derive(Debug)]
pub enum Listener {
    /// `unix:/path` (simulation, DESIGN §6).
    Unix {
        /// The listening socket.
        listener: UnixListener,
        /// Its path, removed on drop.
        path: PathBuf,
    },
    /// `vsock://CID:PORT` (Nitro; CID [`ekms_shared::VMADDR_CID_ANY`] inside an enclave).
    Vsock(VsockListener),
}

impl Listener {
    /// Binds `address`.
    ///
    /// For a Unix socket, a stale socket file (nobody accepting on it) is removed first;
    /// a live one, or a path that is not a socket, is an error (`AddrInUse` /
    /// `AlreadyExists`). The new socket file gets mode 0600: only the parent's user
    /// connects.
    ///
    /// # Errors
    /// The operating system's error from `bind`/`listen`.
    pub async fn bind(address: &Address) -> std::io::Result<Self> {
        match address {
            Address::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            Address::Vsock { cid, port } => Ok(Listener::Vsock(VsockListener::bind(
                VsockAddr::new(*cid, *port),
            )?)),
        }
    }

    /// Accepts the next connection; returns it and a printable peer description.
    ///
    /// # Errors
    /// The operating system's error from `accept` (e.g. `EMFILE`); the caller retries.
    pub async fn accept(&self) -> std::io::Result<(Box<dyn Duplex>, String)> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok((Box::new(stream), "unix".to_owned()))
            }
            Listener::Vsock(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((
                    Box::new(stream),
                    format!("vsock://{}:{}", peer.cid(), peer.port()),
                ))
            }
        }
    }

    /// The bound address (for a vsock listener, as the kernel reports it).
    pub fn local_address(&self) -> Address {
        match self {
            Listener::Unix { path, .. } => Address::Unix(path.clone()),
            Listener::Vsock(listener) => match listener.local_addr() {
                Ok(a) => Address::Vsock {
                    cid: a.cid(),
                    port: a.port(),
                },
                Err(_) => Address::Vsock {
                    cid: ekms_shared::VMADDR_CID_ANY,
                    port: 0,
                },
            },
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            if let Err(e) = std::fs::remove_file(&*path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the socket file");
                }
            }
        }
    }
}

/// Removes `path` if it is a Unix socket nobody accepts on (left by a crashed run).
async fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("another process is listening on {}", path.display()),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// Forwards every TCP connection accepted on `listener` to vsock `(cid, port)`, byte
/// for byte, until `shutdown` resolves. Each connection is its own task.
///
/// Purpose: on Nitro hardware the enclave has no network; its KMS client speaks TLS to
/// `kms.<region>.amazonaws.com`, and this forwarder carries those bytes (never
/// plaintext: TLS ends inside the enclave) to `vsock-proxy` on the parent. Real-hardware
/// setup, all three pieces needed:
///
/// 1. on the parent: `vsock-proxy 8000 kms.us-east-1.amazonaws.com 443` (the
///    `--config` allow-list must contain that host), i.e. CID 3 / port
///    [`ekms_shared::KMS_PROXY_PORT`];
/// 2. in the enclave image: `/etc/hosts` maps `kms.us-east-1.amazonaws.com` to
///    `127.0.0.1`, the loopback interface is up (`ip link set lo up` in the init
///    script), and the image carries CA certificates (`/etc/ssl/certs`) for the
///    rustls client's native roots;
/// 3. the enclave starts with `--kms-forward 127.0.0.1:443`, so this function listens
///    there and pipes to vsock(3, 8000); `Configure` then leaves `endpoint_url` unset
///    (regional endpoint) and TLS verifies the real KMS certificate.
///
/// # Errors
/// Never returns an error itself; per-connection failures are logged.
pub async fn forward_tcp_to_vsock(
    listener: TcpListener,
    cid: u32,
    port: u32,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (mut tcp, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "kms forwarder: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            match VsockStream::connect(VsockAddr::new(cid, port)).await {
                Ok(mut vsock) => {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut vsock).await {
                        tracing::debug!(%peer, error = %e, "kms forwarder: connection ended");
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, cid, port, error = %e, "kms forwarder: vsock connect failed")
                }
            }
        });
    }
}

/// Binds a TCP listener for [`forward_tcp_to_vsock`].
///
/// # Errors
/// The operating system's error from `bind`.
pub async fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn binds_unix_accepts_and_removes_file_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let addr = Address::Unix(path.clone());
        let listener = Listener::bind(&addr).await.unwrap();
        assert_eq!(listener.local_address(), addr);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut client = UnixStream::connect(&path).await.unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, "unix");
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(listener);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        // A bound std listener that is dropped leaves its file behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = Listener::bind(&Address::Unix(path.clone())).await.unwrap();
        drop(listener);
    }

    #[tokio::test]
    async fn rejects_live_socket_and_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.sock");
        let addr = Address::Unix(path.clone());
        let first = Listener::bind(&addr).await.unwrap();
        let err = Listener::bind(&addr).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(first);
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Listener::bind(&Address::Unix(file.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(file.exists(), "a regular file is never removed");
    }
}
