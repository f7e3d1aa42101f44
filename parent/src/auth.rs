//! API tokens: who may call which route of the application API.
//!
//! A token is `ekms_` followed by 32 bytes from the OS CSPRNG in unpadded base64url
//! (48 printable characters). It is shown once — in the answer of `POST /v1/tokens`, or
//! in `<state-dir>/admin.token` for the admin token the parent creates at its first
//! start ([`ensure_admin_token`]) — and stored only as its SHA-256 ([`token_hash`]),
//! with a separate, non-secret `token_id` (32 hex digits). Callers present it as
//! `Authorization: Bearer <token>`; the parent hashes it, looks the hash up (an
//! indexed column, cached in memory by [`KeyStore::token_by_hash`]) and compares the
//! stored hash in constant time.
//!
//! Scopes ([`Scope`]): `sign` (optionally limited to listed key ids), `keys:create`,
//! `keys:read`, `policy:write`, `admin` (implies every scope, on every key).
//!
//! Tokens are a host-side control: they keep other local processes and a compromised
//! bot away from keys that are not theirs. Host root, who can read `admin.token` or
//! write the database, is not stopped by tokens; owner-signed policy changes are what
//! stop it (DESIGN §4).
//!
//! Rule for maintainers: every route but `GET /v1/health` and `GET /v1/openapi.json`
//! (public documentation, [`crate::openapi`]) takes a [`Caller`] as its
//! *first* extractor (so nothing, not even the body, is read for an unauthenticated
//! request) and passes it to the service layer, whose every operation starts with
//! [`Caller::require`] (so REST, JSON-RPC and tools get the same checks):
//! ```ignore
//! async fn handler(caller: Caller, State(state): State<AppState>, …) -> Result<Response, ApiError> {
//!     let signed = state.service.sign(&caller, request).await?;
//! ```

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::api::{ApiError, AppState};
use crate::error::Error;
use crate::store::{KeyStore, StoreError, TokenRow};

/// Prefix of every token (it makes a leaked token easy to recognise and grep for).
pub const TOKEN_PREFIX: &str = "ekms_";
/// Random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Longest `Authorization` value that is hashed and looked up; longer ones are refused
/// at once (a token is 48 characters).
pub const MAX_PRESENTED_LEN: usize = 256;
/// File name of the admin token in the state directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Name of the admin token the parent creates at its first start.
pub const ADMIN_TOKEN_NAME: &str = "admin";

/// What a token may do. Names (`as_str`) are API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// `sign`: `POST /v1/keys/{id}/sign` (limited to the token's key ids, if it has some).
    Sign,
    /// `keys:create`: `POST /v1/keys`.
    KeysCreate,
    /// `keys:read`: `GET /v1/keys`, `GET /v1/keys/{id}`.
    KeysRead,
    /// `policy:write`: `PUT /v1/keys/{id}/policy`.
    PolicyWrite,
    /// `admin`: every scope, on every key, and the token routes.
    Admin,
}

impl Scope {
    /// Every scope, in the order the API lists them.
    pub const ALL: [Scope; 5] = [
        Scope::Sign,
        Scope::KeysCreate,
        Scope::KeysRead,
        Scope::PolicyWrite,
        Scope::Admin,
    ];

    /// The scope's API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Sign => "sign",
            Scope::KeysCreate => "keys:create",
            Scope::KeysRead => "keys:read",
            Scope::PolicyWrite => "policy:write",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `name` (exact, case-sensitive), if any.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Sign => 1,
            Scope::KeysCreate => 2,
            Scope::KeysRead => 4,
            Scope::PolicyWrite => 8,
            Scope::Admin => 16,
        }
    }
}

/// A token in clear: only ever in the answer that creates it and in `admin.token`.
/// Zeroized on drop; its `Debug` shows nothing.
pub struct Token(Zeroizing<String>);

impl Token {
    /// The token text, for the one place it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").finish_non_exhaustive()
    }
}

/// A new token from the OS CSPRNG and its SHA-256.
///
/// # Errors
/// [`Error::Internal`] if the OS has no randomness to give.
pub fn generate_token() -> Result<(Token, [u8; 32]), Error> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    getrandom::fill(bytes.as_mut_slice())
        .map_err(|e| Error::Internal(format!("OS random generator: {e}")))?;
    let mut text = Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + 43));
    text.push_str(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut text);
    let hash = token_hash(&text);
    Ok((Token(text), hash))
}

