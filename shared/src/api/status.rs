//! The answers that describe the enclave itself: `GET /v1/health` ([`Health`], no
//! token) and `GET /v1/attestation?nonce=HEX` ([`Attestation`]) (docs/openapi.json
//! `Health`, `Attestation`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/health` once the enclave serves (otherwise an error body with 503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// `simulation` or `nitro`.
    pub mode: String,
    /// The enclave's PCRs by decimal index, lower-case hex without `0x` (48 bytes each
    /// on Nitro).
    pub pcrs: BTreeMap<String, String>,
}

/// `GET /v1/attestation`: a fresh attestation document with the caller's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The COSE_Sign1 attestation document, base64 (standard alphabet, padded).
    pub document: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pins_health_and_attestation() {
        let health = Health {
            status: "ok".into(),
            mode: "simulation".into(),
            pcrs: [("0".to_owned(), "00ff".to_owned())].into(),
        };
        let want = json!({"status": "ok", "mode": "simulation", "pcrs": {"0": "00ff"}});
        assert_eq!(serde_json::to_value(&health).unwrap(), want);
        assert_eq!(serde_json::from_value::<Health>(want).unwrap(), health);
        let doc = Attestation {
            document: "AA==".into(),
        };
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"document":"AA=="}"#
        );
        assert_eq!(
            serde_json::from_str::<Attestation>(r#"{"document":"AA=="}"#).unwrap(),
            doc
        );
    }

    #[test]
    fn rejects_status_answers_without_a_required_field() {
        assert!(
            serde_json::from_value::<Health>(json!({"status": "ok", "mode": "nitro"})).is_err()
        );
        assert!(serde_json::from_value::<Attestation>(json!({})).is_err());
        assert!(serde_json::from_value::<Attestation>(json!({"document": 1})).is_err());
    }
}
