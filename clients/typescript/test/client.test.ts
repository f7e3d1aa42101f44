// Acceptance of @enclave-kms/client against a real `ekms sim` (issue 11, item 2): every
// signature checked with the library's own verifier; refusals and bad tokens as the
// library's kind of error. One sim for the whole file (it starts in seconds).

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  AccountRole,
  address as kitAddress,
  appendTransactionMessageInstruction,
  blockhash,
  createTransactionMessage,
  getPublicKeyFromAddress,
  pipe,
  setTransactionMessageFeePayerSigner,
  setTransactionMessageLifetimeUsingBlockhash,
  signTransactionMessageWithSigners,
  verifySignature,
  type Address as KitAddress,
  type TransactionPartialSigner,
} from "@solana/kit";
import {
  Keypair,
  PublicKey,
  SystemProgram,
  Transaction as Web3Transaction,
  TransactionMessage,
  VersionedTransaction,
} from "@solana/web3.js";
import {
  Transaction as EthersTransaction,
  isError,
  verifyMessage as ethersVerifyMessage,
  verifyTypedData as ethersVerifyTypedData,
} from "ethers";
import {
  BaseError,
  createWalletClient,
  custom,
  parseGwei,
  parseTransaction,
  recoverTransactionAddress,
  serializeTransaction,
  verifyMessage,
  verifyTypedData,
  type Address,
  type LocalAccount,
  type TransactionSerializable,
} from "viem";

import { mainnet } from "viem/chains";

import {
  EkmsClient,
  EkmsPolicyDeniedError,
  EkmsUnauthorizedError,
} from "@enclave-kms/client";
import { EkmsSigner } from "@enclave-kms/client/ethers";
import { ekmsSolanaSigner } from "@enclave-kms/client/solana-kit";
import { EkmsWeb3Signer } from "@enclave-kms/client/solana-web3";
import { EkmsPolicyDeniedViemError, EkmsUnauthorizedViemError, ekmsAccount } from "@enclave-kms/client/viem";

import { DEST, EVM_POLICY, MAIL } from "./fixtures.js";
import { startSim, type Sim } from "./sim.js";

const SYSTEM_PROGRAM = "11111111111111111111111111111111";
const SOL_DEST = Keypair.generate().publicKey.toBase58();
const BLOCKHASH = Keypair.generate().publicKey.toBase58(); // any 32 bytes


const SOLANA_POLICY = {
  version: 2,
  enabled: true,
  allowed_kinds: ["solana_transaction"],
  solana: {
    allowed_programs: [SYSTEM_PROGRAM],
    system_instructions: ["transfer"],
    allowed_destinations: [SOL_DEST],
    max_lamports_per_transfer: 1_000_000,
    max_lamports_per_transaction: 1_000_000,
    max_fee_lamports: 100_000,
  },
};


const EIP1559: TransactionSerializable = {
  type: "eip1559",
  chainId: 1,
  nonce: 7,
  to: DEST,
  value: 1000n,
  gas: 21_000n,
  maxFeePerGas: parseGwei("20"),
  maxPriorityFeePerGas: parseGwei("1"),
};

let sim: Sim;
let evmKeyId: string;
let evmAddress: Address;
let solKeyId: string;
let solAddress: string;

before(async () => {
  sim = await startSim();
  const evm = await sim.admin.createKey({ algorithm: "secp256k1", label: "ts-evm", policy: EVM_POLICY });
  evmKeyId = evm.key_id;
  evmAddress = evm.address as Address;
  const sol = await sim.admin.createKey({ algorithm: "ed25519", label: "ts-sol", policy: SOLANA_POLICY });
  solKeyId = sol.key_id;
  solAddress = sol.address;
});

after(async () => {
  await sim?.stop();
});

/** A `sign`-only token for one key (what a bot holds). */
async function botClient(keyId: string): Promise<EkmsClient> {
  const t = await sim.admin.createToken({ name: `bot-${keyId.slice(0, 8)}`, scopes: ["sign"], key_ids: [keyId] });
  return new EkmsClient({ socketPath: sim.socketPath, token: t.token });
}

