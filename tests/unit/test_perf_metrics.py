"""Summary statistics: percentiles against numpy, summaries against hand-made records."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tritonllm.perf.metrics import PERCENTILES, RequestRecord, Stats, percentile, summarize


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_percentile_matches_numpy_linear(n: int) -> None:
    rng = random.Random(n)
    data = [rng.lognormvariate(0, 1) for _ in range(n)]
    for q in (0, *PERCENTILES, 33.3, 100):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)), rel=1e-12)


def test_stats_match_numpy() -> None:
    rng = random.Random(7)
    data = [rng.uniform(1, 100) for _ in range(257)]
    s = Stats.of(data)
    assert s is not None
    assert s.count == 257
    assert s.mean == pytest.approx(np.mean(data))
    assert s.std == pytest.approx(np.std(data))  # population std, as genai-perf
    assert (s.min, s.max) == (min(data), max(data))
    assert s.p99 == pytest.approx(np.percentile(data, 99))
    assert s.get("p50") == pytest.approx(np.median(data))
    assert Stats.of([]) is None
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(KeyError):
        s.get("p42")


def _rec(i: int, start: float, times: list[float], out: int | None, error: str | None = None
         ) -> RequestRecord:
    r = RequestRecord(index=i, point="concurrency=2", request_id=str(i), start=start)
    if error:
        r.error_kind = error
        return r
    r.response_times = times
    r.first_token = times[0]
    r.end = times[-1]
    r.output_tokens = out
    r.input_tokens = 10
    return r


def test_summary_definitions() -> None:
    recs = [
        _rec(0, 0.0, [0.1, 0.2, 0.5], 5),  # ttft .1, e2e .5, itl (.5-.1)/4 = .1
        _rec(1, 0.2, [0.4, 1.0], 3),  # ttft .2, e2e .8, itl (.8-.2)/2 = .3
        _rec(2, 0.3, [], None, error="timeout"),
        _rec(3, 0.5, [0.9], 1),  # one response: no ITL
    ]
    s = summarize(recs)
    assert (s.requests, s.completed, s.errors) == (4, 3, {"timeout": 1})
    assert s.error_rate == pytest.approx(0.25)
    assert s.duration_s == pytest.approx(1.0)  # first send 0.0 .. last response 1.0
    assert s.output_tokens_per_s == pytest.approx(9.0)
    assert s.requests_per_s == pytest.approx(3.0)
    assert s.ttft_ms is not None and s.ttft_ms.mean == pytest.approx((100 + 200 + 400) / 3)
    assert s.itl_ms is not None and s.itl_ms.count == 2
    assert sorted([s.itl_ms.min, s.itl_ms.max]) == pytest.approx([100.0, 300.0])
    assert s.tps_per_user is not None and s.tps_per_user.max == pytest.approx(10.0)
    assert s.server_output_tokens_per_s is None  # the server reported no counts


def test_all_failed_point_has_no_latency_but_counts() -> None:
    s = summarize([_rec(i, 0.0, [], None, error="unavailable") for i in range(3)])
    assert (s.requests, s.completed, s.error_rate) == (3, 0, 1.0)
    assert s.ttft_ms is None and s.output_tokens_per_s == 0.0


def test_summary_round_trips_through_dict() -> None:
    from tritonllm.perf.metrics import Summary

    s = summarize([_rec(0, 0.0, [0.1, 0.2, 0.5], 5), _rec(1, 0.0, [], None, error="x")])
    again = Summary.from_dict(s.to_dict())
    assert again == s
    flat = s.flat()
    assert flat["ttft_ms_p99"] == pytest.approx(100.0) and flat["errors"] == 1
