"""The LLM models' custom metrics, driven with a fake metric factory.

In a server the factory is ``pb_utils.MetricFamily`` (model_repository/tensorrt_llm/1/model.py);
the served metrics are checked against independent counts in
tests/integration/test_observability.py and the finalize ordering against a real server in
tests/integration/test_shutdown.py.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from tritonllm import metrics_catalog as MC
from tritonllm.ensembles import llm_metrics as M
from tritonllm.ensembles.engine_stats import EngineStats, FinishedRequest, KvBlocks
from tritonllm.metrics_catalog import Family

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

    def observe(self, value: float) -> None:
        self.calls.append(("observe", value))

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
        self.created: list[tuple[str, str, tuple[str, ...]]] = []
        self.metrics: dict[str, FakeMetric] = {}  # "name" or "name/label value"
        self.log: list[str] = []

    def __call__(self, family: Family, values: tuple[str, ...]
                 ) -> tuple[object, dict[str, M.Metric]]:
        self.created.append((family.name, family.kind, values))
        made: dict[str, M.Metric] = {}
        for v in values or ("",):
            key = f"{family.name}/{v}" if v else family.name
            self.metrics[key] = made[v] = FakeMetric(key, self.log)
        return FakeFamily(family.name, self.log), made

    def calls(self) -> dict[str, list[tuple[str, float]]]:
        """Each series' calls since the previous ``calls()``; only series that had some."""
        out = {name: m.calls for name, m in self.metrics.items() if m.calls}
        for m in self.metrics.values():
            m.calls = []
        return out


class FakeSource:
    def __init__(self) -> None:
        self.next = stats()
        self.send_ms = 0.0
        self.rejected: dict[str, int] = {}

    def engine_stats(self) -> EngineStats:
        return self.next

    def take_max_send_ms(self) -> float:
        worst, self.send_ms = self.send_ms, 0.0
        return worst

    def take_rejections(self) -> dict[str, int]:
        out, self.rejected = self.rejected, {}
        return out


def stats(active: int = 0, waiting: int = 0, tokens: int = 0, step_ms: float = 0.0,
          **kw: object) -> EngineStats:
    return EngineStats(active=active, waiting=waiting, requests_total=0,
                       generated_tokens_total=tokens, steps=0, max_step_ms=step_ms,
                       kv_cache_usage=0.0, pipeline_requests=0, **kw)  # type: ignore[arg-type]


def test_every_catalog_family_of_the_target_is_created_once_with_its_values() -> None:
    for target in (MC.CPU, MC.GPU):
        factory = FakeFactory()
        M.LLMMetrics(factory, target)
        expected = [(f.name, f.kind, f.values_for(target)) for f in MC.CATALOG
                    if target in f.targets and f.source != MC.TRITON]
        assert factory.created == expected
    cpu = {name for name, _, _ in expected}
    # NVIDIA's names where NVIDIA has one: the C++ backend's families, trtllm-serve's TTFT/TPOT
    assert {MC.REQUEST_METRICS, MC.KV_CACHE_BLOCKS, MC.INPUT_TOKEN_LEN, MC.OUTPUT_TOKEN_LEN,
            MC.TTFT, MC.TPOT, MC.GENERATION_TOKENS, MC.REQUEST_FINISHED} <= cpu
    assert not any(n.startswith("nv_inference_") for n in cpu)  # Triton's are Triton's


def test_catalog_names_are_unique_and_their_values_known() -> None:
    names = [f.name for f in MC.CATALOG]
    assert len(names) == len(set(names))
    for f in MC.CATALOG:
        assert (f.label is None) == (not f.values), f.name
        assert (f.kind == "histogram") == bool(f.buckets), f.name
        assert list(f.buckets) == sorted(set(f.buckets)), f.name
        assert f.kind != "counter" or f.name.endswith("_total") or f.source != MC.TRTLLM_SERVE
    with pytest.raises(KeyError, match="request_type='nope'"):
        MC.series(MC.REQUEST_METRICS, "nope")
    with pytest.raises(KeyError, match=r"not in tritonllm\.metrics_catalog"):
        MC.family("nv_trt_llm_invented")
    assert MC.series(MC.KV_CACHE_BLOCKS, "used", model="m") == (
        'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="m"}')