/// A new token id: 16 random bytes as 32 lower-case hex digits. Not secret.
///
/// # Errors
/// [`Error::Internal`] if the OS has no randomness to give.
pub fn new_token_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("OS random generator: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Whether `id` has the shape of a token id (32 lower-case hex digits).
pub fn is_token_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// SHA-256 of the token text: what the store keeps and looks up.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A valid token without the scope (or key) an operation needs: why, for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

/// The authenticated caller of a request: a stored, unexpired token. Extract it first
/// in every protected handler and call [`Caller::require`].
#[derive(Debug, Clone)]
pub struct Caller {
    row: Arc<TokenRow>,
    scopes: u8,
}

impl Caller {
    /// The token's (non-secret) id.
    pub fn token_id(&self) -> &str {
        &self.row.token_id
    }

    /// Whether the token has `scope` (`admin` has every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// The keys the token is limited to (its `key_ids`), or `None` for every key (no
    /// list, or an `admin` token).
    pub fn key_list(&self) -> Option<&[String]> {
        if self.scopes & Scope::Admin.bit() != 0 {
            return None;
        }
        self.row.key_ids.as_deref()
    }

    /// Checks that the token has `scope` and, when `key_id` is given and the token is
    /// limited to listed keys (and is not `admin`), that `key_id` is one of them.
    ///
    /// # Errors
    /// [`Forbidden`] otherwise (403 `forbidden`).
    pub fn require(&self, scope: Scope, key_id: Option<&str>) -> Result<(), Forbidden> {
        if !self.has(scope) {
            return Err(Forbidden(format!(
                "this token does not have the scope {}",
                scope.as_str()
            )));
        }
        if self.scopes & Scope::Admin.bit() != 0 {
            return Ok(());
        }
        if let (Some(id), Some(allowed)) = (key_id, &self.row.key_ids) {
            if !allowed.iter().any(|k| k == id) {
                return Err(Forbidden(format!("this token may not use key {id}")));
            }
        }
        Ok(())
    }

    fn from_row(row: Arc<TokenRow>) -> Caller {
        let mut scopes = 0;
        for name in row.scopes.split(' ').filter(|s| !s.is_empty()) {
            match Scope::parse(name) {
                Some(s) => scopes |= s.bit(),
                // A row written by something else: an unknown name grants nothing.
                None => {
                    tracing::warn!(token_id = %row.token_id, "stored token has an unknown scope")
                }
            }
        }
        Caller { row, scopes }
    }
}

/// Authenticates the request's `Authorization: Bearer` token against the store.
///
/// # Errors
/// 401 `unauthenticated` for no token, a malformed header, or a token that is unknown,
/// revoked or expired; the store's errors (500).
pub async fn authenticate(headers: &HeaderMap, store: &dyn KeyStore) -> Result<Caller, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::unauthenticated(
            "this route needs an API token: send one Authorization: Bearer <token> header",
        ));
    };
    let invalid =
        || ApiError::unauthenticated("the API token is not valid (unknown, revoked or expired)");
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty() && t.len() <= MAX_PRESENTED_LEN)
        .ok_or_else(invalid)?;
    let hash = token_hash(presented);
    let row = match store.token_by_hash(hash).await {
        Ok(Some(row)) => row,
        Ok(None) => return Err(invalid()),
        Err(StoreError::Corrupt(detail)) => {
            tracing::warn!(%detail, "stored token row is invalid");
            return Err(invalid());
        }
        Err(e) => return Err(Error::from(e).into()),
    };
    // The row was found by this hash; compared again, in constant time, all the same.
    if !bool::from(row.token_hash.ct_eq(&hash)) {
        return Err(invalid());
    }
    if row.expires_at_ms.is_some_and(|t| t <= crate::now_ms()) {
        return Err(invalid());
    }
    tracing::Span::current().record("token_id", row.token_id.as_str());
    Ok(Caller::from_row(row))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        authenticate(&parts.headers, state.service.store().as_ref())
            .await
            .map_err(|e| {
                let challenge = e.status == axum::http::StatusCode::UNAUTHORIZED;
                let mut response = e.into_response();
                if challenge {
                    // RFC 6750 §3.
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                response
            })
    }
}

