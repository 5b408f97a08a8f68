"""The load generator's schedules and bookkeeping, on an in-process FAKE backend.

``FakeBackend`` is a stand-in for tritonllm.client.AsyncLLMClient (labelled as such): it
streams ``max_tokens`` one-token deltas with a short asyncio sleep between them, fails the
requests it is told to, and tracks how many requests are in flight. The real client and
server are exercised in tests/integration/test_perf.py.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tritonllm.perf.loadgen import (
    LoadError,
    RequestSpec,
    count_output_tokens,
    error_kind,
    poisson_arrivals,
    run_point,
)
from tritonllm.perf.metrics import summarize
from tritonllm.perf.scenario import LoadPoint


class Unavailable(Exception):  # named like the client's classes: error_kind maps by name
    pass


class Overloaded(Unavailable):
    pass


@dataclass(frozen=True)
class FakeDelta:
    text: str
    time: float
    finish_reason: str | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class FakeTimings:
    start: float
    first_token: float | None
    end: float
    token_times: list[float]


@dataclass(frozen=True)
class FakeCompletion:
    text: str
    finish_reason: str | None
    output_tokens: int | None
    timings: FakeTimings


class FakeBackend:
    """FAKE AsyncLLMClient: tokens every ``gap`` seconds; ``fail(request_id)`` picks errors."""

    def __init__(self, gap: float = 0.001, fail: Any = None) -> None:
        self.gap = gap
        self.fail = fail or (lambda rid: None)
        self.in_flight = 0
        self.max_in_flight = 0
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def stream(self, prompt: str, *, max_tokens: int, request_id: str | None = None,
                     **sampling: Any) -> AsyncIterator[FakeDelta]:
        self.sent.append((str(request_id), {"max_tokens": max_tokens, **sampling}))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            exc = self.fail(request_id)
            for i in range(max_tokens):
                await asyncio.sleep(self.gap)
                if exc is not None and i == 1:
                    raise exc
                last = i == max_tokens - 1
                yield FakeDelta("ab", time.perf_counter(), "length" if last else None, i + 1)
        finally:
            self.in_flight -= 1

    async def generate(self, prompt: str, *, max_tokens: int, request_id: str | None = None,
                       **sampling: Any) -> FakeCompletion:
        start = time.perf_counter()
        times = [d.time async for d in self.stream(prompt, max_tokens=max_tokens,
                                                   request_id=request_id, **sampling)]
        return FakeCompletion("ab" * max_tokens, "length", max_tokens,
                              FakeTimings(start, times[-1], times[-1] + 0.001, []))


def spec(i: int) -> RequestSpec:
    return RequestSpec("prompt", 5, 4, 4)


def test_concurrency_bound_counts_and_order() -> None:
    fake = FakeBackend()
    recs = asyncio.run(run_point(fake, LoadPoint("concurrency", 3), spec, requests=20, warmup=2))
    assert len(recs) == 20 and [r.index for r in recs] == list(range(20))
    assert fake.max_in_flight == 3
    assert len(fake.sent) == 22  # + warm-up, which is not recorded
    assert sum(rid.startswith("warmup-") for rid, _ in fake.sent) == 2
    assert all(r.ok and len(r.response_times) == 4 for r in recs)
    assert all(r.start < r.first_token <= r.end for r in recs)  # type: ignore[operator]
    assert all(r.server_output_tokens == 4 and r.finish_reason == "length" for r in recs)
    assert fake.sent[-1][1] == {"max_tokens": 4, "min_tokens": 4}


def test_errors_are_records_by_kind() -> None:
    def fail(rid: str) -> Exception | None:
        n = int(rid.rsplit("-", 1)[1])
        return {1: Overloaded("queue full"), 2: Unavailable("down"), 3: ValueError("x")}.get(n)

    fake = FakeBackend(fail=lambda rid: None if rid.startswith("warmup") else fail(rid))
    recs = asyncio.run(run_point(fake, LoadPoint("concurrency", 2), spec, requests=6, warmup=1))
    assert [r.error_kind for r in recs] == [None, "overloaded", "unavailable", "ValueError",
                                            None, None]
    s = summarize(recs)
    assert (s.requests, s.completed) == (6, 3)
    assert s.errors == {"ValueError": 1, "overloaded": 1, "unavailable": 1}


def test_all_warmup_failing_is_a_load_error() -> None:
    fake = FakeBackend(fail=lambda rid: Unavailable("connection refused"))
    with pytest.raises(LoadError, match=r"warm-up requests failed \(unavailable\): connection"):
        asyncio.run(run_point(fake, LoadPoint("concurrency", 1), spec, requests=3, warmup=2))


def test_timeout_is_recorded() -> None:
    fake = FakeBackend(gap=0.05)
    recs = asyncio.run(run_point(fake, LoadPoint("concurrency", 1), spec, requests=1,
                                 timeout=0.06))
    assert recs[0].error_kind == "timeout" and not recs[0].ok


def test_error_kind_mro() -> None:
    assert error_kind(Overloaded()) == "overloaded"
    assert error_kind(TimeoutError()) == "timeout"
    assert error_kind(KeyError()) == "KeyError"


def test_poisson_inter_arrival_mean_and_spread() -> None:
    rate = 8.0
    times = list(itertools.islice(poisson_arrivals(rate, seed=11), 20000))
    gaps = [b - a for a, b in itertools.pairwise([0.0, *times])]
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.03)
    # exponential: std equals the mean (a constant-rate schedule would have std 0)
    assert statistics.pstdev(gaps) == pytest.approx(1 / rate, rel=0.05)
    assert list(itertools.islice(poisson_arrivals(rate, seed=11), 5)) == times[:5]


def test_request_rate_follows_the_schedule() -> None:
    fake = FakeBackend()
    rate = 200.0
    t0 = time.perf_counter()
    recs = asyncio.run(run_point(fake, LoadPoint("request_rate", rate), spec, requests=15,
                                 seed=5))
    arrivals = list(itertools.islice(poisson_arrivals(rate, seed=5), 15))
    assert len(recs) == 15
    # never early: each request starts at or after its scheduled arrival
    for r, at in zip(recs, arrivals, strict=True):
        assert r.start - t0 >= at - 1e-3


def test_duration_bounds_the_point() -> None:
    fake = FakeBackend(gap=0.002)
    recs = asyncio.run(run_point(fake, LoadPoint("concurrency", 2), spec, requests=1,
                                 duration=0.15))
    assert len(recs) > 2  # `requests` is ignored
    assert max(r.start for r in recs) - min(r.start for r in recs) < 0.15
    assert all(r.ok for r in recs)


def test_not_streaming_uses_completion_timings() -> None:
    fake = FakeBackend()
    recs = asyncio.run(run_point(fake, LoadPoint("concurrency", 1), spec, requests=2,
                                 streaming=False))
    r = recs[0]
    assert r.ok and r.output_text == "abababab" and r.ttft is not None and r.e2e is not None
    assert r.ttft < r.e2e and r.response_times == [r.end]


def test_count_output_tokens_only_for_successes() -> None:
    fake = FakeBackend(fail=lambda rid: Unavailable() if rid.endswith("-1") else None)
    recs = asyncio.run(run_point(fake, LoadPoint("concurrency", 1), spec, requests=3))
    count_output_tokens(recs, lambda texts: [len(t) for t in texts])
    assert [r.output_tokens for r in recs] == [8, None, 8]
