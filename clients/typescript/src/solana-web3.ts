// A @solana/web3.js v1 signer (the `publicKey` / `signTransaction` / `signAllTransactions`
// shape of wallet adapters and Anchor's `Wallet`) whose key lives in enclave-kms.

import { PublicKey, Transaction, VersionedTransaction } from "@solana/web3.js";

import type { EkmsClient } from "./client.js";
import { signSolanaMessage } from "./solana-kit.js";

export interface EkmsWeb3SignerOptions {
  client: EkmsClient;
  keyId: string;
  /** The key's base58 address; without it, read with `GET /v1/keys/{keyId}` (`keys:read`). */
  address?: string;
}

/**
 * Signs `Transaction` and `VersionedTransaction` with the enclave-kms key `keyId` (an
 * ed25519 key): the serialized message goes to the enclave as `solana_transaction`, and
 * the signature is added with `addSignature` (other signers' signatures are kept). The
 * key must be among the transaction's required signers. A refusal rejects with
 * `EkmsPolicyDeniedError` (`rule`) or `EkmsUnauthorizedError`.
 */
export class EkmsWeb3Signer {
  readonly publicKey: PublicKey;
  readonly client: EkmsClient;
  readonly keyId: string;

  private constructor(client: EkmsClient, keyId: string, publicKey: PublicKey) {
    this.client = client;
    this.keyId = keyId;
    this.publicKey = publicKey;
  }

  static async create({ client, keyId, address }: EkmsWeb3SignerOptions): Promise<EkmsWeb3Signer> {
    if (address === undefined) {
      const key = await client.getKey(keyId);
      if (key.algorithm !== "ed25519") throw new Error(`enclave-kms: key ${keyId} is ${key.algorithm}, not ed25519`);
      address = key.address;
    }
    return new EkmsWeb3Signer(client, keyId, new PublicKey(address));
  }

  /** Signs `tx` in place and returns it. A legacy `Transaction` needs its `feePayer` and
   * `recentBlockhash` set. */
  async signTransaction<T extends Transaction | VersionedTransaction>(tx: T): Promise<T> {
    const message = tx instanceof VersionedTransaction ? tx.message.serialize() : tx.serializeMessage();
    const signature = await signSolanaMessage(this.client, this.keyId, message);
    if (tx instanceof VersionedTransaction) tx.addSignature(this.publicKey, signature);
    else tx.addSignature(this.publicKey, Buffer.from(signature));
    return tx;
  }

  /** Signs each transaction in order; a refusal stops at that transaction. */
  async signAllTransactions<T extends Transaction | VersionedTransaction>(txs: T[]): Promise<T[]> {
    for (const tx of txs) await this.signTransaction(tx);
    return txs;
  }
}
