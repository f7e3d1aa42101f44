"""Hostile input on the application socket (and on the enclave's socket): oversize
bodies, malformed JSON, unknown kinds, garbage transaction bytes. Each gets a clear
4xx, and afterwards every process is still the same one and healthy."""

from __future__ import annotations

import base64
import socket
import struct
import time
from pathlib import Path

import pytest
import rlp
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ekms_e2e import (
    ONE_ETH,
    ONE_SOL,
    SYSTEM_PROGRAM,
    UnixHTTPConnection,
    check_evm_signature,
    evm_eip1559,
    pid_alive,
    sol_legacy,
    sol_transfer_ix,
)

DEST = "0x000000000000000000000000000000000000dEaD"
POLICY = {
    "enabled": True,
    "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_value_wei": str(ONE_ETH), "max_fee_wei": str(10**16)},
}
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def keys(sim):
    c = sim.client
    pids = sim.remember_pids()
    assert pids, f"no pids in sim.json: {sim.state_dir / 'sim.json'}"
    return {
        "evm": c.create_key("secp256k1", POLICY),
        "sol": c.create_key(
            "ed25519",
            {"enabled": True, "solana": {"allowed_programs": [SYSTEM_PROGRAM], "max_lamports_per_transfer": ONE_SOL, "max_lamports_per_transaction": 10 * ONE_SOL, "max_fee_lamports": 100_000}},
        ),
        "pids": pids,
    }


@pytest.fixture(autouse=True)
def still_healthy_afterwards(sim, keys):
    """After each test: health 200, the same pids alive, and the EVM key still signs."""
    yield
    r = sim.client.health()
    assert r.status == 200, r
    assert sim.pids() == keys["pids"], "a process was restarted"
    assert all(pid_alive(p) for p in keys["pids"].values()), keys["pids"]
    unsigned = evm_eip1559(1, DEST, 1)
    s = sim.client.sign_evm(keys["evm"]["key_id"], unsigned)
    assert s.status == 200, s
    check_evm_signature(s.json, unsigned, keys["evm"]["address"])


def sign_path(keys, which="evm"):
    return f"/v1/keys/{keys[which]['key_id']}/sign"


def test_rejects_oversize_body(client, keys):
    body = b'{"kind":"evm_transaction","payload":"0x' + b"00" * (MAX_BODY // 2 + 1) + b'"}'
    assert len(body) > MAX_BODY
    r = client.request("POST", sign_path(keys), raw=body)
    assert r.status == 413 and r.code == "body_too_large", r


def test_rejects_oversize_body_on_create(client, keys):
    body = b'{"algorithm":"secp256k1","label":"' + b"a" * (MAX_BODY + 10) + b'"}'
    r = client.request("POST", "/v1/keys", raw=body)
    assert r.status == 413 and r.code == "body_too_large", r


def test_rejects_oversize_chunked_body(sim, keys):
    """No Content-Length: the limit holds on a chunked body too."""
    conn = UnixHTTPConnection(sim.socket_path, timeout=30)
    try:
        chunk = b"0" * 65536

        def chunks():
            yield b'{"kind":"evm_transaction","payload":"0x'
            for _ in range(MAX_BODY // len(chunk) + 2):
                yield chunk
            yield b'"}'

        try:
            conn.request("POST", sign_path(keys), body=chunks(),
                         headers={"Content-Type": "application/json", **sim.client.auth_headers()},
                         encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        assert resp.status == 413, (resp.status, resp.read())
    finally:
        conn.close()


def test_accepts_body_just_under_limit_but_refuses_payload(client, keys):
    """A body under the HTTP limit whose EVM payload is over the signer's 128 KiB: a 400,
    not a crash or a dropped frame."""
    payload = "0x" + "00" * (120 * 1024)
    r = client.sign(keys["evm"]["key_id"], "evm_transaction", payload)
    assert r.status == 400 and r.code in ("invalid_payload", "unsupported_payload"), r


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"kind":"evm_transaction"}', b'{"kind":1,"payload":"0x00"}', b"[]", b"\xff\xfe",
     b'{"kind":"evm_transaction","payload":"0x00","extra":1}'],
    ids=["truncated", "text", "missing-field", "wrong-type", "array", "not-utf8", "unknown-field"],
)
def test_rejects_malformed_json(client, keys, raw):
    r = client.request("POST", sign_path(keys), raw=raw)
    assert r.status == 400 and r.code == "invalid_json", r


def test_rejects_missing_content_type(client, keys):
    r = client.request("POST", sign_path(keys), raw=b'{"kind":"evm_transaction","payload":"0x00"}', content_type=None)
    assert 400 <= r.status < 500 and r.code, r