function badClient(): EkmsClient {
  return new EkmsClient({ socketPath: sim.socketPath, token: "ekms_" + "A".repeat(43) });
}

describe("viem account", () => {
  let account: LocalAccount;
  before(async () => {
    account = await ekmsAccount({ client: sim.admin, keyId: evmKeyId });
  });

  test("the README lines", async () => {
    const socketPath = sim.socketPath;
    const keyId = evmKeyId;
    // A bot's token: `sign` and `keys:read` for this key only, in a file.
    const t = await sim.admin.createToken({ name: "readme-bot", scopes: ["sign", "keys:read"], key_ids: [keyId] });
    const tokenFile = join(sim.stateDir, "bot.token");
    writeFileSync(tokenFile, t.token + "\n", { mode: 0o600 });
    // --- README "TypeScript" (viem) ---
    const client = new EkmsClient({ socketPath, tokenFile });
    const account = await ekmsAccount({ client, keyId });
    const raw = await account.signTransaction({
      type: "eip1559", chainId: 1, nonce: 0, to: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", value: 1000n,
      gas: 21_000n, maxFeePerGas: parseGwei("20"), maxPriorityFeePerGas: parseGwei("1"),
    });
    const signature = await account.signMessage({ message: "hello from a keeper" });
    // ---
    assert.equal(await recoverTransactionAddress({ serializedTransaction: raw as `0x02${string}` }), evmAddress);
    assert.ok(await verifyMessage({ address: account.address, message: "hello from a keeper", signature }));
  });

  test("through a viem wallet client", async () => {
    // No node: the transport only answers eth_chainId (what signTransaction checks).
    const transport = custom({
      async request({ method }: { method: string }) {
        if (method === "eth_chainId") return "0x1";
        throw new Error(`unexpected ${method}`);
      },
    });
    const wallet = createWalletClient({ account, chain: mainnet, transport });
    const raw = await wallet.signTransaction({ ...EIP1559, type: "eip1559", account } as never);
    assert.equal(await recoverTransactionAddress({ serializedTransaction: raw as never }), evmAddress);
    const sig = await wallet.signMessage({ account, message: "via wallet" });
    assert.ok(await verifyMessage({ address: evmAddress, message: "via wallet", signature: sig }));
    const tsig = await wallet.signTypedData({ account, ...MAIL });
    assert.ok(await verifyTypedData({ address: evmAddress, ...MAIL, signature: tsig }));
  });

  test("address and source", () => {
    assert.equal(account.address, evmAddress);
    assert.equal(account.type, "local");
  });

  test("signTransaction EIP-1559, EIP-2930 and legacy EIP-155", async () => {
    const txs: TransactionSerializable[] = [
      EIP1559,
      { type: "eip2930", chainId: 1, nonce: 1, to: DEST, value: 1n, gas: 21_000n, gasPrice: parseGwei("1"), accessList: [] },
      { type: "legacy", chainId: 1, nonce: 2, to: DEST, value: 1n, gas: 21_000n, gasPrice: parseGwei("1") },
    ];
    for (const tx of txs) {
      const raw = await account.signTransaction(tx);
      assert.equal(await recoverTransactionAddress({ serializedTransaction: raw as never }), evmAddress, tx.type);
      const parsed = parseTransaction(raw);
      assert.equal(parsed.nonce, tx.nonce);
      assert.equal(parsed.chainId, 1);
    }
  });

  test("signTransaction honours a custom serializer", async () => {
    let calls = 0;
    // A serializer that sets the nonce itself: the enclave must sign its bytes.
    const serializer = (tx: TransactionSerializable, sig?: Parameters<typeof serializeTransaction>[1]) => {
      calls += 1;
      return serializeTransaction({ ...tx, nonce: 4242 }, sig);
    };
    const raw = await account.signTransaction(EIP1559, { serializer });
    assert.equal(calls, 2, "unsigned, then signed");
    assert.equal(parseTransaction(raw).nonce, 4242);
    assert.equal(await recoverTransactionAddress({ serializedTransaction: raw as never }), evmAddress);
  });

  test("signMessage (text and raw bytes)", async () => {
    const sig = await account.signMessage({ message: "gm" });
    assert.ok(await verifyMessage({ address: evmAddress, message: "gm", signature: sig }));
    const raw = { raw: "0xdeadbeef00ff" as const };
    const sig2 = await account.signMessage({ message: raw });
    assert.ok(await verifyMessage({ address: evmAddress, message: raw, signature: sig2 }));
  });

  test("signTypedData (EIP-712)", async () => {
    const sig = await account.signTypedData(MAIL);
    assert.ok(await verifyTypedData({ address: evmAddress, ...MAIL, signature: sig }));
  });

  test("a sign-only token with the address given", async () => {
    const acct = await ekmsAccount({ client: await botClient(evmKeyId), keyId: evmKeyId, address: evmAddress });
    const sig = await acct.signMessage({ message: "bot" });
    assert.ok(await verifyMessage({ address: evmAddress, message: "bot", signature: sig }));
  });

  test("a policy refusal is a viem BaseError with the rule", async () => {
    await assert.rejects(account.signTransaction({ ...EIP1559, chainId: 5 }), (e: unknown) => {
      assert.ok(e instanceof BaseError, String(e));
      assert.ok(e instanceof EkmsPolicyDeniedViemError);
      assert.equal(e.rule, "evm.chain_ids");
      assert.match(e.message, /evm\.chain_ids/);
      assert.ok(e.walk() instanceof EkmsPolicyDeniedError);
      return true;
    });
    await assert.rejects(account.signTypedData({ ...MAIL, domain: { ...MAIL.domain, name: "Other" } }), (e: unknown) => {
      assert.ok(e instanceof EkmsPolicyDeniedViemError);
      assert.match(e.message, /evm\.typed_data\.domains/);
      return true;
    });
  });

  test("a bad token is a viem BaseError", async () => {
    const acct = await ekmsAccount({ client: badClient(), keyId: evmKeyId, address: evmAddress });
    await assert.rejects(acct.signMessage({ message: "x" }), (e: unknown) => {
      assert.ok(e instanceof BaseError);
      assert.ok(e instanceof EkmsUnauthorizedViemError);
      assert.equal(e.code, "unauthenticated");
      assert.match(e.message, /unauthenticated/);
      return true;
    });
    // Without the address the account is not even made.
    await assert.rejects(ekmsAccount({ client: badClient(), keyId: evmKeyId }), EkmsUnauthorizedViemError);
    // A valid token for another key: 403 forbidden.
    const other = await ekmsAccount({ client: await botClient(solKeyId), keyId: evmKeyId, address: evmAddress });
    await assert.rejects(other.signMessage({ message: "x" }), (e: unknown) => {
      assert.ok(e instanceof EkmsUnauthorizedViemError);
      assert.equal(e.code, "forbidden");
      return true;
    });
  });
});

