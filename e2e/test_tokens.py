"""Scoped API tokens against a real `ekms sim`: the admin token file, 401 for no, an
unknown, a revoked or an expired token, 403 for a token outside its scope (or outside
its keys), the token routes, and a store that holds no token in clear."""

from __future__ import annotations

import base64
import datetime
import json
import os
import stat
import subprocess
import time

from ekms_e2e import ONE_ETH, check_evm_signature, db_connect, ekms_bin, evm_eip1559

DEST = "0x000000000000000000000000000000000000dEaD"
POLICY = {
    "enabled": True,
    "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_value_wei": str(ONE_ETH), "max_fee_wei": str(10**16)},
}


def unauthenticated(r) -> bool:
    return r.status == 401 and r.code == "unauthenticated" and r.headers.get("www-authenticate") == "Bearer"


def forbidden(r) -> bool:
    return r.status == 403 and r.code == "forbidden"


def new_token(client, name, scopes, **kw) -> tuple[str, str]:
    r = client.create_token(name, scopes, **kw)
    assert r.status == 201, r
    return r.json["token_id"], r.json["token"]


def test_admin_token_file_is_private_and_works(sim, client):
    path = client.admin_token_path()
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    token = path.read_text().strip()
    assert token.startswith("ekms_") and len(token) == 48, len(token)
    assert client.list_keys().status == 200
    # Kept by the running parent, never written to its log.
    logs = "".join(p.read_text(errors="replace") for p in (sim.state_dir / "logs").glob("*.log"))
    assert token not in logs


def test_health_needs_no_token(client):
    assert client.with_token(None).health().status == 200


def test_rejects_requests_without_a_token_with_401(client):
    anon = client.with_token(None)
    key = client.create_key("secp256k1", POLICY)
    kid = key["key_id"]
    for r in (
        anon.request("POST", "/v1/keys", {"algorithm": "ed25519"}),
        anon.list_keys(),
        anon.get_key(kid),
        anon.set_policy(kid, POLICY),
        anon.sign_evm(kid, evm_eip1559(1, DEST, 1)),
        anon.request("GET", "/v1/attestation"),
        anon.list_tokens(),
        anon.create_token("x", ["admin"]),
    ):
        assert unauthenticated(r), r
    for bad in ("ekms_" + "A" * 43, "garbage", client._token() + "x"):
        assert unauthenticated(client.with_token(bad).list_keys())


def test_rejects_a_revoked_token_from_the_next_request(client):
    token_id, token = new_token(client, "soon revoked", ["keys:read"])
    bot = client.with_token(token)
    assert bot.list_keys().status == 200
    r = client.revoke_token(token_id)
    assert r.status == 200 and r.json == {"token_id": token_id, "revoked": True}, r
    assert unauthenticated(bot.list_keys())
    assert client.revoke_token(token_id).code == "token_not_found"


def test_rejects_an_expired_token(client):
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)).isoformat()
    _, token = new_token(client, "short-lived", ["keys:read"], expires_at=soon)
    bot = client.with_token(token)
    assert bot.list_keys().status == 200
    time.sleep(2.5)
    assert unauthenticated(bot.list_keys())
    past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)).isoformat()
    r = client.create_token("already expired", ["keys:read"], expires_at=past)
    assert r.status == 400 and r.code == "invalid_expires_at", r


def test_sign_token_limited_to_key_a(client):
    a = client.create_key("secp256k1", POLICY)
    b = client.create_key("secp256k1", POLICY)
    _, token = new_token(client, "bot A", ["sign"], key_ids=[a["key_id"]])
    bot = client.with_token(token)
    unsigned = evm_eip1559(1, DEST, 1)
    assert forbidden(bot.sign_evm(b["key_id"], unsigned))
    r = bot.sign_evm(a["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, a["address"])
    # sign only: nothing else.
    assert forbidden(bot.list_keys())
    assert forbidden(bot.create_token("x", ["admin"]))


def test_keys_read_token_cannot_create_or_sign(client):
    key = client.create_key("secp256k1", POLICY)
    _, token = new_token(client, "reader", ["keys:read"])
    reader = client.with_token(token)
    assert reader.get_key(key["key_id"]).status == 200
    assert forbidden(reader.request("POST", "/v1/keys", {"algorithm": "secp256k1"}))
    assert forbidden(reader.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1)))
    assert forbidden(reader.set_policy(key["key_id"], POLICY))


def test_lists_tokens_without_secrets_and_refuses_bad_bodies(client):
    token_id, token = new_token(client, "listed", ["sign", "keys:read"])
    r = client.list_tokens()
    assert r.status == 200, r
    listed = {t["token_id"]: t for t in r.json["tokens"]}
    assert listed[token_id]["name"] == "listed"
    assert listed[token_id]["scopes"] == ["sign", "keys:read"]
    assert listed[token_id]["key_ids"] is None and listed[token_id]["expires_at"] is None
    assert token not in r.body.decode() and client._token() not in r.body.decode()
    for body, code in (
        ({"name": "x", "scopes": ["root"]}, "invalid_scope"),
        ({"name": "x" * 65, "scopes": ["sign"]}, "invalid_name"),
        ({"name": "x", "scopes": ["sign"], "key_ids": ["not-a-key"]}, "invalid_key_id"),
        ({"name": "x", "scopes": ["sign"], "extra": 1}, "invalid_json"),
    ):
        r = client.request("POST", "/v1/tokens", body)
        assert r.status == 400 and r.code == code, (body, r)


def test_store_holds_no_token_in_clear(sim, client):
    tokens = [client._token()] + [new_token(client, f"t{i}", ["keys:read"])[1] for i in range(3)]
    conn = db_connect(sim.db_path)
    try:
        rows = conn.execute("SELECT * FROM tokens").fetchall()
    finally:
        conn.close()
    assert len(rows) >= len(tokens)
    for token in tokens:
        raw = base64.urlsafe_b64decode(token.removeprefix("ekms_") + "=")
        assert len(raw) == 32
        for row in rows:
            for cell in row:
                blob = cell if isinstance(cell, bytes) else str(cell).encode()
                assert token.encode() not in blob
                assert raw not in blob
                assert raw.hex().encode() not in blob


def test_cli_tokens_commands(sim, client):
    def ekms(*args, env=None):
        return subprocess.run([str(ekms_bin()), "--socket", str(sim.socket_path), *args],
                              capture_output=True, text=True, timeout=60, env=env)

    out = ekms("tokens", "create", "--name", "cli", "--scope", "keys:read")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    listed = ekms("tokens", "list")
    assert listed.returncode == 0 and created["token_id"] in listed.stdout and created["token"] not in listed.stdout
    env = {**os.environ, "EKMS_TOKEN": created["token"]}
    assert ekms("keys", "list", env=env).returncode == 0
    refused = ekms("keys", "create", "--algorithm", "ed25519", env=env)
    assert refused.returncode == 1 and "forbidden" in refused.stderr, refused.stderr
    assert created["token"] not in refused.stderr
    assert ekms("tokens", "revoke", created["token_id"]).returncode == 0
    gone = ekms("keys", "list", env=env)
    assert gone.returncode == 1 and "unauthenticated" in gone.stderr, gone.stderr
