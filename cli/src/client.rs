//! A small HTTP/1.1 client of the application API on the parent's Unix socket: one
//! connection per request (hyper 1 `client::conn::http1` over `tokio::net::UnixStream`),
//! JSON bodies, a deadline for the whole exchange and a bound on the answer's size.
//! With an API token ([`ApiClient::with_token`]) every request carries
//! `Authorization: Bearer <token>`; the token never shows in `Debug` or an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::Error;

/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Default deadline for one request (connect, send, read the whole answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest API token accepted from a file or the environment, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;

/// An API token (`ekms_…`). Its `Debug` shows nothing.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    /// Checks `text` (surrounding white space removed): 1 to [`MAX_TOKEN_LEN`] visible
    /// ASCII characters. `origin` names where it came from, for the error (which never
    /// quotes the token).
    ///
    /// # Errors
    /// [`Error::Usage`] otherwise.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let t = text.trim();
        if t.is_empty() || t.len() > MAX_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Usage(format!(
                "{origin} does not hold an API token (1 to {MAX_TOKEN_LEN} visible ASCII characters)"
            )));
        }
        Ok(Self(t.to_owned()))
    }

    /// Reads the token from `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, [`Error::Usage`] if it holds no token.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        use std::io::Read as _;
        let origin = path.display().to_string();
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_LEN as u64 + 2).read_to_string(&mut text))
            .map_err(|e| Error::io(format!("reading the token file {origin}"), e))?;
        Self::parse(&text, &origin)
    }

    #[cfg(test)]
    pub(crate) fn expose_for_tests(&self) -> &str {
        &self.0
    }

    fn header(&self) -> Result<header::HeaderValue, Error> {
        let mut v = header::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| Error::Usage("the API token is not a valid header value".into()))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken").finish_non_exhaustive()
    }
}

/// A client of the API served on one Unix socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
    token: Option<BearerToken>,
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
    /// The body of a 2xx answer, or the server's error as [`Error::Api`].
    ///
    /// # Errors
    /// [`Error::Api`] for any non-2xx status, with `code`, `message` and `rule` taken
    /// from `{"error":{…}}` when the body has that shape.
    pub fn into_result(self) -> Result<Value, Error> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let error = self.body.get("error");
        let text = |k: &str| {
            error
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Err(Error::Api {
            status: self.status.as_u16(),
            code: text("code").unwrap_or_else(|| "http_error".to_owned()),
            message: text("message").unwrap_or_else(|| {
                self.status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_owned()
            }),
            rule: text("rule"),
        })
    }
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
    /// [`Error::Connect`] if the socket cannot be reached, [`Error::Http`] for a
    /// transport failure or the deadline, [`Error::BadResponse`] for an answer over
    /// [`MAX_RESPONSE_BYTES`] or not JSON. A non-2xx status is *not* an error here.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, Error> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| {
                Error::Http(format!(
                    "no answer from {} within {} s",
                    self.socket.display(),
                    self.timeout.as_secs()
                ))
            })?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, Error> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect {
                path: self.socket.display().to_string(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Http(format!("HTTP handshake: {e}")))?;
        // Drives the connection; ends when the exchange is over and `sender` is dropped.
        let driver = tokio::spawn(connection);

        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, token.header()?);
        }
        let bytes = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| Error::Http(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(bytes))
            .map_err(|e| Error::Http(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Error::Http(format!("sending the request: {e}")))?;
        let status = response.status();
        let collected = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Error::BadResponse(format!("reading the body: {e}")))?
            .to_bytes();
        drop(sender);
        driver.abort();
        let body = if collected.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&collected)
                .map_err(|e| Error::BadResponse(format!("HTTP {status}: body is not JSON: {e}")))?
        };
        Ok(ApiResponse { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::UnixListener;

    /// Serves one connection with a canned HTTP answer; returns the request head.
    async fn serve_once(listener: UnixListener, answer: &'static str) -> String {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if got.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        stream.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn sends_json_and_reads_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"key_id\":\"k1\"}",
        ));
        let client = ApiClient::new(&path);
        let body = serde_json::json!({"algorithm": "ed25519"});
        let response = client
            .request(Method::POST, "/v1/keys", Some(&body))
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(response.clone().into_result().unwrap()["key_id"], "k1");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /v1/keys HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with("{\"algorithm\":\"ed25519\"}"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn rejects_error_status_with_the_server_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let body = r#"{"error":{"code":"policy_denied","message":"no","rule":"chain_ids"}}"#;
        let answer: &'static str = Box::leak(
            format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        tokio::spawn(serve_once(listener, answer));
        let response = ApiClient::new(&path)
            .request(Method::GET, "/v1/keys", None)
            .await
            .unwrap();
        match response.into_result().unwrap_err() {
            Error::Api {
                status,
                code,
                message,
                rule,
            } => {
                assert_eq!(status, 403);
                assert_eq!(code, "policy_denied");
                assert_eq!(message, "no");
                assert_eq!(rule.as_deref(), Some("chain_ids"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn sends_the_bearer_token_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        ));
        let token = BearerToken::parse(" ekms_secret-value\n", "test").unwrap();
        let client = ApiClient::new(&path).with_token(Some(token));
        assert!(!format!("{client:?}").contains("secret"), "{client:?}");
        client.request(Method::GET, "/v1/keys", None).await.unwrap();
        let request = server.await.unwrap();
        assert!(
            request.contains("\r\nauthorization: Bearer ekms_secret-value\r\n"),
            "{request}"
        );
    }

    #[test]
    fn rejects_token_text_that_is_not_a_token() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        for t in ["", "  \n", "two words", "ekms_é", long.as_str()] {
            let err = BearerToken::parse(t, "EKMS_TOKEN").unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{t:?}");
            if !t.trim().is_empty() {
                assert!(!err.to_string().contains(t.trim()), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn rejects_a_body_that_is_not_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        ));
        let err = ApiClient::new(&path)
            .request(Method::GET, "/v1/health", None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadResponse(_)), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let err = ApiClient::new(dir.path().join("none.sock"))
            .request(Method::GET, "/v1/health", None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_silent_server_after_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _keep = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        });
        let err = ApiClient::new(&path)
            .with_timeout(Duration::from_millis(200))
            .request(Method::GET, "/v1/health", None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Http(ref m) if m.contains("within")),
            "{err}"
        );
    }
}
