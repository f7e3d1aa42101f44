//! Fuzz target `solana`: Solana transactions and bare messages (`ekms_signer::decode_solana`), System transfers, a fixed version 1 policy and the version 2 engine.
//!
//! The body is `ekms_signer::fuzz_harness::solana` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::solana(data));
