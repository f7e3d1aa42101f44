//! Fuzz target `policy`: signing-policy JSON documents (`ekms_signer::Policy::parse`).
//!
//! Non-UTF-8 inputs are skipped (the enclave receives the policy as a CBOR text
//! string). Properties for every document that parses: its canonical JSON parses to an
//! equal policy, canonicalizing is idempotent (the policy MAC covers these bytes, so
//! they must be a fixed point), and the canonical form is within the size limit.
#![no_main]

use ekms_signer::{Policy, MAX_POLICY_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(json) else {
        return;
    };
    let canonical = policy.canonical_json();
    let again = Policy::parse(&canonical).expect("canonical JSON parses");
    assert_eq!(again, policy, "parse(canonical_json(p)) == p");
    assert_eq!(
        again.canonical_json(),
        canonical,
        "canonical_json is idempotent"
    );
    assert!(canonical.len() <= MAX_POLICY_BYTES);
});
