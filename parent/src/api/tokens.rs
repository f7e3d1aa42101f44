//! The token routes of the application API (all need the `admin` scope; see
//! [`crate::auth`]):
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/tokens` `{"name","scopes":[…],"key_ids"?:[…],"expires_at"?}` | 201 `{"token_id","token","name","scopes","key_ids","created_at","expires_at"}`: the only time the token is shown |
//! | `GET /v1/tokens` | `{"tokens":[{"token_id","name","scopes","key_ids","created_at","expires_at"},…]}`, oldest first; never a token or its hash |
//! | `DELETE /v1/tokens/{token_id}` | `{"token_id","revoked":true}`; the token is refused from the next request on |
//!
//! Bounds: `name` 1 to [`MAX_NAME_LEN`] bytes without control characters; `scopes` 1 or
//! more names of [`Scope`] (repeats are dropped); `key_ids` 1 to [`MAX_KEY_IDS`]
//! canonical UUIDs, only beside the `sign` scope and never with `admin`; `expires_at`
//! RFC 3339, in the future (answered in UTC, to the millisecond); at most
//! [`MAX_TOKENS`] tokens stored (409 `too_many_tokens`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use ekms_shared::api::{CreatedToken, RevokedToken, TokenInfo, TokenList};
use serde::Deserialize;

use super::extract::JsonBody;
use super::{ApiCode, ApiError, AppState};
use crate::auth::{Caller, Scope};
use crate::format;
use crate::service::keys::is_key_id;
use crate::service::tokens::NewToken;
use crate::store::TokenRow;

pub use crate::service::tokens::MAX_TOKENS;

/// Longest token name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most key ids one token may be limited to.
pub const MAX_KEY_IDS: usize = 100;

/// The token routes, merged into [`crate::api::router()`].
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", post(create).get(list))
        .route("/v1/tokens/{token_id}", delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenBody {
    name: String,
    scopes: Vec<String>,
    key_ids: Option<Vec<String>>,
    expires_at: Option<String>,
}

fn check(body: CreateTokenBody, now_ms: i64) -> Result<NewToken, ApiError> {
    if body.name.is_empty()
        || body.name.len() > MAX_NAME_LEN
        || body.name.chars().any(char::is_control)
    {
        return Err(ApiError::new(
            ApiCode::InvalidName,
            format!("the name must be 1 to {MAX_NAME_LEN} bytes without control characters"),
        ));
    }
    let mut scopes = Vec::new();
    for name in &body.scopes {
        let scope = Scope::parse(name).ok_or_else(|| {
            let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::new(
                ApiCode::InvalidScope,
                format!(
                    "unknown scope {:?}: expected one of {}",
                    truncate(name),
                    known.join(", ")
                ),
            )
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(ApiError::new(
            ApiCode::InvalidScope,
            "a token needs at least one scope",
        ));
    }
    if let Some(ids) = &body.key_ids {
        if !scopes.contains(&Scope::Sign) || scopes.contains(&Scope::Admin) {
            return Err(ApiError::new(
                ApiCode::InvalidKeyId,
                "key_ids limit the sign scope: give them with sign and without admin",
            ));
        }
        if ids.is_empty() || ids.len() > MAX_KEY_IDS {
            return Err(ApiError::new(
                ApiCode::InvalidKeyId,
                format!("key_ids must list 1 to {MAX_KEY_IDS} key ids (omit it for every key)"),
            ));
        }
        if let Some(bad) = ids.iter().find(|id| !is_key_id(id)) {
            return Err(ApiError::new(
                ApiCode::InvalidKeyId,
                format!("{:?} is not a key id (a UUID)", truncate(bad)),
            ));
        }
    }
    let key_ids = body.key_ids.map(|mut ids| {
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        ids
    });
    let expires_at_ms = body
        .expires_at
        .as_deref()
        .map(|text| {
            let invalid = |why: &str| {
                ApiError::new(
                    ApiCode::InvalidExpiresAt,
                    format!("expires_at must be an RFC 3339 time in the future: {why}"),
                )
            };
            let t =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| invalid("not RFC 3339"))?;
            let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                .map_err(|_| invalid("out of range"))?;
            if ms <= now_ms {
                return Err(invalid("it is in the past"));
            }
            Ok(ms)
        })
        .transpose()?;
    Ok(NewToken {
        name: body.name,
        scopes,
        key_ids,
        expires_at_ms,
    })
}

/// At most 64 characters of caller input, for an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn token_info(row: &TokenRow) -> TokenInfo {
    TokenInfo {
        token_id: row.token_id.clone(),
        name: row.name.clone(),
        scopes: row
            .scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        key_ids: row.key_ids.clone(),
        created_at: format::timestamp_text(row.created_at_ms),
        expires_at: row.expires_at_ms.map(format::timestamp_text),
    }
}

/// `POST /v1/tokens`.
async fn create(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateTokenBody>,
) -> Result<Response, ApiError> {
    let new = check(body, crate::now_ms())?;
    let (row, token) = state.service.create_token(&caller, new).await?;
    let out = CreatedToken {
        info: token_info(&row),
        token: token.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `GET /v1/tokens`.
async fn list(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    let tokens = state
        .service
        .list_tokens(&caller)
        .await?
        .iter()
        .map(token_info)
        .collect();
    Ok(Json(TokenList { tokens }).into_response())
}

/// `DELETE /v1/tokens/{token_id}`.
async fn revoke(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(id)) = path else {
        return Err(ApiError::token_not_found());
    };
    state.service.revoke_token(&caller, &id).await?;
    Ok(Json(RevokedToken {
        token_id: id,
        revoked: true,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;
    use crate::testing::{token, Harness};
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::header;
    use http_body_util::BodyExt as _;
    use serde_json::{json, Value};
    use tower::ServiceExt as _;

    const KEY: &str = "6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10";
    const EVM_TX: &str = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;

    /// The router as served (no token added).
    fn app(h: &Harness) -> Router {
        crate::api::tests::bare_app(h, 4096, 8)
    }

    /// One request with `token` (if any); the status, the JSON body and whether the
    /// answer carries `WWW-Authenticate: Bearer`.
    async fn call(
        app: &Router,
        token: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value, bool) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let challenge = res.headers().get(header::WWW_AUTHENTICATE).is_some();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            challenge,
        )
    }

    fn code(v: &Value) -> &str {
        v["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    async fn new_key(app: &Router, admin: &str) -> String {
        let (s, v, _) = call(
            app,
            Some(admin),
            "POST",
            "/v1/keys",
            Some(r#"{"algorithm":"secp256k1"}"#),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["key_id"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn rejects_requests_without_a_valid_token_with_401() {
        let h = Harness::start(1).await;
        let app = app(&h);
        let key = new_key(&app, &h.admin_token).await;
        let (_, expired) = token(&h.store, "admin", None, Some(crate::now_ms() - 1)).await;
        let routes = [
            (
                "POST",
                "/v1/keys".to_owned(),
                Some(r#"{"algorithm":"ed25519"}"#),
            ),
            ("GET", "/v1/keys".to_owned(), None),
            ("GET", format!("/v1/keys/{key}"), None),
            (
                "PUT",
                format!("/v1/keys/{key}/policy"),
                Some(r#"{"policy":{"enabled":true}}"#),
            ),
            ("POST", format!("/v1/keys/{key}/sign"), Some(EVM_TX)),
            ("GET", "/v1/attestation".to_owned(), None),
            ("GET", "/v1/tokens".to_owned(), None),
            (
                "POST",
                "/v1/tokens".to_owned(),
                Some(r#"{"name":"x","scopes":["admin"]}"#),
            ),
            ("DELETE", format!("/v1/tokens/{}", "0".repeat(32)), None),
        ];
        for (method, uri, body) in &routes {
            for t in [None, Some("ekms_not-a-token"), Some(expired.as_str())] {
                let (s, v, challenge) = call(&app, t, method, uri, *body).await;
                assert_eq!(
                    (s, code(&v)),
                    (StatusCode::UNAUTHORIZED, "unauthenticated"),
                    "{method} {uri} {t:?}: {v}"
                );
                assert!(challenge, "{method} {uri}: WWW-Authenticate");
            }
        }
        // Positive twins: health needs nothing; the admin token opens every route.
        let (s, _, _) = call(&app, None, "GET", "/v1/health", None).await;
        assert_eq!(s, StatusCode::OK);
        for (method, uri, body) in &routes {
            let (s, v, _) = call(&app, Some(&h.admin_token), method, uri, *body).await;
            assert!(
                s.is_success() || (s == StatusCode::NOT_FOUND && code(&v) == "token_not_found"),
                "{method} {uri}: {s} {v}"
            );
        }
    }

    #[tokio::test]
    async fn rejects_tokens_outside_their_scope_with_403() {
        let h = Harness::start(1).await;
        let app = app(&h);
        let a = new_key(&app, &h.admin_token).await;
        let b = new_key(&app, &h.admin_token).await;
        let (_, read) = token(&h.store, "keys:read", None, None).await;
        let (_, sign_a) = token(&h.store, "sign", Some(&[a.as_str()]), None).await;
        let (_, sign_any) = token(&h.store, "sign", None, None).await;
        let (_, create) = token(&h.store, "keys:create", None, None).await;
        let (_, policy) = token(&h.store, "policy:write", None, None).await;
        let sign = |k: &str| format!("/v1/keys/{k}/sign");
        let set = format!("/v1/keys/{a}/policy");
        let new_key_body = Some(r#"{"algorithm":"ed25519"}"#);
        let policy_body = Some(r#"{"policy":{"enabled":true}}"#);
        let forbidden = [
            (&read, "POST", "/v1/keys".to_owned(), new_key_body),
            (&read, "POST", sign(&a), Some(EVM_TX)),
            (&read, "PUT", set.clone(), policy_body),
            (&read, "GET", "/v1/tokens".to_owned(), None),
            (&sign_a, "POST", sign(&b), Some(EVM_TX)),
            (&sign_a, "GET", "/v1/keys".to_owned(), None),
            (&create, "GET", format!("/v1/keys/{a}"), None),
            (&policy, "POST", sign(&a), Some(EVM_TX)),
            (
                &sign_any,
                "POST",
                "/v1/tokens".to_owned(),
                Some(r#"{"name":"x","scopes":["sign"]}"#),
            ),
        ];
        for (t, method, uri, body) in &forbidden {
            let (s, v, challenge) = call(&app, Some(t), method, uri, *body).await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{method} {uri}: {v}"
            );
            assert!(!challenge);
        }
        assert_eq!(
            h.store.list_keys(10).await.unwrap().len(),
            2,
            "nothing created"
        );
        let allowed = [
            (&read, "GET", "/v1/keys".to_owned(), None),
            (&read, "GET", format!("/v1/keys/{a}"), None),
            (&read, "GET", "/v1/attestation".to_owned(), None),
            (&sign_a, "POST", sign(&a), Some(EVM_TX)),
            (&sign_any, "POST", sign(&b), Some(EVM_TX)),
            (&create, "POST", "/v1/keys".to_owned(), new_key_body),
            (&policy, "PUT", set.clone(), policy_body),
        ];
        for (t, method, uri, body) in &allowed {
            let (s, v, _) = call(&app, Some(t), method, uri, *body).await;
            assert!(s.is_success(), "{method} {uri}: {s} {v}");
        }
    }

    #[tokio::test]
    async fn creates_lists_and_revokes_tokens() {
        let h = Harness::start(1).await;
        let app = app(&h);
        let a = new_key(&app, &h.admin_token).await;
        let body = json!({"name": "bot", "scopes": ["sign"], "key_ids": [a],
                          "expires_at": "2999-01-01T00:00:00Z"})
        .to_string();
        let (s, created, _) = call(
            &app,
            Some(&h.admin_token),
            "POST",
            "/v1/tokens",
            Some(&body),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["token_id"].as_str().unwrap().to_owned();
        let bot = created["token"].as_str().unwrap().to_owned();
        assert!(bot.starts_with("ekms_") && auth::is_token_id(&id));
        assert_eq!(created["expires_at"], "2999-01-01T00:00:00Z");
        let (s, _, _) = call(
            &app,
            Some(&bot),
            "POST",
            &format!("/v1/keys/{a}/sign"),
            Some(EVM_TX),
        )
        .await;
        assert_eq!(s, StatusCode::OK);

        let (s, list, _) = call(&app, Some(&h.admin_token), "GET", "/v1/tokens", None).await;
        assert_eq!(s, StatusCode::OK);
        let tokens = list["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 2, "the harness's admin token and the bot's");
        let listed = tokens
            .iter()
            .find(|t| t["token_id"] == id.as_str())
            .unwrap();
        assert_eq!(
            listed,
            &json!({"token_id": id, "name": "bot", "scopes": ["sign"], "key_ids": [a],
                    "created_at": created["created_at"], "expires_at": "2999-01-01T00:00:00Z"})
        );
        let text = list.to_string();
        assert!(!text.contains(&bot) && !text.contains(&h.admin_token));
        assert!(!text.contains(&hex::encode(auth::token_hash(&bot))));

        let uri = format!("/v1/tokens/{id}");
        let (s, v, _) = call(&app, Some(&h.admin_token), "DELETE", &uri, None).await;
        assert_eq!(
            (s, &v),
            (StatusCode::OK, &json!({"token_id": id, "revoked": true}))
        );
        // The very next request is refused.
        let (s, v, _) = call(
            &app,
            Some(&bot),
            "POST",
            &format!("/v1/keys/{a}/sign"),
            Some(EVM_TX),
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthenticated"));
        let (s, v, _) = call(&app, Some(&h.admin_token), "DELETE", &uri, None).await;
        assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "token_not_found"));
    }

    #[tokio::test]
    async fn rejects_token_requests_out_of_bounds() {
        let h = Harness::start(1).await;
        let app = app(&h);
        let admin = Some(h.admin_token.as_str());
        let cases = [
            (
                r#"{"name":"a","scopes":["sign"],"extra":1}"#,
                "invalid_json",
            ),
            (r#"{"name":"a","scopes":["sudo"]}"#, "invalid_scope"),
            (
                r#"{"name":"a","scopes":["sign"],"expires_at":"2001-01-01T00:00:00Z"}"#,
                "invalid_expires_at",
            ),
        ];
        for (body, want) in cases {
            let (s, v, _) = call(&app, admin, "POST", "/v1/tokens", Some(body)).await;
            assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, want), "{body}");
        }
        let (s, v, _) = call(&app, admin, "DELETE", "/v1/tokens/not-an-id", None).await;
        assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "token_not_found"));
        assert_eq!(
            h.store.list_tokens().await.unwrap().len(),
            1,
            "nothing stored"
        );
    }

    fn body(v: Value) -> CreateTokenBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn checks_a_full_body() {
        let got = check(
            body(
                json!({"name": "bot", "scopes": ["sign", "keys:read", "sign"],
                        "key_ids": [KEY, KEY], "expires_at": "2100-01-01T00:00:00+01:00"}),
            ),
            0,
        )
        .unwrap();
        assert_eq!(
            got,
            NewToken {
                name: "bot".into(),
                scopes: vec![Scope::Sign, Scope::KeysRead],
                key_ids: Some(vec![KEY.into()]),
                expires_at_ms: Some(4_102_441_200_000),
            }
        );
    }

    #[test]
    fn rejects_bodies_out_of_bounds() {
        let many: Vec<String> = (0..=MAX_KEY_IDS)
            .map(|i| format!("6b3c1e4e-6a43-4bb4-9d7e-{i:012}"))
            .collect();
        let cases = [
            (json!({"name": "", "scopes": ["sign"]}), "invalid_name"),
            (
                json!({"name": "x".repeat(MAX_NAME_LEN + 1), "scopes": ["sign"]}),
                "invalid_name",
            ),
            (json!({"name": "a\nb", "scopes": ["sign"]}), "invalid_name"),
            (json!({"name": "a", "scopes": []}), "invalid_scope"),
            (json!({"name": "a", "scopes": ["root"]}), "invalid_scope"),
            (
                json!({"name": "a", "scopes": ["keys:read"], "key_ids": [KEY]}),
                "invalid_key_id",
            ),
            (
                json!({"name": "a", "scopes": ["sign", "admin"], "key_ids": [KEY]}),
                "invalid_key_id",
            ),
            (
                json!({"name": "a", "scopes": ["sign"], "key_ids": []}),
                "invalid_key_id",
            ),
            (
                json!({"name": "a", "scopes": ["sign"], "key_ids": ["../x"]}),
                "invalid_key_id",
            ),
            (
                json!({"name": "a", "scopes": ["sign"], "key_ids": many}),
                "invalid_key_id",
            ),
            (
                json!({"name": "a", "scopes": ["sign"], "expires_at": "2000-01-01T00:00:00Z"}),
                "invalid_expires_at",
            ),
            (
                json!({"name": "a", "scopes": ["sign"], "expires_at": "tomorrow"}),
                "invalid_expires_at",
            ),
        ];
        for (b, code) in cases {
            let e = check(body(b.clone()), crate::now_ms()).unwrap_err();
            assert_eq!(e.code.as_str(), code, "{b}");
        }
        assert!(
            serde_json::from_value::<CreateTokenBody>(json!({"name": "a", "scopes": [], "x": 1}))
                .is_err(),
            "unknown fields are refused"
        );
    }
}
