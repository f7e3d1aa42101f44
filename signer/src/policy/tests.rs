//! Tests of the policy module (parse, canonical form, evaluation).

use super::*;
use crate::evm::{decode_unsigned, EvmTx};
use crate::solana::{decode, SolanaPayload, SystemInstructionName, SYSTEM_PROGRAM_ID};
use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxLegacy};
use alloy_primitives::{Bytes, TxKind};
use solana_message::{
    AccountMeta, Address as SolAddress, Hash, Instruction, Message, VersionedMessage,
};

const DEST: &str = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
/// EIP-55's own example address, checksummed.
const DEST_EIP55: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const COMPUTE_BUDGET: &str = "ComputeBudget111111111111111111111111111111";

fn evm_policy() -> Policy {
    Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1,8453],
           "allowed_destinations":["{DEST_EIP55}"],"max_value_wei":"1000"}}}}"#
    ))
    .unwrap()
}

fn tx(chain_id: u64, to: Option<[u8; 20]>, value: u64) -> EvmTx {
    let t = TxEip1559 {
        chain_id,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 2,
        max_priority_fee_per_gas: 1,
        to: to.map_or(TxKind::Create, |a| TxKind::Call(a.into())),
        value: U256::from(value),
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    decode_unsigned(&out).unwrap()
}

fn dest() -> [u8; 20] {
    let mut out = [0u8; 20];
    hex::decode_to_slice(&DEST[2..], &mut out).unwrap();
    out
}

#[test]
fn evm_allows_listed_chain_destination_and_value() {
    let p = evm_policy();
    assert_eq!(p.evaluate_evm(&tx(1, Some(dest()), 1000)), Ok(()));
    assert_eq!(p.evaluate_evm(&tx(8453, Some(dest()), 0)), Ok(()));
}

#[test]
fn rejects_evm_disabled_missing_section_chain_creation_destination_value() {
    let rule = |p: &Policy, t: &EvmTx| p.evaluate_evm(t).unwrap_err().rule;
    let ok_tx = tx(1, Some(dest()), 1);

    let disabled = Policy::parse(
        &evm_policy()
            .canonical_json()
            .replace("\"enabled\":true", "\"enabled\":false"),
    )
    .unwrap();
    assert_eq!(rule(&disabled, &ok_tx), "enabled");
    let no_evm = Policy::parse(r#"{"enabled":true}"#).unwrap();
    assert_eq!(rule(&no_evm, &ok_tx), "evm");

    let p = evm_policy();
    assert_eq!(rule(&p, &tx(10, Some(dest()), 1)), "evm.chain_ids");
    assert_eq!(rule(&p, &tx(1, None, 0)), "evm.contract_creation");
    assert_eq!(
        rule(&p, &tx(1, Some([0x11; 20]), 0)),
        "evm.allowed_destinations"
    );
    assert_eq!(rule(&p, &tx(1, Some(dest()), 1001)), "evm.max_value_wei");
}

#[test]
fn evm_absent_lists_and_max_are_strict() {
    let p = Policy::parse(r#"{"enabled":true,"evm":{}}"#).unwrap();
    assert_eq!(
        p.evaluate_evm(&tx(1, Some(dest()), 0)).unwrap_err().rule,
        "evm.chain_ids"
    );
    let p = Policy::parse(r#"{"enabled":true,"evm":{"chain_ids":[1]}}"#).unwrap();
    assert_eq!(
        p.evaluate_evm(&tx(1, Some(dest()), 0)).unwrap_err().rule,
        "evm.allowed_destinations"
    );
    let p = Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"]}}}}"#
    ))
    .unwrap();
    assert_eq!(p.evaluate_evm(&tx(1, Some(dest()), 0)), Ok(()));
    assert_eq!(
        p.evaluate_evm(&tx(1, Some(dest()), 1)).unwrap_err().rule,
        "evm.max_value_wei"
    );
}

#[test]
fn canonical_json_is_sorted_deduplicated_lowercase_and_stable() {
    let p = Policy::parse(&format!(
        r#"{{ "solana": {{"allowed_programs": ["{COMPUTE_BUDGET}", "11111111111111111111111111111111", "{COMPUTE_BUDGET}"]}},
             "evm": {{"max_value_wei": "0007", "allowed_destinations": ["{DEST_EIP55}", "{DEST}", "0x{}"],
                      "chain_ids": [8453, 1, 1]}},
             "enabled": true, "version": 1 }}"#,
        "AB".repeat(20)
    ))
    .unwrap();
    let canonical = p.canonical_json();
    assert_eq!(
        canonical,
        format!(
            r#"{{"version":1,"enabled":true,"evm":{{"chain_ids":[1,8453],"allowed_destinations":["{DEST}","0x{}"],"max_value_wei":"7"}},"solana":{{"allowed_programs":["11111111111111111111111111111111","{COMPUTE_BUDGET}"],"max_lamports_per_transfer":0}}}}"#,
            "ab".repeat(20)
        )
    );
    let again = Policy::parse(&canonical).unwrap();
    assert_eq!(again, p);
    assert_eq!(again.canonical_json(), canonical);
    assert_eq!(
        Policy::parse(r#"{"enabled":false}"#)
            .unwrap()
            .canonical_json(),
        r#"{"version":1,"enabled":false}"#
    );
}

#[test]
fn rejects_invalid_policies() {
    let long_list = format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[{}]}}}}"#,
        (1..=257)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases = [
        "not json".to_string(),
        "{}".to_string(),                              // enabled required
        r#"{"enabled":true,"unknown":1}"#.to_string(), // unknown field
        r#"{"enabled":true,"evm":{"chain_ids":[1],"max_gas":1}}"#.to_string(), // unknown nested field
        r#"{"enabled":true,"enabled":false}"#.to_string(),                     // duplicate field
        r#"{"version":2,"enabled":true}"#.to_string(),                         // newer format
        r#"{"enabled":true,"evm":{"chain_ids":[0]}}"#.to_string(),
        r#"{"enabled":true,"evm":{"chain_ids":[-1]}}"#.to_string(),
        r#"{"enabled":true,"evm":{"allowed_destinations":["0x1234"]}}"#.to_string(),
        format!(
            r#"{{"enabled":true,"evm":{{"allowed_destinations":["{}"]}}}}"#,
            &DEST[2..]
        ),
        // mixed case with one checksum letter flipped
        format!(
            r#"{{"enabled":true,"evm":{{"allowed_destinations":["{}"]}}}}"#,
            DEST_EIP55.replace("aAeb", "aaeb")
        ),
        r#"{"enabled":true,"evm":{"max_value_wei":"1e18"}}"#.to_string(),
        r#"{"enabled":true,"evm":{"max_value_wei":""}}"#.to_string(),
        r#"{"enabled":true,"evm":{"max_value_wei":"-1"}}"#.to_string(),
        r#"{"enabled":true,"evm":{"max_value_wei":1000}}"#.to_string(),
        format!(
            r#"{{"enabled":true,"evm":{{"max_value_wei":"{}"}}}}"#,
            "9".repeat(78)
        ), // > 2^256
        r#"{"enabled":true,"solana":{"allowed_programs":["0OIl"]}}"#.to_string(),
        r#"{"enabled":true,"solana":{"allowed_programs":["1111"]}}"#.to_string(),
        r#"{"enabled":true,"solana":{"max_lamports_per_transfer":-5}}"#.to_string(),
        long_list,
    ];
    for json in &cases {
        assert!(
            matches!(Policy::parse(json), Err(SignerError::InvalidPolicy { .. })),
            "accepted: {json}"
        );
    }
    let huge = format!(
        r#"{{"enabled":true,"pad":"{}"}}"#,
        "x".repeat(MAX_POLICY_BYTES)
    );
    assert!(matches!(
        Policy::parse(&huge),
        Err(SignerError::Oversize { .. })
    ));
    // the largest valid value parses
    let max = U256::MAX.to_string();
    let p = Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"max_value_wei":"{max}"}}}}"#
    ))
    .unwrap();
    assert_eq!(p.evm().unwrap().max_value_wei, U256::MAX);
}

