"""The LLM models' custom metrics: NVIDIA's families, made from the catalog, fed by the engine.

:class:`LLMMetrics` creates every family :mod:`tritonllm.metrics_catalog` lists for its target
(``cpu`` or ``gpu``) through a :class:`MetricFactory` (in a server, one over the Python backend's
``pb_utils.MetricFamily``; in tests, a fake), and updates them from a :class:`StatsSource` on a
thread of its own, every ``period_s``:

* gauges (``nv_trt_llm_request_metrics``, ``..._kv_cache_block_metrics``, ...) show the engine's
  state at the update;
* counters move by what changed since the previous update (tokens, finishes by reason,
  rejections by reason);
* histograms get one observation per request that finished since the previous update (token
  lengths, time to first token, time per output token, end-to-end latency).

Contract with tritonserver: each ``set`` / ``increment`` / ``observe`` is a round trip to the
server, so a gauge whose value did not change is not set again, and the per-request
observations are made here, on the metrics thread, never on the engine's. A metric family must
outlive its metrics, and both must be released while the stub is whole: :meth:`LLMMetrics.close`
drops every metric, then every family, at a known point (the model's ``finalize``; see its
docstring for why).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from tritonllm import metrics_catalog as MC
from tritonllm.ensembles.engine_stats import COUNTED_REASONS, EngineStats
from tritonllm.metrics_catalog import CATALOG, TRITON, Family, Kind, Target

log = logging.getLogger(__name__)

__all__ = [
    "LLMMetrics",
    "Metric",
    "MetricFactory",
    "StatsSource",
    "TritonMetricFactory",
    "exported_families",
]


class Metric(Protocol):
    """One labelled metric (``pb_utils.Metric``): ``set`` for gauges, ``increment`` for
    counters, ``observe`` for histograms."""

    def set(self, value: float) -> None: ...

    def increment(self, value: float) -> None: ...

    def observe(self, value: float) -> None: ...


class MetricFactory(Protocol):
    """Creates one metric family and its series."""

    def __call__(self, family: Family, values: tuple[str, ...]) -> tuple[object, dict[str, Metric]]:
        """``(family object, {label value: metric})``; a family without a label of its own has
        one series, under the key ``""``. The family object must outlive the metrics; a metric
        must hold no reference to it that keeps it alive (``pb_utils.Metric`` does not)."""
        ...


class StatsSource(Protocol):
    """What :meth:`LLMMetrics.update` reads: the engine's stats, the longest round of response
    sends, and the requests refused, since the previous call."""

    def engine_stats(self) -> EngineStats: ...

    def take_max_send_ms(self) -> float: ...

    def take_rejections(self) -> dict[str, int]: ...


def exported_families(target: Target) -> tuple[Family, ...]:
    """The catalog's families our ``tensorrt_llm`` model exports on ``target`` (Triton's own
    are Triton's)."""
    return tuple(f for f in CATALOG if target in f.targets and f.source != TRITON)


