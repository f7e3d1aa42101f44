#!/usr/bin/env python3
"""`make examples`: runs the three example bots against one `ekms sim` and checks what
they print with independent libraries.

1. installs each TypeScript example's packages as its package-lock.json pins them
   (`npm ci`) and builds it (`tsc`), after building clients/typescript when its dist/
   is missing or older than its sources (`make examples` builds it first);
2. starts `ekms sim` in a temporary directory (the installs run while it boots);
3. creates an EVM key whose policy allows exactly the keeper bots' call (chain 1,
   `performUpkeep(bytes)` on the upkeep contract, no value, capped fees) and Flashbots
   signatures (`messages.hex_hash`), and a Solana key that allows exactly the SPL bot's
   `TransferChecked` (the Token program, the USDC mint up to 1.5 USDC, the recipient's
   token account, one signature's fee); a token (`sign`, `keys:read`) for each key, in a
   file;
4. runs examples/typescript/keeper-bot, examples/python/keeper_bot.py and
   examples/solana/spl-bot with EKMS_SOCKET, EKMS_TOKEN_FILE and EKMS_KEY_ID /
   EKMS_SOLANA_KEY_ID, as a user would against their own sim;
5. verifies each output: eth-account recovers the key's address from the raw transaction
   and from the Flashbots signature over the printed body, the transaction is the
   performUpkeep call, the two keeper bots printed the same bytes; solders verifies the
   Solana signature over the message and decodes the TransferChecked; and the keys refuse
   a payload one step beyond the bots' (another selector, some value, another message,
   one more token unit), each with its rule;
6. checks that the README's "Use it from your code" lines are the examples' lines
   (`README:begin` / `README:end` regions);
7. stops the sim, whatever happened.

Exits non-zero on any failure. Needs Node.js >= 20.18 with npm, the binaries (`make
build`) and the venv (`make venv`):

    EKMS_BIN_DIR=target/debug .venv/bin/python examples/run_examples.py
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import rlp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CLIENT_TS = REPO / "clients" / "typescript"
sys.path.insert(0, str(REPO / "e2e"))

from ekms_e2e import Client, Sim, evm_eip1559  # noqa: E402

#: Seconds the sim may take to become healthy ($EKMS_E2E_START_TIMEOUT, as in e2e/).
START_TIMEOUT = float(os.environ.get("EKMS_E2E_START_TIMEOUT", "90"))

# What the examples sign (the constants of their sources).
UPKEEP = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
PERFORM_UPKEEP = keccak(text="performUpkeep(bytes)")[:4]
PERFORM_DATA = (42).to_bytes(32, "big")
KEEPER_GAS = 250_000
KEEPER_MAX_FEE_PER_GAS = 30 * 10**9
TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
USDC = Pubkey.from_string("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")
SPL_RECIPIENT = Pubkey.from_string("GgBaCs3NCBuZN12kCJgAW63ydqohFkHEdfdEXBPzLHq1")
SPL_AMOUNT = 1_500_000
SPL_DECIMALS = 6
#: SPL Token instruction tag of TransferChecked.
TRANSFER_CHECKED = 12


def associated_token_account(owner: Pubkey, mint: Pubkey) -> Pubkey:
    return Pubkey.find_program_address([bytes(owner), bytes(TOKEN_PROGRAM), bytes(mint)], ATA_PROGRAM)[0]


SPL_DESTINATION = associated_token_account(SPL_RECIPIENT, USDC)

#: The keeper bots' key: their performUpkeep call and Flashbots signatures, nothing else.
KEEPER_POLICY = {
    "version": 2,
    "enabled": True,
    "allowed_kinds": ["evm_transaction", "evm_message"],
    "evm": {
        "chain_ids": [1],
        "allowed_destinations": [UPKEEP],
        "function_selectors": {UPKEEP: ["0x" + PERFORM_UPKEEP.hex()]},
        "max_value_wei": "0",
        "max_fee_wei": str(KEEPER_GAS * KEEPER_MAX_FEE_PER_GAS),
        "max_fee_per_gas": str(KEEPER_MAX_FEE_PER_GAS),
        "gas_limit": KEEPER_GAS,
        "messages": {"hex_hash": True},
    },
}

#: The SPL bot's key: 1.5 USDC to the recipient's token account, one signature's fee.
SPL_POLICY = {
    "version": 2,
    "enabled": True,
    "allowed_kinds": ["solana_transaction"],
    "solana": {
        "allowed_programs": [str(TOKEN_PROGRAM)],
        "system_instructions": [],
        "max_lamports_per_transfer": 0,
        "max_lamports_per_transaction": 0,
        "max_fee_lamports": 5000,
        "allowed_destinations": [str(SPL_DESTINATION)],
        "spl_tokens": {str(USDC): {"max_per_tx": SPL_AMOUNT}},
    },
}


class ExampleFailure(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise ExampleFailure(what)


# ------------------------------------------------------------------------------ npm


@dataclass(frozen=True)
class NodeExample:
    name: str
    directory: Path
    script: str  # built by `npm run build`, run with node

    @property
    def command(self) -> list[str]:
        return ["node", self.script]


KEEPER_TS = NodeExample("keeper-bot (TypeScript, viem)", EXAMPLES / "typescript" / "keeper-bot", "dist/keeper-bot.js")
SPL_TS = NodeExample("spl-bot (TypeScript, @solana/kit)", EXAMPLES / "solana" / "spl-bot", "dist/spl-bot.js")
KEEPER_PY = EXAMPLES / "python" / "keeper_bot.py"
NODE_EXAMPLES = (KEEPER_TS, SPL_TS)


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Runs a command; its stdout, or ExampleFailure with its output."""
    p = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        raise ExampleFailure(
            f"`{' '.join(argv)}` in {cwd.relative_to(REPO)} exited with {p.returncode}:\n{p.stdout}{p.stderr}"
        )
    return p.stdout


