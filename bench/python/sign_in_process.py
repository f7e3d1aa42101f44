"""In-process signing in Python, for the comparison rows of `ekms-bench` (issue 10):
what an application that keeps its key in the bot pays per signature with the
libraries our users write with. Prints one JSON object on stdout:
{"eth_account": [rate per round, ...], "solders": [...]} in signatures per second.

eth-account: `Account.sign_transaction` of an EIP-1559 ether transfer (the shape the
benchmark sends the API). solders: `Keypair.sign_message` of a legacy transaction
message with one System Program transfer, placed in a `Transaction` (what
`Transaction(...)` with a keypair does). Usage: sign_in_process.py ROUNDS ROUND_SECS
"""

from __future__ import annotations

import json
import sys
import time


def rate(fn, secs: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + secs
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> int:
    rounds = int(sys.argv[1])
    secs = float(sys.argv[2])
    from eth_account import Account
    from solders.hash import Hash
    from solders.keypair import Keypair
    from solders.message import Message
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    acct = Account.from_key(bytes([0x42] * 32))
    tx = {
        "type": 2,
        "chainId": 1,
        "nonce": 0,
        "maxPriorityFeePerGas": 1_000_000_000,
        "maxFeePerGas": 30_000_000_000,
        "gas": 21_000,
        "to": "0x000000000000000000000000000000000000dEaD",
        "value": 1,
        "data": b"",
    }
    kp = Keypair.from_seed(bytes([0x43] * 32))
    ix = transfer(TransferParams(from_pubkey=kp.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=1))
    message = Message.new_with_blockhash([ix], kp.pubkey(), Hash.default())

    def sign_solana():
        Transaction([kp], message, Hash.default())

    out = {"eth_account": [], "solders": []}
    # One warm-up round each (imports, caches), then the measured rounds.
    rate(lambda: acct.sign_transaction(tx), secs)
    rate(sign_solana, secs)
    for _ in range(rounds):
        out["eth_account"].append(rate(lambda: acct.sign_transaction(tx), secs))
        out["solders"].append(rate(sign_solana, secs))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
