// A viem account (`toAccount`) whose key lives in enclave-kms.

import {
  BaseError,
  custom,
  getAddress,
  getTypesForEIP712Domain,
  hexToBytes,
  isHex,
  serializeTransaction,
  serializeTypedData,
  stringToBytes,
  type Address,
  type CustomTransport,
  type Hex,
  type LocalAccount,
  type SerializeTransactionFn,
  type SignableMessage,
  type TransactionSerializable,
  type TypedDataDefinition,
} from "viem";
import { toAccount } from "viem/accounts";

import {
  EkmsApiError,
  EkmsPolicyDeniedError,
  EkmsUnauthorizedError,
  toHex,
  type EkmsClient,
} from "./client.js";

/** Any enclave-kms failure seen through viem (a viem `BaseError`); `cause` is the
 * client's error. */
export class EkmsViemError extends BaseError {
  /** The API's error code (`policy_denied`, `unauthenticated`, …), or `transport`. */
  readonly code: string;
  constructor(shortMessage: string, code: string, cause: Error, name = "EkmsViemError") {
    super(shortMessage, { cause, name });
    this.code = code;
  }
}

/** The key's policy refused: `rule` names the rule (docs/POLICY.md, "Rules"). */
export class EkmsPolicyDeniedViemError extends EkmsViemError {
  readonly rule: string;
  constructor(cause: EkmsPolicyDeniedError) {
    super(`enclave-kms refused to sign: policy rule ${cause.rule}: ${cause.apiMessage}`, cause.code, cause, "EkmsPolicyDeniedViemError");
    this.rule = cause.rule;
  }
}

/** The token was refused: 401 `unauthenticated` or 403 `forbidden` (see `code`). */
export class EkmsUnauthorizedViemError extends EkmsViemError {
  constructor(cause: EkmsUnauthorizedError) {
    super(`enclave-kms refused the API token: ${cause.code}: ${cause.apiMessage}`, cause.code, cause, "EkmsUnauthorizedViemError");
  }
}

/** The enclave's signed transaction is not what the serializer makes of the same
 * transaction and signature. */
export class EkmsSerializerMismatchError extends BaseError {
  constructor(expected: Hex, got: Hex) {
    super("enclave-kms: the enclave's signed transaction differs from the serializer's", {
      name: "EkmsSerializerMismatchError",
      metaMessages: [`serializer: ${expected}`, `enclave:    ${got}`],
    });
  }
}

function asViemError(e: unknown): unknown {
  if (e instanceof EkmsPolicyDeniedError) return new EkmsPolicyDeniedViemError(e);
  if (e instanceof EkmsUnauthorizedError) return new EkmsUnauthorizedViemError(e);
  if (e instanceof EkmsApiError) return new EkmsViemError(`enclave-kms: ${e.code}: ${e.apiMessage}`, e.code, e);
  if (e instanceof Error && e.name === "EkmsTransportError") return new EkmsViemError(e.message, "transport", e);
  return e;
}

async function viemErrors<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw asViemError(e);
  }
}

export interface EkmsAccountOptions {
  client: EkmsClient;
  keyId: string;
  /** The key's address. Without it, `ekmsAccount` reads it with `GET /v1/keys/{keyId}`
   * (a `keys:read` token); a `sign`-only token must give it. */
  address?: Address;
}

function messageBytes(message: SignableMessage): Uint8Array {
  if (typeof message === "string") return stringToBytes(message);
  return typeof message.raw === "string" ? hexToBytes(message.raw) : message.raw;
}

/**
 * A viem `LocalAccount` signing with the enclave-kms key `keyId` (a secp256k1 key):
 * `signTransaction` (honouring `{serializer}`), `signMessage` (EIP-191),
 * `signTypedData` (EIP-712) and `sign({hash})` (`evm_digest`, only where the policy
 * sets `allow_raw_digest`). Errors are viem `BaseError`s: {@link EkmsPolicyDeniedViemError}
 * (with `rule`), {@link EkmsUnauthorizedViemError}, {@link EkmsViemError}.
 */
