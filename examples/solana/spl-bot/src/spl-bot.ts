// A Solana bot whose key stays in enclave-kms (issue 11, examples): pays 1.5 USDC from
// its associated token account to a recipient's with an SPL Token `TransferChecked`,
// built with @solana/kit and @solana-program/token, signed by the @enclave-kms/client kit
// signer (the fee payer and the token account's owner). No network: the blockhash is
// fixed here, where a real bot would ask its node (getLatestBlockhash); it prints the
// base64 wire transaction it would send (sendTransaction).
//
//   EKMS_SOCKET=<state-dir>/ekms.sock EKMS_TOKEN_FILE=bot.token EKMS_SOLANA_KEY_ID=<key id> npm start
//
// (EKMS_TOKEN instead of EKMS_TOKEN_FILE works too.) The key's policy must allow the
// Token program, this mint and the recipient's token account: `examples/run_examples.py
// --write-policies DIR` writes one (spl-policy.json; docs/POLICY.md explains it).

// README:begin spl-bot-imports
import { EkmsClient } from "@enclave-kms/client";
import { ekmsSolanaSigner } from "@enclave-kms/client/solana-kit";
import { findAssociatedTokenPda, getTransferCheckedInstruction, TOKEN_PROGRAM_ADDRESS } from "@solana-program/token";
import {
  address,
  appendTransactionMessageInstruction,
  blockhash,
  createTransactionMessage,
  getBase64EncodedWireTransaction,
  getSignatureFromTransaction,
  pipe,
  setTransactionMessageFeePayerSigner,
  setTransactionMessageLifetimeUsingBlockhash,
  signTransactionMessageWithSigners,
} from "@solana/kit";
// README:end spl-bot-imports

/** USDC (6 decimals). */
const MINT = address("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");
const DECIMALS = 6;
/** Whom the bot pays (a wallet; the tokens go to its associated token account). */
const RECIPIENT = address("GgBaCs3NCBuZN12kCJgAW63ydqohFkHEdfdEXBPzLHq1");
// From the node, in a real bot (getLatestBlockhash).
const latestBlockhash = { blockhash: blockhash("EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"), lastValidBlockHeight: 300_000_000n };

const { EKMS_SOCKET: socketPath, EKMS_TOKEN_FILE: tokenFile, EKMS_SOLANA_KEY_ID: keyId } = process.env;
const token = tokenFile ? undefined : process.env["EKMS_TOKEN"];
if (!socketPath || !keyId || !(tokenFile || token)) {
  throw new Error("set EKMS_SOCKET, EKMS_SOLANA_KEY_ID and EKMS_TOKEN_FILE (or EKMS_TOKEN): see the top of this file");
}

// README:begin spl-bot
const client = new EkmsClient({ socketPath, tokenFile, token });
const signer = await ekmsSolanaSigner({ client, keyId });

const [source] = await findAssociatedTokenPda({ mint: MINT, owner: signer.address, tokenProgram: TOKEN_PROGRAM_ADDRESS });
const [destination] = await findAssociatedTokenPda({ mint: MINT, owner: RECIPIENT, tokenProgram: TOKEN_PROGRAM_ADDRESS });
const transfer = getTransferCheckedInstruction({
  source, mint: MINT, destination, authority: signer, amount: 1_500_000n, decimals: DECIMALS,
});

const tx = await signTransactionMessageWithSigners(pipe(
  createTransactionMessage({ version: 0 }),
  (m) => setTransactionMessageFeePayerSigner(signer, m),
  (m) => setTransactionMessageLifetimeUsingBlockhash(latestBlockhash, m),
  (m) => appendTransactionMessageInstruction(transfer, m),
));
const wire = getBase64EncodedWireTransaction(tx);
// README:end spl-bot

console.log(`address: ${signer.address}`);
console.log(`destination token account: ${destination}`);
console.log(`signature: ${getSignatureFromTransaction(tx)}`);
console.log(`signed transaction (base64): ${wire}`);