def test_the_names_that_docs_and_the_supervisor_use_are_in_the_catalog() -> None:
    from tritonllm.supervision import BUSY_GAUGES, TRTLLM_BUSY

    names = {f.name for f in MC.CATALOG}
    for doc in ("serving.md", "observability.md"):
        text = (DOCS / doc).read_text(encoding="utf-8")
        # tritonllm_* names in the docs, less the shared-memory prefix ``tritonllm_<12 hex>_``
        documented = set(re.findall(r"\b(?:tritonllm|nv_trt_llm|trtllm|nv_llm)_[a-z_]*[a-z]\b",
                                    text))
        documented = {re.sub(r"_(bucket|sum|count)$", "", n) for n in documented}
        assert documented <= names, (doc, documented - names)
    assert set(BUSY_GAUGES) <= names
    assert TRTLLM_BUSY.match(MC.series(MC.REQUEST_METRICS, "active", model="tensorrt_llm"))


def test_update_sets_changed_gauges_and_moves_counters_by_the_change() -> None:
    factory, source = FakeFactory(), FakeSource()
    metrics = M.LLMMetrics(factory)
    rq, kvb = MC.REQUEST_METRICS, MC.KV_CACHE_BLOCKS

    metrics.update(source)  # every gauge starts unshown: each is set once
    first = factory.calls()
    assert first[f"{rq}/active"] == [("set", 0)] and first[MC.STEP_MAX_MS] == [("set", 0)]
    assert not any(c[0] != "set" for calls in first.values() for c in calls)

    metrics.update(source)  # nothing changed: no round trip to tritonserver at all
    assert factory.calls() == {}

    source.next = stats(
        active=3, waiting=2, tokens=5, step_ms=3.5, scheduled=3, context=1, max_requests=8,
        prompt_tokens_total=40, kv_blocks=KvBlocks(100, 25, 32),
        finished=[FinishedRequest(10, 4, "length", 0.02, 0.05, 0.03),
                  FinishedRequest(20, 1, "stop", 0.01, 0.01, 0.0),
                  FinishedRequest(7, 0, "error", None, 0.001)])
    source.send_ms = 1.25
    source.rejected = {MC.REJECT_QUEUE_FULL: 2}
    metrics.executed(0.5)
    metrics.executed(2.0)
    metrics.update(source)
    calls = factory.calls()
    assert calls[MC.STEP_MAX_MS] == [("set", 3.5)]
    assert calls[MC.SEND_MAX_MS] == [("set", 1.25)]
    assert calls[MC.EXECUTE_MAX_MS] == [("set", 2.0)]  # the worst execute() of the period
    # NVIDIA's meanings: active = held (3 running + 2 handed over), waiting = active - scheduled
    assert calls[f"{rq}/active"] == [("set", 5)]
    assert calls[f"{rq}/waiting"] == [("set", 2)]
    assert calls[f"{rq}/scheduled"] == [("set", 3)]
    assert calls[f"{rq}/context"] == [("set", 1)]
    assert calls[f"{rq}/max"] == [("set", 8)]
    assert calls[f"{MC.INFLIGHT_BATCHER}/generation_requests"] == [("set", 2)]
    assert calls[f"{kvb}/max"] == [("set", 100)] and calls[f"{kvb}/used"] == [("set", 25)]
    assert calls[f"{kvb}/free"] == [("set", 75)] and calls[f"{kvb}/fraction"] == [("set", 0.25)]
    assert calls[f"{kvb}/tokens_per"] == [("set", 32)]
    assert calls[MC.GENERATION_TOKENS] == [("increment", 5)]
    assert calls[MC.PROMPT_TOKENS] == [("increment", 40)]
    assert calls[f"{MC.REJECTED}/{MC.REJECT_QUEUE_FULL}"] == [("increment", 2)]
    # Finished requests: counted by reason, observed once each; a failed one is not a finish.
    assert calls[f"{MC.REQUEST_FINISHED}/length"] == [("increment", 1)]
    assert calls[f"{MC.REQUEST_FINISHED}/stop"] == [("increment", 1)]
    assert f"{MC.REQUEST_FINISHED}/cancelled" not in calls
    assert calls[f"{MC.INPUT_TOKEN_LEN}/total_input_tokens"] == [("observe", 10), ("observe", 20)]
    assert calls[f"{MC.OUTPUT_TOKEN_LEN}/total_output_tokens"] == [("observe", 4),
                                                                   ("observe", 1)]
    assert calls[MC.TTFT] == [("observe", 0.02), ("observe", 0.01)]
    assert calls[MC.TPOT] == [("observe", pytest.approx(0.01))]  # 0.03 s / 3; 1 token: none
    assert calls[MC.E2E] == [("observe", 0.05), ("observe", 0.01)]

    # Per-period maxima fall back to 0; counters move by the change since the last update.
    source.next = stats(active=3, waiting=2, tokens=12, scheduled=3, context=1, max_requests=8,
                        prompt_tokens_total=40, kv_blocks=KvBlocks(100, 25, 32))
    metrics.update(source)
    assert factory.calls() == {
        MC.STEP_MAX_MS: [("set", 0.0)],
        MC.SEND_MAX_MS: [("set", 0.0)],
        MC.EXECUTE_MAX_MS: [("set", 0.0)],
        MC.GENERATION_TOKENS: [("increment", 7)],
    }


