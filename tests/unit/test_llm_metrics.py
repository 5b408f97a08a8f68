"""The CPU ``tensorrt_llm`` model's custom metrics, driven with a fake metric factory.

In a server the factory is ``pb_utils.MetricFamily`` (model_repository/tensorrt_llm/1/model.py);
the served metrics are read in tests/integration/test_serving.py and the finalize ordering is
checked against a real server in tests/integration/test_shutdown.py.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from tritonllm.ensembles import llm_metrics as M
from tritonllm.ensembles.cpu_engine import EngineStats

DOCS = Path(__file__).resolve().parents[2] / "docs"


class FakeMetric:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.calls: list[tuple[str, float]] = []
        self._log = log  # no reference to its family, as pb_utils.Metric

    def set(self, value: float) -> None:
        self.calls.append(("set", value))

    def increment(self, value: float) -> None:
        self.calls.append(("increment", value))

    def __del__(self) -> None:
        self._log.append(f"del metric {self.name}")


class FakeFamily:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self._log = log

    def __del__(self) -> None:
        self._log.append(f"del family {self.name}")


class FakeFactory:
    def __init__(self) -> None:
        self.created: list[tuple[str, str, str]] = []
        self.metrics: dict[str, FakeMetric] = {}
        self.log: list[str] = []

    def __call__(self, name: str, doc: str, kind: M.MetricKind) -> tuple[object, M.Metric]:
        self.created.append((name, doc, kind))
        metric = FakeMetric(name, self.log)
        self.metrics[name] = metric
        return FakeFamily(name, self.log), metric

    def calls(self) -> dict[str, list[tuple[str, float]]]:
        """Each metric's calls since the previous ``calls()``; only metrics that had some."""
        out = {name: m.calls for name, m in self.metrics.items() if m.calls}
        for m in self.metrics.values():
            m.calls = []
        return out


class FakeEngine:
    def __init__(self) -> None:
        self.next = stats()

    def stats(self) -> EngineStats:
        return self.next


class FakeService:
    def __init__(self) -> None:
        self.engine = FakeEngine()
        self.send_ms = 0.0

    def take_max_send_ms(self) -> float:
        worst, self.send_ms = self.send_ms, 0.0
        return worst


def stats(active: int = 0, waiting: int = 0, tokens: int = 0, step_ms: float = 0.0,
          ttft_ms: tuple[float, ...] = ()) -> EngineStats:
    return EngineStats(active=active, waiting=waiting, requests_total=0,
                       generated_tokens_total=tokens, steps=0, max_step_ms=step_ms,
                       kv_cache_usage=0.0, pipeline_requests=0, ttft_ms=list(ttft_ms))


def test_every_metric_of_the_table_is_created_once_with_its_doc_and_kind() -> None:
    factory = FakeFactory()
    M.LLMMetrics(factory)
    assert factory.created == [(s.name, s.doc, s.kind) for s in M.METRICS]
    assert len({s.name for s in M.METRICS}) == len(M.METRICS)
    assert {s.name: s.kind for s in M.METRICS} == {
        "tritonllm_active_requests": "gauge",
        "tritonllm_waiting_requests": "gauge",
        "tritonllm_generated_tokens_total": "counter",
        "tritonllm_time_to_first_token_ms_total": "counter",
        "tritonllm_first_tokens_total": "counter",
        "tritonllm_step_max_ms": "gauge",
        "tritonllm_send_max_ms": "gauge",
        "tritonllm_execute_max_ms": "gauge",
    }


def test_the_names_that_docs_and_the_supervisor_use_are_in_the_table() -> None:
    from tritonllm.supervision import BUSY_GAUGES

    names = {s.name for s in M.METRICS}
    text = (DOCS / "serving.md").read_text(encoding="utf-8")
    # tritonllm_* names in the docs, less the shared-memory prefix ``tritonllm_<12 hex>_``
    documented = set(re.findall(r"\btritonllm_[a-z_]*[a-z]\b", text))
    assert documented, "docs/serving.md names no tritonllm metric"
    assert documented <= names
    assert {g for g in BUSY_GAUGES if g.startswith("tritonllm_")} <= names


