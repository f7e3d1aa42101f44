"""Attacks on the rolling limits of issue 8 (wt-attack8).

"The same transaction signed twice counts once" is keyed on the SHA-256 of the payload
bytes only, not on the payload kind. EVM transaction bytes are also a valid
`evm_message` (any bytes): an application signs the transaction's bytes first as an
EIP-191 message (charged one signature of `rate_limit`, nothing else), then as an
`evm_transaction`, which is then taken for a repeat and charged nothing — the native
value window (and the rate limit) never see it."""

from __future__ import annotations

from ekms_e2e import check_evm_signature, evm_eip1559

from test_policy_v2 import DEST, assert_refused, sign, v2


def test_a_transaction_first_signed_as_a_message_still_counts_against_the_window(client):
    policy = v2(
        ["evm_transaction", "evm_message"],
        max_value_wei="1",
        max_value_wei_per_window={"max": "2", "window_secs": 3600},
    )
    policy["rate_limit"] = {"max_signatures": 100, "window_secs": 3600}
    key = client.create_key("secp256k1", policy)
    signed = 0
    for nonce in range(5):
        tx = evm_eip1559(1, DEST, 1, nonce=nonce)
        as_message = sign(client, key["key_id"], "evm_message", "0x" + tx.hex())
        assert as_message.status == 200, as_message
        r = client.sign_evm(key["key_id"], tx)
        if r.status == 200:
            check_evm_signature(r.json, tx, key["address"])
            signed += 1
        else:
            assert_refused(r, "evm.max_value_wei_per_window")
    # The window holds 2 wei: 2 transactions of 1 wei, never 5.
    assert signed == 2, f"{signed} transactions of 1 wei signed against a 2 wei window"
