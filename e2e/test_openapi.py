"""The OpenAPI description (docs/openapi.json, served at `GET /v1/openapi.json`) against a
real `ekms sim`, with schemathesis (issue 11 item 4).

Requests are generated from the document — valid ones and, for every parameter and
body, invalid ones — and sent to the parent on its Unix socket (a requests session
with a Unix-socket adapter: the sim's API has no TCP listener), first with the admin
token, then with none. Every answer must pass:

- `not_a_server_error`: no 5xx;
- `status_code_conformance`, `content_type_conformance`, `response_headers_conformance`,
  `response_schema_conformance`: a status the operation lists, `application/json`, the
  headers (`WWW-Authenticate` on 401) and the body its schema describes;
- `negative_data_rejection`: a request the document calls invalid is refused with a 4xx;
- `unsupported_method`: a method the path does not have is 405 with `Allow`;
- and, without a token or with a wrong one, every protected operation is 401 (this
  stands in for schemathesis's `ignored_auth`, whose probes drop the session and so
  cannot reach a Unix socket).

Generated key and token ids are mostly swapped for ids this module created (else every
key route would only ever answer 404), chosen from the generated value, so a run is as
deterministic as schemathesis's seeded, derandomized generation. `POST /v1/admin/stop`
runs in a test of its own, after everything that signs, and the store is resumed after
it. Bounded: MAX_EXAMPLES per operation and mode ($EKMS_OPENAPI_EXAMPLES, default 20).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket

import pytest
import requests
import schemathesis
import urllib3
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.mutations import render_mutations
from schemathesis.generation import GenerationMode
from solders.pubkey import Pubkey
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from ekms_e2e import REPO, Client, evm_eip1559, sol_legacy, sol_transfer_ix

SPEC = REPO / "docs" / "openapi.json"
BASE_URL = "http://localhost"
MAX_EXAMPLES = int(os.environ.get("EKMS_OPENAPI_EXAMPLES", "20"))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]

DEST = "0x000000000000000000000000000000000000dEaD"
SOL_DEST = Pubkey(bytes([7] * 32))
FEE_CAP = str(30_000_000 * 10**12)
EVM_POLICY = {
    "version": 2,
    "enabled": True,
    "allowed_kinds": ["evm_transaction", "evm_message", "evm_typed_data", "evm_digest"],
    "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_fee_wei": FEE_CAP, "allow_raw_digest": True},
}
SOLANA_POLICY = {
    "version": 2,
    "enabled": True,
    "allowed_kinds": ["solana_transaction", "solana_offchain_message"],
    "solana": {
        "allowed_programs": ["11111111111111111111111111111111"],
        "system_instructions": ["transfer"],
        "max_lamports_per_transfer": 1000,
        "max_lamports_per_transaction": 1000,
        "max_fee_lamports": 100_000,
        "allowed_destinations": [str(SOL_DEST)],
    },
}
OWNER = {"type": "eip191", "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}


def config(max_examples: int, *, with_token: bool) -> SchemathesisConfig:
    """Seeded, derandomized generation of valid and invalid data (no config file). With
    the token, schemathesis generates no `Authorization` header of its own (the test
    sends the admin token on every request, which would make a "missing token" negative
    case valid); without it, it may (a generated token is never valid)."""
    return SchemathesisConfig.from_dict(
        {
            "seed": 11,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "with-security-parameters": not with_token,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "405", "413", "415"]}},
        }
    )


schema = schemathesis.openapi.from_path(SPEC, config=config(MAX_EXAMPLES, with_token=True))
no_token_schema = schemathesis.openapi.from_path(SPEC, config=config(max(3, MAX_EXAMPLES // 4), with_token=False))
STOP = "^/v1/admin/"


def checks_for(case) -> list:
    """CHECKS, less `negative_data_rejection` for a mutation *inside* a policy document:
    the enclave's parser is the authority on policies, and docs/policy.schema.json is
    held to it for the documented examples (signer/tests/policy_docs.rs), not for every
    document a mutation can make (`null` members, which version 1's parser once read as
    absent, are refused for new policies since). Every other invalid input, the
    policy's own type included, must still be refused."""
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.NEGATIVE:
        return CHECKS
    data = meta.phase.data
    lines = [getattr(data, "description", None) or "", *render_mutations(getattr(data, "mutations", None) or ())]
    if any("policy -> " in line for line in lines):
        return [c for c in CHECKS if c is not negative_data_rejection]
    return CHECKS


