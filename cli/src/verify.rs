//! `ekms attestation verify`: asks the parent for a fresh attestation document bound to
//! a nonce of ours, and verifies it here with `attestation::Verifier` (AWS's procedure:
//! chain to the pinned root at the current time, ES384 signature, freshness, PCRs,
//! nonce). The parent is untrusted, so nothing it says besides the document counts.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use attestation::{AttestationDoc, Verifier, VerifyOptions};
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};

use crate::args::{parse_nonce, parse_pcr, Root, VerifyArgs};
use crate::client::ApiClient;
use crate::Error;

/// Printed (stderr and JSON) whenever the simulation root was trusted.
pub const SIMULATION_WARNING: &str =
    "WARNING: simulation root: this document proves nothing about AWS Nitro hardware";

/// Bytes of the random nonce used when none is given.
pub const DEFAULT_NONCE_LEN: usize = 32;

/// The simulation root's PEM path: `--sim-root`, else `STATE_DIR/ca/root.pem`, else
/// `ca/root.pem` beside the socket (where `ekms sim` puts it).
pub fn sim_root_path(args: &VerifyArgs, socket: &Path) -> PathBuf {
    let ca_root = |dir: &Path| dir.join("ca").join(attestation::SIM_ROOT_PEM_FILE);
    if let Some(p) = &args.sim_root {
        p.clone()
    } else if let Some(dir) = &args.state_dir {
        ca_root(dir)
    } else {
        ca_root(socket.parent().unwrap_or_else(|| Path::new(".")))
    }
}

/// Builds the verifier for `args.root`.
///
/// # Errors
/// [`Error::Usage`] if the simulation root file cannot be read, [`Error::Attestation`]
/// if it is not one PEM certificate.
pub fn verifier(args: &VerifyArgs, socket: &Path) -> Result<Verifier, Error> {
    match args.root {
        Root::Aws => Ok(Verifier::aws_nitro()),
        Root::Simulation => {
            let path = sim_root_path(args, socket);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                Error::Usage(format!(
                    "cannot read the simulation root {}: {e}",
                    path.display()
                ))
            })?;
            Verifier::danger_trust_simulation_root_pem(&pem)
                .map_err(|e| Error::Attestation(format!("{}: {e}", path.display())))
        }
    }
}

/// Fetches a document for a fresh nonce and verifies it; returns the JSON to print.
///
/// # Errors
/// Usage errors for bad flags, the client's errors, [`Error::BadResponse`] for an answer
/// without a base64 `document`, [`Error::Attestation`] for a document that fails
/// verification.
pub async fn run(client: &ApiClient, args: &VerifyArgs) -> Result<Value, Error> {
    let nonce = match &args.nonce {
        Some(text) => parse_nonce(text)?,
        None => {
            let mut n = vec![0u8; DEFAULT_NONCE_LEN];
            getrandom::fill(&mut n).map_err(|e| Error::Sim(format!("no randomness: {e}")))?;
            n
        }
    };
    let expected_pcr0 = args.pcr0.as_deref().map(parse_pcr).transpose()?;
    let verifier = verifier(args, client.socket())?;
    let answer = client
        .request(
            Method::GET,
            &format!("/v1/attestation?nonce={}", hex::encode(&nonce)),
            None,
        )
        .await?
        .into_result()?;
    let document = answer
        .get("document")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadResponse("the answer has no \"document\" string".into()))?;
    let document = base64::engine::general_purpose::STANDARD
        .decode(document)
        .map_err(|e| Error::BadResponse(format!("\"document\" is not base64: {e}")))?;
    let mut opts = VerifyOptions::at(SystemTime::now());
    opts.max_age = Some(Duration::from_secs(args.max_age));
    opts.expected_nonce = Some(nonce);
    if let Some(pcr0) = expected_pcr0 {
        opts.expected_pcrs.insert(0, pcr0);
    }
    let doc = verifier
        .verify(&document, &opts)
        .map_err(|e| Error::Attestation(e.to_string()))?;
    Ok(report(&doc, verifier.trusts_simulation_root()))
}

