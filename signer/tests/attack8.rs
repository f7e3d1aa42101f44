//! Attacks on the version 2 engine (wt-attack8): payloads a policy allows that move
//! more, or to someone else, than the policy's author wrote.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use ekms_signer::{decode, PayloadKind, Policy, SignerIdentity};
use solana_message::{AccountMeta, Address as SolAddress, Instruction};

const ME: [u8; 20] = [0xee; 20];
const ROUTER: [u8; 20] = [0x60; 20];
const USDC: [u8; 20] = [0xa0; 20];
const PERMIT2: [u8; 20] = [0x22; 20];
const NOW: u64 = 1_750_000_000;

fn permit_policy(per_window: &str) -> Policy {
    Policy::parse_new(&format!(
        r#"{{"version":2,"enabled":true,"allowed_kinds":["evm_typed_data"],
  "evm":{{"chain_ids":[1],"max_fee_wei":"1",
    "tokens":{{"{usdc}":{{"max_per_tx":"1000000000"{per_window}}}}},
    "spenders":["{router}"],
    "typed_data":{{"domains":[{{"name":"Permit2","chain_id":1,"verifying_contract":"{permit2}"}}],
                   "primary_types":["PermitBatchTransferFrom","PermitBatch"]}}}}}}"#,
        usdc = hex20(USDC),
        router = hex20(ROUTER),
        permit2 = hex20(PERMIT2),
    ))
    .unwrap()
}

/// Permit2 `SignatureTransfer.permitTransferFrom(PermitBatchTransferFrom, …)` moves every
/// `permitted[i]` (no uniqueness check), so the same token listed `n` times lets the
/// spender move `n ×` its amount with one signature.
fn batch_transfer_from(token: [u8; 20], amounts: &[&str]) -> Vec<u8> {
    let permitted: Vec<String> = amounts
        .iter()
        .map(|a| format!(r#"{{"token":"{}","amount":"{a}"}}"#, hex20(token)))
        .collect();
    format!(
        r#"{{"types":{{"EIP712Domain":[{{"name":"name","type":"string"}},{{"name":"chainId","type":"uint256"}},{{"name":"verifyingContract","type":"address"}}],
"PermitBatchTransferFrom":[{{"name":"permitted","type":"TokenPermissions[]"}},{{"name":"spender","type":"address"}},{{"name":"nonce","type":"uint256"}},{{"name":"deadline","type":"uint256"}}],
"TokenPermissions":[{{"name":"token","type":"address"}},{{"name":"amount","type":"uint256"}}]}},
"primaryType":"PermitBatchTransferFrom","domain":{{"name":"Permit2","chainId":1,"verifyingContract":"{}"}},
"message":{{"permitted":[{}],"spender":"{}","nonce":0,"deadline":1900000000}}}}"#,
        hex20(PERMIT2),
        permitted.join(","),
        hex20(ROUTER)
    )
    .into_bytes()
}

fn evaluate_evm(policy: &Policy, kind: PayloadKind, payload: &[u8]) -> Result<(), String> {
    let decoded = decode(kind, payload).unwrap();
    policy
        .evaluate(&decoded, &SignerIdentity::Evm(ME), NOW)
        .map(|_| ())
        .map_err(|d| d.rule.to_owned())
}

#[test]
fn a_batch_permit_of_one_token_is_held_to_max_per_tx_in_total() {
    // One entry at the cap is fine.
    for per_window in [
        "",
        r#","per_window":{"max":"5000000000","window_secs":86400}"#,
    ] {
        let policy = permit_policy(per_window);
        assert_eq!(
            evaluate_evm(
                &policy,
                PayloadKind::EvmTypedData,
                &batch_transfer_from(USDC, &["1000000000"])
            ),
            Ok(())
        );
        // Three entries of the same token at the cap each: 3 000 000 000 may move with
        // one signature, three times `max_per_tx`.
        assert_eq!(
            evaluate_evm(
                &policy,
                PayloadKind::EvmTypedData,
                &batch_transfer_from(USDC, &["1000000000", "1000000000", "1000000000"])
            ),
            Err("evm.tokens.max_per_tx".to_owned()),
            "per_window {per_window:?}"
        );
    }
}

// ---- Solana: CreateAccount of a host-held key ----

const KEY: [u8; 32] = [1; 32];
const LISTED: [u8; 32] = [3; 32];
/// A keypair the application (untrusted) made and holds.
const HOST_HELD: [u8; 32] = [0x66; 32];

fn sol_policy(destinations: &str) -> Policy {
    Policy::parse_new(&format!(
        r#"{{"version":2,"enabled":true,"allowed_kinds":["solana_transaction"],
  "solana":{{"allowed_programs":["{system}"],
    "max_lamports_per_transfer":1000000000,"max_lamports_per_transaction":1000000000,
    "max_fee_lamports":100000,
    "allowed_destinations":[{destinations}]}}}}"#,
        system = b58(SYSTEM),
    ))
    .unwrap()
}

fn create_account(from: [u8; 32], new: [u8; 32], lamports: u64) -> Instruction {
    let mut data = 0u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes()); // space
    data.extend_from_slice(&SYSTEM); // owner: the System program
    Instruction::new_with_bytes(
        SolAddress::from(SYSTEM),
        &data,
        vec![
            AccountMeta::new(SolAddress::from(from), true),
            AccountMeta::new(SolAddress::from(new), true),
        ],
    )
}

fn evaluate_sol(policy: &Policy, msg: &[u8]) -> Result<(), String> {
    let decoded = decode(PayloadKind::SolanaTransaction, msg).unwrap();
    policy
        .evaluate(&decoded, &SignerIdentity::Solana(KEY), NOW)
        .map(|_| ())
        .map_err(|d| d.rule.to_owned())
}

#[test]
fn lamports_reach_only_listed_destinations_even_through_create_account() {
    let listed = format!("\"{}\"", b58(LISTED));
    for destinations in [listed.as_str(), ""] {
        let policy = sol_policy(destinations);
        // A Transfer to the same host-held address is refused...
        assert_eq!(
            evaluate_sol(
                &policy,
                &legacy_msg(KEY, &[sol_transfer(KEY, HOST_HELD, 1_000_000_000)])
            ),
            Err("solana.allowed_destinations".to_owned())
        );
        // ...but a CreateAccount (in the default system_instructions) of the same
        // address, which the application co-signs, hands it the same lamports: a
        // System-owned account with 0 bytes of data, whose key the application holds
        // and can transfer from at once (shown on LiteSVM by
        // e2e/test_attack8_solana.py).
        assert_eq!(
            evaluate_sol(
                &policy,
                &legacy_msg(KEY, &[create_account(KEY, HOST_HELD, 1_000_000_000)])
            ),
            Err("solana.allowed_destinations".to_owned()),
            "allowed_destinations [{destinations}]"
        );
    }
}
