//! The API routes that change what a key may do (issue 7): owner-authorized policy
//! changes and their proposals, the emergency stop of one key and its re-enable, the
//! store-wide stop and resume, and the audit chain.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/keys/{id}/policy/proposal` | `{"policy", "expires_at"?}` | `{"version","policy_sha256","canonical_policy","expires_at","message"}` |
//! | `PUT /v1/keys/{id}/policy` | `{"policy", "version"?, "expires_at"?, "owner_signature"?}` | `{"policy_version"}` |
//! | `POST /v1/keys/{id}/disable` | `{}` | `{"policy_version","enabled":false}` |
//! | `POST /v1/keys/{id}/enable/proposal` | `{"expires_at"?}` | as the policy proposal |
//! | `POST /v1/keys/{id}/enable` | `{"version"?, "expires_at"?, "owner_signature"?}` | `{"policy_version","enabled":true}` |
//! | `POST /v1/admin/stop`, `POST /v1/admin/resume` | `{}` | `{"stopped":bool}` |
//! | `GET /v1/audit?after=SEQ&limit=N` | | `{"records":[{"seq","record","signature","audit_key"}],"documents":{"0x<key>":"<base64>"}}` |
//!
//! Scopes: proposals, `PUT …/policy` and `enable` need `policy:write`; `disable`,
//! `stop` and `resume` need `admin`; `GET /v1/audit` needs `keys:read`. A token only
//! lets a change reach the enclave: for a key with an owner, the enclave applies it only
//! with the owner's signature.
//!
//! A proposal is a convenience: it shows the exact message ([`ekms_shared::owner`]) an
//! owner signs for the change; the enclave rebuilds and checks everything itself, and
//! judges `expires_at` by its own clock. Every change goes through the enclave's two
//! phases ([`crate::journal::Journal::settle`]): its answer is released only once the
//! checkpoint is stored and committed.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::owner::{parse_rfc3339, policy_sha256, rfc3339, Authorization, OwnerAction};
use ekms_shared::{
    KeyringRef, OwnerApproval, Request as EnclaveRequest, SealedKeyRecord, SealedPolicy,
    MAX_OWNER_SIGNATURE_LEN,
};
use ekms_signer::Policy;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{key_id, policy_json, query_pairs, AppState, JsonBody};
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, Error};
use crate::format;
use crate::journal::{Journal, MAX_AUDIT_PAGE};

/// Lifetime of a proposal's authorization when the caller names none (seconds).
pub const DEFAULT_AUTHORIZATION_SECS: u64 = 3600;
const DEFAULT_AUDIT_PAGE: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposalBody {
    policy: Value,
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnableProposalBody {
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPolicyBody {
    policy: Value,
    version: Option<u64>,
    expires_at: Option<String>,
    owner_signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnableBody {
    version: Option<u64>,
    expires_at: Option<String>,
    owner_signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmptyBody {}

/// `expires_at` as Unix seconds: the caller's (RFC 3339 UTC, seconds), or an hour from
/// now for a proposal.
fn expiry(text: Option<&str>) -> Result<u64, ApiError> {
    match text {
        Some(t) => parse_rfc3339(t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_expires_at",
                "expires_at must be RFC 3339 UTC with seconds, e.g. 2026-12-02T12:00:00Z",
            )
        }),
        None => Ok(u64::try_from(crate::now_ms() / 1000).unwrap_or(0) + DEFAULT_AUTHORIZATION_SECS),
    }
}

/// The owner's signature: `0x` + hex (EIP-191, 65 bytes) or base58 (ed25519, 64 bytes).
fn signature_bytes(text: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = match text.strip_prefix("0x") {
        Some(_) => format::from_0x_hex(text),
        None => bs58::decode(text).into_vec().ok(),
    };
    bytes
        .filter(|b| (64..=MAX_OWNER_SIGNATURE_LEN).contains(&b.len()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_owner_signature",
                "owner_signature must be 0x + 130 hex digits (eip191) or base58 of 64 bytes (ed25519)",
            )
        })
}

/// The approval sent to the enclave: all three of `version`, `expires_at` and
/// `owner_signature`, or none (a key without an owner; for an owned key the enclave
/// then refuses with `owner_authorization_invalid`).
fn approval(
    version: Option<u64>,
    expires_at: Option<&str>,
    signature: Option<&str>,
) -> Result<Option<OwnerApproval>, ApiError> {
    match (version, expires_at, signature) {
        (None, None, None) => Ok(None),
        (Some(version), Some(expires_at), Some(signature)) => Ok(Some(OwnerApproval {
            version,
            expires_at: expiry(Some(expires_at))?,
            signature: signature_bytes(signature)?,
        })),
        _ => Err(ApiError::bad_request(
            "invalid_owner_authorization",
            "an owner authorization needs version, expires_at and owner_signature together",
        )),
    }
}

/// The proposal answer for `action` on `key_id` making `version` with `canonical`.
fn proposal_json(
    action: OwnerAction,
    key_id: String,
    version: u64,
    canonical: String,
    expires_at: u64,
) -> Value {
    let digest = policy_sha256(&canonical);
    let message = Authorization {
        action,
        key_id,
        version,
        policy_sha256: digest,
        expires_at,
    }
    .message();
    json!({
        "action": action.as_str(),
        "version": version,
        "policy_sha256": hex::encode(digest),
        "canonical_policy": canonical,
        "expires_at": rfc3339(expires_at),
        "message": message,
    })
}

fn invalid_policy(e: ekms_signer::SignerError) -> ApiError {
    ApiError::bad_request("invalid_policy", e.to_string())
}

/// `POST /v1/keys/{id}/policy/proposal`.
pub(crate) async fn propose_policy(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<ProposalBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::PolicyWrite, None)?;
    let id = key_id(path)?;
    let canonical = Policy::parse_new(&policy_json(&body.policy)?)
        .map_err(invalid_policy)?
        .canonical_json();
    propose(&state, id, OwnerAction::SetPolicy, body.expires_at, |_| {
        Ok(canonical)
    })
    .await
}

