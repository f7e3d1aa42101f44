//! The acceptance table of issue 8: real encoded payloads of every kind, each with the
//! expected decision and, for a refusal, the rule. Refusals outnumber approvals.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use alloy_primitives::U256;
use common::*;
use ekms_signer::solana::offchain::OffchainMessage;
use ekms_signer::solana::{COMPUTE_BUDGET_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID};
use ekms_signer::{decode, Approval, PayloadKind, Policy, SignerIdentity};

// EVM parties
const ME: [u8; 20] = [0xee; 20];
const DEST: [u8; 20] = [0xd1; 20];
const KEEPER: [u8; 20] = [0xc0; 20];
const ROUTER: [u8; 20] = [0x60; 20];
const EXCHANGE: [u8; 20] = [0xe1; 20];
const STRANGER: [u8; 20] = [0x66; 20];
const USDC: [u8; 20] = [0xa0; 20];
const USDT: [u8; 20] = [0xa1; 20];
const OTHER_TOKEN: [u8; 20] = [0xa2; 20];
const PERMIT2: [u8; 20] = [0x22; 20];

// Solana parties
const KEY: [u8; 32] = [1; 32];
const SPONSOR: [u8; 32] = [2; 32];
const DEST_A: [u8; 32] = [3; 32];
const DEST_ATA: [u8; 32] = [4; 32];
const SOURCE_ATA: [u8; 32] = [5; 32];
const USDC_MINT: [u8; 32] = [6; 32];
const BONK_MINT: [u8; 32] = [7; 32];
const OTHER_MINT: [u8; 32] = [8; 32];
const STRANGER_SOL: [u8; 32] = [9; 32];
const UNKNOWN_PROGRAM: [u8; 32] = [0x55; 32];

const NOW: u64 = 1_750_000_000;

fn evm_policy(kinds: &str, extra: &str) -> String {
    format!(
        r#"{{"version":2,"enabled":true,"not_before":1000,"not_after":2000000000,
  "allowed_kinds":[{kinds}],
  "rate_limit":{{"max_signatures":100,"window_secs":3600}},
  "evm":{{"chain_ids":[1,8453],
    "allowed_destinations":["{dest}","{keeper}","{router}"],
    "function_selectors":{{"{keeper}":["0x12345678","0xabcdef01"]}},
    "max_value_wei":"1000000000000000000",
    "max_value_wei_per_window":{{"max":"2000000000000000000","window_secs":86400}},
    "max_fee_wei":"10000000000000000",
    "max_fee_per_gas":"100000000000",
    "max_priority_fee_per_gas":"2000000000",
    "gas_limit":500000,
    "tokens":{{"{usdc}":{{"max_per_tx":"1000000000","per_window":{{"max":"5000000000","window_secs":86400}}}},
               "{usdt}":{{"max_per_tx":"10000000000","per_window":{{"max":"5000000000","window_secs":86400}}}}}},
    "recipients":["{exchange}"],
    "spenders":["{router}"],
    "typed_data":{{"domains":[{{"name":"USD Coin","version":"2","chain_id":1,"verifying_contract":"{usdc}"}},
                              {{"name":"Permit2","chain_id":1,"verifying_contract":"{permit2}"}},
                              {{"name":"Ether Mail","chain_id":1}},
                              {{"name":"Ether Mail","chain_id":10}}],
                   "primary_types":["Permit","PermitSingle","PermitTransferFrom","Mail"]}}
    {extra}}}}}"#,
        dest = hex20(DEST),
        keeper = hex20(KEEPER),
        router = hex20(ROUTER),
        usdc = hex20(USDC),
        usdt = hex20(USDT),
        exchange = hex20(EXCHANGE),
        permit2 = hex20(PERMIT2),
    )
}

const EVM_KINDS: &str = r#""evm_transaction","evm_message","evm_typed_data""#;

fn solana_policy(kinds: &str, programs: &str, extra: &str) -> String {
    format!(
        r#"{{"version":2,"enabled":true,"allowed_kinds":[{kinds}],
  "solana":{{"allowed_programs":[{programs}],
    "max_lamports_per_transfer":1000000000,"max_lamports_per_transaction":1500000000,
    "max_lamports_per_window":{{"max":5000000000,"window_secs":86400}},
    "max_fee_lamports":100000,"max_compute_unit_price":1000000,"max_compute_unit_limit":400000,
    "allowed_destinations":["{a}","{ata}"],
    "allowed_fee_payers":["{sponsor}"],
    "spl_tokens":{{"{usdc}":{{"max_per_tx":1000000000,"per_window":{{"max":5000000000,"window_secs":86400}}}},
                   "{bonk}":{{"max_per_tx":1000,"per_window":{{"max":500,"window_secs":3600}}}}}},
    "offchain_messages":{{"prefixes":["sign in to "]}}
    {extra}}}}}"#,
        a = b58(DEST_A),
        ata = b58(DEST_ATA),
        sponsor = b58(SPONSOR),
        usdc = b58(USDC_MINT),
        bonk = b58(BONK_MINT),
    )
}