class LLMMetrics:
    """The model's custom metrics for ``target``, updated from a :class:`StatsSource`."""

    def __init__(self, factory: MetricFactory, target: Target = MC.CPU) -> None:
        self.target = target
        self._families: list[object] = []  # kept: they must outlive their metrics
        self._series: dict[tuple[str, str], Metric] = {}
        self._kinds: dict[str, Kind] = {}
        for fam in exported_families(target):
            obj, metrics = factory(fam, fam.values_for(target))
            self._families.append(obj)
            self._kinds[fam.name] = fam.kind
            for value, metric in metrics.items():
                self._series[fam.name, value] = metric
        self._execute_ms = 0.0
        self._shown: dict[tuple[str, str], float] = {}  # gauge series -> the value it shows
        self._totals: dict[str, int] = {}  # cumulative engine counters, as last shown
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def executed(self, ms: float) -> None:
        """One ``execute()`` call took ``ms``; the worst of a period is shown."""
        self._execute_ms = max(self._execute_ms, ms)

    # ---- one update --------------------------------------------------------------------

    def _gauge(self, name: str, value: float, label: str = "") -> None:
        key = (name, label)
        metric = self._series.get(key)
        if metric is None or self._shown.get(key) == value:
            return  # not exported on this target / unchanged: no round trip
        metric.set(value)
        self._shown[key] = value

    def _add(self, name: str, amount: float, label: str = "") -> None:
        metric = self._series.get((name, label))
        if metric is not None and amount > 0:
            metric.increment(amount)

    def _total(self, name: str, total: int) -> None:
        """Move counter ``name`` to the engine's cumulative ``total``."""
        self._add(name, total - self._totals.get(name, 0))
        self._totals[name] = total

    def _observe(self, name: str, values: Iterable[float | None], label: str = "") -> None:
        metric = self._series.get((name, label))
        if metric is None:
            return
        for v in values:
            if v is not None:
                metric.observe(v)

    def update(self, source: StatsSource) -> None:
        """Show the engine's stats (see the module docstring)."""
        s = source.engine_stats()
        worst, self._execute_ms = self._execute_ms, 0.0
        for name, value in ((MC.STEP_MAX_MS, s.max_step_ms),
                            (MC.SEND_MAX_MS, source.take_max_send_ms()),
                            (MC.EXECUTE_MAX_MS, worst)):
            self._gauge(name, value)
        scheduled = min(s.scheduled, s.held)
        for kind, n in (("active", s.held), ("max", s.max_requests), ("scheduled", scheduled),
                        ("context", min(s.context, scheduled)), ("waiting", s.not_scheduled)):
            self._gauge(MC.REQUEST_METRICS, n, kind)
        self._gauge(MC.INFLIGHT_BATCHER, scheduled - min(s.context, scheduled),
                    "generation_requests")
        self._gauge(MC.GENERAL, s.steps, "iteration_counter")
        if s.last_step_unix_s:
            self._gauge(MC.GENERAL, round(s.last_step_unix_s * 1e6), "timestamp")
        kv = s.kv_blocks
        if kv is not None:
            for kind, n in (("max", kv.max), ("free", kv.free), ("used", kv.used),
                            ("tokens_per", kv.tokens_per)):
                self._gauge(MC.KV_CACHE_BLOCKS, n, kind)
            if kv.reused is not None:
                self._gauge(MC.KV_CACHE_BLOCKS, kv.reused, "reused")
        self._gauge(MC.KV_CACHE_BLOCKS, kv.fraction if kv is not None else s.kv_cache_usage,
                    "fraction")
        for (name, kind), x in s.series.items():
            self._gauge(name, x, kind)
        self._total(MC.GENERATION_TOKENS, s.generated_tokens_total)
        self._total(MC.PROMPT_TOKENS, s.prompt_tokens_total)
        for reason, n in source.take_rejections().items():
            self._add(MC.REJECTED, n, reason)
        done = [r for r in s.finished if r.finish_reason in COUNTED_REASONS]
        for reason in COUNTED_REASONS:
            self._add(MC.REQUEST_FINISHED, sum(1 for r in done if r.finish_reason == reason),
                      reason)
        self._observe(MC.INPUT_TOKEN_LEN, (r.prompt_tokens for r in done), "total_input_tokens")
        self._observe(MC.OUTPUT_TOKEN_LEN, (r.output_tokens for r in done),
                      "total_output_tokens")
        self._observe(MC.TTFT, (r.ttft_s for r in done))
        self._observe(MC.TPOT, (r.tpot_s for r in done))
        self._observe(MC.E2E, (r.e2e_s for r in done))

    # ---- the thread --------------------------------------------------------------------

    def start(self, source: StatsSource, period_s: float) -> None:
        """Call :meth:`update` every ``period_s`` on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("the metrics thread is already started")

        def run() -> None:
            while not self._stop.wait(period_s):
                try:
                    self.update(source)
                except Exception:  # one bad update must not end the metrics for good
                    log.exception("updating the LLM metrics failed")

        self._thread = threading.Thread(target=run, daemon=True, name="tritonllm-metrics")
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop the thread, waiting up to ``timeout``; whether it has stopped (False: it is
        stuck in a round trip to tritonserver, and its metrics must be left be)."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Release every metric, then every family, now (after :meth:`stop` returned True)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the metrics thread is still running: stop() it first")
        self._series.clear()  # the last reference to a Metric: its C++ side clears it
        self._families.clear()


class TritonMetricFactory:
    """A :class:`MetricFactory` over the Python backend's custom metrics API, labelled with
    the model's name and version (as Triton's own ``nv_inference_*`` metrics and NVIDIA's
    ``nv_trt_llm_*`` ones are). ``pb_utils`` is the stub's ``triton_python_backend_utils``;
    build this in ``initialize`` (``pb_utils.MetricFamily`` exists once the stub runs the
    model). Histograms need Triton 2.50+ (``MetricFamily.HISTOGRAM``; 2.51 has it).

    The version label is needed, not decoration: while a new version loads, the old one still
    runs, and Triton 2.51 hands two versions' metrics of the same name and labels the same
    prometheus child, counted per family object. The old version's delete then frees the
    child the new version keeps updating (a use-after-free in tritonserver: heap corruption,
    aborts, hung requests, seen while swapping versions under load)."""

    def __init__(self, pb_utils: Any, model: str, version: str | int = 1) -> None:
        self._labels = {"model": model, "version": str(version)}
        cls = pb_utils.MetricFamily
        self._family = cls
        self._kinds = {"gauge": cls.GAUGE, "counter": cls.COUNTER, "histogram": cls.HISTOGRAM}

    def __call__(self, family: Family, values: tuple[str, ...]) -> tuple[object, dict[str, Metric]]:
        obj = self._family(family.name, family.help, self._kinds[family.kind])
        extra: dict[str, Any] = {"buckets": list(family.buckets)} if family.buckets else {}
        if family.label is None:
            return obj, {"": obj.Metric(self._labels, **extra)}
        return obj, {v: obj.Metric({**self._labels, family.label: v}, **extra) for v in values}
