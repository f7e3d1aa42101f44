//! Tests of the chain checks on real chains signed with ed25519 keys: a positive test
//! for each shape of valid chain, and a `rejects_…` test for each way a parent could
//! bend one (edit, delete, reorder, insert, renumber, relink, truncate).

use super::*;
use ekms_shared::audit::{AuditDecision, AuditRecord};
use sha2::{Digest as _, Sha256};

fn key(n: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[n; 32])
}

fn bound(n: u8) -> BoundKey {
    BoundKey {
        document_timestamp_ms: 1_000,
        pcr0: Some(hex::encode([n; 48])),
        module_id: format!("sim-{n}"),
    }
}

fn record(seq: u64, action: AuditAction, prev: [u8; 32]) -> AuditRecord {
    let key_id = (action != AuditAction::Boot).then(|| "k1".to_owned());
    AuditRecord {
        seq,
        time: 1_000 + seq,
        key_id,
        action,
        payload_kind: (action == AuditAction::Sign).then(|| "evm_transaction".into()),
        payload_sha256: (action == AuditAction::Sign).then(|| hex::encode([seq as u8; 32])),
        policy_version: (action != AuditAction::Boot).then_some(1),
        policy_sha256: None,
        decision: AuditDecision::Allowed,
        rule: None,
        prev_hash: hex::encode(prev),
    }
}

/// A real chain: boot + 4 records under key 1, then boot + 3 under key 2.
fn chain() -> (Vec<AuditRow>, KeyBindings) {
    let mut rows = Vec::new();
    let mut prev = GENESIS_HASH;
    for (seq, signer, action) in [
        (1, 1, AuditAction::Boot),
        (2, 1, AuditAction::CreateKey),
        (3, 1, AuditAction::Sign),
        (4, 1, AuditAction::Sign),
        (5, 1, AuditAction::SetPolicy),
        (6, 2, AuditAction::Boot),
        (7, 2, AuditAction::Sign),
        (8, 2, AuditAction::Disable),
        (9, 2, AuditAction::Sign),
    ] {
        let signed = SignedAuditRecord::sign(&key(signer), &record(seq, action, prev));
        prev = signed.record_sha256();
        rows.push(AuditRow { seq, signed });
    }
    let keys = [1, 2]
        .into_iter()
        .map(|n| (key(n).verifying_key().to_bytes(), Ok(bound(n))))
        .collect();
    (rows, keys)
}

fn receipt(row: &AuditRow) -> ReceiptCheck {
    ReceiptCheck {
        seq: row.seq,
        record_sha256: row.signed.record_sha256(),
        signature: row.signed.signature,
    }
}

fn fails(rows: &[AuditRow], keys: &KeyBindings, receipts: Vec<ReceiptCheck>) -> ChainError {
    verify_chain(rows, keys, receipts).expect_err("the chain must be rejected")
}

#[test]
fn verifies_a_real_chain_with_its_receipts() {
    let (rows, keys) = chain();
    let receipts = vec![receipt(&rows[2]), receipt(&rows[8]), receipt(&rows[8])];
    let summary = verify_chain(&rows, &keys, receipts).unwrap();
    assert_eq!(summary.records, 9);
    assert_eq!(summary.last_seq, 9);
    assert_eq!(summary.boots, 2);
    assert_eq!(summary.receipts_checked, 3);
    assert_eq!(
        summary.last_record_sha256,
        hex::encode(Sha256::digest(rows[8].signed.record.as_bytes()))
    );
    assert_eq!(summary.audit_keys.len(), 2);
    assert_eq!(
        (
            summary.audit_keys[0].first_seq,
            summary.audit_keys[0].last_seq
        ),
        (1, 5)
    );
    assert_eq!(summary.audit_keys[1].records, 4);
    assert_eq!(summary.audit_keys[1].document, bound(2));
}

#[test]
fn verifies_page_by_page_as_in_one_go() {
    let (rows, keys) = chain();
    let mut v = ChainVerifier::new([receipt(&rows[4])]);
    for page in rows.chunks(4) {
        for row in page {
            v.push(row, &keys).unwrap();
        }
    }
    assert_eq!(v.last_seq(), 9);
    assert_eq!(
        v.finish().unwrap(),
        verify_chain(&rows, &keys, [receipt(&rows[4])]).unwrap()
    );
}

#[test]
fn verifies_an_empty_chain() {
    let summary = verify_chain(&[], &KeyBindings::new(), []).unwrap();
    assert_eq!(summary.records, 0);
    assert_eq!(summary.last_record_sha256, "00".repeat(32));
}

#[test]
fn rejects_an_edited_record() {
    let (mut rows, keys) = chain();
    rows[3].signed.record = rows[3].signed.record.replace("\"sign\"", "\"enable\"");
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(err.seq, Some(4));
    assert!(err.reason.contains("signature does not verify"), "{err}");
}

#[test]
fn rejects_a_deleted_record() {
    let (mut rows, keys) = chain();
    rows.remove(4);
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(err.seq, Some(6));
    assert_eq!(
        err.to_string(),
        "record 6: out of sequence: expected record 5 here (records missing or reordered)"
    );
}

