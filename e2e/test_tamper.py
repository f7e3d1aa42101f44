"""The parent's SQLite store is untrusted (DESIGN §1): rows changed behind the
enclave's back — a policy loosened, two keys' sealed records swapped, one byte of a
sealed record flipped — make signing fail with 500 sealed_state_invalid and no
signature, and the failed attempt changes nothing stored."""

from __future__ import annotations

import json

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ekms_e2e import (
    ONE_ETH,
    ONE_SOL,
    SYSTEM_PROGRAM,
    check_evm_signature,
    db_connect,
    db_dump,
    evm_eip1559,
    sol_legacy,
    sol_transfer_ix,
)

DEST = "0x000000000000000000000000000000000000dEaD"
POLICY = {
    "enabled": True,
    "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_value_wei": str(ONE_ETH), "max_fee_wei": str(10**16)},
}
SOL_POLICY = {"enabled": True, "solana": {"allowed_programs": [SYSTEM_PROGRAM], "max_lamports_per_transfer": ONE_SOL, "max_lamports_per_transaction": 10 * ONE_SOL, "max_fee_lamports": 100_000}}


def assert_sealed_state_invalid(r):
    assert r.status == 500, r
    assert r.code == "sealed_state_invalid", r
    assert "signature" not in r.json and "signed_transaction" not in r.json, r


def signs(client, key) -> None:
    unsigned = evm_eip1559(1, DEST, 1)
    r = client.sign_evm(key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, key["address"])


