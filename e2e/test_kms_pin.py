"""A host process races the parent to configure a freshly restarted enclave with a KMS of
its own (issue 6 item 3). The real `ekms sim` starts the enclave pinned to its KMS key
and kms-sim's https endpoint, so every such `Configure` is refused — `bad_request` while
the enclave boots, `already_configured` once the parent got it Ready — and the parent
comes back healthy (no alarm: the enclave is Ready for the parent's own target), with
the same keys signing.

A second, real `ekms-parent` whose KMS key is not the one the running enclave serves
finds the enclave "configured by someone else": it raises its alarm (`/v1/health` and
every request answer 503 `enclave_configured_by_another`, an error in its log), while
the simulation's own parent keeps serving.

The enclave protocol is spoken directly on its Unix socket: a u32 big-endian length and
one CBOR value per frame (shared/src/codec.rs), with the small CBOR encoder and decoder
below."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time

import subprocess

from ekms_e2e import ONE_ETH, PROTOCOL_VERSION, Client, bin_dir, check_evm_signature, evm_eip1559

DEST = "0x000000000000000000000000000000000000dEaD"
POLICY = {
    "enabled": True,
    "evm": {"chain_ids": [1], "allowed_destinations": [DEST], "max_value_wei": str(ONE_ETH),
            "max_fee_wei": str(10**16)},
}
ATTACKER_KEY = "arn:aws:kms:us-east-1:444455556666:key/0f0f0f0f-attacker"


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for code, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | code]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor_encode(v) -> bytes:
    if v is None:
        return b"\xf6"
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, str):
        b = v.encode()
        return _head(3, len(b)) + b
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, list):
        return _head(4, len(v)) + b"".join(cbor_encode(x) for x in v)
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(cbor_encode(k) + cbor_encode(x) for k, x in v.items())
    raise TypeError(type(v))


def cbor_decode(b: bytes, i: int = 0):
    """(value, next index) for the definite-length subset the enclave writes."""
    first = b[i]
    major, info = first >> 5, first & 31
    i += 1
    if major == 7:
        return {20: False, 21: True, 22: None}.get(info), i
    if info < 24:
        n = info
    else:
        size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        n = int.from_bytes(b[i : i + size], "big")
        i += size
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        raw = b[i : i + n]
        return (raw if major == 2 else raw.decode()), i + n
    if major == 4:
        out = []
        for _ in range(n):
            x, i = cbor_decode(b, i)
            out.append(x)
        return out, i
    if major == 5:
        out = {}
        for _ in range(n):
            k, i = cbor_decode(b, i)
            x, i = cbor_decode(b, i)
            out[k if not isinstance(k, (bytes, list, dict)) else repr(k)] = x
        return out, i
    raise ValueError(f"CBOR major {major}")


def configure_frame(request_id: int, kms: dict) -> bytes:
    body = cbor_encode(
        {
            "version": PROTOCOL_VERSION,
            "request_id": request_id,
            "body": {"Configure": {"kms": kms, "dek_cache": {"ttl_secs": 60, "max_uses": 10}}},
        }
    )
    return struct.pack(">I", len(body)) + body


def call(path: str, frame: bytes, timeout: float = 30.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(frame)
        prefix = b""
        while len(prefix) < 4:
            chunk = s.recv(4 - len(prefix))
            if not chunk:
                raise ConnectionError("closed")
            prefix += chunk
        (n,) = struct.unpack(">I", prefix)
        body = b""
        while len(body) < n:
            chunk = s.recv(n - len(body))
            if not chunk:
                raise ConnectionError("closed")
            body += chunk
        return cbor_decode(body)[0]
    finally:
        s.close()


def sim_settings(sim) -> dict:
    info = sim.sim_json()
    return {"endpoint": info["kms_endpoint"], "arn": info["kms_key_arn"], "socket": info["enclave_socket"]}


def attacker_configs(settings: dict) -> list[tuple[str, dict]]:
    honest = {
        "region": "us-east-1",
        "endpoint_url": settings["endpoint"],
        "kms_key_id": settings["arn"],
        "credentials": {"access_key_id": "AKIDATTACKER", "secret_access_key": "x", "session_token": None},
    }
    port = int(settings["endpoint"].rsplit(":", 1)[1])
    fake = lambda **kw: {**honest, **kw}  # noqa: E731
    return [
        ("fake endpoint and key", fake(endpoint_url="https://127.0.0.1:1", kms_key_id=ATTACKER_KEY)),
        ("fake endpoint", fake(endpoint_url=f"https://127.0.0.1:{port + 1}")),
        ("plain http to kms-sim", fake(endpoint_url=f"http://127.0.0.1:{port}")),
        ("attacker key", fake(kms_key_id=ATTACKER_KEY)),
        ("other region", fake(region="eu-west-1")),
        ("no endpoint", fake(endpoint_url=None)),
    ]


def refused(answer) -> str:
    """The refusal's kind, or fail if the Configure was accepted."""
    text = json.dumps(answer, default=repr)
    assert "Configured" not in text or "AlreadyConfigured" in text, f"accepted: {text}"
    for kind in ("BadRequest", "AlreadyConfigured"):
        if kind in text:
            return kind
    raise AssertionError(f"unexpected answer {text}")


