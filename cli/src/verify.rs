//! `ekms attestation verify`: asks the parent for a fresh attestation document bound to
//! a nonce of ours, and verifies it here with `attestation::Verifier` (AWS's procedure:
//! chain to the pinned root at the current time, ES384 signature, freshness, PCRs,
//! nonce). The parent is untrusted, so nothing it says besides the document counts.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use attestation::{AttestationDoc, Verifier, VerifyOptions};
use base64::Engine as _;
use ekms_shared::api::Attestation;
use ekms_shared::statement::SignedKeyStatement;
use hyper::Method;
use serde_json::{json, Value};

use crate::args::{parse_nonce, parse_pcr, KeyVerifyArgs, Root, RootArgs, VerifyArgs};
use crate::client::ApiClient;
use crate::Error;

/// Printed (stderr and JSON) whenever the simulation root was trusted.
pub const SIMULATION_WARNING: &str =
    "WARNING: simulation root: this document proves nothing about AWS Nitro hardware";

/// Bytes of the random nonce used when none is given.
pub const DEFAULT_NONCE_LEN: usize = 32;

/// The simulation root's PEM path: `--sim-root`, else `STATE_DIR/ca/root.pem`, else
/// `ca/root.pem` beside the socket (where `ekms sim` puts it).
pub fn sim_root_path(args: &RootArgs, socket: &Path) -> PathBuf {
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
pub fn verifier(args: &RootArgs, socket: &Path) -> Result<Verifier, Error> {
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

/// Refuses the AWS root without an expected PCR0: any AWS customer's enclave image
/// chains to it, so only this deployment's PCR0 makes a document (and `what` it
/// vouches for) this deployment's. The simulation root needs none.
///
/// # Errors
/// [`Error::Usage`] for `--root aws` without `--pcr0`.
pub fn require_pcr0_with_aws(
    verifier: &Verifier,
    expected_pcr0: Option<&[u8]>,
    what: &str,
) -> Result<(), Error> {
    if expected_pcr0.is_none() && !verifier.trusts_simulation_root() {
        return Err(Error::Usage(format!(
            "--root aws needs --pcr0: without it {what} signed by any Nitro enclave \
             (anyone's image) would verify"
        )));
    }
    Ok(())
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
    let mut expected = std::collections::BTreeMap::new();
    if let Some(pcr0) = args.pcr0.as_deref() {
        expected.insert(0u16, parse_pcr(pcr0)?);
    }
    if let Some(path) = &args.measurements {
        let m = crate::nitro::measurements::Measurements::load(path)?;
        for (index, value) in m.pcrs() {
            expected.insert(*index, parse_pcr(value)?);
        }
    }
    let verifier = verifier(&args.trust, client.socket())?;
    let answer = client
        .request(
            Method::GET,
            &format!("/v1/attestation?nonce={}", hex::encode(&nonce)),
            None,
        )
        .await?
        .into_result()?;
    let answer: Attestation = serde_json::from_value(answer)
        .map_err(|e| Error::BadResponse(format!("GET /v1/attestation: {e}")))?;
    let document = base64::engine::general_purpose::STANDARD
        .decode(answer.document)
        .map_err(|e| Error::BadResponse(format!("\"document\" is not base64: {e}")))?;
    let mut opts = VerifyOptions::at(SystemTime::now());
    opts.max_age = Some(Duration::from_secs(args.max_age));
    opts.expected_nonce = Some(nonce);
    opts.expected_pcrs.extend(expected);
    let doc = verifier
        .verify(&document, &opts)
        .map_err(|e| Error::Attestation(e.to_string()))?;
    Ok(report(&doc, verifier.trusts_simulation_root()))
}

/// `ekms keys verify`: fetches `GET /v1/keys/{id}` and checks it with
/// [`check_key_answer`] against `args`' root and PCR0.
///
/// # Errors
/// Usage errors for bad flags, the client's errors, and [`check_key_answer`]'s.
pub async fn run_key(client: &ApiClient, args: &KeyVerifyArgs) -> Result<Value, Error> {
    let expected_pcr0 = args.pcr0.as_deref().map(parse_pcr).transpose()?;
    let verifier = verifier(&args.trust, client.socket())?;
    let answer = client
        .request(Method::GET, &format!("/v1/keys/{}", args.id), None)
        .await?
        .into_result()?;
    check_key_answer(
        &answer,
        &args.id,
        &verifier,
        expected_pcr0,
        SystemTime::now(),
    )
}

/// Checks a `GET /v1/keys/{id}` answer without trusting the parent
/// (`ekms_shared::statement`): the attestation document verifies to `verifier`'s root
/// as of its own timestamp (not after `now`), with `expected_pcr0` if given; it binds
/// the identity key; the identity key's signature over the statement holds; and the
/// statement names `key_id` and the `algorithm`, `public_key` and `address` the answer
/// reports. Returns the JSON to print.
///
/// # Errors
/// [`Error::BadResponse`] for an answer without the statement fields;
/// [`Error::Attestation`] for any failed check.
pub fn check_key_answer(
    answer: &Value,
    key_id: &str,
    verifier: &Verifier,
    expected_pcr0: Option<Vec<u8>>,
    now: SystemTime,
) -> Result<Value, Error> {
    let text = |v: &Value, field: &str| -> Result<String, Error> {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::BadResponse(format!("the answer has no \"{field}\" string")))
    };
    let fixed = |field: &str, hex_text: &str, want: usize| -> Result<Vec<u8>, Error> {
        hex::decode(hex_text.strip_prefix("0x").unwrap_or(hex_text))
            .ok()
            .filter(|b| b.len() == want)
            .ok_or_else(|| Error::BadResponse(format!("\"{field}\" is not {want} hex bytes")))
    };
    let statement = answer
        .get("statement")
        .ok_or_else(|| Error::BadResponse("the answer has no \"statement\"".into()))?;
    let signature = fixed("signature", &text(statement, "signature")?, 64)?;
    let identity_key = fixed("identity_key", &text(statement, "identity_key")?, 32)?;
    let document = base64::engine::general_purpose::STANDARD
        .decode(text(statement, "attestation_document")?)
        .map_err(|e| Error::BadResponse(format!("\"attestation_document\" is not base64: {e}")))?;
    let signed = SignedKeyStatement {
        statement: text(statement, "statement")?,
        signature: signature
            .try_into()
            .map_err(|_| Error::BadResponse("signature length".into()))?,
        identity_key: identity_key
            .try_into()
            .map_err(|_| Error::BadResponse("identity key length".into()))?,
    };

    // Any AWS customer can run an enclave image of their own that binds an identity
    // key of their choosing and signs any statement with it: under the AWS root, only
    // the PCR0 of *this* deployment's image (which measures its pinned KMS key) makes a
    // statement the enclave's. Without it the check would pass on any address.
    require_pcr0_with_aws(verifier, expected_pcr0.as_deref(), "a statement")?;
    let mut opts = VerifyOptions::at(now);
    if let Some(pcr0) = expected_pcr0 {
        opts.expected_pcrs.insert(0, pcr0);
    }
    let doc = verifier
        .verify_at_its_time(&document, now, &opts)
        .map_err(|e| Error::Attestation(format!("identity document: {e}")))?;
    let stated = signed
        .verify(doc.user_data.as_deref())
        .map_err(|e| Error::Attestation(e.to_string()))?;
    if stated.key_id != key_id {
        return Err(Error::Attestation(format!(
            "asked for key {key_id:?}, the enclave's statement is about {:?}",
            stated.key_id
        )));
    }
    for (field, stated_value) in [
        ("key_id", &stated.key_id),
        ("algorithm", &stated.algorithm),
        ("public_key", &stated.public_key),
        ("address", &stated.address),
    ] {
        let reported = text(answer, field)?;
        if &reported != stated_value {
            return Err(Error::Attestation(format!(
                "the parent reports {field} {reported:?}, the enclave stated {stated_value:?}"
            )));
        }
    }
    let mut out = json!({
        "verified": true,
        "key_id": stated.key_id,
        "algorithm": stated.algorithm,
        "public_key": stated.public_key,
        "address": stated.address,
        "owner": stated.owner,
        "created_at_ms": stated.created_at,
        "identity_key": hex::encode(signed.identity_key),
        "enclave": report(&doc, verifier.trusts_simulation_root()),
    });
    if verifier.trusts_simulation_root() {
        out["warning"] = Value::String(SIMULATION_WARNING.into());
    }
    Ok(out)
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

    fn args(root: Root) -> RootArgs {
        RootArgs {
            root,
            sim_root: None,
            state_dir: None,
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

    /// A `GET /v1/keys/{id}` answer as the parent gives it: a statement signed by an
    /// identity key that a simulated document binds.
    fn key_answer(ca: &SimulatedCa, pcr0: u8) -> Value {
        use ekms_shared::statement::{
            identity_user_data, KeyStatement, SignedKeyStatement, STATEMENT_VERSION,
        };
        let pcrs: BTreeMap<u16, Vec<u8>> = (0..3).map(|i| (i, vec![pcr0; 48])).collect();
        let nsm = SimulatedNsm::new(ca, pcrs).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let identity = key.verifying_key().to_bytes();
        let doc = nsm
            .attestation_document(&AttestationRequest {
                user_data: Some(&identity_user_data(&identity)),
                nonce: None,
                public_key: None,
            })
            .unwrap();
        let statement = KeyStatement {
            statement_version: STATEMENT_VERSION,
            key_id: "k1".into(),
            algorithm: "secp256k1".into(),
            public_key: "0x02aa".into(),
            address: "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf".into(),
            owner: None,
            created_at: Some(5),
            issued_at: 5,
        };
        let signed = SignedKeyStatement::sign(&key, &statement);
        json!({
            "key_id": "k1",
            "algorithm": "secp256k1",
            "public_key": "0x02aa",
            "address": "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf",
            "statement": {
                "statement": signed.statement,
                "signature": format!("0x{}", hex::encode(signed.signature)),
                "identity_key": format!("0x{}", hex::encode(identity)),
                "attestation_document": base64::engine::general_purpose::STANDARD.encode(doc),
            }
        })
    }

    #[test]
    fn verifies_a_key_statement_end_to_end() {
        let ca = SimulatedCa::generate().unwrap();
        let v = Verifier::danger_trust_simulation_root(ca.root_der()).unwrap();
        let answer = key_answer(&ca, 7);
        let later = SystemTime::now() + Duration::from_secs(30 * 24 * 3600);
        let out = check_key_answer(&answer, "k1", &v, Some(vec![7; 48]), later).unwrap();
        assert_eq!(out["verified"], true);
        assert_eq!(out["address"], answer["address"]);
        assert_eq!(out["warning"], SIMULATION_WARNING);
    }

    #[test]
    fn rejects_tampered_or_misattributed_key_statements() {
        let ca = SimulatedCa::generate().unwrap();
        let v = Verifier::danger_trust_simulation_root(ca.root_der()).unwrap();
        let now = SystemTime::now();
        let good = key_answer(&ca, 7);
        let fails = |a: &Value, id: &str, pcr0: Option<Vec<u8>>, v: &Verifier| {
            assert!(
                matches!(
                    check_key_answer(a, id, v, pcr0, now),
                    Err(Error::Attestation(_))
                ),
                "{a}"
            );
        };
        // The parent reports another address than the enclave stated.
        let mut a = good.clone();
        a["address"] = json!("0x000000000000000000000000000000000000dEaD");
        fails(&a, "k1", None, &v);
        // ... and rewrites the statement to match: the signature breaks.
        let mut a = good.clone();
        let forged = a["statement"]["statement"].as_str().unwrap().replace(
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf",
            "0x000000000000000000000000000000000000dEaD",
        );
        a["statement"]["statement"] = json!(forged);
        a["address"] = json!("0x000000000000000000000000000000000000dEaD");
        fails(&a, "k1", None, &v);
        // Another key's statement, served for this key id.
        fails(&good, "k2", None, &v);
        // A wrong PCR0, and a document under another root.
        fails(&good, "k1", Some(vec![8; 48]), &v);
        fails(&good, "k1", Some(vec![7; 48]), &Verifier::aws_nitro());
        // A document binding another identity key.
        let mut a = good.clone();
        a["statement"]["attestation_document"] =
            key_answer(&ca, 7)["statement"]["attestation_document"].clone();
        let other = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        a["statement"]["identity_key"] = json!(hex::encode(other.verifying_key().to_bytes()));
        fails(&a, "k1", None, &v);
        // Under the AWS root a statement is only this deployment's with its PCR0.
        assert!(matches!(
            check_key_answer(&good, "k1", &Verifier::aws_nitro(), None, now),
            Err(Error::Usage(_))
        ));
        // Missing fields are a bad response, not a pass.
        let mut a = good.clone();
        a["statement"].as_object_mut().unwrap().remove("signature");
        assert!(matches!(
            check_key_answer(&a, "k1", &v, None, now),
            Err(Error::BadResponse(_))
        ));
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