def npm_ci_and_build(directory: Path) -> None:
    run(["npm", "ci", "--no-audit", "--no-fund"], directory)
    run(["npm", "run", "build"], directory)


def client_is_built() -> bool:
    """clients/typescript/dist is there and newer than every source and the lockfile."""
    try:
        built = (CLIENT_TS / "dist" / "index.js").stat().st_mtime
    except FileNotFoundError:
        return False
    sources = [CLIENT_TS / "package.json", CLIENT_TS / "package-lock.json", *(CLIENT_TS / "src").glob("*.ts")]
    return all(p.stat().st_mtime <= built for p in sources)


def prepare_node_examples() -> None:
    """The client's dist/ (the examples install it from there), then each example."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise ExampleFailure("node and npm are needed (Node.js >= 20.18)")
    if not client_is_built():
        npm_ci_and_build(CLIENT_TS)
    with ThreadPoolExecutor(len(NODE_EXAMPLES)) as pool:
        for f in [pool.submit(npm_ci_and_build, e.directory) for e in NODE_EXAMPLES]:
            f.result()


# --------------------------------------------------------------------------- outputs


def parse_output(text: str) -> dict[str, str]:
    """`name: value` lines (the value may contain ': ')."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name] = value
    return out


def verify_keeper(out: dict[str, str], address: str) -> None:
    """The raw transaction is the performUpkeep call signed by `address`; the Flashbots
    header is `address:signature` of keccak256(body) as hex text, and the body carries
    the transaction."""
    check(out.get("address") == address, f"keeper bot: address {out.get('address')}, the key's is {address}")
    raw = out["signed transaction"]
    check(Account.recover_transaction(raw) == address, "keeper bot: the transaction is not signed by the key")
    signed = bytes.fromhex(raw[2:])
    check(signed[0] == 2, "keeper bot: not an EIP-1559 transaction")
    chain_id, _nonce, _tip, max_fee, gas, to, value, data, access_list = rlp.decode(signed[1:])[:9]
    check(int.from_bytes(chain_id, "big") == 1, "keeper bot: chain id")
    check(to_checksum_address(to) == UPKEEP, f"keeper bot: to {to.hex()}")
    check(value == b"" and access_list == [], "keeper bot: value or access list")
    check(int.from_bytes(gas, "big") * int.from_bytes(max_fee, "big") <= KEEPER_GAS * KEEPER_MAX_FEE_PER_GAS,
          "keeper bot: fees over the policy's cap")
    check(data[:4] == PERFORM_UPKEEP and abi_decode(["bytes"], data[4:]) == (PERFORM_DATA,),
          f"keeper bot: call data {data.hex()} is not performUpkeep(0x…2a)")
    header_address, _, signature = out["X-Flashbots-Signature"].partition(":")
    check(header_address == address, f"keeper bot: Flashbots header names {header_address}")
    body = out["flashbots body"]
    check(json.loads(body)["params"][0]["txs"] == [raw], "keeper bot: the bundle does not carry the transaction")
    message = encode_defunct(text="0x" + keccak(text=body).hex())
    check(Account.recover_message(message, signature=signature) == address,
          "keeper bot: the Flashbots signature does not recover to the key")


