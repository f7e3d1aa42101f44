//! The bodies of the signer's fuzz targets (`fuzz/fuzz_targets/*.rs` call these), so
//! that `cargo test` can replay every seed and corpus file through exactly the code
//! the fuzzer runs (`signer/tests/fuzz_corpus.rs`). Each function takes arbitrary
//! bytes, must never panic on them, and asserts the properties its doc names (a
//! failed assertion is a finding, like a crash).
//!
//! Not an API: hidden from the docs, free to change with the targets.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::OnceLock;

use crate::evm::calldata::Erc20Call;
use crate::evm::TypedDataPayload;
use crate::solana::compute_budget::{ComputeBudgetInstruction, ComputeBudgetRequest};
use crate::solana::spl_token::SplTokenInstruction;
use crate::solana::{OffchainMessage, SystemInstructionName};
use crate::{
    decode, decode_solana, decode_unsigned, PayloadKind, Policy, SignerIdentity, MAX_POLICY_BYTES,
};

/// A harness: arbitrary bytes in, a panic on a finding.
pub type Harness = fn(&[u8]);

/// Every target and its harness, by the target's name.
pub const TARGETS: [(&str, Harness); 9] = [
    ("evm", evm),
    ("solana", solana),
    ("policy", policy),
    ("erc20_calldata", erc20_calldata),
    ("eip712", eip712),
    ("spl_token", spl_token),
    ("compute_budget", compute_budget),
    ("policy_v2", policy_v2),
    ("offchain_message", offchain_message),
];

fn fixed(json: &'static str, cell: &'static OnceLock<Policy>) -> &'static Policy {
    cell.get_or_init(|| Policy::parse(json).expect("the fixed policy parses"))
}

/// `evm`: an accepted transaction has a listed chain id and destination, is not a
/// contract creation, and stays under the value limit.
pub fn evm(data: &[u8]) {
    static POL: OnceLock<Policy> = OnceLock::new();
    let policy = fixed(
        r#"{"version":1,"enabled":true,"evm":{"chain_ids":[1,8453],
"allowed_destinations":["0x3535353535353535353535353535353535353535",
"0x1111111111111111111111111111111111111111"],"max_value_wei":"1000000000000000000"}}"#,
        &POL,
    );
    let Ok(tx) = decode_unsigned(data) else {
        return;
    };
    let _ = (
        tx.nonce(),
        tx.gas_limit(),
        tx.input().len(),
        tx.tx_type().as_u8(),
    );
    let _ = (
        tx.sighash(),
        tx.max_priority_fee_per_gas(),
        tx.max_fee_wei(),
    );
    if policy.evaluate_evm(&tx).is_ok() {
        let rules = policy.evm().expect("the fixed policy has an evm section");
        assert!(rules.chain_ids.contains(&tx.chain_id()));
        let to = tx.to().expect("contract creation is never allowed");
        assert!(rules.allowed_destinations.contains(&to));
        assert!(tx.value() <= rules.max_value_wei);
    }
}

