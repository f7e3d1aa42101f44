//! Changes to a key's rights: `ekms policy propose|set`, `ekms keys enable|disable` and
//! the store-wide `ekms admin stop|resume`.
//!
//! For a key with an owner, a policy change and a re-enable need the owner's
//! signature over the canonical authorization message (`ekms_shared::owner`). With
//! `--owner-key-file` the CLI does it in one go: it asks the parent for a proposal,
//! **rebuilds the message itself** from what it knows (the key id it asked about, the
//! canonical policy it computed from the policy it sent, the expiry it chose) and the
//! version the parent proposes, refuses to sign unless the parent's message is exactly
//! that text, signs it locally, and sends the change. The parent never gets to choose
//! the words an owner signs. A disable needs no owner: it only removes rights.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use ekms_shared::owner::{
    parse_rfc3339, policy_sha256, rfc3339, Authorization, OwnerAction, MAX_EXPIRES_AT,
};
use ekms_signer::Policy;
use hyper::Method;
use serde_json::{json, Value};

use crate::args::check_key_id;
use crate::client::ApiClient;
use crate::owner::{OwnerKey, OwnerType};
use crate::Error;

/// Lifetime of an authorization the CLI signs when no `--expires-at` is given, in
/// seconds: long enough for the round trip, short enough that a withheld signature is
/// soon worthless.
pub const DEFAULT_AUTHORIZATION_TTL_SECS: u64 = 600;

/// Flags of `ekms policy propose`.
#[derive(Debug, Clone, Args)]
pub struct ProposeArgs {
    /// Key id.
    pub id: String,
    /// Policy: inline JSON object, a file holding one, or `-` for stdin.
    #[arg(long)]
    pub policy: String,
    /// Last moment the authorization is valid: RFC 3339 UTC
    /// (`2026-12-02T12:00:00Z`) or `+N[s|m|h|d]` from now [default: the parent's].
    #[arg(long)]
    pub expires_at: Option<String>,
}

/// The owner's local key, for the propose → sign → apply flow.
#[derive(Debug, Clone, Args)]
pub struct OwnerKeyArgs {
    /// Sign the owner authorization here with this key file (see `ekms owner`): asks
    /// for a proposal, checks it, signs it and applies the change.
    #[arg(long)]
    pub owner_key_file: Option<PathBuf>,
    /// Type of --owner-key-file [default: ed25519 for a Solana keypair file].
    #[arg(long, value_enum, requires = "owner_key_file")]
    pub owner_type: Option<OwnerType>,
}

/// Flags of `ekms policy set`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("policy_input").required(true).args(["policy", "policy_arg"])))]
pub struct SetArgs {
    /// Key id.
    pub id: String,
    /// The policy as a positional argument (same forms as --policy).
    #[arg(value_name = "POLICY")]
    pub policy_arg: Option<String>,
    /// Policy: inline JSON object, a file holding one, or `-` for stdin.
    #[arg(long)]
    pub policy: Option<String>,
    /// The policy version the owner signed for (from `ekms policy propose`).
    #[arg(long, conflicts_with = "owner_key_file")]
    pub version: Option<u64>,
    /// Expiry of the authorization: as signed with --owner-signature, or chosen for
    /// --owner-key-file [default there: 10 minutes from now]. RFC 3339 UTC or `+N[s|m|h|d]`.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// The owner's signature over the proposal's message (`ekms owner sign`).
    #[arg(long, requires_all = ["version", "expires_at"], conflicts_with = "owner_key_file")]
    pub owner_signature: Option<String>,
    /// Or sign here.
    #[command(flatten)]
    pub owner: OwnerKeyArgs,
}

/// Flags of `ekms keys enable`.
#[derive(Debug, Clone, Args)]
pub struct EnableArgs {
    /// Key id.
    pub id: String,
    /// The policy version the owner signed for (from the enable proposal).
    #[arg(long, conflicts_with = "owner_key_file")]
    pub version: Option<u64>,
    /// Expiry of the authorization (as for `ekms policy set`).
    #[arg(long)]
    pub expires_at: Option<String>,
    /// The owner's signature over the enable proposal's message.
    #[arg(long, requires_all = ["version", "expires_at"], conflicts_with = "owner_key_file")]
    pub owner_signature: Option<String>,
    /// Or sign here.
    #[command(flatten)]
    pub owner: OwnerKeyArgs,
}