// ---- Solana ----

fn sol_key(n: u8) -> [u8; 32] {
    [n; 32]
}

fn transfer(from: [u8; 32], to: [u8; 32], lamports: u64) -> Instruction {
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    Instruction::new_with_bytes(
        SolAddress::from(SYSTEM_PROGRAM_ID),
        &data,
        vec![
            AccountMeta::new(SolAddress::from(from), true),
            AccountMeta::new(SolAddress::from(to), false),
        ],
    )
}

fn payload(payer: [u8; 32], ixs: &[Instruction]) -> SolanaPayload {
    let msg = Message::new_with_blockhash(
        ixs,
        Some(&SolAddress::from(payer)),
        &Hash::new_from_array([1; 32]),
    );
    decode(&wincode::serialize(&VersionedMessage::Legacy(msg)).unwrap()).unwrap()
}

fn solana_policy() -> Policy {
    Policy::parse(
        r#"{"enabled":true,"solana":{"allowed_programs":["11111111111111111111111111111111"],
            "max_lamports_per_transfer":5000}}"#,
    )
    .unwrap()
}

#[test]
fn solana_allows_listed_program_within_limit() {
    let payer = sol_key(1);
    let p = payload(
        payer,
        &[
            transfer(payer, sol_key(2), 5000),
            transfer(payer, sol_key(3), 1),
        ],
    );
    assert_eq!(solana_policy().evaluate_solana(&p, &payer), Ok(()));
}

#[test]
fn rejects_solana_disabled_section_signer_program_and_amount() {
    let payer = sol_key(1);
    let ok = payload(payer, &[transfer(payer, sol_key(2), 10)]);
    let rule =
        |pol: &Policy, p: &SolanaPayload, s: &[u8; 32]| pol.evaluate_solana(p, s).unwrap_err().rule;

    let disabled = Policy::parse(r#"{"enabled":false,"solana":{}}"#).unwrap();
    assert_eq!(rule(&disabled, &ok, &payer), "enabled");
    assert_eq!(rule(&evm_policy(), &ok, &payer), "solana");
    assert_eq!(rule(&solana_policy(), &ok, &sol_key(2)), "solana.signer");

    let other_program = Instruction::new_with_bytes(
        SolAddress::from(sol_key(9)),
        &[1, 2, 3],
        vec![AccountMeta::new(SolAddress::from(payer), true)],
    );
    let p = payload(payer, &[transfer(payer, sol_key(2), 1), other_program]);
    assert_eq!(
        rule(&solana_policy(), &p, &payer),
        "solana.allowed_programs"
    );

    let p = payload(
        payer,
        &[
            transfer(payer, sol_key(2), 1),
            transfer(payer, sol_key(3), 5001),
        ],
    );
    assert_eq!(
        rule(&solana_policy(), &p, &payer),
        "solana.max_lamports_per_transfer"
    );

    let unknown = Instruction::new_with_bytes(
        SolAddress::from(SYSTEM_PROGRAM_ID),
        &[77, 0, 0, 0],
        vec![AccountMeta::new(SolAddress::from(payer), true)],
    );
    assert_eq!(
        rule(&solana_policy(), &payload(payer, &[unknown]), &payer),
        "solana.system_instructions"
    );
}

#[test]
fn rejects_solana_assign_of_the_signers_account() {
    // A zero-lamport Assign would pass a lamport limit, yet makes the attacker's
    // program the owner of the key's account: it can then debit all of it.
    let payer = sol_key(1);
    let mut data = 1u32.to_le_bytes().to_vec();
    data.extend_from_slice(&sol_key(0xaa));
    let assign = Instruction::new_with_bytes(
        SolAddress::from(SYSTEM_PROGRAM_ID),
        &data,
        vec![AccountMeta::new(SolAddress::from(payer), true)],
    );
    let p = payload(payer, &[transfer(payer, sol_key(2), 1), assign]);
    assert_eq!(
        solana_policy()
            .evaluate_solana(&p, &payer)
            .unwrap_err()
            .rule,
        "solana.system_instructions"
    );
}

#[test]
fn solana_absent_fields_are_strict() {
    let payer = sol_key(1);
    let p = payload(payer, &[transfer(payer, sol_key(2), 1)]);
    let no_programs =
        Policy::parse(r#"{"enabled":true,"solana":{"max_lamports_per_transfer":10}}"#).unwrap();
    assert_eq!(
        no_programs.evaluate_solana(&p, &payer).unwrap_err().rule,
        "solana.allowed_programs"
    );
    let no_max = Policy::parse(
        r#"{"enabled":true,"solana":{"allowed_programs":["11111111111111111111111111111111"]}}"#,
    )
    .unwrap();
    assert_eq!(
        no_max.evaluate_solana(&p, &payer).unwrap_err().rule,
        "solana.max_lamports_per_transfer"
    );
    let zero = payload(payer, &[transfer(payer, sol_key(2), 0)]);
    assert_eq!(no_max.evaluate_solana(&zero, &payer), Ok(()));
}

// ---- EVM fee cap ----

/// Fee-capped policy: the cap is 21000 gas at 10 wei per gas.
const FEE_CAP: u64 = 210_000;

fn fee_policy() -> Policy {
    Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],
           "max_value_wei":"1000","max_fee_wei":"{FEE_CAP}"}}}}"#
    ))
    .unwrap()
}

