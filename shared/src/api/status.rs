//! The answers that describe the enclave itself: `GET /v1/health` ([`Health`], no
//! token) and `GET /v1/attestation?nonce=HEX` ([`Attestation`]) (docs/openapi.json
//! `Health`, `Attestation`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Mode;

/// `"status"` of [`Health`]: always `"ok"` today.
///
/// Tolerant: any other string reads as [`HealthStatus::Other`] (and writes back as the
/// same string); no client decides on it (a 200 means the enclave serves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", from = "String")]
pub enum HealthStatus {
    /// `"ok"`.
    Ok,
    /// Any other string, kept as sent.
    #[serde(untagged)]
    Other(String),
}

impl From<String> for HealthStatus {
    fn from(text: String) -> Self {
        match text.as_str() {
            "ok" => Self::Ok,
            _ => Self::Other(text),
        }
    }
}

/// `"mode"` of [`Health`]: `"simulation"` or `"nitro"` (the enclave protocol's [`Mode`]
/// spells it otherwise).
///
/// Strict: any other value makes the answer unreadable, since `ekms nitro doctor`
/// decides on it (a Nitro host must not pass as simulation, nor the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthMode {
    /// `"simulation"`: simulated NSM and KMS emulator.
    Simulation,
    /// `"nitro"`: a real Nitro Enclave.
    Nitro,
}

impl HealthMode {
    /// The wire spelling, `"simulation"` or `"nitro"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simulation => "simulation",
            Self::Nitro => "nitro",
        }
    }
}

impl From<Mode> for HealthMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Simulation => Self::Simulation,
            Mode::Nitro => Self::Nitro,
        }
    }
}

/// `GET /v1/health` once the enclave serves (otherwise an error body with 503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` ([`HealthStatus`]).
    pub status: HealthStatus,
    /// `simulation` or `nitro` ([`HealthMode`]).
    pub mode: HealthMode,
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
            status: HealthStatus::Ok,
            mode: HealthMode::Simulation,
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
    fn spells_status_and_mode_as_the_wire_does() {
        for (mode, text) in [
            (HealthMode::Simulation, "simulation"),
            (HealthMode::Nitro, "nitro"),
        ] {
            assert_eq!(serde_json::to_value(mode).unwrap(), json!(text));
            assert_eq!(
                serde_json::from_value::<HealthMode>(json!(text)).unwrap(),
                mode
            );
            assert_eq!(mode.as_str(), text);
        }
        assert_eq!(HealthMode::from(Mode::Nitro), HealthMode::Nitro);
        assert_eq!(HealthMode::from(Mode::Simulation), HealthMode::Simulation);
        // An unknown status is kept; an unknown mode is refused.
        let newer = json!({"status": "degraded", "mode": "nitro", "pcrs": {}});
        let health = serde_json::from_value::<Health>(newer.clone()).unwrap();
        assert_eq!(health.status, HealthStatus::Other("degraded".into()));
        assert_eq!(serde_json::to_value(&health).unwrap(), newer);
        let err = serde_json::from_value::<Health>(json!({"status": "ok", "mode": "sgx",
                                                           "pcrs": {}}))
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant `sgx`"), "{err}");
        assert!(serde_json::from_value::<HealthStatus>(json!({"ok": null})).is_err());
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