describe("ethers signer", () => {
  let signer: EkmsSigner;
  before(() => {
    signer = new EkmsSigner(sim.admin, evmKeyId);
  });

  test("getAddress and connect", async () => {
    assert.equal(await signer.getAddress(), evmAddress);
    const connected = signer.connect(null);
    assert.ok(connected instanceof EkmsSigner);
    assert.equal(await connected.getAddress(), evmAddress);
  });

  test("signTransaction round trip", async () => {
    const raw = await signer.signTransaction({
      type: 2,
      chainId: 1n,
      nonce: 3,
      to: DEST,
      value: 1000n,
      gasLimit: 21_000n,
      maxFeePerGas: 20_000_000_000n,
      maxPriorityFeePerGas: 1_000_000_000n,
      from: evmAddress,
    });
    const tx = EthersTransaction.from(raw);
    assert.equal(tx.from, evmAddress);
    assert.equal(tx.nonce, 3);
    assert.equal(tx.to, DEST);
    const legacy = await signer.signTransaction({ type: 0, chainId: 1n, nonce: 4, to: DEST, value: 1n, gasLimit: 21_000n, gasPrice: 1_000_000_000n });
    assert.equal(EthersTransaction.from(legacy).from, evmAddress);
  });

  test("signMessage and signTypedData", async () => {
    const sig = await signer.signMessage("hello ethers");
    assert.equal(ethersVerifyMessage("hello ethers", sig), evmAddress);
    const bytes = new Uint8Array([0, 1, 2, 255]);
    assert.equal(ethersVerifyMessage(bytes, await signer.signMessage(bytes)), evmAddress);
    const types = { Person: [...MAIL.types.Person], Mail: [...MAIL.types.Mail] };
    const tsig = await signer.signTypedData(MAIL.domain, types, MAIL.message);
    assert.equal(ethersVerifyTypedData(MAIL.domain, types, MAIL.message, tsig), evmAddress);
  });

  test("a policy refusal is an ethers error with a code and the rule", async () => {
    await assert.rejects(
      signer.signTransaction({ type: 2, chainId: 1n, nonce: 0, to: DEST, value: 10n ** 18n, gasLimit: 21_000n, maxFeePerGas: 1n, maxPriorityFeePerGas: 1n }),
      (e: unknown) => {
        assert.ok(isError(e, "ACTION_REJECTED"), String(e));
        assert.equal(e.action, "signTransaction");
        assert.equal(e.info?.["rule"], "evm.max_value_wei");
        assert.match(e.message, /evm\.max_value_wei/);
        assert.ok(e.error instanceof EkmsPolicyDeniedError);
        return true;
      },
    );
  });

  test("a bad token is an ethers error with a code", async () => {
    const bad = new EkmsSigner(badClient(), evmKeyId, null, evmAddress);
    await assert.rejects(bad.signMessage("x"), (e: unknown) => {
      assert.ok(isError(e, "ACTION_REJECTED"), String(e));
      assert.equal(e.info?.["ekmsCode"], "unauthenticated");
      assert.match(e.message, /unauthenticated/);
      return true;
    });
    await assert.rejects(new EkmsSigner(badClient(), evmKeyId).getAddress(), (e: unknown) => isError(e, "ACTION_REJECTED"));
  });
});