def verify_spl(out: dict[str, str], address: str) -> None:
    """The wire transaction's only signature is the key's, over its message, and the
    message is one TransferChecked of 1.5 USDC from the key's token account to the
    recipient's, with the key as fee payer and authority."""
    check(out.get("address") == address, f"spl bot: address {out.get('address')}, the key's is {address}")
    tx = VersionedTransaction.from_bytes(base64.b64decode(out["signed transaction (base64)"]))
    key = Pubkey.from_string(address)
    msg = tx.message
    check(len(tx.signatures) == 1 and msg.account_keys[0] == key, "spl bot: the key is not the only signer")
    check(tx.signatures[0].verify(key, to_bytes_versioned(msg)), "spl bot: the signature does not verify")
    check(tx.signatures[0] == Signature.from_string(out["signature"]), "spl bot: the printed signature differs")
    (ix,) = msg.instructions
    accounts = [msg.account_keys[i] for i in ix.accounts]
    check(msg.account_keys[ix.program_id_index] == TOKEN_PROGRAM, "spl bot: not the Token program")
    check(accounts == [associated_token_account(key, USDC), USDC, SPL_DESTINATION, key],
          f"spl bot: TransferChecked accounts {accounts}")
    data = bytes(ix.data)
    check(data == bytes([TRANSFER_CHECKED]) + SPL_AMOUNT.to_bytes(8, "little") + bytes([SPL_DECIMALS]),
          f"spl bot: instruction data {data.hex()} is not TransferChecked(1.5 USDC)")


# ---------------------------------------------------------------------------- README


REGION = re.compile(r"^[ \t]*(?://|#) README:begin (\S+)\n(.*?)^[ \t]*(?://|#) README:end \1\n", re.M | re.S)
EXAMPLE_SOURCES = (
    KEEPER_TS.directory / "src" / "keeper-bot.ts",
    KEEPER_PY,
    SPL_TS.directory / "src" / "spl-bot.ts",
)


def readme_regions() -> dict[str, str]:
    """The `README:begin NAME` … `README:end NAME` regions of the example sources."""
    regions = {}
    for path in EXAMPLE_SOURCES:
        for m in REGION.finditer(path.read_text()):
            regions[m.group(1)] = textwrap.dedent(m.group(2))
    return regions


def readme_section(readme: str) -> str:
    m = re.search(r"^## Use it from your code\n(.*?)(?=^## )", readme, re.M | re.S)
    if m is None:
        raise ExampleFailure("README.md has no '## Use it from your code' section")
    return m.group(1)


def check_readme(readme_path: Path = REPO / "README.md") -> None:
    """Every region appears verbatim in the README's "Use it from your code" section, and
    every line of that section's ts and python blocks is a line of an example: the README shows the
    lines the examples run."""
    section = readme_section(readme_path.read_text())
    regions = readme_regions()
    check(len(regions) >= 6, f"expected the imports and the code of three examples, found {sorted(regions)}")
    for name, text in regions.items():
        check(text in section, f"README.md does not show region {name!r} of the examples verbatim:\n{text}")
    example_lines = {line.strip() for p in EXAMPLE_SOURCES for line in p.read_text().splitlines()}
    for block in re.findall(r"^```(?:ts|python)\n(.*?)^```", section, re.M | re.S):
        for line in block.splitlines():
            check(not line.strip() or line.strip() in example_lines,
                  f"README.md shows a line that no example runs: {line!r}")


# ------------------------------------------------------------------------------- run


def create_bot(admin: Client, algorithm: str, policy: dict, name: str, workdir: Path) -> tuple[dict, Path]:
    """A key with `policy` and a file with a token (`sign`, `keys:read`) for it only."""
    key = admin.create_key(algorithm, policy=policy, label=name)
    r = admin.create_token(name, ["sign", "keys:read"], [key["key_id"]])
    check(r.status == 201, f"creating the token of {name}: {r}")
    token_file = workdir / f"{name}.token"
    token_file.touch(mode=0o600)
    token_file.write_text(r.json["token"] + "\n")
    return key, token_file


