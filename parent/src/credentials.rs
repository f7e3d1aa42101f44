//! The AWS credentials the parent hands to the enclave's KMS client (DESIGN §2), and
//! where they come from (`--aws-credentials env|imds`):
//!
//! - `env`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, read once
//!   at start ([`AwsCredentials::from_env`]).
//! - `imds`: the instance role's temporary credentials from the EC2 instance metadata
//!   service, IMDSv2 ([`ImdsClient`]; AWS EC2 User Guide, "Use the Instance Metadata
//!   Service to access instance metadata" and "Retrieve security credentials from
//!   instance metadata"): `PUT /latest/api/token` (header
//!   `X-aws-ec2-metadata-token-ttl-seconds`), then with header
//!   `X-aws-ec2-metadata-token`, `GET /latest/meta-data/iam/security-credentials/` (the
//!   role name) and `GET …/security-credentials/<role>` (JSON `AccessKeyId`,
//!   `SecretAccessKey`, `Token`, `Expiration`). [`refresh_loop`] fetches new ones
//!   [`RefreshPolicy::margin`] before `Expiration` (retrying with backoff) and hands
//!   them to the relay, which re-sends `Configure` (DESIGN §2, enclave `state.rs`).
//!
//! IMDS is plain HTTP on a link-local address (hyper 1, one connection per request).
//! Answers are capped at [`MAX_IMDS_RESPONSE_BYTES`] before parsing. Credentials are not
//! secret from the parent but never logged: `Debug` shows the access key id only, error
//! messages carry no response text, and secrets are zeroized on drop.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use ekms_shared::Credentials;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::Error;

/// The IMDS base URL on EC2 (IPv4 link-local).
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Largest IMDS answer read, in bytes; a longer one is refused.
pub const MAX_IMDS_RESPONSE_BYTES: usize = 64 * 1024;

/// Lifetime asked for an IMDSv2 session token, in seconds (the maximum, six hours).
pub const IMDS_TOKEN_TTL_SECS: u32 = 21_600;

/// Deadline of one IMDS HTTP exchange (connect, request, whole answer).
pub const IMDS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetch attempts at start before the parent gives up (with backoff between them).
pub const IMDS_START_ATTEMPTS: u32 = 4;

const TOKEN_PATH: &str = "/latest/api/token";
const ROLES_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// Where `--aws-credentials` takes the credentials from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CredentialsSource {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, read at start.
    #[default]
    Env,
    /// The instance role's credentials from IMDSv2, refreshed before they expire.
    Imds,
}

/// AWS credentials for the enclave's KMS client. Zeroized on drop, redacted in `Debug`.
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl AwsCredentials {
    /// Credentials from explicit values.
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    ) -> Self {
        AwsCredentials {
            access_key_id,
            secret_access_key: Zeroizing::new(secret_access_key),
            session_token: session_token.map(Zeroizing::new),
        }
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optional)
    /// `AWS_SESSION_TOKEN`.
    ///
    /// # Errors
    /// [`Error::Config`] if either of the first two is unset or empty.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing = |name: &str| Error::Config(format!("{name} is not set"));
        Ok(Self::new(
            var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
            var("AWS_SESSION_TOKEN"),
        ))
    }

    /// The access key id (not secret; for logs).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The wire form for `Configure`.
    pub(crate) fn to_wire(&self) -> Credentials {
        Credentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.as_str().to_owned(),
            session_token: self.session_token.as_ref().map(|t| t.as_str().to_owned()),
        }
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why IMDS gave no credentials. Messages carry no response text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The IMDS endpoint is not `http://HOST[:PORT]`.
    #[error("IMDS endpoint {0:?}: expected http://HOST[:PORT]")]
    Endpoint(String),
    /// Connecting, sending or reading failed, or the deadline passed.
    #[error("IMDS {path}: {message}")]
    Transport {
        /// The request path.
        path: String,
        /// What failed.
        message: String,
    },
    /// IMDS answered with another status than 200 (401: token refused; 404: no
    /// instance role).
    #[error("IMDS {path}: HTTP {status}")]
    Status {
        /// The request path.
        path: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The answer was longer than [`MAX_IMDS_RESPONSE_BYTES`].
    #[error("IMDS {path}: answer longer than {MAX_IMDS_RESPONSE_BYTES} bytes")]
    TooLarge {
        /// The request path.
        path: String,
    },
    /// The answer is not what the EC2 User Guide describes (the text says which part).
    #[error("IMDS answer malformed: {0}")]
    Malformed(String),
}

