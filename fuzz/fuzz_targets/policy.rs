//! Fuzz target `policy`: policy JSON documents (`Policy::parse`, `canonical_json`).
//!
//! The body is `ekms_signer::fuzz_harness::policy` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::policy(data));
