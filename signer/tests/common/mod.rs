//! Builders of real encoded payloads for the integration tests (not a test itself).
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxLegacy};
use alloy_primitives::{Bytes, TxKind, U256};
use ekms_signer::evm::calldata::Erc20Call;
use ekms_signer::solana::{COMPUTE_BUDGET_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID};
use solana_message::compiled_instruction::CompiledInstruction;
use solana_message::v0::{self, MessageAddressTableLookup};
use solana_message::{
    AccountMeta, Address as SolAddress, Hash, Instruction, Message, MessageHeader, VersionedMessage,
};

pub fn a20(b: u8) -> [u8; 20] {
    [b; 20]
}

pub fn hex20(a: [u8; 20]) -> String {
    format!("0x{}", hex::encode(a))
}

pub fn b58(k: [u8; 32]) -> String {
    bs58::encode(k).into_string()
}

pub fn gwei(n: u128) -> u128 {
    n * 1_000_000_000
}

pub fn eth(milli: u64) -> U256 {
    U256::from(milli) * U256::from(1_000_000_000_000_000u64)
}

/// EIP-1559, nonce 0.
pub fn tx1559(
    chain_id: u64,
    to: Option<[u8; 20]>,
    value: U256,
    input: Vec<u8>,
    gas_limit: u64,
    max_fee: u128,
    priority: u128,
) -> Vec<u8> {
    let t = TxEip1559 {
        chain_id,
        nonce: 0,
        gas_limit,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: priority,
        to: to.map_or(TxKind::Create, |a| TxKind::Call(a.into())),
        value,
        input: Bytes::from(input),
        access_list: Default::default(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    out
}

/// A plain call with ordinary fees: gas 60 000, 30 gwei, 1 gwei priority.
pub fn call(chain_id: u64, to: [u8; 20], value: U256, input: Vec<u8>) -> Vec<u8> {
    tx1559(chain_id, Some(to), value, input, 60_000, gwei(30), gwei(1))
}

pub fn legacy(chain_id: u64, to: [u8; 20], gas_price: u128) -> Vec<u8> {
    let t = TxLegacy {
        chain_id: Some(chain_id),
        nonce: 0,
        gas_price,
        gas_limit: 21_000,
        to: TxKind::Call(to.into()),
        value: U256::from(1u8),
        input: Bytes::new(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    out
}

pub fn tx2930(chain_id: u64, to: [u8; 20], gas_price: u128) -> Vec<u8> {
    let t = TxEip2930 {
        chain_id,
        nonce: 0,
        gas_price,
        gas_limit: 21_000,
        to: TxKind::Call(to.into()),
        value: U256::from(1u8),
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let mut out = Vec::new();
    t.encode_for_signing(&mut out);
    out
}

pub fn transfer(to: [u8; 20], amount: u64) -> Vec<u8> {
    Erc20Call::Transfer {
        to,
        amount: U256::from(amount),
    }
    .encode()
}

pub fn transfer_from(from: [u8; 20], to: [u8; 20], amount: u64) -> Vec<u8> {
    Erc20Call::TransferFrom {
        from,
        to,
        amount: U256::from(amount),
    }
    .encode()
}

pub fn approve(spender: [u8; 20], amount: U256) -> Vec<u8> {
    Erc20Call::Approve { spender, amount }.encode()
}

pub fn increase_allowance(spender: [u8; 20], amount: u64) -> Vec<u8> {
    Erc20Call::IncreaseAllowance {
        spender,
        amount: U256::from(amount),
    }
    .encode()
}

pub fn mail(chain_id: u64, primary: &str) -> Vec<u8> {
    format!(
        r#"{{"types":{{"EIP712Domain":[{{"name":"name","type":"string"}},{{"name":"version","type":"string"}},{{"name":"chainId","type":"uint256"}},{{"name":"verifyingContract","type":"address"}}],
"Person":[{{"name":"name","type":"string"}},{{"name":"wallet","type":"address"}}],
"{primary}":[{{"name":"from","type":"Person"}},{{"name":"to","type":"Person"}},{{"name":"contents","type":"string"}}]}},
"primaryType":"{primary}","domain":{{"name":"Ether Mail","version":"1","chainId":{chain_id},"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"}},
"message":{{"from":{{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"}},"to":{{"name":"Bob","wallet":"0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"}},"contents":"Hello, Bob!"}}}}"#
    )
    .into_bytes()
}

pub fn eip2612(token: [u8; 20], chain_id: u64, spender: [u8; 20], value: &str) -> Vec<u8> {
    format!(
        r#"{{"types":{{"EIP712Domain":[{{"name":"name","type":"string"}},{{"name":"version","type":"string"}},{{"name":"chainId","type":"uint256"}},{{"name":"verifyingContract","type":"address"}}],
"Permit":[{{"name":"owner","type":"address"}},{{"name":"spender","type":"address"}},{{"name":"value","type":"uint256"}},{{"name":"nonce","type":"uint256"}},{{"name":"deadline","type":"uint256"}}]}},
"primaryType":"Permit","domain":{{"name":"USD Coin","version":"2","chainId":{chain_id},"verifyingContract":"{}"}},
"message":{{"owner":"0x1111111111111111111111111111111111111111","spender":"{}","value":"{value}","nonce":0,"deadline":1700000000}}}}"#,
        hex20(token),
        hex20(spender)
    )
    .into_bytes()
}

pub fn permit2_single(
    permit2: [u8; 20],
    token: [u8; 20],
    spender: [u8; 20],
    amount: &str,
) -> Vec<u8> {
    format!(
        r#"{{"types":{{"EIP712Domain":[{{"name":"name","type":"string"}},{{"name":"chainId","type":"uint256"}},{{"name":"verifyingContract","type":"address"}}],
"PermitSingle":[{{"name":"details","type":"PermitDetails"}},{{"name":"spender","type":"address"}},{{"name":"sigDeadline","type":"uint256"}}],
"PermitDetails":[{{"name":"token","type":"address"}},{{"name":"amount","type":"uint160"}},{{"name":"expiration","type":"uint48"}},{{"name":"nonce","type":"uint48"}}]}},
"primaryType":"PermitSingle","domain":{{"name":"Permit2","chainId":1,"verifyingContract":"{}"}},
"message":{{"details":{{"token":"{}","amount":"{amount}","expiration":1700000000,"nonce":0}},"spender":"{}","sigDeadline":1700000000}}}}"#,
        hex20(permit2),
        hex20(token),
        hex20(spender)
    )
    .into_bytes()
}