/// Credentials from IMDS and when they expire.
#[derive(Debug)]
pub struct ImdsCredentials {
    /// The credentials.
    pub credentials: AwsCredentials,
    /// Their `Expiration`.
    pub expiration: SystemTime,
}

/// The `security-credentials/<role>` document (EC2 User Guide). Other fields
/// (`LastUpdated`, `Type`) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    code: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

/// An IMDSv2 client for one endpoint.
#[derive(Debug, Clone)]
pub struct ImdsClient {
    /// `HOST[:PORT]` as given, for the `Host` header.
    authority: String,
    /// `HOST:PORT` to connect to.
    connect: String,
}

impl ImdsClient {
    /// A client for `endpoint`, `http://HOST[:PORT]` (no path; e.g.
    /// [`DEFAULT_IMDS_ENDPOINT`], or a loopback fake in tests). Makes no network call.
    ///
    /// # Errors
    /// [`CredentialsError::Endpoint`] for another scheme, a path, or no host.
    pub fn new(endpoint: &str) -> Result<Self, CredentialsError> {
        let bad = || CredentialsError::Endpoint(endpoint.to_owned());
        let uri: hyper::Uri = endpoint.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        if uri.query().is_some() {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(ImdsClient {
            authority: authority.as_str().to_owned(),
            connect: format!("{}:{port}", authority.host()),
        })
    }

    /// Fetches the instance role's credentials: a session token, the role name, then
    /// the role's credentials.
    ///
    /// # Errors
    /// Any [`CredentialsError`]: transport, non-200 status, an answer over
    /// [`MAX_IMDS_RESPONSE_BYTES`], no role, or a credentials document that does not
    /// parse, lacks a field, has `Code` other than `Success` or an `Expiration` that is
    /// not RFC 3339.
    pub async fn fetch(&self) -> Result<ImdsCredentials, CredentialsError> {
        let ttl = IMDS_TOKEN_TTL_SECS.to_string();
        let token = self
            .request(Method::PUT, TOKEN_PATH, &[(TOKEN_TTL_HEADER, &ttl)])
            .await?;
        let token = std::str::from_utf8(&token)
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| CredentialsError::Malformed("the session token is empty".into()))?
            .to_owned();
        let token = Zeroizing::new(token);
        let roles = self
            .request(Method::GET, ROLES_PATH, &[(TOKEN_HEADER, &token)])
            .await?;
        let role = std::str::from_utf8(&roles)
            .ok()
            .and_then(|s| s.lines().map(str::trim).find(|l| !l.is_empty()))
            .ok_or_else(|| CredentialsError::Malformed("no instance role".into()))?;
        if !valid_role_name(role) {
            return Err(CredentialsError::Malformed(
                "the role name has characters IAM does not allow".into(),
            ));
        }
        let body = self
            .request(
                Method::GET,
                &format!("{ROLES_PATH}{role}"),
                &[(TOKEN_HEADER, &token)],
            )
            .await?;
        parse_role_credentials(&body)
    }

    /// [`ImdsClient::fetch`], up to `attempts` times with doubling pauses from
    /// `policy.retry_min` (for the start of the parent).
    ///
    /// # Errors
    /// The last attempt's [`CredentialsError`].
    pub async fn fetch_with_retries(
        &self,
        attempts: u32,
        policy: &RefreshPolicy,
    ) -> Result<ImdsCredentials, CredentialsError> {
        let mut backoff = policy.retry_min;
        let mut attempt = 1;
        loop {
            match self.fetch().await {
                Ok(c) => return Ok(c),
                Err(e) if attempt >= attempts => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "IMDS credentials fetch failed; retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(policy.retry_max);
            attempt += 1;
        }
    }

    /// One HTTP/1.1 exchange with IMDS: the 200 answer's body, at most
    /// [`MAX_IMDS_RESPONSE_BYTES`], zeroized on drop.
    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Zeroizing<Vec<u8>>, CredentialsError> {
        let transport = |message: String| CredentialsError::Transport {
            path: path.to_owned(),
            message,
        };
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(&self.connect)
                .await
                .map_err(|e| transport(format!("connect: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| transport(format!("handshake: {e}")))?;
            let driver = tokio::spawn(conn);
            let mut builder = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.authority);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = builder
                .body(Empty::<&'static [u8]>::new())
                .map_err(|_| transport("invalid request".into()))?;
            let result = async {
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| transport(format!("request: {e}")))?;
                let status = response.status();
                if status != StatusCode::OK {
                    return Err(CredentialsError::Status {
                        path: path.to_owned(),
                        status: status.as_u16(),
                    });
                }
                let body = Limited::new(response.into_body(), MAX_IMDS_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            CredentialsError::TooLarge {
                                path: path.to_owned(),
                            }
                        } else {
                            transport(format!("reading the answer: {e}"))
                        }
                    })?;
                Ok(Zeroizing::new(body.to_bytes().to_vec()))
            }
            .await;
            driver.abort();
            result
        };
        tokio::time::timeout(IMDS_REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| transport(format!("no answer within {IMDS_REQUEST_TIMEOUT:?}")))?
    }
}

