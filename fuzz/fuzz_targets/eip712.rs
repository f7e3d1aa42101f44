//! Fuzz target `eip712`: EIP-712 typed-data JSON (`TypedDataPayload::decode`, permits), evaluated under a fixed version 2 policy.
//!
//! The body is `ekms_signer::fuzz_harness::eip712` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::eip712(data));
