"""Only a key's owner can loosen its policy (issue 7): policy changes and re-enables of
an owned key need the owner's signature over the canonical authorization message,
made here by implementations we did not write (eth-account's EIP-191 `sign_message`,
PyNaCl's ed25519); every refusal is 403 owner_authorization_invalid and leaves the
stored policy row byte for byte as it was. An emergency stop (one key, or the whole
store) needs no owner, is enforced by the enclave, and survives an enclave restart and
a rolled-back policy row."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from nacl.signing import SigningKey
from solders.pubkey import Pubkey
from solders.signature import Signature

from ekms_e2e import ONE_ETH, check_evm_signature, db_connect, evm_eip1559

DEST = "0x000000000000000000000000000000000000dEaD"
FEE_CAP = str(30_000_000 * 1_000_000_000_000)


def policy(chain_ids=(1,), max_wei=ONE_ETH):
    return {
        "enabled": True,
        "evm": {
            "chain_ids": list(chain_ids),
            "allowed_destinations": [DEST],
            "max_value_wei": str(max_wei),
            "max_fee_wei": FEE_CAP,
        },
    }


OWNER = Account.from_key("0x" + "42" * 32)
OTHER = Account.from_key("0x" + "43" * 32)


def rfc3339(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_message(action: str, key_id: str, version: int, canonical: str, expires_at: str) -> str:
    """The canonical message, rebuilt here from the issue's text (not from our code)."""
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return (
        "enclave-kms owner authorization\n"
        f"action: {action}\nkey_id: {key_id}\nversion: {version}\n"
        f"policy_sha256: {digest}\nexpires_at: {expires_at}"
    )


def eth_sign(account, message: str) -> str:
    return "0x" + account.sign_message(encode_defunct(text=message)).signature.hex().removeprefix("0x")


def policy_row(sim, key_id):
    conn = db_connect(sim.db_path)
    try:
        return conn.execute(
            "SELECT key_id, version, policy_json, mac FROM policies WHERE key_id = ?", (key_id,)
        ).fetchone()
    finally:
        conn.close()


def propose(client, key_id, pol, expires_at=None):
    body = {"policy": pol}
    if expires_at is not None:
        body["expires_at"] = expires_at
    r = client.request("POST", f"/v1/keys/{key_id}/policy/proposal", body)
    assert r.status == 200, r
    return r.json


def put_policy(client, key_id, pol, version, expires_at, signature):
    return client.request(
        "PUT",
        f"/v1/keys/{key_id}/policy",
        {"policy": pol, "version": version, "expires_at": expires_at, "owner_signature": signature},
    )


def assert_owner_refused(r):
    assert r.status == 403, r
    assert r.code == "owner_authorization_invalid", r


def owned_key(client, owner=OWNER):
    r = client.request(
        "POST",
        "/v1/keys",
        {"algorithm": "secp256k1", "policy": policy(), "owner": {"type": "eip191", "address": owner.address}},
    )
    assert r.status == 201, r
    return r.json


def signs(client, key, chain_id=1) -> None:
    unsigned = evm_eip1559(chain_id, DEST, 1)
    r = client.sign_evm(key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, key["address"])


def test_eip191_owner_change_applies(sim, client):
    key = owned_key(client)
    shown = client.get_key(key["key_id"]).json
    assert shown["owner"] == {"type": "eip191", "address": OWNER.address}
    loosened = policy(chain_ids=(1, 8453))
    p = propose(client, key["key_id"], loosened)
    assert p["version"] == 2
    assert p["message"] == expected_message("set_policy", key["key_id"], 2, p["canonical_policy"], p["expires_at"])
    r = put_policy(client, key["key_id"], loosened, 2, p["expires_at"], eth_sign(OWNER, p["message"]))
    assert r.status == 200, r
    assert r.json["policy_version"] == 2
    signs(client, key, chain_id=8453)


