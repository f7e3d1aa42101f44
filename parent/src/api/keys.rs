//! The key routes: `POST /v1/keys` (201 with the key, its owner, the enclave's statement
//! and the creation's audit receipt), `GET /v1/keys?limit=N` and `GET /v1/keys/{key_id}`
//! (see the route table in [`crate::api`]).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::api::{self, CreateKeyRequest, FeeCap, KeyAlgorithm};
use ekms_shared::owner::Owner;
use ekms_shared::Algorithm;
use serde_json::{json, Value};

use super::extract::{key_id, policy_json, query_limit, query_pairs, JsonBody};
use super::{ApiCode, ApiError, AppState};
use crate::auth::Caller;
use crate::format;
use crate::service::keys::{CreateKey, KeyView};
use crate::store::{KeySummary, StoredStatement};

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
    let algorithm = match body.algorithm {
        KeyAlgorithm::Secp256k1 => Algorithm::Secp256k1,
        KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
        KeyAlgorithm::Other(other) => {
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
    let out = api::CreatedKey {
        key: key_fields(&created.summary),
        owner: owner_json(created.owner.as_deref()),
        statement: statement(&created.statement, true),
        receipt: created.receipt,
    };
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
    let keys = state
        .service
        .list_keys(&caller, limit)
        .await?
        .iter()
        .map(|k| api::KeyListItem {
            key: key_fields(&k.summary),
            statement: statement(&k.statement, false),
            fee_cap: fee_cap(k),
        })
        .collect();
    Ok(Json(api::KeyList { keys }).into_response())
}

/// `GET /v1/keys/{key_id}`.
pub(crate) async fn get(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let key = state.service.key(&caller, &id).await?;
    let out = api::KeyDetail {
        key: key_fields(&key.summary),
        owner: owner_json(key.owner.as_deref()),
        statement: statement(&key.statement, true),
        fee_cap: fee_cap(&key),
        policy: key.policy,
    };
    Ok(Json(out).into_response())
}

/// `set` or `none` when the policy has a section for the key's chain
/// ([`format::fee_cap`]).
fn fee_cap(k: &KeyView) -> Option<FeeCap> {
    format::fee_cap(k.summary.algorithm, &k.policy)
}

fn key_fields(k: &KeySummary) -> api::KeyFields {
    api::KeyFields {
        key_id: k.key_id.clone(),
        algorithm: k.algorithm.into(),
        label: k.label.clone(),
        public_key: format::public_key_text(k.algorithm, &k.public_key),
        address: k.address.clone(),
        policy_version: k.policy_version,
        created_at: format::timestamp_text(k.created_at_ms),
    }
}

/// The owner as the API shows it: `null`, the JSON form
/// (`{"type":"eip191","address"}` / `{"type":"ed25519","public_key"}`), or, for a
/// record sealed before owners had a format, `{"type":"unknown"}` (nobody can sign for
/// it: its policy cannot change).
fn owner_json(owner: Option<&str>) -> Option<Value> {
    match owner.map(Owner::from_record_text) {
        None => None,
        Some(Ok(o)) => serde_json::to_value(o.to_json()).ok(),
        Some(Err(_)) => Some(json!({"type": "unknown"})),
    }
}

/// The key statement as the API shows it: the statement's exact JSON text (the signed
/// bytes follow `"ekms/v1/key-statement\n"`), the ed25519 signature and identity key
/// in hex, and, when `with_document`, the base64 COSE_Sign1 attestation document
/// binding the identity key.
fn statement(stored: &StoredStatement, with_document: bool) -> api::KeyStatement {
    let signed = &stored.signed;
    api::KeyStatement {
        statement: signed.statement.clone(),
        signature: format::to_0x_hex(&signed.signature),
        identity_key: format::to_0x_hex(&signed.identity_key),
        attestation_document: with_document.then(|| format::to_base64(&stored.identity_document)),
    }
}