def run_examples(sim: Sim, workdir: Path, log=print) -> dict[str, dict[str, str]]:
    """Creates the keys and runs the three examples against `sim`; checks and returns
    their parsed outputs by name. The node examples must be built."""
    admin = sim.client
    keeper, keeper_token = create_bot(admin, "secp256k1", KEEPER_POLICY, "keeper-bot", workdir)
    spl, spl_token = create_bot(admin, "ed25519", SPL_POLICY, "spl-bot", workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EKMS_")}
    env["EKMS_SOCKET"] = str(sim.socket_path)
    keeper_env = {**env, "EKMS_TOKEN_FILE": str(keeper_token), "EKMS_KEY_ID": keeper["key_id"]}
    spl_env = {**env, "EKMS_TOKEN_FILE": str(spl_token), "EKMS_SOLANA_KEY_ID": spl["key_id"]}

    outputs = {}
    for name, argv, cwd, env_, verify, key in (
        (KEEPER_TS.name, KEEPER_TS.command, KEEPER_TS.directory, keeper_env, verify_keeper, keeper),
        ("keeper_bot.py (Python, web3.py)", [sys.executable, str(KEEPER_PY)], REPO, keeper_env, verify_keeper, keeper),
        (SPL_TS.name, SPL_TS.command, SPL_TS.directory, spl_env, verify_spl, spl),
    ):
        text = run(argv, cwd, env_)
        log(f"== {name}\n{text.rstrip()}")
        out = parse_output(text)
        try:
            verify(out, key["address"])
        except (KeyError, ValueError) as e:
            raise ExampleFailure(f"{name}: unexpected output ({e!r}):\n{text}") from e
        log("   verified: signed by the key, the payload is the example's")
        outputs[name] = out
    # Deterministic signatures (RFC 6979) over the same transaction and body.
    ts, py = outputs[KEEPER_TS.name], outputs["keeper_bot.py (Python, web3.py)"]
    check(ts == py, f"the TypeScript and Python keeper bots printed different things:\n{ts}\n{py}")
    log("   the TypeScript and Python keeper bots signed the same bytes")
    check_refusals(admin, keeper, spl, outputs[SPL_TS.name])
    log("   one step beyond (another selector, some value, another message, one more token unit): refused")
    return outputs


def check_refusals(admin: Client, keeper: dict, spl: dict, spl_out: dict[str, str]) -> None:
    """The policies allow exactly the bots' payloads: one step beyond is refused."""
    call = PERFORM_UPKEEP + abi_encode(["bytes"], [PERFORM_DATA])
    tx = dict(nonce=7, gas=KEEPER_GAS, max_fee=KEEPER_MAX_FEE_PER_GAS, max_priority_fee=2 * 10**9)
    msg = VersionedTransaction.from_bytes(base64.b64decode(spl_out["signed transaction (base64)"])).message
    amount = SPL_AMOUNT.to_bytes(8, "little")
    message = to_bytes_versioned(msg)
    check(message.count(amount) == 1, "spl bot: the amount is not found once in the message")
    cases = [
        (keeper, "evm_transaction", "0x" + evm_eip1559(1, UPKEEP, 0, data=call, **tx).hex(), None),
        (keeper, "evm_transaction", "0x" + evm_eip1559(1, UPKEEP, 1, data=call, **tx).hex(), "evm.max_value_wei"),
        (keeper, "evm_transaction", "0x" + evm_eip1559(1, UPKEEP, 0, data=keccak(text="checkUpkeep(bytes)")[:4]
                                                       + call[4:], **tx).hex(), "evm.function_selectors"),
        (keeper, "evm_message", "0x" + b"hello".hex(), "evm.messages"),
        (spl, "solana_transaction", base64.b64encode(message).decode(), None),
        (spl, "solana_transaction",
         base64.b64encode(message.replace(amount, (SPL_AMOUNT + 1).to_bytes(8, "little"))).decode(),
         "solana.spl_tokens.max_per_tx"),
    ]
    for key, kind, payload, rule in cases:
        r = admin.sign(key["key_id"], kind, payload)
        if rule is None:
            check(r.status == 200, f"the bots' own payload ({kind}) refused: {r}")
        else:
            check(r.status == 403 and r.error.get("rule") == rule, f"expected a refusal by {rule}: {r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (sim state, logs)")
    parser.add_argument("--write-policies", metavar="DIR", type=Path,
                        help="only write the keys' policies to DIR/keeper-policy.json and DIR/spl-policy.json")
    args = parser.parse_args(argv)
    if args.write_policies:
        for name, policy in (("keeper-policy.json", KEEPER_POLICY), ("spl-policy.json", SPL_POLICY)):
            (args.write_policies / name).write_text(json.dumps(policy, indent=2) + "\n")
        return 0
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ekms-examples-"))
    sim = Sim(workdir / "state")
    ok = False
    try:
        check_readme()
        sim.start()
        prepare_node_examples()  # while the sim boots
        sim.wait_ready(START_TIMEOUT)
        run_examples(sim, workdir)
        ok = True
    except ExampleFailure as e:
        print(f"examples: FAILED: {e}", file=sys.stderr)
    finally:
        sim.stop()
        leftover = sim.leftover_pids()
        if leftover:
            print(f"examples: processes left after the sim stopped: {leftover}", file=sys.stderr)
            ok = False
        if not ok and sim.proc is not None:
            print(sim.log_tail(), file=sys.stderr)
        if args.keep or not ok:
            print(f"examples: state and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if ok:
        print(f"examples: all three signed and verified ({time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
