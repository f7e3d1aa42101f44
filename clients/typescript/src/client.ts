// The enclave-kms Application API over the parent's Unix socket (or a loopback TCP URL),
// with `Authorization: Bearer <token>` (README, "Application API").

import { readFileSync } from "node:fs";
import * as http from "node:http";

/** Where the parent listens and which token to send. */
export interface EkmsClientOptions {
  /** The parent's application socket (`<state-dir>/ekms.sock`). */
  socketPath?: string;
  /** Instead of `socketPath`: the parent's TCP listener, e.g. `http://127.0.0.1:8545`. */
  url?: string;
  /** The API token (`ekms_…`). */
  token?: string;
  /** Instead of `token`: a file holding it (e.g. `<state-dir>/admin.token`). */
  tokenFile?: string;
  /** Milliseconds before a request is abandoned (default 30 000). */
  timeoutMs?: number;
}

export type PayloadKind =
  | "evm_transaction"
  | "evm_message"
  | "evm_typed_data"
  | "evm_digest"
  | "solana_transaction"
  | "solana_offchain_message";

/** An audit receipt: keep it to check the audit chain (`ekms audit verify --receipts`). */
export interface Receipt {
  seq: number;
  record_sha256: string;
  signature: string;
}

export interface EvmTransactionSignature {
  signature: { r: `0x${string}`; s: `0x${string}`; y_parity: number; v: number };
  signed_transaction: `0x${string}`;
  transaction_hash: `0x${string}`;
  receipt: Receipt;
}

export interface EvmMessageSignature {
  /** `0x` + 65 bytes r‖s‖v (v = 27 or 28). */
  signature: `0x${string}`;
  r: `0x${string}`;
  s: `0x${string}`;
  v: number;
  y_parity: number;
  digest: `0x${string}`;
  receipt: Receipt;
}

export interface SolanaTransactionSignature {
  /** base58 of the 64-byte ed25519 signature. */
  signature: string;
  /** base64 of the signed transaction (for a bare message: the message with its signature slots). */
  signed_transaction: string;
  receipt: Receipt;
}

export interface SolanaOffchainSignature {
  signature: string;
  receipt: Receipt;
}

export interface KeyInfo {
  key_id: string;
  algorithm: "secp256k1" | "ed25519";
  label: string | null;
  public_key: string;
  /** EIP-55 (secp256k1) or base58 (ed25519). */
  address: string;
  policy_version: number;
  created_at: string;
  owner: unknown;
  policy?: unknown;
  statement?: unknown;
}

export interface CreateKeyRequest {
  algorithm: "secp256k1" | "ed25519";
  label?: string;
  policy?: unknown;
  owner?: unknown;
}

export interface CreateTokenRequest {
  name: string;
  scopes: string[];
  key_ids?: string[];
  expires_at?: string;
}

export interface CreatedToken {
  token_id: string;
  token: string;
  name: string;
  scopes: string[];
  key_ids: string[] | null;
  created_at: string;
  expires_at: string | null;
}

/** Any error answer of the API: `{"error":{"code","message"}}` with its HTTP status. */
export class EkmsApiError extends Error {
  override name = "EkmsApiError";
  /** The API's error code, e.g. `invalid_payload`, `key_not_found`. */
  readonly code: string;
  /** The HTTP status. */
  readonly status: number;
  /** The API's own message. */
  readonly apiMessage: string;
  constructor(status: number, code: string, apiMessage: string, message?: string) {
    super(message ?? `enclave-kms: ${code} (HTTP ${status}): ${apiMessage}`);
    this.status = status;
    this.code = code;
    this.apiMessage = apiMessage;
  }
}

/** `403 policy_denied`: the key's policy refused the payload; `rule` names the rule. */
export class EkmsPolicyDeniedError extends EkmsApiError {
  override name = "EkmsPolicyDeniedError";
  /** The policy rule that refused, e.g. `evm.chain_ids` (docs/POLICY.md, "Rules"). */
  readonly rule: string;
  constructor(status: number, code: string, apiMessage: string, rule: string) {
    super(status, code, apiMessage, `enclave-kms: policy denied by rule ${rule}: ${apiMessage}`);
    this.rule = rule;
  }
}