def test_refused_changes_leave_the_policy_row_unchanged(sim, client):
    key = owned_key(client)
    kid = key["key_id"]
    loosened = policy(chain_ids=(1, 10), max_wei=100 * ONE_ETH)
    p = propose(client, kid, loosened)
    good = eth_sign(OWNER, p["message"])
    before = policy_row(sim, kid)

    # Without a signature.
    assert_owner_refused(client.request("PUT", f"/v1/keys/{kid}/policy", {"policy": loosened}))
    # Signed by another key.
    assert_owner_refused(put_policy(client, kid, loosened, 2, p["expires_at"], eth_sign(OTHER, p["message"])))
    # For the wrong version (the owner signed version 3).
    wrong_version = expected_message("set_policy", kid, 3, p["canonical_policy"], p["expires_at"])
    assert_owner_refused(put_policy(client, kid, loosened, 3, p["expires_at"], eth_sign(OWNER, wrong_version)))
    # For another policy (the owner's signature names a stricter one's hash).
    stricter = propose(client, kid, policy(max_wei=1))
    assert_owner_refused(put_policy(client, kid, loosened, 2, p["expires_at"], eth_sign(OWNER, stricter["message"])))
    # A genuine signature, but the parent claims another expiry.
    later = rfc3339(int(time.time()) + 7200)
    assert_owner_refused(put_policy(client, kid, loosened, 2, later, good))
    # Expired (the enclave's clock judges it).
    past = rfc3339(int(time.time()) - 5)
    expired = propose(client, kid, loosened, expires_at=past)
    assert_owner_refused(put_policy(client, kid, loosened, 2, past, eth_sign(OWNER, expired["message"])))
    # A signature of the wrong length or shape never reaches the enclave.
    r = put_policy(client, kid, loosened, 2, p["expires_at"], "0x1234")
    assert r.status == 400 and r.code == "invalid_owner_signature", r

    assert policy_row(sim, kid) == before, "a refused change altered the stored policy row"

    # The genuine change applies once; replaying it is refused (the version moved on).
    r = put_policy(client, kid, loosened, 2, p["expires_at"], good)
    assert r.status == 200, r
    after = policy_row(sim, kid)
    assert_owner_refused(put_policy(client, kid, loosened, 2, p["expires_at"], good))
    assert policy_row(sim, kid) == after


def test_ed25519_owner_signs_with_pynacl(sim, client):
    owner = SigningKey(b"\x07" * 32)
    owner_pub = str(Pubkey.from_bytes(bytes(owner.verify_key)))
    r = client.request(
        "POST",
        "/v1/keys",
        {"algorithm": "secp256k1", "policy": policy(), "owner": {"type": "ed25519", "public_key": owner_pub}},
    )
    assert r.status == 201, r
    kid = r.json["key_id"]
    assert r.json["owner"] == {"type": "ed25519", "public_key": owner_pub}
    loosened = policy(chain_ids=(1, 137))
    p = propose(client, kid, loosened)
    assert p["message"] == expected_message("set_policy", kid, 2, p["canonical_policy"], p["expires_at"])
    sig = str(Signature.from_bytes(owner.sign(p["message"].encode()).signature))
    impostor = str(Signature.from_bytes(SigningKey(b"\x08" * 32).sign(p["message"].encode()).signature))
    before = policy_row(sim, kid)
    assert_owner_refused(put_policy(client, kid, loosened, 2, p["expires_at"], impostor))
    assert policy_row(sim, kid) == before
    r = put_policy(client, kid, loosened, 2, p["expires_at"], sig)
    assert r.status == 200, r


def test_rejects_malformed_owners(client):
    for owner in (
        {"type": "eip191", "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"},  # bad checksum
        {"type": "eip191", "address": "alice"},
        {"type": "ed25519", "public_key": "not-base58-0OIl"},
        {"type": "rsa", "key": "x"},
    ):
        r = client.request("POST", "/v1/keys", {"algorithm": "ed25519", "owner": owner})
        assert r.status == 400, (owner, r)


def test_key_without_owner_takes_a_policy_write_change(client):
    key = client.create_key("secp256k1", policy())
    r = client.set_policy(key["key_id"], policy(chain_ids=(1, 5)))
    assert r.status == 200, r
    assert client.get_key(key["key_id"]).json["owner"] is None


def enable(client, kid, owner=OWNER, signer=None):
    r = client.request("POST", f"/v1/keys/{kid}/enable/proposal", {})
    assert r.status == 200, r
    p = r.json
    sig = eth_sign(signer or owner, p["message"])
    return client.request(
        "POST",
        f"/v1/keys/{kid}/enable",
        {"version": p["version"], "expires_at": p["expires_at"], "owner_signature": sig},
    ), p


