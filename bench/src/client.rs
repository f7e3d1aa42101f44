//! A minimal HTTP/1.1 client for the app socket: one keep-alive connection over a
//! tokio `UnixStream` (hyper 1 `client::conn::http1`), reconnected after a transport
//! error. The benchmark opens one per request in flight, as real clients with a
//! connection pool do.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::Error;

/// One keep-alive HTTP/1.1 connection to a Unix socket; requests on it are sequential.
/// Every request carries the admin token the parent keeps beside its socket
/// (`admin.token`, as `ekms sim` lays it out), when that file exists.
pub struct Conn {
    path: PathBuf,
    sender: Option<SendRequest<Full<Bytes>>>,
    token: Option<HeaderValue>,
}

/// `Bearer <token>` from `admin.token` beside the socket at `path`, if the file exists.
fn admin_token(path: &Path) -> Result<Option<HeaderValue>, Error> {
    let file = path.parent().unwrap_or(Path::new(".")).join("admin.token");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", text.trim()))
                .map_err(|_| Error::Http(format!("{} holds no token", file.display())))?;
            v.set_sensitive(true);
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Http(format!("reading {}: {e}", file.display()))),
    }
}

impl Conn {
    /// Connects to the socket at `path` (HTTP/1.1 handshake included).
    ///
    /// # Errors
    /// [`Error::Http`] if the socket does not accept or the handshake fails.
    pub async fn connect(path: &Path) -> Result<Self, Error> {
        let mut conn = Self {
            path: path.to_path_buf(),
            sender: None,
            token: admin_token(path)?,
        };
        conn.sender = Some(conn.open().await?);
        Ok(conn)
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| Error::Http(format!("connect {}: {e}", self.path.display())))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Http(format!("handshake: {e}")))?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request (`body` as `application/json`; empty for a GET) and reads the
    /// whole answer. After a transport error the next call reconnects.
    ///
    /// # Errors
    /// [`Error::Http`] on a transport error (connect, write, read).
    pub async fn request(
        &mut self,
        method: Method,
        uri: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), Error> {
        let sender = match self.sender.as_mut() {
            Some(s) => s,
            None => self.sender.insert(self.open().await?),
        };
        let result = send(sender, method, uri, body, self.token.as_ref()).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    uri: &str,
    body: Bytes,
    token: Option<&HeaderValue>,
) -> Result<(StatusCode, Bytes), Error> {
    sender
        .ready()
        .await
        .map_err(|e| Error::Http(format!("connection not ready: {e}")))?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        req = req.header(AUTHORIZATION, token.clone());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| Error::Http(format!("request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Error::Http(format!("send: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::Http(format!("read body: {e}")))?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::UnixListener;

    /// A one-connection server that answers every request with `200 {"ok":N}`, N
    /// counting from 1, and returns what it read.
    async fn serve(listener: UnixListener, answers: usize) -> Vec<u8> {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for n in 1..=answers {
            // read until the end of the headers plus the declared body
            loop {
                let mut buf = [0u8; 4096];
                let k = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..k]);
                let text = String::from_utf8_lossy(&seen);
                if text.matches("\r\n\r\n").count() >= n {
                    break;
                }
            }
            let body = format!("{{\"ok\":{n}}}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        }
        seen
    }

    #[tokio::test]
    async fn keep_alive_requests_on_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve(listener, 2));
        let mut conn = Conn::connect(&path).await.unwrap();
        let (st, body) = conn
            .request(Method::GET, "/v1/health", Bytes::new())
            .await
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        assert_eq!(&body[..], b"{\"ok\":1}");
        let (st, body) = conn
            .request(Method::POST, "/v1/keys", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        assert_eq!(&body[..], b"{\"ok\":2}");
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(seen.starts_with("GET /v1/health HTTP/1.1\r\n"));
        assert!(seen.contains("POST /v1/keys HTTP/1.1\r\n"));
        assert!(seen.ends_with("\r\n\r\n{}"));
    }

    #[tokio::test]
    async fn rejects_a_socket_nobody_listens_on() {
        let dir = tempfile::tempdir().unwrap();
        let err = Conn::connect(&dir.path().join("none.sock"))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::Http(_)));
    }
}
