"""Issue 11 item 1: the Ethereum remote-signer JSON-RPC endpoint, `POST /v1/rpc/evm`, on
a real simulation. Signatures are checked with eth-account (an independent
implementation); a transaction signed through the endpoint is executed on eth-tester's
py-evm chain and its effect on balances compared; refusals, unknown accounts and refused
tokens are JSON-RPC error objects (-32003 with the rule, -32602, 4100); hostile bodies
get an error object or the HTTP layer's 4xx, never a signature."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak, to_checksum_address

DEST = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
OTHER = "0x000000000000000000000000000000000000dEaD"
MAIL = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
#: eth-tester's chain id.
TESTER_CHAIN = 131277322940537


def policy(**evm) -> dict:
    return {
        "version": 2,
        "enabled": True,
        "allowed_kinds": ["evm_transaction", "evm_message", "evm_typed_data"],
        "evm": {
            "chain_ids": [1, TESTER_CHAIN],
            "allowed_destinations": [DEST],
            "max_value_wei": str(10**18),
            "max_fee_wei": str(10**17),
            "typed_data": {
                "domains": [{"name": "Ether Mail", "version": "1", "chain_id": 1, "verifying_contract": MAIL}],
                "primary_types": ["Mail"],
            },
            **evm,
        },
    }


def rpc(client, method, params=None, *, id=1):
    r = client.request("POST", "/v1/rpc/evm", {"jsonrpc": "2.0", "id": id, "method": method, "params": params or []})
    return r


def result(client, method, params=None):
    r = rpc(client, method, params)
    assert r.status == 200, r
    assert r.json["jsonrpc"] == "2.0" and r.json["id"] == 1, r.json
    assert "error" not in r.json, r.json
    return r.json["result"]


def error(client, method, params=None, status=200):
    r = rpc(client, method, params)
    assert r.status == status, r
    assert "result" not in r.json, r.json
    return r.json["error"]


def tx(address, **fields):
    base = {"from": address, "chainId": hex(1), "nonce": "0x0", "to": DEST, "value": hex(1000),
            "gas": hex(21000), "maxFeePerGas": hex(20 * 10**9), "maxPriorityFeePerGas": hex(10**9)}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture(scope="module")
def keys(sim):
    c = sim.client
    a = c.create_key("secp256k1", policy=policy(), label="rpc-a")
    b = c.create_key("secp256k1", policy=policy(), label="rpc-b")
    sol = c.create_key("ed25519", label="rpc-sol")
    r = c.create_token("rpc-bot", ["sign"], key_ids=[a["key_id"]])
    assert r.status == 201, r
    bot = c.with_token(r.json["token"])
    r = c.create_token("reader", ["keys:read"])
    reader = c.with_token(r.json["token"])
    return {"a": a, "b": b, "sol": sol, "bot": bot, "reader": reader}


def test_eth_accounts_lists_the_tokens_secp256k1_keys(client, keys):
    admin = result(client, "eth_accounts")
    assert keys["a"]["address"] in admin and keys["b"]["address"] in admin
    assert keys["sol"]["address"] not in admin
    assert all(a == to_checksum_address(a) for a in admin)
    assert result(keys["bot"], "eth_accounts") == [keys["a"]["address"]]


def test_sign_transaction_of_each_type_recovers_with_eth_account(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    for t in (
        tx(addr),
        tx(addr, type="0x2", input="0x", accessList=[]),
        tx(addr, type="0x1", maxFeePerGas=None, maxPriorityFeePerGas=None, gasPrice=hex(10**9), accessList=[]),
        tx(addr, maxFeePerGas=None, maxPriorityFeePerGas=None, gasPrice=hex(10**9)),
    ):
        raw = result(bot, "eth_signTransaction", [t])
        assert Account.recover_transaction(raw) == addr, t
        signed = bytes.fromhex(raw[2:])
        if "type" in t and t["type"] == "0x1":
            assert signed[0] == 1
        elif "gasPrice" in t:
            assert signed[0] >= 0xc0, "legacy: an RLP list"
        else:
            assert signed[0] == 2


def test_a_transaction_signed_over_json_rpc_moves_what_it_says_on_py_evm(keys):
    from web3 import EthereumTesterProvider, Web3

    w3 = Web3(EthereumTesterProvider())
    bot, addr = keys["bot"], keys["a"]["address"]
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": addr, "value": 10**18})
    before_dest, before_sender = w3.eth.get_balance(DEST), w3.eth.get_balance(addr)
    block = w3.eth.get_block("latest")
    max_fee = 2 * block["baseFeePerGas"] + 10**9
    raw = result(bot, "eth_signTransaction", [tx(
        addr, chainId=hex(TESTER_CHAIN), nonce=hex(w3.eth.get_transaction_count(addr)),
        value=hex(12345), maxFeePerGas=hex(max_fee), maxPriorityFeePerGas=hex(10**9))])
    tx_hash = w3.eth.send_raw_transaction(raw)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    assert bytes(tx_hash) == keccak(bytes.fromhex(raw[2:]))
    assert w3.eth.get_balance(DEST) == before_dest + 12345
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(addr) == before_sender - 12345 - fee


def test_personal_sign_and_eth_sign_are_eip191(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    data = b"gm from a keeper"
    sig = result(bot, "personal_sign", ["0x" + data.hex(), addr])
    assert Account.recover_message(encode_defunct(primitive=data), signature=sig) == addr
    sig2 = result(bot, "eth_sign", [addr.lower(), "0x" + data.hex()])
    assert sig2 == sig, "RFC 6979: the same message, the same signature"
    assert int(sig[-2:], 16) in (27, 28)


def mail_typed(contents: str = "Hello, Bob!") -> dict:
    """The EIP-712 example of the EIP itself ("Ether Mail"), as eth_signTypedData_v4
    takes it, with `contents` in its message."""
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"},
                     {"name": "contents", "type": "string"}],
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": MAIL},
        "message": {"from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
                    "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
                    "contents": contents},
    }


def test_sign_typed_data_v4_is_eip712(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    typed = mail_typed()
    for form in (typed, json.dumps(typed)):
        sig = result(bot, "eth_signTypedData_v4", [addr, form])
        assert Account.recover_message(encode_typed_data(full_message=typed), signature=sig) == addr


def test_a_policy_refusal_is_transaction_rejected_with_the_rule(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    e = error(bot, "eth_signTransaction", [tx(addr, to=OTHER)])
    assert e["code"] == -32003, e
    assert e["data"]["rule"] == "evm.allowed_destinations", e
    assert "evm.allowed_destinations" in e["message"], e
    e = error(bot, "eth_signTransaction", [tx(addr, value=hex(2 * 10**18))])
    assert (e["code"], e["data"]["rule"]) == (-32003, "evm.max_value_wei"), e
    e = error(bot, "eth_signTransaction", [tx(addr, chainId="0x5")])
    assert (e["code"], e["data"]["rule"]) == (-32003, "evm.chain_ids"), e


def test_a_disabled_key_is_refused_over_json_rpc_too(client, keys):
    k = client.create_key("secp256k1", policy=policy(), label="rpc-disabled")
    assert result(client, "eth_sign", [k["address"], "0x01"])
    r = client.request("POST", f"/v1/keys/{k['key_id']}/disable", {})
    assert r.status == 200, r
    e = error(client, "eth_sign", [k["address"], "0x01"])
    assert e["code"] == -32003 and e["data"]["rule"] == "key_disabled", e


def test_accounts_the_token_may_not_use_are_unknown(keys):
    bot = keys["bot"]
    for address in (keys["b"]["address"], OTHER):
        e = error(bot, "personal_sign", ["0x01", address])
        assert e["code"] == -32602 and "unknown account" in e["message"], e
    e = error(bot, "eth_signTransaction", [tx(keys["b"]["address"])])
    assert e["code"] == -32602, e


def test_refused_tokens_are_4100(client, keys):
    for c in (client.with_token(None), client.with_token("ekms_" + "A" * 43)):
        r = rpc(c, "eth_accounts")
        assert r.status == 401, r
        assert r.json["error"]["code"] == 4100, r.json
        assert r.json["jsonrpc"] == "2.0" and r.json["id"] is None
    # A valid token without the sign scope: a method-level refusal.
    e = error(keys["reader"], "eth_accounts")
    assert e["code"] == 4100, e
    e = error(keys["reader"], "personal_sign", ["0x01", keys["a"]["address"]])
    assert e["code"] == 4100, e


def test_hostile_bodies_get_errors_never_signatures(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    r = bot.request("POST", "/v1/rpc/evm", raw=b"{not json")
    assert r.json["error"]["code"] == -32700, r
    r = bot.request("POST", "/v1/rpc/evm", [{"jsonrpc": "2.0", "id": i, "method": "eth_accounts"} for i in range(33)])
    assert r.json["error"]["code"] == -32600, r
    r = bot.request("POST", "/v1/rpc/evm", raw=b"[" * 10000 + b"]" * 10000)
    assert r.status in (200, 400, 413), r
    assert "result" not in r.body.decode(errors="replace")
    r = bot.request("POST", "/v1/rpc/evm", raw=b"x" * (2 * 1024 * 1024))
    assert r.status == 413, r
    for bad in (
        tx(addr, chainId=None),                      # no default chain
        tx(addr, value="1000"),                      # a decimal quantity
        tx(addr, type="0x0"),                        # type contradicts the fee fields
        {**tx(addr), "To": OTHER},                   # a misspelt field
        tx(addr, data="0x01", input="0x02"),         # two inputs
        tx(addr, **{"from": None}),                  # no signer
    ):
        e = error(bot, "eth_signTransaction", [bad])
        assert e["code"] == -32602, (bad, e)
    e = error(bot, "eth_sendTransaction", [tx(addr)])
    assert e["code"] == -32601, e


def test_a_batch_is_answered_in_order(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    r = bot.request("POST", "/v1/rpc/evm", [
        {"jsonrpc": "2.0", "id": "x", "method": "eth_accounts"},
        {"jsonrpc": "2.0", "id": 2, "method": "personal_sign", "params": ["0x01", OTHER]},
        {"jsonrpc": "2.0", "id": 3, "method": "personal_sign", "params": ["0x01", addr]},
    ])
    assert r.status == 200, r
    a, b, c = r.json
    assert (a["id"], a["result"]) == ("x", [addr])
    assert (b["id"], b["error"]["code"]) == (2, -32602)
    assert c["id"] == 3
    assert Account.recover_message(encode_defunct(primitive=b"\x01"), signature=c["result"]) == addr
