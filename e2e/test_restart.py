"""The enclave dies while the parent runs and requests are in flight: those requests
end promptly with 503 enclave_unavailable (or succeed, if they finished first), never
a hang or a 500; the sim restarts the enclave and the same keys sign again."""

from __future__ import annotations

import os
import signal
import threading
import time

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from ekms_e2e import (
    ONE_ETH,
    ONE_SOL,
    SYSTEM_PROGRAM,
    check_evm_signature,
    check_solana_signature,
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
SOL_POLICY = {"enabled": True, "solana": {"allowed_programs": [SYSTEM_PROGRAM], "max_lamports_per_transfer": ONE_SOL, "max_lamports_per_transaction": 10 * ONE_SOL, "max_fee_lamports": 100_000}}
REQUEST_TIMEOUT = 30  # a request that takes longer counts as a hang


def test_enclave_restart_under_load(fresh_sim):
    sim = fresh_sim
    client = sim.client
    key = client.create_key("secp256k1", POLICY)
    sol = client.create_key("ed25519", SOL_POLICY)
    unsigned = evm_eip1559(1, DEST, 1)
    first = client.sign_evm(key["key_id"], unsigned)
    assert first.status == 200, first
    check_evm_signature(first.json, unsigned, key["address"])

    enclave_pid = sim.pid_of("enclave")
    parent_pid = sim.pid_of("parent")
    assert pid_alive(enclave_pid) and pid_alive(parent_pid)

    stop = threading.Event()
    results: list[tuple[str, object]] = []
    lock = threading.Lock()

    def fire(n: int) -> None:
        nonce = n * 1_000_000
        while not stop.is_set():
            nonce += 1
            tx = evm_eip1559(1, DEST, 1, nonce=nonce)
            started = time.monotonic()
            try:
                r = client.sign_evm(key["key_id"], tx, timeout=REQUEST_TIMEOUT)
                item = ("response", (r, tx, time.monotonic() - started))
            except Exception as e:  # a timeout or a dropped connection
                item = ("exception", (e, time.monotonic() - started))
            with lock:
                results.append(item)

    threads = [threading.Thread(target=fire, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # requests are flowing
    os.kill(enclave_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(2.0)  # keep firing through the outage
    stop.set()
    for t in threads:
        t.join(REQUEST_TIMEOUT + 10)
    assert not any(t.is_alive() for t in threads), "a request hung"

    exceptions = [x for kind, x in results if kind == "exception"]
    assert not exceptions, f"requests failed at the transport level: {exceptions[:5]}"
    codes: dict[object, int] = {}
    for _, (r, tx, elapsed) in results:
        assert elapsed < REQUEST_TIMEOUT
        if r.status == 200:
            check_evm_signature(r.json, tx, key["address"])
        else:
            assert r.status == 503 and r.code == "enclave_unavailable", r
        codes[r.status] = codes.get(r.status, 0) + 1
    assert codes.get(200, 0) > 0, codes
    print(f"answers during the outage window: {codes}")

    # The enclave comes back (a new process) and the same keys sign again.
    deadline = killed_at + 60
    last = None
    while time.monotonic() < deadline:
        tx = evm_eip1559(1, DEST, 1, nonce=42)
        last = client.sign_evm(key["key_id"], tx)
        if last.status == 200:
            break
        assert last.status == 503 and last.code == "enclave_unavailable", last
        time.sleep(0.5)
    assert last is not None and last.status == 200, f"signing did not recover within 60 s: {last}"
    check_evm_signature(last.json, tx, key["address"])

    payer = Pubkey.from_string(sol["address"])
    sunsigned, message = sol_legacy(payer, [sol_transfer_ix(payer, Keypair().pubkey(), 1)])
    s = client.sign_solana(sol["key_id"], sunsigned)
    assert s.status == 200, s
    check_solana_signature(s.json, message, sol["address"])

    assert client.health().status == 200
    sim.remember_pids()
    new_enclave = sim.pid_of("enclave")
    assert new_enclave != enclave_pid and pid_alive(new_enclave)
    assert not pid_alive(enclave_pid)
    assert sim.pid_of("parent") == parent_pid, "the parent was restarted, not just the enclave"
    # New keys work after the restart as well.
    k2 = client.create_key("secp256k1", POLICY)
    r2 = client.sign_evm(k2["key_id"], unsigned)
    assert r2.status == 200, r2
    check_evm_signature(r2.json, unsigned, k2["address"])


def test_health_while_enclave_down_is_503_then_200(fresh_sim):
    sim = fresh_sim
    client = sim.client
    enclave_pid = sim.pid_of("enclave")
    os.kill(enclave_pid, signal.SIGKILL)
    saw_down = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = client.health(timeout=REQUEST_TIMEOUT)
        if r.status == 503:
            saw_down = True
        elif r.status == 200 and (saw_down or sim.pids().get("enclave") != enclave_pid):
            break
        time.sleep(0.05)
    assert r.status == 200, r
    assert sim.pid_of("enclave") != enclave_pid

