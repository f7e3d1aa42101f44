// A real `ekms sim` for the tests: kms-sim, the enclave (simulated NSM) and the parent,
// from $EKMS_BIN_DIR (default /var/tmp/enclave-kms-target/debug; never built here).

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, closeSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { EkmsClient } from "@enclave-kms/client";

export const BIN_DIR = process.env["EKMS_BIN_DIR"] ?? "/var/tmp/enclave-kms-target/debug";
const START_TIMEOUT_MS = Number(process.env["EKMS_E2E_START_TIMEOUT"] ?? "90") * 1000;

export interface Sim {
  stateDir: string;
  socketPath: string;
  adminToken: string;
  /** A client with the admin token. */
  admin: EkmsClient;
  logTail(): string;
  stop(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function childPids(stateDir: string): number[] {
  try {
    const j = JSON.parse(readFileSync(join(stateDir, "sim.json"), "utf8")) as {
      processes?: Record<string, { pid?: number }>;
    };
    return Object.values(j.processes ?? {}).flatMap((p) => (typeof p.pid === "number" ? [p.pid] : []));
  } catch {
    return [];
  }
}

function exited(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    else proc.once("exit", () => resolve());
  });
}

export async function startSim(): Promise<Sim> {
  const bin = join(BIN_DIR, "ekms");
  if (!existsSync(bin)) throw new Error(`${bin} not found: build the workspace first (make build) or set EKMS_BIN_DIR`);
  const root = mkdtempSync(join(tmpdir(), "ekms-ts-"));
  const stateDir = join(root, "state");
  const logPath = join(root, "sim.log");
  const log = openSync(logPath, "a");
  // Its own process group, so that the whole group gets the SIGTERM at the end.
  const proc = spawn(bin, ["sim", "--state-dir", stateDir], { detached: true, stdio: ["ignore", log, log] });
  closeSync(log);
  const socketPath = join(stateDir, "ekms.sock");
  const seen = new Set<number>();

  const logTail = (): string => {
    const parts: string[] = [];
    for (const p of [logPath, ...["kms-sim", "enclave", "parent"].map((n) => join(stateDir, "logs", `${n}.log`))]) {
      try {
        parts.push(`--- ${p}\n` + readFileSync(p, "utf8").split("\n").slice(-40).join("\n"));
      } catch {
        // not there
      }
    }
    return parts.join("\n");
  };

  const stop = async (): Promise<void> => {
    for (const pid of childPids(stateDir)) seen.add(pid);
    if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
      try {
        process.kill(-proc.pid, "SIGTERM");
      } catch {
        // already gone
      }
      const done = await Promise.race([exited(proc).then(() => true), sleep(30_000, undefined, { ref: false }).then(() => false)]);
      if (!done) {
        try {
          process.kill(-proc.pid, "SIGKILL");
        } catch {
          // gone meanwhile
        }
        await exited(proc);
      }
    }
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && [...seen].some(alive)) await sleep(100);
    const left = [...seen].filter(alive);
    for (const pid of left) process.kill(pid, "SIGKILL");
    rmSync(root, { recursive: true, force: true });
    if (left.length > 0) throw new Error(`processes still running after the sim stopped: ${left.join(", ")}`);
  };

  try {
    const probe = new EkmsClient({ socketPath, timeoutMs: 5_000 });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`ekms sim exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${logTail()}`);
      }
      if (Date.now() > deadline) throw new Error(`ekms sim not healthy within ${START_TIMEOUT_MS} ms:\n${logTail()}`);
      if (existsSync(socketPath)) {
        try {
          const h = await probe.health();
          const pids = childPids(stateDir);
          if (h.status === 200 && pids.length === 3 && existsSync(join(stateDir, "admin.token"))) {
            pids.forEach((p) => seen.add(p));
            break;
          }
        } catch {
          // not listening yet
        }
      }
      await sleep(200);
    }
    const adminToken = readFileSync(join(stateDir, "admin.token"), "utf8").trim();
    return { stateDir, socketPath, adminToken, admin: new EkmsClient({ socketPath, token: adminToken }), logTail, stop };
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
}
