//! Tests of the policy module (parse, canonical form, evaluation).

use super::*;
use crate::evm::decode_unsigned;
use crate::solana::{decode, SYSTEM_PROGRAM_ID};
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