#[test]
fn rejects_two_reordered_records() {
    let (mut rows, keys) = chain();
    rows.swap(2, 3);
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(err.seq, Some(4));
    assert!(err.reason.contains("expected record 3"), "{err}");
}

#[test]
fn rejects_a_row_renumbered_by_the_parent() {
    let (mut rows, keys) = chain();
    rows[2].seq = 30;
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(
        err.to_string(),
        "record 30: served as record 30, but signed as record 3"
    );
}

#[test]
fn rejects_a_broken_link_even_when_validly_signed() {
    // A record the bound key really signed, but linked to nothing: as if the
    // enclave had been fed a forged head. Only prev_hash can tell.
    let (mut rows, keys) = chain();
    let forged = record(7, AuditAction::Sign, [0xee; 32]);
    rows[6].signed = SignedAuditRecord::sign(&key(2), &forged);
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(
        err.to_string(),
        "record 7: prev_hash does not match record 6"
    );
    // And the first record must link to the genesis hash.
    let (mut rows, keys) = chain();
    rows[0].signed = SignedAuditRecord::sign(&key(1), &record(1, AuditAction::Boot, [1; 32]));
    let err = fails(&rows[..1], &keys, vec![]);
    assert!(err.reason.contains("all zeros"), "{err}");
}

#[test]
fn rejects_an_inserted_record_signed_by_an_unbound_key() {
    // Validly signed and correctly linked, but by a key no document binds: the
    // parent cannot mint its own audit key.
    let (mut rows, keys) = chain();
    let prev = rows[3].signed.record_sha256();
    let intruder = SignedAuditRecord::sign(&key(9), &record(5, AuditAction::Boot, prev));
    rows.insert(
        4,
        AuditRow {
            seq: 5,
            signed: intruder,
        },
    );
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(err.seq, Some(5));
    assert!(err.reason.contains("has no attestation document"), "{err}");
}

#[test]
fn rejects_a_key_whose_document_was_rejected() {
    let (rows, mut keys) = chain();
    keys.insert(
        key(2).verifying_key().to_bytes(),
        Err("PCR0 does not match".into()),
    );
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(err.seq, Some(6));
    assert!(err.reason.contains("PCR0 does not match"), "{err}");
}

#[test]
fn rejects_an_inserted_record_by_a_bound_key_out_of_place() {
    // Key 1's record, re-served after key 2 took over (no boot in between).
    let (mut rows, keys) = chain();
    let prev = rows[8].signed.record_sha256();
    let late = SignedAuditRecord::sign(&key(1), &record(10, AuditAction::Sign, prev));
    rows.push(AuditRow {
        seq: 10,
        signed: late,
    });
    let err = fails(&rows, &keys, vec![]);
    assert_eq!(err.seq, Some(10));
    assert!(err.reason.contains("without a boot record"), "{err}");
}

#[test]
fn rejects_a_chain_that_does_not_start_with_boot() {
    let (_, keys) = chain();
    let first = SignedAuditRecord::sign(&key(1), &record(1, AuditAction::Sign, GENESIS_HASH));
    let err = fails(
        &[AuditRow {
            seq: 1,
            signed: first,
        }],
        &keys,
        vec![],
    );
    assert_eq!(
        err.to_string(),
        "record 1: the chain does not start with a boot record"
    );
}

#[test]
fn rejects_a_receipt_whose_record_is_gone() {
    // The last two records cut off the end: only the receipt shows it.
    let (rows, keys) = chain();
    let kept = receipt(&rows[8]);
    assert!(verify_chain(&rows[..7], &keys, []).is_ok());
    let err = fails(&rows[..7], &keys, vec![kept]);
    assert_eq!(
        err.to_string(),
        "record 9: a receipt names this record, but the chain ends at record 7"
    );
}

#[test]
fn rejects_a_receipt_for_another_record_at_its_seq() {
    let (rows, keys) = chain();
    let mut wrong_hash = receipt(&rows[4]);
    wrong_hash.record_sha256[0] ^= 1;
    let err = fails(&rows, &keys, vec![wrong_hash]);
    assert_eq!(err.seq, Some(5));
    assert!(err.reason.contains("record_sha256 differs"), "{err}");
    let mut wrong_sig = receipt(&rows[4]);
    wrong_sig.signature = rows[3].signed.signature;
    let err = fails(&rows, &keys, vec![receipt(&rows[4]), wrong_sig]);
    assert!(err.reason.contains("signature differs"), "{err}");
}

#[test]
fn decodes_receipts_and_rejects_malformed_ones() {
    let (rows, _) = chain();
    let r = Receipt::of(&rows[2].signed, 3);
    assert_eq!(ReceiptCheck::from_receipt(&r).unwrap(), receipt(&rows[2]));
    for bad in [
        Receipt {
            record_sha256: "ab".into(),
            ..r.clone()
        },
        Receipt {
            signature: r.signature.trim_start_matches("0x").to_owned(),
            ..r.clone()
        },
        Receipt {
            signature: format!("{}0", r.signature),
            ..r.clone()
        },
    ] {
        assert!(ReceiptCheck::from_receipt(&bad).is_err(), "{bad:?}");
    }
}