export async function ekmsAccount({ client, keyId, address }: EkmsAccountOptions): Promise<LocalAccount<"enclave-kms">> {
  let publicKey: Hex | undefined;
  if (address === undefined) {
    const key = await viemErrors(() => client.getKey(keyId));
    if (key.algorithm !== "secp256k1") {
      throw new BaseError(`enclave-kms: key ${keyId} is ${key.algorithm}, not secp256k1`, { name: "EkmsViemError" });
    }
    address = getAddress(key.address);
    publicKey = key.public_key as Hex;
  }
  const account = toAccount({
    address,

    async sign({ hash }) {
      const r = await viemErrors(() => client.sign(keyId, "evm_digest", hash));
      return r.signature;
    },

    async signMessage({ message }) {
      const r = await viemErrors(() => client.sign(keyId, "evm_message", toHex(messageBytes(message))));
      return r.signature;
    },

    async signTransaction(transaction, options) {
      const serializer = (options?.serializer ?? serializeTransaction) as SerializeTransactionFn<TransactionSerializable>;
      const unsigned = await serializer(transaction);
      const r = await viemErrors(() => client.sign(keyId, "evm_transaction", unsigned));
      const { r: sr, s, y_parity } = r.signature;
      const resigned = await serializer(transaction, { r: sr, s, yParity: y_parity, v: BigInt(r.signature.v) });
      if (!isHex(resigned) || resigned.toLowerCase() !== r.signed_transaction.toLowerCase()) {
        throw new EkmsSerializerMismatchError(resigned, r.signed_transaction);
      }
      return r.signed_transaction;
    },

    async signTypedData(parameters) {
      const { domain, message, primaryType, types } = parameters as unknown as TypedDataDefinition;
      // As viem's own `signTypedData` sends `eth_signTypedData_v4`: the domain's type
      // spelled out, bigints as decimal strings, addresses in lowercase.
      const full = {
        domain,
        message,
        primaryType,
        types: { EIP712Domain: getTypesForEIP712Domain({ domain }), ...types },
      } as unknown as TypedDataDefinition;
      const json = JSON.parse(serializeTypedData(full)) as unknown;
      const r = await viemErrors(() => client.sign(keyId, "evm_typed_data", json));
      return r.signature;
    },
  });
  return { ...account, source: "enclave-kms", ...(publicKey !== undefined ? { publicKey } : {}) } as LocalAccount<"enclave-kms">;
}

export interface EkmsTransportOptions {
  client: EkmsClient;
  /** Answers `eth_chainId` (which viem's `signTransaction` asks first) without a node. */
  chainId?: number;
  /** Where every method the signer does not serve goes (`eth_chainId` without
   * `chainId`, reads, `eth_sendRawTransaction`, …): an EIP-1193 `request`, e.g. a viem
   * public client's. Without it they are refused with `-32601`. */
  upstream?: { request(args: { method: string; params?: unknown }): Promise<unknown> };
}

/** The methods `POST /v1/rpc/evm` serves. */
export const EKMS_RPC_METHODS: readonly string[] = [
  "eth_accounts",
  "eth_signTransaction",
  "eth_sign",
  "personal_sign",
  "eth_signTypedData_v4",
];

/**
 * A viem transport (`custom`) for the parent's Ethereum JSON-RPC endpoint
 * (`POST /v1/rpc/evm`): a wallet client with a JSON-RPC account (just an address) signs
 * through it with `eth_signTransaction`, `personal_sign` and `eth_signTypedData_v4`, as
 * it would with Web3Signer or Clef. Other methods go to `upstream` (or, for
 * `eth_chainId`, are answered from `chainId`). Errors carry the JSON-RPC `code`, which
 * viem maps to its `RpcError` classes (`TransactionRejectedRpcError` for a policy
 * refusal, `UnauthorizedProviderError` for a refused token), all `BaseError`s.
 */
export function ekmsTransport({ client, chainId, upstream }: EkmsTransportOptions): CustomTransport {
  return custom(
    {
      async request({ method, params }: { method: string; params?: unknown }) {
        if (EKMS_RPC_METHODS.includes(method)) {
          return client.rpc(method, Array.isArray(params) ? params : params === undefined ? [] : [params]);
        }
        if (method === "eth_chainId" && chainId !== undefined) return `0x${chainId.toString(16)}`;
        if (upstream !== undefined) return upstream.request({ method, params });
        return client.rpc(method, Array.isArray(params) ? params : []);
      },
    },
    { key: "enclave-kms", name: "enclave-kms JSON-RPC", retryCount: 0 },
  );
}
