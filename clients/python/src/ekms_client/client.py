"""The enclave-kms application API (README "Application API") over HTTP/1.1 + JSON.

The parent listens on a Unix socket (``--listen unix:/path``, default
``<state-dir>/ekms.sock``) or on loopback TCP (``tcp://127.0.0.1:PORT``). Every route
but ``GET /v1/health`` takes ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from .errors import EkmsConnectionError, EkmsError, PolicyDenied, Unauthorized

__all__ = ["EkmsClient", "DEFAULT_TIMEOUT"]

#: Seconds to wait for the connection and for each answer (a signature takes one
#: enclave round trip; an enclave that is busy answers ``503 enclave_busy`` at once).
DEFAULT_TIMEOUT = 30.0


class _UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over an ``AF_UNIX`` stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class EkmsClient:
    """A client of one enclave-kms parent.

    Args:
        socket_path: the parent's listener: a Unix socket path (``"/var/lib/ekms/ekms.sock"``,
            also spelt ``"unix:/var/lib/ekms/ekms.sock"``) or ``"tcp://127.0.0.1:PORT"``.
        token: the API token (``"ekms_…"``).
        token_file: a file holding the token (surrounding whitespace ignored), read at
            every request, so a rotated token is picked up.
            With neither, ``$EKMS_TOKEN`` is used if set, else requests go without a token
            (only ``health()`` then succeeds).
        timeout: seconds for the connection and for each answer.

    One connection per request: a client may be shared by threads.

    Every method raises :class:`~ekms_client.PolicyDenied`,
    :class:`~ekms_client.Unauthorized` or :class:`~ekms_client.EkmsError` for an error
    answer, and :class:`~ekms_client.EkmsConnectionError` when the parent cannot be reached.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        token: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        target = os.fspath(socket_path)
        self._tcp: tuple[str, int] | None = None
        if target.startswith("tcp://"):
            hostport = target[len("tcp://"):].rstrip("/")
            host, _, port = hostport.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected tcp://HOST:PORT, got {target!r}")
            self._tcp = (host.strip("[]"), int(port))
        elif target.startswith("unix:"):
            target = target[len("unix:"):]
        self.socket_path = target
        self.timeout = timeout
        self._token = token
        self._token_file = Path(token_file) if token_file is not None else None

    def __repr__(self) -> str:
        where = f"tcp://{self._tcp[0]}:{self._tcp[1]}" if self._tcp else self.socket_path
        return f"EkmsClient({where!r})"

    # ------------------------------------------------------------------ transport

    def token(self) -> str | None:
        """The token sent with the next request (``None``: no ``Authorization`` header)."""
        if self._token is not None:
            return self._token
        if self._token_file is not None:
            return self._token_file.read_text().strip()
        return os.environ.get("EKMS_TOKEN") or None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._tcp is not None:
            return http.client.HTTPConnection(self._tcp[0], self._tcp[1], timeout=timeout)
        return _UnixHTTPConnection(self.socket_path, timeout)

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """Sends one request and returns the decoded JSON answer of a 2xx status.

        Args:
            method: ``"GET"``, ``"POST"``, ``"PUT"`` or ``"DELETE"``.
            path: the route with its query, e.g. ``"/v1/keys?limit=10"``.
            body: a JSON-serialisable value sent as ``application/json`` (``None``: no body).

        Raises:
            PolicyDenied, Unauthorized, EkmsError: for an error answer.
            EkmsConnectionError: when no answer arrived.
        """
        headers = {"Accept": "application/json"}
        token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            try:
                conn.request(method, path, body=data, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                # The parent may answer (413) and close before reading the whole body;
                # its answer is still in the receive buffer.
                pass
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except OSError as e:
            raise EkmsConnectionError("connection_failed", f"{method} {path}: {e}") from e
        except http.client.HTTPException as e:
            raise EkmsConnectionError("connection_failed", f"{method} {path}: {e!r}") from e
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if 200 <= status < 300:
            if doc is None and raw:
                raise EkmsError("invalid_answer", f"{method} {path}: not JSON: {raw[:200]!r}", status)
            return doc
        raise _error(status, doc, raw)

    # ------------------------------------------------------------------ routes

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: ``{"status": "ok", "mode": "simulation"|"nitro", "pcrs": {…}}``
        once the enclave is ready (``503 not_ready`` raises before)."""
        return self.request("GET", "/v1/health")

    def create_key(
        self,
        algorithm: str,
        *,
        policy: Mapping[str, Any] | None = None,
        label: str | None = None,
        owner: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/keys`` (scope ``keys:create``): a new key in the enclave.

        Args:
            algorithm: ``"secp256k1"`` (EVM) or ``"ed25519"`` (Solana).
            policy: the key's policy (docs/POLICY.md); none: the key signs nothing.
            label: a free label.
            owner: ``{"type": "eip191", "address": "0x…"}`` or
                ``{"type": "ed25519", "public_key": "<base58>"}`` (README "Owners").

        Returns:
            ``{"key_id", "algorithm", "label", "public_key", "address" (EIP-55 or base58),
            "policy_version", "created_at", "owner", "statement"}``.
        """
        body: dict[str, Any] = {"algorithm": algorithm}
        if policy is not None:
            body["policy"] = policy
        if label is not None:
            body["label"] = label
        if owner is not None:
            body["owner"] = owner
        return self.request("POST", "/v1/keys", body)

    def get_key(self, key_id: str) -> dict[str, Any]:
        """``GET /v1/keys/{key_id}`` (scope ``keys:read``): the key with its policy,
        ``policy_version``, ``owner`` and ``statement``. ``404 key_not_found`` raises."""
        return self.request("GET", f"/v1/keys/{_seg(key_id)}")

    def list_keys(self, limit: int | None = None) -> list[dict[str, Any]]:
        """``GET /v1/keys`` (scope ``keys:read``): the keys, newest first (``limit`` ≤ 1000)."""
        path = "/v1/keys" if limit is None else f"/v1/keys?limit={int(limit)}"
        return self.request("GET", path)["keys"]

    def set_policy(self, key_id: str, policy: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        """``PUT /v1/keys/{key_id}/policy`` (scope ``policy:write``): ``{"policy_version": N}``.

        ``fields``: ``version``, ``expires_at``, ``owner_signature`` for a key with an owner
        (README "Owners")."""
        return self.request("PUT", f"/v1/keys/{_seg(key_id)}/policy", {"policy": policy, **fields})

    def sign(self, key_id: str, kind: str, payload: Any, *, timeout: float | None = None) -> dict[str, Any]:
        """``POST /v1/keys/{key_id}/sign`` (scope ``sign``): one signature by the enclave.

        Args:
            kind: ``"evm_transaction"``, ``"evm_message"``, ``"evm_typed_data"``,
                ``"evm_digest"``, ``"solana_transaction"`` or ``"solana_offchain_message"``.
            payload: as the kind wants it (README): ``0x`` hex for EVM bytes, base64 for
                Solana bytes, the EIP-712 JSON object for typed data.

        Returns:
            the answer as the README gives it for the kind, with its audit ``receipt``
            (``{"seq", "record_sha256", "signature"}``).
        """
        return self.request(
            "POST", f"/v1/keys/{_seg(key_id)}/sign", {"kind": kind, "payload": payload}, timeout=timeout
        )

    def sign_evm_transaction(self, key_id: str, unsigned: bytes) -> dict[str, Any]:
        """``sign`` of kind ``evm_transaction``: ``unsigned`` EIP-2718 bytes (legacy with an
        EIP-155 chain id, ``0x01`` or ``0x02``). Returns ``{"signature": {"r", "s",
        "y_parity", "v"}, "signed_transaction": "0x…", "transaction_hash": "0x…", "receipt"}``."""
        return self.sign(key_id, "evm_transaction", "0x" + bytes(unsigned).hex())

    def sign_solana(self, key_id: str, message_or_transaction: bytes) -> dict[str, Any]:
        """``sign`` of kind ``solana_transaction``: a serialized transaction (signature
        slots present) or a bare message, legacy or v0. Returns ``{"signature":
        "<base58>", "signed_transaction": "<base64>", "receipt"}``."""
        return self.sign(key_id, "solana_transaction", base64.b64encode(bytes(message_or_transaction)).decode())

    def attestation(self, nonce: bytes | None = None) -> dict[str, Any]:
        """``GET /v1/attestation?nonce=HEX`` (any valid token): ``{"document": "<base64
        COSE_Sign1>"}``, fresh."""
        path = "/v1/attestation" if nonce is None else f"/v1/attestation?nonce={bytes(nonce).hex()}"
        return self.request("GET", path)


def _seg(value: str) -> str:
    """A path segment (key ids are UUIDs; anything else is escaped, never a path)."""
    return quote(str(value), safe="")


def _error(status: int, doc: Any, raw: bytes) -> EkmsError:
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        text = raw[:200].decode("utf-8", "replace")
        return EkmsError(f"http_{status}", text or http.client.responses.get(status, ""), status, body=doc)
    code, message = err["code"], str(err.get("message", ""))
    if code == "policy_denied":
        return PolicyDenied(str(err.get("rule", "")), message, status, body=doc)
    if status == 401 or code in ("unauthenticated", "forbidden"):
        return Unauthorized(code, message, status, body=doc)
    rule = err.get("rule")
    return EkmsError(code, message, status, rule=rule if isinstance(rule, str) else None, body=doc)
