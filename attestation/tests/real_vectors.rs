//! Verification of real AWS Nitro attestation documents (tests/vectors/, sources in
//! tests/vectors/README.md) against the pinned `AWS_NitroEnclaves_Root-G1`: accepted at
//! their own time with their own PCRs, refused today, refused after any byte changes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attestation::{Verifier, VerifyError, VerifyOptions, AWS_NITRO_ROOT_G1_SHA256};
use sha2::Digest;

/// base/nitro-validator `test/NitroValidator.t.sol` `test_DecodeAttestationTbs`:
/// a production-mode enclave (non-zero PCR0..2), public key set, no nonce or user data.
const BASE_HEX: &str = include_str!("vectors/aws_nitro_base_2024-11-30.cose.hex");
const BASE_TIMESTAMP_MS: u64 = 1_732_983_768_387; // 2024-11-30T16:22:48.387Z
const BASE_PCR0: &str = "ec74bfbe7f7445a6c7610e152935e028276f638042b74797b119648e13f7a3675796b721034c320f140ea001b41aeae2";
const BASE_PCR1: &str = "fa2593b59f3e4fc7daba5cbdddfd3449d67cd02d43bb1128885e8f38b914d081dccdb68fff6d5b7a76bcb866a18a74a3";
const BASE_PCR2: &str = "56ba201a72e36cd051e95e5c4724c899039b711770f4d9d4fe7a1de007119a10b364badcd35e90f728a5bdc910905723";

/// MystenLabs/sui `crates/sui-types/src/unit_tests/nitro_attestation_tests.rs`:
/// a debug-mode enclave (PCR0..2 zero), user data set, no public key or nonce.
const SUI_HEX: &str = include_str!("vectors/aws_nitro_sui_debug_2024-11-14.cose.hex");
const SUI_TIMESTAMP_MS: u64 = 1_731_627_989_450; // 2024-11-14T23:46:29.450Z
const SUI_PCR3: &str = "639a8b65f68b0223cbb14a0032487e5656d260434e3d1a10e7ec1407fb86143860717fc8afee90df7a1604111709af46";
const SUI_PCR4: &str = "9ab5a1aba055ee41ee254b9b251a58259b29fa1096859762744e9ac73b5869b25e51223854d9f86adbb37fe69f3e5d1c";

/// "Today" for the staleness check: 2026-11-21T00:00:00Z.
fn today() -> SystemTime {
    UNIX_EPOCH
        + der::DateTime::new(2026, 11, 21, 0, 0, 0)
            .expect("a valid calendar date")
            .unix_duration()
}

fn decode(hex_text: &str) -> Vec<u8> {
    let compact: String = hex_text.split_whitespace().collect();
    hex::decode(compact).expect("test vectors are hex")
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn base_pcrs() -> BTreeMap<u16, Vec<u8>> {
    [(0, BASE_PCR0), (1, BASE_PCR1), (2, BASE_PCR2)]
        .into_iter()
        .map(|(i, h)| (i, hex::decode(h).expect("PCR constants are hex")))
        .collect()
}

fn base_opts() -> VerifyOptions {
    let mut opts = VerifyOptions::at(at_ms(BASE_TIMESTAMP_MS));
    opts.expected_pcrs = base_pcrs();
    opts.max_age = Some(Duration::from_secs(300));
    opts
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("field bytes occur in the document")
}

#[test]
fn real_document_verifies_at_its_own_time() {
    let bytes = decode(BASE_HEX);
    let doc = Verifier::aws_nitro().verify(&bytes, &base_opts()).unwrap();
    assert_eq!(doc.module_id, "i-0de38b2b6853cc9e8-enc0193685e7fee7d85");
    assert_eq!(doc.timestamp, BASE_TIMESTAMP_MS);
    assert_eq!(doc.digest, "SHA384");
    assert_eq!(doc.pcrs.len(), 16);
    assert_eq!(doc.cabundle.len(), 4);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&doc.cabundle[0])),
        AWS_NITRO_ROOT_G1_SHA256
    );
    assert_eq!(doc.public_key.as_ref().map(Vec::len), Some(65));
    assert_eq!(doc.user_data, None);
    assert_eq!(doc.nonce, None);
    assert!(!doc.is_debug_mode());
}

#[test]
fn archived_real_document_verifies_at_its_own_time_today() {
    let bytes = decode(BASE_HEX);
    let mut opts = base_opts();
    opts.max_age = None;
    let doc = Verifier::aws_nitro()
        .verify_at_its_time(&bytes, today(), &opts)
        .unwrap();
    assert_eq!(doc.timestamp, BASE_TIMESTAMP_MS);
}

#[test]
fn rejects_archived_document_from_the_future_or_altered() {
    let bytes = decode(BASE_HEX);
    let mut opts = base_opts();
    opts.max_age = None;
    let before = at_ms(BASE_TIMESTAMP_MS - 3_600_000);
    assert!(matches!(
        Verifier::aws_nitro().verify_at_its_time(&bytes, before, &opts),
        Err(VerifyError::Future { .. })
    ));
    let mut altered = bytes.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(Verifier::aws_nitro()
        .verify_at_its_time(&altered, today(), &opts)
        .is_err());
}

