"""Solana attacks against the policy, checked on the real runtime.

Each attack of the attack run (issue 6) is built with solders and sent to a running
`ekms sim`: the API must refuse it with the rule that stops it. For the transactions the
policy allows, the transaction the enclave signed is executed on LiteSVM
(`solders.litesvm`, the Solana runtime in-process) and balances before and after show
that it does what the policy says and no more: the fee paid is at most
`max_fee_lamports` and the lamports moved are within the caps. LiteSVM also shows that
the refused nonce takeover and Allocate freeze are real (signed locally, never by the
enclave)."""

from __future__ import annotations

import base64

import pytest
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import (
    AllocateParams,
    CreateAccountParams,
    InitializeNonceAccountParams,
    WithdrawNonceAccountParams,
    allocate,
    create_account,
    initialize_nonce_account,
    withdraw_nonce_account,
)
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from ekms_e2e import ONE_SOL, SYSTEM_PROGRAM, check_solana_signature, sol_transfer_ix

COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"
LAMPORTS_PER_SIGNATURE = 5_000

#: The policy under attack: System Program and Compute Budget (as every bot that pays
#: priority fees needs), at most 1 SOL per transfer and per transaction, at most
#: 0.001 SOL in fees.
MAX_PER_TRANSFER = ONE_SOL
MAX_PER_TRANSACTION = ONE_SOL
MAX_FEE = 1_000_000
POLICY = {
    "enabled": True,
    "solana": {
        "allowed_programs": [SYSTEM_PROGRAM, COMPUTE_BUDGET_PROGRAM],
        "max_lamports_per_transfer": MAX_PER_TRANSFER,
        "max_lamports_per_transaction": MAX_PER_TRANSACTION,
        "max_fee_lamports": MAX_FEE,
    },
}
#: What the key holds on the simulated chain.
BALANCE = 50 * ONE_SOL


def assert_denied(r, rule):
    assert r.status == 403, r
    assert r.code == "policy_denied", r
    assert r.error.get("rule") == rule, r
    assert "signature" not in r.json and "signed_transaction" not in r.json


@pytest.fixture(scope="module")
def key(sim):
    return sim.client.create_key("ed25519", POLICY)


@pytest.fixture
def chain(key):
    """A fresh LiteSVM with the key's account funded; returns (svm, key pubkey)."""
    svm = LiteSVM()
    payer = Pubkey.from_string(key["address"])
    svm.airdrop(payer, BALANCE)
    return svm, payer


def unsigned_legacy(payer: Pubkey, ixs: list, blockhash: Hash, presigned: dict | None = None) -> tuple[bytes, bytes]:
    """(transaction with the slots of `presigned` {pubkey: Keypair} filled and the
    others zero, message bytes)."""
    msg = Message.new_with_blockhash(ixs, payer, blockhash)
    message = bytes(msg)
    sigs = []
    for k in msg.account_keys[: msg.header.num_required_signatures]:
        kp = (presigned or {}).get(k)
        sigs.append(kp.sign_message(message) if kp else Signature.default())
    tx = VersionedTransaction.populate(msg, sigs)
    return bytes(tx), message


def execute(svm: LiteSVM, answer: dict) -> TransactionMetadata:
    """Runs the transaction the enclave signed; fails the test if the runtime refuses it."""
    tx = VersionedTransaction.from_bytes(base64.b64decode(answer["signed_transaction"]))
    result = svm.send_transaction(tx)
    assert isinstance(result, TransactionMetadata), result
    return result


def balance(svm: LiteSVM, pubkey: Pubkey) -> int:
    return svm.get_balance(pubkey) or 0


# ------------------------------------------------------------- refused attacks


def nonce_takeover_ixs(victim: Pubkey, attacker: Pubkey) -> list:
    return [
        allocate(AllocateParams(pubkey=victim, space=80)),
        initialize_nonce_account(InitializeNonceAccountParams(nonce_pubkey=victim, authority=attacker)),
    ]


