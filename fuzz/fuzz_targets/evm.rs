//! Fuzz target `evm`: unsigned EVM transactions (`ekms_signer::decode_unsigned`:
//! legacy EIP-155, EIP-2930, EIP-1559; RLP per the Ethereum yellow paper appendix B).
//!
//! For each payload that decodes, every accessor and the signing hash are computed and
//! the transaction is evaluated under a fixed policy, as the enclave does before
//! signing. Properties: no panic; the policy accepts only what its rules allow (chain
//! id 1 or 8453, a listed destination, value within the limit).
#![no_main]

use std::sync::OnceLock;

use ekms_signer::{decode_unsigned, Policy};
use libfuzzer_sys::fuzz_target;

/// Destinations of the seed transactions (EIP-155 example; `0x1111…11`).
const POLICY: &str = r#"{"version":1,"enabled":true,"evm":{"chain_ids":[1,8453],
"allowed_destinations":["0x3535353535353535353535353535353535353535",
"0x1111111111111111111111111111111111111111"],"max_value_wei":"1000000000000000000"}}"#;

fn policy() -> &'static Policy {
    static POL: OnceLock<Policy> = OnceLock::new();
    POL.get_or_init(|| Policy::parse(POLICY).expect("the fixed policy parses"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(tx) = decode_unsigned(data) else {
        return;
    };
    let _ = (
        tx.nonce(),
        tx.gas_limit(),
        tx.input().len(),
        tx.tx_type().as_u8(),
    );
    let _ = tx.sighash();
    if policy().evaluate_evm(&tx).is_ok() {
        let rules = policy().evm().expect("the fixed policy has an evm section");
        assert!(rules.chain_ids.contains(&tx.chain_id()));
        let to = tx.to().expect("contract creation is never allowed");
        assert!(rules.allowed_destinations.contains(&to));
        assert!(tx.value() <= rules.max_value_wei);
    }
});
