#!/usr/bin/env python3
"""A keeper bot whose key stays in enclave-kms (issue 11, examples), with web3.py and
ekms_client's EkmsAccount (an eth-account LocalAccount): builds an EIP-1559 call of
`performUpkeep(bytes)` from the contract's ABI, signs it, and signs the Flashbots
`X-Flashbots-Signature` header of the bundle that carries it. The same bot as
examples/typescript/keeper-bot, and it signs the same transaction.

No network: the Web3 instance has no provider call to make (every transaction field is
given), and nonce, fees and block number are fixed here, where a real bot would read them
from its node. Prints what it would send.

    EKMS_SOCKET=<state-dir>/ekms.sock EKMS_TOKEN_FILE=bot.token EKMS_KEY_ID=<key id> \
        .venv/bin/python examples/python/keeper_bot.py

(EKMS_TOKEN instead of EKMS_TOKEN_FILE works too.) Needs web3 and ekms_client
(`make venv`). The key's policy must allow the call and Flashbots signatures:
`examples/run_examples.py --write-policies DIR` writes one (keeper-policy.json;
docs/POLICY.md explains it).
"""

import os
import sys

# README:begin keeper-bot-py-imports
import json

from eth_account.messages import encode_defunct
from web3 import Web3

from ekms_client import EkmsAccount, EkmsClient
# README:end keeper-bot-py-imports

#: The upkeep contract this bot keeps (Chainlink's AutomationCompatibleInterface).
UPKEEP = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
UPKEEP_ABI = [{
    "type": "function", "name": "performUpkeep", "stateMutability": "nonpayable",
    "inputs": [{"name": "performData", "type": "bytes"}], "outputs": [],
}]
# From the node, in a real bot (eth_getTransactionCount, eth_feeHistory, eth_blockNumber).
nonce = 7
block_number = 21_000_000
perform_data = (42).to_bytes(32, "big")

try:
    socket_path = os.environ["EKMS_SOCKET"]
    key_id = os.environ["EKMS_KEY_ID"]
except KeyError as e:
    sys.exit(f"set {e.args[0]} (see the top of this file)")
token_file = os.environ.get("EKMS_TOKEN_FILE")  # None: EkmsClient uses $EKMS_TOKEN
if token_file is None and not os.environ.get("EKMS_TOKEN"):
    sys.exit("set EKMS_TOKEN_FILE or EKMS_TOKEN (see the top of this file)")
w3 = Web3()  # no provider needed: nothing here asks a node

# README:begin keeper-bot-py
ekms = EkmsClient(socket_path, token_file=token_file)
account = EkmsAccount(ekms, key_id)

upkeep = w3.eth.contract(address=UPKEEP, abi=UPKEEP_ABI)
tx = upkeep.functions.performUpkeep(perform_data).build_transaction({
    "type": 2, "chainId": 1, "nonce": nonce, "value": 0, "gas": 250_000,
    "maxFeePerGas": Web3.to_wei(30, "gwei"), "maxPriorityFeePerGas": Web3.to_wei(2, "gwei"),
})
raw = account.sign_transaction(tx).raw_transaction.to_0x_hex()

# Flashbots: X-Flashbots-Signature is `address:personal_sign(keccak256(body) as hex text)`.
body = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "eth_sendBundle", "params": [{"txs": [raw], "blockNumber": hex(block_number + 1)}],
}, separators=(",", ":"))
signed_body = account.sign_message(encode_defunct(text=Web3.keccak(text=body).to_0x_hex()))
flashbots_signature = f"{account.address}:{signed_body.signature.to_0x_hex()}"
# README:end keeper-bot-py

print(f"address: {account.address}")
print(f"signed transaction: {raw}")
print(f"flashbots body: {body}")
print(f"X-Flashbots-Signature: {flashbots_signature}")