/// `POST /v1/keys/{id}/enable/proposal`.
pub(crate) async fn propose_enable(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<EnableProposalBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::PolicyWrite, None)?;
    let id = key_id(path)?;
    propose(
        &state,
        id,
        OwnerAction::Enable,
        body.expires_at,
        |current| {
            let policy = Policy::parse(current)
                .map_err(|_| Error::StoreCorrupt("stored policy does not parse".into()))?;
            if policy.enabled() {
                return Err(ApiError::bad_request(
                    "key_not_disabled",
                    "the key is not disabled",
                ));
            }
            Ok(policy.with_enabled(true).canonical_json())
        },
    )
    .await
}

/// The proposal of `action` on key `id`: the policy after the change is
/// `after(current policy JSON)`, its version the current one plus one.
async fn propose(
    state: &AppState,
    id: String,
    action: OwnerAction,
    expires_at: Option<String>,
    after: impl FnOnce(&str) -> Result<String, ApiError>,
) -> Result<Response, ApiError> {
    let row = state
        .store
        .key(id.clone())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    let canonical = after(&row.policy.policy_json)?;
    let version = row.policy.version.saturating_add(1);
    let expires_at = expiry(expires_at.as_deref())?;
    Ok(Json(proposal_json(action, id, version, canonical, expires_at)).into_response())
}

/// `PUT /v1/keys/{id}/policy`.
pub(crate) async fn set_policy(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<SetPolicyBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::PolicyWrite, None)?;
    let id = key_id(path)?;
    let policy = policy_json(&body.policy)?;
    let approval = approval(
        body.version,
        body.expires_at.as_deref(),
        body.owner_signature.as_deref(),
    )?;
    let version = change(&state, &id, |record, keyring, current| {
        EnclaveRequest::SetPolicy {
            record,
            keyring,
            current,
            policy_json: policy,
            approval,
        }
    })
    .await?;
    tracing::info!(key_id = %id, version, "policy updated");
    Ok(Json(json!({ "policy_version": version })).into_response())
}

/// `POST /v1/keys/{id}/disable`: the emergency stop of one key (needs no owner).
pub(crate) async fn disable(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(_): JsonBody<EmptyBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin, None)?;
    let id = key_id(path)?;
    let version = change(&state, &id, |record, keyring, current| {
        EnclaveRequest::DisableKey {
            record,
            keyring,
            current,
        }
    })
    .await?;
    tracing::warn!(key_id = %id, version, "key disabled");
    Ok(Json(json!({ "policy_version": version, "enabled": false })).into_response())
}

/// `POST /v1/keys/{id}/enable`.
pub(crate) async fn enable(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<EnableBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::PolicyWrite, None)?;
    let id = key_id(path)?;
    let approval = approval(
        body.version,
        body.expires_at.as_deref(),
        body.owner_signature.as_deref(),
    )?;
    let version = change(&state, &id, |record, keyring, current| {
        EnclaveRequest::EnableKey {
            record,
            keyring,
            current,
            approval,
        }
    })
    .await?;
    tracing::info!(key_id = %id, version, "key enabled");
    Ok(Json(json!({ "policy_version": version, "enabled": true })).into_response())
}

