"""Fixtures of the end-to-end interop tests: a real `ekms sim` (kms-sim, enclave and
parent) in a fresh temporary state directory, and a client on its application socket.

The binary comes from $EKMS_BIN_DIR, else $CARGO_TARGET_DIR/debug, else target/debug
(build it first: `cargo build --workspace`). On teardown the sim gets SIGTERM and every
child pid it recorded in sim.json must be gone (they are killed if not, and the test
run fails).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ekms_e2e import Client, Sim, ekms_bin  # noqa: E402

#: Seconds a sim may take to become healthy ($EKMS_E2E_START_TIMEOUT, default 90).
START_TIMEOUT = float(os.environ.get("EKMS_E2E_START_TIMEOUT", "90"))


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