fn tx1559(gas_limit: u64, max_fee_per_gas: u128) -> EvmTx {
    let t = TxEip1559 {
        chain_id: 1,
        nonce: 0,
        gas_limit,
        max_fee_per_gas,
        max_priority_fee_per_gas: 1,
        to: TxKind::Call(dest().into()),
        value: U256::from(1u8),
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    decode_unsigned(&out).unwrap()
}

fn tx_legacy(gas_limit: u64, gas_price: u128) -> EvmTx {
    let t = TxLegacy {
        chain_id: Some(1),
        nonce: 0,
        gas_price,
        gas_limit,
        to: TxKind::Call(dest().into()),
        value: U256::from(1u8),
        input: Bytes::new(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    decode_unsigned(&out).unwrap()
}

fn tx2930(gas_limit: u64, gas_price: u128) -> EvmTx {
    let t = TxEip2930 {
        chain_id: 1,
        nonce: 0,
        gas_price,
        gas_limit,
        to: TxKind::Call(dest().into()),
        value: U256::from(1u8),
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    decode_unsigned(&out).unwrap()
}

/// Builds a transaction of one type from (gas limit, max fee per gas or gas price).
type BuildTx = fn(u64, u128) -> EvmTx;

/// Every accepted type.
fn fee_builders() -> [(&'static str, BuildTx); 3] {
    [
        ("eip1559", tx1559),
        ("legacy", tx_legacy),
        ("eip2930", tx2930),
    ]
}

#[test]
fn allows_fee_at_and_under_cap() {
    let p = fee_policy();
    for (name, build) in fee_builders() {
        assert_eq!(p.evaluate_evm(&build(21_000, 10)), Ok(()), "{name}");
        assert_eq!(p.evaluate_evm(&build(21_000, 9)), Ok(()), "{name}");
        assert_eq!(p.evaluate_evm(&build(1, 210_000)), Ok(()), "{name}");
    }
}

#[test]
fn rejects_fee_over_cap() {
    let p = fee_policy();
    for (name, build) in fee_builders() {
        // One wei per gas over, and one gas over: both exceed the cap.
        for t in [build(21_000, 11), build(21_001, 10), build(1, 210_001)] {
            let d = p.evaluate_evm(&t).unwrap_err();
            assert_eq!(d.rule, "evm.max_fee_wei", "{name}");
            assert!(d.message.contains("210000"), "{name}: {}", d.message);
        }
    }
}

#[test]
fn rejects_fee_over_cap_using_max_fee_not_priority_fee() {
    // EIP-1559: a tiny priority fee does not hide a huge maxFeePerGas.
    let p = fee_policy();
    let t = TxEip1559 {
        chain_id: 1,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 1_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(dest().into()),
        value: U256::ZERO,
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    let tx = decode_unsigned(&out).unwrap();
    assert_eq!(p.evaluate_evm(&tx).unwrap_err().rule, "evm.max_fee_wei");
}

#[test]
fn rejects_fee_that_would_wrap_a_narrow_product() {
    // u64::MAX × u128::MAX = 2^192 - 2^128 - 2^64 + 1. Wrapped to u128 it is
    // 2^128 - 2^64 + 1, under a u128::MAX cap; computed in 256 bits it is far over.
    let cap = U256::from(u128::MAX);
    let p = Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],
           "max_value_wei":"1","max_fee_wei":"{cap}"}}}}"#
    ))
    .unwrap();
    for (name, build) in fee_builders() {
        let t = build(u64::MAX, u128::MAX);
        assert!(
            U256::from(u128::from(u64::MAX).wrapping_mul(u128::MAX)) <= cap,
            "the wrapped product would pass"
        );
        assert_eq!(
            p.evaluate_evm(&t).unwrap_err().rule,
            "evm.max_fee_wei",
            "{name}"
        );
    }
    // With the cap at U256::MAX the same transaction is allowed: the product is
    // exact, not saturated into a refusal.
    let p = Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],
           "max_value_wei":"1","max_fee_wei":"{}"}}}}"#,
        U256::MAX
    ))
    .unwrap();
    for (name, build) in fee_builders() {
        assert_eq!(
            p.evaluate_evm(&build(u64::MAX, u128::MAX)),
            Ok(()),
            "{name}"
        );
    }
}

