//! The key routes: `POST /v1/keys` (201 with the key, its owner, the enclave's statement
//! and the creation's audit receipt), `GET /v1/keys?limit=N` and `GET /v1/keys/{key_id}`
//! (see the route table in [`crate::api`]).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::api::CreateKeyRequest;
use ekms_shared::owner::Owner;
use ekms_shared::Algorithm;
use serde_json::{json, Value};

use super::extract::{key_id, policy_json, query_limit, query_pairs, JsonBody};
use super::{ApiCode, ApiError, AppState};
use crate::auth::Caller;
use crate::format;
use crate::service::keys::{CreateKey, KeyView};
use crate::store::{algorithm_text, KeySummary, StoredStatement};

pub use crate::service::keys::MAX_LABEL_LEN;

/// Largest `limit` of `GET /v1/keys`.
pub const MAX_LIST_LIMIT: u32 = 1000;
const DEFAULT_LIST_LIMIT: u32 = 100;

/// `POST /v1/keys`.
pub(crate) async fn create(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    let algorithm = match body.algorithm.as_str() {
        "secp256k1" => Algorithm::Secp256k1,
        "ed25519" => Algorithm::Ed25519,
        other => {
            return Err(ApiError::new(
                ApiCode::UnknownAlgorithm,
                format!("algorithm {other:?}: expected secp256k1 or ed25519"),
            ))
        }
    };
    let owner = body
        .owner
        .as_ref()
        .map(|o| Owner::from_json(o).map(|o| o.record_text()))
        .transpose()
        .map_err(|e| ApiError::new(ApiCode::InvalidOwner, e.to_string()))?;
    let policy_json = policy_json(&body.policy.unwrap_or_else(|| json!({"enabled": true})))?;
    let created = state
        .service
        .create_key(
            &caller,
            CreateKey {
                algorithm,
                label: body.label,
                policy_json,
                owner,
            },
        )
        .await?;
    let mut out = key_json(&created.summary);
    out.insert("owner".into(), owner_json(created.owner.as_deref()));
    out.insert("statement".into(), statement_json(&created.statement, true));
    if let Some(receipt) = created.receipt {
        out.insert(
            "receipt".into(),
            serde_json::to_value(receipt).map_err(|_| ApiError::internal())?,
        );
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `GET /v1/keys?limit=N`.
pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut limit = DEFAULT_LIST_LIMIT;
    for (_, v) in query_pairs(query.as_deref(), &["limit"])? {
        limit = query_limit(&v, MAX_LIST_LIMIT)?;
    }
    let keys: Vec<Value> = state
        .service
        .list_keys(&caller, limit)
        .await?
        .iter()
        .map(|k| Value::Object(view_json(k, false)))
        .collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

/// `GET /v1/keys/{key_id}`.
pub(crate) async fn get(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let key = state.service.key(&caller, &id).await?;
    let mut out = view_json(&key, true);
    out.insert("policy".into(), key.policy);
    Ok(Json(out).into_response())
}

/// A listed (`detail` false) or shown key: its columns, its statement (with the
/// document when `detail`), its owner when `detail`, and `fee_cap` when the policy has
/// a section for the key's chain ([`format::fee_cap_text`]).
fn view_json(k: &KeyView, detail: bool) -> serde_json::Map<String, Value> {
    let mut out = key_json(&k.summary);
    if detail {
        out.insert("owner".into(), owner_json(k.owner.as_deref()));
    }
    out.insert("statement".into(), statement_json(&k.statement, detail));
    if let Some(cap) = format::fee_cap_text(k.summary.algorithm, &k.policy) {
        out.insert("fee_cap".into(), cap.into());
    }
    out
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