def test_rejects_nonce_takeover_of_the_keys_account(client, key, chain):
    svm, payer = chain
    unsigned, _ = unsigned_legacy(payer, nonce_takeover_ixs(payer, Keypair().pubkey()), svm.latest_blockhash())
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.system_instructions")
    assert balance(svm, payer) == BALANCE


def test_nonce_takeover_is_real_on_the_runtime():
    """The refused transaction, signed by a local keypair: the attacker becomes the
    nonce authority and withdraws the whole balance."""
    svm = LiteSVM()
    victim, attacker = Keypair(), Keypair()
    svm.airdrop(victim.pubkey(), BALANCE)
    svm.airdrop(attacker.pubkey(), ONE_SOL)
    bh = svm.latest_blockhash()
    msg = Message.new_with_blockhash(nonce_takeover_ixs(victim.pubkey(), attacker.pubkey()), victim.pubkey(), bh)
    assert isinstance(svm.send_transaction(Transaction([victim], msg, bh)), TransactionMetadata)
    # A nonce can be used once per slot: move on one slot.
    svm.warp_to_slot(svm.get_clock().slot + 1)
    svm.expire_blockhash()
    stolen = balance(svm, victim.pubkey())
    assert stolen == BALANCE - LAMPORTS_PER_SIGNATURE
    bh = svm.latest_blockhash()
    withdraw = withdraw_nonce_account(
        WithdrawNonceAccountParams(
            nonce_pubkey=victim.pubkey(),
            authorized_pubkey=attacker.pubkey(),
            to_pubkey=attacker.pubkey(),
            lamports=stolen,
        )
    )
    msg = Message.new_with_blockhash([withdraw], attacker.pubkey(), bh)
    assert isinstance(svm.send_transaction(Transaction([attacker], msg, bh)), TransactionMetadata)
    assert balance(svm, victim.pubkey()) == 0
    assert balance(svm, attacker.pubkey()) == ONE_SOL + stolen - LAMPORTS_PER_SIGNATURE


def test_rejects_allocate_freeze(client, key, chain):
    svm, payer = chain
    unsigned, _ = unsigned_legacy(payer, [allocate(AllocateParams(pubkey=payer, space=1))], svm.latest_blockhash())
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.system_instructions")


def test_allocate_freeze_is_real_on_the_runtime():
    """Allocate(1) on a funded account: it then carries data and can no longer pay fees."""
    svm = LiteSVM()
    victim = Keypair()
    svm.airdrop(victim.pubkey(), BALANCE)
    bh = svm.latest_blockhash()
    msg = Message.new_with_blockhash([allocate(AllocateParams(pubkey=victim.pubkey(), space=1))], victim.pubkey(), bh)
    assert isinstance(svm.send_transaction(Transaction([victim], msg, bh)), TransactionMetadata)
    svm.expire_blockhash()
    bh = svm.latest_blockhash()
    msg = Message.new_with_blockhash([sol_transfer_ix(victim.pubkey(), Keypair().pubkey(), 1)], victim.pubkey(), bh)
    result = svm.send_transaction(Transaction([victim], msg, bh))
    assert isinstance(result, FailedTransactionMetadata), result
    assert "InvalidAccountForFee" in str(result.err()), result
    assert balance(svm, victim.pubkey()) == BALANCE - LAMPORTS_PER_SIGNATURE


def test_rejects_priority_fee_drain(client, key, chain):
    """The attack run: 1.4M compute units at 14.285M micro-lamports each would pay
    19.999 SOL in priority fees, with a 1-lamport transfer as cover."""
    svm, payer = chain
    ixs = [
        set_compute_unit_limit(1_400_000),
        set_compute_unit_price(14_285_000_000),
        sol_transfer_ix(payer, Keypair().pubkey(), 1),
    ]
    unsigned, _ = unsigned_legacy(payer, ixs, svm.latest_blockhash())
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.max_fee_lamports")
    # The default unit limit counts too: a price alone, with no limit set.
    ixs = [set_compute_unit_price(10_000_000), sol_transfer_ix(payer, Keypair().pubkey(), 1)]
    unsigned, _ = unsigned_legacy(payer, ixs, svm.latest_blockhash())
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.max_fee_lamports")


