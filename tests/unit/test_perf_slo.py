"""SLO parsing and gating."""

from __future__ import annotations

import pytest

from tritonllm.errors import ConfigError
from tritonllm.perf.metrics import RequestRecord, summarize
from tritonllm.perf.slo import check, parse_slos


def _summary(ttfts: list[float], failed: int = 0):
    recs = []
    for i, t in enumerate(ttfts):
        r = RequestRecord(i, "c", str(i), 0.0, first_token=t, end=t + 0.5,
                          response_times=[t, t + 0.25, t + 0.5], output_tokens=3)
        recs.append(r)
    recs += [RequestRecord(100 + i, "c", "x", 0.0, error_kind="timeout") for i in range(failed)]
    return summarize(recs)


def test_parse_keys_directions_and_errors() -> None:
    slos = parse_slos("ttft_p99_ms=500, itl_p50_ms=40,error_rate=0.01,output_tps=100,rps=2,"
                      "e2e_mean_ms=900")
    assert [(s.key, s.op, s.limit) for s in slos] == [
        ("ttft_p99_ms", "<=", 500), ("itl_p50_ms", "<=", 40), ("error_rate", "<=", 0.01),
        ("output_tps", ">=", 100), ("rps", ">=", 2), ("e2e_mean_ms", "<=", 900)]
    for bad, words in [("ttft_p42_ms=1", "unknown key"), ("latency=3", "unknown key"),
                       ("ttft_p99_ms", "KEY=VALUE"), ("ttft_p99_ms=fast", "not a number"),
                       ("error_rate=2", "fraction"), ("ttft_p99_ms=-1", ">= 0"),
                       ("rps=1,rps=2", "twice"), ("", "no objectives")]:
        with pytest.raises(ConfigError, match=words):
            parse_slos(bad)


def test_met_and_violated() -> None:
    s = _summary([0.010, 0.020, 0.030, 0.040])
    res = check(parse_slos("ttft_p99_ms=100,error_rate=0"), {"concurrency=1": s})
    assert all(r.passed for r in res)
    res = check(parse_slos("ttft_p99_ms=0.001,itl_p50_ms=1000"), {"concurrency=1": s})
    assert [r.passed for r in res] == [False, True]
    assert res[0].describe().startswith("ttft_p99_ms = 39.") and "> 0.001" in res[0].describe()


def test_throughput_floor_and_error_rate() -> None:
    s = _summary([0.01] * 4, failed=1)
    res = check(parse_slos("error_rate=0.1,rps=1000000"), {"p": s})
    assert [r.passed for r in res] == [False, False]
    assert res[0].value == pytest.approx(0.2)


def test_no_data_is_a_violation() -> None:
    s = _summary([], failed=2)
    (r,) = check(parse_slos("ttft_p99_ms=1e9"), {"p": s})
    assert not r.passed and "no data" in r.describe()
