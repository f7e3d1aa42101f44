"""Keys and signatures, checked by independent implementations: EVM transactions
(EIP-1559, EIP-2930, legacy EIP-155) recovered with eth-account, Solana legacy and v0
transactions verified with solders and PyNaCl."""

from __future__ import annotations

import base64
import re

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from ekms_e2e import (
    ONE_ETH,
    ONE_SOL,
    SYSTEM_PROGRAM,
    check_evm_key,
    check_evm_signature,
    check_solana_signature,
    evm_eip1559,
    evm_eip2930,
    evm_legacy,
    sol_legacy,
    sol_transfer_ix,
    sol_v0,
)

DEST = "0x000000000000000000000000000000000000dEaD"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def evm_policy(chain_ids=(1,), dests=(DEST,), max_wei=ONE_ETH):
    return {
        "enabled": True,
        "evm": {"chain_ids": list(chain_ids), "allowed_destinations": list(dests), "max_value_wei": str(max_wei), "max_fee_wei": str(10**16)},
    }


def sol_policy(programs=(SYSTEM_PROGRAM,), max_lamports=ONE_SOL):
    return {"enabled": True, "solana": {"allowed_programs": list(programs), "max_lamports_per_transfer": max_lamports, "max_lamports_per_transaction": 10 * ONE_SOL, "max_fee_lamports": 100_000}}


def test_health_reports_simulation(client):
    r = client.health()
    assert r.status == 200, r
    doc = r.json
    assert doc["status"] == "ok" and doc["mode"] == "simulation", doc
    assert isinstance(doc["pcrs"], dict) and doc["pcrs"], doc
    for index, value in doc["pcrs"].items():
        assert index.isdigit() and re.fullmatch(r"[0-9a-f]{96}", value), (index, value)


def test_create_secp256k1_key(client):
    key = client.create_key("secp256k1", evm_policy(), label="e2e evm")
    assert UUID.match(key["key_id"]), key
    check_evm_key(key)
    assert isinstance(key["policy_version"], int) and key["created_at"], key
    got = client.get_key(key["key_id"])
    assert got.status == 200, got
    assert got.json["address"] == key["address"] and got.json["public_key"] == key["public_key"]
    listed = client.list_keys()
    assert listed.status == 200 and key["key_id"] in [k["key_id"] for k in listed.json["keys"]], listed


def test_create_ed25519_key(client):
    key = client.create_key("ed25519", sol_policy())
    assert key["algorithm"] == "ed25519"
    pub = Pubkey.from_string(key["address"])
    assert str(pub) == key["address"] == key["public_key"], key


def test_keys_are_distinct(client):
    a = client.create_key("secp256k1")
    b = client.create_key("secp256k1")
    assert a["key_id"] != b["key_id"] and a["address"] != b["address"]


def test_rejects_unknown_algorithm(client):
    r = client.request("POST", "/v1/keys", {"algorithm": "rsa"})
    assert r.status == 400, r


def test_rejects_unknown_key(client):
    r = client.sign_evm("00000000-0000-4000-8000-000000000000", evm_eip1559(1, DEST, 1))
    assert r.status == 404 and r.code == "key_not_found", r
    assert client.get_key("not-a-uuid").status == 404


