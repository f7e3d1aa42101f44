"""Helpers of the end-to-end interop tests and the demo: running `ekms sim`, a small
HTTP client over the application's Unix socket, building unsigned EVM / Solana
transactions, and checking what the service signed with independent implementations
(eth-account, rlp, solders, PyNaCl).

Nothing here trusts the service: every check recomputes from the bytes it returned.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rlp
from eth_account import Account
from eth_keys import keys as eth_keys
from eth_utils import is_checksum_address, keccak, to_checksum_address
from nacl.signing import VerifyKey
from solders.hash import Hash
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

REPO = Path(__file__).resolve().parent.parent

#: secp256k1 group order; EIP-2 wants s <= N/2.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SYSTEM_PROGRAM = "11111111111111111111111111111111"
MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
ONE_ETH = 10**18
ONE_SOL = 10**9


# --------------------------------------------------------------------------- binaries


def bin_dir() -> Path:
    """Where the Rust binaries are: $EKMS_BIN_DIR, else $CARGO_TARGET_DIR/debug, else
    target/debug of this repository."""
    if os.environ.get("EKMS_BIN_DIR"):
        return Path(os.environ["EKMS_BIN_DIR"])
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else REPO / "target"
    if not base.is_absolute():
        base = REPO / base
    return base / "debug"


def ekms_bin() -> Path:
    return bin_dir() / "ekms"


# ----------------------------------------------------------------------------- client


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = os.fspath(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict:
        """The `error` object of an error answer ({} if there is none)."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return {}
        return doc.get("error", {}) if isinstance(doc, dict) else {}

    @property
    def code(self) -> str | None:
        return self.error.get("code")

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:400]!r})"


#: The parent↔enclave protocol version (`ekms_shared::PROTOCOL_VERSION`), for tests
#: that write frames to the enclave's socket themselves, as a host attacker can.
PROTOCOL_VERSION = 3

ADMIN_TOKEN = object()
"""`Client(token=ADMIN_TOKEN)` (the default): the admin token in `admin.token` beside the
socket, read at each request (the parent writes it at its first start)."""


