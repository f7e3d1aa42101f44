"""Availability attack on the rolling limits (issue 8, wt-attack8): every checkpoint
carries the whole limits snapshot — every window with a bucket still in its window, of
every key — and a checkpoint travels in one frame (256 KiB). A window of one bucket
costs ~184 bytes of CBOR, so some 1,400 windows (700 keys with a rate limit and one
value window that each signed once in the last day; or 100 windows of 64 buckets:
50 keys signing every ~20 minutes) make every checkpoint too large, and with it every
change that must be checkpointed: an owner's emergency `disable` of a key, a policy
change, a store-wide stop. An application that may create keys (or the host) does it
on purpose; a wallet back end of a few thousand active keys does it by accident."""

from __future__ import annotations

import concurrent.futures

from ekms_e2e import evm_eip1559

from test_policy_v2 import DEST, v2

KEYS = 1600


def test_many_active_windows_do_not_block_the_emergency_stop(fresh_sim):
    client = fresh_sim.client
    policy = v2(["evm_transaction"], max_value_wei="1")
    policy["rate_limit"] = {"max_signatures": 10, "window_secs": 86400}

    def one(_):
        key = client.create_key("secp256k1", policy)
        r = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1))
        assert r.status == 200, r
        return key["key_id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(one, range(KEYS)))
    r = client.request("POST", f"/v1/keys/{keys[0]}/disable", {})
    assert r.status == 200, r
    r = client.sign_evm(keys[0], evm_eip1559(1, DEST, 1, nonce=1))
    assert r.status == 403 and r.code == "key_disabled", r
