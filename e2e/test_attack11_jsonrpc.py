"""Attacks on the issue 11 surfaces (POST /v1/rpc/evm, the metrics listener, the open
OpenAPI route) on a real simulation, as an app with a limited token, a malformed-request
sender and a host that edits the key store. Each test states the attack; every one must
end in an error object (or a signature by the right key that the policy allows), never
in a signature the token, the policy or the caller's description does not allow."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from ekms_e2e import db_connect
from test_jsonrpc import DEST, OTHER, policy, rpc, tx


def result(client, method, params=None):
    r = rpc(client, method, params)
    assert r.status == 200, r
    assert "error" not in r.json, r.json
    return r.json["result"]


def error(client, method, params=None):
    r = rpc(client, method, params)
    assert r.status == 200, r
    assert "result" not in r.json, r.json
    return r.json["error"]


def raw_rpc(client, text: str):
    return client.request("POST", "/v1/rpc/evm", raw=text.encode())


@pytest.fixture(scope="module")
def keys(sim):
    c = sim.client
    a = c.create_key("secp256k1", policy=policy(), label="atk-a")
    b = c.create_key("secp256k1", policy=policy(), label="atk-b")
    r = c.create_token("atk-bot", ["sign"], key_ids=[a["key_id"]])
    assert r.status == 201, r
    return {"a": a, "b": b, "bot": c.with_token(r.json["token"])}


def allowed_signatures(client, key_id: str) -> int:
    n, after = 0, 0
    while True:
        r = client.request("GET", f"/v1/audit?after={after}&limit=1000")
        assert r.status == 200, r
        rows = r.json["records"]
        if not rows:
            return n
        for row in rows:
            rec = json.loads(row["record"])
            n += rec["key_id"] == key_id and rec["action"] == "sign" and rec["decision"] == "allowed"
        after = rows[-1]["seq"]


def test_rejects_a_repeated_to_or_from_in_the_body(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    t = json.dumps(tx(addr))[:-1]
    for extra in (f', "to": "{OTHER}"', f', "from": "{keys["b"]["address"]}"', ', "value": "0xde0b6b3a7640000"'):
        body = '{"jsonrpc": "2.0", "id": 1, "method": "eth_signTransaction", "params": [' + t + extra + "}]}"
        r = raw_rpc(bot, body)
        assert r.status == 200, r
        assert r.json["error"]["code"] == -32600 and "repeats the key" in r.json["error"]["message"], r.json


def test_rejects_loose_addresses_and_dropped_blob_fields_in_a_transaction(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    bad_checksum = DEST[:-1] + (DEST[-1].swapcase() if DEST[-1].isalpha() else "A")
    assert bad_checksum != DEST and bad_checksum.lower() == DEST.lower()
    for t in (
        tx(addr, to=bad_checksum),
        tx(addr, to=DEST[2:]),
        tx(addr, to="0X" + DEST[2:]),
        tx(addr, maxFeePerBlobGas="0x1"),
        tx(addr, sidecar={}),
    ):
        e = error(bot, "eth_signTransaction", [t])
        assert e["code"] == -32602, (t, e)


def test_rejects_another_keys_signature_and_answers_alike_for_foreign_and_missing_keys(keys):
    bot = keys["bot"]
    foreign = error(bot, "eth_sign", [keys["b"]["address"], "0x01"])
    missing = error(bot, "eth_sign", [OTHER, "0x01"])
    assert foreign["code"] == missing["code"] == -32602
    assert foreign["message"].replace(keys["b"]["address"], "X") == missing["message"].replace(OTHER, "X")
    assert foreign.keys() == missing.keys()
    # The lower-case or upper-case spelling of another key's address is not a way in.
    for spelling in (keys["b"]["address"].lower(), "0x" + keys["b"]["address"][2:].upper()):
        assert error(bot, "personal_sign", ["0x01", spelling])["code"] == -32602
    # In a batch, next to an allowed request, still refused.
    r = bot.request("POST", "/v1/rpc/evm", [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_sign", "params": [keys["a"]["address"], "0x01"]},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_sign", "params": [keys["b"]["address"], "0x01"]},
    ])
    assert "result" in r.json[0] and r.json[1]["error"]["code"] == -32602, r.json


def test_a_32_byte_personal_sign_is_eip191_not_a_raw_digest(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    digest = bytes(range(32))
    sig = result(bot, "personal_sign", ["0x" + digest.hex(), addr])
    assert Account.recover_message(encode_defunct(primitive=digest), signature=sig) == addr
    assert Account._recover_hash(digest, signature=bytes.fromhex(sig[2:])) != addr


def test_rejects_typed_data_numbers_json_cannot_carry_exactly(keys):
    # 2^64 + 1 as a JSON number becomes a float in the parent's JSON value: it must be
    # refused, not signed as 2^64.
    bot, addr = keys["bot"], keys["a"]["address"]
    body = (
        '{"jsonrpc": "2.0", "id": 1, "method": "eth_signTypedData_v4", "params": ["' + addr + '", '
        '{"types": {"EIP712Domain": [{"name": "name", "type": "string"}], '
        '"Mail": [{"name": "amount", "type": "uint256"}]}, "primaryType": "Mail", '
        '"domain": {"name": "Ether Mail"}, "message": {"amount": 18446744073709551617}}]}'
    )
    r = raw_rpc(bot, body)
    assert r.status == 200 and "error" in r.json, r.json


def test_every_json_rpc_signature_has_an_audit_record(client, keys):
    bot, a = keys["bot"], keys["a"]
    before = allowed_signatures(client, a["key_id"])
    result(bot, "eth_sign", [a["address"], "0x02"])
    result(bot, "eth_signTransaction", [tx(a["address"], nonce="0x9")])
    r = bot.request("POST", "/v1/rpc/evm", [
        {"jsonrpc": "2.0", "id": i, "method": "personal_sign", "params": [f"0x{256 + i:04x}", a["address"]]}
        for i in range(5)
    ])
    assert all("result" in x for x in r.json), r.json
    assert allowed_signatures(client, a["key_id"]) == before + 7


def test_a_revoked_token_signs_nothing(client, keys):
    a = keys["a"]
    r = client.create_token("atk-short", ["sign"], key_ids=[a["key_id"]])
    assert r.status == 201, r
    short = client.with_token(r.json["token"])
    assert result(short, "eth_sign", [a["address"], "0x03"])
    assert client.revoke_token(r.json["token_id"]).status in (200, 204)
    r = rpc(short, "eth_sign", [a["address"], "0x03"])
    assert r.status == 401 and r.json["error"]["code"] == 4100, r


def test_the_app_socket_serves_no_metrics(client):
    for path in ("/metrics", "/v1/metrics", "/v1/rpc/evm/../../metrics"):
        r = client.request("GET", path)
        assert r.status == 404, (path, r)
        assert b"# EOF" not in r.body and b"ekms_http_requests" not in r.body, r
    # The open route is the static document: no token needed, nothing of the store in it.
    r = client.with_token(None).request("GET", "/v1/openapi.json")
    assert r.status == 200 and r.headers["content-type"] == "application/json", r
    keys = client.list_keys().json["keys"]
    assert keys and not any(k["key_id"].encode() in r.body or k["address"].encode() in r.body for k in keys)


def _set_address(sim, key_id: str, address: str) -> None:
    conn = db_connect(sim.db_path)
    try:
        conn.execute("UPDATE keys SET address = ? WHERE key_id = ?", (address, key_id))
    finally:
        conn.close()


def test_rejects_an_address_column_rewritten_to_select_another_key(sim, client, keys):
    """Host attack (runs last: it edits the store, then puts it back): key B (newer, so
    listed first) gets A's address in its row, in another case, and then A gets B's.
    Signing as A must never return B's signature; the token limited to A still signs
    with A."""
    a, b, bot = keys["a"], keys["b"], keys["bot"]
    try:
        for b_address in (a["address"], a["address"].lower()):
            _set_address(sim, b["key_id"], b_address)
            r = rpc(client, "personal_sign", ["0x04", a["address"]])
            if "result" in r.json:
                got = Account.recover_message(encode_defunct(primitive=b"\x04"), signature=r.json["result"])
                assert got == a["address"], "B's signature for A's address"
            # The token limited to A skips B's row and signs with A.
            sig = result(bot, "personal_sign", ["0x04", a["address"]])
            assert Account.recover_message(encode_defunct(primitive=b"\x04"), signature=sig) == a["address"]
            # eth_accounts never reports the rewritten column as a usable account of B.
            r = rpc(client, "eth_accounts")
            if "result" in r.json:
                assert r.json["result"].count(a["address"]) <= 1, r.json
        _set_address(sim, a["key_id"], b["address"])
        _set_address(sim, b["key_id"], a["address"])
        for addr, other in ((a["address"], b["address"]), (b["address"], a["address"])):
            r = rpc(client, "eth_sign", [addr, "0x05"])
            if "result" in r.json:
                got = Account.recover_message(encode_defunct(primitive=b"\x05"), signature=r.json["result"])
                assert got == addr and got != other
    finally:
        _set_address(sim, a["key_id"], a["address"])
        _set_address(sim, b["key_id"], b["address"])
    assert result(client, "eth_sign", [b["address"], "0x06"])


def test_rejects_typed_data_text_that_repeats_a_key(keys):
    """The object form with a repeated key is refused by the parent's JSON reading; the
    text form (and REST's evm_typed_data) reaches the enclave, whose typed-data decoder
    kept the last value: `"contents": "Hi", "contents": "Transfer all"` was signed."""
    bot, addr = keys["bot"], keys["a"]["address"]
    from test_jsonrpc import mail_typed

    typed = mail_typed("Hi")
    text = json.dumps(typed)
    assert result(bot, "eth_signTypedData_v4", [addr, text])
    repeated = text.replace('"contents": "Hi"', '"contents": "Hi", "contents": "Transfer all"')
    assert repeated != text
    e = error(bot, "eth_signTypedData_v4", [addr, repeated])
    assert e["code"] in (-32602, -32003), e
    r = raw_rpc(bot, '{"jsonrpc": "2.0", "id": 1, "method": "eth_signTypedData_v4", "params": ["'
                + addr + '", ' + repeated + "]}")
    assert r.json["error"]["code"] == -32600, r.json
    r = bot.sign(keys["a"]["key_id"], "evm_typed_data", repeated)
    assert r.status != 200, r
    # REST's object form: the parent read the payload last-wins into one document.
    body = '{"kind": "evm_typed_data", "payload": ' + repeated + "}"
    r = bot.request("POST", f"/v1/keys/{keys['a']['key_id']}/sign", raw=body.encode())
    assert r.status == 400 and r.json["error"]["code"] == "invalid_json", r


def test_a_creation_or_a_chain_the_policy_does_not_list_is_refused_not_rewritten(keys):
    bot, addr = keys["bot"], keys["a"]["address"]
    for t in (
        tx(addr, to=None),                                   # no `to`: a contract creation
        {**tx(addr), "to": None},                            # `to: null`: the same
        tx(addr, chainId="0x0", maxFeePerGas=None, maxPriorityFeePerGas=None, gasPrice="0x1"),
        tx(addr, chainId="0x00000000000000000000000000000005"),  # leading zeros, chain 5
    ):
        e = error(bot, "eth_signTransaction", [t])
        assert e["code"] in (-32003, -32602), (t, e)  # a rule, or chain 0: invalid_payload
    # Leading zeros do not change the value signed.
    raw = result(bot, "eth_signTransaction", [tx(addr, value="0x00000000000000000003e8", nonce="0x0001")])
    assert raw == result(bot, "eth_signTransaction", [tx(addr, value="0x3e8", nonce="0x1")])