/** `401 unauthenticated` (no, an unknown, a revoked or an expired token), `403 forbidden`
 * (a valid token outside its scope or keys), or another 403 that is not a policy refusal
 * (`key_disabled`, `store_stopped`, `owner_authorization_invalid`; see `code`). */
export class EkmsUnauthorizedError extends EkmsApiError {
  override name = "EkmsUnauthorizedError";
}

/** A JSON-RPC error object from `POST /v1/rpc/evm`: `code` is the JSON-RPC code
 * (`-32003` policy refusal with `data.rule`, `-32602` invalid params or unknown account,
 * `4100` unauthorized token, …). viem's `custom` transport turns these codes into its
 * own `RpcError` classes (`TransactionRejectedRpcError`, `UnauthorizedProviderError`, …). */
export class EkmsRpcError extends Error {
  override name = "EkmsRpcError";
  /** The JSON-RPC error code. */
  readonly code: number;
  /** The error object's `data` (for `-32003`: `{rule, reason}`). */
  readonly data: unknown;
  constructor(code: number, message: string, data: unknown) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

/** The parent could not be reached, or answered something that is not the API. */
export class EkmsTransportError extends Error {
  override name = "EkmsTransportError";
}

interface RawResponse {
  status: number;
  body: string;
}

/** The API's JSON over HTTP/1.1: one client per parent, shareable by every signer. */
export class EkmsClient {
  readonly socketPath: string | undefined;
  readonly url: URL | undefined;
  readonly timeoutMs: number;
  readonly #token: string | undefined;
  #rpcId = 0;

  constructor(options: EkmsClientOptions) {
    if ((options.socketPath === undefined) === (options.url === undefined)) {
      throw new TypeError("EkmsClient: give exactly one of socketPath and url");
    }
    if (options.token !== undefined && options.tokenFile !== undefined) {
      throw new TypeError("EkmsClient: give at most one of token and tokenFile");
    }
    this.socketPath = options.socketPath;
    if (options.url !== undefined) {
      this.url = new URL(options.url);
      if (this.url.protocol !== "http:") {
        throw new TypeError(`EkmsClient: url must be http:// (loopback), not ${this.url.protocol}`);
      }
    }
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.#token =
      options.tokenFile !== undefined ? readFileSync(options.tokenFile, "utf8").trim() : options.token;
  }

  /** `GET /v1/health`: the parent's answer and status (503 until the enclave is ready). */
  async health(signal?: AbortSignal): Promise<{ status: number; body: unknown }> {
    const r = await this.#raw("GET", "/v1/health", undefined, signal);
    let body: unknown = undefined;
    try {
      body = JSON.parse(r.body);
    } catch {
      // not JSON: leave undefined
    }
    return { status: r.status, body };
  }

  getKey(keyId: string, signal?: AbortSignal): Promise<KeyInfo> {
    return this.request("GET", `/v1/keys/${encodeURIComponent(keyId)}`, undefined, signal);
  }

  createKey(req: CreateKeyRequest, signal?: AbortSignal): Promise<KeyInfo> {
    return this.request("POST", "/v1/keys", req, signal);
  }

  createToken(req: CreateTokenRequest, signal?: AbortSignal): Promise<CreatedToken> {
    return this.request("POST", "/v1/tokens", req, signal);
  }

  /** `POST /v1/keys/{key_id}/sign`. */
  sign(keyId: string, kind: "evm_transaction", payload: string, signal?: AbortSignal): Promise<EvmTransactionSignature>;
  sign(
    keyId: string,
    kind: "evm_message" | "evm_typed_data" | "evm_digest",
    payload: unknown,
    signal?: AbortSignal,
  ): Promise<EvmMessageSignature>;
  sign(keyId: string, kind: "solana_transaction", payload: string, signal?: AbortSignal): Promise<SolanaTransactionSignature>;
  sign(keyId: string, kind: "solana_offchain_message", payload: string, signal?: AbortSignal): Promise<SolanaOffchainSignature>;
  sign(keyId: string, kind: PayloadKind, payload: unknown, signal?: AbortSignal): Promise<unknown> {
    return this.request("POST", `/v1/keys/${encodeURIComponent(keyId)}/sign`, { kind, payload }, signal);
  }