def test_gpu_only_series_reach_only_a_gpu_model() -> None:
    series = {(MC.RUNTIME_MEMORY, "gpu"): 1e9, (MC.INFLIGHT_BATCHER, "paused_requests"): 2.0}
    for target, shown in ((MC.GPU, True), (MC.CPU, False)):
        factory, source = FakeFactory(), FakeSource()
        source.next = stats(series=series, kv_blocks=KvBlocks(10, 1, 64, reused=3))
        M.LLMMetrics(factory, target).update(source)
        calls = factory.calls()
        assert (f"{MC.RUNTIME_MEMORY}/gpu" in calls) is shown
        assert (f"{MC.KV_CACHE_BLOCKS}/reused" in calls) is shown
        assert (MC.STEP_MAX_MS in calls) is not shown  # the CPU engine's own


def test_close_releases_every_metric_before_any_family() -> None:
    factory = FakeFactory()
    metrics = M.LLMMetrics(factory)
    metrics.update(FakeSource())
    n_metrics, n_families = len(factory.metrics), len(factory.created)
    factory.metrics.clear()  # the test's own references
    assert factory.log == []

    metrics.close()

    assert all(e.startswith("del metric") for e in factory.log[:n_metrics])
    assert all(e.startswith("del family") for e in factory.log[n_metrics:])
    assert len(factory.log) == n_metrics + n_families


def test_the_thread_updates_every_period_until_stopped() -> None:
    factory, source = FakeFactory(), FakeSource()
    metrics = M.LLMMetrics(factory)
    updated = threading.Event()
    real_update = metrics.update

    def update(s: M.StatsSource) -> None:
        real_update(s)
        updated.set()

    metrics.update = update  # type: ignore[method-assign]
    metrics.start(source, 0.001)
    with pytest.raises(RuntimeError, match="already started"):
        metrics.start(source, 0.001)
    assert updated.wait(5)
    assert metrics.stop(5)
    assert factory.metrics[f"{MC.REQUEST_METRICS}/active"].calls[0] == ("set", 0)
    metrics.close()


def test_close_refuses_while_the_thread_runs() -> None:
    metrics = M.LLMMetrics(FakeFactory())
    entered, release = threading.Event(), threading.Event()

    class StuckSource(FakeSource):
        def take_max_send_ms(self) -> float:  # a round trip to tritonserver that hangs
            entered.set()
            release.wait(5)
            return 0.0

    metrics.start(StuckSource(), 0.001)
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


class FakePbUtils:
    """``pb_utils.MetricFamily`` as the Python backend of Triton 2.51 has it."""

    class MetricFamily:
        GAUGE, COUNTER, HISTOGRAM = 0, 1, 2
        made: ClassVar[list[tuple[str, int, dict[str, str], list[float] | None]]] = []

        def __init__(self, name: str, description: str, kind: int) -> None:
            self.name, self.kind = name, kind

        def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> object:
            self.made.append((self.name, self.kind, labels, buckets))
            return object()


def test_the_triton_factory_labels_model_version_and_the_family_label() -> None:
    factory = M.TritonMetricFactory(FakePbUtils, "tensorrt_llm", 3)
    factory(MC.family(MC.REQUEST_METRICS), ("active", "max"))
    factory(MC.family(MC.TTFT), ())
    made = FakePbUtils.MetricFamily.made
    assert made[0] == (MC.REQUEST_METRICS, 0, {"model": "tensorrt_llm", "version": "3",
                                               "request_type": "active"}, None)
    assert made[1][2]["request_type"] == "max"
    assert made[2] == (MC.TTFT, 2, {"model": "tensorrt_llm", "version": "3"},
                       list(MC.TTFT_BUCKETS))
