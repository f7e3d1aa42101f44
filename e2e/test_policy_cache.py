"""Issue 10: the parent serves key rows from an in-memory cache on the sign path. A
policy written through the API must be the one the next signature uses (never a cached
older one), also after the enclave restarts (it loses its version floor and its cache
of parsed policies), and a row changed in the database by another connection must not
be served from the cache."""

from __future__ import annotations

import os
import signal
import time

from ekms_e2e import ONE_ETH, check_evm_signature, db_connect, evm_eip1559

DEST = "0x000000000000000000000000000000000000dEaD"


def policy(max_value_wei: int) -> dict:
    return {
        "enabled": True,
        "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_value_wei": str(max_value_wei), "max_fee_wei": str(10**16)},
    }


def assert_signs(client, key, value) -> None:
    unsigned = evm_eip1559(1, DEST, value)
    r = client.sign_evm(key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, key["address"])


def assert_over_cap(client, key, value) -> None:
    r = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, value))
    assert r.status == 403 and r.error.get("rule") == "evm.max_value_wei", r


def wait_signing(client, key, timeout=60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1, nonce=7))
        if last.status == 200:
            return
        assert last.status == 503 and last.code == "enclave_unavailable", last
        time.sleep(0.3)
    raise AssertionError(f"signing did not recover: {last}")


def test_policy_written_is_the_one_the_next_signature_uses(fresh_sim):
    sim = fresh_sim
    client = sim.client
    key = client.create_key("secp256k1", policy(ONE_ETH))
    # Signed twice: the second comes from the parent's cache (and the enclave's).
    assert_signs(client, key, ONE_ETH)
    assert_signs(client, key, ONE_ETH)
    # Tighten, loosen, tighten: each time the very next signature follows.
    for cap in (ONE_ETH // 2, 3 * ONE_ETH, ONE_ETH // 4):
        assert client.set_policy(key["key_id"], policy(cap)).status == 200
        assert_over_cap(client, key, cap + 1)
        assert_signs(client, key, cap)
    # Disable / enable through the checkpointed path (no owner: enable is allowed).
    r = client.request("POST", f"/v1/keys/{key['key_id']}/disable", {})
    assert r.status == 200, r
    r = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1))
    assert r.status == 403 and r.code == "key_disabled", r
    r = client.request("POST", f"/v1/keys/{key['key_id']}/enable", {})
    assert r.status == 200, r
    assert_signs(client, key, 1)

    # The enclave restarts: the newest policy is still the one used.
    enclave_pid = sim.pid_of("enclave")
    os.kill(enclave_pid, signal.SIGKILL)
    wait_signing(client, key)
    assert_over_cap(client, key, ONE_ETH // 4 + 1)
    assert client.set_policy(key["key_id"], policy(2 * ONE_ETH)).status == 200
    assert_signs(client, key, 2 * ONE_ETH)
    assert_over_cap(client, key, 2 * ONE_ETH + 1)
    sim.remember_pids()
    assert sim.pid_of("enclave") != enclave_pid


def test_row_changed_by_another_connection_is_not_served_from_cache(sim, client):
    key = client.create_key("secp256k1", policy(ONE_ETH))
    assert_signs(client, key, 1)
    assert_signs(client, key, 1)  # cached now
    conn = db_connect(sim.db_path)
    try:
        conn.execute("UPDATE policies SET mac = zeroblob(32) WHERE key_id = ?", (key["key_id"],))
    finally:
        conn.close()
    r = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1))
    assert r.status == 500 and r.code == "sealed_state_invalid", r
