//! The API routes that change what a key may do (issue 7): owner-authorized policy
//! changes and their proposals, the emergency stop of one key and its re-enable, the
//! store-wide stop and resume, and the audit chain. The rules live in
//! [`crate::service::policy`]; this module parses and formats.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/keys/{id}/policy/proposal` | `{"policy", "expires_at"?}` | `{"action","version","policy_sha256","canonical_policy","expires_at","message"}` |
//! | `PUT /v1/keys/{id}/policy` | `{"policy", "version"?, "expires_at"?, "owner_signature"?}` | `{"policy_version"}` |
//! | `POST /v1/keys/{id}/disable` | `{}` | `{"policy_version","enabled":false}` |
//! | `POST /v1/keys/{id}/enable/proposal` | `{"expires_at"?}` | as the policy proposal |
//! | `POST /v1/keys/{id}/enable` | `{"version"?, "expires_at"?, "owner_signature"?}` | `{"policy_version","enabled":true}` |
//! | `POST /v1/admin/stop`, `POST /v1/admin/resume` | `{}` | `{"stopped":bool}` |
//! | `GET /v1/audit?after=SEQ&limit=N` | | `{"records":[{"seq","record","signature","audit_key"}],"documents":{"0x<key>":"<base64>"}}` |
//!
//! Scopes: proposals, `PUT …/policy` and `enable` need `policy:write`; `disable`,
//! `stop` and `resume` need `admin`; `GET /v1/audit` needs `keys:read`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::api;
use ekms_shared::owner::{parse_rfc3339, rfc3339};
use ekms_shared::{OwnerApproval, MAX_OWNER_SIGNATURE_LEN};
use serde::Deserialize;
use serde_json::Value;

use super::extract::{key_id, policy_json, query_limit, query_pairs, JsonBody};
use super::{ApiCode, ApiError, AppState};
use crate::auth::Caller;
use crate::format;
use crate::service::journal::MAX_AUDIT_PAGE;
use crate::service::policy::Proposal;

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
            ApiError::new(
                ApiCode::InvalidExpiresAt,
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
            ApiError::new(
                ApiCode::InvalidOwnerSignature,
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
        _ => Err(ApiError::new(
            ApiCode::InvalidOwnerAuthorization,
            "an owner authorization needs version, expires_at and owner_signature together",
        )),
    }
}

/// A proposal as the API shows it.
fn proposal_json(p: Proposal) -> Response {
    Json(api::Proposal {
        action: p.action,
        version: p.version,
        policy_sha256: hex::encode(p.policy_sha256),
        canonical_policy: p.canonical_policy,
        expires_at: rfc3339(p.expires_at),
        message: p.message,
    })
    .into_response()
}

/// `POST /v1/keys/{id}/policy/proposal`.
pub(crate) async fn propose_policy(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<ProposalBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let policy = policy_json(&body.policy)?;
    let expires_at = expiry(body.expires_at.as_deref())?;
    let proposal = state
        .service
        .propose_policy(&caller, &id, &policy, expires_at)
        .await?;
    Ok(proposal_json(proposal))
}

/// `POST /v1/keys/{id}/enable/proposal`.
pub(crate) async fn propose_enable(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<EnableProposalBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let expires_at = expiry(body.expires_at.as_deref())?;
    let proposal = state
        .service
        .propose_enable(&caller, &id, expires_at)
        .await?;
    Ok(proposal_json(proposal))
}

/// `PUT /v1/keys/{id}/policy`.
pub(crate) async fn set_policy(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<SetPolicyBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let policy = policy_json(&body.policy)?;
    let approval = approval(
        body.version,
        body.expires_at.as_deref(),
        body.owner_signature.as_deref(),
    )?;
    let version = state
        .service
        .set_policy(&caller, &id, policy, approval)
        .await?;
    Ok(Json(api::PolicyVersion {
        policy_version: version,
    })
    .into_response())
}

/// `POST /v1/keys/{id}/disable`: the emergency stop of one key (needs no owner).
pub(crate) async fn disable(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(_): JsonBody<EmptyBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let version = state.service.disable(&caller, &id).await?;
    Ok(Json(api::EnabledState {
        policy_version: version,
        enabled: false,
    })
    .into_response())
}

/// `POST /v1/keys/{id}/enable`.
pub(crate) async fn enable(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<EnableBody>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let approval = approval(
        body.version,
        body.expires_at.as_deref(),
        body.owner_signature.as_deref(),
    )?;
    let version = state.service.enable(&caller, &id, approval).await?;
    Ok(Json(api::EnabledState {
        policy_version: version,
        enabled: true,
    })
    .into_response())
}

/// `POST /v1/admin/stop`.
pub(crate) async fn stop(
    caller: Caller,
    state: State<AppState>,
    body: JsonBody<EmptyBody>,
) -> Result<Response, ApiError> {
    set_stop(caller, state, body, true).await
}

/// `POST /v1/admin/resume`.
pub(crate) async fn resume(
    caller: Caller,
    state: State<AppState>,
    body: JsonBody<EmptyBody>,
) -> Result<Response, ApiError> {
    set_stop(caller, state, body, false).await
}

async fn set_stop(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(_): JsonBody<EmptyBody>,
    stopped: bool,
) -> Result<Response, ApiError> {
    state.service.set_stop(&caller, stopped).await?;
    Ok(Json(api::StopState { stopped }).into_response())
}

/// `GET /v1/audit?after=SEQ&limit=N`.
pub(crate) async fn audit(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut after = 0u64;
    let mut limit = DEFAULT_AUDIT_PAGE;
    for (k, v) in query_pairs(query.as_deref(), &["after", "limit"])? {
        if k == "after" {
            after = v
                .parse()
                .map_err(|_| ApiError::new(ApiCode::InvalidQuery, "after must be a record seq"))?;
        } else {
            limit = query_limit(&v, MAX_AUDIT_PAGE)?;
        }
    }
    let page = state.service.audit(&caller, after, limit).await?;
    let documents = page
        .documents
        .into_iter()
        .map(|(k, d)| (format::to_0x_hex(&k), format::to_base64(&d)))
        .collect();
    let records = page
        .records
        .into_iter()
        .map(|r| api::AuditEntry {
            seq: r.seq,
            record: r.signed.record,
            signature: format::to_0x_hex(&r.signed.signature),
            audit_key: format::to_0x_hex(&r.signed.audit_key),
        })
        .collect();
    Ok(Json(api::AuditPage { records, documents }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::{app, create, send};
    use crate::testing::Harness;
    use axum::http::StatusCode;
    use ekms_shared::owner::{policy_sha256, Authorization, OwnerAction};

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
