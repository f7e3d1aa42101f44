//! Tests of the policy, enable/disable and admin commands: `--expires-at`, the
//! proposal check (every field the parent could change), and the propose → sign →
//! apply flows against a fake parent ([`crate::testutil::FakeApi`]).

use clap::Parser as _;
use ekms_shared::owner::Owner;

use super::*;
use crate::args::{Cli, Command, KeysCommand, PolicyCommand};
use crate::testutil::{FakeApi, Seen};

const KEY: &str = "0b9e3c4e-6f0a-4d2b-9a53-4a0d1b2c3d4e";
const EXPIRES: u64 = 1_796_212_800; // 2026-12-02T12:00:00Z

fn policy() -> Value {
    json!({
        "version": 1,
        "enabled": true,
        "evm": {
            "chain_ids": [8453, 1, 1],
            "allowed_destinations": ["0x000000000000000000000000000000000000dEaD"],
            "max_value_wei": "1000",
            "max_fee_wei": "2000"
        }
    })
}

/// The proposal an honest parent makes for `action` on `canonical`.
fn honest(
    action: OwnerAction,
    key_id: &str,
    canonical: &str,
    version: u64,
    expires: u64,
) -> Proposal {
    let authorization = Authorization {
        action,
        key_id: key_id.to_owned(),
        version,
        policy_sha256: policy_sha256(canonical),
        expires_at: expires,
    };
    Proposal {
        action,
        version,
        policy_sha256: hex::encode(authorization.policy_sha256),
        canonical_policy: canonical.to_owned(),
        expires_at: rfc3339(expires),
        message: authorization.message(),
    }
}

fn expected<'a>(canonical: Option<&'a str>, action: OwnerAction) -> Expected<'a> {
    Expected {
        action,
        key_id: KEY,
        canonical_policy: canonical,
        expires_at: EXPIRES,
    }
}

#[test]
fn parses_expires_at_absolute_and_relative() {
    assert_eq!(
        parse_expires_at("2026-12-02T12:00:00Z", 0).unwrap(),
        EXPIRES
    );
    assert_eq!(parse_expires_at("+90", 1000).unwrap(), 1090);
    assert_eq!(parse_expires_at("+10m", 1000).unwrap(), 1600);
    assert_eq!(parse_expires_at("+2h", 0).unwrap(), 7200);
    assert_eq!(parse_expires_at("+1d", 0).unwrap(), 86_400);
}

#[test]
fn rejects_other_expiry_forms() {
    for bad in [
        "",
        "+",
        "+m",
        "+10w",
        "+-5",
        "+1.5h",
        "2026-12-02T12:00:00+01:00",
        "2026-12-02",
        "tomorrow",
        "+99999999999999999999",
    ] {
        assert!(
            matches!(parse_expires_at(bad, 0), Err(Error::Usage(_))),
            "{bad}"
        );
    }
    assert!(parse_expires_at("+1d", MAX_EXPIRES_AT).is_err());
}

#[test]
fn computes_the_canonical_policy_as_the_enclave_does() {
    let canonical = canonical_new_policy(&policy()).unwrap();
    assert!(canonical.contains("\"chain_ids\":[1,8453]"), "{canonical}");
    assert!(canonical.contains("0x000000000000000000000000000000000000dead"));
    // A new policy must state its fee cap.
    let mut no_cap = policy();
    no_cap["evm"].as_object_mut().unwrap().remove("max_fee_wei");
    assert!(matches!(
        canonical_new_policy(&no_cap),
        Err(Error::Usage(_))
    ));
}

#[test]
fn accepts_an_honest_proposal_and_rebuilds_its_message() {
    let canonical = canonical_new_policy(&policy()).unwrap();
    let p = honest(OwnerAction::SetPolicy, KEY, &canonical, 4, EXPIRES);
    let a = check_proposal(&p, &expected(Some(&canonical), OwnerAction::SetPolicy)).unwrap();
    assert_eq!(a.version, 4);
    assert_eq!(a.message(), p.message);
    // An enable: the stored policy with enabled: true.
    let p = honest(OwnerAction::Enable, KEY, &canonical, 5, EXPIRES);
    let a = check_proposal(&p, &expected(None, OwnerAction::Enable)).unwrap();
    assert_eq!(a.action, OwnerAction::Enable);
}