def hash_pick(value, n: int) -> int:
    """A number below `n` that depends only on `value` (deterministic, unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(repr(value).encode()).digest()[:4], "big") % n


# ----------------------------------------------------------------------- transport


def _unix_connection_class(path: str) -> type:
    class UnixConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if isinstance(self.timeout, (int, float)):
                sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
            return sock

    return UnixConnection


class UnixAdapter(HTTPAdapter):
    """requests over the API's Unix socket: every URL the session sends reaches it."""

    def __init__(self, path: str, timeout: float = 30.0):
        super().__init__()
        self._pool = urllib3.HTTPConnectionPool("localhost", timeout=timeout, maxsize=4)
        self._pool.ConnectionCls = _unix_connection_class(path)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def close(self) -> None:
        self._pool.close()
        super().close()


# ------------------------------------------------------------------------ fixtures


class Api:
    """The sim's socket as schemathesis sees it, and the ids generated ones map to."""

    def __init__(self, client: Client):
        self.client = client
        self.session = requests.Session()
        self.session.mount("http://", UnixAdapter(client.socket_path))
        self.key_ids: list[str] = []
        self.token_ids: list[str] = []
        self.revoked_token = ""

    def auth(self) -> dict[str, str]:
        return self.client.auth_headers()

    def use_real_ids(self, case) -> None:
        """Swaps a generated `key_id` / `token_id` for one of ours (3 in 4 cases), picked
        by the generated value; invalid path parameters are left as generated."""
        meta = case.meta
        if meta is not None and meta.generation.mode == GenerationMode.NEGATIVE:
            return
        for name, ids in (("key_id", self.key_ids), ("token_id", self.token_ids)):
            value = (case.path_parameters or {}).get(name)
            if value is None or not ids:
                continue
            pick = hash_pick(value, len(ids) + 1)
            if pick < len(ids):
                case.path_parameters[name] = ids[pick]


@pytest.fixture(scope="module")
def api(sim) -> Api:
    api = Api(sim.client)
    c = sim.client
    for algorithm, policy, owner in (
        ("secp256k1", EVM_POLICY, None),
        ("ed25519", SOLANA_POLICY, None),
        ("secp256k1", EVM_POLICY, OWNER),
    ):
        body = {"algorithm": algorithm, "policy": policy, "label": "openapi"}
        if owner:
            body["owner"] = owner
        r = c.request("POST", "/v1/keys", body)
        assert r.status == 201, r
        api.key_ids.append(r.json["key_id"])
    for i in range(3):
        r = c.create_token(f"openapi-{i}", ["sign"], key_ids=[api.key_ids[0]])
        assert r.status == 201, r
        api.token_ids.append(r.json["token_id"])
    r = c.create_token("openapi-revoked", ["admin"])
    assert r.status == 201, r
    api.revoked_token = r.json["token"]
    assert c.revoke_token(r.json["token_id"]).status == 200
    yield api
    api.session.close()


# --------------------------------------------------------------------------- tests


def test_serves_the_committed_document(client):
    r = client.with_token(None).request("GET", "/v1/openapi.json")
    assert r.status == 200, r
    assert r.headers["content-type"] == "application/json"
    assert r.body == SPEC.read_bytes()
    assert json.loads(r.body)["openapi"].startswith("3.1.")