#[test]
fn absent_fee_cap_means_no_cap() {
    // Today's policies (no max_fee_wei) keep their meaning: any fee passes.
    let p = evm_policy();
    assert_eq!(p.evm().unwrap().max_fee_wei, None);
    for (name, build) in fee_builders() {
        assert_eq!(
            p.evaluate_evm(&build(u64::MAX, u128::MAX)),
            Ok(()),
            "{name}"
        );
    }
}

#[test]
fn fee_cap_canonical_json_round_trips() {
    let p = Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"max_fee_wei":"000123","chain_ids":[1],
           "allowed_destinations":["{DEST}"]}}}}"#
    ))
    .unwrap();
    let canonical = p.canonical_json();
    assert_eq!(
        canonical,
        format!(
            r#"{{"version":1,"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],"max_value_wei":"0","max_fee_wei":"123"}}}}"#
        )
    );
    let again = Policy::parse(&canonical).unwrap();
    assert_eq!(again, p);
    assert_eq!(again.evm().unwrap().max_fee_wei, Some(U256::from(123u8)));
    assert_eq!(again.canonical_json(), canonical);
    // A cap of 0 is a cap (only zero-fee transactions), distinct from no cap.
    let zero = Policy::parse(r#"{"enabled":true,"evm":{"max_fee_wei":"0"}}"#).unwrap();
    assert_eq!(zero.evm().unwrap().max_fee_wei, Some(U256::ZERO));
    assert!(zero.canonical_json().contains(r#""max_fee_wei":"0""#));
}

#[test]
fn rejects_invalid_fee_cap() {
    let cases = [
        r#""1e18""#.to_string(),
        r#""0x10""#.to_string(),
        r#""""#.to_string(),
        r#"" 1""#.to_string(),
        r#""1.5""#.to_string(),
        r#""-1""#.to_string(),
        r#""+1""#.to_string(),
        "1000".to_string(), // a JSON number, not a string
        "-1".to_string(),
        "null".to_string(),                 // refused: would read as "no cap"
        format!(r#""{}""#, "9".repeat(78)), // > 2^256
        // 2^256 exactly: one over U256::MAX
        r#""115792089237316195423570985008687907853269984665640564039457584007913129639936""#
            .to_string(),
        format!(r#""{}""#, "1".repeat(79)), // too many digits
    ];
    for v in &cases {
        let json = format!(r#"{{"enabled":true,"evm":{{"max_fee_wei":{v}}}}}"#);
        match Policy::parse(&json) {
            Err(SignerError::InvalidPolicy { .. }) => {}
            other => panic!("accepted or wrong error for {v}: {other:?}"),
        }
    }
    let max = U256::MAX.to_string();
    let p = Policy::parse(&format!(
        r#"{{"enabled":true,"evm":{{"max_fee_wei":"{max}"}}}}"#
    ))
    .unwrap();
    assert_eq!(p.evm().unwrap().max_fee_wei, Some(U256::MAX));
}

/// The module docs' example as it stood before `max_fee_wei` existed, concretised,
/// with its canonical bytes computed by the code of that time. Its canonical bytes are pinned: they are
/// what the MAC of every stored policy covers, so no new optional field may change
/// them (see "Rules for maintainers").
#[test]
fn canonical_json_of_the_module_example_is_pinned() {
    let p = Policy::parse(&format!(
        r#"{{
          "version": 1,
          "enabled": true,
          "evm": {{
            "chain_ids": [1, 8453],
            "allowed_destinations": ["{DEST_EIP55}"],
            "max_value_wei": "1000000000000000000"
          }},
          "solana": {{
            "allowed_programs": ["11111111111111111111111111111111"],
            "max_lamports_per_transfer": 1000000000
          }}
        }}"#
    ))
    .unwrap();
    assert_eq!(
        p.canonical_json(),
        concat!(
            r#"{"version":1,"enabled":true,"evm":{"chain_ids":[1,8453],"#,
            r#""allowed_destinations":["0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"],"#,
            r#""max_value_wei":"1000000000000000000"},"solana":{"allowed_programs":"#,
            r#"["11111111111111111111111111111111"],"max_lamports_per_transfer":1000000000}}"#
        )
    );
}

#[test]
fn denial_display_names_the_rule() {
    let d = deny(Rule::EvmChainIds, "chain id 5 is not allowed");
    assert_eq!(
        d.to_string(),
        "denied by policy rule evm.chain_ids: chain id 5 is not allowed"
    );
}

// ---- Solana: System allow-list, Compute Budget, fee and per-transaction caps ----

const SYSTEM: &str = "11111111111111111111111111111111";

fn system_ix(data: Vec<u8>, accounts: Vec<AccountMeta>) -> Instruction {
    Instruction::new_with_bytes(SolAddress::from(SYSTEM_PROGRAM_ID), &data, accounts)
}

fn with_variant(v: u32, rest: &[&[u8]]) -> Vec<u8> {
    let mut out = v.to_le_bytes().to_vec();
    for r in rest {
        out.extend_from_slice(r);
    }
    out
}

fn seed(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// One instruction of every System variant other than Transfer and CreateAccount,
/// acting on the key's own account `me` (the attack run's targets), with its name.
fn non_default_system_instructions(me: [u8; 32]) -> Vec<(SystemInstructionName, Instruction)> {
    use SystemInstructionName as N;
    let acct = |k: [u8; 32], signer: bool| AccountMeta::new(SolAddress::from(k), signer);
    let ro = |k: [u8; 32]| AccountMeta::new_readonly(SolAddress::from(k), false);
    let attacker = [0xaa; 32];
    let u = |n: u64| n.to_le_bytes();
    vec![
        (
            N::Assign,
            system_ix(with_variant(1, &[&attacker]), vec![acct(me, true)]),
        ),
        (
            N::CreateAccountWithSeed,
            system_ix(
                with_variant(3, &[&me, &seed("s"), &u(1), &u(0), &attacker]),
                vec![acct(me, true), acct(sol_key(7), false)],
            ),
        ),
        (
            N::AdvanceNonceAccount,
            system_ix(
                with_variant(4, &[]),
                vec![acct(sol_key(8), false), ro(sol_key(20)), acct(me, true)],
            ),
        ),
        (
            N::WithdrawNonceAccount,
            system_ix(
                with_variant(5, &[&u(1)]),
                vec![
                    acct(sol_key(8), false),
                    acct(attacker, false),
                    ro(sol_key(20)),
                    ro(sol_key(21)),
                    acct(me, true),
                ],
            ),
        ),
        (
            N::InitializeNonceAccount,
            system_ix(
                with_variant(6, &[&attacker]),
                vec![acct(me, true), ro(sol_key(20)), ro(sol_key(21))],
            ),
        ),
        (
            N::AuthorizeNonceAccount,
            system_ix(
                with_variant(7, &[&attacker]),
                vec![acct(sol_key(8), false), acct(me, true)],
            ),
        ),
        (
            N::Allocate,
            system_ix(with_variant(8, &[&u(80)]), vec![acct(me, true)]),
        ),
        (
            N::AllocateWithSeed,
            system_ix(
                with_variant(9, &[&me, &seed("s"), &u(1), &attacker]),
                vec![acct(sol_key(7), false), acct(me, true)],
            ),
        ),
        (
            N::AssignWithSeed,
            system_ix(
                with_variant(10, &[&me, &seed("s"), &attacker]),
                vec![acct(sol_key(7), false), acct(me, true)],
            ),
        ),
        (
            N::TransferWithSeed,
            system_ix(
                with_variant(11, &[&u(1), &seed("s"), &attacker]),
                vec![
                    acct(sol_key(7), false),
                    acct(me, true),
                    acct(attacker, false),
                ],
            ),
        ),
        (
            N::UpgradeNonceAccount,
            system_ix(with_variant(12, &[]), vec![acct(me, true)]),
        ),
    ]
}

fn create_account_ix(from: [u8; 32], new: [u8; 32], lamports: u64) -> Instruction {
    system_ix(
        with_variant(0, &[&lamports.to_le_bytes(), &0u64.to_le_bytes(), &[0; 32]]),
        vec![
            AccountMeta::new(SolAddress::from(from), true),
            AccountMeta::new(SolAddress::from(new), true),
        ],
    )
}

fn capped_policy(extra: &str) -> Policy {
    Policy::parse_new(&format!(
        r#"{{"enabled":true,"solana":{{"allowed_programs":["{SYSTEM}","{COMPUTE_BUDGET}"],
            "max_lamports_per_transfer":1000000000,"max_lamports_per_transaction":1000000000,
            "max_fee_lamports":100000{extra}}}}}"#
    ))
    .unwrap()
}

