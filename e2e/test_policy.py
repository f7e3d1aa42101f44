"""Policies are evaluated by the enclave on the decoded payload: default deny, and each
rule refuses with 403 policy_denied naming the rule, with no signature."""

from __future__ import annotations

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ekms_e2e import (
    MEMO_PROGRAM,
    ONE_ETH,
    ONE_SOL,
    SYSTEM_PROGRAM,
    check_evm_signature,
    check_solana_signature,
    evm_eip1559,
    evm_legacy,
    sol_legacy,
    sol_transfer_ix,
    sol_v0,
)

DEST = "0x000000000000000000000000000000000000dEaD"
OTHER = "0x1111111111111111111111111111111111111111"


#: A fee cap that every default transaction of ekms_e2e passes (30M gas at 1000 gwei).
EVM_FEE_CAP = 30_000_000 * 1_000_000_000_000


def evm_policy(chain_ids=(1,), dests=(DEST,), max_wei=ONE_ETH, max_fee_wei=EVM_FEE_CAP):
    return {
        "enabled": True,
        "evm": {
            "chain_ids": list(chain_ids),
            "allowed_destinations": list(dests),
            "max_value_wei": str(max_wei),
            "max_fee_wei": str(max_fee_wei),
        },
    }


def sol_policy(programs=(SYSTEM_PROGRAM,), max_lamports=ONE_SOL, per_tx=10 * ONE_SOL, max_fee=1_000_000):
    return {
        "enabled": True,
        "solana": {
            "allowed_programs": list(programs),
            "max_lamports_per_transfer": max_lamports,
            "max_lamports_per_transaction": per_tx,
            "max_fee_lamports": max_fee,
        },
    }


def assert_denied(r, rule):
    assert r.status == 403, r
    assert r.code == "policy_denied", r
    assert r.error.get("rule") == rule, r
    assert r.error.get("message"), r
    assert "signature" not in r.json and "signed_transaction" not in r.json


@pytest.fixture(scope="module")
def evm_key(sim):
    return sim.client.create_key("secp256k1", evm_policy())


@pytest.fixture(scope="module")
def sol_key(sim):
    return sim.client.create_key("ed25519", sol_policy())


def test_allows_within_policy(client, evm_key):
    unsigned = evm_eip1559(1, DEST, ONE_ETH)  # exactly the cap
    r = client.sign_evm(evm_key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, evm_key["address"])


@pytest.mark.parametrize("build", [evm_eip1559, evm_legacy], ids=["eip1559", "legacy"])
def test_rejects_wrong_chain_id(client, evm_key, build):
    assert_denied(client.sign_evm(evm_key["key_id"], build(5, DEST, 1)), "evm.chain_ids")


@pytest.mark.parametrize("build", [evm_eip1559, evm_legacy], ids=["eip1559", "legacy"])
def test_rejects_destination_not_allowed(client, evm_key, build):
    assert_denied(client.sign_evm(evm_key["key_id"], build(1, OTHER, 1)), "evm.allowed_destinations")


def test_rejects_contract_creation(client, evm_key):
    r = client.sign_evm(evm_key["key_id"], evm_eip1559(1, None, 0, gas=100_000, data=b"\x60\x00"))
    assert_denied(r, "evm.contract_creation")


@pytest.mark.parametrize("build", [evm_eip1559, evm_legacy], ids=["eip1559", "legacy"])
def test_rejects_value_over_cap(client, evm_key, build):
    assert_denied(client.sign_evm(evm_key["key_id"], build(1, DEST, ONE_ETH + 1)), "evm.max_value_wei")


def test_rejects_by_default_without_policy(client):
    key = client.create_key("secp256k1")
    assert_denied(client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 0)), "evm")
    sk = client.create_key("ed25519")
    payer = Pubkey.from_string(sk["address"])
    unsigned, _ = sol_legacy(payer, [sol_transfer_ix(payer, Keypair().pubkey(), 1)])
    assert_denied(client.sign_solana(sk["key_id"], unsigned), "solana")


def test_rejects_disabled_key(client):
    policy = evm_policy()
    policy["enabled"] = False
    key = client.create_key("secp256k1", policy)
    r = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 0))
    # A policy with `enabled: false` is a disabled key (issue 7): 403 key_disabled.
    assert r.status == 403 and r.code == "key_disabled", r
    assert "signature" not in r.json and "signed_transaction" not in r.json


def test_allows_solana_within_policy(client, sol_key):
    payer = Pubkey.from_string(sol_key["address"])
    unsigned, message = sol_v0(payer, [sol_transfer_ix(payer, Keypair().pubkey(), ONE_SOL)])
    r = client.sign_solana(sol_key["key_id"], unsigned)
    assert r.status == 200, r
    check_solana_signature(r.json, message, sol_key["address"])