class Client:
    """The application API on a Unix socket. One connection per call, so a client can
    be shared by threads.

    `token`: `ADMIN_TOKEN` (default, see above), a token string, or None for no
    `Authorization` header."""

    def __init__(self, socket_path: str | os.PathLike, timeout: float = 30.0, token: Any = ADMIN_TOKEN):
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.token = token

    def with_token(self, token: Any) -> "Client":
        """The same client with another token (a string, None, or ADMIN_TOKEN)."""
        return Client(self.socket_path, self.timeout, token)

    def admin_token_path(self) -> Path:
        return Path(self.socket_path).parent / "admin.token"

    def _token(self) -> str | None:
        if self.token is ADMIN_TOKEN:
            try:
                return self.admin_token_path().read_text().strip()
            except FileNotFoundError:
                return None
        return self.token

    def auth_headers(self) -> dict[str, str]:
        token = self._token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        timeout: float | None = None,
    ) -> Response:
        conn = UnixHTTPConnection(self.socket_path, timeout or self.timeout)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            headers = self.auth_headers()
            if data is not None and content_type:
                headers["Content-Type"] = content_type
            try:
                conn.request(method, path, body=data, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (413) and close before reading the whole body;
                # its answer is still in our receive buffer.
                pass
            resp = conn.getresponse()
            payload = resp.read()
            return Response(resp.status, payload, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    # Convenience wrappers -------------------------------------------------------------

    def health(self, timeout: float | None = None) -> Response:
        return self.request("GET", "/v1/health", timeout=timeout)

    def create_key(self, algorithm: str, policy: dict | None = None, label: str | None = None) -> dict:
        body: dict[str, Any] = {"algorithm": algorithm}
        if policy is not None:
            body["policy"] = policy
        if label is not None:
            body["label"] = label
        r = self.request("POST", "/v1/keys", body)
        assert r.status == 201, r
        return r.json

    def get_key(self, key_id: str) -> Response:
        return self.request("GET", f"/v1/keys/{key_id}")

    def list_keys(self) -> Response:
        return self.request("GET", "/v1/keys")

    def set_policy(self, key_id: str, policy: dict) -> Response:
        return self.request("PUT", f"/v1/keys/{key_id}/policy", {"policy": policy})

    def sign(self, key_id: str, kind: str, payload: str, timeout: float | None = None) -> Response:
        return self.request(
            "POST", f"/v1/keys/{key_id}/sign", {"kind": kind, "payload": payload}, timeout=timeout
        )

    def sign_evm(self, key_id: str, unsigned: bytes, timeout: float | None = None) -> Response:
        return self.sign(key_id, "evm_transaction", "0x" + unsigned.hex(), timeout=timeout)

    def sign_solana(self, key_id: str, unsigned: bytes, timeout: float | None = None) -> Response:
        return self.sign(key_id, "solana_transaction", base64.b64encode(unsigned).decode(), timeout=timeout)

    def create_token(self, name: str, scopes: list[str], key_ids: list[str] | None = None,
                     expires_at: str | None = None) -> Response:
        body: dict[str, Any] = {"name": name, "scopes": scopes}
        if key_ids is not None:
            body["key_ids"] = key_ids
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self.request("POST", "/v1/tokens", body)

    def list_tokens(self) -> Response:
        return self.request("GET", "/v1/tokens")

    def revoke_token(self, token_id: str) -> Response:
        return self.request("DELETE", f"/v1/tokens/{token_id}")


# -------------------------------------------------------------------------------- sim


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _collect_pids(doc: dict) -> dict[str, int]:
    """Pids in sim.json: "sim" (the supervisor itself) and one per entry of
    "processes" ("kms-sim", "enclave", "parent")."""
    out: dict[str, int] = {}
    if isinstance(doc.get("pid"), int):
        out["sim"] = doc["pid"]
    for name, proc in (doc.get("processes") or {}).items():
        if isinstance(proc, dict) and isinstance(proc.get("pid"), int):
            out[name] = proc["pid"]
    return out


class Sim:
    """One `ekms sim --state-dir DIR` in the foreground of a child process."""

    def __init__(self, state_dir: Path, log_path: Path | None = None, binary: Path | None = None,
                 extra_args: list[str] | None = None):
        self.state_dir = Path(state_dir)
        #: More `ekms sim` flags (e.g. `--metrics-listen tcp://127.0.0.1:0`).
        self.extra_args = list(extra_args or [])
        self.log_path = log_path or self.state_dir.parent / (self.state_dir.name + ".log")
        self.binary = binary or ekms_bin()
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.seen_pids: set[int] = set()

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "ekms.sock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "keys.db"

    @property
    def client(self) -> Client:
        return Client(self.socket_path)

    def start(self) -> "Sim":
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.binary} not found: run `cargo build --workspace` first")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "sim", "--state-dir", str(self.state_dir), *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log_tail(self, n: int = 60) -> str:
        """The last lines of the sim's own output and of each child's log."""
        parts = []
        for path in [self.log_path, *sorted((self.state_dir / "logs").glob("*.log"))]:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            parts.append(f"--- {path.name}\n" + "\n".join(lines[-n:]))
        return "\n".join(parts) or "(no log)"

    def wait_ready(self, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"ekms sim exited with {self.proc.returncode} before it was ready:\n{self.log_tail()}"
                )
            if self.socket_path.exists():
                try:
                    r = self.client.health(timeout=5)
                    # The sim writes sim.json once it has seen the parent healthy.
                    if r.status == 200 and self.remember_pids().keys() >= {"kms-sim", "enclave", "parent"}:
                        return r.json
                    last = r
                except OSError as e:
                    last = e
            time.sleep(0.2)
        raise TimeoutError(f"ekms sim not healthy within {timeout} s (last: {last!r}):\n{self.log_tail()}")

    def sim_json(self) -> dict:
        return json.loads((self.state_dir / "sim.json").read_text())

    def pids(self) -> dict[str, int]:
        """Child pids recorded in sim.json, by dotted key path."""
        try:
            return _collect_pids(self.sim_json())
        except (OSError, ValueError):
            return {}

    def remember_pids(self) -> dict[str, int]:
        pids = self.pids()
        self.seen_pids.update(pids.values())
        return pids

    def pid_of(self, name: str) -> int:
        """The pid of a child named in sim.json ("kms-sim", "enclave", "parent")."""
        pids = self.pids()
        if name not in pids:
            raise KeyError(f"no pid for {name!r} in sim.json: {pids}")
        return pids[name]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the sim, wait for it and for every child pid it recorded; SIGKILL what
        is still there afterwards."""
        self.remember_pids()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(pid_alive(p) for p in self.seen_pids):
            time.sleep(0.1)
        for pid in self.seen_pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def leftover_pids(self) -> list[int]:
        return [p for p in self.seen_pids if pid_alive(p)]


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ------------------------------------------------------------------------------ store


def db_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=15, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 15000")
    return conn


def db_dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, ordered: to compare the store before and after."""
    conn = db_connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


# ---------------------------------------------------------------------------- EVM txs


def _addr(to: str | bytes | None) -> bytes:
    if to is None:
        return b""
    if isinstance(to, bytes):
        return to
    return bytes.fromhex(to[2:] if to.startswith("0x") else to)


def evm_eip1559(
    chain_id: int,
    to: str | None,
    value: int,
    *,
    nonce: int = 0,
    max_priority_fee: int = 1_000_000_000,
    max_fee: int = 30_000_000_000,
    gas: int = 21_000,
    data: bytes = b"",
    access_list: list | None = None,
) -> bytes:
    """0x02 || rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gas, to, value,
    data, accessList]) (EIP-1559)."""
    fields = [chain_id, nonce, max_priority_fee, max_fee, gas, _addr(to), value, data, access_list or []]
    return b"\x02" + rlp.encode(fields)


def evm_eip2930(
    chain_id: int, to: str | None, value: int, *, nonce: int = 0, gas_price: int = 20_000_000_000,
    gas: int = 30_000, data: bytes = b"", access_list: list | None = None,
) -> bytes:
    """0x01 || rlp([chainId, nonce, gasPrice, gas, to, value, data, accessList])."""
    fields = [chain_id, nonce, gas_price, gas, _addr(to), value, data, access_list or []]
    return b"\x01" + rlp.encode(fields)


def evm_legacy(
    chain_id: int, to: str | None, value: int, *, nonce: int = 0, gas_price: int = 20_000_000_000,
    gas: int = 21_000, data: bytes = b"",
) -> bytes:
    """rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0]) (EIP-155 signing form)."""
    return rlp.encode([nonce, gas_price, gas, _addr(to), value, data, chain_id, 0, 0])


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big")


def check_evm_key(key: dict) -> None:
    """The key's address is the EIP-55 address of its public key (computed here)."""
    assert key["algorithm"] == "secp256k1", key
    pub = bytes.fromhex(key["public_key"][2:])
    assert len(pub) == 33 and pub[0] in (2, 3), key
    point = eth_keys.PublicKey.from_compressed_bytes(pub)
    expected = to_checksum_address(keccak(point.to_bytes())[-20:])
    assert key["address"] == expected, (key, expected)
    assert is_checksum_address(key["address"])


def check_evm_signature(answer: dict, unsigned: bytes, address: str) -> str:
    """Checks an EVM sign answer against the unsigned bytes sent and the key's address;
    returns the recovered signer."""
    signed = bytes.fromhex(answer["signed_transaction"][2:])
    sig = answer["signature"]
    r, s, y, v = int(sig["r"], 16), int(sig["s"], 16), sig["y_parity"], sig["v"]
    assert y in (0, 1), sig
    assert 0 < r < SECP256K1_N and 0 < s <= SECP256K1_N // 2, f"not a low-s signature: {sig}"
    recovered = Account.recover_transaction(answer["signed_transaction"])
    assert recovered == address, f"signer {recovered} is not the key's address {address}"
    assert answer["transaction_hash"] == "0x" + keccak(signed).hex(), answer
    if unsigned[0] in (1, 2):
        assert signed[0] == unsigned[0], "transaction type changed"
        fields = rlp.decode(signed[1:])
        unsigned_fields = rlp.decode(unsigned[1:])
        assert fields[:-3] == unsigned_fields, "the signed transaction is not the one sent"
        assert (_int(fields[-3]), _int(fields[-2]), _int(fields[-1])) == (y, r, s)
        assert v == y, sig
    else:
        fields = rlp.decode(signed)
        unsigned_fields = rlp.decode(unsigned)
        chain_id = _int(unsigned_fields[6])
        assert len(fields) == 9 and fields[:6] == unsigned_fields[:6], "the signed transaction is not the one sent"
        assert v == chain_id * 2 + 35 + y, f"EIP-155 v {v} for chain {chain_id}"
        assert (_int(fields[6]), _int(fields[7]), _int(fields[8])) == (v, r, s)
    return recovered


# ------------------------------------------------------------------------- Solana txs


def sol_transfer_ix(payer: Pubkey, to: Pubkey, lamports: int):
    return transfer(TransferParams(from_pubkey=payer, to_pubkey=to, lamports=lamports))


def sol_legacy(payer: Pubkey, instructions: list, blockhash: Hash | None = None) -> tuple[bytes, bytes]:
    """(unsigned transaction with zeroed signature slots, message bytes) of a legacy
    message."""
    msg = Message.new_with_blockhash(instructions, payer, blockhash or Hash.new_unique())
    tx = Transaction.new_unsigned(msg)
    return bytes(tx), bytes(msg)


def sol_v0(payer: Pubkey, instructions: list, blockhash: Hash | None = None) -> tuple[bytes, bytes]:
    """(unsigned transaction with zeroed signature slots, message bytes) of a v0
    message."""
    msg = MessageV0.try_compile(payer, instructions, [], blockhash or Hash.new_unique())
    n = msg.header.num_required_signatures
    tx = VersionedTransaction.populate(msg, [Signature.default()] * n)
    return bytes(tx), to_bytes_versioned(msg)


def check_solana_signature(answer: dict, message: bytes, address: str) -> VersionedTransaction:
    """The signature verifies (solders and libsodium) for the key over the message bytes,
    and the signed transaction carries it in the key's slot, over the same message."""
    pubkey = Pubkey.from_string(address)
    sig = Signature.from_string(answer["signature"])
    assert sig.verify(pubkey, message), "solders: signature does not verify"
    VerifyKey(bytes(pubkey)).verify(message, bytes(sig))  # raises BadSignatureError
    tx = VersionedTransaction.from_bytes(base64.b64decode(answer["signed_transaction"], validate=True))
    msg = tx.message
    msg_bytes = to_bytes_versioned(msg) if isinstance(msg, MessageV0) else bytes(msg)
    assert msg_bytes == message, "the signed transaction carries another message"
    keys = list(msg.account_keys)
    slot = keys.index(pubkey)
    assert slot < msg.header.num_required_signatures
    assert tx.signatures[slot] == sig, "signature not in the key's slot"
    return tx
