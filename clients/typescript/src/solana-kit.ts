// A @solana/kit `TransactionPartialSigner` whose key lives in enclave-kms.

import {
  address as toAddress,
  getBase58Encoder,
  type Address,
  type SignatureBytes,
  type SignatureDictionary,
  type Transaction,
  type TransactionPartialSigner,
  type TransactionPartialSignerConfig,
} from "@solana/kit";

import { toBase64, type Bytes, type EkmsClient } from "./client.js";

export interface EkmsSolanaSignerOptions {
  client: EkmsClient;
  keyId: string;
  /** The key's base58 address. Without it, it is read with `GET /v1/keys/{keyId}` (a
   * `keys:read` token); a `sign`-only token must give it. */
  address?: string;
}

/** The enclave's base58 signature as 64 bytes. */
export function signatureBytesFromBase58(signature: string): SignatureBytes {
  const bytes = getBase58Encoder().encode(signature);
  if (bytes.length !== 64) throw new Error(`enclave-kms: a Solana signature of ${bytes.length} bytes, not 64`);
  return new Uint8Array(bytes) as SignatureBytes;
}

/** Signs a serialized Solana message (legacy or v0) with the key: the 64-byte signature.
 * Errors are the client's (`EkmsPolicyDeniedError` with `rule`, `EkmsUnauthorizedError`). */
export async function signSolanaMessage(
  client: EkmsClient,
  keyId: string,
  messageBytes: Bytes,
  signal?: AbortSignal,
): Promise<SignatureBytes> {
  const r = await client.sign(keyId, "solana_transaction", toBase64(messageBytes), signal);
  return signatureBytesFromBase58(r.signature);
}

/**
 * A `TransactionPartialSigner` for the enclave-kms key `keyId` (an ed25519 key): each
 * transaction's `messageBytes` goes to the enclave as `solana_transaction`; the policy
 * judges the decoded message. Use it wherever kit takes a signer
 * (`setTransactionMessageFeePayerSigner`, `signTransactionMessageWithSigners`, …).
 * A refusal rejects with `EkmsPolicyDeniedError` (`rule`, the rule in the message) or
 * `EkmsUnauthorizedError`.
 */
export async function ekmsSolanaSigner({
  client,
  keyId,
  address,
}: EkmsSolanaSignerOptions): Promise<TransactionPartialSigner> {
  if (address === undefined) {
    const key = await client.getKey(keyId);
    if (key.algorithm !== "ed25519") throw new Error(`enclave-kms: key ${keyId} is ${key.algorithm}, not ed25519`);
    address = key.address;
  }
  const addr: Address = toAddress(address);
  return Object.freeze({
    address: addr,
    async signTransactions(
      transactions: readonly Transaction[],
      config?: TransactionPartialSignerConfig,
    ): Promise<readonly SignatureDictionary[]> {
      const out: SignatureDictionary[] = [];
      // One at a time: a refusal stops the batch before the next is signed.
      for (const tx of transactions) {
        config?.abortSignal?.throwIfAborted();
        const sig = await signSolanaMessage(client, keyId, tx.messageBytes, config?.abortSignal);
        out.push(Object.freeze({ [addr]: sig }) as SignatureDictionary);
      }
      return out;
    },
  });
}
