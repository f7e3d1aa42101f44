//! Property tests (issue 8): for random version 2 policies and random real payloads,
//! the engine never approves what a separate, deliberately simple reference
//! evaluation of the same policy refuses. The reference reads the generator's
//! parameters, not the parsed policy or the decoded payload.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use alloy_primitives::U256;
use common::*;
use ekms_signer::solana::TOKEN_PROGRAM_ID;
use ekms_signer::{decode, PayloadKind, Policy, SignerIdentity};
use proptest::prelude::*;

const ADDRS: [[u8; 20]; 3] = [[0xa1; 20], [0xa2; 20], [0xa3; 20]];
const TOKEN: [u8; 20] = [0x70; 20];
const PARTIES: [[u8; 20]; 3] = [[0xb1; 20], [0xb2; 20], [0xb3; 20]];

#[derive(Debug, Clone)]
struct EvmParams {
    chains: Vec<u64>,
    dests: Vec<usize>,
    max_value: u64,
    value_window: Option<u64>,
    max_fee_wei: u64,
    max_fee_per_gas: Option<u64>,
    max_priority: Option<u64>,
    gas_limit: Option<u64>,
    token: Option<(u64, Option<u64>)>,
    recipients: Vec<usize>,
    spenders: Vec<usize>,
    allow_unlimited: bool,
}

#[derive(Debug, Clone)]
enum Data {
    Empty,
    Transfer(usize, u64),
    Approve(usize, Option<u64>),
    Selector([u8; 4]),
}

#[derive(Debug, Clone)]
struct EvmTxParams {
    chain: u64,
    to: Option<usize>, // index into ADDRS, 3 = TOKEN, None = creation
    value: u64,
    gas: u64,
    fee: u64,
    prio: u64,
    data: Data,
}

fn subset(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::btree_set(0..n, 0..=n).prop_map(|s| s.into_iter().collect())
}

prop_compose! {
    fn evm_params()(
        chains in proptest::collection::btree_set(1u64..4, 0..=3),
        dests in subset(3),
        max_value in 0u64..1000,
        value_window in proptest::option::of(0u64..1500),
        max_fee_wei in 0u64..2_000_000,
        max_fee_per_gas in proptest::option::of(0u64..100),
        max_priority in proptest::option::of(0u64..100),
        gas_limit in proptest::option::of(0u64..50_000),
        token in proptest::option::of((0u64..1000, proptest::option::of(0u64..1500))),
        recipients in subset(3),
        spenders in subset(3),
        allow_unlimited in any::<bool>(),
    ) -> EvmParams {
        EvmParams { chains: chains.into_iter().collect(), dests, max_value, value_window, max_fee_wei,
            max_fee_per_gas, max_priority, gas_limit, token, recipients, spenders, allow_unlimited }
    }
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        Just(Data::Empty),
        (0usize..3, 0u64..1500).prop_map(|(r, a)| Data::Transfer(r, a)),
        (0usize..3, proptest::option::of(0u64..1500)).prop_map(|(s, a)| Data::Approve(s, a)),
        any::<[u8; 4]>().prop_map(Data::Selector),
    ]
}

prop_compose! {
    fn evm_tx()(
        chain in 1u64..5,
        to in proptest::option::of(0usize..4),
        value in 0u64..1500,
        gas in 1u64..60_000,
        fee in 0u64..120,
        prio in 0u64..120,
        data in data(),
    ) -> EvmTxParams {
        EvmTxParams { chain, to, value, gas, fee, prio: prio.min(fee), data }
    }
}

fn list(idx: &[usize], of: &[[u8; 20]]) -> String {
    idx.iter()
        .map(|i| format!("\"{}\"", hex20(of[*i])))
        .collect::<Vec<_>>()
        .join(",")
}