#[test]
fn rejects_proposals_the_parent_bent() {
    let canonical = canonical_new_policy(&policy()).unwrap();
    let mine = expected(Some(&canonical), OwnerAction::SetPolicy);
    let good = honest(OwnerAction::SetPolicy, KEY, &canonical, 4, EXPIRES);
    let looser = canonical.replace(
        "\"max_value_wei\":\"1000\"",
        "\"max_value_wei\":\"1000000\"",
    );
    let cases = [
        // Another (looser) policy, consistently hashed and worded.
        (
            "canonical policy",
            honest(OwnerAction::SetPolicy, KEY, &looser, 4, EXPIRES),
        ),
        // The right policy, but the message names another key.
        (
            "message",
            Proposal {
                message: honest(OwnerAction::SetPolicy, "other-key", &canonical, 4, EXPIRES)
                    .message,
                ..good.clone()
            },
        ),
        // Another action in the message.
        (
            "message",
            Proposal {
                message: honest(OwnerAction::Enable, KEY, &canonical, 4, EXPIRES).message,
                ..good.clone()
            },
        ),
        // A later expiry than asked for.
        (
            "expires",
            honest(OwnerAction::SetPolicy, KEY, &canonical, 4, EXPIRES + 86_400),
        ),
        // A hash that is not the policy's.
        (
            "policy_sha256",
            Proposal {
                policy_sha256: hex::encode(policy_sha256(&looser)),
                ..good.clone()
            },
        ),
        // A message one byte longer (a trailing newline).
        (
            "message",
            Proposal {
                message: format!("{}\n", good.message),
                ..good.clone()
            },
        ),
        // The message of another version than the one proposed.
        (
            "message",
            Proposal {
                version: 5,
                ..good.clone()
            },
        ),
        (
            "version",
            honest(OwnerAction::SetPolicy, KEY, &canonical, 0, EXPIRES),
        ),
    ];
    for (what, proposal) in cases {
        let err = check_proposal(&proposal, &mine).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("refusing to sign") && text.contains(what),
            "{what}: {text}"
        );
    }
}

#[test]
fn rejects_enable_proposals_that_are_not_an_enabled_canonical_policy() {
    let canonical = canonical_new_policy(&policy()).unwrap();
    let disabled = canonical.replace("\"enabled\":true", "\"enabled\":false");
    assert_ne!(disabled, canonical);
    let spaced = canonical.replacen(':', ": ", 1);
    for (what, text) in [
        ("not enabled", &disabled),
        ("not canonical", &spaced),
        ("parse", &"{}".to_owned()),
    ] {
        let p = honest(OwnerAction::Enable, KEY, text, 5, EXPIRES);
        let err = check_proposal(&p, &expected(None, OwnerAction::Enable)).unwrap_err();
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
}

/// A Solana keypair file of seed `[n; 32]` in `dir`.
fn owner_key_file(dir: &tempfile::TempDir, n: u8) -> (PathBuf, Owner) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
    let numbers: Vec<String> = [n; 32]
        .iter()
        .chain(key.verifying_key().as_bytes())
        .map(u8::to_string)
        .collect();
    let path = dir.path().join("owner.json");
    std::fs::write(&path, format!("[{}]", numbers.join(","))).unwrap();
    let owner = Owner::Ed25519 {
        public_key: key.verifying_key().to_bytes(),
    };
    (path, owner)
}

/// A fake parent that proposes honestly (as version 7), or with `bend` applied.
fn parent(bend: fn(&mut Proposal)) -> FakeApi {
    FakeApi::start(move |req: &Seen| {
        let expires = req.body["expires_at"]
            .as_str()
            .and_then(parse_rfc3339)
            .unwrap_or(0);
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", p) if p.ends_with("/policy/proposal") => {
                let canonical = canonical_new_policy(&req.body["policy"]).unwrap();
                let mut proposal = honest(OwnerAction::SetPolicy, KEY, &canonical, 7, expires);
                bend(&mut proposal);
                (200, proposal_json(&proposal))
            }
            ("POST", p) if p.ends_with("/enable/proposal") => {
                let canonical = canonical_new_policy(&policy()).unwrap();
                let mut proposal = honest(OwnerAction::Enable, KEY, &canonical, 8, expires);
                bend(&mut proposal);
                (200, proposal_json(&proposal))
            }
            ("PUT", p) if p.ends_with("/policy") => (200, json!({"policy_version": 7})),
            ("POST", p) if p.ends_with("/enable") => {
                (200, json!({"policy_version": 8, "enabled": true}))
            }
            _ => (
                404,
                json!({"error": {"code": "not_found", "message": "no"}}),
            ),
        }
    })
}