def test_disable_then_enable_only_with_the_owner(sim, client):
    key = owned_key(client)
    kid = key["key_id"]
    signs(client, key)
    r = client.request("POST", f"/v1/keys/{kid}/disable", {})
    assert r.status == 200 and r.json == {"policy_version": 2, "enabled": False}, r
    r = client.sign_evm(kid, evm_eip1559(1, DEST, 1))
    assert r.status == 403 and r.code == "key_disabled", r
    # Re-enable: without the owner, or signed by someone else, refused.
    r = client.request("POST", f"/v1/keys/{kid}/enable", {})
    assert_owner_refused(r)
    r, _ = enable(client, kid, signer=OTHER)
    assert_owner_refused(r)
    # A set_policy authorization cannot be passed off as an enable.
    r = client.request("POST", f"/v1/keys/{kid}/enable/proposal", {})
    p = r.json
    assert p["message"] == expected_message("enable", kid, 3, p["canonical_policy"], p["expires_at"])
    as_set = expected_message("set_policy", kid, 3, p["canonical_policy"], p["expires_at"])
    r = client.request(
        "POST",
        f"/v1/keys/{kid}/enable",
        {"version": 3, "expires_at": p["expires_at"], "owner_signature": eth_sign(OWNER, as_set)},
    )
    assert_owner_refused(r)
    r = client.sign_evm(kid, evm_eip1559(1, DEST, 1))
    assert r.code == "key_disabled", r
    r, _ = enable(client, kid)
    assert r.status == 200 and r.json == {"policy_version": 3, "enabled": True}, r
    signs(client, key)


def wait_for_new_enclave(sim, old_pid, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = sim.pids().get("enclave")
        if pid and pid != old_pid and sim.client.health(timeout=5).status == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"the enclave did not come back\n{sim.log_tail()}")


def restart_enclave(sim):
    pid = sim.pid_of("enclave")
    os.kill(pid, signal.SIGKILL)
    wait_for_new_enclave(sim, pid)


def put_policy_row(sim, row) -> None:
    conn = db_connect(sim.db_path)
    try:
        conn.execute(
            "UPDATE policies SET version = ?, policy_json = ?, mac = ? WHERE key_id = ?",
            (row[1], row[2], row[3], row[0]),
        )
        conn.commit()
    finally:
        conn.close()


def sign_until_settled(client, kid, timeout=30):
    """Signs once the relay has reconnected (503s while it does)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.sign_evm(kid, evm_eip1559(1, DEST, 1))
        if r.status != 503 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_disable_survives_a_restart_and_a_rolled_back_row(fresh_sim):
    sim, client = fresh_sim, fresh_sim.client
    key = owned_key(client)
    kid = key["key_id"]
    enabled_row = policy_row(sim, kid)
    assert client.request("POST", f"/v1/keys/{kid}/disable", {}).status == 200
    restart_enclave(sim)
    r = sign_until_settled(client, kid)
    assert r.status == 403 and r.code == "key_disabled", r
    # The host puts the pre-disable row back (its MAC is valid): the restarted enclave
    # knows version 2 from its checkpoint and refuses version 1 as a rollback.
    put_policy_row(sim, enabled_row)
    r = client.sign_evm(kid, evm_eip1559(1, DEST, 1))
    assert r.status == 500 and r.code == "sealed_state_invalid", r
    assert "signed_transaction" not in r.json


def test_store_wide_stop_holds_across_a_restart(fresh_sim):
    sim, client = fresh_sim, fresh_sim.client
    key = client.create_key("secp256k1", policy())
    signs(client, key)
    r = client.request("POST", "/v1/admin/stop", {})
    assert r.status == 200 and r.json == {"stopped": True}, r
    r = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1))
    assert r.status == 403 and r.code == "store_stopped", r
    restart_enclave(sim)
    r = sign_until_settled(client, key["key_id"])
    assert r.status == 403 and r.code == "store_stopped", r
    r = client.request("POST", "/v1/admin/resume", {})
    assert r.status == 200 and r.json == {"stopped": False}, r
    signs(client, key)


def test_owner_changes_survive_a_restart_and_replay_stays_refused(fresh_sim):
    """The checkpoint carries the floor: after a restart the host can neither put an
    older owner-approved policy back nor replay the old authorization."""
    sim, client = fresh_sim, fresh_sim.client
    key = owned_key(client)
    kid = key["key_id"]
    loose = policy(chain_ids=(1, 8453))
    p = propose(client, kid, loose)
    sig = eth_sign(OWNER, p["message"])
    assert put_policy(client, kid, loose, 2, p["expires_at"], sig).status == 200
    loose_row = policy_row(sim, kid)
    strict = policy()
    q = propose(client, kid, strict)
    assert put_policy(client, kid, strict, 3, q["expires_at"], eth_sign(OWNER, q["message"])).status == 200
    restart_enclave(sim)
    r = sign_until_settled(client, kid)
    assert r.status == 200, r
    put_policy_row(sim, loose_row)
    r = client.sign_evm(kid, evm_eip1559(8453, DEST, 1))
    assert r.status == 500 and r.code == "sealed_state_invalid", r
