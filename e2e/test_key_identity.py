"""Verifiable key identity (issue 6): the enclave signs a statement of each key's
id, public key and address with an attested identity key. The parent checks its own
columns against it (a rewritten `address` or `public_key` column is 500
sealed_state_invalid, never a wrong address), and `ekms keys verify` checks it on the
client against the simulation root and PCR0, trusting nothing the parent says."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ekms_e2e import (
    ONE_ETH,
    ONE_SOL,
    PROTOCOL_VERSION,
    SYSTEM_PROGRAM,
    check_evm_signature,
    db_connect,
    ekms_bin,
    evm_eip1559,
    sol_legacy,
    sol_transfer_ix,
)

DEST = "0x000000000000000000000000000000000000dEaD"
EVM_POLICY = {
    "enabled": True,
    "evm": {
        "chain_ids": [1],
        "allowed_destinations": [DEST],
        "max_value_wei": str(ONE_ETH),
        "max_fee_wei": str(10**16),
    },
}


def keys_verify(sim, key_id: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ekms_bin()), "--socket", str(sim.socket_path), "keys", "verify", key_id,
         "--root", "simulation", "--state-dir", str(sim.state_dir), *extra],
        capture_output=True, text=True, timeout=60,
    )


def pcr0_of(sim) -> str:
    out = subprocess.run(
        [str(ekms_bin()), "--socket", str(sim.socket_path), "attestation", "verify",
         "--root", "simulation", "--state-dir", str(sim.state_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout)["pcrs"]["0"]


def assert_sealed_state_invalid(r):
    assert r.status == 500, r
    assert r.code == "sealed_state_invalid", r
    assert "address" not in r.json, r


def test_statement_names_the_address_that_signs(sim):
    client = sim.client
    key = client.create_key("secp256k1", EVM_POLICY)
    statement = json.loads(key["statement"]["statement"])
    assert statement["address"] == key["address"]
    assert statement["public_key"] == key["public_key"]
    assert statement["key_id"] == key["key_id"]
    # The address the enclave states is the one its signatures recover to (eth-account).
    unsigned = evm_eip1559(1, DEST, 1)
    r = client.sign_evm(key["key_id"], unsigned)
    assert r.status == 200, r
    check_evm_signature(r.json, unsigned, statement["address"])

    sol = client.create_key("ed25519")
    stated = json.loads(sol["statement"]["statement"])
    assert stated["address"] == sol["address"] == str(Pubkey.from_string(sol["public_key"]))


@pytest.mark.parametrize("algorithm", ["secp256k1", "ed25519"])
def test_keys_verify_passes_on_an_untouched_key(sim, algorithm):
    key = sim.client.create_key(algorithm)
    pcr0 = pcr0_of(sim)
    out = keys_verify(sim, key["key_id"], "--pcr0", pcr0)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["verified"] is True
    assert report["address"] == key["address"]
    assert report["enclave"]["pcrs"]["0"] == pcr0
    # The same statement under a PCR0 the image does not have fails.
    out = keys_verify(sim, key["key_id"], "--pcr0", "00" * 48)
    assert out.returncode != 0
    assert "PCR" in out.stderr or "pcr" in out.stderr.lower(), out.stderr


@pytest.mark.parametrize(
    "column,value",
    [
        ("address", "'0x000000000000000000000000000000000000dEaD'"),
        ("public_key", "x'03" + "aa" * 32 + "'"),
    ],
)
def test_rewritten_address_or_public_key_is_sealed_state_invalid(sim, column, value):
    client = sim.client
    key = client.create_key("secp256k1")
    with db_connect(sim.db_path) as db:
        db.execute(f"UPDATE keys SET {column} = {value} WHERE key_id = ?", (key["key_id"],))
    assert_sealed_state_invalid(client.get_key(key["key_id"]))
    assert_sealed_state_invalid(client.list_keys())
    assert keys_verify(sim, key["key_id"]).returncode != 0
    # Dropping the statement too does not help: the parent asks the enclave again,
    # which states what the sealed record holds.
    with db_connect(sim.db_path) as db:
        db.execute("DELETE FROM key_statements WHERE key_id = ?", (key["key_id"],))
    assert_sealed_state_invalid(client.get_key(key["key_id"]))
    with db_connect(sim.db_path) as db:
        db.execute("DELETE FROM keys WHERE key_id = ?", (key["key_id"],))


def test_tampered_statement_fails_everywhere(sim):
    client = sim.client
    key = client.create_key("ed25519")
    attacker = str(Keypair().pubkey())
    with db_connect(sim.db_path) as db:
        (text,) = db.execute(
            "SELECT statement FROM key_statements WHERE key_id = ?", (key["key_id"],)
        ).fetchone()
        forged = text.replace(key["address"], attacker)
        db.execute("UPDATE key_statements SET statement = ? WHERE key_id = ?", (forged, key["key_id"]))
        db.execute("UPDATE keys SET address = ? WHERE key_id = ?", (attacker, key["key_id"]))
    assert_sealed_state_invalid(client.get_key(key["key_id"]))
    out = keys_verify(sim, key["key_id"])
    assert out.returncode != 0
    with db_connect(sim.db_path) as db:
        db.execute("DELETE FROM keys WHERE key_id = ?", (key["key_id"],))


def test_statement_is_reissued_for_a_key_stored_without_one(sim):
    client = sim.client
    key = client.create_key("ed25519")
    with db_connect(sim.db_path) as db:
        db.execute("DELETE FROM key_statements WHERE key_id = ?", (key["key_id"],))
    r = client.get_key(key["key_id"])
    assert r.status == 200, r
    stated = json.loads(r.json["statement"]["statement"])
    assert stated["address"] == key["address"] and stated["created_at"] is None
    assert keys_verify(sim, key["key_id"]).returncode == 0


def _cbor(value) -> bytes:
    """The few CBOR shapes a request frame needs (RFC 8949): maps, text, bytes,
    unsigned integers, null."""
    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        if n < 256:
            return bytes([major << 5 | 24, n])
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")

    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return head(0, value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode()
        return head(3, len(raw)) + raw
    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(_cbor(k) + _cbor(v) for k, v in value.items())
    raise TypeError(value)


def _enclave_attestation(sim, user_data: bytes) -> bytes:
    """Sends `Attestation { user_data }` straight to the enclave's socket, as a host
    attacker can, and returns the answer frame's body."""
    import socket
    import struct

    path = sim.sim_json().get("enclave_socket")
    if not path:
        pytest.skip("sim.json names no enclave socket")
    body = _cbor({"version": PROTOCOL_VERSION, "request_id": 7,
                  "body": {"Attestation": {"nonce": None, "user_data": user_data}}})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(struct.pack(">I", len(body)) + body)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = s.recv(65536)
            assert chunk, "the enclave closed the connection"
            buf += chunk
    return buf[4:]


def test_enclave_never_attests_an_identity_key_the_parent_chose(sim):
    """A host attacker asks the enclave itself for a document whose user_data binds an
    ed25519 key of theirs as the identity key: with it, any statement they signed would
    pass `ekms keys verify`, PCR0 included. The enclave refuses that prefix."""
    attacker = bytes(Keypair().pubkey())
    answer = _enclave_attestation(sim, b"ekms/v1/identity-key:" + attacker)
    assert b"BadRequest" in answer and b"identity-key or audit-key prefix" in answer, answer[:200]
    # Nor an audit key of theirs (issue 7): it would sign audit records in the enclave's name.
    answer = _enclave_attestation(sim, b"ekms/v1/audit-key:" + hashlib.sha256(attacker).digest())
    assert b"BadRequest" in answer and b"audit-key prefix" in answer, answer[:200]
    # Other user_data is attested as before.
    answer = _enclave_attestation(sim, b"app data")
    assert b"Attestation" in answer and b"BadRequest" not in answer, answer[:200]