/// Loads key `id`, sends the policy change `build` makes of its record, keyring and
/// current policy, and settles it (compare-and-set against the version it started
/// from); the new version.
async fn change(
    state: &AppState,
    id: &str,
    build: impl FnOnce(SealedKeyRecord, KeyringRef, SealedPolicy) -> EnclaveRequest,
) -> Result<u64, ApiError> {
    let (row, keyring) = state
        .store
        .key_with_keyring(id.to_owned())
        .await?
        .ok_or_else(ApiError::key_not_found)?;
    let expected = row.policy.version;
    let answer = state
        .relay
        .call(build(row.record, keyring, row.policy))
        .await?;
    let journal = Journal::new(state.store.clone());
    let policy = journal
        .settle(&state.relay, answer, Some(expected))
        .await?
        .ok_or(Error::UnexpectedResponse("policy change"))?;
    if policy.key_id != id {
        return Err(Error::UnexpectedResponse("policy change").into());
    }
    Ok(policy.version)
}

/// `POST /v1/admin/stop`.
pub(crate) async fn stop(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(_): JsonBody<EmptyBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin, None)?;
    set_stop(&state, true).await
}

/// `POST /v1/admin/resume`.
pub(crate) async fn resume(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(_): JsonBody<EmptyBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin, None)?;
    set_stop(&state, false).await
}

async fn set_stop(state: &AppState, stopped: bool) -> Result<Response, ApiError> {
    let request = if stopped {
        EnclaveRequest::StopAll
    } else {
        EnclaveRequest::ResumeAll
    };
    let answer = state.relay.call(request).await?;
    Journal::new(state.store.clone())
        .settle(&state.relay, answer, None)
        .await?;
    if stopped {
        tracing::warn!("store-wide stop: the enclave signs nothing until resumed");
    } else {
        tracing::warn!("store-wide stop lifted");
    }
    Ok(Json(json!({ "stopped": stopped })).into_response())
}