fn all_programs() -> String {
    [
        SYSTEM,
        COMPUTE_BUDGET_PROGRAM_ID,
        TOKEN_PROGRAM_ID,
        TOKEN_2022_PROGRAM_ID,
    ]
    .iter()
    .map(|p| format!("\"{}\"", b58(*p)))
    .collect::<Vec<_>>()
    .join(",")
}

const SOL_KINDS: &str = r#""solana_transaction","solana_offchain_message""#;

enum Expect {
    Allow,
    Deny(&'static str),
    /// The payload does not decode as its kind (refused before the policy).
    Undecodable,
}
use Expect::*;

struct Case {
    name: &'static str,
    policy: String,
    kind: PayloadKind,
    payload: Vec<u8>,
    signer: SignerIdentity,
    now: u64,
    expect: Expect,
}

fn evm(
    name: &'static str,
    policy: String,
    kind: PayloadKind,
    payload: Vec<u8>,
    expect: Expect,
) -> Case {
    Case {
        name,
        policy,
        kind,
        payload,
        signer: SignerIdentity::Evm(ME),
        now: NOW,
        expect,
    }
}

fn sol(
    name: &'static str,
    policy: String,
    kind: PayloadKind,
    payload: Vec<u8>,
    expect: Expect,
) -> Case {
    Case {
        name,
        policy,
        kind,
        payload,
        signer: SignerIdentity::Solana(KEY),
        now: NOW,
        expect,
    }
}

fn evm_cases() -> Vec<Case> {
    use PayloadKind::{EvmDigest as D, EvmMessage as M, EvmTransaction as T, EvmTypedData as TD};
    let p = || evm_policy(EVM_KINDS, "");
    let zero = U256::ZERO;
    let max_u160 = ((U256::from(1u8) << 160usize) - U256::from(1u8)).to_string();
    let hash_text = format!("0x{}", "ab".repeat(32));
    let mut v = vec![
        evm("eth within caps", p(), T, call(1, DEST, eth(500), vec![]), Allow),
        evm("eth on base", p(), T, call(8453, DEST, eth(1), vec![]), Allow),
        evm("eth on an unlisted chain", p(), T, call(5, DEST, eth(1), vec![]), Deny("evm.chain_ids")),
        evm("eth to an unlisted address", p(), T, call(1, STRANGER, eth(1), vec![]), Deny("evm.allowed_destinations")),
        evm("eth over the per-tx value cap", p(), T, call(1, DEST, eth(1001), vec![]), Deny("evm.max_value_wei")),
        evm("contract creation", p(), T, tx1559(1, None, zero, vec![0x60, 0], 100_000, gwei(30), gwei(1)), Deny("evm.contract_creation")),
        evm("contract creation when allowed", evm_policy(EVM_KINDS, r#","contract_creation":true"#).replace(r#""contract_creation":false,"#, ""), T, tx1559(1, None, zero, vec![0x60, 0], 100_000, gwei(30), gwei(1)), Allow),
        evm("total fee over max_fee_wei", p(), T, tx1559(1, Some(DEST), zero, vec![], 500_000, gwei(100), gwei(1)), Deny("evm.max_fee_wei")),
        evm("max fee per gas over the cap", p(), T, tx1559(1, Some(DEST), zero, vec![], 21_000, gwei(200), gwei(1)), Deny("evm.max_fee_per_gas")),
        evm("priority fee over the cap", p(), T, tx1559(1, Some(DEST), zero, vec![], 21_000, gwei(30), gwei(3)), Deny("evm.max_priority_fee_per_gas")),
        evm("gas limit over the cap", p(), T, tx1559(1, Some(DEST), zero, vec![], 600_000, gwei(1), gwei(1)), Deny("evm.gas_limit")),
        evm("legacy at 1 gwei", p(), T, legacy(1, DEST, gwei(1)), Allow),
        evm("legacy gas price above the priority cap", p(), T, legacy(1, DEST, gwei(3)), Deny("evm.max_priority_fee_per_gas")),
        evm("eip-2930 at 1 gwei", p(), T, tx2930(1, DEST, gwei(1)), Allow),
        evm("keeper selector one", p(), T, call(1, KEEPER, zero, vec![0x12, 0x34, 0x56, 0x78, 0, 1]), Allow),
        evm("keeper selector two", p(), T, call(1, KEEPER, zero, vec![0xab, 0xcd, 0xef, 0x01]), Allow),
        evm("keeper unlisted selector", p(), T, call(1, KEEPER, zero, vec![0xde, 0xad, 0xbe, 0xef]), Deny("evm.function_selectors")),
        evm("call data shorter than a selector", p(), T, call(1, KEEPER, zero, vec![0x12, 0x34]), Deny("evm.function_selectors")),
        evm("call data to a destination without selectors", p(), T, call(1, DEST, zero, vec![0x12, 0x34, 0x56, 0x78]), Deny("evm.function_selectors")),
        evm("erc20 transfer to a listed exchange", p(), T, call(1, USDC, zero, transfer(EXCHANGE, 100)), Allow),
        evm("erc20 transfer to an unlisted recipient", p(), T, call(1, USDC, zero, transfer(STRANGER, 100)), Deny("evm.recipients")),
        evm("erc20 transfer over max_per_tx", p(), T, call(1, USDC, zero, transfer(EXCHANGE, 1_000_000_001)), Deny("evm.tokens.max_per_tx")),
        evm("erc20 transfer alone over the window", p(), T, call(1, USDT, zero, transfer(EXCHANGE, 6_000_000_000)), Deny("evm.tokens.per_window")),
        evm("erc20 transfer of an unlisted token", p(), T, call(1, OTHER_TOKEN, zero, transfer(EXCHANGE, 1)), Deny("evm.allowed_destinations")),
        evm("erc20 transfer call to a non-token destination", p(), T, call(1, DEST, zero, transfer(EXCHANGE, 1)), Deny("evm.tokens")),
        evm("erc20 transferFrom to the exchange", p(), T, call(1, USDC, zero, transfer_from(STRANGER, EXCHANGE, 5)), Allow),
        evm("erc20 transferFrom to a stranger", p(), T, call(1, USDC, zero, transfer_from(EXCHANGE, STRANGER, 5)), Deny("evm.recipients")),
        evm("approve the router", p(), T, call(1, USDC, zero, approve(ROUTER, U256::from(100u8))), Allow),
        evm("approve an unlisted spender", p(), T, call(1, USDC, zero, approve(STRANGER, U256::from(100u8))), Deny("evm.spenders")),
        evm("unlimited approve", p(), T, call(1, USDC, zero, approve(ROUTER, U256::MAX)), Deny("evm.allow_unlimited_approve")),
        evm("unlimited approve when allowed", evm_policy(EVM_KINDS, r#","allow_unlimited_approve":true"#).replace(r#""allow_unlimited_approve":false,"#, ""), T, call(1, USDC, zero, approve(ROUTER, U256::MAX)), Allow),
        evm("approve over max_per_tx", p(), T, call(1, USDC, zero, approve(ROUTER, U256::from(2_000_000_000u64))), Deny("evm.tokens.max_per_tx")),
        evm("revoke (approve 0) of anyone", p(), T, call(1, USDC, zero, approve(STRANGER, zero)), Allow),
        evm("increaseAllowance of the router", p(), T, call(1, USDC, zero, increase_allowance(ROUTER, 5)), Allow),
        evm("increaseAllowance of a stranger", p(), T, call(1, USDC, zero, increase_allowance(STRANGER, 5)), Deny("evm.spenders")),
        evm("truncated erc20 call data", p(), T, call(1, USDC, zero, transfer(EXCHANGE, 1)[..40].to_vec()), Deny("evm.tokens")),
        evm("erc20 call data with a trailing byte", p(), T, call(1, USDC, zero, [transfer(EXCHANGE, 1), vec![0]].concat()), Deny("evm.tokens")),
        evm("unknown selector to a token", p(), T, call(1, USDC, zero, vec![0x70, 0xa0, 0x82, 0x31]), Deny("evm.function_selectors")),
        evm("disabled key", p().replacen(r#""enabled":true"#, r#""enabled":false"#, 1), T, call(1, DEST, eth(1), vec![]), Deny("enabled")),
        Case { now: 999, ..evm("before not_before", p(), T, call(1, DEST, eth(1), vec![]), Deny("not_before")) },
        Case { now: 2_000_000_001, ..evm("after not_after", p(), T, call(1, DEST, eth(1), vec![]), Deny("not_after")) },
        evm("message allowed exactly", evm_policy(EVM_KINDS, r#","messages":{"exact":["hello"],"prefixes":["login:"],"hex_hash":true}"#), M, b"hello".to_vec(), Allow),
        evm("message allowed by prefix", evm_policy(EVM_KINDS, r#","messages":{"exact":["hello"],"prefixes":["login:"],"hex_hash":true}"#), M, b"login: nonce 42".to_vec(), Allow),
        evm("flashbots body hash", evm_policy(EVM_KINDS, r#","messages":{"hex_hash":true}"#), M, hash_text.clone().into_bytes(), Allow),
        evm("uppercase hash text", evm_policy(EVM_KINDS, r#","messages":{"hex_hash":true}"#), M, hash_text.to_uppercase().into_bytes(), Deny("evm.messages")),
        evm("message not in the list", evm_policy(EVM_KINDS, r#","messages":{"exact":["hello"]}"#), M, b"hello!".to_vec(), Deny("evm.messages")),
        evm("any message without an allow-list", p(), M, b"anything at all".to_vec(), Allow),
        evm("message kind not allowed", evm_policy(r#""evm_transaction""#, ""), M, b"hello".to_vec(), Deny("allowed_kinds")),
        evm("typed data: Mail in an allowed domain", p(), TD, mail(1, "Mail"), Allow),
        evm("typed data: right name, wrong chain", p(), TD, mail(5, "Mail"), Deny("evm.typed_data.domains")),
        evm("typed data: allowed domain on a chain outside chain_ids", p(), TD, mail(10, "Mail"), Deny("evm.chain_ids")),
        evm("typed data: unlisted primary type", p(), TD, mail(1, "Letter"), Deny("evm.typed_data.primary_types")),
        evm("typed data without a typed_data section", r#"{"version":2,"enabled":true,"allowed_kinds":["evm_typed_data"],"evm":{"chain_ids":[1],"max_fee_wei":"0"}}"#.to_string(), TD, mail(1, "Mail"), Deny("evm.typed_data.domains")),
        evm("permit (EIP-2612) to the router", p(), TD, eip2612(USDC, 1, ROUTER, "100"), Allow),
        evm("permit to an unlisted spender", p(), TD, eip2612(USDC, 1, STRANGER, "100"), Deny("evm.spenders")),
        evm("unlimited permit", p(), TD, eip2612(USDC, 1, ROUTER, &U256::MAX.to_string()), Deny("evm.allow_unlimited_approve")),
        evm("permit over max_per_tx", p(), TD, eip2612(USDC, 1, ROUTER, "1000000001"), Deny("evm.tokens.max_per_tx")),
        evm("permit of an unlisted token contract", p(), TD, eip2612(OTHER_TOKEN, 1, ROUTER, "1"), Deny("evm.typed_data.domains")),
        evm("permit2 single to the router", p(), TD, permit2_single(PERMIT2, USDC, ROUTER, "100"), Allow),
        evm("permit2 single to an unlisted spender", p(), TD, permit2_single(PERMIT2, USDC, STRANGER, "100"), Deny("evm.spenders")),
        evm("permit2 single unlimited", p(), TD, permit2_single(PERMIT2, USDC, ROUTER, &max_u160), Deny("evm.allow_unlimited_approve")),
        evm("permit2 single of an unlisted token", p(), TD, permit2_single(PERMIT2, OTHER_TOKEN, ROUTER, "1"), Deny("evm.tokens")),
        evm("permit2 transfer-from to the router", p(), TD, permit2_transfer_from(PERMIT2, USDC, ROUTER, "5"), Allow),
        evm("permit2 transfer-from to a stranger", p(), TD, permit2_transfer_from(PERMIT2, USDC, STRANGER, "5"), Deny("evm.spenders")),
        evm("permit2 from a fake Permit2 contract", p(), TD, permit2_single(STRANGER, USDC, ROUTER, "1"), Deny("evm.typed_data.domains")),
        evm("raw digest with allow_raw_digest absent", evm_policy(r#""evm_digest""#, ""), D, vec![7; 32], Deny("evm.allow_raw_digest")),
        evm("raw digest allowed", evm_policy(r#""evm_digest""#, r#","allow_raw_digest":true"#).replace(r#""allow_raw_digest":false,"#, ""), D, vec![7; 32], Allow),
        evm("raw digest kind not allowed", p(), D, vec![7; 32], Deny("allowed_kinds")),
        evm("raw digest of 31 bytes", evm_policy(r#""evm_digest""#, r#","allow_raw_digest":true"#), D, vec![7; 31], Undecodable),
        evm("typed data as a JSON string", p(), TD, serde_json::to_vec(&String::from_utf8(mail(1, "Mail")).unwrap()).unwrap(), Undecodable),
        evm("evm transaction under a key of the other type", p(), T, call(1, DEST, eth(1), vec![]), Allow),
    ];
    // The last one again with an ed25519 identity: refused.
    v.last_mut().unwrap().signer = SignerIdentity::Solana(KEY);
    v.last_mut().unwrap().expect = Deny("evm");
    v.last_mut().unwrap().name = "evm transaction with an ed25519 key";
    // version 1: transactions only
    let v1 = format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{}"],"max_value_wei":"10","max_fee_wei":"10000000000000000"}}}}"#,
        hex20(DEST)
    );
    v.push(evm(
        "v1 policy, transaction",
        v1.clone(),
        T,
        call(1, DEST, U256::from(10u8), vec![]),
        Allow,
    ));
    v.push(evm(
        "v1 policy, any call data is v1's meaning",
        v1.clone(),
        T,
        call(1, DEST, zero, transfer(STRANGER, 1)),
        Allow,
    ));
    v.push(evm(
        "v1 policy, message",
        v1.clone(),
        M,
        b"hello".to_vec(),
        Deny("allowed_kinds"),
    ));
    v.push(evm(
        "v1 policy, digest",
        v1,
        D,
        vec![0; 32],
        Deny("allowed_kinds"),
    ));
    v
}

fn sol_cases() -> Vec<Case> {
    use PayloadKind::{SolanaOffchainMessage as O, SolanaTransaction as T};
    let p = || solana_policy(SOL_KINDS, &all_programs(), "");
    let tc = |mint, dest, amount| {
        spl_transfer_checked(TOKEN_PROGRAM_ID, SOURCE_ATA, mint, dest, KEY, amount)
    };
    let offchain = |signers: &[[u8; 32]], body: &str| {
        OffchainMessage::encode(&[0; 32], signers, body.as_bytes()).unwrap()
    };
    vec![
        sol(
            "sol transfer with a priority fee",
            p(),
            T,
            legacy_msg(KEY, &[cu_price(1_000), sol_transfer(KEY, DEST_A, 1_000)]),
            Allow,
        ),
        sol(
            "sol transfer to an unlisted address",
            p(),
            T,
            legacy_msg(KEY, &[sol_transfer(KEY, STRANGER_SOL, 1_000)]),
            Deny("solana.allowed_destinations"),
        ),
        sol(
            "sol transfer over the per-transfer cap",
            p(),
            T,
            legacy_msg(KEY, &[sol_transfer(KEY, DEST_A, 1_000_000_001)]),
            Deny("solana.max_lamports_per_transfer"),
        ),
        sol(
            "two transfers over the per-transaction cap",
            p(),
            T,
            legacy_msg(
                KEY,
                &[
                    sol_transfer(KEY, DEST_A, 1_000_000_000),
                    sol_transfer(KEY, DEST_A, 600_000_000),
                ],
            ),
            Deny("solana.max_lamports_per_transaction"),
        ),
        sol(
            "transfer alone over the window",
            solana_policy(SOL_KINDS, &all_programs(), "").replace(
                r#""max_lamports_per_window":{"max":5000000000"#,
                r#""max_lamports_per_window":{"max":500"#,
            ),
            T,
            legacy_msg(KEY, &[sol_transfer(KEY, DEST_A, 1_000)]),
            Deny("solana.max_lamports_per_window"),
        ),
        sol(
            "an unlisted program",
            p(),
            T,
            legacy_msg(
                KEY,
                &[solana_message::Instruction::new_with_bytes(
                    UNKNOWN_PROGRAM.into(),
                    &[1],
                    vec![],
                )],
            ),
            Deny("solana.allowed_programs"),
        ),
        sol(
            "system assign of the key's account",
            p(),
            T,
            legacy_msg(KEY, &[assign(KEY, UNKNOWN_PROGRAM)]),
            Deny("solana.system_instructions"),
        ),
        sol(
            "sponsored fee payer",
            p(),
            T,
            legacy_msg(SPONSOR, &[sol_transfer(KEY, DEST_A, 10)]),
            Allow,
        ),
        sol(
            "a stranger pays the fee",
            p(),
            T,
            legacy_msg(STRANGER_SOL, &[sol_transfer(KEY, DEST_A, 10)]),
            Deny("solana.fee_payer"),
        ),
        sol(
            "the key does not sign",
            p(),
            T,
            legacy_msg(SPONSOR, &[sol_transfer(SPONSOR, DEST_A, 10)]),
            Deny("solana.signer"),
        ),
        sol(
            "compute unit price over the cap",
            p(),
            T,
            legacy_msg(
                KEY,
                &[
                    cu_limit(10_000),
                    cu_price(2_000_000),
                    sol_transfer(KEY, DEST_A, 1),
                ],
            ),
            Deny("solana.max_compute_unit_price"),
        ),
        sol(
            "compute unit limit over the cap",
            p(),
            T,
            legacy_msg(KEY, &[cu_limit(500_000), sol_transfer(KEY, DEST_A, 1)]),
            Deny("solana.max_compute_unit_limit"),
        ),
        sol(
            "default compute limit over the cap",
            p(),
            T,
            legacy_msg(
                KEY,
                &[
                    sol_transfer(KEY, DEST_A, 1),
                    sol_transfer(KEY, DEST_A, 1),
                    sol_transfer(KEY, DEST_A, 1),
                ],
            ),
            Deny("solana.max_compute_unit_limit"),
        ),
        sol(
            "priority fee over max_fee_lamports",
            p(),
            T,
            legacy_msg(
                KEY,
                &[
                    cu_limit(300_000),
                    cu_price(1_000_000),
                    sol_transfer(KEY, DEST_A, 1),
                ],
            ),
            Deny("solana.max_fee_lamports"),
        ),
        sol(
            "duplicate compute budget instruction",
            p(),
            T,
            legacy_msg(
                KEY,
                &[cu_price(1), cu_price(2), sol_transfer(KEY, DEST_A, 1)],
            ),
            Deny("solana.compute_budget"),
        ),
        sol(
            "v0 transfer to a lookup-table destination",
            p(),
            T,
            v0_msg(
                KEY,
                &[SYSTEM],
                1,
                vec![compiled(
                    1,
                    vec![0, 2],
                    [2u32.to_le_bytes().to_vec(), 5u64.to_le_bytes().to_vec()].concat(),
                )],
                true,
            ),
            Deny("solana.allowed_destinations"),
        ),
        sol(
            "v0 transfer to a static listed destination",
            p(),
            T,
            v0_msg(
                KEY,
                &[DEST_A, SYSTEM],
                1,
                vec![compiled(
                    2,
                    vec![0, 1],
                    [2u32.to_le_bytes().to_vec(), 5u64.to_le_bytes().to_vec()].concat(),
                )],
                false,
            ),
            Allow,
        ),
        sol(
            "usdc TransferChecked to a listed account",
            p(),
            T,
            legacy_msg(KEY, &[tc(USDC_MINT, DEST_ATA, 100)]),
            Allow,
        ),
        sol(
            "usdc TransferChecked to an unlisted account",
            p(),
            T,
            legacy_msg(KEY, &[tc(USDC_MINT, STRANGER_SOL, 100)]),
            Deny("solana.allowed_destinations"),
        ),
        sol(
            "usdc TransferChecked over max_per_tx",
            p(),
            T,
            legacy_msg(KEY, &[tc(USDC_MINT, DEST_ATA, 1_000_000_001)]),
            Deny("solana.spl_tokens.max_per_tx"),
        ),
        sol(
            "two TransferChecked summing over max_per_tx",
            p(),
            T,
            legacy_msg(
                KEY,
                &[
                    tc(USDC_MINT, DEST_ATA, 600_000_000),
                    tc(USDC_MINT, DEST_ATA, 600_000_000),
                ],
            ),
            Deny("solana.spl_tokens.max_per_tx"),
        ),
        sol(
            "TransferChecked of an unlisted mint",
            p(),
            T,
            legacy_msg(KEY, &[tc(OTHER_MINT, DEST_ATA, 1)]),
            Deny("solana.spl_tokens"),
        ),
        sol(
            "bonk alone over its window",
            p(),
            T,
            legacy_msg(KEY, &[tc(BONK_MINT, DEST_ATA, 600)]),
            Deny("solana.spl_tokens.per_window"),
        ),
        sol(
            "bonk within its window",
            p(),
            T,
            legacy_msg(KEY, &[tc(BONK_MINT, DEST_ATA, 400)]),
            Allow,
        ),
        sol(
            "plain SPL Transfer under a mint cap",
            p(),
            T,
            legacy_msg(KEY, &[spl_plain_transfer(SOURCE_ATA, DEST_ATA, KEY, 1)]),
            Deny("solana.spl_tokens"),
        ),
        sol(
            "token-2022 TransferChecked",
            p(),
            T,
            legacy_msg(
                KEY,
                &[spl_transfer_checked(
                    TOKEN_2022_PROGRAM_ID,
                    SOURCE_ATA,
                    USDC_MINT,
                    DEST_ATA,
                    KEY,
                    5,
                )],
            ),
            Allow,
        ),
        sol(
            "SPL Approve",
            p(),
            T,
            legacy_msg(KEY, &[spl_other(4, SOURCE_ATA, KEY)]),
            Deny("solana.spl_instructions"),
        ),
        sol(
            "SPL SetAuthority",
            p(),
            T,
            legacy_msg(KEY, &[spl_other(6, SOURCE_ATA, KEY)]),
            Deny("solana.spl_instructions"),
        ),
        sol(
            "SPL CloseAccount",
            p(),
            T,
            legacy_msg(KEY, &[spl_other(9, SOURCE_ATA, KEY)]),
            Deny("solana.spl_instructions"),
        ),
        sol(
            "malformed TransferChecked",
            p(),
            T,
            legacy_msg(
                KEY,
                &[solana_message::Instruction::new_with_bytes(
                    TOKEN_PROGRAM_ID.into(),
                    &[12, 1, 2],
                    vec![],
                )],
            ),
            Deny("solana.spl_instructions"),
        ),
        sol(
            "v0 TransferChecked whose mint is in a lookup table",
            p(),
            T,
            v0_msg(
                KEY,
                &[SOURCE_ATA, DEST_ATA, TOKEN_PROGRAM_ID],
                1,
                vec![compiled(
                    3,
                    vec![1, 4, 2, 0],
                    [vec![12u8], 5u64.to_le_bytes().to_vec(), vec![6]].concat(),
                )],
                true,
            ),
            Deny("solana.spl_tokens"),
        ),
        sol(
            "token program not in allowed_programs",
            solana_policy(SOL_KINDS, &format!("\"{}\"", b58(SYSTEM)), ""),
            T,
            legacy_msg(KEY, &[tc(USDC_MINT, DEST_ATA, 1)]),
            Deny("solana.allowed_programs"),
        ),
        sol(
            "off-chain sign-in message",
            p(),
            O,
            offchain(&[KEY], "sign in to example.com"),
            Allow,
        ),
        sol(
            "off-chain message not allowed",
            p(),
            O,
            offchain(&[KEY], "transfer everything"),
            Deny("solana.offchain_messages"),
        ),
        sol(
            "off-chain message for another signer",
            p(),
            O,
            offchain(&[SPONSOR], "sign in to example.com"),
            Deny("solana.signer"),
        ),
        sol(
            "a transaction passed as an off-chain message",
            p(),
            O,
            legacy_msg(KEY, &[sol_transfer(KEY, DEST_A, 1)]),
            Undecodable,
        ),
        sol(
            "an off-chain message passed as a transaction",
            p(),
            T,
            offchain(&[KEY], "sign in to example.com"),
            Undecodable,
        ),
        sol(
            "off-chain kind not allowed",
            solana_policy(r#""solana_transaction""#, &all_programs(), ""),
            O,
            offchain(&[KEY], "sign in to x"),
            Deny("allowed_kinds"),
        ),
        sol(
            "disabled solana key",
            p().replacen(r#""enabled":true"#, r#""enabled":false"#, 1),
            T,
            legacy_msg(KEY, &[sol_transfer(KEY, DEST_A, 1)]),
            Deny("enabled"),
        ),
        sol(
            "evm kind under a solana policy",
            p(),
            PayloadKind::EvmMessage,
            b"hi".to_vec(),
            Deny("allowed_kinds"),
        ),
        sol(
            "v1 policy, solana transfer",
            format!(
                r#"{{"enabled":true,"solana":{{"allowed_programs":["{}"],"max_lamports_per_transfer":10}}}}"#,
                b58(SYSTEM)
            ),
            T,
            legacy_msg(KEY, &[sol_transfer(KEY, STRANGER_SOL, 10)]),
            Allow,
        ),
        sol(
            "v1 policy, off-chain message",
            format!(
                r#"{{"enabled":true,"solana":{{"allowed_programs":["{}"]}}}}"#,
                b58(SYSTEM)
            ),
            O,
            offchain(&[KEY], "sign in to x"),
            Deny("allowed_kinds"),
        ),
    ]
}

fn run(case: &Case) -> Result<Approval, String> {
    let policy = Policy::parse_new(&case.policy)
        .or_else(|_| Policy::parse(&case.policy))
        .unwrap_or_else(|e| panic!("{}: policy does not parse: {e}\n{}", case.name, case.policy));
    let decoded = decode(case.kind, &case.payload).map_err(|e| format!("undecodable: {e}"))?;
    policy
        .evaluate(&decoded, &case.signer, case.now)
        .map_err(|d| d.rule.to_owned())
}

#[test]
fn policy_table() {
    let cases: Vec<Case> = evm_cases().into_iter().chain(sol_cases()).collect();
    let (mut allows, mut refusals) = (0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        let got = run(case);
        let ok = match (&case.expect, &got) {
            (Allow, Ok(_)) => true,
            (Deny(rule), Err(r)) => r == rule,
            (Undecodable, Err(r)) => r.starts_with("undecodable"),
            _ => false,
        };
        match case.expect {
            Allow => allows += 1,
            _ => refusals += 1,
        }
        if !ok {
            failures.push(format!(
                "{}: got {:?}",
                case.name,
                got.map(|a| a.charges.len())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 80, "{} cases", cases.len());
    assert!(refusals > allows, "{refusals} refusals, {allows} approvals");
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
}

#[test]
fn approvals_list_their_charges() {
    use ekms_signer::{Charge, LimitId};
    let charges = |policy: String, kind, payload: Vec<u8>, signer| {
        Policy::parse_new(&policy)
            .unwrap()
            .evaluate(&decode(kind, &payload).unwrap(), &signer, NOW)
            .unwrap()
            .charges
    };
    let day = 86_400;
    let sig = Charge {
        limit: LimitId::Signatures,
        amount: U256::from(1u8),
        cap: U256::from(100u8),
        window_secs: 3_600,
    };
    // ETH value, and an ERC-20 transfer (no value): each its own window.
    assert_eq!(
        charges(
            evm_policy(EVM_KINDS, ""),
            PayloadKind::EvmTransaction,
            call(1, DEST, eth(500), vec![]),
            SignerIdentity::Evm(ME)
        ),
        [
            sig,
            Charge {
                limit: LimitId::EvmNative { chain_id: 1 },
                amount: eth(500),
                cap: eth(2000),
                window_secs: day
            },
        ]
    );
    assert_eq!(
        charges(
            evm_policy(EVM_KINDS, ""),
            PayloadKind::EvmTransaction,
            call(8453, USDC, U256::ZERO, transfer(EXCHANGE, 7)),
            SignerIdentity::Evm(ME)
        ),
        [
            sig,
            Charge {
                limit: LimitId::Erc20 {
                    chain_id: 8453,
                    token: USDC
                },
                amount: U256::from(7u8),
                cap: U256::from(5_000_000_000u64),
                window_secs: day
            },
        ]
    );
    // A permit charges the token it grants.
    assert_eq!(
        charges(
            evm_policy(EVM_KINDS, ""),
            PayloadKind::EvmTypedData,
            permit2_single(PERMIT2, USDC, ROUTER, "9"),
            SignerIdentity::Evm(ME)
        )[1]
        .limit,
        LimitId::Erc20 {
            chain_id: 1,
            token: USDC
        }
    );
    // Solana: lamports and two mints, summed per mint.
    let got = charges(
        solana_policy(SOL_KINDS, &all_programs(), ""),
        PayloadKind::SolanaTransaction,
        legacy_msg(
            KEY,
            &[
                cu_limit(100_000),
                sol_transfer(KEY, DEST_A, 10),
                spl_transfer_checked(TOKEN_PROGRAM_ID, SOURCE_ATA, USDC_MINT, DEST_ATA, KEY, 3),
                spl_transfer_checked(TOKEN_PROGRAM_ID, SOURCE_ATA, USDC_MINT, DEST_ATA, KEY, 4),
                spl_transfer_checked(TOKEN_PROGRAM_ID, SOURCE_ATA, BONK_MINT, DEST_ATA, KEY, 5),
            ],
        ),
        SignerIdentity::Solana(KEY),
    );
    let ids: Vec<(LimitId, U256)> = got.iter().map(|c| (c.limit, c.amount)).collect();
    assert_eq!(
        ids,
        [
            (LimitId::SolanaNative, U256::from(10u8)),
            (LimitId::Spl { mint: USDC_MINT }, U256::from(7u8)),
            (LimitId::Spl { mint: BONK_MINT }, U256::from(5u8)),
        ]
    );
    // A version 1 policy has no windows.
    let v1 = format!(
        r#"{{"enabled":true,"evm":{{"chain_ids":[1],"allowed_destinations":["{}"],"max_fee_wei":"10000000000000000"}}}}"#,
        hex20(DEST)
    );
    assert!(charges(
        v1,
        PayloadKind::EvmTransaction,
        call(1, DEST, U256::ZERO, vec![]),
        SignerIdentity::Evm(ME)
    )
    .is_empty());
}

#[test]
fn table_policies_round_trip_through_canonical_json() {
    let cases: Vec<Case> = evm_cases().into_iter().chain(sol_cases()).collect();
    for case in &cases {
        let p = Policy::parse(&case.policy).unwrap();
        let canonical = p.canonical_json();
        let again = Policy::parse(&canonical).unwrap();
        assert_eq!(again, p, "{}", case.name);
        assert_eq!(again.canonical_json(), canonical, "{}", case.name);
    }
}

#[test]
fn version_1_entry_points_refuse_version_2_policies() {
    let p = Policy::parse_new(&evm_policy(EVM_KINDS, "")).unwrap();
    let tx = ekms_signer::decode_unsigned(&call(1, DEST, U256::ZERO, vec![])).unwrap();
    assert_eq!(p.evaluate_evm(&tx).unwrap_err().rule, "allowed_kinds");
    let p = Policy::parse_new(&solana_policy(SOL_KINDS, &all_programs(), "")).unwrap();
    let m = ekms_signer::decode_solana(&legacy_msg(KEY, &[sol_transfer(KEY, DEST_A, 1)])).unwrap();
    assert_eq!(
        p.evaluate_solana(&m, &KEY).unwrap_err().rule,
        "allowed_kinds"
    );
}