def compute_budget_only_ixs() -> list:
    """A price with no other instruction: agave reserves 3000 units for the builtin
    Compute Budget instruction, so 10^13 micro-lamports each is 30 SOL of fee."""
    return [set_compute_unit_price(10_000_000_000_000)]


def test_rejects_priority_fee_of_a_compute_budget_only_message(client, key, chain):
    svm, payer = chain
    unsigned, _ = unsigned_legacy(payer, compute_budget_only_ixs(), svm.latest_blockhash())
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.max_fee_lamports")


def test_compute_budget_only_fee_drain_is_real_on_the_runtime():
    svm = LiteSVM()
    victim = Keypair()
    svm.airdrop(victim.pubkey(), BALANCE)
    msg = Message.new_with_blockhash(compute_budget_only_ixs(), victim.pubkey(), svm.latest_blockhash())
    meta = svm.send_transaction(VersionedTransaction(msg, [victim]))
    assert isinstance(meta, TransactionMetadata), meta
    assert meta.fee() == LAMPORTS_PER_SIGNATURE + 30 * ONE_SOL
    assert balance(svm, victim.pubkey()) == BALANCE - meta.fee()


def test_compute_budget_instructions_have_units_of_their_own_on_the_runtime():
    """Next to a non-builtin instruction (SPL Token, failing, still pays), each Compute
    Budget instruction adds 3000 default units: the signer's bound must count them
    (signer/src/solana.rs `max_fee_counts_compute_budget_instructions_next_to_a_non_builtin`)."""
    from solders.compute_budget import request_heap_frame
    from solders.instruction import Instruction

    svm = LiteSVM()
    victim = Keypair()
    svm.airdrop(victim.pubkey(), BALANCE)
    token = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
    ixs = [set_compute_unit_price(1_000_000), request_heap_frame(64 * 1024), Instruction(token, b"", [])]
    msg = Message.new_with_blockhash(ixs, victim.pubkey(), svm.latest_blockhash())
    result = svm.send_transaction(VersionedTransaction(msg, [victim]))
    meta = result.meta() if isinstance(result, FailedTransactionMetadata) else result
    assert meta.fee() == LAMPORTS_PER_SIGNATURE + 200_000 + 2 * 3_000


def test_rejects_duplicate_compute_budget_instructions(client, key, chain):
    svm, payer = chain
    ixs = [set_compute_unit_price(1), set_compute_unit_price(2), sol_transfer_ix(payer, Keypair().pubkey(), 1)]
    unsigned, _ = unsigned_legacy(payer, ixs, svm.latest_blockhash())
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.compute_budget")


