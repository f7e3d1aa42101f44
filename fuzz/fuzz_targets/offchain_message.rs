//! Fuzz target `offchain_message`: Solana off-chain messages (`OffchainMessage::decode`): one encoding per message.
//!
//! The body is `ekms_signer::fuzz_harness::offchain_message` (properties in its docs), which
//! `signer/tests/fuzz_corpus.rs` also runs on every seed and corpus file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_signer::fuzz_harness::offchain_message(data));
