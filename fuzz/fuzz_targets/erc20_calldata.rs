//! Fuzz target `erc20_calldata`: ERC-20 call data (`Erc20Call::decode`): one encoding per call.
//!
//! The body is `ekms_signer::fuzz_harness::erc20_calldata` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::erc20_calldata(data));