def sealed_record(sim, key_id) -> bytes:
    conn = db_connect(sim.db_path)
    try:
        row = conn.execute("SELECT sealed_record FROM keys WHERE key_id = ?", (key_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None, key_id
    return bytes(row[0])


def write(sim, sql, params) -> None:
    conn = db_connect(sim.db_path)
    try:
        cur = conn.execute(sql, params)
        assert cur.rowcount >= 1, (sql, params)
    finally:
        conn.close()


def failed_sign_changes_nothing(sim, key, unsigned=None) -> None:
    before = db_dump(sim.db_path)
    r = sim.client.sign_evm(key["key_id"], unsigned or evm_eip1559(1, DEST, 1))
    assert_sealed_state_invalid(r)
    assert db_dump(sim.db_path) == before, "a failed signing attempt changed the store"


def test_untampered_key_signs(sim, client):
    """Control: the same steps without tampering sign."""
    key = client.create_key("secp256k1", POLICY)
    before = db_dump(sim.db_path)
    signs(client, key)
    after = db_dump(sim.db_path)
    # The one change: the signature's audit record.
    old_records = before.pop("audit_records")
    new = [r for r in after.pop("audit_records") if r not in old_records]
    assert after == before
    assert len(new) == 1 and json.loads(new[0][1])["action"] == "sign", new


def test_rejects_policy_loosened_in_db(sim, client):
    key = client.create_key("secp256k1", POLICY)
    over_cap = evm_eip1559(1, DEST, 5 * ONE_ETH)
    r = client.sign_evm(key["key_id"], over_cap)
    assert r.status == 403 and r.error.get("rule") == "evm.max_value_wei", r

    conn = db_connect(sim.db_path)
    try:
        (text,) = conn.execute("SELECT policy_json FROM policies WHERE key_id = ?", (key["key_id"],)).fetchone()
    finally:
        conn.close()
    doc = json.loads(text)
    doc["evm"]["max_value_wei"] = str(100 * ONE_ETH)
    write(sim, "UPDATE policies SET policy_json = ? WHERE key_id = ?", (json.dumps(doc, separators=(",", ":")), key["key_id"]))

    failed_sign_changes_nothing(sim, key, over_cap)
    # Within the original policy too: the key refuses while its policy fails the MAC.
    failed_sign_changes_nothing(sim, key)


def test_rejects_policy_version_changed_in_db(sim, client):
    key = client.create_key("secp256k1", POLICY)
    write(sim, "UPDATE policies SET version = version + 7 WHERE key_id = ?", (key["key_id"],))
    failed_sign_changes_nothing(sim, key)


def test_rejects_policy_of_another_key(sim, client):
    """A's policy row (with its valid MAC) copied onto B, whose policy is stricter."""
    loose = client.create_key("secp256k1", {**POLICY, "evm": {**POLICY["evm"], "max_value_wei": str(10 * ONE_ETH)}})
    strict = client.create_key("secp256k1", POLICY)
    conn = db_connect(sim.db_path)
    try:
        row = conn.execute("SELECT version, policy_json, mac FROM policies WHERE key_id = ?", (loose["key_id"],)).fetchone()
    finally:
        conn.close()
    write(sim, "UPDATE policies SET version = ?, policy_json = ?, mac = ? WHERE key_id = ?", (*row, strict["key_id"]))
    failed_sign_changes_nothing(sim, strict, evm_eip1559(1, DEST, 2 * ONE_ETH))
    signs(client, loose)


def test_rejects_swapped_sealed_records(sim, client):
    a = client.create_key("secp256k1", POLICY)
    b = client.create_key("secp256k1", POLICY)
    signs(client, a)
    signs(client, b)
    ra, rb = sealed_record(sim, a["key_id"]), sealed_record(sim, b["key_id"])
    assert ra != rb
    write(sim, "UPDATE keys SET sealed_record = ? WHERE key_id = ?", (rb, a["key_id"]))
    write(sim, "UPDATE keys SET sealed_record = ? WHERE key_id = ?", (ra, b["key_id"]))
    failed_sign_changes_nothing(sim, a)
    failed_sign_changes_nothing(sim, b)
    # Put back: both sign again, as themselves.
    write(sim, "UPDATE keys SET sealed_record = ? WHERE key_id = ?", (ra, a["key_id"]))
    write(sim, "UPDATE keys SET sealed_record = ? WHERE key_id = ?", (rb, b["key_id"]))
    signs(client, a)
    signs(client, b)


def test_rejects_swapped_rows_across_algorithms(sim, client):
    """An ed25519 key's sealed record put under a secp256k1 key id."""
    evm = client.create_key("secp256k1", POLICY)
    sol = client.create_key("ed25519", SOL_POLICY)
    write(sim, "UPDATE keys SET sealed_record = ? WHERE key_id = ?", (sealed_record(sim, sol["key_id"]), evm["key_id"]))
    failed_sign_changes_nothing(sim, evm)
    # The Solana key itself is untouched and still signs.
    payer = Pubkey.from_string(sol["address"])
    unsigned, _ = sol_legacy(payer, [sol_transfer_ix(payer, Keypair().pubkey(), 1)])
    assert client.sign_solana(sol["key_id"], unsigned).status == 200


@pytest.mark.parametrize("where", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], ids=lambda w: f"at{int(w * 100)}pct")
def test_rejects_one_byte_changed_in_sealed_record(sim, client, where):
    key = client.create_key("secp256k1", POLICY)
    signs(client, key)  # also warms any cache the enclave keeps
    original = sealed_record(sim, key["key_id"])
    i = min(int(where * len(original)), len(original) - 1)
    tampered = bytearray(original)
    tampered[i] ^= 0x01
    write(sim, "UPDATE keys SET sealed_record = ? WHERE key_id = ?", (bytes(tampered), key["key_id"]))
    failed_sign_changes_nothing(sim, key)
    write(sim, "UPDATE keys SET sealed_record = ? WHERE key_id = ?", (original, key["key_id"]))
    signs(client, key)


def test_rejects_policy_mac_changed(sim, client):
    key = client.create_key("secp256k1", POLICY)
    conn = db_connect(sim.db_path)
    try:
        (mac,) = conn.execute("SELECT mac FROM policies WHERE key_id = ?", (key["key_id"],)).fetchone()
    finally:
        conn.close()
    mac = bytearray(mac)
    mac[-1] ^= 0x80
    write(sim, "UPDATE policies SET mac = ? WHERE key_id = ?", (bytes(mac), key["key_id"]))
    failed_sign_changes_nothing(sim, key)


def test_rejects_policy_rollback_to_older_version(sim, client):
    """The owner tightens the policy; the parent puts the previous (looser, validly
    MAC'd) row back. DESIGN §1: the parent must not silently loosen a policy. The
    enclave refuses a version below the newest it has issued or used (in memory: an
    enclave restart forgets the floor, see enclave/src/floor.rs)."""
    loose = {**POLICY, "evm": {**POLICY["evm"], "max_value_wei": str(10 * ONE_ETH)}}
    key = client.create_key("secp256k1", loose)
    conn = db_connect(sim.db_path)
    try:
        old = conn.execute("SELECT version, policy_json, mac FROM policies WHERE key_id = ?", (key["key_id"],)).fetchone()
    finally:
        conn.close()
    tight = {**loose, "evm": {**loose["evm"], "max_value_wei": "0"}}
    assert client.set_policy(key["key_id"], tight).status == 200
    five_eth = evm_eip1559(1, DEST, 5 * ONE_ETH)
    r = client.sign_evm(key["key_id"], five_eth)
    assert r.status == 403 and r.error.get("rule") == "evm.max_value_wei", r
    write(sim, "UPDATE policies SET version = ?, policy_json = ?, mac = ? WHERE key_id = ?", (*old, key["key_id"]))
    r = client.sign_evm(key["key_id"], five_eth)
    assert r.status != 200 and "signature" not in r.json, f"the rolled-back policy signed: {r}"
    assert r.status == 500 and r.error.get("code") == "sealed_state_invalid", r
