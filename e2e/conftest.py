"""Fixtures of the end-to-end interop tests: a real `ekms sim` (kms-sim, enclave and
parent) in a fresh temporary state directory, and a client on its application socket.

The binary comes from $EKMS_BIN_DIR, else $CARGO_TARGET_DIR/debug, else target/debug
(build it first: `cargo build --workspace`). On teardown the sim gets SIGTERM and every
child pid it recorded in sim.json must be gone (they are killed if not, and the test
run fails).

Environment:
- EKMS_BIN_DIR: directory of `ekms`, `ekms-enclave`, `ekms-parent`, `kms-sim`;
- EKMS_E2E_START_TIMEOUT: seconds a sim may take to become healthy (default 90);
- EKMS_E2E_STRIP=1: run copies of the binaries without debug info (faster start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ekms_e2e import Client, Sim, ekms_bin  # noqa: E402

#: Seconds a sim may take to become healthy ($EKMS_E2E_START_TIMEOUT, default 90).
START_TIMEOUT = float(os.environ.get("EKMS_E2E_START_TIMEOUT", "90"))


@pytest.fixture(scope="session", autouse=True)
def _stripped_binaries(tmp_path_factory):
    """With EKMS_E2E_STRIP=1, run copies of the binaries without debug info.

    A debug `ekms-enclave` is ~200 MB, and the simulation measures it (SHA-384, built
    unoptimised) once in `ekms sim` and again in the enclave at every (re)start: that
    takes tens of seconds on a loaded 2-core machine. The stripped copies are the same
    code, only smaller to hash."""
    if os.environ.get("EKMS_E2E_STRIP") != "1":
        yield
        return
    src = ekms_bin().parent
    dst = tmp_path_factory.mktemp("bin")
    for name in ("ekms", "ekms-enclave", "ekms-parent", "kms-sim"):
        subprocess.run(["objcopy", "--strip-debug", str(src / name), str(dst / name)], check=True)
    old = os.environ.get("EKMS_BIN_DIR")
    os.environ["EKMS_BIN_DIR"] = str(dst)
    yield
    if old is None:
        os.environ.pop("EKMS_BIN_DIR", None)
    else:
        os.environ["EKMS_BIN_DIR"] = old


def _start(tmp: Path) -> Sim:
    if not ekms_bin().exists():
        pytest.fail(f"{ekms_bin()} not found: run `cargo build --workspace` (or set EKMS_BIN_DIR)")
    sim = Sim(tmp / "state").start()
    try:
        sim.wait_ready(START_TIMEOUT)
    except BaseException:
        sim.stop()
        raise
    return sim


def _stop(sim: Sim) -> None:
    sim.stop()
    leftover = sim.leftover_pids()
    assert not leftover, f"processes still running after the sim stopped: {leftover}\n{sim.log_tail()}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Sim:
    """One sim shared by the tests of a module (each test makes its own keys)."""
    s = _start(tmp_path_factory.mktemp("ekms"))
    yield s
    _stop(s)


@pytest.fixture
def fresh_sim(tmp_path) -> Sim:
    """A sim of the test's own (for tests that kill processes)."""
    s = _start(tmp_path)
    yield s
    _stop(s)


@pytest.fixture
def client(sim) -> Client:
    return sim.client


def pytest_runtest_makereport(item, call):
    """On a failure, attach the tail of the sim's log to the report."""
    if call.when == "call" and call.excinfo is not None:
        for name in ("sim", "fresh_sim"):
            s = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(s, Sim):
                item.add_report_section("call", "ekms sim log (tail)", s.log_tail(80))
