//! The application API: HTTP/1.1 + JSON (axum), one handler per route.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/health` | `{"status":"ok","mode":"simulation"\|"nitro","pcrs":{"0":"hex",…}}`, 503 `not_ready` until ready (or, once an initialisation failed, its cause: `kms_access_denied`, `kms_error`, `configure_refused`, with the enclave's error text), 503 `enclave_configured_by_another` (for good) once the enclave turned out configured for another KMS target |
//! | `POST /v1/keys` `{"algorithm","label"?,"policy"?}` | 201 `{"key_id","algorithm","label","public_key","address","policy_version","created_at"}` |
//! | `GET /v1/keys?limit=N` (1..=1000, default 100) | `{"keys":[…]}`, newest first, each with its `"statement"` (no document) and `"fee_cap"` as below |
//! | `GET /v1/keys/{key_id}` | the key, plus `"policy"` (the JSON document) and, when the policy has a section for the key's chain, `"fee_cap":"set"\|"none"` ([`format::fee_cap_text`]) |
//! | `PUT /v1/keys/{key_id}/policy` `{"policy":{…}}` | `{"policy_version":N}` |
//! | `POST /v1/keys/{key_id}/sign` `{"kind","payload"}` | EVM: `{"signature":{"r","s","y_parity","v"},"signed_transaction","transaction_hash"}`; Solana: `{"signature","signed_transaction"}` |
//! | `GET /v1/attestation?nonce=HEX` (≤ 512 bytes) | `{"document":"<base64>"}` |
//! | `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{token_id}` | see [`crate::tokens`] |
//!
//! Every route but `GET /v1/health` needs `Authorization: Bearer <token>` with a scope
//! ([`crate::auth`]): `POST /v1/keys` `keys:create`; `GET /v1/keys[/{id}]` `keys:read`;
//! `PUT …/policy` `policy:write`; `POST …/sign` `sign` (on a listed key, if the token
//! lists keys); `GET /v1/attestation` any token; the token routes `admin`. No, an
//! unknown, a revoked or an expired token is 401 `unauthenticated`; a valid token
//! without the scope is 403 `forbidden`.
//!
//! Bytes are `0x` hex for EVM and secp256k1 keys, base64 for Solana transactions and
//! base58 for Solana keys and signatures. Every error, including axum's own rejections,
//! has the body `{"error":{"code","message"}}` (see [`ApiError`]).
//!
//! The parent decides nothing about keys or policies: it checks shapes, looks rows up
//! and relays. A key without a policy gets `{"enabled":true}`, which the enclave's
//! default-deny evaluation refuses for every payload until rules are added.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ekms_shared::owner::{Owner, OwnerJson};
use ekms_shared::{
    Algorithm, Mode, PayloadKind, Request as EnclaveRequest, ResponseBody, SignOutput, SignPayload,
    MAX_ATTESTATION_NONCE_LEN,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::auth::{Caller, Scope};
use crate::control;
use crate::error::{ApiError, Error};
use crate::format;
use crate::identity::IdentityCheck;
use crate::journal::Journal;
use crate::relay::Relay;
use crate::store::{algorithm_text, KeySummary, NewKey, Store, StoredStatement};

/// Longest key label, in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// Largest `limit` of `GET /v1/keys`.
pub const MAX_LIST_LIMIT: u32 = 1000;
const DEFAULT_LIST_LIMIT: u32 = 100;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The enclave relay.
    pub relay: Relay,
    /// The key store.
    pub store: Store,
    /// The check of key columns against the enclave's statements.
    pub identity: Arc<IdentityCheck>,
    /// Permits for requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// Deadline for reading a request body.
    pub read_timeout: Duration,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

/// The API router with its limits (body size, in-flight cap, error shapes).
pub fn router(state: AppState) -> Router {
    let max_body = state.max_body_bytes;
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(crate::openapi::document))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{key_id}", get(get_key))
        .route("/v1/keys/{key_id}/policy", put(control::set_policy))
        .route(
            "/v1/keys/{key_id}/policy/proposal",
            post(control::propose_policy),
        )
        .route("/v1/keys/{key_id}/disable", post(control::disable))
        .route("/v1/keys/{key_id}/enable", post(control::enable))
        .route(
            "/v1/keys/{key_id}/enable/proposal",
            post(control::propose_enable),
        )
        .route("/v1/admin/stop", post(control::stop))
        .route("/v1/admin/resume", post(control::resume))
        .route("/v1/audit", get(control::audit))
        .route("/v1/keys/{key_id}/sign", post(sign))
        .route("/v1/attestation", get(attestation))
        .merge(crate::tokens::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Caps requests in flight (503 `overloaded` beyond) and opens a span per request.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight; retry",
        )
        .into_response();
    };
    // `token_id` is recorded by the `Caller` extractor once the token is known.
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        token_id = tracing::field::Empty
    );
    next.run(request).instrument(span).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// A JSON body read with the state's deadline and size limit; every failure is an
/// [`ApiError`]: 415 `unsupported_media_type`, 413 `body_too_large`, 408
/// `request_timeout`, 400 `invalid_json`.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = tokio::time::timeout(state.read_timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body was not received in time",
                )
            })?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("the body exceeds {} bytes", state.max_body_bytes),
                    )
                } else {
                    ApiError::bad_request("invalid_body", rejection.body_text())
                }
            })?;
        // Every body of this API is an object: serde would also read a struct from a JSON
        // array, positionally (`["ed25519",null,null,null]` created a key).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
    }
}

/// The `{key_id}` path segment. Anything that is not a canonical UUID cannot name a
/// key, so it is 404 `key_not_found` like an unknown one.
pub(crate) fn key_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Ok(Path(id)) = path else {
        return Err(ApiError::key_not_found());
    };
    match uuid::Uuid::try_parse(&id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(id),
        _ => Err(ApiError::key_not_found()),
    }
}