/** A System Program transfer of `amount` lamports from `from` to SOL_DEST (kit). */
function kitTransfer(signer: TransactionPartialSigner, amount: bigint) {
  const data = new Uint8Array(12);
  const view = new DataView(data.buffer);
  view.setUint32(0, 2, true); // Transfer
  view.setBigUint64(4, amount, true);
  return pipe(
    createTransactionMessage({ version: 0 }),
    (m) => setTransactionMessageFeePayerSigner(signer, m),
    (m) => setTransactionMessageLifetimeUsingBlockhash({ blockhash: blockhash(BLOCKHASH), lastValidBlockHeight: 100n }, m),
    (m) =>
      appendTransactionMessageInstruction(
        {
          programAddress: kitAddress(SYSTEM_PROGRAM),
          accounts: [
            { address: signer.address, role: AccountRole.WRITABLE_SIGNER, signer },
            { address: kitAddress(SOL_DEST), role: AccountRole.WRITABLE },
          ],
          data,
        },
        m,
      ),
  );
}

describe("@solana/kit signer", () => {
  test("signTransactions: the signature verifies", async () => {
    const signer = await ekmsSolanaSigner({ client: sim.admin, keyId: solKeyId });
    assert.equal(signer.address, solAddress);
    const tx = await signTransactionMessageWithSigners(kitTransfer(signer, 1000n));
    const sig = tx.signatures[signer.address as KitAddress];
    assert.ok(sig, "signed");
    const key = await getPublicKeyFromAddress(signer.address);
    assert.ok(await verifySignature(key, sig, tx.messageBytes));
    // Several at once, one dictionary each.
    const t2 = await signTransactionMessageWithSigners(kitTransfer(signer, 2000n));
    const dicts = await signer.signTransactions([tx, t2]);
    assert.equal(dicts.length, 2);
    assert.ok(await verifySignature(key, dicts[1]![signer.address]!, t2.messageBytes));
  });

  test("a policy refusal and a bad token", async () => {
    const signer = await ekmsSolanaSigner({ client: sim.admin, keyId: solKeyId });
    await assert.rejects(signTransactionMessageWithSigners(kitTransfer(signer, 2_000_000n)), (e: unknown) => {
      assert.ok(e instanceof EkmsPolicyDeniedError, String(e));
      assert.equal(e.rule, "solana.max_lamports_per_transfer");
      assert.match(e.message, /solana\.max_lamports_per_transfer/);
      return true;
    });
    const bad = await ekmsSolanaSigner({ client: badClient(), keyId: solKeyId, address: solAddress });
    await assert.rejects(signTransactionMessageWithSigners(kitTransfer(bad, 1n)), (e: unknown) => {
      assert.ok(e instanceof EkmsUnauthorizedError, String(e));
      assert.equal(e.status, 401);
      return true;
    });
  });
});