/// `solana`: the message bytes read again give the same message; an accepted payload
/// calls only allowed programs, stays under the per-transfer limit, and signs only the
/// default System instructions.
pub fn solana(data: &[u8]) {
    static POL: OnceLock<Policy> = OnceLock::new();
    let policy = fixed(
        r#"{"version":1,"enabled":true,"solana":{"allowed_programs":
["11111111111111111111111111111111","ComputeBudget111111111111111111111111111111"],
"max_lamports_per_transfer":1000000000}}"#,
        &POL,
    );
    let Ok(payload) = decode_solana(data) else {
        return;
    };
    if let Ok(again) = decode_solana(payload.message_bytes()) {
        if !again.is_transaction() {
            assert_eq!(again.message_bytes(), payload.message_bytes());
            assert_eq!(again.account_keys(), payload.account_keys());
            assert_eq!(again.instructions(), payload.instructions());
        }
    }
    let transfers = payload.system_transfers();
    let Some(signer) = payload.required_signers().first().copied() else {
        return;
    };
    if policy.evaluate_solana(&payload, &signer).is_ok() {
        let rules = policy
            .solana()
            .expect("the fixed policy has a solana section");
        for ix in payload.instructions() {
            assert!(rules.allowed_programs.contains(&ix.program_id));
        }
        for t in transfers.expect("an accepted payload has readable transfers") {
            assert!(t.lamports <= rules.max_lamports_per_transfer);
        }
        for (_, ix) in payload
            .system_instructions()
            .expect("an accepted payload has decodable System instructions")
        {
            assert!(SystemInstructionName::DEFAULT_ALLOWED.contains(&ix.name()));
        }
        assert!(payload.max_fee_lamports().is_ok());
    }
    // The same bytes under the version 2 engine: no panic.
    policy_v2_evaluate(
        PayloadKind::SolanaTransaction,
        data,
        SignerIdentity::Solana(signer),
    );
}

/// `policy`: `parse(canonical_json(p)) == p`, canonicalization is idempotent, the
/// canonical form fits `MAX_POLICY_BYTES`. Non-UTF-8 inputs are skipped.
pub fn policy(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(json) else {
        return;
    };
    let canonical = policy.canonical_json();
    let again = Policy::parse(&canonical).expect("canonical JSON parses");
    assert_eq!(again, policy, "parse(canonical_json(p)) == p");
    assert_eq!(
        again.canonical_json(),
        canonical,
        "canonical_json is idempotent"
    );
    assert!(canonical.len() <= MAX_POLICY_BYTES);
    if Policy::parse_new(json).is_ok() {
        assert!(
            Policy::parse_new(&canonical).is_ok(),
            "parse_new agrees on canonical"
        );
    }
}

/// `erc20_calldata`: decoded calls re-encode to the input (one reading).
pub fn erc20_calldata(data: &[u8]) {
    if let Ok(Some(call)) = Erc20Call::decode(data) {
        assert_eq!(call.encode(), data, "ERC-20 call data has one encoding");
        let _ = call.name();
    }
}

/// `eip712`: decoding is deterministic; a permit has at least one grant.
pub fn eip712(data: &[u8]) {
    let Ok(t) = TypedDataPayload::decode(data) else {
        return;
    };
    let again = TypedDataPayload::decode(data).expect("decoding is deterministic");
    assert_eq!(again.signing_hash(), t.signing_hash());
    let _ = (t.domain_name(), t.domain_version(), t.domain_chain_id());
    if let Some(p) = t.permit() {
        let _ = (p.kind, p.spender, p.grants.len());
    }
    policy_v2_evaluate(
        PayloadKind::EvmTypedData,
        data,
        SignerIdentity::Evm([0xee; 20]),
    );
}

/// `spl_token`: Transfer / TransferChecked decode only from their exact lengths.
pub fn spl_token(data: &[u8]) {
    if let Ok(ix) = SplTokenInstruction::decode(data) {
        let _ = (ix.name(), ix.mint_position(), ix.destination_position());
        match ix {
            SplTokenInstruction::Transfer { .. } => assert_eq!(data.len(), 9),
            SplTokenInstruction::TransferChecked { .. } => assert_eq!(data.len(), 10),
            SplTokenInstruction::Other { tag } => assert_eq!(Some(&tag), data.first()),
        }
    }
}

/// `compute_budget`: one instruction decodes exactly; the same one twice is a
/// duplicate; the fee bound never panics.
pub fn compute_budget(data: &[u8]) {
    if ComputeBudgetInstruction::decode(data).is_ok() {
        let one = ComputeBudgetRequest::from_instructions([data]).expect("one instruction folds");
        assert!(ComputeBudgetRequest::from_instructions([data, data]).is_err());
        let limit = one.effective_unit_limit(3, 1);
        let _ = crate::solana::compute_budget::max_fee_lamports(
            u64::from(data.len() as u8),
            limit,
            one.unit_price.unwrap_or(0),
        );
    }
}