fn proposal_json(p: &Proposal) -> Value {
    serde_json::to_value(p).unwrap()
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("ekms").chain(args.iter().copied())).unwrap()
}

#[tokio::test]
async fn policy_set_with_owner_key_proposes_signs_and_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, owner) = owner_key_file(&dir, 3);
    let api = parent(|_| {});
    let policy_text = policy().to_string();
    let c = cli(&[
        "policy",
        "set",
        KEY,
        "--policy",
        &policy_text,
        "--owner-key-file",
        key_file.to_str().unwrap(),
        "--expires-at",
        "+5m",
    ]);
    let Command::Policy(PolicyCommand::Set(args)) = c.command else {
        panic!("not policy set");
    };
    let out = set(&ApiClient::new(api.socket()), &args).await.unwrap();
    assert_eq!(out["policy_version"], 7);
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, format!("/v1/keys/{KEY}/policy/proposal"));
    let put = &seen[1];
    assert_eq!(
        (put.method.as_str(), put.path.as_str()),
        ("PUT", &*format!("/v1/keys/{KEY}/policy"))
    );
    assert_eq!(put.body["policy"], policy());
    assert_eq!(put.body["version"], 7);
    assert_eq!(put.body["expires_at"], seen[0].body["expires_at"]);
    // The signature is the owner's over the message the enclave will rebuild.
    let expires = parse_rfc3339(put.body["expires_at"].as_str().unwrap()).unwrap();
    let message = Authorization {
        action: OwnerAction::SetPolicy,
        key_id: KEY.into(),
        version: 7,
        policy_sha256: policy_sha256(&canonical_new_policy(&policy()).unwrap()),
        expires_at: expires,
    }
    .message();
    let signature = bs58::decode(put.body["owner_signature"].as_str().unwrap())
        .into_vec()
        .unwrap();
    assert!(owner.verifies(message.as_bytes(), &signature));
    assert_eq!(out["owner_authorization"]["version"], 7);
}

#[tokio::test]
async fn rejects_a_bent_proposal_without_signing_or_applying() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, _) = owner_key_file(&dir, 3);
    let api = parent(|p| p.message = p.message.replace("version: 7", "version: 70"));
    let policy_text = policy().to_string();
    let c = cli(&[
        "policy",
        "set",
        KEY,
        "--policy",
        &policy_text,
        "--owner-key-file",
        key_file.to_str().unwrap(),
    ]);
    let Command::Policy(PolicyCommand::Set(args)) = c.command else {
        panic!("not policy set");
    };
    let err = set(&ApiClient::new(api.socket()), &args).await.unwrap_err();
    assert!(err.to_string().contains("refusing to sign"), "{err}");
    assert_eq!(api.seen().len(), 1, "nothing may be applied");
}

#[tokio::test]
async fn keys_enable_with_owner_key_proposes_signs_and_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, owner) = owner_key_file(&dir, 5);
    let api = parent(|_| {});
    let c = cli(&[
        "keys",
        "enable",
        KEY,
        "--owner-key-file",
        key_file.to_str().unwrap(),
    ]);
    let Command::Keys(KeysCommand::Enable(args)) = c.command else {
        panic!("not keys enable");
    };
    let out = enable(&ApiClient::new(api.socket()), &args).await.unwrap();
    assert_eq!(out["enabled"], true);
    let seen = api.seen();
    assert_eq!(seen[0].path, format!("/v1/keys/{KEY}/enable/proposal"));
    let body = &seen[1].body;
    assert_eq!(body["version"], 8);
    let expires = parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    // The default expiry: ten minutes from now.
    let ahead = expires.saturating_sub(now_secs());
    assert!(
        (DEFAULT_AUTHORIZATION_TTL_SECS - 60..=DEFAULT_AUTHORIZATION_TTL_SECS).contains(&ahead)
    );
    let canonical = canonical_new_policy(&policy()).unwrap();
    let message = honest(OwnerAction::Enable, KEY, &canonical, 8, expires).message;
    let signature = bs58::decode(body["owner_signature"].as_str().unwrap())
        .into_vec()
        .unwrap();
    assert!(owner.verifies(message.as_bytes(), &signature));
    assert_eq!(out["policy"], canonical);
}

