//! Fuzz target `spl_token`: SPL Token / Token-2022 instruction data (`SplTokenInstruction::decode`).
//!
//! The body is `ekms_signer::fuzz_harness::spl_token` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::spl_token(data));
