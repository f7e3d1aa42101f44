//! Fuzz target `compute_budget`: Compute Budget instruction data (`ComputeBudgetInstruction::decode`, duplicates, the fee bound).
//!
//! The body is `ekms_signer::fuzz_harness::compute_budget` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::compute_budget(data));