def test_sign_eip1559(client):
    key = client.create_key("secp256k1", evm_policy())
    unsigned = evm_eip1559(1, DEST, ONE_ETH // 10, nonce=7)
    r = client.sign_evm(key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, key["address"])


def test_sign_eip1559_with_data_and_access_list(client):
    key = client.create_key("secp256k1", evm_policy())
    access = [[bytes.fromhex(DEST[2:]), [b"\x00" * 31 + b"\x01"]]]
    unsigned = evm_eip1559(1, DEST, 0, nonce=1, gas=60_000, data=bytes.fromhex("a9059cbb") + b"\x00" * 64,
                           access_list=access)
    r = client.sign_evm(key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, key["address"])


def test_sign_legacy_eip155(client):
    key = client.create_key("secp256k1", evm_policy(chain_ids=(1, 137)))
    for chain in (1, 137):
        unsigned = evm_legacy(chain, DEST, 12345, nonce=3)
        r = client.sign_evm(key["key_id"], unsigned)
        assert r.status == 200, r
        check_evm_signature(r.json, unsigned, key["address"])


def test_sign_eip2930(client):
    key = client.create_key("secp256k1", evm_policy())
    unsigned = evm_eip2930(1, DEST, 1, access_list=[[bytes.fromhex(DEST[2:]), []]])
    r = client.sign_evm(key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, key["address"])


def test_rejects_evm_kind_for_solana_key(client):
    key = client.create_key("ed25519", sol_policy())
    r = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1))
    assert r.status == 400, r


def test_sign_solana_legacy(client):
    key = client.create_key("ed25519", sol_policy())
    payer = Pubkey.from_string(key["address"])
    unsigned, message = sol_legacy(payer, [sol_transfer_ix(payer, Keypair().pubkey(), ONE_SOL // 2)])
    r = client.sign_solana(key["key_id"], unsigned)
    assert r.status == 200, r
    tx = check_solana_signature(r.json, message, key["address"])
    assert tx.verify_with_results() == [True]


def test_sign_solana_v0(client):
    key = client.create_key("ed25519", sol_policy())
    payer = Pubkey.from_string(key["address"])
    unsigned, message = sol_v0(payer, [sol_transfer_ix(payer, Keypair().pubkey(), 1_000)])
    assert message[0] == 0x80  # a versioned (v0) message
    r = client.sign_solana(key["key_id"], unsigned)
    assert r.status == 200, r
    tx = check_solana_signature(r.json, message, key["address"])
    assert tx.verify_with_results() == [True]


def test_sign_solana_bare_message(client):
    key = client.create_key("ed25519", sol_policy())
    payer = Pubkey.from_string(key["address"])
    _, message = sol_v0(payer, [sol_transfer_ix(payer, Keypair().pubkey(), 5)])
    r = client.sign_solana(key["key_id"], message)
    assert r.status == 200, r
    check_solana_signature(r.json, message, key["address"])


def test_sign_solana_second_signer_slot(client):
    """The key is the second required signer (a fee payer signs slot 0): its signature
    goes in slot 1 and slot 0 stays as sent."""
    key = client.create_key("ed25519", sol_policy())
    me = Pubkey.from_string(key["address"])
    fee_payer = Keypair()
    unsigned, message = sol_legacy(fee_payer.pubkey(), [sol_transfer_ix(me, Keypair().pubkey(), 42)])
    r = client.sign_solana(key["key_id"], unsigned)
    assert r.status == 200, r
    tx = check_solana_signature(r.json, message, key["address"])
    assert list(tx.message.account_keys).index(me) == 1
    assert bytes(tx.signatures[0]) == b"\x00" * 64


def test_rejects_solana_tx_not_signed_by_key(client):
    key = client.create_key("ed25519", sol_policy())
    other = Keypair().pubkey()
    unsigned, _ = sol_legacy(other, [sol_transfer_ix(other, Keypair().pubkey(), 1)])
    r = client.sign_solana(key["key_id"], unsigned)
    assert r.status == 403 and r.error.get("rule") == "solana.signer", r
    assert "signature" not in r.json


def test_signatures_differ_per_message(client):
    key = client.create_key("ed25519", sol_policy())
    payer = Pubkey.from_string(key["address"])
    sigs = set()
    for lamports in (1, 2):
        unsigned, message = sol_legacy(payer, [sol_transfer_ix(payer, Keypair().pubkey(), lamports)])
        r = client.sign_solana(key["key_id"], unsigned)
        assert r.status == 200, r
        check_solana_signature(r.json, message, key["address"])
        sigs.add(r.json["signature"])
        VersionedTransaction.from_bytes(base64.b64decode(r.json["signed_transaction"]))
    assert len(sigs) == 2