#[test]
fn real_document_verifies_with_tag_18() {
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&decode(BASE_HEX));
    assert!(Verifier::aws_nitro().verify(&tagged, &base_opts()).is_ok());
}

#[test]
fn rejects_real_document_today() {
    let bytes = decode(BASE_HEX);
    let opts = VerifyOptions::at(today());
    assert_eq!(
        Verifier::aws_nitro().verify(&bytes, &opts),
        Err(VerifyError::ChainExpired)
    );
}

#[test]
fn rejects_real_document_before_its_leaf_was_issued() {
    let bytes = decode(BASE_HEX);
    let opts = VerifyOptions::at(at_ms(BASE_TIMESTAMP_MS - 3_600_000));
    assert_eq!(
        Verifier::aws_nitro().verify(&bytes, &opts),
        Err(VerifyError::ChainNotYetValid)
    );
}

#[test]
fn rejects_real_document_with_wrong_expectations() {
    let bytes = decode(BASE_HEX);
    let v = Verifier::aws_nitro();

    let mut opts = base_opts();
    opts.expected_pcrs.get_mut(&2).unwrap()[0] ^= 1;
    assert_eq!(
        v.verify(&bytes, &opts),
        Err(VerifyError::PcrMismatch { index: 2 })
    );

    let mut opts = base_opts();
    opts.expected_nonce = Some(vec![1, 2, 3]);
    assert_eq!(v.verify(&bytes, &opts), Err(VerifyError::NonceMismatch));

    // One hour later the leaf is still valid, but the document is too old.
    let mut opts = base_opts();
    opts.time = at_ms(BASE_TIMESTAMP_MS + 3_600_000);
    assert!(matches!(
        v.verify(&bytes, &opts),
        Err(VerifyError::TooOld { .. })
    ));
    opts.max_age = None;
    assert!(v.verify(&bytes, &opts).is_ok());
}

#[test]
fn rejects_real_document_under_another_root() {
    let bytes = decode(BASE_HEX);
    // A genuine AWS CA certificate from another enclave's chain (the Sui document's
    // instance CA), pinned instead of the AWS root: the base document must not chain to it.
    let mut sui_opts = VerifyOptions::at(at_ms(SUI_TIMESTAMP_MS));
    sui_opts.allow_debug = true;
    let sui = Verifier::aws_nitro()
        .verify(&decode(SUI_HEX), &sui_opts)
        .unwrap();
    let other_root = Verifier::danger_trust_simulation_root(&sui.cabundle[3]).unwrap();
    assert!(matches!(
        other_root.verify(&bytes, &base_opts()),
        Err(VerifyError::ChainUntrusted(_))
    ));
}

#[test]
fn rejects_real_document_with_any_byte_changed() {
    let bytes = decode(BASE_HEX);
    let v = Verifier::aws_nitro();
    let opts = base_opts();
    let doc = v.verify(&bytes, &opts).unwrap();
    let len = bytes.len();

    // Payload (outside the certificates): module_id, timestamp, PCR0, PCR2, public key.
    let module_id_at = find(&bytes, doc.module_id.as_bytes());
    let pcr0_at = find(&bytes, &doc.pcrs[&0]);
    let pcr2_at = find(&bytes, &doc.pcrs[&2]);
    let pk_at = find(&bytes, doc.public_key.as_ref().unwrap());
    let ts_at = find(&bytes, &BASE_TIMESTAMP_MS.to_be_bytes());
    for pos in [
        module_id_at + 3,
        ts_at + 7,
        pcr0_at,
        pcr0_at + 47,
        pcr2_at + 20,
        pk_at + 10,
        pk_at + 64,
    ] {
        let mut t = bytes.clone();
        t[pos] ^= 0x01;
        assert_eq!(
            v.verify(&t, &opts),
            Err(VerifyError::Signature),
            "payload byte {pos}"
        );
    }

    // Signature (the last 96 bytes): r and s.
    for pos in [len - 96, len - 70, len - 48, len - 20, len - 1] {
        let mut t = bytes.clone();
        t[pos] ^= 0x01;
        assert_eq!(
            v.verify(&t, &opts),
            Err(VerifyError::Signature),
            "signature byte {pos}"
        );
    }

    // Leaf certificate and an intermediate: the chain breaks (or the structure does).
    let leaf_at = find(&bytes, &doc.certificate);
    let leaf_len = doc.certificate.len();
    let int_at = find(&bytes, &doc.cabundle[2]);
    for pos in [
        leaf_at + 20,
        leaf_at + 200,
        leaf_at + leaf_len / 2,
        leaf_at + leaf_len - 30,
        leaf_at + leaf_len - 1,
        int_at + 150,
        int_at + 400,
    ] {
        let mut t = bytes.clone();
        t[pos] ^= 0x01;
        let r = v.verify(&t, &opts);
        assert!(r.is_err(), "certificate byte {pos} flipped but verified");
        assert_ne!(r, Err(VerifyError::PcrMismatch { index: 0 }));
    }
}

