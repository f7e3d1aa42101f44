//! Fuzz target `policy_v2`: policy documents of both versions, canonical round trip, then fixed payloads of every kind evaluated under them.
//!
//! The body is `ekms_signer::fuzz_harness::policy_v2` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::policy_v2(data));