def test_update_sets_changed_gauges_and_moves_counters_by_the_change() -> None:
    factory, service = FakeFactory(), FakeService()
    metrics = M.LLMMetrics(factory)

    metrics.update(service)  # all gauges start unshown: each is set once
    assert factory.calls() == {name: [("set", 0)] for name in (
        M.STEP_MAX_MS, M.SEND_MAX_MS, M.EXECUTE_MAX_MS, M.ACTIVE_REQUESTS, M.WAITING_REQUESTS)}

    metrics.update(service)  # nothing changed: no round trip to tritonserver at all
    assert factory.calls() == {}

    service.engine.next = stats(active=2, waiting=1, tokens=5, step_ms=3.5, ttft_ms=(10.0, 30.0))
    service.send_ms = 1.25
    metrics.executed(0.5)
    metrics.executed(2.0)
    metrics.executed(1.0)
    metrics.update(service)
    assert factory.calls() == {
        M.STEP_MAX_MS: [("set", 3.5)],
        M.SEND_MAX_MS: [("set", 1.25)],
        M.EXECUTE_MAX_MS: [("set", 2.0)],  # the worst execute() of the period
        M.ACTIVE_REQUESTS: [("set", 2)],
        M.WAITING_REQUESTS: [("set", 1)],
        M.GENERATED_TOKENS_TOTAL: [("increment", 5)],
        M.TTFT_MS_TOTAL: [("increment", 40.0)],
        M.FIRST_TOKENS_TOTAL: [("increment", 2)],
    }

    # Per-period maxima fall back to 0; the counter moves by the change since the last update.
    service.engine.next = stats(active=2, waiting=1, tokens=12)
    metrics.update(service)
    assert factory.calls() == {
        M.STEP_MAX_MS: [("set", 0.0)],
        M.SEND_MAX_MS: [("set", 0.0)],
        M.EXECUTE_MAX_MS: [("set", 0.0)],
        M.GENERATED_TOKENS_TOTAL: [("increment", 7)],
    }


def test_close_releases_every_metric_before_any_family() -> None:
    factory = FakeFactory()
    metrics = M.LLMMetrics(factory)
    metrics.update(FakeService())
    factory.metrics.clear()  # the test's own references
    assert factory.log == []

    metrics.close()

    n = len(M.METRICS)
    assert sorted(factory.log[:n]) == sorted(f"del metric {s.name}" for s in M.METRICS)
    assert sorted(factory.log[n:]) == sorted(f"del family {s.name}" for s in M.METRICS)


def test_the_thread_updates_every_period_until_stopped() -> None:
    factory, service = FakeFactory(), FakeService()
    metrics = M.LLMMetrics(factory)
    updated = threading.Event()
    real_update = metrics.update

    def update(source: M.StatsSource) -> None:
        real_update(source)
        updated.set()

    metrics.update = update  # type: ignore[method-assign]
    metrics.start(service, 0.001)
    with pytest.raises(RuntimeError, match="already started"):
        metrics.start(service, 0.001)
    assert updated.wait(5)
    assert factory.metrics[M.ACTIVE_REQUESTS].calls == [("set", 0)]
    assert metrics.stop(5)
    metrics.close()


def test_close_refuses_while_the_thread_runs() -> None:
    metrics = M.LLMMetrics(FakeFactory())
    entered, release = threading.Event(), threading.Event()

    class StuckService(FakeService):
        def take_max_send_ms(self) -> float:  # a round trip to tritonserver that hangs
            entered.set()
            release.wait(5)
            return 0.0

    metrics.start(StuckService(), 0.001)
    assert entered.wait(5)
    assert not metrics.stop(0.01)  # stuck: finalize leaves its metrics be
    with pytest.raises(RuntimeError, match="still running"):
        metrics.close()
    release.set()
    assert metrics.stop(5)
    metrics.close()


def test_stop_without_start_is_stopped() -> None:
    metrics = M.LLMMetrics(FakeFactory())
    assert metrics.stop(0)
    metrics.close()
