//! Enclave image measurements as `nitro-cli` prints them, and the checks every consumer
//! of them needs (issue 9 items 3, 6 and 7).
//!
//! `nitro-cli build-enclave` prints `EnclaveBuildInfo` and `nitro-cli describe-eif`
//! prints `EifDescribeInfo`, which flattens the same struct (aws-nitro-enclaves-cli,
//! `src/common/json_output.rs`; `HashAlgorithm` is the `Debug` text of the hasher):
//!
//! ```json
//! {"Measurements": {"HashAlgorithm": "Sha384 { ... }",
//!                   "PCR0": "<96 hex>", "PCR1": "<96 hex>", "PCR2": "<96 hex>",
//!                   "PCR8": "<96 hex, signed images only>"}}
//! ```
//!
//! `describe-eif` adds `EifVersion`, `IsSigned`, ... beside `Measurements`; `nitro-cli
//! describe-enclaves` prints an array of enclaves, each with `Measurements`. All three
//! are accepted (an array must hold exactly one enclave).
//!
//! PCR values are kept as lowercase hex. A PCR0 of all zeros is refused: it is what a
//! debug-mode enclave reports (AWS Nitro Enclaves User Guide, "Attestation", debug
//! mode), and a key policy naming it would release data keys to any debug enclave.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::Error;

/// Length of a SHA-384 PCR value in hex digits.
pub const PCR_HEX_LEN: usize = 96;

/// The PCR indexes nitro-cli prints: 0 (image), 1 (kernel and boot ramfs), 2
/// (application), 8 (signing certificate, signed images only).
pub const MEASURED_PCRS: [u16; 4] = [0, 1, 2, 8];

/// The measurements of one enclave image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurements {
    /// PCR index → lowercase hex (PCR0, 1, 2 always; PCR8 for signed images).
    pcrs: BTreeMap<u16, String>,
}