describe("@solana/web3.js v1 signer", () => {
  test("Transaction and VersionedTransaction", async () => {
    const signer = await EkmsWeb3Signer.create({ client: await botClient(solKeyId), keyId: solKeyId, address: solAddress });
    const ix = SystemProgram.transfer({ fromPubkey: signer.publicKey, toPubkey: new PublicKey(SOL_DEST), lamports: 5000 });

    const legacy = new Web3Transaction({ feePayer: signer.publicKey, recentBlockhash: BLOCKHASH }).add(ix);
    await signer.signTransaction(legacy);
    assert.ok(legacy.verifySignatures());
    assert.equal(legacy.signatures.length, 1);

    const v0 = new VersionedTransaction(
      new TransactionMessage({ payerKey: signer.publicKey, recentBlockhash: BLOCKHASH, instructions: [ix] }).compileToV0Message(),
    );
    await signer.signTransaction(v0);
    const key = await getPublicKeyFromAddress(kitAddress(solAddress));
    assert.ok(await verifySignature(key, v0.signatures[0] as never, v0.message.serialize()));
  });

  test("a policy refusal and a bad token", async () => {
    const signer = await EkmsWeb3Signer.create({ client: sim.admin, keyId: solKeyId });
    const big = SystemProgram.transfer({ fromPubkey: signer.publicKey, toPubkey: new PublicKey(SOL_DEST), lamports: 2_000_000 });
    const tx = new Web3Transaction({ feePayer: signer.publicKey, recentBlockhash: BLOCKHASH }).add(big);
    await assert.rejects(signer.signTransaction(tx), (e: unknown) => {
      assert.ok(e instanceof EkmsPolicyDeniedError);
      assert.match(e.message, /solana\.max_lamports_per_transfer/);
      return true;
    });
    const bad = await EkmsWeb3Signer.create({ client: badClient(), keyId: solKeyId, address: solAddress });
    const small = SystemProgram.transfer({ fromPubkey: bad.publicKey, toPubkey: new PublicKey(SOL_DEST), lamports: 1 });
    await assert.rejects(
      bad.signTransaction(new Web3Transaction({ feePayer: bad.publicKey, recentBlockhash: BLOCKHASH }).add(small)),
      EkmsUnauthorizedError,
    );
  });
});

describe("transport", () => {
  test("a TCP URL, with the token, and a refusal's rule", async () => {
    let auth: string | undefined;
    let path: string | undefined;
    const server = createServer((req, res) => {
      auth = req.headers.authorization;
      path = req.url;
      res.writeHead(403, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "policy_denied", message: "chain 5 is not in evm.chain_ids", rule: "evm.chain_ids" } }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const { port } = server.address() as AddressInfo;
      const client = new EkmsClient({ url: `http://127.0.0.1:${port}`, token: "ekms_tcp" });
      await assert.rejects(client.sign("k1", "evm_message", "0x00"), (e: unknown) => {
        assert.ok(e instanceof EkmsPolicyDeniedError);
        assert.equal(e.rule, "evm.chain_ids");
        return true;
      });
      assert.equal(auth, "Bearer ekms_tcp");
      assert.equal(path, "/v1/keys/k1/sign");
    } finally {
      server.close();
    }
  });

  test("health over the socket needs no token", async () => {
    const h = await new EkmsClient({ socketPath: sim.socketPath }).health();
    assert.equal(h.status, 200);
  });
});