@pytest.mark.parametrize("kind", ["raw_digest", "EVM_TRANSACTION", "", "eip712"])
def test_rejects_unknown_kind(client, keys, kind):
    r = client.sign(keys["evm"]["key_id"], kind, "0x00")
    assert r.status == 400 and r.code == "unknown_kind", r


@pytest.mark.parametrize(
    "payload",
    ["0xdeadbeef", "0x", "deadbeef", "0xzz", "0x02", "0x02c0", "0x" + "ff" * 64,
     "0x" + (evm_eip1559(1, DEST, 1) + b"\x00").hex(),  # trailing byte
     "0x" + rlp.encode([0, 1, 21000, bytes.fromhex(DEST[2:]), 1, b""]).hex()],  # pre-EIP-155 legacy
    ids=["garbage", "empty", "no-0x", "bad-hex", "type-only", "empty-list", "ff", "trailing", "pre-155"],
)
def test_rejects_garbage_evm_payload(client, keys, payload):
    r = client.sign(keys["evm"]["key_id"], "evm_transaction", payload)
    assert r.status == 400 and r.code in ("invalid_payload", "unsupported_payload"), r
    assert "signature" not in r.json


@pytest.mark.parametrize("tx_type", [0x03, 0x04, 0x05, 0x7F])
def test_rejects_unsupported_evm_types(client, keys, tx_type):
    dest = bytes.fromhex(DEST[2:])
    if tx_type == 0x03:  # EIP-4844: ... to, value, data, accessList, maxFeePerBlobGas, blobVersionedHashes
        fields = [1, 0, 1, 2, 21000, dest, 1, b"", [], 1, [b"\x01" + b"\x00" * 31]]
    elif tx_type == 0x04:  # EIP-7702: ... accessList, authorizationList
        fields = [1, 0, 1, 2, 21000, dest, 1, b"", [], [[1, dest, 0, 0, 1, 1]]]
    else:
        fields = [1, 0, 1, 2, 21000, dest, 1, b"", []]
    payload = "0x" + (bytes([tx_type]) + rlp.encode(fields)).hex()
    r = client.sign(keys["evm"]["key_id"], "evm_transaction", payload)
    assert r.status == 400 and r.code == "unsupported_payload", r


@pytest.mark.parametrize(
    "payload",
    ["!!!", "", base64.b64encode(b"\x00").decode(), base64.b64encode(b"\x01" + b"\x00" * 64).decode(),
     base64.b64encode(b"\xff" * 300).decode(), base64.b64encode(b"\x00" * 2000).decode()],
    ids=["not-base64", "empty", "zero", "one-slot-no-message", "ff", "too-long"],
)
def test_rejects_garbage_solana_payload(client, keys, payload):
    r = client.sign(keys["sol"]["key_id"], "solana_transaction", payload)
    assert r.status == 400 and r.code in ("invalid_payload", "unsupported_payload"), r


def test_rejects_solana_tx_with_trailing_bytes(client, keys):
    payer = Pubkey.from_string(keys["sol"]["address"])
    unsigned, _ = sol_legacy(payer, [sol_transfer_ix(payer, Keypair().pubkey(), 1)])
    r = client.sign_solana(keys["sol"]["key_id"], unsigned + b"\x00")
    assert r.status == 400 and r.code in ("invalid_payload", "unsupported_payload"), r


def test_rejects_unknown_routes_and_methods(client, keys):
    assert client.request("GET", "/v1/nope").status == 404
    assert client.request("DELETE", "/v1/health").status == 405
    assert client.request("GET", sign_path(keys)).status == 405


def test_survives_garbage_http(sim, keys):
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/keys HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(str(sim.socket_path))
            s.sendall(junk)
            try:
                s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                pass
        finally:
            s.close()


def _enclave_socket(sim):
    """The enclave's Unix socket, as sim.json names it."""
    path = sim.sim_json().get("enclave_socket")
    return Path(path) if path else None


def test_survives_hostile_frames_on_enclave_socket(sim, keys):
    """The enclave is reachable by the (untrusted) parent: oversize length prefixes, an
    empty frame and garbage CBOR must not crash it."""
    path = _enclave_socket(sim)
    if path is None:
        pytest.skip(f"no enclave socket found under {sim.state_dir}")
    frames = [
        struct.pack(">I", 0xFFFFFFFF) + b"\x00" * 16,
        struct.pack(">I", MAX_BODY + 1) + b"\xa0" * 1024,
        struct.pack(">I", 0),
        struct.pack(">I", 8) + b"\xff" * 8,
        struct.pack(">I", 64) + b"\x9f" * 64,  # nested indefinite arrays
    ]
    for frame in frames:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(str(path))
            try:
                s.sendall(frame)
                s.recv(4096)
            except (socket.timeout, ConnectionResetError, BrokenPipeError):
                pass
        finally:
            s.close()
    time.sleep(0.5)