/// `ekms admin …`: the store-wide emergency stop.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum AdminCommand {
    /// Stop all signing for every key (`POST /v1/admin/stop`).
    Stop,
    /// End the store-wide stop (`POST /v1/admin/resume`).
    Resume,
}

/// A proposal as `…/proposal` answers it (the one shape of `ekms_shared::api`).
pub use ekms_shared::api::Proposal;

/// Parses `--expires-at`: RFC 3339 UTC in `ekms_shared::owner::rfc3339`'s form, or
/// `+N` with an optional unit `s`, `m`, `h`, `d` counted from `now` (Unix seconds).
///
/// # Errors
/// [`Error::Usage`] for any other text, or a time after 9999-12-31.
pub fn parse_expires_at(text: &str, now: u64) -> Result<u64, Error> {
    let bad = || {
        Error::Usage(format!(
            "--expires-at {text:?}: expected RFC 3339 UTC like 2026-12-02T12:00:00Z, or +N[s|m|h|d]"
        ))
    };
    let secs = if let Some(rel) = text.strip_prefix('+') {
        let (digits, unit) = match rel.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&rel[..i], c),
            _ => (rel, 's'),
        };
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .and_then(|d| d.checked_add(now))
            .ok_or_else(bad)?
    } else {
        parse_rfc3339(text).ok_or_else(bad)?
    };
    if secs > MAX_EXPIRES_AT {
        return Err(bad());
    }
    Ok(secs)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The canonical JSON of a new policy, computed as the enclave does
/// (`Policy::parse_new`), so the hash the owner signs is one the CLI worked out.
///
/// # Errors
/// [`Error::Usage`] for a policy the enclave would refuse.
pub fn canonical_new_policy(policy: &Value) -> Result<String, Error> {
    let text =
        serde_json::to_string(policy).map_err(|e| Error::Usage(format!("the policy: {e}")))?;
    Policy::parse_new(&text)
        .map(|p| p.canonical_json())
        .map_err(|e| Error::Usage(format!("the policy: {e}")))
}

/// What the CLI knows of a change before it asks for a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    /// What is authorized.
    pub action: OwnerAction,
    /// The key asked about.
    pub key_id: &'a str,
    /// For a policy change, the canonical policy computed here; for an enable, `None`
    /// (the stored policy with `enabled: true`, which only the enclave knows).
    pub canonical_policy: Option<&'a str>,
    /// The expiry the CLI asked for.
    pub expires_at: u64,
}

/// Checks a proposal against what the CLI knows and rebuilds its authorization; the
/// caller signs [`Authorization::message`] of the result, never the parent's text.
///
/// # Errors
/// [`Error::BadResponse`] ("refusing to sign: …") if the canonical policy, its hash,
/// the expiry or the message differ from what the CLI computed, if the version is 0,
/// or (for an enable) if the policy is not canonical or not enabled.
pub fn check_proposal(
    proposal: &Proposal,
    expected: &Expected<'_>,
) -> Result<Authorization, Error> {
    let refuse = |why: String| Error::BadResponse(format!("refusing to sign: {why}"));
    match expected.canonical_policy {
        Some(mine) if mine != proposal.canonical_policy => {
            return Err(refuse(format!(
                "the proposal's canonical policy is not the policy sent (expected {mine}, got {})",
                proposal.canonical_policy
            )))
        }
        Some(_) => {}
        None => {
            let policy = Policy::parse(&proposal.canonical_policy)
                .map_err(|e| refuse(format!("the proposed policy does not parse: {e}")))?;
            if policy.canonical_json() != proposal.canonical_policy {
                return Err(refuse("the proposed policy is not canonical".into()));
            }
            if !policy.enabled() {
                return Err(refuse("the proposed policy is not enabled".into()));
            }
        }
    }
    let hash = policy_sha256(&proposal.canonical_policy);
    if proposal.policy_sha256 != hex::encode(hash) {
        return Err(refuse(
            "the proposal's policy_sha256 is not the SHA-256 of its canonical policy".into(),
        ));
    }
    if parse_rfc3339(&proposal.expires_at) != Some(expected.expires_at) {
        return Err(refuse(format!(
            "the proposal expires at {:?}, not at the {} asked for",
            proposal.expires_at,
            rfc3339(expected.expires_at)
        )));
    }
    if proposal.version == 0 {
        return Err(refuse("the proposal's version is 0".into()));
    }
    let authorization = Authorization {
        action: expected.action,
        key_id: expected.key_id.to_owned(),
        version: proposal.version,
        policy_sha256: hash,
        expires_at: expected.expires_at,
    };
    if authorization.message() != proposal.message {
        return Err(refuse(
            "the proposal's message is not the authorization rebuilt here".into(),
        ));
    }
    Ok(authorization)
}