pub fn permit2_transfer_from(
    permit2: [u8; 20],
    token: [u8; 20],
    spender: [u8; 20],
    amount: &str,
) -> Vec<u8> {
    format!(
        r#"{{"types":{{"EIP712Domain":[{{"name":"name","type":"string"}},{{"name":"chainId","type":"uint256"}},{{"name":"verifyingContract","type":"address"}}],
"PermitTransferFrom":[{{"name":"permitted","type":"TokenPermissions"}},{{"name":"spender","type":"address"}},{{"name":"nonce","type":"uint256"}},{{"name":"deadline","type":"uint256"}}],
"TokenPermissions":[{{"name":"token","type":"address"}},{{"name":"amount","type":"uint256"}}]}},
"primaryType":"PermitTransferFrom","domain":{{"name":"Permit2","chainId":1,"verifyingContract":"{}"}},
"message":{{"permitted":{{"token":"{}","amount":"{amount}"}},"spender":"{}","nonce":0,"deadline":1700000000}}}}"#,
        hex20(permit2),
        hex20(token),
        hex20(spender)
    )
    .into_bytes()
}

// ---- Solana ----

pub const SYSTEM: [u8; 32] = [0; 32];

pub fn sol_transfer(from: [u8; 32], to: [u8; 32], lamports: u64) -> Instruction {
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    Instruction::new_with_bytes(
        SolAddress::from(SYSTEM),
        &data,
        vec![
            AccountMeta::new(SolAddress::from(from), true),
            AccountMeta::new(SolAddress::from(to), false),
        ],
    )
}

pub fn assign(account: [u8; 32], owner: [u8; 32]) -> Instruction {
    let mut data = 1u32.to_le_bytes().to_vec();
    data.extend_from_slice(&owner);
    Instruction::new_with_bytes(
        SolAddress::from(SYSTEM),
        &data,
        vec![AccountMeta::new(SolAddress::from(account), true)],
    )
}

