//! Tests of `ekms audit verify` above the pure chain checks ([`super::chain`] has
//! those): document binding with simulated attestation documents, receipts files, and
//! the whole command against a fake parent serving pages on a Unix socket.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use attestation::{AttestationRequest, NsmProvider as _, SimulatedCa, SimulatedNsm};
use ekms_shared::audit::{AuditAction, AuditDecision, AuditRecord, GENESIS_HASH};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;

use super::*;
use crate::args::Root;

fn audit_key(n: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[n; 32])
}

/// A simulated document whose `user_data` is `user_data`, from an enclave whose PCRs
/// are all `pcr`.
fn document(ca: &SimulatedCa, pcr: u8, user_data: &[u8]) -> String {
    let pcrs: BTreeMap<u16, Vec<u8>> = (0..3).map(|i| (i, vec![pcr; 48])).collect();
    let nsm = SimulatedNsm::new(ca, pcrs).unwrap();
    let doc = nsm
        .attestation_document(&AttestationRequest {
            user_data: Some(user_data),
            nonce: None,
            public_key: None,
        })
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(doc)
}

fn binding_doc(ca: &SimulatedCa, pcr: u8, key: u8) -> String {
    document(
        ca,
        pcr,
        &audit_user_data(&audit_key(key).verifying_key().to_bytes()),
    )
}

#[test]
fn binds_a_key_its_document_names() {
    let ca = SimulatedCa::generate().unwrap();
    let v = Verifier::danger_trust_simulation_root(ca.root_der()).unwrap();
    let key = audit_key(1).verifying_key().to_bytes();
    let doc = binding_doc(&ca, 7, 1);
    // Days later (the leaf certificate has expired): verified at the document's time.
    let later = SystemTime::now() + Duration::from_secs(10 * 24 * 3600);
    let bound = bind_key(&v, &key, &doc, Some(&[7; 48]), later).unwrap();
    assert_eq!(bound.pcr0, Some(hex::encode([7u8; 48])));
    assert!(bind_key(&v, &key, &doc, None, later).is_ok());
}

#[test]
fn rejects_documents_that_do_not_bind_the_key() {
    let ca = SimulatedCa::generate().unwrap();
    let v = Verifier::danger_trust_simulation_root(ca.root_der()).unwrap();
    let now = SystemTime::now();
    let key = audit_key(1).verifying_key().to_bytes();
    // Another key's document.
    let other = binding_doc(&ca, 7, 2);
    let err = bind_key(&v, &key, &other, None, now).unwrap_err();
    assert!(err.contains("user_data"), "{err}");
    // The key's raw bytes instead of the domain-separated hash.
    let raw = document(&ca, 7, &key);
    assert!(bind_key(&v, &key, &raw, None, now).is_err());
    // Another enclave image.
    let doc = binding_doc(&ca, 7, 1);
    let err = bind_key(&v, &key, &doc, Some(&[8; 48]), now).unwrap_err();
    assert!(err.contains("rejected"), "{err}");
    // Another root, and not base64.
    let other_ca = SimulatedCa::generate().unwrap();
    let other_root = Verifier::danger_trust_simulation_root(other_ca.root_der()).unwrap();
    assert!(bind_key(&other_root, &key, &doc, None, now).is_err());
    assert!(bind_key(&Verifier::aws_nitro(), &key, &doc, Some(&[7; 48]), now).is_err());
    assert!(bind_key(&v, &key, "%%%", None, now).is_err());
    // A document from the future.
    let past = now - Duration::from_secs(3600);
    assert!(bind_key(&v, &key, &doc, None, past).is_err());
}

#[test]
fn parses_receipts_as_array_lines_or_saved_answers() {
    let key = audit_key(1);
    let record = AuditRecord {
        seq: 1,
        time: 1,
        key_id: None,
        action: AuditAction::Boot,
        payload_kind: None,
        payload_sha256: None,
        policy_version: None,
        policy_sha256: None,
        decision: AuditDecision::Allowed,
        rule: None,
        prev_hash: hex::encode(GENESIS_HASH),
    };
    let signed = SignedAuditRecord::sign(&key, &record);
    let r = serde_json::to_string(&Receipt::of(&signed, 1)).unwrap();
    let want = ReceiptCheck {
        seq: 1,
        record_sha256: signed.record_sha256(),
        signature: signed.signature,
    };
    assert_eq!(
        parse_receipts(&format!("[{r}, {r}]")).unwrap(),
        vec![want; 2]
    );
    let answer = format!(r#"{{"signature":"0x00","receipt":{r}}}"#);
    assert_eq!(
        parse_receipts(&format!("{r}\n\n{answer}\n")).unwrap(),
        vec![want; 2]
    );
    // Pretty-printed answers appended one after another (`ekms sign … >> FILE`).
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&answer).unwrap()).unwrap();
    assert_eq!(
        parse_receipts(&format!("{pretty}\n{pretty}\n")).unwrap(),
        vec![want; 2]
    );
    assert_eq!(parse_receipts("").unwrap(), vec![]);
}

#[test]
fn rejects_malformed_receipts_files() {
    for bad in [
        "[",
        "{\"seq\":1}",
        "[{\"seq\":1,\"record_sha256\":\"00\",\"signature\":\"0x00\"}]",
        "not json",
        "[1, 2]",
    ] {
        assert!(parse_receipts(bad).is_err(), "{bad}");
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_receipts(&dir.path().join("none.json")),
        Err(Error::Usage(_))
    ));
}