async fn post(
    client: &ApiClient,
    method: Method,
    path: &str,
    body: &Value,
) -> Result<Value, Error> {
    Ok(client
        .request(method, path, Some(body))
        .await?
        .into_result()?)
}

fn parse_proposal(answer: Value) -> Result<Proposal, Error> {
    serde_json::from_value(answer)
        .map_err(|e| Error::BadResponse(format!("the proposal is not the API's shape: {e}")))
}

/// `ekms policy propose`: prints the parent's proposal (and the message to sign).
///
/// # Errors
/// Usage errors; the client's errors.
pub async fn propose(client: &ApiClient, args: &ProposeArgs) -> Result<Value, Error> {
    let id = check_key_id(&args.id)?;
    let mut body = json!({"policy": crate::input::load_json_object(&args.policy)?});
    if let Some(text) = &args.expires_at {
        body["expires_at"] = Value::String(rfc3339(parse_expires_at(text, now_secs())?));
    }
    post(
        client,
        Method::POST,
        &format!("/v1/keys/{id}/policy/proposal"),
        &body,
    )
    .await
}

/// `ekms policy set`: applies a policy, with an owner signature given or made here.
///
/// # Errors
/// Usage errors; the client's errors; [`check_proposal`]'s.
pub async fn set(client: &ApiClient, args: &SetArgs) -> Result<Value, Error> {
    let id = check_key_id(&args.id)?;
    let source = args
        .policy
        .as_deref()
        .or(args.policy_arg.as_deref())
        .ok_or_else(|| Error::Usage("give the policy (--policy)".into()))?;
    let policy = crate::input::load_json_object(source)?;
    let path = format!("/v1/keys/{id}/policy");
    let Some(key_file) = &args.owner.owner_key_file else {
        let mut body = json!({"policy": policy});
        add_approval(
            &mut body,
            args.version,
            args.expires_at.as_deref(),
            args.owner_signature.as_deref(),
        )?;
        return post(client, Method::PUT, &path, &body).await;
    };
    let canonical = canonical_new_policy(&policy)?;
    let key = OwnerKey::load(key_file, args.owner.owner_type)?;
    let expires_at = expiry(args.expires_at.as_deref())?;
    let proposal = parse_proposal(
        post(
            client,
            Method::POST,
            &format!("{path}/proposal"),
            &json!({"policy": policy, "expires_at": rfc3339(expires_at)}),
        )
        .await?,
    )?;
    let expected = Expected {
        action: OwnerAction::SetPolicy,
        key_id: id,
        canonical_policy: Some(&canonical),
        expires_at,
    };
    let (authorization, signature) = sign_checked(&key, &proposal, &expected)?;
    drop(key);
    let body = json!({
        "policy": policy,
        "version": authorization.version,
        "expires_at": rfc3339(expires_at),
        "owner_signature": signature,
    });
    let answer = post(client, Method::PUT, &path, &body).await?;
    Ok(with_authorization(answer, &authorization, &signature))
}

