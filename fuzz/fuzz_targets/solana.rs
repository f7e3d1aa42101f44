//! Fuzz target `solana`: Solana transactions and bare messages (legacy and v0) as
//! `ekms_signer::decode_solana` reads them, then `system_transfers` (bincode System
//! Program instruction data) and a policy evaluation with a fixed policy.
//!
//! Properties: no panic; a decoded payload's message bytes, read again as a bare
//! message, give the same message; a payload the policy accepts only invokes the allowed programs and
//! moves at most the per-transfer limit in each System transfer, and signs no System
//! instruction but Transfer and CreateAccount (the default allow-list).
#![no_main]

use std::sync::OnceLock;

use ekms_signer::solana::SystemInstructionName;
use ekms_signer::{decode_solana, Policy};
use libfuzzer_sys::fuzz_target;

/// Allows the System Program (`111…1`) and Compute Budget, up to 1 SOL per transfer.
const POLICY: &str = r#"{"version":1,"enabled":true,"solana":{"allowed_programs":
["11111111111111111111111111111111","ComputeBudget111111111111111111111111111111"],
"max_lamports_per_transfer":1000000000}}"#;

fn policy() -> &'static Policy {
    static POL: OnceLock<Policy> = OnceLock::new();
    POL.get_or_init(|| Policy::parse(POLICY).expect("the fixed policy parses"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = decode_solana(data) else {
        return;
    };
    // The message bytes alone, when read as a bare message, give the same message. They
    // may instead fit the transaction reading (signature count, 64-byte slots, an exact
    // inner message with that many signers), which is then the only one tried and may
    // fail: the module documents this ambiguity, which refuses rather than misleads
    // (the policy always sees the bytes that get signed).
    if let Ok(again) = decode_solana(payload.message_bytes()) {
        if !again.is_transaction() {
            assert_eq!(again.message_bytes(), payload.message_bytes());
            assert_eq!(again.account_keys(), payload.account_keys());
            assert_eq!(again.instructions(), payload.instructions());
        }
    }
    let _ = (
        payload.is_transaction(),
        payload.is_v0(),
        payload.has_address_table_lookups(),
    );

    let transfers = payload.system_transfers();
    let Some(signer) = payload.required_signers().first() else {
        return;
    };
    if policy().evaluate_solana(&payload, signer).is_ok() {
        let rules = policy()
            .solana()
            .expect("the fixed policy has a solana section");
        for ix in payload.instructions() {
            assert!(rules.allowed_programs.contains(&ix.program_id));
        }
        let transfers = transfers.expect("an accepted payload has readable transfers");
        for t in transfers {
            assert!(t.lamports <= rules.max_lamports_per_transfer);
        }
        // The System allow-list: without `system_instructions`, only Transfer and
        // CreateAccount are ever signed; Compute Budget instructions all decode.
        for (_, ix) in payload
            .system_instructions()
            .expect("an accepted payload has decodable System instructions")
        {
            assert!(SystemInstructionName::DEFAULT_ALLOWED.contains(&ix.name()));
        }
        assert!(payload.max_fee_lamports().is_ok());
    }
});