#[test]
fn rejects_every_non_default_system_instruction_by_default() {
    let me = sol_key(1);
    let policies = [solana_policy(), capped_policy("")];
    assert_eq!(non_default_system_instructions(me).len(), 11);
    for (name, ix) in non_default_system_instructions(me) {
        let p = payload(me, &[ix]);
        for policy in &policies {
            let d = policy.evaluate_solana(&p, &me).unwrap_err();
            assert_eq!(d.rule, "solana.system_instructions", "{name:?}");
            assert!(d.message.contains(name.as_str()), "{}", d.message);
        }
    }
}

#[test]
fn rejects_nonce_takeover_and_allocate_freeze_of_the_keys_account() {
    // The attack run's transactions: Allocate(80) + InitializeNonceAccount(authority =
    // attacker) on the key's own account, and Allocate(1) alone.
    let me = sol_key(1);
    let all = non_default_system_instructions(me);
    let find = |n: SystemInstructionName| all.iter().find(|(m, _)| *m == n).unwrap().1.clone();
    let allocate = find(SystemInstructionName::Allocate);
    let init = find(SystemInstructionName::InitializeNonceAccount);
    for ixs in [vec![allocate.clone(), init], vec![allocate]] {
        let p = payload(me, &ixs);
        assert_eq!(
            capped_policy("").evaluate_solana(&p, &me).unwrap_err().rule,
            "solana.system_instructions"
        );
    }
}