fn evm_json(p: &EvmParams) -> String {
    let mut s = format!(
        r#"{{"version":2,"enabled":true,"allowed_kinds":["evm_transaction"],"evm":{{"chain_ids":[{}],"allowed_destinations":[{}],"max_value_wei":"{}","max_fee_wei":"{}","recipients":[{}],"spenders":[{}],"allow_unlimited_approve":{}"#,
        p.chains
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        list(&p.dests, &ADDRS),
        p.max_value,
        p.max_fee_wei,
        list(&p.recipients, &PARTIES),
        list(&p.spenders, &PARTIES),
        p.allow_unlimited
    );
    if let Some(w) = p.value_window {
        s += &format!(r#","max_value_wei_per_window":{{"max":"{w}","window_secs":60}}"#);
    }
    if let Some(c) = p.max_fee_per_gas {
        s += &format!(r#","max_fee_per_gas":"{c}""#);
    }
    if let Some(c) = p.max_priority {
        s += &format!(r#","max_priority_fee_per_gas":"{c}""#);
    }
    if let Some(c) = p.gas_limit {
        s += &format!(r#","gas_limit":{c}"#);
    }
    if let Some((max, window)) = p.token {
        s += &format!(r#","tokens":{{"{}":{{"max_per_tx":"{max}""#, hex20(TOKEN));
        if let Some(w) = window {
            s += &format!(r#","per_window":{{"max":"{w}","window_secs":60}}"#);
        }
        s += "}}";
    }
    s + "}}"
}

fn evm_bytes(t: &EvmTxParams) -> Vec<u8> {
    let to = t.to.map(|i| if i == 3 { TOKEN } else { ADDRS[i] });
    let input = match &t.data {
        Data::Empty => vec![],
        Data::Transfer(r, a) => transfer(PARTIES[*r], *a),
        Data::Approve(s, a) => approve(PARTIES[*s], a.map_or(U256::MAX, U256::from)),
        Data::Selector(sel) => sel.to_vec(),
    };
    tx1559(
        t.chain,
        to,
        U256::from(t.value),
        input,
        t.gas,
        u128::from(t.fee),
        u128::from(t.prio),
    )
}

/// The reference: each rule read straight off the parameters.
fn evm_reference(p: &EvmParams, t: &EvmTxParams) -> bool {
    let le = |v: u64, cap: Option<u64>| cap.is_none_or(|c| v <= c);
    let fee_ok = u128::from(t.gas) * u128::from(t.fee) <= u128::from(p.max_fee_wei)
        && le(t.fee, p.max_fee_per_gas)
        && le(t.prio, p.max_priority)
        && le(t.gas, p.gas_limit);
    let value_ok = t.value <= p.max_value && (t.value == 0 || le(t.value, p.value_window));
    if !p.chains.contains(&t.chain) || !fee_ok || !value_ok {
        return false;
    }
    let Some(to) = t.to else { return false };
    let to_token = to == 3 && p.token.is_some();
    let token_amount_ok = |a: u64| {
        let (max, window) = p.token.unwrap();
        a <= max && le(a, window)
    };
    match &t.data {
        Data::Empty => to_token || (to < 3 && p.dests.contains(&to)),
        Data::Transfer(r, a) => to_token && p.recipients.contains(r) && token_amount_ok(*a),
        Data::Approve(s, a) => {
            to_token
                && match a {
                    Some(0) => true,
                    Some(a) => p.spenders.contains(s) && token_amount_ok(*a),
                    None => p.spenders.contains(s) && p.allow_unlimited,
                }
        }
        Data::Selector(_) => false,
    }
}

// ---- Solana ----

const KEY: [u8; 32] = [1; 32];
const SPONSOR: [u8; 32] = [2; 32];
const STRANGER: [u8; 32] = [3; 32];
const DESTS: [[u8; 32]; 3] = [[0x10; 32], [0x11; 32], [0x12; 32]];
const MINTS: [[u8; 32]; 2] = [[0x20; 32], [0x21; 32]];

#[derive(Debug, Clone)]
struct SolParams {
    per_transfer: u64,
    per_tx: u64,
    window: Option<u64>,
    dests: Vec<usize>,
    sponsor_allowed: bool,
    mint_cap: Option<u64>, // MINTS[0] only
    max_fee: u64,
}

#[derive(Debug, Clone)]
enum Move {
    Sol(usize, u64),
    Spl(usize, usize, u64), // mint, dest, amount
}

prop_compose! {
    fn sol_params()(
        per_transfer in 0u64..1000, per_tx in 0u64..2000, window in proptest::option::of(0u64..2000),
        dests in subset(3), sponsor_allowed in any::<bool>(), mint_cap in proptest::option::of(0u64..1000),
        max_fee in 0u64..20_000,
    ) -> SolParams {
        SolParams { per_transfer, per_tx, window, dests, sponsor_allowed, mint_cap, max_fee }
    }
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    proptest::collection::vec(
        prop_oneof![
            (0usize..3, 0u64..1200).prop_map(|(d, a)| Move::Sol(d, a)),
            (0usize..2, 0usize..3, 0u64..1200).prop_map(|(m, d, a)| Move::Spl(m, d, a)),
        ],
        1..4,
    )
}

fn sol_json(p: &SolParams) -> String {
    let dests: Vec<String> = p
        .dests
        .iter()
        .map(|i| format!("\"{}\"", b58(DESTS[*i])))
        .collect();
    let mut s = format!(
        r#"{{"version":2,"enabled":true,"allowed_kinds":["solana_transaction"],"solana":{{"allowed_programs":["{}","{}"],"max_lamports_per_transfer":{},"max_lamports_per_transaction":{},"max_fee_lamports":{},"allowed_destinations":[{}]"#,
        b58(SYSTEM),
        b58(TOKEN_PROGRAM_ID),
        p.per_transfer,
        p.per_tx,
        p.max_fee,
        dests.join(",")
    );
    if let Some(w) = p.window {
        s += &format!(r#","max_lamports_per_window":{{"max":{w},"window_secs":60}}"#);
    }
    if p.sponsor_allowed {
        s += &format!(r#","allowed_fee_payers":["{}"]"#, b58(SPONSOR));
    }
    if let Some(c) = p.mint_cap {
        s += &format!(
            r#","spl_tokens":{{"{}":{{"max_per_tx":{c}}}}}"#,
            b58(MINTS[0])
        );
    }
    s + "}}"
}

fn sol_bytes(payer: [u8; 32], moves: &[Move]) -> Vec<u8> {
    let ixs: Vec<_> = moves
        .iter()
        .map(|m| match *m {
            Move::Sol(d, a) => sol_transfer(KEY, DESTS[d], a),
            Move::Spl(m, d, a) => {
                spl_transfer_checked(TOKEN_PROGRAM_ID, [0x30; 32], MINTS[m], DESTS[d], KEY, a)
            }
        })
        .collect();
    legacy_msg(payer, &ixs)
}

fn sol_reference(p: &SolParams, payer: usize, moves: &[Move]) -> bool {
    let signatures = if payer == 0 { 1 } else { 2 };
    if payer == 2 || (payer == 1 && !p.sponsor_allowed) || 5000 * signatures > p.max_fee {
        return false;
    }
    let (mut lamports, mut mint0) = (0u64, 0u64);
    for m in moves {
        match *m {
            Move::Sol(d, a) => {
                if a > p.per_transfer || !p.dests.contains(&d) {
                    return false;
                }
                lamports += a;
            }
            Move::Spl(m, d, a) => {
                if m != 0 || p.mint_cap.is_none() || !p.dests.contains(&d) {
                    return false;
                }
                mint0 += a;
            }
        }
    }
    lamports <= p.per_tx
        && (lamports == 0 || p.window.is_none_or(|w| lamports <= w))
        && p.mint_cap.is_none_or(|c| mint0 <= c)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn evm_engine_never_approves_what_the_reference_refuses(p in evm_params(), t in evm_tx()) {
        let policy = Policy::parse_new(&evm_json(&p)).unwrap();
        let decoded = decode(PayloadKind::EvmTransaction, &evm_bytes(&t)).unwrap();
        let engine = policy.evaluate(&decoded, &SignerIdentity::Evm([0xee; 20]), 0);
        if engine.is_ok() {
            prop_assert!(evm_reference(&p, &t), "engine approved, reference refused: {}", evm_json(&p));
        }
        // The converse holds too for these generators: the reference is exact.
        prop_assert_eq!(engine.is_ok(), evm_reference(&p, &t), "{:?} {}", engine, evm_json(&p));
    }

    #[test]
    fn solana_engine_never_approves_what_the_reference_refuses(
        p in sol_params(), payer in 0usize..3, moves in moves()
    ) {
        let payer_key = [KEY, SPONSOR, STRANGER][payer];
        let policy = Policy::parse_new(&sol_json(&p)).unwrap();
        let decoded = decode(PayloadKind::SolanaTransaction, &sol_bytes(payer_key, &moves)).unwrap();
        let engine = policy.evaluate(&decoded, &SignerIdentity::Solana(KEY), 0);
        if engine.is_ok() {
            prop_assert!(sol_reference(&p, payer, &moves), "engine approved, reference refused: {}", sol_json(&p));
        }
        prop_assert_eq!(engine.is_ok(), sol_reference(&p, payer, &moves), "{:?} {}", engine, sol_json(&p));
    }
}

/// The generators reach both decisions (the properties above are not vacuous).
#[test]
fn the_generators_reach_approvals_and_refusals() {
    let p = EvmParams {
        chains: vec![1],
        dests: vec![0],
        max_value: 10,
        value_window: None,
        max_fee_wei: 1_000_000,
        max_fee_per_gas: None,
        max_priority: None,
        gas_limit: None,
        token: Some((100, None)),
        recipients: vec![1],
        spenders: vec![],
        allow_unlimited: false,
    };
    let t = EvmTxParams {
        chain: 1,
        to: Some(3),
        value: 0,
        gas: 100,
        fee: 1,
        prio: 1,
        data: Data::Transfer(1, 5),
    };
    let policy = Policy::parse_new(&evm_json(&p)).unwrap();
    let d = decode(PayloadKind::EvmTransaction, &evm_bytes(&t)).unwrap();
    assert!(policy
        .evaluate(&d, &SignerIdentity::Evm([0xee; 20]), 0)
        .is_ok());
    assert!(evm_reference(&p, &t));
}