#[test]
fn real_debug_document_needs_allow_debug() {
    let bytes = decode(SUI_HEX);
    let v = Verifier::aws_nitro();
    let mut opts = VerifyOptions::at(at_ms(SUI_TIMESTAMP_MS));
    opts.expected_pcrs = BTreeMap::from([
        (3, hex::decode(SUI_PCR3).unwrap()),
        (4, hex::decode(SUI_PCR4).unwrap()),
    ]);
    assert_eq!(v.verify(&bytes, &opts), Err(VerifyError::Debug));
    opts.allow_debug = true;
    let doc = v.verify(&bytes, &opts).unwrap();
    assert!(doc.is_debug_mode());
    assert_eq!(doc.user_data.as_ref().map(Vec::len), Some(32));
    assert_eq!(doc.public_key, None);

    opts.time = today();
    assert_eq!(v.verify(&bytes, &opts), Err(VerifyError::ChainExpired));
}

/// The real document re-encoded with `unprotected` replaced: the signature does not cover
/// the unprotected header, so only a structural rule can refuse these.
fn with_unprotected(header: coset::Header) -> Vec<u8> {
    use coset::CborSerializable;
    let mut sign1 =
        coset::CoseSign1::from_slice(&decode(BASE_HEX)).expect("the vector is a COSE_Sign1");
    sign1.unprotected = header;
    sign1.to_vec().expect("a COSE_Sign1 re-encodes")
}

#[test]
fn real_document_reencoded_unchanged_still_verifies() {
    // The control for the test below: re-encoding alone changes nothing.
    let bytes = with_unprotected(coset::Header::default());
    assert_eq!(bytes, decode(BASE_HEX));
    assert!(Verifier::aws_nitro().verify(&bytes, &base_opts()).is_ok());
}

#[test]
fn rejects_real_document_with_a_non_empty_unprotected_header() {
    // AWS (attestation_process.md §3.1): `{}, /* We have nothing in unprotected */`.
    // RFC 9052 §3: `alg` and `crit` belong in the protected bucket; an unprotected copy
    // is attacker-controlled, and extra unprotected parameters make one signed document
    // encodable in many ways.
    let v = Verifier::aws_nitro();
    let es256 = coset::HeaderBuilder::new()
        .algorithm(coset::iana::Algorithm::ES256)
        .build();
    let es384 = coset::HeaderBuilder::new()
        .algorithm(coset::iana::Algorithm::ES384)
        .build();
    let crit = coset::HeaderBuilder::new()
        .add_critical(coset::iana::HeaderParameter::ContentType)
        .content_type("x".into())
        .build();
    let kid = coset::HeaderBuilder::new().key_id(vec![7; 900]).build();
    for header in [es256, es384, crit, kid] {
        let bytes = with_unprotected(header.clone());
        let result = v.verify(&bytes, &base_opts()).map(|_| "verified");
        assert!(
            matches!(
                result,
                Err(VerifyError::Malformed(_)) | Err(VerifyError::Algorithm)
            ),
            "{header:?}: {result:?}"
        );
    }
}

/// Hostile bytes: every single-byte change, every truncation and some insertions of a
/// real document must give an error (or, for changes the signature does not cover, the
/// same payload), never a panic.
#[test]
fn rejects_mutated_real_documents_without_panicking() {
    let bytes = decode(BASE_HEX);
    let v = Verifier::aws_nitro();
    let opts = base_opts();
    let original = v.verify(&bytes, &opts).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64: deterministic, so a failure reproduces.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0usize;
    // Every other position (each with a random bit) keeps the test under a few seconds.
    for pos in (0..bytes.len()).step_by(2) {
        let mut t = bytes.clone();
        t[pos] ^= 1u8 << (next() % 8);
        if let Ok(doc) = v.verify(&t, &opts) {
            assert_eq!(doc, original, "byte {pos} changed the payload yet verified");
            accepted += 1;
        }
    }
    // Only non-canonical-but-equivalent encodings could survive; there are none here.
    assert_eq!(accepted, 0);
    for len in 0..bytes.len() {
        assert!(
            v.verify(&bytes[..len], &opts).is_err(),
            "truncated to {len}"
        );
    }
    for _ in 0..512 {
        let mut t = bytes.clone();
        let pos = (next() as usize) % (t.len() + 1);
        t.insert(pos, next() as u8);
        assert!(v.verify(&t, &opts).is_err(), "byte inserted at {pos}");
    }
    for _ in 0..256 {
        let len = (next() as usize) % 6000;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        assert!(v.verify(&junk, &opts).is_err());
    }
}