@pytest.mark.parametrize("build", [sol_legacy, sol_v0], ids=["legacy", "v0"])
def test_rejects_program_not_allowed(client, sol_key, build):
    payer = Pubkey.from_string(sol_key["address"])
    memo = Instruction(Pubkey.from_string(MEMO_PROGRAM), b"hello", [AccountMeta(payer, True, False)])
    unsigned, _ = build(payer, [sol_transfer_ix(payer, Keypair().pubkey(), 1), memo])
    assert_denied(client.sign_solana(sol_key["key_id"], unsigned), "solana.allowed_programs")


@pytest.mark.parametrize("build", [sol_legacy, sol_v0], ids=["legacy", "v0"])
def test_rejects_lamports_over_cap(client, sol_key, build):
    payer = Pubkey.from_string(sol_key["address"])
    unsigned, _ = build(payer, [sol_transfer_ix(payer, Keypair().pubkey(), ONE_SOL + 1)])
    assert_denied(client.sign_solana(sol_key["key_id"], unsigned), "solana.max_lamports_per_transfer")


def test_rejects_split_transfer_over_cap_per_instruction(client, sol_key):
    """Two transfers each under the cap pass; one of them over the cap does not."""
    payer = Pubkey.from_string(sol_key["address"])
    to = Keypair().pubkey()
    ok, message = sol_legacy(payer, [sol_transfer_ix(payer, to, ONE_SOL), sol_transfer_ix(payer, to, ONE_SOL)])
    r = client.sign_solana(sol_key["key_id"], ok)
    assert r.status == 200, r
    check_solana_signature(r.json, message, sol_key["address"])
    bad, _ = sol_legacy(payer, [sol_transfer_ix(payer, to, 1), sol_transfer_ix(payer, to, ONE_SOL + 1)])
    assert_denied(client.sign_solana(sol_key["key_id"], bad), "solana.max_lamports_per_transfer")


def test_policy_update_through_enclave(client):
    key = client.create_key("secp256k1", evm_policy())
    kid = key["key_id"]
    assert_denied(client.sign_evm(kid, evm_eip1559(10, DEST, 1)), "evm.chain_ids")
    r = client.set_policy(kid, evm_policy(chain_ids=(1, 10)))
    assert r.status == 200, r
    assert r.json["policy_version"] > key["policy_version"], (r, key)
    assert client.get_key(kid).json["policy_version"] == r.json["policy_version"]
    unsigned = evm_eip1559(10, DEST, 1)
    s = client.sign_evm(kid, unsigned)
    assert s.status == 200, s
    check_evm_signature(s.json, unsigned, key["address"])
    # Tightening works too: value cap 0.
    assert client.set_policy(kid, evm_policy(chain_ids=(1, 10), max_wei=0)).status == 200
    assert_denied(client.sign_evm(kid, evm_eip1559(10, DEST, 1)), "evm.max_value_wei")


def test_rejects_invalid_policy(client):
    r = client.request("POST", "/v1/keys", {"algorithm": "secp256k1", "policy": {"enabled": True, "evm": {"chain_ids": [0]}}})
    assert r.status == 400 and r.code == "invalid_policy", r
    r = client.request("POST", "/v1/keys", {"algorithm": "secp256k1", "policy": {"enabled": True, "bogus": 1}})
    assert r.status == 400 and r.code == "invalid_policy", r
    key = client.create_key("secp256k1", evm_policy())
    r = client.set_policy(key["key_id"], {"enabled": True, "evm": {"allowed_destinations": ["0x12"]}})
    assert r.status == 400 and r.code == "invalid_policy", r
    assert client.get_key(key["key_id"]).json["policy_version"] == key["policy_version"]


def test_fee_cap_refuses_fee_over_cap_and_signs_under(client):
    """max_fee_wei caps gas_limit × maxFeePerGas (EIP-1559) or × gasPrice (legacy), even
    when value is 0: a parent cannot drain the key's account through the fee."""
    gas, max_fee = 21_000, 30_000_000_000
    cap = gas * max_fee
    policy = evm_policy(max_wei=0)
    policy["evm"]["max_fee_wei"] = str(cap)
    key = client.create_key("secp256k1", policy)
    kid = key["key_id"]

    at_cap = evm_eip1559(1, DEST, 0, gas=gas, max_fee=max_fee)
    r = client.sign_evm(kid, at_cap)
    assert r.status == 200, r
    check_evm_signature(r.json, at_cap, key["address"])
    under = evm_legacy(1, DEST, 0, gas=gas, gas_price=max_fee - 1)
    r = client.sign_evm(kid, under)
    assert r.status == 200, r
    check_evm_signature(r.json, under, key["address"])

    # A small priority fee does not hide the maxFeePerGas that bounds what is paid.
    assert_denied(
        client.sign_evm(kid, evm_eip1559(1, DEST, 0, gas=gas, max_fee=max_fee + 1, max_priority_fee=0)),
        "evm.max_fee_wei",
    )
    assert_denied(client.sign_evm(kid, evm_eip1559(1, DEST, 0, gas=gas + 1, max_fee=max_fee)), "evm.max_fee_wei")
    assert_denied(client.sign_evm(kid, evm_legacy(1, DEST, 0, gas=gas, gas_price=max_fee + 1)), "evm.max_fee_wei")
    # The product of the largest fields does not wrap into a small fee.
    assert_denied(client.sign_evm(kid, evm_eip1559(1, DEST, 0, gas=2**64 - 1, max_fee=2**128 - 1)), "evm.max_fee_wei")


