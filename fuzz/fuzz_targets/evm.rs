//! Fuzz target `evm`: unsigned EVM transactions (`ekms_signer::decode_unsigned`) evaluated under a fixed version 1 policy.
//!
//! The body is `ekms_signer::fuzz_harness::evm` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::evm(data));