/// `policy_v2`: as `policy`, then every fixed payload evaluated under the document
/// without panicking.
pub fn policy_v2(data: &[u8]) {
    policy(data);
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Policy::parse(json) else {
        return;
    };
    for (kind, bytes, signer) in fixed_payloads() {
        if let Ok(d) = decode(*kind, bytes) {
            let _ = p.evaluate(&d, signer, 1_750_000_000);
        }
    }
}

/// `offchain_message`: a decoded message re-encodes to the input.
pub fn offchain_message(data: &[u8]) {
    let Ok(m) = OffchainMessage::decode(data) else {
        return;
    };
    let again = OffchainMessage::encode(m.application_domain(), m.signers(), m.body())
        .expect("a decoded message encodes");
    assert_eq!(again, data, "an off-chain message has one encoding");
    policy_v2_evaluate(
        PayloadKind::SolanaOffchainMessage,
        data,
        SignerIdentity::Solana(m.signers()[0]),
    );
}

const V2_POLICY: &str = r#"{"version":2,"enabled":true,"allowed_kinds":["evm_transaction",
"evm_message","evm_typed_data","evm_digest","solana_transaction","solana_offchain_message"],
"rate_limit":{"max_signatures":10,"window_secs":60},
"evm":{"chain_ids":[1],"allowed_destinations":["0x1111111111111111111111111111111111111111"],
"max_fee_wei":"1000000000000000","tokens":{"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48":
{"max_per_tx":"1000","per_window":{"max":"5000","window_secs":86400}}},
"recipients":["0x2222222222222222222222222222222222222222"],
"spenders":["0x000000000022d473030f116ddee9f6b43ac78ba3"],
"typed_data":{"domains":[{"chain_id":1}],"primary_types":["Permit","PermitSingle","Mail"]}},
"solana":{"allowed_programs":["11111111111111111111111111111111",
"ComputeBudget111111111111111111111111111111","TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"],
"max_lamports_per_transfer":1000,"max_lamports_per_transaction":1000,"max_fee_lamports":100000,
"max_lamports_per_window":{"max":5000,"window_secs":3600},
"allowed_destinations":["CktRuQ2mttgRGkXJtyksdKHjUdc2C4TgDzyB98oEzy8"],
"spl_tokens":{"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v":{"max_per_tx":10}}}}"#;

/// Evaluates `data` as `kind` under a fixed version 2 policy: no panic, and an
/// approval's charges are within their caps.
fn policy_v2_evaluate(kind: PayloadKind, data: &[u8], signer: SignerIdentity) {
    static POL: OnceLock<Policy> = OnceLock::new();
    let p = fixed(V2_POLICY, &POL);
    if let Ok(d) = decode(kind, data) {
        if let Ok(a) = p.evaluate(&d, &signer, 1_750_000_000) {
            for c in a.charges {
                assert!(c.amount <= c.cap, "a charge within its cap");
            }
        }
    }
}

type Fixed = (PayloadKind, Vec<u8>, SignerIdentity);

fn fixed_payloads() -> &'static [Fixed] {
    static P: OnceLock<Vec<Fixed>> = OnceLock::new();
    P.get_or_init(|| {
        let evm = SignerIdentity::Evm([0xee; 20]);
        vec![
            (PayloadKind::EvmDigest, vec![7; 32], evm),
            (PayloadKind::EvmMessage, b"hello".to_vec(), evm),
            (
                PayloadKind::EvmTransaction,
                hex::decode(
                    "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080",
                )
                .unwrap_or_default(),
                evm,
            ),
            (
                PayloadKind::SolanaOffchainMessage,
                OffchainMessage::encode(&[0; 32], &[[1; 32]], b"sign in").unwrap_or_default(),
                SignerIdentity::Solana([1; 32]),
            ),
        ]
    })
}
