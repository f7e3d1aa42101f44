//! The application API: HTTP/1.1 + JSON (axum), one handler per route.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/health` | `{"status":"ok","mode":"simulation"\|"nitro","pcrs":{"0":"hex",…}}`, 503 until ready |
//! | `POST /v1/keys` `{"algorithm","label"?,"policy"?}` | 201 `{"key_id","algorithm","label","public_key","address","policy_version","created_at"}` |
//! | `GET /v1/keys?limit=N` (1..=1000, default 100) | `{"keys":[…]}`, newest first |
//! | `GET /v1/keys/{key_id}` | the key, plus `"policy"` (the JSON document) |
//! | `PUT /v1/keys/{key_id}/policy` `{"policy":{…}}` | `{"policy_version":N}` |
//! | `POST /v1/keys/{key_id}/sign` `{"kind","payload"}` | EVM: `{"signature":{"r","s","y_parity","v"},"signed_transaction","transaction_hash"}`; Solana: `{"signature","signed_transaction"}` |
//! | `GET /v1/attestation?nonce=HEX` (≤ 512 bytes) | `{"document":"<base64>"}` |
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
use ekms_shared::{
    Algorithm, Mode, PayloadKind, Request as EnclaveRequest, ResponseBody, SignOutput,
    SignPayload, MAX_ATTESTATION_NONCE_LEN,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::error::{ApiError, Error};
use crate::format;
use crate::relay::Relay;
use crate::store::{algorithm_text, KeySummary, NewKey, Store};

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
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{key_id}", get(get_key))
        .route("/v1/keys/{key_id}/policy", put(set_policy))
        .route("/v1/keys/{key_id}/sign", post(sign))
        .route("/v1/attestation", get(attestation))
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
    let span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path());
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
struct JsonBody<T>(T);

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
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
    }
}

/// The `{key_id}` path segment. Anything that is not a canonical UUID cannot name a
/// key, so it is 404 `key_not_found` like an unknown one.
fn key_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
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
fn query_pairs(raw: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
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
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the enclave connection is not ready",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    algorithm: String,
    label: Option<String>,
    policy: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    policy: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    kind: String,
    payload: String,
}