pub fn cu_price(micro_lamports: u64) -> Instruction {
    let mut d = vec![3u8];
    d.extend_from_slice(&micro_lamports.to_le_bytes());
    Instruction::new_with_bytes(SolAddress::from(COMPUTE_BUDGET_PROGRAM_ID), &d, vec![])
}

pub fn cu_limit(units: u32) -> Instruction {
    let mut d = vec![2u8];
    d.extend_from_slice(&units.to_le_bytes());
    Instruction::new_with_bytes(SolAddress::from(COMPUTE_BUDGET_PROGRAM_ID), &d, vec![])
}

pub fn spl_transfer_checked(
    program: [u8; 32],
    source: [u8; 32],
    mint: [u8; 32],
    dest: [u8; 32],
    owner: [u8; 32],
    amount: u64,
) -> Instruction {
    let mut d = vec![12u8];
    d.extend_from_slice(&amount.to_le_bytes());
    d.push(6);
    Instruction::new_with_bytes(
        SolAddress::from(program),
        &d,
        vec![
            AccountMeta::new(SolAddress::from(source), false),
            AccountMeta::new_readonly(SolAddress::from(mint), false),
            AccountMeta::new(SolAddress::from(dest), false),
            AccountMeta::new_readonly(SolAddress::from(owner), true),
        ],
    )
}

pub fn spl_plain_transfer(
    source: [u8; 32],
    dest: [u8; 32],
    owner: [u8; 32],
    amount: u64,
) -> Instruction {
    let mut d = vec![3u8];
    d.extend_from_slice(&amount.to_le_bytes());
    Instruction::new_with_bytes(
        SolAddress::from(TOKEN_PROGRAM_ID),
        &d,
        vec![
            AccountMeta::new(SolAddress::from(source), false),
            AccountMeta::new(SolAddress::from(dest), false),
            AccountMeta::new_readonly(SolAddress::from(owner), true),
        ],
    )
}

/// An SPL instruction by tag with the owner signing (Approve 4, SetAuthority 6,
/// CloseAccount 9), data padded as the program would read it.
pub fn spl_other(tag: u8, account: [u8; 32], owner: [u8; 32]) -> Instruction {
    let mut d = vec![tag];
    d.extend_from_slice(&[0u8; 8]);
    Instruction::new_with_bytes(
        SolAddress::from(TOKEN_2022_PROGRAM_ID),
        &d,
        vec![
            AccountMeta::new(SolAddress::from(account), false),
            AccountMeta::new_readonly(SolAddress::from(owner), true),
        ],
    )
}

pub fn legacy_msg(payer: [u8; 32], ixs: &[Instruction]) -> Vec<u8> {
    let msg = Message::new_with_blockhash(
        ixs,
        Some(&SolAddress::from(payer)),
        &Hash::new_from_array([9; 32]),
    );
    wincode::serialize(&VersionedMessage::Legacy(msg)).unwrap()
}

/// A v0 message: `payer` signs; `statics` follow (read-only, non-signing, the last
/// ones are programs); one lookup table contributes one writable account, which is
/// account index `1 + statics.len()`. `ixs` are compiled by hand.
pub fn v0_msg(
    payer: [u8; 32],
    statics: &[[u8; 32]],
    readonly_unsigned: u8,
    ixs: Vec<CompiledInstruction>,
    with_table: bool,
) -> Vec<u8> {
    let mut keys = vec![SolAddress::from(payer)];
    keys.extend(statics.iter().map(|k| SolAddress::from(*k)));
    let msg = v0::Message {
        header: MessageHeader {
            num_required_signatures: 1,
            num_readonly_signed_accounts: 0,
            num_readonly_unsigned_accounts: readonly_unsigned,
        },
        account_keys: keys,
        recent_blockhash: Hash::new_from_array([9; 32]),
        instructions: ixs,
        address_table_lookups: if with_table {
            vec![MessageAddressTableLookup {
                account_key: SolAddress::from([0x7a; 32]),
                writable_indexes: vec![0],
                readonly_indexes: vec![],
            }]
        } else {
            vec![]
        },
    };
    wincode::serialize(&VersionedMessage::V0(msg)).unwrap()
}

pub fn compiled(program_index: u8, accounts: Vec<u8>, data: Vec<u8>) -> CompiledInstruction {
    CompiledInstruction::new_from_raw_parts(program_index, data, accounts)
}