#[test]
fn allows_each_system_instruction_only_when_named() {
    let me = sol_key(1);
    for (name, ix) in non_default_system_instructions(me) {
        let p = payload(me, &[ix]);
        let named = capped_policy(&format!(r#","system_instructions":["{}"]"#, name.as_str()));
        assert_eq!(named.evaluate_solana(&p, &me), Ok(()), "{name:?}");
        // naming another one does not allow it
        let other = capped_policy(r#","system_instructions":["transfer","create_account"]"#);
        assert_eq!(
            other.evaluate_solana(&p, &me).unwrap_err().rule,
            "solana.system_instructions"
        );
    }
    // An explicit list replaces the default: without "transfer", a transfer is refused.
    let p = payload(me, &[transfer(me, sol_key(2), 1)]);
    let no_transfer = capped_policy(r#","system_instructions":["advance_nonce_account"]"#);
    assert_eq!(
        no_transfer.evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.system_instructions"
    );
    let none = capped_policy(r#","system_instructions":[]"#);
    assert_eq!(
        none.evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.system_instructions"
    );
}

#[test]
fn allowed_lamport_moving_instructions_count_against_the_caps() {
    let me = sol_key(1);
    let all = non_default_system_instructions(me);
    let policy = capped_policy(
        r#","system_instructions":["transfer","withdraw_nonce_account","transfer_with_seed","create_account_with_seed"]"#,
    );
    for name in [
        SystemInstructionName::WithdrawNonceAccount,
        SystemInstructionName::TransferWithSeed,
        SystemInstructionName::CreateAccountWithSeed,
    ] {
        let ix = all.iter().find(|(m, _)| *m == name).unwrap().1.clone();
        // 1 lamport each, plus a transfer that fills the total cap exactly
        let p = payload(me, &[ix.clone(), transfer(me, sol_key(2), 999_999_999)]);
        assert_eq!(policy.evaluate_solana(&p, &me), Ok(()), "{name:?}");
        let p = payload(me, &[ix, transfer(me, sol_key(2), 1_000_000_000)]);
        assert_eq!(
            policy.evaluate_solana(&p, &me).unwrap_err().rule,
            "solana.max_lamports_per_transaction",
            "{name:?}"
        );
    }
}

#[test]
fn create_account_funding_a_fresh_signing_account_is_allowed() {
    let me = sol_key(1);
    let p = payload(me, &[create_account_ix(me, sol_key(2), 1_000_000)]);
    assert_eq!(capped_policy("").evaluate_solana(&p, &me), Ok(()));
    assert_eq!(
        solana_policy().evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.max_lamports_per_transfer"
    );
}

#[test]
fn rejects_create_account_of_the_key_itself_or_of_a_non_signer() {
    let me = sol_key(1);
    let funder = sol_key(3);
    // The key as the new account: its address would become owned by another program.
    let p = payload(funder, &[create_account_ix(funder, me, 1)]);
    assert_eq!(
        capped_policy("").evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.system_instructions"
    );
    // A new account that is not a signer (hand-compiled: the SDK would mark it).
    let msg = Message::new_with_compiled_instructions(
        1,
        0,
        1,
        vec![
            SolAddress::from(me),
            SolAddress::from(sol_key(2)),
            SolAddress::from(SYSTEM_PROGRAM_ID),
        ],
        Hash::new_from_array([1; 32]),
        vec![
            solana_message::compiled_instruction::CompiledInstruction::new_from_raw_parts(
                2,
                with_variant(0, &[&1u64.to_le_bytes(), &0u64.to_le_bytes(), &[0; 32]]),
                vec![0, 1],
            ),
        ],
    );
    let p = decode(&wincode::serialize(&VersionedMessage::Legacy(msg)).unwrap()).unwrap();
    assert_eq!(
        capped_policy("").evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.system_instructions"
    );
}

#[test]
fn rejects_many_transfers_over_the_per_transaction_total() {
    // Ten 0.9 SOL transfers each pass a 1 SOL per-transfer cap; their 9 SOL total does
    // not pass a 1 SOL per-transaction cap.
    let me = sol_key(1);
    let ixs: Vec<Instruction> = (0..10u8)
        .map(|i| transfer(me, sol_key(100 + i), 900_000_000))
        .collect();
    let p = payload(me, &ixs);
    let d = capped_policy("").evaluate_solana(&p, &me).unwrap_err();
    assert_eq!(d.rule, "solana.max_lamports_per_transaction");
    assert!(d.message.contains("9000000000"), "{}", d.message);
    // the stored reading without the field keeps its meaning: no total cap
    let old = Policy::parse(&format!(
        r#"{{"enabled":true,"solana":{{"allowed_programs":["{SYSTEM}"],"max_lamports_per_transfer":1000000000}}}}"#
    ))
    .unwrap();
    assert_eq!(old.evaluate_solana(&p, &me), Ok(()));
    // the total is exact, not wrapped: two u64::MAX transfers under a u64::MAX cap
    let huge = Policy::parse(&format!(
        r#"{{"enabled":true,"solana":{{"allowed_programs":["{SYSTEM}"],
            "max_lamports_per_transfer":{m},"max_lamports_per_transaction":{m}}}}}"#,
        m = u64::MAX
    ))
    .unwrap();
    let p = payload(
        me,
        &[
            transfer(me, sol_key(2), u64::MAX),
            transfer(me, sol_key(3), u64::MAX),
        ],
    );
    assert_eq!(
        huge.evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.max_lamports_per_transaction"
    );
}

fn cb(data: &[u8]) -> Instruction {
    Instruction::new_with_bytes(
        SolAddress::from(crate::solana::COMPUTE_BUDGET_PROGRAM_ID),
        data,
        vec![],
    )
}

fn cu_limit(units: u32) -> Instruction {
    let mut d = vec![2u8];
    d.extend_from_slice(&units.to_le_bytes());
    cb(&d)
}

fn cu_price(micro_lamports: u64) -> Instruction {
    let mut d = vec![3u8];
    d.extend_from_slice(&micro_lamports.to_le_bytes());
    cb(&d)
}

#[test]
fn allows_a_priority_fee_within_max_fee_lamports() {
    let me = sol_key(1);
    // 5000 + 200_000 × 475_000 / 10⁶ = 5000 + 95_000 = the 100_000 cap exactly
    let p = payload(
        me,
        &[
            cu_limit(200_000),
            cu_price(475_000),
            transfer(me, sol_key(2), 1),
        ],
    );
    assert_eq!(capped_policy("").evaluate_solana(&p, &me), Ok(()));
    // default limit (1 instruction → 200_000 units, plus 3_000 for the Compute Budget
    // one) at the same price: over the cap; at 465_000: 5000 + 94_395
    let p = payload(me, &[cu_price(475_000), transfer(me, sol_key(2), 1)]);
    assert_eq!(
        capped_policy("").evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.max_fee_lamports"
    );
    let p = payload(me, &[cu_price(465_000), transfer(me, sol_key(2), 1)]);
    assert_eq!(p.max_fee_lamports().unwrap(), 99_395);
    assert_eq!(capped_policy("").evaluate_solana(&p, &me), Ok(()));
}

#[test]
fn rejects_priority_fee_drain_over_max_fee_lamports() {
    let me = sol_key(1);
    // the attack run: 1.4M units × 14.285M micro-lamports ≈ 20 SOL
    let p = payload(
        me,
        &[
            cu_limit(1_400_000),
            cu_price(14_285_000_000),
            transfer(me, sol_key(2), 1),
        ],
    );
    let d = capped_policy("").evaluate_solana(&p, &me).unwrap_err();
    assert_eq!(d.rule, "solana.max_fee_lamports");
    assert!(d.message.contains("19999005000"), "{}", d.message);
    // one micro-lamport over, with the set limit and with the default limit
    for ixs in [
        vec![
            cu_limit(200_000),
            cu_price(475_001),
            transfer(me, sol_key(2), 1),
        ],
        vec![cu_price(475_001), transfer(me, sol_key(2), 1)],
        vec![
            cu_limit(200_001),
            cu_price(475_000),
            transfer(me, sol_key(2), 1),
        ],
    ] {
        assert_eq!(
            capped_policy("")
                .evaluate_solana(&payload(me, &ixs), &me)
                .unwrap_err()
                .rule,
            "solana.max_fee_lamports"
        );
    }
    // The default limit grows with the instruction count: 3 transfers → 600_000 units.
    let p = payload(
        me,
        &[
            cu_price(475_000),
            transfer(me, sol_key(2), 1),
            transfer(me, sol_key(3), 1),
            transfer(me, sol_key(4), 1),
        ],
    );
    assert_eq!(
        capped_policy("").evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.max_fee_lamports"
    );
}

#[test]
fn rejects_unknown_or_duplicate_compute_budget_instructions_even_without_a_fee_cap() {
    let me = sol_key(1);
    let old = Policy::parse(&format!(
        r#"{{"enabled":true,"solana":{{"allowed_programs":["{SYSTEM}","{COMPUTE_BUDGET}"],"max_lamports_per_transfer":10}}}}"#
    ))
    .unwrap();
    for ixs in [
        vec![cu_limit(1), cu_limit(1)],
        vec![cu_price(1), cu_price(2)],
        vec![cb(&[0, 1, 0, 0, 0, 1, 0, 0, 0])],
        vec![cb(&[7])],
        vec![cb(&[3, 1, 0, 0, 0])],
    ] {
        let p = payload(me, &ixs);
        for policy in [&old, &capped_policy("")] {
            assert_eq!(
                policy.evaluate_solana(&p, &me).unwrap_err().rule,
                "solana.compute_budget"
            );
        }
    }
    // stored policy without a fee cap: any (well-formed) fee passes
    let p = payload(
        me,
        &[
            cu_limit(u32::MAX),
            cu_price(u64::MAX),
            transfer(me, sol_key(2), 1),
        ],
    );
    assert_eq!(old.evaluate_solana(&p, &me), Ok(()));
}

#[test]
fn rejects_compute_budget_when_the_program_is_not_allowed() {
    let me = sol_key(1);
    let p = payload(me, &[cu_price(1), transfer(me, sol_key(2), 1)]);
    assert_eq!(
        solana_policy().evaluate_solana(&p, &me).unwrap_err().rule,
        "solana.allowed_programs"
    );
}

// ---- strict (new) and lenient (stored) reading ----

#[test]
fn parse_new_requires_the_fee_caps_of_each_present_section() {
    let cases = [
        (
            format!(
                r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"]}}}}"#
            ),
            vec!["evm.max_fee_wei"],
        ),
        (
            format!(
                r#"{{"enabled":true,"solana":{{"allowed_programs":["{SYSTEM}"],"max_lamports_per_transfer":1}}}}"#
            ),
            vec![
                "solana.max_lamports_per_transaction",
                "solana.max_fee_lamports",
            ],
        ),
        (
            r#"{"enabled":true,"solana":{"max_fee_lamports":1}}"#.to_string(),
            vec!["solana.max_lamports_per_transaction"],
        ),
        (
            r#"{"enabled":true,"solana":{"max_lamports_per_transaction":1}}"#.to_string(),
            vec!["solana.max_fee_lamports"],
        ),
        (
            r#"{"enabled":true,"evm":{},"solana":{}}"#.to_string(),
            vec![
                "evm.max_fee_wei",
                "solana.max_lamports_per_transaction",
                "solana.max_fee_lamports",
            ],
        ),
    ];
    for (json, missing) in &cases {
        // the stored reading accepts it and reports what is missing
        let lenient = Policy::parse(json).unwrap();
        assert_eq!(&lenient.missing_fee_caps(), missing, "{json}");
        match Policy::parse_new(json) {
            Err(SignerError::InvalidPolicy { message }) => {
                for m in missing {
                    assert!(message.contains(m), "{message}");
                }
            }
            other => panic!("accepted or wrong error for {json}: {other:?}"),
        }
    }
}

#[test]
fn parse_new_accepts_policies_that_state_their_caps() {
    for json in [
        r#"{"enabled":true}"#.to_string(),
        r#"{"enabled":false}"#.to_string(),
        r#"{"enabled":true,"evm":{"max_fee_wei":"0"}}"#.to_string(),
        r#"{"enabled":true,"solana":{"max_fee_lamports":0,"max_lamports_per_transaction":0}}"#
            .to_string(),
    ] {
        let p = Policy::parse_new(&json).unwrap();
        assert!(p.missing_fee_caps().is_empty());
        assert_eq!(Policy::parse_new(&p.canonical_json()).unwrap(), p);
    }
    assert!(capped_policy("").missing_fee_caps().is_empty());
}

#[test]
fn rejects_invalid_new_solana_fields() {
    for v in [
        r#""max_fee_lamports":null"#,
        r#""max_fee_lamports":-1"#,
        r#""max_fee_lamports":"5""#,
        r#""max_fee_lamports":18446744073709551616"#,
        r#""max_lamports_per_transaction":null"#,
        r#""max_lamports_per_transaction":1.5"#,
        r#""system_instructions":null"#,
        r#""system_instructions":"transfer""#,
        r#""system_instructions":["Transfer"]"#,
        r#""system_instructions":["transfer","nonce"]"#,
        r#""system_instructions":[2]"#,
    ] {
        let json = format!(r#"{{"enabled":true,"solana":{{{v}}}}}"#);
        assert!(
            matches!(Policy::parse(&json), Err(SignerError::InvalidPolicy { .. })),
            "accepted: {json}"
        );
    }
    let long = format!(
        r#"{{"enabled":true,"solana":{{"system_instructions":[{}]}}}}"#,
        vec![r#""transfer""#; MAX_LIST_ENTRIES + 1].join(",")
    );
    assert!(matches!(
        Policy::parse(&long),
        Err(SignerError::InvalidPolicy { .. })
    ));
}

#[test]
fn new_solana_fields_canonicalize_in_order_sorted_and_deduplicated() {
    let p = Policy::parse(&format!(
        r#"{{"enabled":true,"solana":{{"max_fee_lamports":7,
            "system_instructions":["upgrade_nonce_account","transfer","create_account","transfer"],
            "max_lamports_per_transaction":9,"allowed_programs":["{SYSTEM}"],"max_lamports_per_transfer":3}}}}"#
    ))
    .unwrap();
    let canonical = p.canonical_json();
    assert_eq!(
        canonical,
        format!(
            concat!(
                r#"{{"version":1,"enabled":true,"solana":{{"allowed_programs":["{}"],"#,
                r#""max_lamports_per_transfer":3,"#,
                r#""system_instructions":["create_account","transfer","upgrade_nonce_account"],"#,
                r#""max_lamports_per_transaction":9,"max_fee_lamports":7}}}}"#
            ),
            SYSTEM
        )
    );
    let again = Policy::parse(&canonical).unwrap();
    assert_eq!(again, p);
    assert_eq!(again.canonical_json(), canonical);
    // an empty list is kept (it allows no System instruction), distinct from absent
    let empty = Policy::parse(r#"{"enabled":true,"solana":{"system_instructions":[]}}"#).unwrap();
    assert!(empty
        .canonical_json()
        .contains(r#""system_instructions":[]"#));
    assert_ne!(
        empty,
        Policy::parse(r#"{"enabled":true,"solana":{}}"#).unwrap()
    );
}

/// Canonical bytes of documents written before the new fields: unchanged by them (the
/// MAC of every stored policy covers these bytes). Each expected string is what the
/// code before this change produced.
#[test]
fn canonical_json_of_old_policies_is_unchanged() {
    let cases = [
        (
            format!(r#"{{"enabled":true,"solana":{{"allowed_programs":["{SYSTEM}","{COMPUTE_BUDGET}"],"max_lamports_per_transfer":1000000000}}}}"#),
            format!(r#"{{"version":1,"enabled":true,"solana":{{"allowed_programs":["{SYSTEM}","{COMPUTE_BUDGET}"],"max_lamports_per_transfer":1000000000}}}}"#),
        ),
        (
            r#"{"enabled":true,"solana":{}}"#.to_string(),
            r#"{"version":1,"enabled":true,"solana":{"allowed_programs":[],"max_lamports_per_transfer":0}}"#.to_string(),
        ),
        (
            format!(r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"]}}}}"#),
            format!(r#"{{"version":1,"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{DEST}"],"max_value_wei":"0"}}}}"#),
        ),
    ];
    for (json, expected) in &cases {
        let p = Policy::parse(json).unwrap();
        assert_eq!(&p.canonical_json(), expected);
        let s = p.solana();
        if let Some(s) = s {
            assert_eq!(s.system_instructions, None);
            assert_eq!(s.max_fee_lamports, None);
            assert_eq!(s.max_lamports_per_transaction, None);
        }
    }
}

#[test]
fn rejects_priority_fee_of_a_message_with_only_compute_budget_instructions() {
    // Attack (issue 6 follow-up): a message whose only instruction is
    // SetComputeUnitPrice. There is no non-Compute-Budget instruction, so a default
    // limit of 200_000 × 0 = 0 units made the bound 5000 lamports; agave
    // (reserve_minimal_cus_for_builtin_instructions, active on mainnet and in LiteSVM)
    // gives every builtin instruction, Compute Budget included, 3000 units, so the
    // runtime charges 3000 × price / 10⁶: with 10¹³ micro-lamports, 30 SOL.
    let me = sol_key(1);
    for ixs in [
        vec![cu_price(10_000_000_000_000)],
        vec![
            cu_price(10_000_000_000_000),
            cb(&[1, 0, 0, 1, 0]),
            cb(&[4, 0, 0, 1, 0]),
        ],
    ] {
        let p = payload(me, &ixs);
        assert!(p.max_fee_lamports().unwrap() >= 30_000_005_000);
        assert_eq!(
            capped_policy("").evaluate_solana(&p, &me).unwrap_err().rule,
            "solana.max_fee_lamports"
        );
    }
}

#[test]
fn parse_new_refuses_null_members_that_parse_reads_as_absent() {
    // Version 1's sections read `null` as "absent" (serde's Option); the schema calls
    // it invalid (v2's members already refuse it), and a reader of the text could take
    // `"solana": null` for anything.
    for (json, path) in [
        (r#"{"enabled":true,"solana":null}"#, "solana"),
        (r#"{"enabled":true,"evm":null}"#, "evm"),
        (
            r#"{"version":1,"enabled":false,"evm":null,"solana":null}"#,
            "evm",
        ),
    ] {
        Policy::parse(json).unwrap();
        let e = Policy::parse_new(json).unwrap_err().to_string();
        assert!(e.contains(&format!("`{path}` is null")), "{json}: {e}");
    }
    // The same policies without the member are new policies as before.
    Policy::parse_new(r#"{"enabled":true}"#).unwrap();
}
