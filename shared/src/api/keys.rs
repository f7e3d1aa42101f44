//! The answers of the key routes: `POST /v1/keys` ([`CreatedKey`], 201),
//! `GET /v1/keys?limit=N` ([`KeyList`]) and `GET /v1/keys/{key_id}` ([`KeyDetail`])
//! (docs/openapi.json `CreatedKey`, `KeyList`, `KeyListItem`, `Key`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::required_nullable;
use crate::audit::Receipt;
use crate::Algorithm;

/// A key's algorithm as the API spells it: `"secp256k1"` or `"ed25519"` (a JSON
/// string; the enclave protocol's [`Algorithm`] spells it otherwise).
///
/// Tolerant: any other string reads as [`KeyAlgorithm::Other`] (and writes back as
/// the same string), so that a key list from a newer parent with an algorithm this
/// build does not know still reads; no client here decides on the value. The parent
/// refuses `Other` in `POST /v1/keys` with 400 `unknown_algorithm`. Only a JSON
/// string reads (not serde's `{"ed25519":null}` enum form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", from = "String")]
pub enum KeyAlgorithm {
    /// `"secp256k1"`: ECDSA over secp256k1 (EVM).
    Secp256k1,
    /// `"ed25519"`: Ed25519 (Solana).
    Ed25519,
    /// Any other string, kept as sent.
    #[serde(untagged)]
    Other(String),
}

impl From<String> for KeyAlgorithm {
    fn from(text: String) -> Self {
        match text.as_str() {
            "secp256k1" => Self::Secp256k1,
            "ed25519" => Self::Ed25519,
            _ => Self::Other(text),
        }
    }
}

impl From<Algorithm> for KeyAlgorithm {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Secp256k1 => Self::Secp256k1,
            Algorithm::Ed25519 => Self::Ed25519,
        }
    }
}

/// Whether a key's policy caps its chain's fees (`"fee_cap"` of key answers):
/// `"set"` or `"none"`.
///
/// Tolerant: any other string reads as [`FeeCap::Other`] (and writes back as the same
/// string): the field is informational (the enclave evaluates the policy itself), so
/// an unknown value from a newer parent must not make a whole key answer unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", from = "String")]
pub enum FeeCap {
    /// `"set"`: the key's policy section states every fee cap a new policy must.
    Set,
    /// `"none"`: it lacks one (a policy stored before they were required).
    None,
    /// Any other string, kept as sent.
    #[serde(untagged)]
    Other(String),
}

impl From<String> for FeeCap {
    fn from(text: String) -> Self {
        match text.as_str() {
            "set" => Self::Set,
            "none" => Self::None,
            _ => Self::Other(text),
        }
    }
}

/// The columns every key answer starts with (flattened into each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFields {
    /// The key id: a canonical lower-case UUID v4.
    pub key_id: String,
    /// `secp256k1` or `ed25519` ([`KeyAlgorithm`]).
    pub algorithm: KeyAlgorithm,
    /// The caller's label (at most 256 bytes); `null` (never absent) without one.
    #[serde(deserialize_with = "required_nullable")]
    pub label: Option<String>,
    /// secp256k1: `0x` hex of the 33-byte compressed SEC1 point; ed25519: base58 of
    /// the 32 bytes.
    pub public_key: String,
    /// The EIP-55 address (secp256k1) or the base58 Solana address (ed25519).
    pub address: String,
    /// The version of the key's current policy (1 at creation).
    pub policy_version: u64,
    /// Creation time, RFC 3339 UTC to the millisecond.
    pub created_at: String,
}

/// The enclave's signed statement about a key (`crate::statement`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStatement {
    /// The statement's exact JSON text; the signed bytes are
    /// `"ekms/v1/key-statement\n"` followed by it.
    pub statement: String,
    /// The ed25519 signature by the identity key, `0x` hex (64 bytes).
    pub signature: String,
    /// The enclave's ed25519 identity key, `0x` hex (32 bytes).
    pub identity_key: String,
    /// Base64 COSE_Sign1 attestation document binding the identity key; absent (not
    /// `null`) in key lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_document: Option<String>,
}