/// `name=value` pairs of a query string, without percent-decoding (every parameter of
/// this API is digits or hex).
pub(crate) fn query_pairs(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if !allowed.contains(&k) || out.iter().any(|(seen, _)| seen == k) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("unexpected or repeated query parameter {k:?}"),
            ));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

async fn health(State(state): State<AppState>) -> Response {
    if let Some(reason) = state.relay.alarm() {
        return ApiError::from(Error::EnclaveConfiguredByAnother(reason)).into_response();
    }
    match state.relay.health() {
        Some(h) => {
            let pcrs: serde_json::Map<String, Value> = h
                .pcrs
                .iter()
                .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
                .collect();
            let mode = match h.mode {
                Mode::Simulation => "simulation",
                Mode::Nitro => "nitro",
            };
            Json(json!({"status": "ok", "mode": mode, "pcrs": pcrs})).into_response()
        }
        // Why, when the last initialisation failed (issue 9: a wrong PCR0 or key policy
        // shows here as 503 kms_access_denied with KMS's own message).
        None => match state.relay.not_ready() {
            Some(n) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                n.code.as_str(),
                format!("the enclave is not ready: {}", n.reason),
            ),
            None => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the enclave connection is not ready",
            ),
        }
        .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    algorithm: String,
    label: Option<String>,
    policy: Option<Value>,
    owner: Option<OwnerJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    kind: String,
    /// A string (hex, base64 or, for `evm_typed_data`, the JSON text) or, for
    /// `evm_typed_data` only, the JSON object itself.
    payload: Value,
}

/// The policy document as the string the enclave receives; it must be a JSON object.
pub(crate) fn policy_json(policy: &Value) -> Result<String, ApiError> {
    if !policy.is_object() {
        return Err(ApiError::bad_request(
            "invalid_policy",
            "the policy must be a JSON object",
        ));
    }
    serde_json::to_string(policy).map_err(|_| ApiError::internal())
}

fn key_json(k: &KeySummary) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("key_id".into(), k.key_id.clone().into());
    m.insert("algorithm".into(), algorithm_text(k.algorithm).into());
    m.insert("label".into(), k.label.clone().into());
    m.insert(
        "public_key".into(),
        format::public_key_text(k.algorithm, &k.public_key).into(),
    );
    m.insert("address".into(), k.address.clone().into());
    m.insert("policy_version".into(), k.policy_version.into());
    m.insert(
        "created_at".into(),
        format::timestamp_text(k.created_at_ms).into(),
    );
    m
}