#[test]
fn rejects_malformed_rows_at_their_seq() {
    let row = AuditEntry {
        seq: 4,
        record: "{}".into(),
        signature: format!("0x{}", "00".repeat(64)),
        audit_key: "00".repeat(32),
    };
    let err = decode_row(&row).unwrap_err();
    assert!(err.starts_with("record 4: audit_key"), "{err}");
    let row = AuditEntry {
        signature: "0x00".into(),
        audit_key: format!("0x{}", "00".repeat(32)),
        ..row
    };
    assert!(decode_row(&row).unwrap_err().contains("signature"));
}

/// The rows of a chain of `n` records under audit key 1 (a boot, then signatures).
fn rows(n: u64) -> Vec<Value> {
    let key = audit_key(1);
    let mut prev = GENESIS_HASH;
    (1..=n)
        .map(|seq| {
            let action = if seq == 1 {
                AuditAction::Boot
            } else {
                AuditAction::Sign
            };
            let record = AuditRecord {
                seq,
                time: seq,
                key_id: None,
                action,
                payload_kind: None,
                payload_sha256: None,
                policy_version: None,
                policy_sha256: None,
                decision: AuditDecision::Allowed,
                rule: None,
                prev_hash: hex::encode(prev),
            };
            let signed = SignedAuditRecord::sign(&key, &record);
            prev = signed.record_sha256();
            json!({
                "seq": seq,
                "record": signed.record,
                "signature": format!("0x{}", hex::encode(signed.signature)),
                "audit_key": format!("0x{}", hex::encode(signed.audit_key)),
            })
        })
        .collect()
}

/// A fake parent: answers `GET /v1/audit?after=A&limit=L` from `rows`, `page` at a
/// time, with `doc` for audit key 1 on every non-empty page.
async fn serve(listener: UnixListener, rows: Vec<Value>, page: usize, doc: String) {
    let key = format!("0x{}", hex::encode(audit_key(1).verifying_key().to_bytes()));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let after: usize = head
            .split("after=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        let chunk: Vec<Value> = rows.iter().skip(after).take(page).cloned().collect();
        let documents = if chunk.is_empty() {
            json!({})
        } else {
            json!({ key.clone(): doc.clone() })
        };
        let body = json!({"records": chunk, "documents": documents}).to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
    }
}

fn verify_args(dir: &tempfile::TempDir, receipts: Option<PathBuf>) -> AuditVerifyArgs {
    AuditVerifyArgs {
        trust: RootArgs {
            root: Root::Simulation,
            sim_root: None,
            state_dir: Some(dir.path().to_path_buf()),
        },
        pcr0: Some(hex::encode([7u8; 48])),
        receipts,
    }
}

#[tokio::test]
async fn verifies_a_served_chain_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let ca = SimulatedCa::load_or_create(&dir.path().join("ca")).unwrap();
    let socket = dir.path().join("ekms.sock");
    let rows = rows(5);
    let receipt = json!({
        "seq": 5,
        "record_sha256": hex::encode(sha2::Sha256::digest(rows[4]["record"].as_str().unwrap())),
        "signature": rows[4]["signature"],
    });
    let receipts = dir.path().join("receipts.jsonl");
    std::fs::write(&receipts, format!("{receipt}\n")).unwrap();
    tokio::spawn(serve(
        UnixListener::bind(&socket).unwrap(),
        rows,
        2,
        binding_doc(&ca, 7, 1),
    ));
    let out = run(&ApiClient::new(&socket), &verify_args(&dir, Some(receipts)))
        .await
        .unwrap();
    assert_eq!(out["verified"], true);
    assert_eq!(out["records"], 5);
    assert_eq!(out["boots"], 1);
    assert_eq!(out["receipts_checked"], 1);
    assert_eq!(out["audit_keys"][0]["records"], 5);
    assert_eq!(out["root"], "simulation");
    assert_eq!(out["warning"], SIMULATION_WARNING);
}

#[tokio::test]
async fn rejects_a_served_chain_with_a_gap_with_exit_status_3() {
    let dir = tempfile::tempdir().unwrap();
    let ca = SimulatedCa::load_or_create(&dir.path().join("ca")).unwrap();
    let socket = dir.path().join("ekms.sock");
    let mut rows = rows(6);
    rows.remove(3);
    tokio::spawn(serve(
        UnixListener::bind(&socket).unwrap(),
        rows,
        1000,
        binding_doc(&ca, 7, 1),
    ));
    let err = run(&ApiClient::new(&socket), &verify_args(&dir, None))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string().contains("record 5: out of sequence"),
        "{err}"
    );
}

#[tokio::test]
async fn rejects_a_served_chain_under_another_enclave_image() {
    let dir = tempfile::tempdir().unwrap();
    let ca = SimulatedCa::load_or_create(&dir.path().join("ca")).unwrap();
    let socket = dir.path().join("ekms.sock");
    tokio::spawn(serve(
        UnixListener::bind(&socket).unwrap(),
        rows(3),
        1000,
        binding_doc(&ca, 8, 1),
    ));
    let err = run(&ApiClient::new(&socket), &verify_args(&dir, None))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains("record 1: audit key"), "{err}");
}

#[tokio::test]
async fn rejects_the_aws_root_without_pcr0_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = verify_args(&dir, None);
    args.trust.root = Root::Aws;
    args.pcr0 = None;
    let err = run(&ApiClient::new(dir.path().join("none.sock")), &args)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err}");
}
