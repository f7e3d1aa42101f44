"""Prometheus metrics (issue 11 item 5, docs/METRICS.md): a sim started with
`--metrics-listen tcp://127.0.0.1:0` serves `GET /metrics` on that listener only; a
signature and a refusal move the enclave-reported and the parent's counters by exactly
one each, as parsed by the official Prometheus Python parser; no label or metric name
carries a key id, an address or a token; the app socket does not serve /metrics."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from conftest import START_TIMEOUT, _stop
from ekms_e2e import ONE_ETH, Sim, evm_eip1559

DEST = "0x000000000000000000000000000000000000dEaD"
SIGN_ROUTE = "/v1/keys/{key_id}/sign"
POLICY = {
    "enabled": True,
    "evm": {
        "chain_ids": [1],
        "allowed_destinations": [DEST],
        "max_value_wei": str(ONE_ETH),
        "max_fee_wei": str(30_000_000 * 1_000_000_000_000),
    },
}


@pytest.fixture(scope="module")
def msim(tmp_path_factory) -> Sim:
    s = Sim(
        tmp_path_factory.mktemp("ekms-metrics") / "state",
        extra_args=["--metrics-listen", "tcp://127.0.0.1:0"],
    ).start()
    try:
        s.wait_ready(START_TIMEOUT)
    except BaseException:
        s.stop()
        raise
    yield s
    _stop(s)


def metrics_addr(sim: Sim) -> tuple[str, int]:
    listen = sim.sim_json()["metrics_listen"]
    assert listen.startswith("tcp://"), listen
    url = urllib.parse.urlsplit(listen.replace("tcp://", "http://"))
    assert url.port != 0
    return url.hostname, url.port


def scrape_raw(sim: Sim, path: str = "/metrics") -> tuple[int, str, str]:
    host, port = metrics_addr(sim)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample, by (name, labels), through the Prometheus text parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def scrape(sim: Sim) -> dict:
    status, ctype, text = scrape_raw(sim)
    assert status == 200, text
    assert ctype.startswith("application/openmetrics-text"), ctype
    # The strict OpenMetrics parser accepts it too (it raises on any violation).
    list(parse_openmetrics(text))
    return samples(text)


@pytest.fixture(scope="module")
def key(msim):
    return msim.client.create_key("secp256k1", POLICY)


def test_a_signature_and_a_refusal_move_the_counters_by_one(msim, key):
    client = msim.client
    before = scrape(msim)
    assert value(before, "ekms_enclave_up") == 1
    assert value(before, "ekms_enclave_connected") == 1
    assert value(before, "ekms_enclave_state", state="ready") == 1

    ok = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1))
    assert ok.status == 200, ok
    refused = client.sign_evm(key["key_id"], evm_eip1559(1, DEST, ONE_ETH + 1))
    assert refused.status == 403 and refused.error.get("rule") == "evm.max_value_wei", refused

    after = scrape(msim)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    evm = {"algorithm": "secp256k1", "kind": "evm_transaction"}
    assert delta("ekms_signatures_total", **evm) == 1
    assert delta("ekms_refusals_total", **evm, rule="evm.max_value_wei") == 1
    # Nothing else was signed or refused in between.
    for name in ("ekms_signatures_total", "ekms_refusals_total"):
        total = sum(v for (n, _), v in after.items() if n == name)
        total -= sum(v for (n, _), v in before.items() if n == name)
        assert total == 1, name
    assert delta("ekms_http_requests_total", method="POST", route=SIGN_ROUTE, code="200") == 1
    assert delta("ekms_http_requests_total", method="POST", route=SIGN_ROUTE, code="403") == 1
    assert delta("ekms_http_request_duration_seconds_count", method="POST", route=SIGN_ROUTE) == 2
    assert delta("ekms_enclave_round_trip_seconds_count", request="sign") == 2
    # Each signature took one data key: from the cache, or from KMS Decrypt.
    lookups = delta("ekms_dek_cache_hits_total") + delta("ekms_dek_cache_misses_total")
    assert lookups == 2
    assert delta("ekms_kms_requests_total", operation="Decrypt") == delta("ekms_dek_cache_misses_total") + delta(
        "ekms_dek_cache_refreshes_total"
    )
    # Configure's readiness round trip and the keyring's creation: GenerateDataKey.
    assert value(after, "ekms_kms_requests_total", operation="GenerateDataKey") >= 2
    assert value(after, "ekms_kms_request_duration_seconds_count", operation="GenerateDataKey") >= 2
    assert value(after, "ekms_enclave_uptime_seconds") >= 0


def test_no_label_or_name_leaks_a_key_id_address_or_token(msim, key):
    client = msim.client
    client.sign_evm(key["key_id"], evm_eip1559(1, DEST, 1))
    client.get_key(key["key_id"])
    client.request("GET", f"/v1/keys/{key['key_id']}/no-such-route")
    _, _, text = scrape_raw(msim)
    token = client.admin_token_path().read_text().strip()
    secrets = [key["key_id"], key["address"], key["address"].lower(), key["address"][2:].lower(), token]
    for needle in secrets:
        assert needle not in text, needle
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("ekms_"), family.name
        for s in family.samples:
            for label, v in s.labels.items():
                if label == "route":
                    assert v.startswith("/v1/") or v == "unmatched", v
                    assert key["key_id"] not in v, v
    m = samples(text)
    assert value(m, "ekms_http_requests_total", method="GET", route="unmatched", code="404") >= 1
    assert value(m, "ekms_http_requests_total", method="GET", route="/v1/keys/{key_id}", code="200") >= 1


def test_metrics_are_not_served_on_the_app_socket(msim):
    client = msim.client
    for c in (client, client.with_token(None)):
        r = c.request("GET", "/metrics")
        assert r.status == 404, r
        assert b"ekms_" not in r.body
    # And the metrics listener serves nothing of the app API.
    status, _, _ = scrape_raw(msim, "/v1/health")
    assert status == 404