async fn create_key(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::KeysCreate, None)?;
    let algorithm = match body.algorithm.as_str() {
        "secp256k1" => Algorithm::Secp256k1,
        "ed25519" => Algorithm::Ed25519,
        other => {
            return Err(ApiError::bad_request(
                "unknown_algorithm",
                format!("algorithm {other:?}: expected secp256k1 or ed25519"),
            ))
        }
    };
    if body.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL_LEN) {
        return Err(ApiError::bad_request(
            "invalid_label",
            format!("the label exceeds {MAX_LABEL_LEN} bytes"),
        ));
    }
    let owner = body
        .owner
        .as_ref()
        .map(|o| Owner::from_json(o).map(|o| o.record_text()))
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_owner", e.to_string()))?;
    let policy = policy_json(&body.policy.unwrap_or_else(|| json!({"enabled": true})))?;
    let keyring = state.relay.current_keyring().await?;
    let answer = state
        .relay
        .call(EnclaveRequest::GenerateKey {
            algorithm,
            owner: owner.clone(),
            label: body.label.clone(),
            policy_json: policy,
            keyring: keyring.clone(),
        })
        .await?;
    // The creation's audit record is stored before anything else; its receipt goes
    // back with the key (the record names the initial policy's SHA-256).
    let (answer, receipt) = Journal::new(state.store.clone()).record(answer).await?;
    let ResponseBody::KeyGenerated {
        record,
        policy,
        statement,
        identity_document,
        ..
    } = answer
    else {
        return Err(Error::UnexpectedResponse("GenerateKey").into());
    };
    // The enclave chose the key id (a UUID v4): the API's paths take only that form.
    let key_id = record.key_id.clone();
    let canonical_uuid =
        uuid::Uuid::try_parse(&key_id).is_ok_and(|u| u.hyphenated().to_string() == key_id);
    if !canonical_uuid
        || record.algorithm != algorithm
        || record.keyring != keyring.keyring
        || record.epoch != keyring.epoch
        || record.owner != owner
        || policy.key_id != key_id
    {
        return Err(Error::UnexpectedResponse("GenerateKey").into());
    }
    let address = format::address(algorithm, &record.public_key)
        .ok_or(Error::UnexpectedResponse("GenerateKey"))?;
    let summary = KeySummary {
        key_id,
        algorithm,
        label: body.label.clone(),
        public_key: record.public_key.clone(),
        address: address.clone(),
        created_at_ms: crate::now_ms(),
        policy_version: policy.version,
    };
    let statement = StoredStatement {
        signed: *statement,
        identity_document,
    };
    // An enclave answer whose statement does not name this key is not stored.
    state
        .identity
        .check(&summary, &statement, enclave_pcr0(&state).as_deref())
        .map_err(|_| Error::UnexpectedResponse("GenerateKey"))?;
    let statement_json = statement_json(&statement, true);
    // Reported created only once the row is committed.
    state
        .store
        .insert_key(NewKey {
            label: body.label,
            address,
            created_at_ms: summary.created_at_ms,
            record,
            policy,
            statement,
        })
        .await?;
    tracing::info!(key_id = %summary.key_id, "key created");
    let mut out = key_json(&summary);
    out.insert("owner".into(), owner_json(owner.as_deref()));
    out.insert("statement".into(), statement_json);
    if let Some(receipt) = receipt {
        out.insert(
            "receipt".into(),
            serde_json::to_value(receipt).map_err(|_| ApiError::internal())?,
        );
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The owner as the API shows it: `null`, the JSON form
/// (`{"type":"eip191","address"}` / `{"type":"ed25519","public_key"}`), or, for a
/// record sealed before owners had a format, `{"type":"unknown"}` (nobody can sign for
/// it: its policy cannot change).
fn owner_json(owner: Option<&str>) -> Value {
    match owner.map(Owner::from_record_text) {
        None => Value::Null,
        Some(Ok(o)) => serde_json::to_value(o.to_json()).unwrap_or(Value::Null),
        Some(Err(_)) => json!({"type": "unknown"}),
    }
}

/// The key statement as the API shows it: the statement's exact JSON text (the signed
/// bytes follow `"ekms/v1/key-statement\n"`), the ed25519 signature and identity key
/// in hex, and, when `with_document`, the base64 COSE_Sign1 attestation document
/// binding the identity key.
fn statement_json(stored: &StoredStatement, with_document: bool) -> Value {
    let signed = &stored.signed;
    let mut m = serde_json::Map::new();
    m.insert("statement".into(), signed.statement.clone().into());
    m.insert(
        "signature".into(),
        format::to_0x_hex(&signed.signature).into(),
    );
    m.insert(
        "identity_key".into(),
        format::to_0x_hex(&signed.identity_key).into(),
    );
    if with_document {
        m.insert(
            "attestation_document".into(),
            format::to_base64(&stored.identity_document).into(),
        );
    }
    Value::Object(m)
}

/// The key's statement, checked against its columns ([`IdentityCheck::check`]). A key
/// stored before statements existed (or whose statement row is gone) gets one from the
/// enclave, which states what its sealed record holds; it is checked the same way and
/// stored.
///
/// # Errors
/// `sealed_state_invalid` when the columns differ from the statement or the statement
/// does not verify; the store's and the relay's errors.
async fn checked_statement(
    state: &AppState,
    summary: &KeySummary,
) -> Result<StoredStatement, ApiError> {
    let pcr0 = enclave_pcr0(state);
    let stored = state.store.statement(summary.key_id.clone()).await?;
    // A stored statement that does not check (e.g. one from an enclave image since
    // replaced, whose PCR0 is no longer the enclave's) is issued again, like a
    // missing one: the enclave states what the sealed record holds, and that is
    // checked against the columns in turn.
    let stored = match stored {
        Some(stored)
            if state
                .identity
                .check(summary, &stored, pcr0.as_deref())
                .is_ok() =>
        {
            stored
        }
        _ => {
            let (row, keyring) = state
                .store
                .key_with_keyring(summary.key_id.clone())
                .await?
                .ok_or_else(ApiError::key_not_found)?;
            let answer = state
                .relay
                .call(EnclaveRequest::CertifyKey {
                    record: row.record,
                    keyring,
                })
                .await?;
            let ResponseBody::KeyCertified {
                statement,
                identity_document,
            } = answer
            else {
                return Err(Error::UnexpectedResponse("CertifyKey").into());
            };
            let stored = StoredStatement {
                signed: *statement,
                identity_document,
            };
            state.identity.check(summary, &stored, pcr0.as_deref())?;
            state
                .store
                .put_statement(summary.key_id.clone(), stored.clone())
                .await?;
            tracing::info!(key_id = %summary.key_id, "key statement issued for a stored key");
            stored
        }
    };
    Ok(stored)
}

/// PCR0 of the enclave the relay is connected to, as it reported it (`None` before the
/// first connection is initialised).
fn enclave_pcr0(state: &AppState) -> Option<Vec<u8>> {
    state.relay.health().and_then(|h| h.pcrs.get(&0).cloned())
}

async fn list_keys(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Scope::KeysRead, None)?;
    let mut limit = DEFAULT_LIST_LIMIT;
    for (_, v) in query_pairs(query.as_deref(), &["limit"])? {
        limit = v
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("limit must be 1 to {MAX_LIST_LIMIT}"),
                )
            })?;
    }
    let summaries = state.store.list_keys(limit).await?;
    let mut keys = Vec::with_capacity(summaries.len());
    for (k, policy_json) in &summaries {
        // Every listed address is one the enclave stated (see `checked_statement`).
        let stored = checked_statement(&state, k).await?;
        let mut out = key_json(k);
        out.insert("statement".into(), statement_json(&stored, false));
        let policy: Value = serde_json::from_str(policy_json)
            .map_err(|_| Error::StoreCorrupt("stored policy is not JSON".into()))?;
        if let Some(cap) = format::fee_cap_text(k.algorithm, &policy) {
            out.insert("fee_cap".into(), cap.into());
        }
        keys.push(Value::Object(out));
    }
    Ok(Json(json!({ "keys": keys })).into_response())
}

async fn get_key(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::KeysRead, None)?;
    let id = key_id(path)?;
    let row = state
        .store
        .key(id)
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    let stored = checked_statement(&state, &row.summary).await?;
    let mut out = key_json(&row.summary);
    out.insert("owner".into(), owner_json(row.record.owner.as_deref()));
    out.insert("statement".into(), statement_json(&stored, true));
    // The stored document is unauthenticated here (the enclave checks its MAC on use).
    let policy: Value = serde_json::from_str(&row.policy.policy_json)
        .map_err(|_| Error::StoreCorrupt("stored policy is not JSON".into()))?;
    if let Some(cap) = format::fee_cap_text(row.summary.algorithm, &policy) {
        out.insert("fee_cap".into(), cap.into());
    }
    out.insert("policy".into(), policy);
    Ok(Json(out).into_response())
}