  /** One JSON-RPC 2.0 call to the Ethereum remote-signer endpoint `POST /v1/rpc/evm`
   * (`eth_accounts`, `eth_signTransaction`, `eth_sign`, `personal_sign`,
   * `eth_signTypedData_v4`): its `result`, or an {@link EkmsRpcError}. */
  async rpc<T>(method: string, params: unknown[] = [], signal?: AbortSignal): Promise<T> {
    const id = ++this.#rpcId;
    const body = JSON.stringify({ jsonrpc: "2.0", id, method, params });
    const r = await this.#raw("POST", "/v1/rpc/evm", body, signal);
    let json: unknown;
    try {
      json = JSON.parse(r.body);
    } catch {
      throw new EkmsTransportError(`enclave-kms: ${method}: HTTP ${r.status} with a body that is not JSON`);
    }
    const answer = (typeof json === "object" && json !== null ? json : {}) as Record<string, unknown>;
    const error = answer["error"];
    if (typeof error === "object" && error !== null) {
      const e = error as Record<string, unknown>;
      if (typeof e["code"] === "number") {
        throw new EkmsRpcError(e["code"], typeof e["message"] === "string" ? e["message"] : "no message", e["data"]);
      }
      // A REST error body: this parent has no JSON-RPC endpoint, or refused the request.
      throw errorFromAnswer(r.status, json);
    }
    if (!("result" in answer) || answer["id"] !== id) {
      throw new EkmsTransportError(`enclave-kms: ${method}: HTTP ${r.status} without a JSON-RPC answer to request ${id}`);
    }
    return answer["result"] as T;
  }

  /** One API call: the parsed JSON answer, or a typed error. */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const r = await this.#raw(method, path, body === undefined ? undefined : JSON.stringify(body), signal);
    let json: unknown;
    try {
      json = JSON.parse(r.body);
    } catch {
      throw new EkmsTransportError(`enclave-kms: ${method} ${path}: HTTP ${r.status} with a body that is not JSON`);
    }
    if (r.status >= 200 && r.status < 300) return json as T;
    throw errorFromAnswer(r.status, json);
  }

  #raw(method: string, path: string, body: string | undefined, signal?: AbortSignal): Promise<RawResponse> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.#token !== undefined) headers["authorization"] = `Bearer ${this.#token}`;
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(Buffer.byteLength(body));
    }
    const target: http.RequestOptions =
      this.socketPath !== undefined
        ? { socketPath: this.socketPath, host: "localhost", path }
        : {
            host: this.url!.hostname,
            port: this.url!.port === "" ? 80 : Number(this.url!.port),
            path: this.url!.pathname.replace(/\/$/, "") + path,
          };
    return new Promise<RawResponse>((resolve, reject) => {
      const req = http.request({ ...target, method, headers, timeout: this.timeoutMs, signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", (e) => reject(new EkmsTransportError(`enclave-kms: ${method} ${path}: ${e.message}`, { cause: e })));
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on("error", (e) => {
        if (e.name === "AbortError") reject(e);
        else reject(new EkmsTransportError(`enclave-kms: ${method} ${path}: ${e.message}`, { cause: e }));
      });
      req.end(body);
    });
  }
}

function errorFromAnswer(status: number, json: unknown): EkmsApiError {
  const err =
    typeof json === "object" && json !== null && "error" in json && typeof json.error === "object" && json.error !== null
      ? (json.error as Record<string, unknown>)
      : {};
  const code = typeof err["code"] === "string" ? err["code"] : `http_${status}`;
  const message = typeof err["message"] === "string" ? err["message"] : "no message";
  if (code === "policy_denied") {
    return new EkmsPolicyDeniedError(status, code, message, typeof err["rule"] === "string" ? err["rule"] : "unknown");
  }
  // 401 `unauthenticated`; 403 `forbidden` and the other refusals of the request itself
  // (`key_disabled`, `store_stopped`, `owner_authorization_invalid`): `code` tells them apart.
  if (status === 401 || status === 403) return new EkmsUnauthorizedError(status, code, message);
  return new EkmsApiError(status, code, message);
}

/** A byte view (a `Uint8Array`, or kit's read-only one). */
export type Bytes = { readonly buffer: ArrayBufferLike; readonly byteOffset: number; readonly byteLength: number };

/** `0x` hex of bytes. */
export function toHex(bytes: Bytes): `0x${string}` {
  return `0x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")}`;
}

/** base64 of bytes. */
export function toBase64(bytes: Bytes): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}