#[tokio::test]
async fn rejects_an_enable_proposal_for_a_disabled_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, _) = owner_key_file(&dir, 5);
    let api = parent(|p| {
        // Consistent in every field, but it would leave the key disabled.
        let text = p
            .canonical_policy
            .replace("\"enabled\":true", "\"enabled\":false");
        let expires = parse_rfc3339(&p.expires_at).unwrap();
        *p = honest(OwnerAction::Enable, KEY, &text, p.version, expires);
    });
    let c = cli(&[
        "keys",
        "enable",
        KEY,
        "--owner-key-file",
        key_file.to_str().unwrap(),
    ]);
    let Command::Keys(KeysCommand::Enable(args)) = c.command else {
        panic!("not keys enable");
    };
    let err = enable(&ApiClient::new(api.socket()), &args)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not enabled"), "{err}");
    assert_eq!(api.seen().len(), 1);
}

#[tokio::test]
async fn sends_given_signatures_disable_and_admin_as_documented() {
    let api = FakeApi::start(|_| (200, json!({"ok": true})));
    let client = ApiClient::new(api.socket());
    let policy_text = policy().to_string();
    let c = cli(&[
        "policy",
        "set",
        KEY,
        &policy_text,
        "--version",
        "3",
        "--expires-at",
        "2026-12-02T12:00:00Z",
        "--owner-signature",
        "0xabcd",
    ]);
    let Command::Policy(PolicyCommand::Set(args)) = c.command else {
        panic!("not policy set");
    };
    set(&client, &args).await.unwrap();
    let c = cli(&[
        "policy",
        "propose",
        KEY,
        "--policy",
        &policy_text,
        "--expires-at",
        "2026-12-02T12:00:00Z",
    ]);
    let Command::Policy(PolicyCommand::Propose(args)) = c.command else {
        panic!("not policy propose");
    };
    propose(&client, &args).await.unwrap();
    disable(&client, KEY).await.unwrap();
    let c = cli(&["keys", "enable", KEY]);
    let Command::Keys(KeysCommand::Enable(args)) = c.command else {
        panic!("not keys enable");
    };
    enable(&client, &args).await.unwrap();
    admin(&client, AdminCommand::Stop).await.unwrap();
    admin(&client, AdminCommand::Resume).await.unwrap();
    let seen: Vec<(String, String, Value)> = api
        .seen()
        .into_iter()
        .map(|s| (s.method, s.path, s.body))
        .collect();
    let k = |p: &str| format!("/v1/keys/{KEY}{p}");
    assert_eq!(
        seen,
        vec![
            (
                "PUT".into(),
                k("/policy"),
                json!({
                    "policy": policy(), "version": 3,
                    "expires_at": "2026-12-02T12:00:00Z", "owner_signature": "0xabcd",
                })
            ),
            (
                "POST".into(),
                k("/policy/proposal"),
                json!({
                    "policy": policy(), "expires_at": "2026-12-02T12:00:00Z",
                })
            ),
            ("POST".into(), k("/disable"), json!({})),
            ("POST".into(), k("/enable"), json!({})),
            ("POST".into(), "/v1/admin/stop".into(), json!({})),
            ("POST".into(), "/v1/admin/resume".into(), json!({})),
        ]
    );
}

#[test]
fn rejects_inconsistent_change_flags() {
    let parse =
        |args: &[&str]| Cli::try_parse_from(std::iter::once("ekms").chain(args.iter().copied()));
    // No policy, two policies, a signature without its version and expiry, a version
    // with a local key (the proposal decides it), a type without a key file.
    for args in [
        &["policy", "set", "k"][..],
        &["policy", "set", "k", "{}", "--policy", "{}"],
        &["policy", "set", "k", "{}", "--owner-signature", "0x00"],
        &[
            "policy",
            "set",
            "k",
            "{}",
            "--owner-signature",
            "0x00",
            "--version",
            "2",
        ],
        &[
            "policy",
            "set",
            "k",
            "{}",
            "--owner-key-file",
            "f",
            "--version",
            "2",
        ],
        &[
            "policy",
            "set",
            "k",
            "{}",
            "--owner-key-file",
            "f",
            "--owner-signature",
            "s",
            "--version",
            "2",
            "--expires-at",
            "+1m",
        ],
        &["policy", "set", "k", "{}", "--owner-type", "eip191"],
        &["policy", "propose", "k"],
        &["keys", "enable", "k", "--owner-signature", "0x00"],
        &[
            "keys",
            "create",
            "--algorithm",
            "ed25519",
            "--owner-eip191",
            "0x1",
            "--owner-ed25519",
            "x",
        ],
        &["admin", "halt"],
    ] {
        assert!(parse(args).is_err(), "{args:?}");
    }
    // The old positional form still works.
    assert!(parse(&["policy", "set", "k", "{}"]).is_ok());
    assert!(parse(&["keys", "disable", "k"]).is_ok());
}

