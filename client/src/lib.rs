//! The one HTTP/1.1 client of the enclave-kms application API on the parent's Unix
//! socket (STYLE rule 16), shared by the `ekms` CLI and the benchmark: hyper 1
//! `client::conn::http1` over `tokio::net::UnixStream`, JSON bodies, a deadline on
//! every exchange and a bound on every answer's size. With an API token every request
//! carries `Authorization: Bearer <token>`; the token never shows in `Debug` or an
//! error.
//!
//! Two ways to talk: [`ApiClient`] opens one connection per request (the CLI: simple,
//! nothing to keep); [`Conn`] keeps one connection alive for sequential requests and
//! reconnects after a transport error (the benchmark opens one per request in flight,
//! as clients with a connection pool do). Both send through the same code.
//!
//! The request and answer shapes of the API are in [`ekms_shared::api`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub use hyper;

/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Default deadline for one request (connect, send, read the whole answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest API token accepted from a file or the environment, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;
/// The file beside the parent's socket that holds its admin token (as `ekms sim` and
/// the parent lay it out).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Error of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API socket could not be reached.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP transport failure or deadline.
    #[error("http: {0}")]
    Http(String),
    /// The server's answer was not what the API promises (too large, not JSON).
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The server refused the request (non-2xx), with its error object.
    #[error("{code}: {message}{}", rule.as_ref().map(|r| format!(" (rule: {r})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's `error.code`.
        code: String,
        /// The server's `error.message`.
        message: String,
        /// The policy rule that refused, when the server names one.
        rule: Option<String>,
    },
    /// Text that should hold an API token does not (the token is never quoted).
    #[error("{0}")]
    InvalidToken(String),
    /// A token file could not be read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// An API token (`ekms_…`). Its `Debug` shows nothing.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    /// Checks `text` (surrounding white space removed): 1 to [`MAX_TOKEN_LEN`] visible
    /// ASCII characters. `origin` names where it came from, for the error (which never
    /// quotes the token).
    ///
    /// # Errors
    /// [`ClientError::InvalidToken`] otherwise.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ClientError> {
        let t = text.trim();
        if t.is_empty() || t.len() > MAX_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidToken(format!(
                "{origin} does not hold an API token (1 to {MAX_TOKEN_LEN} visible ASCII characters)"
            )));
        }
        Ok(Self(t.to_owned()))
    }

    /// Reads the token from `path`.
    ///
    /// # Errors
    /// [`ClientError::Io`] if the file cannot be read (its `source` keeps the kind, e.g.
    /// `NotFound`), [`ClientError::InvalidToken`] if it holds no token.
    pub fn from_file(path: &Path) -> Result<Self, ClientError> {
        use std::io::Read as _;
        let origin = path.display().to_string();
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_LEN as u64 + 2).read_to_string(&mut text))
            .map_err(|source| ClientError::Io {
                what: format!("reading the token file {origin}"),
                source,
            })?;
        Self::parse(&text, &origin)
    }

    /// The admin token in [`ADMIN_TOKEN_FILE`] beside the socket at `socket`, if that
    /// file exists.
    ///
    /// # Errors
    /// As [`BearerToken::from_file`], but for a missing file.
    pub fn beside_socket(socket: &Path) -> Result<Option<Self>, ClientError> {
        let file = socket
            .parent()
            .unwrap_or(Path::new("."))
            .join(ADMIN_TOKEN_FILE);
        match Self::from_file(&file) {
            Ok(t) => Ok(Some(t)),
            Err(ClientError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The token itself (tests only).
    #[doc(hidden)]
    pub fn expose_for_tests(&self) -> &str {
        &self.0
    }

    fn header(&self) -> Result<header::HeaderValue, ClientError> {
        let mut v = header::HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| {
            ClientError::InvalidToken("the API token is not a valid header value".into())
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken").finish_non_exhaustive()
    }
}

/// A decoded answer: its status and JSON body (`Value::Null` for an empty body).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Value,
}

impl ApiResponse {
    /// The body of a 2xx answer, or the server's error as [`ClientError::Api`].
    ///
    /// # Errors
    /// [`ClientError::Api`] for any non-2xx status, with `code`, `message` and `rule`
    /// taken from `{"error":{…}}` ([`ekms_shared::api::ErrorBody`]) when the body has
    /// that shape.
    pub fn into_result(self) -> Result<Value, ClientError> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let error = serde_json::from_value::<ekms_shared::api::ErrorBody>(self.body)
            .ok()
            .map(|b| b.error);
        let status = self.status;
        Err(match error {
            Some(e) => ClientError::Api {
                status: status.as_u16(),
                code: e.code,
                message: e.message,
                rule: e.rule,
            },
            None => ClientError::Api {
                status: status.as_u16(),
                code: "http_error".to_owned(),
                message: status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_owned(),
                rule: None,
            },
        })
    }
}

/// A client of the API served on one Unix socket: one connection per request.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
    token: Option<BearerToken>,
}

