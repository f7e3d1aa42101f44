//! The answers of the token routes (`admin` scope): `POST /v1/tokens`
//! ([`CreatedToken`], 201), `GET /v1/tokens` ([`TokenList`]) and
//! `DELETE /v1/tokens/{token_id}` ([`RevokedToken`]) (docs/openapi.json `NewToken`,
//! `TokenInfo`, `TokenList`, `RevokedToken`).

use serde::{Deserialize, Serialize};

use super::required_nullable;

/// A stored token as listed: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token id: 32 lower-case hex digits (not secret).
    pub token_id: String,
    /// The caller's name for it (1 to 64 bytes).
    pub name: String,
    /// Its scopes (`sign`, `keys:create`, `keys:read`, `policy:write`, `admin`).
    pub scopes: Vec<String>,
    /// The keys a `sign` token is limited to; `null` (never absent) for every key.
    #[serde(deserialize_with = "required_nullable")]
    pub key_ids: Option<Vec<String>>,
    /// Creation time, RFC 3339 UTC to the millisecond.
    pub created_at: String,
    /// Expiry, RFC 3339 UTC to the millisecond; `null` (never absent) for none.
    #[serde(deserialize_with = "required_nullable")]
    pub expires_at: Option<String>,
}

/// 201 of `POST /v1/tokens`: the only answer that shows the token. Its `Debug` leaves
/// the token out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token's columns.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token, `ekms_` + 43 base64url characters; stored only as its SHA-256.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/tokens`: `{"tokens":[…]}`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    /// Every stored token.
    pub tokens: Vec<TokenInfo>,
}

/// `DELETE /v1/tokens/{token_id}`: `{"token_id","revoked":true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The revoked token's id.
    pub token_id: String,
    /// Always `true`.
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn info(limited: bool) -> TokenInfo {
        TokenInfo {
            token_id: ID.into(),
            name: "bot".into(),
            scopes: vec!["sign".into()],
            key_ids: limited.then(|| vec!["6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10".into()]),
            created_at: "2026-12-02T12:00:00.000Z".into(),
            expires_at: limited.then(|| "2999-01-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn pins_token_answers() {
        let created = CreatedToken {
            info: info(true),
            token: "ekms_secret".into(),
        };
        let want = json!({"token_id": ID, "name": "bot", "scopes": ["sign"],
                          "key_ids": ["6b3c1e4e-6a43-4bb4-9d7e-2f0a3c1a9b10"],
                          "created_at": "2026-12-02T12:00:00.000Z",
                          "expires_at": "2999-01-01T00:00:00Z", "token": "ekms_secret"});
        assert_eq!(serde_json::to_value(&created).unwrap(), want);
        assert_eq!(
            serde_json::from_value::<CreatedToken>(want).unwrap(),
            created
        );
        assert!(!format!("{created:?}").contains("ekms_secret"));

        let list = TokenList {
            tokens: vec![info(false)],
        };
        let want = json!({"tokens": [{"token_id": ID, "name": "bot", "scopes": ["sign"],
                                      "key_ids": null, "created_at": "2026-12-02T12:00:00.000Z",
                                      "expires_at": null}]});
        assert_eq!(serde_json::to_value(&list).unwrap(), want);
        assert_eq!(serde_json::from_value::<TokenList>(want).unwrap(), list);

        let revoked = RevokedToken {
            token_id: ID.into(),
            revoked: true,
        };
        assert_eq!(
            serde_json::to_string(&revoked).unwrap(),
            format!(r#"{{"token_id":"{ID}","revoked":true}}"#)
        );
        assert_eq!(
            serde_json::from_str::<RevokedToken>(&format!(
                r#"{{"token_id":"{ID}","revoked":true}}"#
            ))
            .unwrap(),
            revoked
        );
    }

    #[test]
    fn rejects_token_answers_without_a_required_field() {
        let full = serde_json::to_value(CreatedToken {
            info: info(false),
            token: "ekms_x".into(),
        })
        .unwrap();
        for field in ["token", "key_ids", "expires_at", "scopes", "token_id"] {
            let mut v: Value = full.clone();
            v.as_object_mut().map(|m| m.remove(field));
            assert!(
                serde_json::from_value::<CreatedToken>(v).is_err(),
                "{field}"
            );
        }
        assert!(serde_json::from_value::<RevokedToken>(json!({"token_id": ID})).is_err());
        assert!(serde_json::from_value::<TokenList>(json!({})).is_err());
    }
}
