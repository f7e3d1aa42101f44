#!/usr/bin/env python3
"""enclave-kms quick start: runs the whole simulation and walks through it.

1. starts `ekms sim` with a fresh state directory (./.demo); the parent writes an admin
   API token to .demo/admin.token;
2. creates an EVM key owned by an Ethereum account kept off the host (policy: chain 1,
   one destination, at most 1 ETH), a Solana key (System Program only, at most 1 SOL),
   and a bot token that may only sign with the EVM key;
3. signs an EIP-1559 transaction with the bot token, and a Solana transfer (the bot
   token is refused there), and checks both signatures with independent libraries
   (eth-account, solders);
4. shows a request the policy refuses (a destination not on the allow-list);
5. loosens the EVM key's policy: refused with the admin token alone, applied with the
   owner's EIP-191 signature (eth-account) over the enclave's authorization message;
6. disables the EVM key (emergency stop) and shows the refusal;
7. verifies the audit chain and the signatures' receipts with `ekms audit verify`;
8. verifies the EVM key's address end to end with `ekms keys verify` (the enclave's
   signed statement and the attestation document binding its identity key);
9. verifies a fresh attestation document with `ekms attestation verify --root
   simulation`;
10. stops the simulation.

Exits non-zero on any failure. Needs the binaries (`cargo build --workspace`) and the
Python packages of requirements-test.txt:

    python3 -m venv .venv && .venv/bin/pip install -r requirements-test.txt
    .venv/bin/python scripts/demo.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "e2e"))

try:
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from ekms_e2e import (
        ONE_ETH,
        ONE_SOL,
        SYSTEM_PROGRAM,
        Sim,
        check_evm_key,
        check_evm_signature,
        check_solana_signature,
        ekms_bin,
        evm_eip1559,
        fresh_dir,
        sol_transfer_ix,
        sol_v0,
    )
except ImportError as e:  # pragma: no cover - environment problem, not a demo step
    sys.exit(
        f"demo: missing Python package ({e}).\n"
        "  python3 -m venv .venv && .venv/bin/pip install -r requirements-test.txt\n"
        "  .venv/bin/python scripts/demo.py"
    )

ALLOWED = "0x000000000000000000000000000000000000dEaD"
NOT_ALLOWED = "0x1111111111111111111111111111111111111111"


class DemoFailure(Exception):
    pass


def step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}", flush=True)


def show(label: str, value: object) -> None:
    print(f"   {label:<22} {value}", flush=True)


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)


def run(state_dir: Path) -> None:
    step(1, f"start the simulation (kms-sim, enclave, parent) in {state_dir}")
    fresh_dir(state_dir)
    sim = Sim(state_dir, log_path=state_dir / "ekms-sim.out").start()
    try:
        started = time.monotonic()
        health = sim.wait_ready(90)
        show("ready after", f"{time.monotonic() - started:.1f} s")
        show("mode", health["mode"])
        show("PCR0", health["pcrs"].get("0", "?")[:32] + "…")
        show("API socket", sim.socket_path)
        client = sim.client
        demo(sim, client)
    except BaseException:
        print("\n-- last lines of the logs --", file=sys.stderr)
        print(sim.log_tail(30), file=sys.stderr)
        raise
    finally:
        step(10, "stop the simulation")
        sim.stop()
        leftover = sim.leftover_pids()
        expect(not leftover, f"processes still running after stop: {leftover}")
        show("stopped", "all processes exited")


def demo(sim: Sim, client) -> None:
    step(2, "create keys, each with its policy (evaluated inside the enclave), and a bot token")
    evm_policy = {
        "enabled": True,
        "evm": {"chain_ids": [1], "allowed_destinations": [ALLOWED], "max_value_wei": str(ONE_ETH), "max_fee_wei": str(10**16)},
    }
    sol_policy = {"enabled": True, "solana": {"allowed_programs": [SYSTEM_PROGRAM], "max_lamports_per_transfer": ONE_SOL, "max_lamports_per_transaction": 10 * ONE_SOL, "max_fee_lamports": 100_000}}
    # The owner's key lives with the owner (a hardware wallet, another machine): only its
    # address goes to the service. Here eth-account stands in for that wallet.
    owner = Account.create()
    r = client.request("POST", "/v1/keys", {
        "algorithm": "secp256k1", "policy": evm_policy, "label": "demo treasury (EVM)",
        "owner": {"type": "eip191", "address": owner.address},
    })
    expect(r.status == 201, f"key creation failed: {r}")
    evm_key = r.json
    check_evm_key(evm_key)
    show("EVM key", evm_key["key_id"])
    show("  address", evm_key["address"])
    show("  owner", f"{owner.address} (only its signature can loosen the policy)")
    show("  policy", json.dumps(evm_policy["evm"]))
    sol_key = client.create_key("ed25519", sol_policy, label="demo hot wallet (Solana)")
    show("Solana key", sol_key["key_id"])
    show("  address", sol_key["address"])
    show("  policy", json.dumps(sol_policy["solana"]))
    r = client.create_token("demo bot", ["sign"], key_ids=[evm_key["key_id"]])
    expect(r.status == 201, f"token creation failed: {r}")
    bot = client.with_token(r.json["token"])
    show("bot token", f"{r.json['token_id']}: scope sign, EVM key only (the token is shown once)")

    step(3, "sign with the bot token: 0.5 ETH to the allowed address on chain 1")
    unsigned = evm_eip1559(1, ALLOWED, ONE_ETH // 2, nonce=0, max_priority_fee=2 * 10**9, max_fee=40 * 10**9)
    show("unsigned", "0x" + unsigned.hex()[:60] + "…")
    r = bot.sign_evm(evm_key["key_id"], unsigned)
    expect(r.status == 200, f"EVM signing failed: {r}")
    recovered = check_evm_signature(r.json, unsigned, evm_key["address"])
    receipts = [r.json["receipt"]]
    show("signed transaction", r.json["signed_transaction"][:60] + "…")
    show("transaction hash", r.json["transaction_hash"])
    show("eth-account recovers", f"{recovered}  ✓ the key's address")
    show("audit receipt", f"record {r.json['receipt']['seq']}, sha256 {r.json['receipt']['record_sha256'][:16]}…")

    payer = Pubkey.from_string(sol_key["address"])
    to = Keypair().pubkey()
    unsigned_sol, message = sol_v0(payer, [sol_transfer_ix(payer, to, ONE_SOL // 4)])
    r = bot.sign_solana(sol_key["key_id"], unsigned_sol)
    expect(r.status == 403 and r.code == "forbidden", f"the bot token signed with another key: {r}")
    show("bot on Solana key", f"HTTP {r.status} {r.code}")
    r = client.sign_solana(sol_key["key_id"], unsigned_sol)
    expect(r.status == 200, f"Solana signing failed: {r}")
    tx = check_solana_signature(r.json, message, sol_key["address"])
    expect(tx.verify_with_results() == [True], "solders does not verify the signed transaction")
    receipts.append(r.json["receipt"])
    show("Solana (admin token)", "0.25 SOL through the System Program (v0 message)")
    show("signature", r.json["signature"])
    show("solders verifies", "✓ signature by the key over the message, in the fee payer's slot")

    step(4, "a request outside the policy: 0.1 ETH to an address not on the allow-list")
    bad = evm_eip1559(1, NOT_ALLOWED, ONE_ETH // 10, nonce=1)
    r = client.sign_evm(evm_key["key_id"], bad)
    expect(r.status == 403 and r.code == "policy_denied", f"expected a policy refusal, got {r}")
    expect("signature" not in r.json, "a refused request carried a signature")
    show("answer", f"HTTP {r.status} {r.code}")
    show("rule", r.error.get("rule"))
    show("message", r.error.get("message"))

    step(5, "loosen the EVM policy (add chain 8453): only the owner can")
    looser = json.loads(json.dumps(evm_policy))
    looser["evm"]["chain_ids"] = [1, 8453]
    r = client.set_policy(evm_key["key_id"], looser)
    expect(r.status == 403 and r.code == "owner_authorization_invalid", f"the host loosened an owned key: {r}")
    show("admin token alone", f"HTTP {r.status} {r.code}")
    r = client.request("POST", f"/v1/keys/{evm_key['key_id']}/policy/proposal", {"policy": looser})
    expect(r.status == 200, f"proposal failed: {r}")
    proposal = r.json
    for line in proposal["message"].splitlines():
        print(f"   | {line}")
    signature = owner.sign_message(encode_defunct(text=proposal["message"])).signature.hex()
    r = client.request("PUT", f"/v1/keys/{evm_key['key_id']}/policy", {
        "policy": looser, "version": proposal["version"], "expires_at": proposal["expires_at"],
        "owner_signature": "0x" + signature.removeprefix("0x"),
    })
    expect(r.status == 200, f"the owner's change was refused: {r}")
    show("owner-signed change", f"applied: policy version {r.json['policy_version']}")

    step(6, "emergency stop: disable the EVM key (needs no owner; re-enabling does)")
    r = client.request("POST", f"/v1/keys/{evm_key['key_id']}/disable", {})
    expect(r.status == 200, f"disable failed: {r}")
    r = bot.sign_evm(evm_key["key_id"], unsigned)
    expect(r.status == 403 and r.code == "key_disabled", f"a disabled key signed: {r}")
    show("bot signs again", f"HTTP {r.status} {r.code}")

    step(7, "verify the audit chain: every decision, signed by the enclave, hash-chained")
    pcr0 = sim.sim_json().get("pcr0")
    receipts_file = sim.state_dir / "demo-receipts.json"
    receipts_file.write_text(json.dumps(receipts))
    out = verify_command(sim, ["audit", "verify", "--receipts", str(receipts_file)], pcr0)
    summary = json.loads(out.stdout)
    show("records", summary.get("records"))
    show("receipts checked", summary.get("receipts_checked", summary.get("receipts")))

    step(8, "verify the EVM key's address: the enclave's signed statement, checked here")
    out = verify_command(sim, ["keys", "verify", evm_key["key_id"]], pcr0)
    stated = json.loads(out.stdout)
    expect(stated.get("address") == evm_key["address"], f"the statement names another address: {stated}")
    show("stated address", f"{stated['address']} = the address the signature above recovers to")
    show("identity key", stated.get("identity_key", "?")[:32] + "…  bound by the enclave's attestation")

    step(9, "verify a fresh attestation document (simulation root)")
    out = verify_command(sim, ["attestation", "verify"], pcr0)
    try:
        doc = json.loads(out.stdout)
    except ValueError:
        doc = {}
    if not doc:
        print("   | " + out.stdout.strip().replace("\n", "\n   | "))
        return
    expect(doc.get("verified") is True, f"the document did not verify: {doc}")
    expect(not pcr0 or doc.get("pcrs", {}).get("0") == pcr0, "PCR0 of the document is not the enclave's")
    show("verified", f"{doc['verified']} (root: {doc.get('root')})")
    show("module", doc.get("module_id"))
    show("timestamp", doc.get("timestamp"))
    show("nonce", doc.get("nonce"))
    show("PCR0", doc.get("pcrs", {}).get("0", "?")[:32] + "…  = the enclave binary's measurement")
    if doc.get("warning"):
        show("note", doc["warning"])


def verify_command(sim, args: list[str], pcr0: str | None) -> subprocess.CompletedProcess:
    """Runs `ekms ARGS --root simulation --state-dir … [--pcr0 …]`, shows the command,
    and fails the demo (echoing its output) unless it exits 0."""
    cmd = [str(ekms_bin()), "--socket", str(sim.socket_path), *args,
           "--root", "simulation", "--state-dir", str(sim.state_dir)]
    if pcr0:
        cmd += ["--pcr0", pcr0]
    show("command", " ".join(["ekms", *cmd[1:]]))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        for line in (out.stdout + out.stderr).strip().splitlines():
            print(f"   | {line}")
        raise DemoFailure(f"ekms {' '.join(args[:2])} exited with {out.returncode}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=REPO / ".demo",
                        help="state directory, emptied first (default: ./.demo in the repository)")
    args = parser.parse_args()
    if not ekms_bin().exists():
        print(f"demo: {ekms_bin()} not found: run `cargo build --workspace` first", file=sys.stderr)
        return 1
    try:
        run(args.state_dir.resolve())
    except (DemoFailure, AssertionError, OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as e:
        print(f"\ndemo FAILED: {e}", file=sys.stderr)
        return 1
    print("\ndemo OK: keys created, both signatures verified independently, the policy refused "
          "the out-of-policy request, only the owner's signature loosened the policy, the "
          "disabled key refused, the audit chain and receipts, the key's address and the "
          "attestation document verified.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
