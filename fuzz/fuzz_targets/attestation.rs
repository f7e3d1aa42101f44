//! Fuzz target `attestation`: Nitro attestation documents (`attestation` crate).
//!
//! Each input goes through [`Verifier::verify`] (COSE_Sign1 structure, payload fields,
//! certificate chain to the pinned AWS root, ES384 signature) and, separately, through
//! [`AttestationDoc::from_cbor`] (the payload's syntactic rules), since mutated payloads
//! rarely survive to that step behind a signature check. Property: a payload that
//! decodes re-encodes (`to_cbor`) to bytes that decode to an equal document.
//!
//! The validation time is fixed at the timestamp of the real AWS vector in the seed
//! corpus, so that seed verifies completely and mutations start from a valid document
//! instead of failing at the certificate dates; debug-mode documents are allowed for
//! the same reason (the second real vector is one).
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use attestation::{AttestationDoc, Verifier, VerifyOptions};
use libfuzzer_sys::fuzz_target;

/// `timestamp` of `attestation/tests/vectors/aws_nitro_base_2024-11-30.cose.hex`
/// (2024-11-30T16:22:48.387Z), in ms since the Unix epoch.
const BASE_TIMESTAMP_MS: u64 = 1_732_983_768_387;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(Verifier::aws_nitro)
}

fn options() -> &'static VerifyOptions {
    static OPTIONS: OnceLock<VerifyOptions> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut opts = VerifyOptions::at(UNIX_EPOCH + Duration::from_millis(BASE_TIMESTAMP_MS));
        opts.allow_debug = true;
        opts
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = verifier().verify(data, options());

    if let Ok(doc) = AttestationDoc::from_cbor(data) {
        let bytes = doc
            .to_cbor()
            .expect("invariant: CBOR encoding into a Vec does not fail");
        let again = AttestationDoc::from_cbor(&bytes).expect("re-encoded payload decodes");
        assert_eq!(again, doc, "payload round trip");
    }
});