/// The JSON printed for a verified document.
pub fn report(doc: &AttestationDoc, simulation: bool) -> Value {
    let pcrs: serde_json::Map<String, Value> = doc
        .pcrs
        .iter()
        .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
        .collect();
    let timestamp = i128::from(doc.timestamp)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    let mut out = json!({
        "verified": true,
        "root": if simulation { "simulation" } else { "aws-nitro-enclaves-root-g1" },
        "module_id": doc.module_id,
        "timestamp_ms": doc.timestamp,
        "timestamp": timestamp,
        "nonce": doc.nonce.as_ref().map(hex::encode),
        "pcrs": pcrs,
        "public_key": doc.public_key.as_ref().map(hex::encode),
    });
    if simulation {
        out["warning"] = Value::String(SIMULATION_WARNING.into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation::{AttestationRequest, NsmProvider as _, SimulatedCa, SimulatedNsm};
    use std::collections::BTreeMap;

    fn args(root: Root) -> VerifyArgs {
        VerifyArgs {
            nonce: None,
            root,
            sim_root: None,
            state_dir: None,
            max_age: 300,
            pcr0: None,
        }
    }

    #[test]
    fn sim_root_defaults_follow_flags_then_socket() {
        let socket = Path::new("/run/x/ekms.sock");
        let mut a = args(Root::Simulation);
        assert_eq!(sim_root_path(&a, socket), Path::new("/run/x/ca/root.pem"));
        a.state_dir = Some("/s".into());
        assert_eq!(sim_root_path(&a, socket), Path::new("/s/ca/root.pem"));
        a.sim_root = Some("/r.pem".into());
        assert_eq!(sim_root_path(&a, socket), Path::new("/r.pem"));
    }

    #[test]
    fn verifies_a_simulated_document_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = SimulatedCa::load_or_create(&dir.path().join("ca")).unwrap();
        let pcrs: BTreeMap<u16, Vec<u8>> = (0..3).map(|i| (i, vec![i as u8 + 1; 48])).collect();
        let nsm = SimulatedNsm::new(&ca, pcrs).unwrap();
        let doc = nsm
            .attestation_document(&AttestationRequest {
                user_data: None,
                nonce: Some(&[7; 32]),
                public_key: None,
            })
            .unwrap();
        let mut a = args(Root::Simulation);
        a.state_dir = Some(dir.path().to_path_buf());
        let v = verifier(&a, Path::new("/nonexistent/ekms.sock")).unwrap();
        assert!(v.trusts_simulation_root());
        let mut opts = VerifyOptions::at(SystemTime::now());
        opts.expected_nonce = Some(vec![7; 32]);
        let parsed = v.verify(&doc, &opts).unwrap();
        let out = report(&parsed, true);
        assert_eq!(out["root"], "simulation");
        assert_eq!(out["warning"], SIMULATION_WARNING);
        assert_eq!(out["pcrs"]["0"], hex::encode([1u8; 48]));
        assert_eq!(out["nonce"], hex::encode([7u8; 32]));
        assert!(out["timestamp"].as_str().unwrap().ends_with('Z'));
        // The AWS verifier refuses the same document.
        assert!(Verifier::aws_nitro().verify(&doc, &opts).is_err());
    }

    #[test]
    fn rejects_a_missing_or_bad_simulation_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(Root::Simulation);
        a.sim_root = Some(dir.path().join("none.pem"));
        assert!(matches!(
            verifier(&a, Path::new("/x")),
            Err(Error::Usage(_))
        ));
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a pem").unwrap();
        a.sim_root = Some(bad);
        assert!(matches!(
            verifier(&a, Path::new("/x")),
            Err(Error::Attestation(_))
        ));
    }

    #[test]
    fn aws_root_needs_no_file() {
        let v = verifier(&args(Root::Aws), Path::new("/nonexistent")).unwrap();
        assert!(!v.trusts_simulation_root());
    }
}
