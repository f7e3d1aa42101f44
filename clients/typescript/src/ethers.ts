// An ethers v6 signer whose key lives in enclave-kms.

import {
  AbstractSigner,
  Signature,
  Transaction,
  TypedDataEncoder,
  assert,
  assertArgument,
  copyRequest,
  getAddress,
  hexlify,
  makeError,
  resolveAddress,
  resolveProperties,
  toUtf8Bytes,
  type Provider,
  type TransactionLike,
  type TransactionRequest,
  type TypedDataDomain,
  type TypedDataField,
} from "ethers";

import { EkmsApiError, EkmsPolicyDeniedError, EkmsUnauthorizedError, type EkmsClient } from "./client.js";

type Action = "signMessage" | "signTransaction" | "signTypedData" | "unknown";

/**
 * An enclave-kms failure as an ethers error (`isError(e, code)` works):
 * - a policy refusal: `ACTION_REJECTED`, `reason: "rejected"`, the rule in the message,
 *   in `info.rule` and in `rule`;
 * - a refused token (401/403): `ACTION_REJECTED`, `info.ekmsCode` `unauthenticated`,
 *   `forbidden`, …;
 * - another API error: `UNSUPPORTED_OPERATION` (4xx) or `SERVER_ERROR` (5xx), `info.ekmsCode`;
 * - the parent unreachable: `NETWORK_ERROR`.
 */
export function asEthersError(e: unknown, action: Action): unknown {
  if (e instanceof EkmsPolicyDeniedError) {
    const err = makeError(`enclave-kms refused to sign: policy rule ${e.rule}: ${e.apiMessage}`, "ACTION_REJECTED", {
      action,
      reason: "rejected",
      info: { ekmsCode: e.code, status: e.status, rule: e.rule },
    });
    return withCause(Object.assign(err, { rule: e.rule }), e);
  }
  if (e instanceof EkmsUnauthorizedError) {
    return withCause(makeError(`enclave-kms refused the API token: ${e.code}: ${e.apiMessage}`, "ACTION_REJECTED", {
      action,
      reason: "rejected",
      info: { ekmsCode: e.code, status: e.status },
    }), e);
  }
  if (e instanceof EkmsApiError) {
    if (e.status >= 500) {
      return withCause(makeError(`enclave-kms: ${e.code}: ${e.apiMessage}`, "SERVER_ERROR", {
        request: `enclave-kms ${action}`,
        info: { ekmsCode: e.code, status: e.status },
      }), e);
    }
    return withCause(makeError(`enclave-kms: ${e.code}: ${e.apiMessage}`, "UNSUPPORTED_OPERATION", {
      operation: action,
      info: { ekmsCode: e.code, status: e.status },
    }), e);
  }
  if (e instanceof Error && e.name === "EkmsTransportError") {
    return withCause(makeError(e.message, "NETWORK_ERROR", { event: action }), e);
  }
  return e;
}

/** The client's error as the ethers error's `error` (kept out of its message). */
function withCause<T extends Error>(err: T, cause: Error): T {
  Object.defineProperty(err, "error", { value: cause, enumerable: false, writable: true, configurable: true });
  return err;
}

async function ethersErrors<T>(action: Action, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw asEthersError(e, action);
  }
}

/**
 * An ethers v6 `Signer` for the enclave-kms key `keyId` (a secp256k1 key). Give
 * `address` when the token may not read the key (`keys:read`); otherwise `getAddress`
 * reads it once.
 */
export class EkmsSigner extends AbstractSigner {
  readonly client: EkmsClient;
  readonly keyId: string;
  #address: Promise<string> | undefined;

  constructor(client: EkmsClient, keyId: string, provider?: Provider | null, address?: string) {
    super(provider ?? null);
    this.client = client;
    this.keyId = keyId;
    if (address !== undefined) this.#address = Promise.resolve(getAddress(address));
  }

  getAddress(): Promise<string> {
    if (this.#address === undefined) {
      const p = ethersErrors("unknown", async () => {
        const key = await this.client.getKey(this.keyId);
        assert(key.algorithm === "secp256k1", `enclave-kms: key ${this.keyId} is ${key.algorithm}, not secp256k1`, "UNSUPPORTED_OPERATION", {
          operation: "getAddress",
        });
        return getAddress(key.address);
      });
      p.catch(() => {
        if (this.#address === p) this.#address = undefined;
      });
      this.#address = p;
    }
    return this.#address;
  }

  connect(provider: Provider | null): EkmsSigner {
    const s = new EkmsSigner(this.client, this.keyId, provider);
    s.#address = this.#address;
    return s;
  }

  /** Signs a complete transaction (as ethers' `Wallet` does, nothing is populated
   * here; `sendTransaction` populates through the provider first). */
  async signTransaction(tx: TransactionRequest): Promise<string> {
    tx = copyRequest(tx);
    const { to, from } = await resolveProperties({
      to: tx.to ? resolveAddress(tx.to, this) : undefined,
      from: tx.from ? resolveAddress(tx.from, this) : undefined,
    });
    if (to != null) tx.to = to;
    if (from != null) tx.from = from;
    if (tx.from != null) {
      assertArgument(getAddress(tx.from as string) === (await this.getAddress()), "transaction from address mismatch", "tx.from", tx.from);
      delete tx.from;
    }
    const btx = Transaction.from(tx as TransactionLike<string>);
    const r = await ethersErrors("signTransaction", () => this.client.sign(this.keyId, "evm_transaction", btx.unsignedSerialized));
    btx.signature = Signature.from({ r: r.signature.r, s: r.signature.s, yParity: r.signature.y_parity as 0 | 1 });
    assert(
      btx.serialized.toLowerCase() === r.signed_transaction.toLowerCase(),
      "enclave-kms: the enclave's signed transaction differs from ethers' serialization",
      "BAD_DATA",
      { value: r.signed_transaction },
    );
    return btx.serialized;
  }

  /** EIP-191 `personal_sign` (a string is signed as its UTF-8 bytes, as ethers does). */
  async signMessage(message: string | Uint8Array): Promise<string> {
    const bytes = typeof message === "string" ? toUtf8Bytes(message) : message;
    const r = await ethersErrors("signMessage", () => this.client.sign(this.keyId, "evm_message", hexlify(bytes)));
    return r.signature;
  }

  /** EIP-712: the full JSON (`TypedDataEncoder.getPayload`) is sent; the enclave hashes it. */
  async signTypedData(
    domain: TypedDataDomain,
    types: Record<string, Array<TypedDataField>>,
    value: Record<string, any>,
  ): Promise<string> {
    const populated = await TypedDataEncoder.resolveNames(domain, types, value, async (name: string) => {
      assert(this.provider != null, "cannot resolve ENS names without a provider", "UNSUPPORTED_OPERATION", {
        operation: "resolveName",
        info: { name },
      });
      const address = await this.provider.resolveName(name);
      assert(address != null, "unconfigured ENS name", "UNCONFIGURED_NAME", { value: name });
      return address;
    });
    const payload = TypedDataEncoder.getPayload(populated.domain, types, populated.value);
    const r = await ethersErrors("signTypedData", () => this.client.sign(this.keyId, "evm_typed_data", payload));
    return r.signature;
  }
}