/// Makes sure `path` holds a valid admin token of `store`: keeps the file when its token
/// is stored, unexpired and `admin`; otherwise (first start, a new database, a revoked
/// admin token) creates an admin token and writes it to `path` (mode 0600 from the
/// start, atomically: see [`crate::io::write_private_file`]). The token is never logged.
///
/// # Errors
/// [`Error::Io`] reading or writing the file; the store's errors.
pub async fn ensure_admin_token(store: &dyn KeyStore, path: &Path) -> Result<(), Error> {
    if let Some(existing) = read_token_file(path)? {
        let kept = match store.token_by_hash(token_hash(&existing)).await {
            Ok(Some(row)) => {
                let caller = Caller::from_row(row);
                let now = crate::now_ms();
                caller.scopes & Scope::Admin.bit() != 0
                    && caller.row.expires_at_ms.is_none_or(|t| t > now)
            }
            Ok(None) | Err(StoreError::Corrupt(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if kept {
            return crate::io::restrict_file(path);
        }
        tracing::warn!(path = %path.display(), "the admin token file holds no valid admin token: replacing it");
    }
    let (token, token_hash) = generate_token()?;
    let row = TokenRow {
        token_id: new_token_id()?,
        name: ADMIN_TOKEN_NAME.into(),
        token_hash,
        scopes: Scope::Admin.as_str().into(),
        key_ids: None,
        created_at_ms: crate::now_ms(),
        expires_at_ms: None,
    };
    let token_id = row.token_id.clone();
    store.insert_token(row, None).await?;
    let mut text = Zeroizing::new(String::with_capacity(token.expose().len() + 1));
    text.push_str(token.expose());
    text.push('\n');
    if let Err(e) = crate::io::write_private_file(path, text.as_bytes()) {
        // Nobody can know this token: take it out again.
        let _ = store.delete_token(token_id).await;
        return Err(e);
    }
    tracing::info!(%token_id, path = %path.display(), "admin token created");
    Ok(())
}

/// The token in `path` (trimmed), `None` if the file is missing, empty or too long to
/// be one.
fn read_token_file(path: &Path) -> Result<Option<Zeroizing<String>>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let mut text = Zeroizing::new(String::with_capacity(MAX_PRESENTED_LEN + 2));
    let read = file
        .take(MAX_PRESENTED_LEN as u64 + 2)
        .read_to_string(&mut text);
    if read.is_err() {
        return Ok(None);
    }
    let token = text.trim();
    if token.is_empty() || token.len() > MAX_PRESENTED_LEN {
        return Ok(None);
    }
    Ok(Some(Zeroizing::new(token.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore as Store;
    use axum::http::StatusCode;

    fn row(scopes: &str, key_ids: Option<&[&str]>, expires_at_ms: Option<i64>) -> TokenRow {
        TokenRow {
            token_id: new_token_id().unwrap(),
            name: "t".into(),
            token_hash: [0; 32],
            scopes: scopes.into(),
            key_ids: key_ids.map(|ids| ids.iter().map(|s| (*s).to_owned()).collect()),
            created_at_ms: 1,
            expires_at_ms,
        }
    }

    async fn stored(store: &Store, mut r: TokenRow) -> Token {
        let (token, hash) = generate_token().unwrap();
        r.token_hash = hash;
        store.insert_token(r, None).await.unwrap();
        token
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn scope_names_are_pinned_and_parse_back() {
        let names: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["sign", "keys:create", "keys:read", "policy:write", "admin"]
        );
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn rejects_unknown_scope_names() {
        for n in ["", "Sign", "keys", "keys:write", "admin ", "*"] {
            assert_eq!(Scope::parse(n), None, "{n:?}");
        }
    }

    #[test]
    fn generates_distinct_printable_tokens_and_ids() {
        let (a, ha) = generate_token().unwrap();
        let (b, hb) = generate_token().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(ha, hb);
        assert_eq!(ha, token_hash(a.expose()));
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.expose().len(), 48);
        assert!(a
            .expose()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'));
        assert!(!format!("{a:?}").contains(a.expose()), "Debug is redacted");
        let id = new_token_id().unwrap();
        assert!(is_token_id(&id), "{id}");
    }

    #[test]
    fn rejects_token_ids_of_another_shape() {
        for id in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            &"a".repeat(31),
            "../x",
        ] {
            assert!(!is_token_id(id), "{id:?}");
        }
    }

    #[test]
    fn admin_has_every_scope_and_every_key() {
        let admin = Caller::from_row(Arc::new(row("admin", None, None)));
        for s in Scope::ALL {
            assert!(admin.require(s, Some("any-key")).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn rejects_scopes_and_keys_the_token_does_not_have() {
        let c = Caller::from_row(Arc::new(row("sign keys:read", Some(&["a"]), None)));
        assert!(c.require(Scope::Sign, Some("a")).is_ok());
        assert!(c.require(Scope::KeysRead, None).is_ok());
        for (scope, key) in [
            (Scope::Sign, Some("b")),
            (Scope::KeysCreate, None),
            (Scope::PolicyWrite, None),
            (Scope::Admin, None),
        ] {
            let e = c.require(scope, key).unwrap_err();
            let e = crate::api::ApiError::from(e);
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::FORBIDDEN, "forbidden")
            );
        }
        // An unknown stored scope name grants nothing.
        let odd = Caller::from_row(Arc::new(row("everything", None, None)));
        assert!(odd.require(Scope::KeysRead, None).is_err());
    }

    #[tokio::test]
    async fn authenticates_a_stored_token() {
        let store = Store::open_in_memory().unwrap();
        let token = stored(&store, row("keys:read", None, None)).await;
        let c = authenticate(&bearer(token.expose()), &store).await.unwrap();
        assert!(c.has(Scope::KeysRead));
        // Scheme in any case; a second lookup comes from the cache.
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer {}", token.expose())).unwrap(),
        );
        assert!(authenticate(&h, &store).await.is_ok());
    }

    #[tokio::test]
    async fn rejects_missing_malformed_unknown_expired_and_revoked_tokens() {
        let store = Store::open_in_memory().unwrap();
        let expired = stored(&store, row("admin", None, Some(crate::now_ms() - 1))).await;
        let r = row("admin", None, None);
        let id = r.token_id.clone();
        let revoked = stored(&store, r).await;
        assert!(authenticate(&bearer(revoked.expose()), &store)
            .await
            .is_ok());
        assert!(store.delete_token(id.clone()).await.unwrap());
        assert!(!store.delete_token(id).await.unwrap());
        let (unknown, _) = generate_token().unwrap();
        let long = "a".repeat(MAX_PRESENTED_LEN + 1);
        let mut cases = vec![
            HeaderMap::new(),
            bearer(expired.expose()),
            bearer(revoked.expose()),
            bearer(unknown.expose()),
            bearer(&long),
        ];
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        cases.push(basic);
        let mut two = bearer(unknown.expose());
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        cases.push(two);
        for h in cases {
            let e = authenticate(&h, &store).await.unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::UNAUTHORIZED, "unauthenticated"),
                "{h:?}"
            );
        }
    }

    #[tokio::test]
    async fn creates_keeps_and_replaces_the_admin_token_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ekms.db")).unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        ensure_admin_token(&store, &path).await.unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = authenticate(&bearer(first.trim()), &store).await.unwrap();
        assert!(c.has(Scope::Admin));
        // Kept across restarts.
        ensure_admin_token(&store, &path).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        assert_eq!(store.list_tokens().await.unwrap().len(), 1);
        // Revoked: the next start writes a new one.
        store.delete_token(c.token_id().into()).await.unwrap();
        ensure_admin_token(&store, &path).await.unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert_ne!(first, second);
        assert!(authenticate(&bearer(second.trim()), &store).await.is_ok());
    }

    #[tokio::test]
    async fn rejects_a_tampered_admin_token_file_by_replacing_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ekms.db")).unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        // A non-admin token in the file is not kept.
        let t = stored(&store, row("keys:read", None, None)).await;
        std::fs::write(&path, t.expose()).unwrap();
        ensure_admin_token(&store, &path).await.unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert_ne!(now.trim(), t.expose());
        let c = authenticate(&bearer(now.trim()), &store).await.unwrap();
        assert!(c.has(Scope::Admin));
    }
}