/// IAM role names: 1-64 of letters, digits and `+=,.@_-`.
fn valid_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Parses the `security-credentials/<role>` document.
fn parse_role_credentials(body: &[u8]) -> Result<ImdsCredentials, CredentialsError> {
    // serde_json's messages can quote input: only its position is kept.
    let doc: RoleCredentials = serde_json::from_slice(body).map_err(|e| {
        CredentialsError::Malformed(format!(
            "credentials JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let secret = Zeroizing::new(doc.secret_access_key);
    let token = Zeroizing::new(doc.token);
    if doc.code.as_deref().is_some_and(|c| c != "Success") {
        return Err(CredentialsError::Malformed(
            "credentials Code is not Success".into(),
        ));
    }
    if doc.access_key_id.is_empty() || secret.is_empty() || token.is_empty() {
        return Err(CredentialsError::Malformed(
            "credentials have an empty field".into(),
        ));
    }
    let expiration = OffsetDateTime::parse(&doc.expiration, &Rfc3339).map_err(|_| {
        CredentialsError::Malformed("credentials Expiration is not RFC 3339".into())
    })?;
    Ok(ImdsCredentials {
        credentials: AwsCredentials {
            access_key_id: doc.access_key_id,
            secret_access_key: secret,
            session_token: Some(token),
        },
        expiration: SystemTime::from(expiration),
    })
}

/// When [`refresh_loop`] fetches new credentials, and how it retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Fetch this long before `Expiration` (default 15 minutes).
    pub margin: Duration,
    /// Shortest wait between two fetches that succeed (default 60 s): credentials
    /// already inside the margin are polled at this pace until IMDS rotates them.
    pub min_delay: Duration,
    /// First pause after a failure, doubled per failure (default 1 s).
    pub retry_min: Duration,
    /// Longest pause after a failure (default 60 s).
    pub retry_max: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            margin: Duration::from_secs(15 * 60),
            min_delay: Duration::from_secs(60),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// How long to wait, at `now`, before fetching credentials that expire at
/// `expiration`: until `margin` before it, and at least `min_delay`.
pub fn refresh_delay(expiration: SystemTime, now: SystemTime, policy: &RefreshPolicy) -> Duration {
    expiration
        .checked_sub(policy.margin)
        .and_then(|at| at.duration_since(now).ok())
        .unwrap_or(Duration::ZERO)
        .max(policy.min_delay)
}

/// Runs for ever: waits until [`refresh_delay`] of `expiration`, fetches credentials
/// from `imds` and hands them to `deliver` (which pushes them to the enclave and says
/// whether that worked); on a fetch or delivery failure retries with a doubling pause
/// (`policy.retry_min` to `policy.retry_max`). Spawn it, and abort it at shutdown.
pub async fn refresh_loop<F, Fut>(
    imds: ImdsClient,
    policy: RefreshPolicy,
    mut expiration: SystemTime,
    mut deliver: F,
) where
    F: FnMut(AwsCredentials) -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        tokio::time::sleep(refresh_delay(expiration, SystemTime::now(), &policy)).await;
        let mut backoff = policy.retry_min;
        loop {
            match imds.fetch().await {
                Ok(fresh) => {
                    let next = fresh.expiration;
                    let id = fresh.credentials.access_key_id().to_owned();
                    if deliver(fresh.credentials).await {
                        tracing::info!(access_key_id = %id, "AWS credentials refreshed from IMDS");
                        expiration = next;
                        break;
                    }
                    tracing::warn!(access_key_id = %id, "refreshed AWS credentials not delivered to the enclave; retrying");
                }
                Err(e) => tracing::warn!(error = %e, "IMDS credentials refresh failed; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(policy.retry_max);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// One request as the fake IMDS saw it.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    pub(crate) type Handler = dyn Fn(&Seen, usize) -> (u16, Vec<u8>) + Send + Sync;

    /// A fake IMDS on 127.0.0.1:0: hand-written HTTP/1.1, one request per connection.
    /// `handler` gets the request and how many credentials documents were asked before.
    pub(crate) struct FakeImds {
        endpoint: String,
        seen: Arc<Mutex<Vec<Seen>>>,
        pub(crate) credential_fetches: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeImds {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeImds {
        pub(crate) async fn start(handler: Arc<Handler>) -> FakeImds {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let credential_fetches = Arc::new(AtomicUsize::new(0));
            let (s, c) = (Arc::clone(&seen), Arc::clone(&credential_fetches));
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = stream.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = text.split("\r\n");
                    let mut first = lines.next().unwrap_or_default().split(' ');
                    let seen = Seen {
                        method: first.next().unwrap_or_default().to_owned(),
                        path: first.next().unwrap_or_default().to_owned(),
                        headers: lines
                            .take_while(|l| !l.is_empty())
                            .filter_map(|l| l.split_once(':'))
                            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                            .collect(),
                    };
                    let fetches = if seen.path.len() > ROLES_PATH.len()
                        && seen.path.starts_with(ROLES_PATH)
                    {
                        c.fetch_add(1, SeqCst)
                    } else {
                        c.load(SeqCst)
                    };
                    let (status, body) = handler(&seen, fetches);
                    s.lock().unwrap().push(seen);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                }
            });
            FakeImds {
                endpoint,
                seen,
                credential_fetches,
                task,
            }
        }

        pub(crate) fn client(&self) -> ImdsClient {
            ImdsClient::new(&self.endpoint).unwrap()
        }
    }

    const TOKEN: &str = "AQAEAFakeSessionToken==";
    const ROLE: &str = "ekms-instance-role";

    fn rfc3339(t: SystemTime) -> String {
        OffsetDateTime::from(t).format(&Rfc3339).unwrap()
    }

    pub(crate) fn credentials_json(n: usize, expires_in: Duration) -> Vec<u8> {
        serde_json::json!({
            "Code": "Success",
            "LastUpdated": "2024-01-01T00:00:00Z",
            "Type": "AWS-HMAC",
            "AccessKeyId": format!("ASIAFAKE{n}"),
            "SecretAccessKey": format!("secret-{n}"),
            "Token": format!("session-token-{n}"),
            "Expiration": rfc3339(SystemTime::now() + expires_in),
        })
        .to_string()
        .into_bytes()
    }

    /// An IMDS that follows the IMDSv2 flow and checks the token; `creds` answers the
    /// credentials document (given how many were asked before).
    pub(crate) fn imds(
        creds: impl Fn(usize) -> (u16, Vec<u8>) + Send + Sync + 'static,
    ) -> Arc<Handler> {
        Arc::new(move |seen: &Seen, n: usize| {
            if seen.method == "PUT" && seen.path == TOKEN_PATH {
                return match seen.header(TOKEN_TTL_HEADER) {
                    Some("21600") => (200, TOKEN.as_bytes().to_vec()),
                    _ => (400, Vec::new()),
                };
            }
            if seen.method != "GET" || seen.header(TOKEN_HEADER) != Some(TOKEN) {
                return (401, Vec::new());
            }
            if seen.path == ROLES_PATH {
                return (200, format!("{ROLE}\n").into_bytes());
            }
            if seen.path == format!("{ROLES_PATH}{ROLE}") {
                return creds(n);
            }
            (404, Vec::new())
        })
    }

    #[tokio::test]
    async fn fetches_credentials_with_the_imdsv2_token_flow() {
        let fake = FakeImds::start(imds(|n| {
            (200, credentials_json(n, Duration::from_secs(3600)))
        }))
        .await;
        let got = fake.client().fetch().await.unwrap();
        assert_eq!(got.credentials.access_key_id(), "ASIAFAKE0");
        let wire = got.credentials.to_wire();
        assert_eq!(wire.secret_access_key, "secret-0");
        assert_eq!(wire.session_token.as_deref(), Some("session-token-0"));
        let left = got.expiration.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        let seen = fake.seen.lock().unwrap().clone();
        let paths: Vec<_> = seen
            .iter()
            .map(|s| (s.method.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("PUT", TOKEN_PATH),
                ("GET", ROLES_PATH),
                (
                    "GET",
                    "/latest/meta-data/iam/security-credentials/ekms-instance-role"
                ),
            ]
        );
        assert_eq!(seen[0].header(TOKEN_TTL_HEADER), Some("21600"));
        assert!(seen[1..]
            .iter()
            .all(|s| s.header(TOKEN_HEADER) == Some(TOKEN)));
        // Never logged: Debug shows the access key id only.
        let debug = format!("{got:?}");
        assert!(debug.contains("ASIAFAKE0"));
        assert!(!debug.contains("secret-0") && !debug.contains("session-token-0"));
    }

    #[tokio::test]
    async fn rejects_answers_without_a_token_or_a_role() {
        // IMDSv1-only or hop-limited: the token PUT fails.
        let fake = FakeImds::start(Arc::new(|_: &Seen, _| (403, Vec::new()))).await;
        let e = fake.client().fetch().await.unwrap_err();
        assert!(
            matches!(e, CredentialsError::Status { status: 403, .. }),
            "{e}"
        );
        // An empty token.
        let fake = FakeImds::start(Arc::new(|_: &Seen, _| (200, b"  \n".to_vec()))).await;
        let e = fake.client().fetch().await.unwrap_err();
        assert!(matches!(e, CredentialsError::Malformed(_)), "{e}");
        // No instance role attached: 404 on the listing.
        let no_role = |seen: &Seen, _| {
            if seen.method == "PUT" {
                (200, TOKEN.as_bytes().to_vec())
            } else {
                (404, Vec::new())
            }
        };
        let fake = FakeImds::start(Arc::new(no_role)).await;
        let e = fake.client().fetch().await.unwrap_err();
        assert!(
            matches!(e, CredentialsError::Status { status: 404, .. }),
            "{e}"
        );
        // A role name that would change the path.
        let odd_role = |seen: &Seen, _| {
            if seen.method == "PUT" {
                (200, TOKEN.as_bytes().to_vec())
            } else {
                (200, b"../../user-data".to_vec())
            }
        };
        let fake = FakeImds::start(Arc::new(odd_role)).await;
        let e = fake.client().fetch().await.unwrap_err();
        assert!(matches!(e, CredentialsError::Malformed(_)), "{e}");
        assert_eq!(
            fake.seen.lock().unwrap().len(),
            2,
            "the odd role is never asked"
        );
    }

    #[tokio::test]
    async fn rejects_oversize_answers() {
        let fake = FakeImds::start(imds(|_| (200, vec![b' '; MAX_IMDS_RESPONSE_BYTES + 1]))).await;
        let e = fake.client().fetch().await.unwrap_err();
        assert!(matches!(e, CredentialsError::TooLarge { .. }), "{e}");
        // Exactly at the limit is read (and then fails as JSON, not as size).
        let fake = FakeImds::start(imds(|_| (200, vec![b' '; MAX_IMDS_RESPONSE_BYTES]))).await;
        let e = fake.client().fetch().await.unwrap_err();
        assert!(matches!(e, CredentialsError::Malformed(_)), "{e}");
    }

    #[tokio::test]
    async fn rejects_bad_credentials_documents_without_quoting_them() {
        let leak = br#"{"AccessKeyId":"ASIA","SecretAccessKey":"leaky-secret","Token":7,"Expiration":"x"}"#;
        let cases: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            leak.to_vec(),
            br#"{"AccessKeyId":"ASIA","SecretAccessKey":"s","Expiration":"2030-01-01T00:00:00Z"}"#
                .to_vec(),
            br#"{"Code":"Success","AccessKeyId":"ASIA","SecretAccessKey":"s","Token":"t","Expiration":"tomorrow"}"#
                .to_vec(),
            br#"{"Code":"Failure","AccessKeyId":"ASIA","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#
                .to_vec(),
            br#"{"AccessKeyId":"","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#
                .to_vec(),
        ];
        for body in cases {
            let e = parse_role_credentials(&body).unwrap_err();
            assert!(matches!(e, CredentialsError::Malformed(_)), "{e}");
            assert!(!e.to_string().contains("leaky-secret"), "{e}");
        }
        let ok = parse_role_credentials(
            br#"{"AccessKeyId":"ASIA","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            ok.expiration,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
        );
    }

    #[test]
    fn parses_endpoints() {
        let c = ImdsClient::new(DEFAULT_IMDS_ENDPOINT).unwrap();
        assert_eq!(c.connect, "169.254.169.254:80");
        assert_eq!(c.authority, "169.254.169.254");
        let c = ImdsClient::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(c.connect, "127.0.0.1:8080");
        let c = ImdsClient::new("http://[fd00:ec2::254]").unwrap();
        assert_eq!(c.connect, "[fd00:ec2::254]:80");
    }

    #[test]
    fn rejects_bad_endpoints() {
        for e in [
            "",
            "169.254.169.254",
            "https://169.254.169.254",
            "http://169.254.169.254/latest",
            "http://user@127.0.0.1",
            "http://127.0.0.1?x=1",
        ] {
            assert!(ImdsClient::new(e).is_err(), "{e}");
        }
    }

    #[test]
    fn schedules_refresh_before_expiration() {
        let policy = RefreshPolicy::default();
        let now = SystemTime::now();
        let six_hours = now + Duration::from_secs(6 * 3600);
        assert_eq!(
            refresh_delay(six_hours, now, &policy),
            Duration::from_secs(6 * 3600 - 15 * 60)
        );
        // Inside the margin, or already expired: poll at the minimum pace.
        let soon = now + Duration::from_secs(10 * 60);
        assert_eq!(refresh_delay(soon, now, &policy), policy.min_delay);
        let past = now - Duration::from_secs(60);
        assert_eq!(refresh_delay(past, now, &policy), policy.min_delay);
    }

    pub(crate) fn fast_policy(margin_ms: u64) -> RefreshPolicy {
        RefreshPolicy {
            margin: Duration::from_millis(margin_ms),
            min_delay: Duration::from_millis(50),
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn refreshes_credentials_margin_before_they_expire() {
        // Credentials that expire in 1.5 s, refreshed 1 s before: ~0.5 s after start.
        let fake = FakeImds::start(imds(|n| {
            (200, credentials_json(n, Duration::from_secs(3600)))
        }))
        .await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let started = std::time::Instant::now();
        let expiration = SystemTime::now() + Duration::from_millis(1500);
        let task = tokio::spawn(refresh_loop(
            fake.client(),
            fast_policy(1000),
            expiration,
            move |c: AwsCredentials| {
                let tx = tx.clone();
                async move { tx.send(c.access_key_id().to_owned()).is_ok() }
            },
        ));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(first, "ASIAFAKE0");
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_millis(1400),
            "{waited:?}"
        );
        // The new credentials last an hour: nothing more within the next 300 ms.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(fake.credential_fetches.load(SeqCst), 1);
        task.abort();
    }

    #[tokio::test]
    async fn rejects_failed_fetches_and_deliveries_then_retries_with_backoff() {
        // Two 500s, then credentials; the first delivery fails too.
        let fake = FakeImds::start(imds(|n| {
            if n < 2 {
                (500, Vec::new())
            } else {
                (200, credentials_json(n, Duration::from_secs(3600)))
            }
        }))
        .await;
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let d = Arc::clone(&deliveries);
        let task = tokio::spawn(refresh_loop(
            fake.client(),
            fast_policy(1000),
            SystemTime::now(),
            move |c: AwsCredentials| {
                let d = Arc::clone(&d);
                async move {
                    let mut d = d.lock().unwrap();
                    d.push(c.access_key_id().to_owned());
                    d.len() > 1
                }
            },
        ));
        for _ in 0..100 {
            if deliveries.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*deliveries.lock().unwrap(), ["ASIAFAKE2", "ASIAFAKE3"]);
        assert_eq!(fake.credential_fetches.load(SeqCst), 4);
        task.abort();
    }

    #[tokio::test]
    async fn rejects_start_when_imds_keeps_failing() {
        let fake = FakeImds::start(imds(|_| (500, Vec::new()))).await;
        let e = fake
            .client()
            .fetch_with_retries(3, &fast_policy(0))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CredentialsError::Status { status: 500, .. }),
            "{e}"
        );
        assert_eq!(fake.credential_fetches.load(SeqCst), 3);
        let fake = FakeImds::start(imds(|n| {
            (200, credentials_json(n, Duration::from_secs(60)))
        }))
        .await;
        let ok = fake
            .client()
            .fetch_with_retries(3, &fast_policy(0))
            .await
            .unwrap();
        assert_eq!(ok.credentials.access_key_id(), "ASIAFAKE0");
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = AwsCredentials::new("AKIA".into(), "topsecret".into(), Some("tok".into()));
        let s = format!("{c:?}");
        assert!(s.contains("AKIA"));
        assert!(!s.contains("topsecret") && !s.contains("tok\""));
    }
}