def test_known_good_answers_match_the_document(api):
    """The success answers random data rarely reaches: every signature kind, a proposal,
    a policy change, disable and enable, each validated against the document."""
    c = api.client
    evm = c.create_key("secp256k1", EVM_POLICY)
    sol = c.create_key("ed25519", SOLANA_POLICY)
    payer = Pubkey.from_string(sol["address"])
    unsigned_sol, _ = sol_legacy(payer, [sol_transfer_ix(payer, SOL_DEST, 1)])
    offchain = (b"\xffsolana offchain" + bytes([0]) + bytes(32) + bytes([0, 1]) + bytes(payer)
                + len(b"hello").to_bytes(2, "little") + b"hello")
    typed = {
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}], "Mail": [{"name": "text", "type": "string"}]},
        "primaryType": "Mail",
        "domain": {"name": "openapi"},
        "message": {"text": "hello"},
    }
    cases = [
        ("POST", "/v1/keys/{key_id}/sign", evm, {"kind": "evm_transaction", "payload": "0x" + evm_eip1559(1, DEST, 0).hex()}),
        ("POST", "/v1/keys/{key_id}/sign", evm, {"kind": "evm_message", "payload": "0x" + b"hello".hex()}),
        ("POST", "/v1/keys/{key_id}/sign", evm, {"kind": "evm_digest", "payload": "0x" + "5a" * 32}),
        ("POST", "/v1/keys/{key_id}/sign", sol, {"kind": "solana_transaction", "payload": base64.b64encode(unsigned_sol).decode()}),
        ("POST", "/v1/keys/{key_id}/sign", sol, {"kind": "solana_offchain_message", "payload": base64.b64encode(offchain).decode()}),
        ("POST", "/v1/keys/{key_id}/policy/proposal", evm, {"policy": EVM_POLICY}),
        ("PUT", "/v1/keys/{key_id}/policy", evm, {"policy": EVM_POLICY}),
        ("POST", "/v1/keys/{key_id}/disable", evm, {}),
        ("POST", "/v1/keys/{key_id}/enable/proposal", evm, {}),
        ("POST", "/v1/keys/{key_id}/enable", evm, {}),
        ("GET", "/v1/keys/{key_id}", sol, None),
    ]
    statuses = []
    for method, path, key, body in cases:
        with_body = {} if body is None else {"body": body, "media_type": "application/json"}
        case = schema[path][method].Case(path_parameters={"key_id": key["key_id"]}, **with_body)
        response = case.call_and_validate(base_url=BASE_URL, session=api.session, headers=api.auth(), checks=CHECKS)
        statuses.append((path, response.status_code, response.text[:200]))
    assert [s for _, s, _ in statuses] == [200] * len(cases), [x for x in statuses if x[1] != 200]
    # evm_typed_data: refused by this policy (no typed_data rules), a documented 403.
    case = schema["/v1/keys/{key_id}/sign"]["POST"].Case(
        path_parameters={"key_id": evm["key_id"]}, body={"kind": "evm_typed_data", "payload": typed},
        media_type="application/json")
    case.call_and_validate(base_url=BASE_URL, session=api.session, headers=api.auth(), checks=CHECKS)


@schema.exclude(path_regex=STOP).parametrize()
def test_answers_conform_with_the_admin_token(case, api):
    api.use_real_ids(case)
    case.call_and_validate(base_url=BASE_URL, session=api.session, headers=api.auth(), checks=checks_for(case))


@schema.include(path_regex=STOP).parametrize()
def test_store_wide_stop_and_resume_conform(case, api):
    """Last of the admin-token runs: a stop refuses every signature until resumed."""
    try:
        case.call_and_validate(base_url=BASE_URL, session=api.session, headers=api.auth(), checks=checks_for(case))
    finally:
        r = api.client.request("POST", "/v1/admin/resume", {})
        assert r.status == 200, r


@no_token_schema.parametrize()
def test_answers_conform_without_a_token(case, api):
    """Every protected operation is 401 `unauthenticated` with `WWW-Authenticate`, with no
    token or a revoked one."""
    api.use_real_ids(case)
    # Every other case carries a token that was valid once; the rest none of ours (a
    # generated `Authorization` header, if any, is never a valid token).
    revoked = hash_pick((case.path_parameters, case.query, case.body), 2)
    headers = {"Authorization": f"Bearer {api.revoked_token}"} if revoked else None
    response = case.call_and_validate(base_url=BASE_URL, session=api.session, headers=headers, checks=checks_for(case))
    # (The coverage phase also sends methods the path does not have: 405, checked above.)
    if response.request.method == case.operation.method.upper() and case.operation.path not in (
        "/v1/health",
        "/v1/openapi.json",
    ):
        assert response.status_code == 401, (case.operation.label, response.status_code, response.text[:300])