/// `GET /v1/audit?after=SEQ&limit=N`.
pub(crate) async fn audit(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Scope::KeysRead, None)?;
    let mut after = 0u64;
    let mut limit = DEFAULT_AUDIT_PAGE;
    for (k, v) in query_pairs(query.as_deref(), &["after", "limit"])? {
        let bad = |what: String| ApiError::bad_request("invalid_query", what);
        if k == "after" {
            after = v
                .parse()
                .map_err(|_| bad("after must be a record seq".into()))?;
        } else {
            limit = v
                .parse()
                .ok()
                .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
                .ok_or_else(|| bad(format!("limit must be 1 to {MAX_AUDIT_PAGE}")))?;
        }
    }
    let journal = Journal::new(state.store.clone());
    let rows = journal.records_after(after, limit).await?;
    let mut keys: Vec<[u8; 32]> = rows.iter().map(|r| r.signed.audit_key).collect();
    keys.sort_unstable();
    keys.dedup();
    let documents: serde_json::Map<String, Value> = journal
        .documents(keys)
        .await?
        .into_iter()
        .map(|(k, d)| (format::to_0x_hex(&k), format::to_base64(&d).into()))
        .collect();
    let records: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "record": r.signed.record,
                "signature": format::to_0x_hex(&r.signed.signature),
                "audit_key": format::to_0x_hex(&r.signed.audit_key),
            })
        })
        .collect();
    Ok(Json(json!({ "records": records, "documents": documents })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::{app, create, send};
    use crate::testing::Harness;
    use axum::http::StatusCode;

    const POLICY: &str = r#"{"enabled":true,"evm":{"chain_ids":[1],"max_fee_wei":"1"}}"#;
    const OWNER: &str =
        r#"{"type":"eip191","address":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}"#;

    #[tokio::test]
    async fn proposes_the_exact_message_for_a_change() {
        let h = Harness::start(1).await;
        let app = app(&h, 64 * 1024, 8);
        let key = create(
            &app,
            &format!(r#"{{"algorithm":"secp256k1","policy":{POLICY},"owner":{OWNER}}}"#),
        )
        .await;
        assert_eq!(key["owner"]["type"], "eip191");
        let id = key["key_id"].as_str().unwrap();
        let body = format!(r#"{{"policy":{POLICY},"expires_at":"2030-01-01T00:00:00Z"}}"#);
        let (s, v) = send(
            &app,
            "POST",
            &format!("/v1/keys/{id}/policy/proposal"),
            Some(&body),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["version"], 2);
        let canonical = v["canonical_policy"].as_str().unwrap();
        assert_eq!(
            v["message"].as_str().unwrap(),
            Authorization {
                action: OwnerAction::SetPolicy,
                key_id: id.into(),
                version: 2,
                policy_sha256: policy_sha256(canonical),
                expires_at: parse_rfc3339("2030-01-01T00:00:00Z").unwrap(),
            }
            .message()
        );
        let (s, v) = send(&app, "GET", &format!("/v1/keys/{id}"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            v["owner"]["address"],
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        );
    }

    #[tokio::test]
    async fn rejects_malformed_owner_fields() {
        let h = Harness::start(1).await;
        let app = app(&h, 64 * 1024, 8);
        let key = create(
            &app,
            &format!(r#"{{"algorithm":"secp256k1","policy":{POLICY}}}"#),
        )
        .await;
        let id = key["key_id"].as_str().unwrap();
        let path = format!("/v1/keys/{id}/policy");
        for (body, code) in [
            (
                format!(r#"{{"policy":{POLICY},"version":2}}"#),
                "invalid_owner_authorization",
            ),
            (
                format!(
                    r#"{{"policy":{POLICY},"version":2,"expires_at":"2030-01-01 00:00:00","owner_signature":"0x00"}}"#
                ),
                "invalid_expires_at",
            ),
            (
                format!(
                    r#"{{"policy":{POLICY},"version":2,"expires_at":"2030-01-01T00:00:00Z","owner_signature":"0x1234"}}"#
                ),
                "invalid_owner_signature",
            ),
        ] {
            let (s, v) = send(&app, "PUT", &path, Some(&body)).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            assert_eq!(v["error"]["code"], code, "{v}");
        }
        let (s, v) = send(
            &app,
            "POST",
            "/v1/keys",
            Some(r#"{"algorithm":"secp256k1","owner":{"type":"eip191","address":"alice"}}"#),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_owner"))
        );
        let (s, v) = send(
            &app,
            "POST",
            &format!("/v1/keys/{id}/enable/proposal"),
            Some("{}"),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["code"], "key_not_disabled");
    }

    #[tokio::test]
    async fn disables_stops_and_serves_the_audit_chain() {
        let h = Harness::start(1).await;
        let app = app(&h, 64 * 1024, 8);
        let key = create(
            &app,
            &format!(r#"{{"algorithm":"secp256k1","policy":{POLICY}}}"#),
        )
        .await;
        let id = key["key_id"].as_str().unwrap();
        let (s, v) = send(&app, "POST", &format!("/v1/keys/{id}/disable"), Some("{}")).await;
        assert_eq!(
            (s, v["policy_version"].as_u64()),
            (StatusCode::OK, Some(2)),
            "{v}"
        );
        let (s, v) = send(&app, "POST", "/v1/admin/stop", Some("{}")).await;
        assert_eq!(
            (s, v["stopped"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{v}"
        );
        let sign = r#"{"kind":"evm_transaction","payload":"0x02"}"#;
        let (s, v) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(sign)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["code"], "store_stopped");
        let (s, _) = send(&app, "POST", "/v1/admin/resume", Some("{}")).await;
        assert_eq!(s, StatusCode::OK);
        let (s, v) = send(&app, "POST", &format!("/v1/keys/{id}/sign"), Some(sign)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let seq = v["receipt"]["seq"].as_u64().unwrap();
        // The chain: boot, create, disable, stop, the refusal, resume, the signature.
        let (s, v) = send(&app, "GET", "/v1/audit?after=0&limit=1000", None).await;
        assert_eq!(s, StatusCode::OK);
        let records = v["records"].as_array().unwrap();
        assert_eq!(records.len() as u64, seq);
        assert_eq!(records.last().unwrap()["seq"].as_u64(), Some(seq));
        assert_eq!(v["documents"].as_object().unwrap().len(), 1);
        let (s, v) = send(&app, "GET", &format!("/v1/audit?after={seq}"), None).await;
        assert_eq!(
            (s, v["records"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(0))
        );
        for bad in [
            "/v1/audit?after=x",
            "/v1/audit?limit=0",
            "/v1/audit?limit=1001",
            "/v1/audit?from=1",
        ] {
            let (s, _) = send(&app, "GET", bad, None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