/// `ekms keys enable`: re-enables a disabled key, with an owner signature given or
/// made here.
///
/// # Errors
/// Usage errors; the client's errors; [`check_proposal`]'s.
pub async fn enable(client: &ApiClient, args: &EnableArgs) -> Result<Value, Error> {
    let id = check_key_id(&args.id)?;
    let path = format!("/v1/keys/{id}/enable");
    let Some(key_file) = &args.owner.owner_key_file else {
        let mut body = json!({});
        add_approval(
            &mut body,
            args.version,
            args.expires_at.as_deref(),
            args.owner_signature.as_deref(),
        )?;
        return post(client, Method::POST, &path, &body).await;
    };
    let key = OwnerKey::load(key_file, args.owner.owner_type)?;
    let expires_at = expiry(args.expires_at.as_deref())?;
    let proposal = parse_proposal(
        post(
            client,
            Method::POST,
            &format!("{path}/proposal"),
            &json!({"expires_at": rfc3339(expires_at)}),
        )
        .await?,
    )?;
    let expected = Expected {
        action: OwnerAction::Enable,
        key_id: id,
        canonical_policy: None,
        expires_at,
    };
    let (authorization, signature) = sign_checked(&key, &proposal, &expected)?;
    drop(key);
    let body = json!({
        "version": authorization.version,
        "expires_at": rfc3339(expires_at),
        "owner_signature": signature,
    });
    let answer = post(client, Method::POST, &path, &body).await?;
    let mut out = with_authorization(answer, &authorization, &signature);
    // What the owner just enabled: the stored rules, as the enclave will apply them.
    out["policy"] = Value::String(proposal.canonical_policy);
    Ok(out)
}

/// `ekms keys disable`.
///
/// # Errors
/// Usage errors; the client's errors.
pub async fn disable(client: &ApiClient, id: &str) -> Result<Value, Error> {
    let id = check_key_id(id)?;
    post(
        client,
        Method::POST,
        &format!("/v1/keys/{id}/disable"),
        &json!({}),
    )
    .await
}

/// `ekms admin stop|resume`.
///
/// # Errors
/// The client's errors.
pub async fn admin(client: &ApiClient, command: AdminCommand) -> Result<Value, Error> {
    let path = match command {
        AdminCommand::Stop => "/v1/admin/stop",
        AdminCommand::Resume => "/v1/admin/resume",
    };
    post(client, Method::POST, path, &json!({})).await
}

/// The expiry to sign for: `--expires-at`, or [`DEFAULT_AUTHORIZATION_TTL_SECS`] from
/// now; never in the past.
fn expiry(text: Option<&str>) -> Result<u64, Error> {
    let now = now_secs();
    let at = match text {
        Some(t) => parse_expires_at(t, now)?,
        None => now + DEFAULT_AUTHORIZATION_TTL_SECS,
    };
    if at <= now {
        return Err(Error::Usage(format!(
            "--expires-at {} is not in the future",
            rfc3339(at)
        )));
    }
    Ok(at)
}

/// Checks `proposal` and signs the authorization rebuilt from it.
fn sign_checked(
    key: &OwnerKey,
    proposal: &Proposal,
    expected: &Expected<'_>,
) -> Result<(Authorization, String), Error> {
    let authorization = check_proposal(proposal, expected)?;
    let signature = key.sign_text(authorization.message().as_bytes());
    Ok((authorization, signature))
}

/// Adds `version`, `expires_at` and `owner_signature` to a change request when given.
fn add_approval(
    body: &mut Value,
    version: Option<u64>,
    expires_at: Option<&str>,
    signature: Option<&str>,
) -> Result<(), Error> {
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    if let Some(t) = expires_at {
        body["expires_at"] = Value::String(rfc3339(parse_expires_at(t, now_secs())?));
    }
    if let Some(s) = signature {
        body["owner_signature"] = Value::String(s.to_owned());
    }
    Ok(())
}

fn with_authorization(mut answer: Value, authorization: &Authorization, signature: &str) -> Value {
    if answer.is_object() {
        answer["owner_authorization"] = json!({
            "version": authorization.version,
            "policy_sha256": hex::encode(authorization.policy_sha256),
            "expires_at": rfc3339(authorization.expires_at),
            "signature": signature,
        });
    }
    answer
}

#[cfg(test)]
mod tests;

