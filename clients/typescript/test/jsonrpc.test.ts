// The Ethereum JSON-RPC endpoint (`POST /v1/rpc/evm`, issue 11 item 1) driven by viem as
// a remote signer: a wallet client with a JSON-RPC account (an address) and the
// `custom` transport of `ekmsTransport`, against a real `ekms sim`. Every signature is
// checked with viem's own recoverTransactionAddress / verifyMessage / verifyTypedData;
// a policy refusal and a refused token arrive as viem's RpcError classes.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  BaseError,
  TransactionRejectedRpcError,
  UnauthorizedProviderError,
  InvalidParamsRpcError,
  createWalletClient,
  parseGwei,
  parseTransaction,
  recoverTransactionAddress,
  verifyMessage,
  verifyTypedData,
  type Address,
} from "viem";
import { mainnet } from "viem/chains";

import { EkmsClient, EkmsRpcError } from "@enclave-kms/client";
import { ekmsTransport } from "@enclave-kms/client/viem";

import { DEST, EVM_POLICY, MAIL } from "./fixtures.js";
import { startSim, type Sim } from "./sim.js";


let sim: Sim;
let address: Address;
let otherAddress: Address;
let bot: EkmsClient;

before(async () => {
  sim = await startSim();
  const key = await sim.admin.createKey({ algorithm: "secp256k1", label: "rpc", policy: EVM_POLICY });
  address = key.address as Address;
  const other = await sim.admin.createKey({ algorithm: "secp256k1", label: "rpc-other", policy: EVM_POLICY });
  otherAddress = other.address as Address;
  const t = await sim.admin.createToken({ name: "rpc-bot", scopes: ["sign"], key_ids: [key.key_id] });
  bot = new EkmsClient({ socketPath: sim.socketPath, token: t.token });
});

after(async () => {
  await sim?.stop();
});

function wallet(client: EkmsClient) {
  return createWalletClient({ account: address, chain: mainnet, transport: ekmsTransport({ client, chainId: 1 }) });
}

describe("JSON-RPC endpoint through viem", () => {
  test("eth_accounts lists the keys the token may sign with", async () => {
    assert.deepEqual(await wallet(bot).getAddresses(), [address]);
    const all = await sim.admin.rpc<string[]>("eth_accounts");
    assert.deepEqual(new Set(all), new Set([address, otherAddress]));
  });

  test("signTransaction: EIP-1559, EIP-2930 and legacy, recovered by viem", async () => {
    const w = wallet(bot);
    const common = { to: DEST, value: 1000n, gas: 21_000n } as const;
    const raws = [
      await w.signTransaction({ ...common, nonce: 3, maxFeePerGas: parseGwei("20"), maxPriorityFeePerGas: parseGwei("1") }),
      await w.signTransaction({ ...common, nonce: 4, type: "eip2930", gasPrice: parseGwei("1"), accessList: [] }),
      await w.signTransaction({ ...common, nonce: 5, type: "legacy", gasPrice: parseGwei("1") }),
    ];
    for (const [i, raw] of raws.entries()) {
      assert.equal(await recoverTransactionAddress({ serializedTransaction: raw as never }), address);
      const tx = parseTransaction(raw);
      assert.equal(tx.nonce, 3 + i);
      assert.equal(tx.chainId, 1);
      assert.equal(tx.to?.toLowerCase(), DEST.toLowerCase());
      assert.equal(tx.value, 1000n);
    }
  });

  test("signMessage (personal_sign), verified by viem", async () => {
    const w = wallet(bot);
    const sig = await w.signMessage({ message: "gm from json-rpc" });
    assert.ok(await verifyMessage({ address, message: "gm from json-rpc", signature: sig }));
    const raw = { raw: "0xdeadbeef" as const };
    assert.ok(await verifyMessage({ address, message: raw, signature: await w.signMessage({ message: raw }) }));
  });

  test("eth_sign takes the address first", async () => {
    const sig = await bot.rpc<`0x${string}`>("eth_sign", [address, "0x68656c6c6f"]);
    assert.ok(await verifyMessage({ address, message: "hello", signature: sig }));
  });

  test("signTypedData (eth_signTypedData_v4), verified by viem", async () => {
    const sig = await wallet(bot).signTypedData(MAIL);
    assert.ok(await verifyTypedData({ address, ...MAIL, signature: sig }));
  });

  test("a policy refusal is viem's TransactionRejectedRpcError with the rule", async () => {
    await assert.rejects(
      wallet(bot).signTransaction({
        to: "0x000000000000000000000000000000000000dEaD", value: 1n, gas: 21_000n, nonce: 0,
        maxFeePerGas: parseGwei("20"), maxPriorityFeePerGas: parseGwei("1"),
      }),
      (e: unknown) => {
        assert.ok(e instanceof BaseError, String(e));
        const rejected = (e as BaseError).walk((x) => x instanceof TransactionRejectedRpcError);
        assert.ok(rejected instanceof TransactionRejectedRpcError, String(e));
        assert.equal(rejected.code, -32003);
        assert.match(e.message, /evm\.allowed_destinations/);
        return true;
      },
    );
    await assert.rejects(wallet(bot).signTypedData({ ...MAIL, domain: { ...MAIL.domain, name: "Other" } }), (e: unknown) => {
      assert.ok(e instanceof BaseError);
      assert.match(e.message, /evm\.typed_data\.domains/);
      return true;
    });
  });

  test("a key outside the token's keys is an unknown account", async () => {
    const w = createWalletClient({ account: otherAddress, chain: mainnet, transport: ekmsTransport({ client: bot, chainId: 1 }) });
    await assert.rejects(w.signMessage({ message: "x" }), (e: unknown) => {
      assert.ok(e instanceof BaseError);
      assert.ok((e as BaseError).walk((x) => x instanceof InvalidParamsRpcError) instanceof InvalidParamsRpcError, String(e));
      assert.match(e.message, /unknown account/);
      return true;
    });
  });

  test("a refused token is viem's UnauthorizedProviderError", async () => {
    const bad = new EkmsClient({ socketPath: sim.socketPath, token: "ekms_" + "A".repeat(43) });
    await assert.rejects(wallet(bad).signMessage({ message: "x" }), (e: unknown) => {
      assert.ok(e instanceof BaseError);
      assert.ok((e as BaseError).walk((x) => x instanceof UnauthorizedProviderError) instanceof UnauthorizedProviderError, String(e));
      return true;
    });
    await assert.rejects(bad.rpc("eth_accounts"), (e: unknown) => {
      assert.ok(e instanceof EkmsRpcError);
      assert.equal(e.code, 4100);
      return true;
    });
  });
});