def test_kms_sim_is_https_and_the_enclave_is_pinned(sim):
    settings = sim_settings(sim)
    assert settings["endpoint"].startswith("https://127.0.0.1:"), settings
    assert settings["arn"].startswith("arn:aws:kms:us-east-1:"), settings
    # The enclave is Ready for the parent's target: every other target is refused.
    for what, kms in attacker_configs(settings):
        assert refused(call(settings["socket"], configure_frame(7, kms))) == "AlreadyConfigured", what
    assert sim.client.health().status == 200


def test_fake_kms_racing_a_restarted_enclave_gets_nothing(fresh_sim):
    sim = fresh_sim
    client = sim.client
    key = client.create_key("secp256k1", POLICY)
    settings = sim_settings(sim)
    enclave_pid = sim.pid_of("enclave")
    os.kill(enclave_pid, signal.SIGKILL)

    # Connect to the new enclave as early as possible and send every fake Configure.
    answers: list[tuple[str, str]] = []
    deadline = time.monotonic() + 120
    configs = attacker_configs(settings)
    while time.monotonic() < deadline and len(answers) < len(configs):
        what, kms = configs[len(answers)]
        try:
            answer = call(settings["socket"], configure_frame(100 + len(answers), kms))
        except (FileNotFoundError, ConnectionError, ConnectionRefusedError, socket.timeout, OSError):
            time.sleep(0.01)
            continue
        answers.append((what, refused(answer)))
    assert len(answers) == len(configs), answers
    print("fake Configure answers:", answers)
    # The first answers typically come from a Booting enclave (bad_request: not the pin);
    # once the parent got it Ready, already_configured. Never accepted.
    assert all(kind in ("BadRequest", "AlreadyConfigured") for _, kind in answers), answers

    # The parent comes back healthy (no alarm) and the same key signs.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = client.health(timeout=30)
        if r.status == 200 and sim.pids().get("enclave") != enclave_pid:
            break
        time.sleep(0.1)
    assert r.status == 200, r
    unsigned = evm_eip1559(1, DEST, 1)
    signed = client.sign_evm(key["key_id"], unsigned)
    assert signed.status == 200, signed
    check_evm_signature(signed.json, unsigned, key["address"])
    log = (sim.state_dir / "logs" / "enclave.log").read_text(errors="replace")
    assert "Configure refused: not the pinned KMS target" in log
    parent_log = (sim.state_dir / "logs" / "parent.log").read_text(errors="replace")
    assert "ALARM" not in parent_log


def test_a_parent_whose_kms_target_is_not_the_enclaves_raises_the_alarm(sim, tmp_path):
    settings = sim_settings(sim)
    other = tmp_path / "other-parent"
    other.mkdir(mode=0o700)
    log = open(other / "parent.log", "wb")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIDOTHERPARENT",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    env.pop("AWS_SESSION_TOKEN", None)
    proc = subprocess.Popen(
        [
            str(bin_dir() / "ekms-parent"),
            "--state-dir", str(other),
            "--listen", f"unix:{other / 'ekms.sock'}",
            "--enclave", f"unix:{settings['socket']}",
            "--db", str(other / "keys.db"),
            "--kms-region", "us-east-1",
            "--kms-endpoint-url", settings["endpoint"],
            "--kms-key-id", ATTACKER_KEY,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        client = Client(other / "ekms.sock")
        deadline = time.monotonic() + 60
        r = None
        while time.monotonic() < deadline:
            try:
                r = client.health(timeout=5)
                if r.code == "enclave_configured_by_another":
                    break
            except (FileNotFoundError, ConnectionRefusedError, OSError):
                pass
            time.sleep(0.1)
        assert r is not None and r.status == 503, r
        assert r.code == "enclave_configured_by_another", r
        assert ATTACKER_KEY in r.error["message"] and settings["arn"] in r.error["message"], r
        created = client.request("POST", "/v1/keys", {"algorithm": "ed25519"})
        assert (created.status, created.code) == (503, "enclave_configured_by_another"), created
        # The simulation's own parent is unaffected.
        assert sim.client.health().status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    text = (other / "parent.log").read_text(errors="replace")
    assert "ALARM: enclave configured by another" in text, text[-2000:]