/// After `POST /v1/keys`: checks that what the enclave recorded is what was asked for,
/// so a parent that swapped the owner or the initial policy is caught at once (issue 7
/// attack run): the answer's `owner` is the one sent, and the creation's audit record
/// (fetched by the answer's receipt, its ed25519 signature and hash checked) names this
/// key, `create_key`, and the SHA-256 of the canonical form of the policy sent. That
/// the record's audit key is the enclave's is `ekms audit verify`'s check. Adds
/// `"creation_checked": true` to the answer.
///
/// # Errors
/// [`Error::Verification`] naming what differs; [`Error::BadResponse`] for an audit
/// page that is not the API's shape.
pub async fn check_creation(
    client: &ApiClient,
    sent: &Value,
    mut created: Value,
) -> Result<Value, Error> {
    use ekms_shared::api::AuditPage;
    use ekms_shared::audit::{AuditAction, AuditRecord, SignedAuditRecord};
    let fail = |what: String| Error::Verification(format!("key creation: {what}"));
    let sent_owner = sent.get("owner").cloned().unwrap_or(Value::Null);
    let got_owner = created.get("owner").cloned().unwrap_or(Value::Null);
    let same_owner = match (&sent_owner, &got_owner) {
        (Value::Null, Value::Null) => true,
        (a, b) => {
            let parse = |v: &Value| {
                serde_json::from_value::<ekms_shared::owner::OwnerJson>(v.clone())
                    .ok()
                    .and_then(|j| ekms_shared::owner::Owner::from_json(&j).ok())
            };
            parse(a).is_some() && parse(a) == parse(b)
        }
    };
    if !same_owner {
        return Err(fail(format!(
            "the key's owner is {got_owner}, not {sent_owner}"
        )));
    }
    let policy_text = sent
        .get("policy")
        .map_or_else(|| r#"{"enabled":true}"#.to_owned(), Value::to_string);
    let canonical = Policy::parse_new(&policy_text)
        .map_err(|e| fail(format!("the policy sent does not parse here: {e}")))?
        .canonical_json();
    let expected_hash = hex::encode(ekms_shared::owner::policy_sha256(&canonical));
    let key_id = created["key_id"].as_str().unwrap_or_default().to_owned();
    let receipt = &created["receipt"];
    let seq = receipt["seq"]
        .as_u64()
        .ok_or_else(|| fail("the answer has no receipt".into()))?;
    let page = client
        .request(
            Method::GET,
            &format!("/v1/audit?after={}&limit=1", seq.saturating_sub(1)),
            None,
        )
        .await?
        .into_result()?;
    let page: AuditPage = serde_json::from_value(page)
        .map_err(|e| Error::BadResponse(format!("GET /v1/audit: {e}")))?;
    let row = page
        .records
        .into_iter()
        .next()
        .filter(|r| r.seq == seq)
        .ok_or_else(|| fail(format!("audit record {seq} is not in the chain")))?;
    let hex32 = |v: &str, n: usize| {
        v.strip_prefix("0x")
            .and_then(|t| hex::decode(t).ok())
            .filter(|b| b.len() == n)
    };
    let signed = SignedAuditRecord {
        signature: hex32(&row.signature, 64)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| fail("the record's signature is malformed".into()))?,
        audit_key: hex32(&row.audit_key, 32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| fail("the record's audit key is malformed".into()))?,
        record: row.record,
    };
    let record: AuditRecord = signed
        .verify()
        .map_err(|e| fail(format!("audit record {seq}: {e}")))?;
    if receipt["record_sha256"].as_str() != Some(hex::encode(signed.record_sha256()).as_str()) {
        return Err(fail(format!("audit record {seq} is not the receipt's")));
    }
    if record.action != AuditAction::CreateKey || record.key_id.as_deref() != Some(&key_id) {
        return Err(fail(format!(
            "audit record {seq} is not this key's creation"
        )));
    }
    if record.policy_sha256.as_deref() != Some(expected_hash.as_str()) {
        return Err(fail(format!(
            "the enclave recorded initial policy {:?}, not the SHA-256 {expected_hash} of the policy sent",
            record.policy_sha256
        )));
    }
    created["creation_checked"] = Value::Bool(true);
    Ok(created)
}