#[tokio::test]
async fn rejects_bad_key_ids_and_past_expiry_before_any_request() {
    let api = FakeApi::start(|_| (200, json!({})));
    let client = ApiClient::new(api.socket());
    assert!(matches!(
        disable(&client, "../admin").await,
        Err(Error::Usage(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let (key_file, _) = owner_key_file(&dir, 3);
    let policy_text = policy().to_string();
    let c = cli(&[
        "policy",
        "set",
        KEY,
        "--policy",
        &policy_text,
        "--owner-key-file",
        key_file.to_str().unwrap(),
        "--expires-at",
        "2020-01-01T00:00:00Z",
    ]);
    let Command::Policy(PolicyCommand::Set(args)) = c.command else {
        panic!("not policy set");
    };
    assert!(matches!(set(&client, &args).await, Err(Error::Usage(_))));
    assert!(api.seen().is_empty());
}

/// A fake parent whose creation record names `recorded_policy` (canonical JSON) and
/// whose answer names `owner`.
fn creating_parent(recorded_policy: String, owner: Value) -> FakeApi {
    use ekms_shared::audit::{AuditAction, AuditDecision, AuditRecord, SignedAuditRecord};
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let record = SignedAuditRecord::sign(
        &key,
        &AuditRecord {
            seq: 2,
            time: 1,
            key_id: Some(KEY.into()),
            action: AuditAction::CreateKey,
            payload_kind: None,
            payload_sha256: None,
            policy_version: Some(1),
            policy_sha256: Some(hex::encode(ekms_shared::owner::policy_sha256(
                &recorded_policy,
            ))),
            decision: AuditDecision::Allowed,
            rule: None,
            prev_hash: "00".repeat(32),
        },
    );
    let receipt = ekms_shared::audit::Receipt::of(&record, 2);
    FakeApi::start(
        move |req: &Seen| match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/keys") => (
                201,
                json!({"key_id": KEY, "owner": owner.clone(), "receipt": receipt.clone()}),
            ),
            ("GET", p) if p.starts_with("/v1/audit?after=1") => (
                200,
                json!({"records": [{
                "seq": 2,
                "record": record.record.clone(),
                "signature": format!("0x{}", hex::encode(record.signature)),
                "audit_key": format!("0x{}", hex::encode(record.audit_key)),
            }], "documents": {}}),
            ),
            _ => (
                404,
                json!({"error": {"code": "not_found", "message": "no"}}),
            ),
        },
    )
}

#[tokio::test]
async fn checks_that_a_key_was_created_with_the_owner_and_policy_sent() {
    let owner = json!({"type": "eip191", "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"});
    let sent = json!({"algorithm": "secp256k1", "policy": policy(), "owner": owner});
    let canonical = canonical_new_policy(&policy()).unwrap();
    let api = creating_parent(canonical.clone(), owner.clone());
    let client = ApiClient::new(api.socket());
    let created = client
        .request(hyper::Method::POST, "/v1/keys", Some(&sent))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let checked = check_creation(&client, &sent, created).await.unwrap();
    assert_eq!(checked["creation_checked"], true);
}

#[tokio::test]
async fn rejects_a_creation_with_another_policy_or_owner() {
    let owner = json!({"type": "eip191", "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"});
    let sent = json!({"algorithm": "secp256k1", "policy": policy(), "owner": owner});
    // The parent created the key with a looser policy than the one sent.
    let looser = canonical_new_policy(
        &json!({"enabled": true, "evm": {"chain_ids": [1, 5], "max_fee_wei": "1"}}),
    )
    .unwrap();
    for (recorded, answered_owner) in [
        (looser, owner.clone()),
        (
            canonical_new_policy(&policy()).unwrap(),
            json!({"type": "eip191", "address": "0x000000000000000000000000000000000000dEaD"}),
        ),
    ] {
        let api = creating_parent(recorded, answered_owner);
        let client = ApiClient::new(api.socket());
        let created = client
            .request(hyper::Method::POST, "/v1/keys", Some(&sent))
            .await
            .unwrap()
            .into_result()
            .unwrap();
        let e = check_creation(&client, &sent, created).await.unwrap_err();
        assert!(matches!(e, Error::Verification(_)), "{e}");
    }
}
