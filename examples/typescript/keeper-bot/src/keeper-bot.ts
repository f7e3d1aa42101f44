// A keeper bot whose key stays in enclave-kms (issue 11, examples): builds an EIP-1559
// call of `performUpkeep(bytes)` with viem, signs it with the @enclave-kms/client viem
// account, and signs the Flashbots `X-Flashbots-Signature` header of the bundle that
// carries it. No network: nonce, fees and block number are fixed here, where a real bot
// would read them from its node; it prints what it would send.
//
//   EKMS_SOCKET=<state-dir>/ekms.sock EKMS_TOKEN_FILE=bot.token EKMS_KEY_ID=<key id> npm start
//
// (EKMS_TOKEN instead of EKMS_TOKEN_FILE works too.) The key's policy must allow the call
// and Flashbots signatures: `examples/run_examples.py --write-policies DIR` writes one
// (keeper-policy.json; docs/POLICY.md explains it).

// README:begin keeper-bot-ts-imports
import { EkmsClient } from "@enclave-kms/client";
import { ekmsAccount } from "@enclave-kms/client/viem";
import { encodeFunctionData, keccak256, parseAbi, parseGwei, toHex, type Address, type Hex } from "viem";
// README:end keeper-bot-ts-imports

/** The upkeep contract this bot keeps (Chainlink's `AutomationCompatibleInterface`). */
const UPKEEP: Address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const upkeepAbi = parseAbi(["function performUpkeep(bytes performData)"]);
// From the node, in a real bot (eth_getTransactionCount, eth_feeHistory, eth_blockNumber).
const nonce = 7;
const blockNumber = 21_000_000n;
const performData: Hex = "0x000000000000000000000000000000000000000000000000000000000000002a";

const { EKMS_SOCKET: socketPath, EKMS_TOKEN_FILE: tokenFile, EKMS_KEY_ID: keyId } = process.env;
const token = tokenFile ? undefined : process.env["EKMS_TOKEN"];
if (!socketPath || !keyId || !(tokenFile || token)) {
  throw new Error("set EKMS_SOCKET, EKMS_KEY_ID and EKMS_TOKEN_FILE (or EKMS_TOKEN): see the top of this file");
}

// README:begin keeper-bot-ts
const client = new EkmsClient({ socketPath, tokenFile, token });
const account = await ekmsAccount({ client, keyId });

const raw = await account.signTransaction({
  type: "eip1559", chainId: 1, nonce, to: UPKEEP, value: 0n,
  data: encodeFunctionData({ abi: upkeepAbi, functionName: "performUpkeep", args: [performData] }),
  gas: 250_000n, maxFeePerGas: parseGwei("30"), maxPriorityFeePerGas: parseGwei("2"),
});

// Flashbots: X-Flashbots-Signature is `address:personal_sign(keccak256(body) as hex text)`.
const body = JSON.stringify({
  jsonrpc: "2.0", id: 1, method: "eth_sendBundle", params: [{ txs: [raw], blockNumber: toHex(blockNumber + 1n) }],
});
const flashbotsSignature = `${account.address}:${await account.signMessage({ message: keccak256(toHex(body)) })}`;
// README:end keeper-bot-ts

console.log(`address: ${account.address}`);
console.log(`signed transaction: ${raw}`);
console.log(`flashbots body: ${body}`);
console.log(`X-Flashbots-Signature: ${flashbotsSignature}`);