# ------------------------------------------------------------ required fee caps


def test_rejects_new_evm_policy_without_max_fee_wei(client):
    """A new or changed policy with an `evm` section must state max_fee_wei: an absent
    cap would let a compromised parent drain the account through the fee."""
    no_cap = evm_policy()
    del no_cap["evm"]["max_fee_wei"]
    r = client.request("POST", "/v1/keys", {"algorithm": "secp256k1", "policy": no_cap})
    assert r.status == 400 and r.code == "invalid_policy", r
    assert "evm.max_fee_wei" in r.error["message"], r
    key = client.create_key("secp256k1", evm_policy())
    r = client.set_policy(key["key_id"], no_cap)
    assert r.status == 400 and r.code == "invalid_policy", r
    assert client.get_key(key["key_id"]).json["policy_version"] == key["policy_version"]


@pytest.mark.parametrize("missing", ["max_fee_lamports", "max_lamports_per_transaction"])
def test_rejects_new_solana_policy_without_its_caps(client, missing):
    no_cap = sol_policy()
    del no_cap["solana"][missing]
    r = client.request("POST", "/v1/keys", {"algorithm": "ed25519", "policy": no_cap})
    assert r.status == 400 and r.code == "invalid_policy", r
    assert f"solana.{missing}" in r.error["message"], r
    key = client.create_key("ed25519", sol_policy())
    r = client.set_policy(key["key_id"], no_cap)
    assert r.status == 400 and r.code == "invalid_policy", r


def test_key_with_fee_caps_is_marked_set(client, evm_key, sol_key):
    for key in (evm_key, sol_key):
        assert client.get_key(key["key_id"]).json["fee_cap"] == "set"
    # A policy without a section for the key's chain caps nothing and is not marked.
    assert "fee_cap" not in client.get_key(client.create_key("secp256k1")["key_id"]).json


def test_rejects_evm_fee_drain_at_30m_gas_times_1m_gwei(client, evm_key):
    """The attack run's EVM drain: 30M gas × 10⁶ gwei, value 0."""
    r = client.sign_evm(evm_key["key_id"], evm_eip1559(1, DEST, 0, gas=30_000_000, max_fee=10**15))
    assert_denied(r, "evm.max_fee_wei")


# ------------------------------------------- EVM: what is signed, run on py-evm


def test_evm_signed_transactions_pay_at_most_the_caps_on_py_evm(client):
    """The transactions the policy allows, executed on py-evm (eth-tester's backend):
    the key's balance drops by the value plus the fee actually paid, and that fee is at
    most gas_limit × maxFeePerGas (or × gasPrice), which max_fee_wei bounds."""
    from eth_tester import EthereumTester, PyEVMBackend

    tester = EthereumTester(PyEVMBackend())
    chain_id = tester.backend.chain.chain_id
    gas, max_fee = 21_000, 30_000_000_000
    cap = gas * max_fee
    key = client.create_key("secp256k1", evm_policy(chain_ids=(chain_id,), max_wei=ONE_ETH, max_fee_wei=cap))
    address = key["address"]
    tester.send_transaction(
        {"from": tester.get_accounts()[0], "to": address, "value": 10 * ONE_ETH, "gas": 21_000, "gas_price": 10**9}
    )
    for nonce, unsigned in enumerate(
        [
            evm_eip1559(chain_id, DEST, ONE_ETH, nonce=0, gas=gas, max_fee=max_fee),
            evm_legacy(chain_id, DEST, ONE_ETH // 2, nonce=1, gas=gas, gas_price=max_fee),
        ]
    ):
        r = client.sign_evm(key["key_id"], unsigned)
        assert r.status == 200, r
        check_evm_signature(r.json, unsigned, address)
        before, dest_before = tester.get_balance(address), tester.get_balance(DEST)
        tx_hash = tester.send_raw_transaction(r.json["signed_transaction"])
        receipt = tester.get_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, receipt
        moved = tester.get_balance(DEST) - dest_before
        fee = before - tester.get_balance(address) - moved
        assert moved == (ONE_ETH if nonce == 0 else ONE_ETH // 2) <= ONE_ETH
        assert fee == receipt["gas_used"] * receipt["effective_gas_price"], receipt
        assert 0 < fee <= cap
    # Over the cap: refused, so nothing can be executed.
    assert_denied(
        client.sign_evm(key["key_id"], evm_eip1559(chain_id, DEST, 0, nonce=2, gas=gas, max_fee=max_fee + 1)),
        "evm.max_fee_wei",
    )
