"""The audit chain (issue 7): every decision is a record signed by the enclave's audit
key and chained by SHA-256 to the one before, across enclave restarts; signing answers
carry receipts. Checked here twice: by PyNaCl and hashlib (implementations we did not
write), and by `ekms audit verify`, which must name the first record broken by an edit,
a deletion, a reordering, an insertion, or a receipt whose record is gone. A replayed
checkpoint gains the host no more than docs/SECURITY.md says, and shows."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time

from eth_account import Account
from nacl.signing import VerifyKey

from ekms_e2e import ONE_ETH, Sim, db_connect, ekms_bin, evm_eip1559

DEST = "0x000000000000000000000000000000000000dEaD"
POLICY = {
    "enabled": True,
    "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_value_wei": str(ONE_ETH),
            "max_fee_wei": str(30_000_000 * 10**12)},
}
START_TIMEOUT = float(os.environ.get("EKMS_E2E_START_TIMEOUT", "90"))


def audit_verify(sim, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ekms_bin()), "--socket", str(sim.socket_path), "audit", "verify",
         "--root", "simulation", "--state-dir", str(sim.state_dir), *extra],
        capture_output=True, text=True, timeout=120,
    )


def chain(client) -> tuple[list[dict], dict]:
    records, documents, after = [], {}, 0
    while True:
        r = client.request("GET", f"/v1/audit?after={after}&limit=1000")
        assert r.status == 200, r
        if not r.json["records"]:
            return records, documents
        records += r.json["records"]
        documents.update(r.json["documents"])
        after = records[-1]["seq"]


def check_independently(records: list[dict], documents: dict) -> None:
    """Signatures with PyNaCl, links with hashlib; every audit key has a document."""
    prev = "00" * 32
    for i, row in enumerate(records, start=1):
        rec = json.loads(row["record"])
        assert row["seq"] == rec["seq"] == i
        assert rec["prev_hash"] == prev, i
        key = bytes.fromhex(row["audit_key"][2:])
        VerifyKey(key).verify(b"ekms/v1/audit-record\n" + row["record"].encode(), bytes.fromhex(row["signature"][2:]))
        assert row["audit_key"] in documents
        prev = hashlib.sha256(row["record"].encode()).hexdigest()


def sign(client, key_id, chain_id=1):
    return client.sign_evm(key_id, evm_eip1559(chain_id, DEST, 1))


def write_db(sim, *statements) -> None:
    conn = db_connect(sim.db_path)
    try:
        for sql, params in statements:
            conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def rows(sim, sql, params=()):
    conn = db_connect(sim.db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_every_decision_is_recorded_and_verifies(fresh_sim, tmp_path):
    sim, client = fresh_sim, fresh_sim.client
    key = client.create_key("secp256k1", POLICY)
    receipts = []
    for _ in range(3):
        r = sign(client, key["key_id"])
        assert r.status == 200, r
        receipts.append(r.json["receipt"])
    denied = sign(client, key["key_id"], chain_id=5)
    assert denied.status == 403 and denied.code == "policy_denied", denied
    assert client.request("POST", f"/v1/keys/{key['key_id']}/disable", {}).status == 200

    records, documents = chain(client)
    check_independently(records, documents)
    decoded = [json.loads(r["record"]) for r in records]
    actions = [(d["action"], d["decision"], d["rule"]) for d in decoded]
    assert actions[0] == ("boot", "allowed", None)
    assert ("create_key", "allowed", None) in actions
    assert actions.count(("sign", "allowed", None)) == 3
    assert ("sign", "refused", "evm.chain_ids") in actions
    assert actions[-1] == ("disable", "allowed", None)
    # A receipt names its record exactly; the record holds the payload's hash, not it.
    by_seq = {r["seq"]: r for r in records}
    for receipt in receipts:
        row = by_seq[receipt["seq"]]
        assert receipt["record_sha256"] == hashlib.sha256(row["record"].encode()).hexdigest()
        assert receipt["signature"] == row["signature"]
        rec = json.loads(row["record"])
        assert rec["key_id"] == key["key_id"] and rec["payload_kind"] == "evm_transaction"
        assert rec["payload_sha256"] == hashlib.sha256(evm_eip1559(1, DEST, 1)).hexdigest()

    receipts_file = tmp_path / "receipts.json"
    receipts_file.write_text(json.dumps(receipts))
    out = audit_verify(sim, "--receipts", str(receipts_file))
    assert out.returncode == 0, out.stderr + out.stdout

    # The chain goes on across an enclave restart, under a new audit key.
    pid = sim.pid_of("enclave")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while not (sim.pids().get("enclave") not in (None, pid) and client.health(timeout=5).status == 200):
        assert time.monotonic() < deadline, sim.log_tail()
        time.sleep(0.1)
    r = client.request("POST", f"/v1/keys/{key['key_id']}/enable", {})
    assert r.status == 200, r  # no owner: a policy:write token is enough
    while (r := sign(client, key["key_id"])).status == 503:
        time.sleep(0.2)
    assert r.status == 200, r
    records, documents = chain(client)
    check_independently(records, documents)
    assert len({r["audit_key"] for r in records}) == 2
    assert audit_verify(sim).returncode == 0


def test_audit_verify_names_the_broken_record(fresh_sim, tmp_path):
    sim, client = fresh_sim, fresh_sim.client
    key = client.create_key("secp256k1", POLICY)
    receipts = [sign(client, key["key_id"]).json["receipt"] for _ in range(6)]
    assert audit_verify(sim).returncode == 0
    original = rows(sim, "SELECT seq, record, signature, audit_key FROM audit_records ORDER BY seq")
    n = len(original)
    target = original[3]  # seq 4: a signature

    def restore():
        write_db(sim, ("DELETE FROM audit_records", ()),
                 *[("INSERT INTO audit_records VALUES (?, ?, ?, ?)", r) for r in original])

    def assert_names(seq, why):
        out = audit_verify(sim)
        assert out.returncode not in (0, None), f"{why}: verify passed"
        assert f"record {seq}" in (out.stderr + out.stdout), f"{why}: {out.stderr}{out.stdout}"
        restore()
        assert audit_verify(sim).returncode == 0

    # Edited: the decision flipped.
    edited = target[1].replace('"allowed"', '"refused"')
    write_db(sim, ("UPDATE audit_records SET record = ? WHERE seq = ?", (edited, target[0])))
    assert_names(target[0], "edited")
    # Deleted: the next record's link is broken (its seq no longer follows).
    write_db(sim, ("DELETE FROM audit_records WHERE seq = ?", (target[0],)))
    assert_names(target[0] + 1, "deleted")
    # Reordered: two records swap places.
    a, b = original[3], original[4]
    write_db(sim,
             ("UPDATE audit_records SET record = ?, signature = ?, audit_key = ? WHERE seq = ?", (b[1], b[2], b[3], a[0])),
             ("UPDATE audit_records SET record = ?, signature = ?, audit_key = ? WHERE seq = ?", (a[1], a[2], a[3], b[0])))
    assert_names(a[0], "reordered")
    # Inserted: the records after seq 3 are shifted up and a copy of seq 3 goes in at 4.
    write_db(sim, ("DELETE FROM audit_records WHERE seq > 3", ()),
             *[("INSERT INTO audit_records VALUES (?, ?, ?, ?)", (r[0] + 1, r[1], r[2], r[3])) for r in original[3:]],
             ("INSERT INTO audit_records VALUES (?, ?, ?, ?)", (4, original[2][1], original[2][2], original[2][3])))
    assert_names(4, "inserted")
    # A receipt's record dropped (the last one: the chain itself still links).
    receipts_file = tmp_path / "receipts.json"
    receipts_file.write_text("\n".join(json.dumps(r) for r in receipts))
    assert audit_verify(sim, "--receipts", str(receipts_file)).returncode == 0
    write_db(sim, ("DELETE FROM audit_records WHERE seq = ?", (n,)))
    out = audit_verify(sim, "--receipts", str(receipts_file))
    assert out.returncode not in (0, None)
    assert f"record {n}" in out.stderr + out.stdout, out.stderr + out.stdout
    restore()


def test_replayed_checkpoint_forks_the_chain(fresh_sim, tmp_path):
    """The host stops everything, puts back an older checkpoint, the audit records as
    they were then and a key's pre-disable policy row, and starts again. It gains what
    docs/SECURITY.md bounds it to (the disable after that checkpoint is undone; no
    policy the owner did not sign), and the caller's receipts show it."""
    sim, client = fresh_sim, fresh_sim.client
    owner = Account.from_key("0x" + "51" * 32)
    r = client.request("POST", "/v1/keys", {"algorithm": "secp256k1", "policy": POLICY,
                                             "owner": {"type": "eip191", "address": owner.address}})
    assert r.status == 201, r
    kid = r.json["key_id"]
    assert sign(client, kid).status == 200
    old_checkpoints = rows(sim, "SELECT * FROM checkpoints")
    old_records = rows(sim, "SELECT * FROM audit_records")
    old_policy = rows(sim, "SELECT * FROM policies WHERE key_id = ?", (kid,))[0]
    later = [sign(client, kid).json["receipt"] for _ in range(2)]
    assert client.request("POST", f"/v1/keys/{kid}/disable", {}).status == 200
    assert sign(client, kid).code == "key_disabled"
    receipts_file = tmp_path / "receipts.json"
    receipts_file.write_text(json.dumps(later))
    assert audit_verify(sim, "--receipts", str(receipts_file)).returncode == 0

    sim.stop()
    write_db(sim,
             ("DELETE FROM checkpoints", ()),
             *[("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)", c) for c in old_checkpoints],
             ("DELETE FROM audit_records", ()),
             *[("INSERT INTO audit_records VALUES (?, ?, ?, ?)", a) for a in old_records],
             ("UPDATE policies SET version = ?, policy_json = ?, mac = ? WHERE key_id = ?",
              (old_policy[1], old_policy[2], old_policy[3], kid)))
    again = Sim(sim.state_dir).start()
    try:
        again.wait_ready(START_TIMEOUT)
        # The bound: the pre-disable policy (one the key had) signs again...
        r = sign(again.client, kid)
        assert r.status == 200, r
        # ...a policy its owner never signed still cannot be set...
        r = again.client.request("PUT", f"/v1/keys/{kid}/policy", {"policy": {**POLICY, "evm": {**POLICY["evm"], "chain_ids": [1, 5]}}})
        assert r.status == 403 and r.code == "owner_authorization_invalid", r
        # ...and the receipts of the signatures made after the replayed checkpoint
        # are no longer on the chain.
        out = audit_verify(again, "--receipts", str(receipts_file))
        assert out.returncode not in (0, None), out.stdout
        assert "record" in out.stderr + out.stdout
    finally:
        again.stop()