async fn sign(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<SignBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    caller.require(Scope::Sign, Some(&id))?;
    let kind = PayloadKind::parse(&body.kind).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_kind",
            format!(
                "kind {:?}: expected one of {}",
                body.kind,
                PayloadKind::ALL.map(PayloadKind::as_str).join(", ")
            ),
        )
    })?;
    let (mut key, mut cached) = state
        .store
        .cached_key(&id)
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    if kind.algorithm() != key.row.record.algorithm {
        return Err(ApiError::bad_request(
            "kind_mismatch",
            format!(
                "kind {} does not match the key's algorithm {}",
                body.kind,
                algorithm_text(key.row.record.algorithm)
            ),
        ));
    }
    let bytes = format::payload_bytes(kind, &body.payload)
        .ok_or_else(|| ApiError::bad_request("invalid_payload", format::payload_shape(kind)))?;
    let mut payload = Some(SignPayload { kind, bytes });
    let answer = loop {
        // Copied only while a retry may need it again.
        let payload = if cached {
            payload.clone()
        } else {
            payload.take()
        };
        let request = EnclaveRequest::Sign {
            record: key.row.record.clone(),
            keyring: key.keyring.clone(),
            policy: key.row.policy.clone(),
            payload: payload.ok_or_else(ApiError::internal)?,
        };
        match state.relay.call(request).await {
            // A cached row the enclave refuses may be stale (another parent on the store
            // wrote a newer policy, which raised the enclave's version floor): read the
            // database once and try again. A refusal of a row just read stands.
            Err(Error::Enclave(ekms_shared::WireError::SealedStateInvalid)) if cached => {
                state.store.forget_key(&id);
                key = state
                    .store
                    .cached_key(&id)
                    .await?
                    .ok_or_else(ApiError::key_not_found)?
                    .0;
                cached = false;
            }
            other => break other?,
        }
    };
    // The decision's audit record is stored first: no signature leaves without it.
    let (answer, receipt) = Journal::new(state.store.clone()).record(answer).await?;
    let receipt = receipt.ok_or(Error::UnexpectedResponse("Sign"))?;
    let output = match answer {
        ResponseBody::Signed { output, .. } => output,
        _ => return Err(Error::UnexpectedResponse("Sign").into()),
    };
    let mut out = match (kind, output) {
        (
            PayloadKind::EvmTransaction,
            SignOutput::Evm {
                r,
                s,
                y_parity,
                v,
                signed_transaction,
                transaction_hash,
            },
        ) => json!({
            "signature": {
                "r": format::to_0x_hex(&r),
                "s": format::to_0x_hex(&s),
                "y_parity": y_parity,
                "v": v,
            },
            "signed_transaction": format::to_0x_hex(&signed_transaction),
            "transaction_hash": format::to_0x_hex(&transaction_hash),
        }),
        (
            PayloadKind::SolanaTransaction,
            SignOutput::Solana {
                signature,
                signed_transaction,
            },
        ) => json!({
            "signature": format::to_base58(&signature),
            "signed_transaction": format::to_base64(&signed_transaction),
        }),
        (
            PayloadKind::EvmMessage | PayloadKind::EvmTypedData | PayloadKind::EvmDigest,
            SignOutput::EvmDigest {
                digest,
                r,
                s,
                y_parity,
            },
        ) => {
            // `eth_sign`'s 65 bytes: r || s || v with v = 27 + parity.
            let v = 27 + y_parity;
            let mut rsv = Vec::with_capacity(65);
            rsv.extend_from_slice(&r);
            rsv.extend_from_slice(&s);
            rsv.push(v);
            json!({
                "signature": format::to_0x_hex(&rsv),
                "r": format::to_0x_hex(&r),
                "s": format::to_0x_hex(&s),
                "v": v,
                "y_parity": y_parity,
                "digest": format::to_0x_hex(&digest),
            })
        }
        (PayloadKind::SolanaOffchainMessage, SignOutput::SolanaMessage { signature }) => {
            json!({ "signature": format::to_base58(&signature) })
        }
        _ => return Err(Error::UnexpectedResponse("Sign").into()),
    };
    out["receipt"] = serde_json::to_value(receipt).map_err(|_| ApiError::internal())?;
    Ok(Json(out).into_response())
}

