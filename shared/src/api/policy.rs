//! The answers of the routes that change what a key may do and of the audit chain:
//! proposals ([`Proposal`]), `PUT /v1/keys/{id}/policy` ([`PolicyVersion`]),
//! `disable`/`enable` ([`EnabledState`]), `POST /v1/admin/stop|resume` ([`StopState`])
//! and `GET /v1/audit` ([`AuditPage`]) (docs/openapi.json `Proposal`, `PolicyVersion`,
//! `EnabledState`, `StopState`, `AuditPage`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::owner::OwnerAction;

/// `POST /v1/keys/{id}/policy/proposal` and `POST /v1/keys/{id}/enable/proposal`: the
/// message an owner signs for a change (a convenience: the enclave rebuilds and checks
/// everything itself; `crate::owner::Authorization`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// `"set_policy"` or `"enable"` ([`OwnerAction`], snake_case). Strict: any other
    /// value makes the proposal unreadable, since it names what an owner would sign for.
    pub action: OwnerAction,
    /// The policy version the change creates.
    pub version: u64,
    /// Lower-case hex SHA-256 of `canonical_policy` (no `0x`).
    pub policy_sha256: String,
    /// The canonical JSON of the policy after the change.
    pub canonical_policy: String,
    /// When the authorization lapses: RFC 3339 UTC with seconds.
    pub expires_at: String,
    /// The exact UTF-8 text the owner signs.
    pub message: String,
}

/// `PUT /v1/keys/{id}/policy`: `{"policy_version"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The key's policy version after the change.
    pub policy_version: u64,
}

/// `POST /v1/keys/{id}/disable` and `…/enable`: `{"policy_version","enabled"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnabledState {
    /// The key's policy version after the change.
    pub policy_version: u64,
    /// Whether the key now signs (`false` after `disable`, `true` after `enable`).
    pub enabled: bool,
}

/// `POST /v1/admin/stop` and `…/resume`: `{"stopped"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopState {
    /// Whether the store-wide stop is now on.
    pub stopped: bool,
}

/// `GET /v1/audit?after=SEQ&limit=N`: one page of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The records after `after`, by `seq`, at most `limit`; empty past the end.
    pub records: Vec<AuditEntry>,
    /// For each audit key of the page (`0x` hex, 32 bytes): the base64 COSE_Sign1
    /// attestation document binding it.
    pub documents: BTreeMap<String, String>,
}

/// One signed record of an [`AuditPage`] (`crate::audit::SignedAuditRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The record's position in the chain (from 1).
    pub seq: u64,
    /// The record's canonical JSON, the exact bytes signed after
    /// `"ekms/v1/audit-record\n"`.
    pub record: String,
    /// The ed25519 signature by `audit_key`, `0x` hex (64 bytes).
    pub signature: String,
    /// The enclave's audit key (one per boot), `0x` hex (32 bytes).
    pub audit_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// `value` serializes to `want`, and `want` reads back as `value`.
    fn pins<T>(value: &T, want: Value)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_value(value).unwrap(), want);
        assert_eq!(&serde_json::from_value::<T>(want).unwrap(), value);
    }

    #[test]
    fn pins_policy_answers() {
        pins(
            &Proposal {
                action: OwnerAction::SetPolicy,
                version: 2,
                policy_sha256: "ab".into(),
                canonical_policy: r#"{"enabled":true}"#.into(),
                expires_at: "2030-01-01T00:00:00Z".into(),
                message: "m".into(),
            },
            json!({"action": "set_policy", "version": 2, "policy_sha256": "ab",
                   "canonical_policy": "{\"enabled\":true}",
                   "expires_at": "2030-01-01T00:00:00Z", "message": "m"}),
        );
        pins(
            &PolicyVersion { policy_version: 3 },
            json!({"policy_version": 3}),
        );
        pins(
            &EnabledState {
                policy_version: 3,
                enabled: false,
            },
            json!({"policy_version": 3, "enabled": false}),
        );
        pins(&StopState { stopped: true }, json!({"stopped": true}));
    }

    #[test]
    fn pins_an_audit_page() {
        let page = AuditPage {
            records: vec![AuditEntry {
                seq: 1,
                record: "{}".into(),
                signature: "0x01".into(),
                audit_key: "0x02".into(),
            }],
            documents: [("0x02".to_owned(), "AA==".to_owned())].into(),
        };
        pins(
            &page,
            json!({"records": [{"seq": 1, "record": "{}", "signature": "0x01", "audit_key": "0x02"}],
                   "documents": {"0x02": "AA=="}}),
        );
        pins(
            &AuditPage {
                records: Vec::new(),
                documents: BTreeMap::new(),
            },
            json!({"records": [], "documents": {}}),
        );
    }

    #[test]
    fn rejects_policy_answers_without_a_required_field() {
        assert!(
            serde_json::from_value::<Proposal>(json!({"action": "enable", "version": 2,
            "policy_sha256": "ab", "canonical_policy": "{}", "expires_at": "x"}))
            .is_err()
        );
        let err = serde_json::from_value::<Proposal>(json!({"action": "rotate", "version": 2,
            "policy_sha256": "ab", "canonical_policy": "{}", "expires_at": "x", "message": "m"}))
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `rotate`"),
            "{err}"
        );
        assert!(serde_json::from_value::<PolicyVersion>(json!({})).is_err());
        assert!(serde_json::from_value::<EnabledState>(json!({"policy_version": 1})).is_err());
        assert!(serde_json::from_value::<StopState>(json!({"stopped": "yes"})).is_err());
        assert!(serde_json::from_value::<AuditPage>(json!({"records": []})).is_err());
        assert!(
            serde_json::from_value::<AuditPage>(json!({"records": [{"seq": 1,
            "record": "{}", "signature": "0x01"}], "documents": {}}))
            .is_err()
        );
    }
}