def test_rejects_many_transfers_in_one_message(client, key, chain):
    """Ten 0.9 SOL transfers each pass the 1 SOL per-transfer cap; their 9 SOL do not
    pass the 1 SOL per-transaction cap."""
    svm, payer = chain
    ixs = [sol_transfer_ix(payer, Keypair().pubkey(), 9 * ONE_SOL // 10) for _ in range(10)]
    unsigned, _ = unsigned_legacy(payer, ixs, svm.latest_blockhash())
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.max_lamports_per_transaction")


def test_rejects_create_account_of_the_key_itself(client, key, chain):
    """CreateAccount must fund a fresh account: never the key (whose address would then
    belong to another program)."""
    svm, payer = chain
    funder = Keypair()
    ix = create_account(
        CreateAccountParams(
            from_pubkey=funder.pubkey(), to_pubkey=payer, lamports=1, space=0, owner=Keypair().pubkey()
        )
    )
    unsigned, _ = unsigned_legacy(funder.pubkey(), [ix], svm.latest_blockhash(), {funder.pubkey(): funder})
    assert_denied(client.sign_solana(key["key_id"], unsigned), "solana.system_instructions")


# ------------------------------------------------- allowed, executed on LiteSVM


def test_transfer_with_priority_fee_does_what_the_policy_says(client, key, chain):
    svm, payer = chain
    to = Keypair().pubkey()
    unit_limit, unit_price = 300_000, 3_000_000  # 900_000 lamports of priority fee
    amount = MAX_PER_TRANSFER
    ixs = [set_compute_unit_limit(unit_limit), set_compute_unit_price(unit_price), sol_transfer_ix(payer, to, amount)]
    unsigned, message = unsigned_legacy(payer, ixs, svm.latest_blockhash())
    r = client.sign_solana(key["key_id"], unsigned)
    assert r.status == 200, r
    check_solana_signature(r.json, message, key["address"])

    before = balance(svm, payer)
    meta = execute(svm, r.json)
    fee = before - balance(svm, payer) - amount
    expected_fee = LAMPORTS_PER_SIGNATURE + -(-unit_limit * unit_price // 1_000_000)
    assert fee == expected_fee == meta.fee(), (fee, expected_fee, meta)
    assert fee <= MAX_FEE
    assert balance(svm, to) == amount


def test_create_account_does_what_the_policy_says(client, key, chain):
    """CreateAccount funding a new account that co-signs: the new account gets exactly
    the lamports, the key pays those plus the fee for two signatures."""
    svm, payer = chain
    new = Keypair()
    lamports = svm.minimum_balance_for_rent_exemption(165)
    owner = Pubkey.from_string(SYSTEM_PROGRAM)
    ix = create_account(
        CreateAccountParams(from_pubkey=payer, to_pubkey=new.pubkey(), lamports=lamports, space=165, owner=owner)
    )
    unsigned, message = unsigned_legacy(payer, [ix], svm.latest_blockhash(), {new.pubkey(): new})
    r = client.sign_solana(key["key_id"], unsigned)
    assert r.status == 200, r
    tx = check_solana_signature(r.json, message, key["address"])
    assert tx.signatures[1] == new.sign_message(message), "the co-signer's slot was kept"

    before = balance(svm, payer)
    execute(svm, r.json)
    fee = before - balance(svm, payer) - lamports
    assert fee == 2 * LAMPORTS_PER_SIGNATURE <= MAX_FEE
    assert balance(svm, new.pubkey()) == lamports <= MAX_PER_TRANSFER
    account = svm.get_account(new.pubkey())
    assert len(account.data) == 165 and account.owner == owner


def test_v0_transfers_up_to_the_transaction_total(client, key, chain):
    """Two transfers summing exactly to the per-transaction cap pass and move exactly
    that; the default compute limit with no price adds no priority fee."""
    svm, payer = chain
    a, b = Keypair().pubkey(), Keypair().pubkey()
    half = MAX_PER_TRANSACTION // 2
    msg = MessageV0.try_compile(
        payer, [sol_transfer_ix(payer, a, half), sol_transfer_ix(payer, b, MAX_PER_TRANSACTION - half)], [],
        svm.latest_blockhash(),
    )
    unsigned = bytes(VersionedTransaction.populate(msg, [Signature.default()]))
    r = client.sign_solana(key["key_id"], unsigned)
    assert r.status == 200, r
    check_solana_signature(r.json, to_bytes_versioned(msg), key["address"])
    before = balance(svm, payer)
    execute(svm, r.json)
    assert before - balance(svm, payer) == MAX_PER_TRANSACTION + LAMPORTS_PER_SIGNATURE
    assert balance(svm, a) + balance(svm, b) == MAX_PER_TRANSACTION