async fn attestation(
    // Any valid token: every document costs the enclave an NSM call.
    _caller: Caller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut nonce = None;
    for (_, v) in query_pairs(query.as_deref(), &["nonce"])? {
        let digits = v.strip_prefix("0x").unwrap_or(&v);
        let bytes = hex::decode(digits)
            .ok()
            .filter(|b| !b.is_empty() && b.len() <= MAX_ATTESTATION_NONCE_LEN)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_nonce",
                    format!("nonce must be 1 to {MAX_ATTESTATION_NONCE_LEN} bytes of hex"),
                )
            })?;
        nonce = Some(bytes);
    }
    let answer = state
        .relay
        .call(EnclaveRequest::Attestation {
            nonce,
            user_data: None,
        })
        .await?;
    let ResponseBody::Attestation { document } = answer else {
        return Err(Error::UnexpectedResponse("Attestation").into());
    };
    Ok(Json(json!({ "document": format::to_base64(&document) })).into_response())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::SEALED_STATE_INVALID_MESSAGE;
    use crate::testing::{relay_config, Harness, G_ADDRESS, G_COMPRESSED};
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// The router, with the harness's admin token on every request that has none.
    pub(crate) fn app(h: &Harness, max_body_bytes: usize, in_flight: usize) -> Router {
        crate::testing::authorized(
            bare_app(h, max_body_bytes, in_flight),
            h.admin_token.clone(),
        )
    }

    /// The router as served: requests carry only the headers a test gives them.
    fn bare_app(h: &Harness, max_body_bytes: usize, in_flight: usize) -> Router {
        router(AppState {
            relay: h.relay.clone(),
            store: h.store.clone(),
            identity: crate::testing::identity_check(),
            in_flight: Arc::new(Semaphore::new(in_flight)),
            read_timeout: Duration::from_secs(2),
            max_body_bytes,
        })
    }

    pub(crate) async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    fn code(v: &Value) -> &str {
        v["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    pub(crate) async fn create(app: &Router, body: &str) -> Value {
        let (s, v) = send(app, "POST", "/v1/keys", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    #[tokio::test]
    async fn health_reports_mode_and_pcrs() {
        let h = Harness::start(1).await;
        let (s, v) = send(&app(&h, 1024, 8), "GET", "/v1/health", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["mode"], "simulation");
        assert_eq!(v["pcrs"]["0"], hex::encode(crate::testing::fake_pcr0()));
    }

    #[tokio::test]
    async fn rejects_health_before_ready_and_requests_without_enclave() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().unwrap();
        let relay = Relay::start(
            relay_config(&dir.path().join("none.sock"), 1),
            store.clone(),
        );
        let (_, admin) = crate::testing::token(&store, "admin", None, None).await;
        let app = router(AppState {
            relay: relay.clone(),
            store,
            identity: crate::testing::identity_check(),
            in_flight: Arc::new(Semaphore::new(8)),
            read_timeout: Duration::from_secs(2),
            max_body_bytes: 1024,
        });
        let app = crate::testing::authorized(app, admin);
        let (s, v) = send(&app, "GET", "/v1/health", None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        );
        let (s, v) = send(&app, "POST", "/v1/keys", Some(r#"{"algorithm":"ed25519"}"#)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
        );
        let (s, v) = send(&app, "GET", "/v1/attestation", None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
        );
        relay.shutdown();
    }

    #[tokio::test]
    async fn creates_lists_and_gets_keys() {
        let h = Harness::start(2).await;
        let app = app(&h, 4096, 8);
        let evm = create(&app, r#"{"algorithm":"secp256k1","label":"bot"}"#).await;
        assert_eq!(evm["algorithm"], "secp256k1");
        assert_eq!(evm["public_key"], format!("0x{G_COMPRESSED}"));
        assert_eq!(evm["address"], G_ADDRESS);
        assert_eq!(evm["policy_version"], 1);
        assert_eq!(evm["label"], "bot");
        assert!(evm["created_at"].as_str().unwrap().ends_with('Z'));
        let id = evm["key_id"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);

        let sol = create(
            &app,
            r#"{"algorithm":"ed25519","policy":{"enabled":true,"solana":{}}}"#,
        )
        .await;
        let sol_key = format::to_base58(&[0x11; 32]);
        assert_eq!(sol["public_key"], sol_key);
        assert_eq!(sol["address"], sol_key);

        let (s, v) = send(&app, "GET", "/v1/keys?limit=10", None).await;
        assert_eq!(s, StatusCode::OK);
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["key_id"], sol["key_id"], "newest first");

        let (s, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["policy"], json!({"enabled": true}), "default policy");
        assert_eq!(v["address"], G_ADDRESS);
    }

    #[tokio::test]
    async fn rejects_malformed_requests() {
        let h = Harness::start(1).await;
        let app = app(&h, 256, 8);
        let cases: &[(&str, &str, Option<&str>, StatusCode, &str)] = &[
            (
                "POST",
                "/v1/keys",
                Some("{not json"),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "POST",
                "/v1/keys",
                Some(r#"{"algorithm":"ed25519","x":1}"#),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "POST",
                "/v1/keys",
                Some(r#"{"algorithm":"rsa"}"#),
                StatusCode::BAD_REQUEST,
                "unknown_algorithm",
            ),
            (
                "POST",
                "/v1/keys",
                Some(r#"{"algorithm":"ed25519","policy":[1]}"#),
                StatusCode::BAD_REQUEST,
                "invalid_policy",
            ),
            (
                "POST",
                "/v1/keys",
                None,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "GET",
                "/v1/keys?limit=0",
                None,
                StatusCode::BAD_REQUEST,
                "invalid_query",
            ),
            (
                "GET",
                "/v1/keys?limit=1001",
                None,
                StatusCode::BAD_REQUEST,
                "invalid_query",
            ),
            (
                "GET",
                "/v1/keys?limit=1&limit=2",
                None,
                StatusCode::BAD_REQUEST,
                "invalid_query",
            ),
            (
                "GET",
                "/v1/keys?cursor=1",
                None,
                StatusCode::BAD_REQUEST,
                "invalid_query",
            ),
            (
                "GET",
                "/v1/keys/not-a-uuid",
                None,
                StatusCode::NOT_FOUND,
                "key_not_found",
            ),
            (
                "GET",
                "/v1/keys/6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10",
                None,
                StatusCode::NOT_FOUND,
                "key_not_found",
            ),
            (
                "POST",
                "/v1/keys/6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10/sign",
                Some(r#"{"kind":"evm_transaction","payload":"0x02"}"#),
                StatusCode::NOT_FOUND,
                "key_not_found",
            ),
            (
                "PUT",
                "/v1/keys/6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10/policy",
                Some(r#"{"policy":{}}"#),
                StatusCode::NOT_FOUND,
                "key_not_found",
            ),
            (
                "GET",
                "/v1/nothing",
                None,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                "DELETE",
                "/v1/keys",
                None,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                "GET",
                "/v1/attestation?nonce=zz",
                None,
                StatusCode::BAD_REQUEST,
                "invalid_nonce",
            ),
        ];
        for (method, uri, body, status, want) in cases {
            let (s, v) = send(&app, method, uri, *body).await;
            assert_eq!(
                (s, code(&v)),
                (*status, *want),
                "{method} {uri} {body:?}: {v}"
            );
            assert!(v["error"]["message"].is_string(), "{v}");
        }
        let big = format!(r#"{{"algorithm":"ed25519","label":"{}"}}"#, "a".repeat(300));
        let (s, v) = send(&app, "POST", "/v1/keys", Some(&big)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
        let long_nonce = format!("/v1/attestation?nonce={}", "ab".repeat(513));
        let (s, v) = send(&app, "GET", &long_nonce, None).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_nonce"));
        assert!(
            h.store.list_keys(10).await.unwrap().is_empty(),
            "nothing written"
        );
    }

    /// A struct also deserializes from a JSON array (serde's sequence form); the API's
    /// bodies are objects only.
    #[tokio::test]
    async fn rejects_a_body_that_is_not_a_json_object() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        for (uri, body) in [
            ("/v1/keys", r#"["ed25519",null,null,null]"#),
            ("/v1/tokens", r#"["bot",["sign"],null,null]"#),
            ("/v1/admin/stop", "[]"),
            ("/v1/admin/stop", " \n[]"),
            ("/v1/admin/stop", "null"),
            ("/v1/admin/stop", "\"{}\""),
        ] {
            let (s, v) = send(&app, "POST", uri, Some(body)).await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::BAD_REQUEST, "invalid_json"),
                "{uri} {body}"
            );
        }
        assert!(
            h.store.list_keys(10).await.unwrap().is_empty(),
            "no key created"
        );
        assert_eq!(
            h.store.list_tokens().await.unwrap().len(),
            1,
            "no token created"
        );
        // Positive twin: the same requests as objects (leading white space allowed).
        let (s, v) = send(&app, "POST", "/v1/admin/stop", Some(" \n{}")).await;
        assert_eq!(
            (s, v["stopped"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{v}"
        );
    }

    #[tokio::test]
    async fn rejects_key_creation_the_enclave_refuses_and_stores_nothing() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let (s, v) = send(
            &app,
            "POST",
            "/v1/keys",
            Some(r#"{"algorithm":"secp256k1","policy":{"kms_fail":1}}"#),
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_GATEWAY, "kms_error"));
        let (s, v) = send(
            &app,
            "POST",
            "/v1/keys",
            Some(r#"{"algorithm":"secp256k1","policy":{"bad_rule":1}}"#),
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_policy"));
        assert!(h.store.list_keys(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn rejects_everything_once_the_enclave_was_configured_by_another() {
        let mut h = Harness::start(2).await;
        let app = app(&h, 4096, 8);
        let evm = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let uri = format!("/v1/keys/{}/sign", evm["key_id"].as_str().unwrap());
        // The enclave restarts, and another process configures it (another KMS key)
        // before the parent reconnects.
        let state = Arc::clone(&h.fake.state);
        let path = h.fake.path.clone();
        h.fake = crate::testing::FakeEnclave::start_configured_by(
            &path,
            state,
            Some("arn:aws:kms:us-east-1:444455556666:key/attacker"),
        );
        for _ in 0..300 {
            if h.relay.alarm().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (s, v) = send(&app, "GET", "/v1/health", None).await;
        assert_eq!(
            (s, code(&v)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "enclave_configured_by_another"
            )
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("someone else configured it"), "{message}");
        assert!(message.contains("alias/ekms"), "{message}");
        let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
        let (s, v) = send(&app, "POST", &uri, Some(body)).await;
        assert_eq!(
            (s, code(&v)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "enclave_configured_by_another"
            )
        );
        let (s, v) = send(&app, "POST", "/v1/keys", Some(r#"{"algorithm":"ed25519"}"#)).await;
        assert_eq!(
            (s, code(&v)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "enclave_configured_by_another"
            )
        );
    }

    #[tokio::test]
    async fn signs_evm_and_solana_transactions() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let evm = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let uri = format!("/v1/keys/{}/sign", evm["key_id"].as_str().unwrap());
        let (s, v) = send(
            &app,
            "POST",
            &uri,
            Some(r#"{"kind":"evm_transaction","payload":"0x02f8"}"#),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["signature"]["r"], format::to_0x_hex(&[1; 32]));
        assert_eq!(v["signature"]["s"], format::to_0x_hex(&[2; 32]));
        assert_eq!(v["signature"]["y_parity"], 1);
        assert_eq!(v["signature"]["v"], 38);
        assert_eq!(v["signed_transaction"], "0x02f8ee");
        assert_eq!(v["transaction_hash"], format::to_0x_hex(&[3; 32]));

        let sol = create(&app, r#"{"algorithm":"ed25519"}"#).await;
        let uri = format!("/v1/keys/{}/sign", sol["key_id"].as_str().unwrap());
        let body =
            json!({"kind": "solana_transaction", "payload": format::to_base64(b"tx")}).to_string();
        let (s, v) = send(&app, "POST", &uri, Some(&body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["signature"], format::to_base58(&[4; 64]));
        assert_eq!(v["signed_transaction"], format::to_base64(b"\xeetx"));
    }

    #[tokio::test]
    async fn rejects_signing_requests_with_each_error_code() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let evm = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let uri = format!("/v1/keys/{}/sign", evm["key_id"].as_str().unwrap());
        let evm_body = |payload: &[u8]| {
            json!({"kind": "evm_transaction", "payload": format::to_0x_hex(payload)}).to_string()
        };
        let cases = [
            (
                r#"{"kind":"eip712","payload":"0x00"}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "unknown_kind",
            ),
            (
                r#"{"kind":"solana_transaction","payload":"AA=="}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "kind_mismatch",
            ),
            (
                r#"{"kind":"evm_transaction","payload":"02f8"}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_payload",
            ),
            (
                r#"{"kind":"evm_transaction","payload":"0x"}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_payload",
            ),
            (
                evm_body(&[0x00]),
                StatusCode::BAD_REQUEST,
                "invalid_payload",
            ),
            (
                evm_body(&[0xff, 1]),
                StatusCode::BAD_REQUEST,
                "unsupported_payload",
            ),
            (evm_body(b"kms"), StatusCode::BAD_GATEWAY, "kms_error"),
            (evm_body(b"deny"), StatusCode::FORBIDDEN, "policy_denied"),
        ];
        for (body, status, want) in cases {
            let (s, v) = send(&app, "POST", &uri, Some(&body)).await;
            assert_eq!((s, code(&v)), (status, want), "{body}: {v}");
        }
        let (_, v) = send(&app, "POST", &uri, Some(&evm_body(b"deny"))).await;
        assert_eq!(v["error"]["rule"], "evm.chain_ids");
        assert_eq!(v["error"]["message"], "chain id 5 is not allowed");

        let sol = create(&app, r#"{"algorithm":"ed25519"}"#).await;
        let uri = format!("/v1/keys/{}/sign", sol["key_id"].as_str().unwrap());
        let (s, v) = send(
            &app,
            "POST",
            &uri,
            Some(r#"{"kind":"solana_transaction","payload":"!!"}"#),
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_payload"));
        let (s, v) = send(
            &app,
            "POST",
            &uri,
            Some(r#"{"kind":"evm_transaction","payload":"0x02"}"#),
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "kind_mismatch"));
    }

    #[tokio::test]
    async fn rejects_tampered_policy_as_sealed_state_invalid() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let key = create(
            &app,
            r#"{"algorithm":"secp256k1","policy":{"enabled":true}}"#,
        )
        .await;
        let id = key["key_id"].as_str().unwrap();
        // A DB admin loosens the policy behind the enclave's back.
        rusqlite::Connection::open(h.db_path())
            .unwrap()
            .execute(
                "UPDATE policies SET policy_json = '{\"enabled\":true,\"allow_all\":true}' WHERE key_id = ?1",
                [id],
            )
            .unwrap();
        let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
        let (s, v) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(body)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
        );
        assert_eq!(v["error"]["message"], SEALED_STATE_INVALID_MESSAGE);
        // A corrupt record blob gives the same answer, before reaching the enclave.
        rusqlite::Connection::open(h.db_path())
            .unwrap()
            .execute(
                "UPDATE keys SET sealed_record = x'a0' WHERE key_id = ?1",
                [id],
            )
            .unwrap();
        let (s, v) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(body)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
        );
    }

    /// The "redirected deposit address" attack: a DB admin rewrites the address or
    /// public key column, or also drops the statement (which the parent then asks the
    /// enclave for again, from the sealed record).
    #[tokio::test]
    async fn rejects_rewritten_address_or_public_key_as_sealed_state_invalid() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        for (column, value) in [
            ("address", "'0x000000000000000000000000000000000000dEaD'"),
            (
                "public_key",
                "x'03aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'",
            ),
        ] {
            for drop_statement in [false, true] {
                let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
                let id = key["key_id"].as_str().unwrap().to_owned();
                let uri = format!("/v1/keys/{id}");
                let (s, v) = send(&app, "GET", &uri, None).await;
                assert_eq!(s, StatusCode::OK);
                assert_eq!(v["address"], G_ADDRESS);
                let statement: Value =
                    serde_json::from_str(v["statement"]["statement"].as_str().unwrap()).unwrap();
                assert_eq!(statement["address"], G_ADDRESS);
                assert!(v["statement"]["attestation_document"].is_string());
                let db = rusqlite::Connection::open(h.db_path()).unwrap();
                db.execute(
                    &format!("UPDATE keys SET {column} = {value} WHERE key_id = ?1"),
                    [&id],
                )
                .unwrap();
                if drop_statement {
                    db.execute("DELETE FROM key_statements WHERE key_id = ?1", [&id])
                        .unwrap();
                }
                let (s, v) = send(&app, "GET", &uri, None).await;
                assert_eq!(
                    (s, code(&v)),
                    (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid"),
                    "{column}, statement dropped: {drop_statement}"
                );
                let (s, v) = send(&app, "GET", "/v1/keys", None).await;
                assert_eq!(
                    (s, code(&v)),
                    (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
                );
                db.execute("DELETE FROM keys WHERE key_id = ?1", [&id])
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn rejects_a_forged_statement_and_reissues_a_missing_one() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let key = create(&app, r#"{"algorithm":"ed25519"}"#).await;
        let id = key["key_id"].as_str().unwrap().to_owned();
        let uri = format!("/v1/keys/{id}");
        let db = rusqlite::Connection::open(h.db_path()).unwrap();
        // A key stored before statements existed: the enclave is asked for one.
        db.execute("DELETE FROM key_statements WHERE key_id = ?1", [&id])
            .unwrap();
        let (s, v) = send(&app, "GET", &uri, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let statement: Value =
            serde_json::from_str(v["statement"]["statement"].as_str().unwrap()).unwrap();
        assert_eq!(statement["created_at"], Value::Null);
        assert_eq!(statement["address"], key["address"]);
        // A statement rewritten to match a rewritten address fails its signature.
        let forged = v["statement"]["statement"].as_str().unwrap().replace(
            key["address"].as_str().unwrap(),
            "11111111111111111111111111111111",
        );
        db.execute(
            "UPDATE key_statements SET statement = ?2 WHERE key_id = ?1",
            [&id, &forged],
        )
        .unwrap();
        db.execute(
            "UPDATE keys SET address = '11111111111111111111111111111111' WHERE key_id = ?1",
            [&id],
        )
        .unwrap();
        let (s, v) = send(&app, "GET", &uri, None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
        );
    }

    /// A database admin who runs an enclave image of their own (under the AWS root:
    /// anyone with an AWS account) stores a statement it signed for the victim's key id,
    /// naming their address, with its document, and rewrites the address column.
    #[tokio::test]
    async fn rejects_a_statement_from_another_enclave_image() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let id = key["key_id"].as_str().unwrap().to_owned();
        let evil = "0x000000000000000000000000000000000000dEaD";
        let (signed, document) = crate::testing::foreign_image_statement(
            &id,
            "secp256k1",
            key["public_key"].as_str().unwrap(),
            evil,
        );
        let db = rusqlite::Connection::open(h.db_path()).unwrap();
        db.execute(
            "INSERT INTO enclave_identities (identity_key, attestation_document)
             VALUES (?1, ?2)",
            rusqlite::params![signed.identity_key.as_slice(), document],
        )
        .unwrap();
        db.execute(
            "UPDATE key_statements SET statement = ?2, signature = ?3, identity_key = ?4
             WHERE key_id = ?1",
            rusqlite::params![
                id,
                signed.statement,
                signed.signature.as_slice(),
                signed.identity_key.as_slice()
            ],
        )
        .unwrap();
        db.execute(
            "UPDATE keys SET address = ?2 WHERE key_id = ?1",
            rusqlite::params![id, evil],
        )
        .unwrap();
        let (s, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid"),
            "{v}"
        );
        // Put back, the column matches what the enclave states again.
        db.execute(
            "UPDATE keys SET address = ?2 WHERE key_id = ?1",
            rusqlite::params![id, key["address"].as_str().unwrap()],
        )
        .unwrap();
        let (s, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["address"], key["address"]);
    }

    #[tokio::test]
    async fn updates_policy_with_a_new_version() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let id = key["key_id"].as_str().unwrap();
        let uri = format!("/v1/keys/{id}/policy");
        let (s, v) = send(
            &app,
            "PUT",
            &uri,
            Some(r#"{"policy":{"enabled":true,"evm":{"chain_ids":[1]}}}"#),
        )
        .await;
        assert_eq!((s, &v), (StatusCode::OK, &json!({"policy_version": 2})));
        let (_, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
        assert_eq!(v["policy_version"], 2);
        assert_eq!(v["policy"]["evm"]["chain_ids"], json!([1]));
        // (the fake enclave here accepts it; a stored policy without max_fee_wei is marked)
        assert_eq!(v["fee_cap"], "none");
        let (_, list) = send(&app, "GET", "/v1/keys", None).await;
        assert_eq!(list["keys"][0]["fee_cap"], "none");
        // The new MAC is stored with it: signing still passes the integrity check.
        let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
        let (s, _) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(body)).await;
        assert_eq!(s, StatusCode::OK);
    }

    /// Issue 10: the sign path reads keys from a cache; a policy written through the API
    /// must be the one the next signature uses, and a row changed in the database by
    /// another connection must not be served from the cache.
    #[tokio::test]
    async fn signs_with_the_policy_written_last_never_a_cached_one() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let id = key["key_id"].as_str().unwrap();
        let sign_uri = format!("/v1/keys/{id}/sign");
        let body = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
        let last = || {
            h.fake
                .state
                .last_sign_policy
                .lock()
                .unwrap()
                .clone()
                .unwrap()
        };
        for _ in 0..2 {
            let (s, _) = send(&app, "POST", &sign_uri, Some(body)).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(last().0, 1);
        }
        assert_eq!(
            h.store.key_cache().len_and_bytes().0,
            1,
            "the key is cached"
        );
        for (version, chain) in [(2, 1), (3, 10)] {
            let doc = format!(r#"{{"policy":{{"enabled":true,"evm":{{"chain_ids":[{chain}]}}}}}}"#);
            let (s, _) = send(&app, "PUT", &format!("/v1/keys/{id}/policy"), Some(&doc)).await;
            assert_eq!(s, StatusCode::OK);
            let (s, _) = send(&app, "POST", &sign_uri, Some(body)).await;
            assert_eq!(s, StatusCode::OK);
            let (v, json) = last();
            assert_eq!(v, version);
            assert!(json.contains(&format!("[{chain}]")), "{json}");
        }
        // Another connection (an operator, another parent) changes the row: the next
        // signature uses the database's row (which fails the fake's MAC), not the cache.
        let db = rusqlite::Connection::open(h.dir.path().join("ekms.db")).unwrap();
        db.execute(
            "UPDATE policies SET mac = zeroblob(32) WHERE key_id = ?1",
            rusqlite::params![id],
        )
        .unwrap();
        let (s, v) = send(&app, "POST", &sign_uri, Some(body)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::INTERNAL_SERVER_ERROR, "sealed_state_invalid")
        );
    }

    #[tokio::test]
    async fn rejects_policy_update_that_is_not_an_object_or_invalid() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let uri = format!("/v1/keys/{}/policy", key["key_id"].as_str().unwrap());
        let (s, v) = send(&app, "PUT", &uri, Some(r#"{"policy":"allow"}"#)).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_policy"));
        let (s, v) = send(&app, "PUT", &uri, Some(r#"{"policy":{"bad_rule":true}}"#)).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_policy"));
        let (s, v) = send(&app, "PUT", &uri, Some(r#"{}"#)).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
        let (_, v) = send(
            &app,
            "GET",
            &format!("/v1/keys/{}", key["key_id"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(v["policy_version"], 1, "nothing was written");
    }

    #[tokio::test]
    async fn rejects_policy_too_large_for_a_frame_with_413() {
        // A body limit above the frame limit: the body is read, but the enclave request
        // cannot be encoded. That is the caller's request being too large, not a 500.
        let h = Harness::start(1).await;
        let app = app(&h, 2 * ekms_shared::MAX_FRAME_LEN, 8);
        let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let id = key["key_id"].as_str().unwrap();
        let uri = format!("/v1/keys/{id}/policy");
        let big = json!({"policy": {"note": "x".repeat(ekms_shared::MAX_FRAME_LEN)}});
        let (s, v) = send(&app, "PUT", &uri, Some(&big.to_string())).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
        let (_, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
        assert_eq!(v["policy_version"], 1, "nothing was written");
        // Positive twin: a policy that fits goes through.
        let small = json!({"policy": {"enabled": true}});
        let (s, _) = send(&app, "PUT", &uri, Some(&small.to_string())).await;
        assert_eq!(s, StatusCode::OK);
    }

    #[tokio::test]
    async fn attestation_returns_the_document_as_base64() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let (s, v) = send(&app, "GET", "/v1/attestation?nonce=0a0b", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["document"], format::to_base64(b"doc:\x0a\x0b"));
    }

    #[tokio::test]
    async fn rejects_sign_when_the_enclave_drops_mid_request() {
        let h = Harness::start(1).await;
        let app = app(&h, 4096, 8);
        let key = create(&app, r#"{"algorithm":"secp256k1"}"#).await;
        let uri = format!("/v1/keys/{}/sign", key["key_id"].as_str().unwrap());
        let drop =
            json!({"kind": "evm_transaction", "payload": format::to_0x_hex(b"drop")}).to_string();
        let (s, v) = send(&app, "POST", &uri, Some(&drop)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
        );
        let ok = r#"{"kind":"evm_transaction","payload":"0x02f8"}"#;
        let mut status = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..100 {
            status = send(&app, "POST", &uri, Some(ok)).await.0;
            if status == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, StatusCode::OK, "works again after the reconnect");
    }

    #[tokio::test]
    async fn rejects_requests_over_the_in_flight_cap() {
        let h = Harness::start(1).await;
        let (s, v) = send(&app(&h, 4096, 0), "GET", "/v1/health", None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
    }
}