/// The policy document as the string the enclave receives; it must be a JSON object.
fn policy_json(policy: &Value) -> Result<String, ApiError> {
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
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Result<Response, ApiError> {
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
    let policy = policy_json(&body.policy.unwrap_or_else(|| json!({"enabled": true})))?;
    let keyring = state.relay.current_keyring().await?;
    let key_id = uuid::Uuid::new_v4().to_string();
    let answer = state
        .relay
        .call(EnclaveRequest::GenerateKey {
            key_id: key_id.clone(),
            algorithm,
            owner: None,
            label: body.label.clone(),
            policy_json: policy,
            keyring: keyring.clone(),
        })
        .await?;
    let ResponseBody::KeyGenerated { record, policy } = answer else {
        return Err(Error::UnexpectedResponse("GenerateKey").into());
    };
    if record.key_id != key_id
        || record.algorithm != algorithm
        || record.keyring != keyring.keyring
        || record.epoch != keyring.epoch
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
    // Reported created only once the row is committed.
    state
        .store
        .insert_key(NewKey {
            label: body.label,
            address,
            created_at_ms: summary.created_at_ms,
            record,
            policy,
        })
        .await?;
    tracing::info!(key_id = %summary.key_id, "key created");
    Ok((StatusCode::CREATED, Json(key_json(&summary))).into_response())
}

async fn list_keys(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
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
    let keys: Vec<Value> = state
        .store
        .list_keys(limit)
        .await?
        .iter()
        .map(|k| Value::Object(key_json(k)))
        .collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

async fn get_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let row = state.store.key(id).await?.ok_or_else(ApiError::key_not_found)?;
    let mut out = key_json(&row.summary);
    // The stored document is unauthenticated here (the enclave checks its MAC on use).
    let policy: Value = serde_json::from_str(&row.policy.policy_json)
        .map_err(|_| Error::StoreCorrupt("stored policy is not JSON".into()))?;
    out.insert("policy".into(), policy);
    Ok(Json(out).into_response())
}

async fn set_policy(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PolicyBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let policy = policy_json(&body.policy)?;
    let row = state.store.key(id.clone()).await?.ok_or_else(ApiError::key_not_found)?;
    let keyring = state
        .store
        .keyring(row.record.keyring.clone(), row.record.epoch)
        .await?
        .ok_or_else(|| Error::StoreCorrupt("the key's keyring epoch is missing".into()))?;
    let expected = row.policy.version;
    let answer = state
        .relay
        .call(EnclaveRequest::SetPolicy {
            record: row.record,
            keyring,
            current: row.policy,
            policy_json: policy,
        })
        .await?;
    let ResponseBody::PolicySet { policy } = answer else {
        return Err(Error::UnexpectedResponse("SetPolicy").into());
    };
    if policy.key_id != id {
        return Err(Error::UnexpectedResponse("SetPolicy").into());
    }
    let version = policy.version;
    state.store.compare_and_set_policy(expected, policy).await?;
    tracing::info!(key_id = %id, version, "policy updated");
    Ok(Json(json!({ "policy_version": version })).into_response())
}

async fn sign(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<SignBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let kind = match body.kind.as_str() {
        "evm_transaction" => PayloadKind::EvmTransaction,
        "solana_transaction" => PayloadKind::SolanaTransaction,
        other => {
            return Err(ApiError::bad_request(
                "unknown_kind",
                format!("kind {other:?}: expected evm_transaction or solana_transaction"),
            ))
        }
    };
    let row = state.store.key(id).await?.ok_or_else(ApiError::key_not_found)?;
    let expected = match row.record.algorithm {
        Algorithm::Secp256k1 => PayloadKind::EvmTransaction,
        Algorithm::Ed25519 => PayloadKind::SolanaTransaction,
    };
    if kind != expected {
        return Err(ApiError::bad_request(
            "kind_mismatch",
            format!(
                "kind {} does not match the key's algorithm {}",
                body.kind,
                algorithm_text(row.record.algorithm)
            ),
        ));
    }
    let bytes = match kind {
        PayloadKind::EvmTransaction => format::from_0x_hex(&body.payload),
        PayloadKind::SolanaTransaction => format::from_base64(&body.payload),
    }
    .filter(|b| !b.is_empty())
    .ok_or_else(|| {
        ApiError::bad_request(
            "invalid_payload",
            match kind {
                PayloadKind::EvmTransaction => "the payload must be non-empty 0x-prefixed hex",
                PayloadKind::SolanaTransaction => "the payload must be non-empty base64",
            },
        )
    })?;
    let keyring = state
        .store
        .keyring(row.record.keyring.clone(), row.record.epoch)
        .await?
        .ok_or_else(|| Error::StoreCorrupt("the key's keyring epoch is missing".into()))?;
    let answer = state
        .relay
        .call(EnclaveRequest::Sign {
            record: row.record,
            keyring,
            policy: row.policy,
            payload: SignPayload { kind, bytes },
        })
        .await?;
    let out = match (kind, answer) {
        (
            PayloadKind::EvmTransaction,
            ResponseBody::Signed(SignOutput::Evm {
                r,
                s,
                y_parity,
                v,
                signed_transaction,
                transaction_hash,
            }),
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
            ResponseBody::Signed(SignOutput::Solana {
                signature,
                signed_transaction,
            }),
        ) => json!({
            "signature": format::to_base58(&signature),
            "signed_transaction": format::to_base64(&signed_transaction),
        }),
        _ => return Err(Error::UnexpectedResponse("Sign").into()),
    };
    Ok(Json(out).into_response())
}

async fn attestation(
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