/// 201 of `POST /v1/keys`: reported only once the sealed record is durably stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The key's columns.
    #[serde(flatten)]
    pub key: KeyFields,
    /// The owner as answered (free-form): `null` (never absent) without one, the JSON
    /// form (`{"type":"eip191","address"}` / `{"type":"ed25519","public_key"}`), or
    /// `{"type":"unknown"}`.
    #[serde(deserialize_with = "required_nullable")]
    pub owner: Option<Value>,
    /// The statement with its attestation document.
    pub statement: KeyStatement,
    /// The receipt of the `create_key` audit record; absent when none was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// One key of `GET /v1/keys`: no owner, no policy, the statement without its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyListItem {
    /// The key's columns.
    #[serde(flatten)]
    pub key: KeyFields,
    /// The statement, without `attestation_document`.
    pub statement: KeyStatement,
    /// `set` or `none` ([`FeeCap`]), present only when the policy has a section for the
    /// key's chain (whether it states every fee cap a new policy must). Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_cap: Option<FeeCap>,
}

/// `GET /v1/keys?limit=N`: `{"keys":[…]}`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// At most `limit` keys.
    pub keys: Vec<KeyListItem>,
}

/// `GET /v1/keys/{key_id}`: the key with its owner, full statement and policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDetail {
    /// The key's columns.
    #[serde(flatten)]
    pub key: KeyFields,
    /// The owner, as in [`CreatedKey::owner`]; `null` (never absent) without one.
    #[serde(deserialize_with = "required_nullable")]
    pub owner: Option<Value>,
    /// The statement with its attestation document.
    pub statement: KeyStatement,
    /// As in [`KeyListItem::fee_cap`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_cap: Option<FeeCap>,
    /// The stored policy document (docs/POLICY.md), free-form.
    pub policy: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(label: Option<&str>) -> KeyFields {
        KeyFields {
            key_id: "6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10".into(),
            algorithm: KeyAlgorithm::Secp256k1,
            label: label.map(str::to_owned),
            public_key: "0x02ab".into(),
            address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            policy_version: 1,
            created_at: "2026-12-02T12:00:00.123Z".into(),
        }
    }

    fn fields_json(label: Value) -> Value {
        json!({"key_id": "6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10", "algorithm": "secp256k1",
               "label": label, "public_key": "0x02ab",
               "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
               "policy_version": 1, "created_at": "2026-12-02T12:00:00.123Z"})
    }

    fn statement(document: bool) -> KeyStatement {
        KeyStatement {
            statement: "{}".into(),
            signature: "0x01".into(),
            identity_key: "0x02".into(),
            attestation_document: document.then(|| "AA==".into()),
        }
    }

    /// `value` serializes to `want`, and `want` reads back as `value`.
    fn pins<T>(value: &T, want: &Value)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(&serde_json::to_value(value).unwrap(), want);
        assert_eq!(&serde_json::from_value::<T>(want.clone()).unwrap(), value);
    }

    fn with(mut base: Value, extra: Value) -> Value {
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    }

    #[test]
    fn pins_a_created_key() {
        let created = CreatedKey {
            key: fields(None),
            owner: None,
            statement: statement(true),
            receipt: Some(Receipt {
                seq: 2,
                record_sha256: "ab".into(),
                signature: "0x03".into(),
            }),
        };
        let want = with(
            fields_json(Value::Null),
            json!({"owner": null,
                   "statement": {"statement": "{}", "signature": "0x01", "identity_key": "0x02",
                                 "attestation_document": "AA=="},
                   "receipt": {"seq": 2, "record_sha256": "ab", "signature": "0x03"}}),
        );
        pins(&created, &want);
        let bare = CreatedKey {
            receipt: None,
            owner: Some(json!({"type": "unknown"})),
            ..created
        };
        let mut want = want;
        want.as_object_mut().map(|m| m.remove("receipt"));
        want["owner"] = json!({"type": "unknown"});
        pins(&bare, &want);
    }

    #[test]
    fn pins_a_key_list_and_a_key() {
        let list = KeyList {
            keys: vec![KeyListItem {
                key: fields(Some("bot")),
                statement: statement(false),
                fee_cap: Some(FeeCap::Set),
            }],
        };
        let item = with(
            fields_json(json!("bot")),
            json!({"statement": {"statement": "{}", "signature": "0x01", "identity_key": "0x02"},
                   "fee_cap": "set"}),
        );
        pins(&list, &json!({ "keys": [item] }));
        let detail = KeyDetail {
            key: fields(Some("bot")),
            owner: Some(
                json!({"type": "ed25519", "public_key": "11111111111111111111111111111111"}),
            ),
            statement: statement(true),
            fee_cap: None,
            policy: json!({"enabled": true}),
        };
        let want = with(
            fields_json(json!("bot")),
            json!({"owner": {"type": "ed25519", "public_key": "11111111111111111111111111111111"},
                   "statement": {"statement": "{}", "signature": "0x01", "identity_key": "0x02",
                                 "attestation_document": "AA=="},
                   "policy": {"enabled": true}}),
        );
        pins(&detail, &want);
    }

    #[test]
    fn spells_algorithms_and_fee_caps_as_the_wire_does() {
        for (algorithm, text) in [
            (KeyAlgorithm::Secp256k1, "secp256k1"),
            (KeyAlgorithm::Ed25519, "ed25519"),
            (KeyAlgorithm::Other("p256".into()), "p256"),
        ] {
            pins(&algorithm, &json!(text));
        }
        for (algorithm, api) in [
            (Algorithm::Secp256k1, KeyAlgorithm::Secp256k1),
            (Algorithm::Ed25519, KeyAlgorithm::Ed25519),
        ] {
            assert_eq!(KeyAlgorithm::from(algorithm), api);
        }
        for (fee_cap, text) in [
            (FeeCap::Set, "set"),
            (FeeCap::None, "none"),
            (FeeCap::Other("partial".into()), "partial"),
        ] {
            pins(&fee_cap, &json!(text));
        }
        // Only a JSON string reads, not serde's other enum forms.
        for bad in [json!({"ed25519": null}), json!(1), json!(null)] {
            assert!(
                serde_json::from_value::<KeyAlgorithm>(bad.clone()).is_err(),
                "{bad}"
            );
            assert!(
                serde_json::from_value::<FeeCap>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_a_key_of_an_unknown_algorithm_with_an_unknown_fee_cap() {
        let mut item = with(
            fields_json(Value::Null),
            json!({"statement": {"statement": "{}", "signature": "0x01", "identity_key": "0x02"},
                   "fee_cap": "partial"}),
        );
        item["algorithm"] = json!("p256");
        let list = KeyList {
            keys: vec![KeyListItem {
                key: KeyFields {
                    algorithm: KeyAlgorithm::Other("p256".into()),
                    ..fields(None)
                },
                statement: statement(false),
                fee_cap: Some(FeeCap::Other("partial".into())),
            }],
        };
        pins(&list, &json!({ "keys": [item] }));
    }

    #[test]
    fn rejects_key_answers_without_a_required_field() {
        let created = with(
            fields_json(Value::Null),
            json!({"owner": null,
                   "statement": {"statement": "{}", "signature": "0x01", "identity_key": "0x02"}}),
        );
        assert!(serde_json::from_value::<CreatedKey>(created.clone()).is_ok());
        for field in ["owner", "label", "key_id", "statement", "policy_version"] {
            let mut v = created.clone();
            v.as_object_mut().map(|m| m.remove(field));
            assert!(serde_json::from_value::<CreatedKey>(v).is_err(), "{field}");
        }
        let mut no_signature = created.clone();
        no_signature["statement"]
            .as_object_mut()
            .map(|m| m.remove("signature"));
        assert!(serde_json::from_value::<CreatedKey>(no_signature).is_err());
        let mut detail = created;
        assert!(
            serde_json::from_value::<KeyDetail>(detail.clone()).is_err(),
            "no policy"
        );
        detail["policy"] = json!({"enabled": true});
        assert!(serde_json::from_value::<KeyDetail>(detail).is_ok());
        assert!(serde_json::from_value::<KeyList>(json!({})).is_err());
    }
}
