"""Policy version 2 through the whole system (issue 8): the message kinds signed by the
enclave and verified by implementations we did not write (eth-account's
`recover_message` with `encode_defunct` / `encode_typed_data`, PyNaCl), their refusals
naming the rule, and the rolling limits kept by the enclave: 64 parallel requests sign
exactly up to a window's cap, the same transaction signed twice counts once, and a
restart, or a replayed older checkpoint, gains nothing beyond the documented bound."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import struct
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from nacl.signing import VerifyKey
from solders.pubkey import Pubkey

from ekms_e2e import Sim, check_evm_signature, db_connect, evm_eip1559

DEST = "0x000000000000000000000000000000000000dEaD"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
ROUTER = "0x3fC91A3afd70395Cd496C647d5a6CC9D4B2b7FAD"
FEE_CAP = str(30_000_000 * 10**12)
START_TIMEOUT = float(os.environ.get("EKMS_E2E_START_TIMEOUT", "90"))


def v2(kinds, **evm):
    return {
        "version": 2,
        "enabled": True,
        "allowed_kinds": kinds,
        "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_fee_wei": FEE_CAP, **evm},
    }


def sign(client, key_id, kind, payload):
    return client.request("POST", f"/v1/keys/{key_id}/sign", {"kind": kind, "payload": payload})


def assert_refused(r, rule):
    assert r.status == 403 and r.code == "policy_denied", r
    assert r.error.get("rule") == rule, r
    assert "signature" not in r.json


def permit(spender, chain_id=1, value=10**9):
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": "USD Coin", "version": "2", "chainId": chain_id, "verifyingContract": USDC},
        "message": {"owner": DEST, "spender": spender, "value": value, "nonce": 0, "deadline": 2**40},
    }


PERMIT_POLICY = v2(
    ["evm_typed_data"],
    tokens={USDC: {"max_per_tx": str(10**10)}},
    spenders=[ROUTER],
    typed_data={
        "domains": [{"name": "USD Coin", "version": "2", "chain_id": 1, "verifying_contract": USDC}],
        "primary_types": ["Permit"],
    },
)


def test_evm_messages_sign_and_recover_with_eth_account(client):
    key = client.create_key("secp256k1", v2(["evm_message"], messages={"prefixes": ["Sign in to "], "hex_hash": True}))
    for text in ["Sign in to example.org", "0x" + "ab" * 32]:
        r = sign(client, key["key_id"], "evm_message", "0x" + text.encode().hex())
        assert r.status == 200, r
        signer = Account.recover_message(encode_defunct(text=text), signature=r.json["signature"])
        assert signer == key["address"]
        assert r.json["receipt"]["seq"] > 0
    assert_refused(sign(client, key["key_id"], "evm_message", "0x" + b"transfer everything".hex()), "evm.messages")
    # The kind must be allowed: a transaction is refused under this policy.
    assert_refused(client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 0)), "allowed_kinds")


def test_eip712_permit_to_the_listed_spender_only(client):
    key = client.create_key("secp256k1", PERMIT_POLICY)
    td = permit(ROUTER)
    r = sign(client, key["key_id"], "evm_typed_data", td)
    assert r.status == 200, r
    assert Account.recover_message(encode_typed_data(full_message=td), signature=r.json["signature"]) == key["address"]
    assert_refused(sign(client, key["key_id"], "evm_typed_data", permit(DEST)), "evm.spenders")
    # The right name on the wrong chain.
    assert_refused(sign(client, key["key_id"], "evm_typed_data", permit(ROUTER, chain_id=137)), "evm.typed_data.domains")
    assert_refused(sign(client, key["key_id"], "evm_typed_data", permit(ROUTER, value=str(2**256 - 1))),
                   "evm.allow_unlimited_approve")


def test_raw_digest_only_when_the_policy_says_so(client):
    digest = "0x" + "5a" * 32
    strict = client.create_key("secp256k1", v2(["evm_digest"]))
    assert_refused(sign(client, strict["key_id"], "evm_digest", digest), "evm.allow_raw_digest")
    loose = client.create_key("secp256k1", v2(["evm_digest"], allow_raw_digest=True))
    r = sign(client, loose["key_id"], "evm_digest", digest)
    assert r.status == 200, r
    assert Account._recover_hash(bytes.fromhex(digest[2:]), signature=r.json["signature"]) == loose["address"]


def offchain_message(signer: bytes, text: bytes) -> bytes:
    """Solana off-chain message, header version 0 (the spec as the Solana CLI signs it)."""
    fmt = 0 if all(0x20 <= b <= 0x7E for b in text) else 1
    return (b"\xffsolana offchain" + bytes([0]) + bytes(32) + bytes([fmt, 1]) + signer
            + struct.pack("<H", len(text)) + text)


def test_solana_offchain_message_verifies_with_pynacl(client):
    policy = {
        "version": 2,
        "enabled": True,
        "allowed_kinds": ["solana_offchain_message"],
        "solana": {"allowed_programs": [], "max_lamports_per_transfer": 0, "max_lamports_per_transaction": 0,
                   "max_fee_lamports": 0, "offchain_messages": {"prefixes": ["Sign in to "]}},
    }
    key = client.create_key("ed25519", policy)
    signer = bytes(Pubkey.from_string(key["address"]))
    import base64
    msg = offchain_message(signer, b"Sign in to example.org")
    r = sign(client, key["key_id"], "solana_offchain_message", base64.b64encode(msg).decode())
    assert r.status == 200, r
    from solders.signature import Signature
    VerifyKey(signer).verify(msg, bytes(Signature.from_string(r.json["signature"])))
    bad = offchain_message(signer, b"Send all my SOL")
    assert_refused(sign(client, key["key_id"], "solana_offchain_message", base64.b64encode(bad).decode()),
                   "solana.offchain_messages")


def windowed(cap_wei: int):
    return v2(["evm_transaction"], max_value_wei="1", max_value_wei_per_window={"max": str(cap_wei), "window_secs": 3600})


def test_parallel_requests_sign_exactly_up_to_the_window_cap(client):
    key = client.create_key("secp256k1", windowed(10))
    txs = [evm_eip1559(1, DEST, 1, nonce=n) for n in range(64)]
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda tx: client.sign_evm(key["key_id"], tx), txs))
    signed = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert len(signed) == 10, [a.status for a in answers]
    for a in refused:
        assert_refused(a, "evm.max_value_wei_per_window")


def test_the_same_transaction_signed_twice_counts_once(client):
    key = client.create_key("secp256k1", windowed(2))
    tx = evm_eip1559(1, DEST, 1, nonce=7)
    first = client.sign_evm(key["key_id"], tx)
    again = client.sign_evm(key["key_id"], tx)
    assert first.status == 200 and again.status == 200, (first, again)
    assert first.json["signed_transaction"] == again.json["signed_transaction"]
    check_evm_signature(again.json, tx, key["address"])
    # 1 of 2 spent: one more transaction fits, a third does not.
    assert client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1, nonce=8)).status == 200
    assert_refused(client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1, nonce=9)), "evm.max_value_wei_per_window")


def rows(sim, sql):
    conn = db_connect(sim.db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def write(sim, statements):
    conn = db_connect(sim.db_path)
    try:
        for sql, params in statements:
            conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def test_rolling_limits_hold_across_a_restart_and_a_replayed_checkpoint(fresh_sim):
    """Bound (docs/POLICY.md): after a restore, what the enclave could not see — from
    when the restored checkpoint was written to the restore — counts as spent at the most
    the policy allows in it, so no interval of `window_secs` ever signs over the cap."""
    sim, client = fresh_sim, fresh_sim.client
    key = client.create_key("secp256k1", windowed(3))
    kid = key["key_id"]
    assert client.sign_evm(kid, evm_eip1559(1, DEST, 1, nonce=0)).status == 200
    # A checkpoint now (the store-wide stop and resume write two), then the state as a
    # host would keep it to replay.
    assert client.request("POST", "/v1/admin/stop", {}).status == 200
    assert client.request("POST", "/v1/admin/resume", {}).status == 200
    old_checkpoints = rows(sim, "SELECT * FROM checkpoints")
    old_records = rows(sim, "SELECT * FROM audit_records")
    for n in (1, 2):
        assert client.sign_evm(kid, evm_eip1559(1, DEST, 1, nonce=n)).status == 200
    assert_refused(client.sign_evm(kid, evm_eip1559(1, DEST, 1, nonce=3)), "evm.max_value_wei_per_window")

    # An enclave restart: the window is still full.
    pid = sim.pid_of("enclave")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while True:
        r = client.sign_evm(kid, evm_eip1559(1, DEST, 1, nonce=3))
        if r.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert_refused(r, "evm.max_value_wei_per_window")

    # A replayed checkpoint from when only 1 of 3 was spent: the blind interval since
    # it was written counts as the whole cap, so it gains nothing (0 more signatures).
    sim.stop()
    write(sim, [("DELETE FROM checkpoints", ()),
                *[("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)", c) for c in old_checkpoints],
                ("DELETE FROM audit_records", ()),
                *[("INSERT INTO audit_records VALUES (?, ?, ?, ?)", a) for a in old_records]])
    again = Sim(sim.state_dir).start()
    try:
        again.wait_ready(START_TIMEOUT)
        gained = sum(again.client.sign_evm(kid, evm_eip1559(1, DEST, 1, nonce=n)).status == 200 for n in range(3, 6))
        assert gained == 0
        # A key made after the restart is not held back.
        fresh = again.client.create_key("secp256k1", windowed(3))
        assert again.client.sign_evm(fresh["key_id"], evm_eip1559(1, DEST, 1)).status == 200
    finally:
        again.stop()