impl ApiClient {
    /// A client of the socket at `socket`, with [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            token: None,
        }
    }

    /// The same client, sending `token` with every request.
    pub fn with_token(mut self, token: Option<BearerToken>) -> Self {
        self.token = token;
        self
    }

    /// The same client with another per-request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path` with an optional JSON body and reads the JSON answer.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the socket cannot be reached, [`ClientError::Http`]
    /// for a transport failure or the deadline, [`ClientError::BadResponse`] for an
    /// answer over [`MAX_RESPONSE_BYTES`] or not JSON. A non-2xx status is *not* an
    /// error here ([`ApiResponse::into_result`]).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, ClientError> {
        let bytes = match body {
            Some(v) => {
                Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Http(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let exchange = async {
            let mut sender = open(&self.socket).await?;
            let (status, collected) = send(
                &mut sender,
                method,
                path,
                bytes,
                body.is_some(),
                self.token.as_ref(),
            )
            .await?;
            let body = if collected.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&collected).map_err(|e| {
                    ClientError::BadResponse(format!("HTTP {status}: body is not JSON: {e}"))
                })?
            };
            Ok(ApiResponse { status, body })
        };
        deadline(&self.socket, self.timeout, exchange).await
    }
}

/// One keep-alive HTTP/1.1 connection to a Unix socket; requests on it are sequential,
/// and the next request after a transport error reconnects.
pub struct Conn {
    path: PathBuf,
    sender: Option<SendRequest<Full<Bytes>>>,
    token: Option<BearerToken>,
    timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("path", &self.path)
            .field("connected", &self.sender.is_some())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects to the socket at `path` (HTTP/1.1 handshake included); requests carry
    /// `token` and have [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::Http`] if the socket does not accept
    /// or the handshake fails.
    pub async fn connect(path: &Path, token: Option<BearerToken>) -> Result<Self, ClientError> {
        let sender = open(path).await?;
        Ok(Self {
            path: path.to_path_buf(),
            sender: Some(sender),
            token,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sends one request (`body` as `application/json`; none when empty) and reads the
    /// whole answer (at most [`MAX_RESPONSE_BYTES`]), within the deadline.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::Http`] on a transport error or the
    /// deadline, [`ClientError::BadResponse`] for an answer too large.
    pub async fn request(
        &mut self,
        method: Method,
        uri: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (path, timeout) = (self.path.clone(), self.timeout);
        let exchange = async {
            let sender = match self.sender.as_mut() {
                Some(s) => s,
                None => self.sender.insert(open(&self.path).await?),
            };
            let json = !body.is_empty();
            send(sender, method, uri, body, json, self.token.as_ref()).await
        };
        let result = deadline(&path, timeout, exchange).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// Connects and shakes hands; the connection task ends when the sender is dropped or
/// the peer closes.
async fn open(path: &Path) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `exchange`, or [`ClientError::Http`] when it takes longer than `timeout`.
async fn deadline<T>(
    path: &Path,
    timeout: Duration,
    exchange: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        ClientError::Http(format!(
            "no answer from {} within {} s",
            path.display(),
            timeout.as_secs()
        ))
    })?
}

/// One request on `sender`; the status and the whole body (bounded).
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    uri: &str,
    body: Bytes,
    json: bool,
    token: Option<&BearerToken>,
) -> Result<(StatusCode, Bytes), ClientError> {
    sender
        .ready()
        .await
        .map_err(|e| ClientError::Http(format!("connection not ready: {e}")))?;
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, "application/json");
    if json {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, token.header()?);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| ClientError::Http(format!("building the request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(format!("sending the request: {e}")))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| ClientError::BadResponse(format!("reading the body: {e}")))?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests;