impl Measurements {
    /// Parses nitro-cli's JSON (module docs).
    ///
    /// # Errors
    /// [`Error::Usage`] naming what is wrong: not JSON, no `Measurements`, a hash
    /// algorithm other than SHA-384, a missing or malformed PCR0/1/2, a malformed PCR8,
    /// an all-zero (debug-mode) PCR0.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |m: String| Error::Usage(format!("measurements: {m}"));
        let doc: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let doc = match doc {
            Value::Array(mut items) if items.len() == 1 => items.remove(0),
            Value::Array(items) => {
                return Err(bad(format!(
                    "describe-enclaves lists {} enclaves; give the measurements of one",
                    items.len()
                )))
            }
            other => other,
        };
        let m = doc
            .get("Measurements")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                bad(
                    "no \"Measurements\" object (nitro-cli build-enclave or describe-eif output)"
                        .into(),
                )
            })?;
        match m.get("HashAlgorithm").and_then(Value::as_str) {
            Some(a) if a.starts_with("Sha384") => {}
            other => {
                return Err(bad(format!(
                    "HashAlgorithm {other:?} is not nitro-cli's \"Sha384 {{ ... }}\""
                )))
            }
        }
        let mut pcrs = BTreeMap::new();
        for index in MEASURED_PCRS {
            let name = format!("PCR{index}");
            match m.get(&name) {
                Some(Value::String(v)) => {
                    pcrs.insert(
                        index,
                        check_pcr_hex(v).map_err(|e| bad(format!("{name}: {e}")))?,
                    );
                }
                Some(_) => return Err(bad(format!("{name} is not a string"))),
                None if index == 8 => {}
                None => return Err(bad(format!("{name} is missing"))),
            }
        }
        let measurements = Self { pcrs };
        if is_debug_pcr(measurements.pcr0()) {
            return Err(bad(
                "PCR0 is all zeros: that is a debug-mode enclave, whose attestation proves \
                 nothing about its image; never name it in a key policy"
                    .into(),
            ));
        }
        Ok(measurements)
    }

    /// An image known by its PCR0 only (the simulation, whose key policy names only
    /// PCR0).
    ///
    /// # Errors
    /// [`Error::Usage`] for a malformed or all-zero PCR0.
    pub fn from_pcr0(pcr0_hex: &str) -> Result<Self, Error> {
        let pcr0 = check_pcr_hex(pcr0_hex).map_err(|e| Error::Usage(format!("PCR0 {e}")))?;
        if is_debug_pcr(&pcr0) {
            return Err(Error::Usage("PCR0 is all zeros (debug mode)".into()));
        }
        Ok(Self {
            pcrs: BTreeMap::from([(0, pcr0)]),
        })
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read; see [`Measurements::parse`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Usage(m) => Error::Usage(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// PCR0, the image measurement (`kms:RecipientAttestation:ImageSha384`).
    pub fn pcr0(&self) -> &str {
        // Invariant: `parse` refuses measurements without PCR0.
        self.pcrs.get(&0).map_or("", String::as_str)
    }

    /// PCR `index`, if measured.
    pub fn pcr(&self, index: u16) -> Option<&str> {
        self.pcrs.get(&index).map(String::as_str)
    }

    /// Every measured PCR.
    pub fn pcrs(&self) -> &BTreeMap<u16, String> {
        &self.pcrs
    }
}

/// Checks a PCR value: 96 hex digits; returns it in lowercase.
///
/// # Errors
/// A description of what is wrong.
pub fn check_pcr_hex(value: &str) -> Result<String, String> {
    if value.len() != PCR_HEX_LEN || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "must be {PCR_HEX_LEN} hex digits (SHA-384), got {} characters",
            value.len()
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// Whether `pcr_hex` is all zeros (a debug-mode enclave's PCRs).
pub fn is_debug_pcr(pcr_hex: &str) -> bool {
    pcr_hex.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nitro-cli's output for `build-enclave` (shape and source: testdata/README.md).
    pub(crate) const BUILD_ENCLAVE: &str = include_str!("testdata/build-enclave.json");

    #[test]
    fn parses_build_enclave_describe_eif_and_describe_enclaves() {
        let m = Measurements::parse(BUILD_ENCLAVE).unwrap();
        assert_eq!(m.pcrs().len(), 3);
        assert!(m
            .pcr0()
            .starts_with("beb3b9bc9dd3e22f17927644cf53dae4192d563c"));
        assert_eq!(m.pcr(8), None);
        let eif = include_str!("testdata/describe-eif-signed.json");
        let signed = Measurements::parse(eif).unwrap();
        assert_eq!(signed.pcrs().len(), 4);
        assert!(signed.pcr(8).is_some());
        let described = format!("[{{\"EnclaveCID\": 16, \"Measurements\": {}}}]", {
            let v: Value = serde_json::from_str(BUILD_ENCLAVE).unwrap();
            v["Measurements"].to_string()
        });
        assert_eq!(Measurements::parse(&described).unwrap(), m);
    }

    #[test]
    fn rejects_debug_mode_and_malformed_measurements() {
        let zeros = "0".repeat(96);
        let debug =
            BUILD_ENCLAVE.replace(Measurements::parse(BUILD_ENCLAVE).unwrap().pcr0(), &zeros);
        let e = Measurements::parse(&debug).unwrap_err();
        assert!(e.to_string().contains("debug-mode"), "{e}");
        for bad in [
            "not json",
            "{}",
            "[]",
            r#"{"Measurements": {"HashAlgorithm": "Sha256 { ... }", "PCR0": "a"}}"#,
            &BUILD_ENCLAVE.replace("\"PCR1\"", "\"PCRx\""),
            &BUILD_ENCLAVE.replace("Sha384 { ... }", "Sha512 { ... }"),
            &BUILD_ENCLAVE.replace("beb3b9bc", "beb3b9b"),
            &BUILD_ENCLAVE.replace("beb3b9bc", "zzb3b9bc"),
        ] {
            assert!(Measurements::parse(bad).is_err(), "{bad}");
        }
    }
}
