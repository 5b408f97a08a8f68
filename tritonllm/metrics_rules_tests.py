"""``promtool test rules`` for the compose stack's rules: every alert fires, and stays quiet.

:func:`promtool_tests` builds the test document that ``scripts/render_deploy_files.py`` writes
to ``docker/prometheus/rules.test.yml``, beside the ``rules.yml`` it tests (the rules of
:func:`tritonllm.metrics_rules.rule_groups` with ``by=`` :data:`COMPOSE_BY`, Triton's scrape
job :data:`~tritonllm.metrics_rules.COMPOSE_JOB`)::

    promtool test rules docker/prometheus/rules.test.yml

The inputs are raw series shaped like Triton's scrape (per model and version counters, gauges
and histogram buckets), so each alert is reached through the recording rules it reads. For
every alert of :func:`~tritonllm.metrics_rules.alerts` there is one test where it fires, with
its exact labels and annotations (taken from the :class:`~tritonllm.metrics_rules.Alert`), and
one where it does not: the signal just under the threshold, or the condition held for less than
the alert's ``for``. The thresholds are :class:`~tritonllm.metrics_rules.Thresholds`' defaults,
so a rules file rendered with other thresholds fails these tests. A last test checks the values
of the recorded series against numbers worked out by hand.

The metric and series names come from :mod:`tritonllm.metrics_catalog` and
:mod:`tritonllm.metrics_rules`; a scenario is keyed by its alert's name, and an alert without
one (or a scenario without its alert) is an error here, not a gap in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tritonllm import contract as C
from tritonllm import metrics_catalog as MC
from tritonllm import metrics_rules as R

__all__ = ["COMPOSE_BY", "INSTANCE", "promtool_tests"]

#: Compose has no pods: one series per scraped instance.
COMPOSE_BY = ("job", "instance")
#: The scraped instance of the test series (docker/prometheus/prometheus.yml's CPU target).
INSTANCE = "triton:8002"
#: Scrape and rule evaluation interval of the tests, in seconds (compose scrapes every 5 s).
STEP_S = 15
#: Samples after the first in each input series: 20 minutes, past the longest ``for`` + 1m.
SAMPLES = 80

Series = dict[str, str]


@dataclass(frozen=True)
class _Scenario:
    """An alert's two tests: ``fires`` (not yet just before ``for`` has passed, then firing
    ``for`` + 1m in) and ``quiet`` (no alert at any of ``quiet_at``, seconds; by default when
    ``fires`` fires)."""

    fires: list[Series]
    quiet: list[Series]
    quiet_at: tuple[int, ...] = ()


def _num(x: float) -> str:
    return f"{x:.12g}"


def _duration(seconds: int) -> str:
    m, s = divmod(seconds, 60)
    return (f"{m}m" if m else "") + (f"{s}s" if s or not m else "")


def _seconds(duration: str) -> int:
    """A rule's ``for`` ("5m", "90s", "1h") in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return int(duration[:-1]) * units[duration[-1]]


def _series(name: str, values: str, **labels: str) -> Series:
    """One series of the scraped instance: ``labels`` (model, version, ...) + job, instance."""
    sel = {**labels, "job": R.COMPOSE_JOB, "instance": INSTANCE}
    inner = ",".join(f'{k}="{v}"' for k, v in sel.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _counter(name: str, per_s: float, **labels: str) -> Series:
    """A counter rising at ``per_s`` a second from 0."""
    return _series(name, f"0+{_num(per_s * STEP_S)}x{SAMPLES}", **labels)


def _gauge(name: str, value: float, **labels: str) -> Series:
    return _series(name, f"{_num(value)}x{SAMPLES}", **labels)


def _model(model: str = C.LLM) -> dict[str, str]:
    return {"model": model, "version": "1"}


def _histogram(name: str, per_s: dict[float, float], **labels: str) -> list[Series]:
    """The ``_bucket`` counters of a histogram (its catalog buckets and ``+Inf``) whose
    observations a second fall as ``per_s`` says: upper bound -> observations in that bucket."""
    bounds = [*MC.family(name).buckets, math.inf]
    unknown = set(per_s) - set(bounds)
    if unknown:
        raise ValueError(f"{name} has no bucket with upper bound {sorted(unknown)}")
    out = []
    for le in bounds:
        cumulative = sum(n for upper, n in per_s.items() if upper <= le)
        out.append(_counter(f"{name}_bucket", cumulative, **labels,
                            le="+Inf" if le == math.inf else repr(le)))
    return out


# ---- one scenario per alert --------------------------------------------------------------------

def _queue_time(t: R.Thresholds) -> _Scenario:
    # The LLM computes 100 ms a second; it queues 1% more than that (fires) or 1% less (quiet).
    # The ensemble queues 10x its compute time: counted, it would make the quiet case fire.
    compute = 100_000.0

    def llm(ratio: float) -> list[Series]:
        return [_counter(R.QUEUE_DURATION, compute * ratio, **_model()),
                _counter(R.COMPUTE_DURATION, compute, **_model())]

    ensemble = [_counter(R.QUEUE_DURATION, compute * 10, **_model(C.ENSEMBLE)),
                _counter(R.COMPUTE_DURATION, compute, **_model(C.ENSEMBLE))]
    return _Scenario(llm(t.queue_compute_ratio * 1.01),
                     llm(t.queue_compute_ratio * 0.99) + ensemble)


def _ttft_p99_counts(threshold: float, total: int = 1000, q: float = 0.99) -> tuple[
        float, float, int, int]:
    """Two splits of ``total`` observations between the bucket below the threshold's bucket
    ``(lo, hi]`` and that bucket, whose q-quantile lands just over and just under the threshold.

    With ``b`` observations at or below ``lo`` and the rest in ``(lo, hi]``, histogram_quantile
    interpolates ``lo + (hi - lo) * (q * total - b) / (total - b)``; it equals the threshold at
    ``b = (q * total - f * total) / (1 - f)``, ``f = (threshold - lo) / (hi - lo)``. Returns
    ``lo, hi, b_over, b_under`` (for 2 s: bucket (1, 2.5], b = 970: 969 -> 2.016 s, 971 ->
    1.983 s)."""
    buckets = MC.family(MC.TTFT).buckets
    i = next(i for i, hi in enumerate(buckets) if hi >= threshold)
    if i == 0:
        raise ValueError(f"threshold {threshold} is inside the first bucket")
    lo, hi = buckets[i - 1], buckets[i]
    f = (threshold - lo) / (hi - lo)
    b = (q * total - f * total) / (1 - f) if f < 1 else -1.0
    if not 1 <= b < total - 1:
        raise ValueError(f"no split of {total} observations straddles {threshold}s in "
                         f"({lo}, {hi}]")
    return lo, hi, math.ceil(b) - 1, math.floor(b) + 1


def _ttft(t: R.Thresholds) -> _Scenario:
    lo, hi, over, under = _ttft_p99_counts(t.ttft_p99_s)
    total = 1000

    def requests(below: int) -> list[Series]:
        return _histogram(MC.TTFT, {lo: below, hi: total - below}, **_model())

    return _Scenario(requests(over), requests(under))


def _errors(t: R.Thresholds) -> _Scenario:
    # 1000 ensemble requests a second, of which just over / just under the threshold fail. The
    # LLM model's own failures (each also an ensemble failure in a real server) do not count.
    total = 1000

    def entry(failed: int) -> list[Series]:
        return [_counter(MC.REQUEST_FAILURE, failed, reason="BACKEND", **_model(C.ENSEMBLE)),
                _counter(MC.REQUEST_SUCCESS, total - failed, **_model(C.ENSEMBLE))]

    llm = [_counter(MC.REQUEST_FAILURE, total / 2, reason="BACKEND", **_model())]
    return _Scenario(entry(math.floor(t.error_ratio * total) + 1),
                     entry(math.ceil(t.error_ratio * total) - 1) + llm)


def _kv_cache(t: R.Thresholds) -> _Scenario:
    def fraction(value: float) -> list[Series]:
        return [_gauge(MC.KV_CACHE_BLOCKS, value, kv_cache_block_type="fraction", **_model()),
                _gauge(MC.KV_CACHE_BLOCKS, 5000, kv_cache_block_type="used", **_model())]

    return _Scenario(fraction(t.kv_cache_used + 0.01), fraction(t.kv_cache_used - 0.01))


def _server_down(alert: R.Alert) -> _Scenario:
    # Quiet: down for 4 scrapes (45 s between the first and the last), shorter than ``for``:
    # pending at the last one, resolved at the next.
    held = _seconds(alert.for_) // STEP_S - 1
    if held < 1:
        raise ValueError(f"{alert.alert}: for {alert.for_} is under two scrapes")
    flap = f"1x3 0x{held} 1x{SAMPLES - held - 5}"
    return _Scenario([_series("up", f"0x{SAMPLES}")], [_series("up", flap)],
                     quiet_at=((4 + held) * STEP_S, 5 * 60))


def _model_not_ready(alert: R.Alert) -> _Scenario:
    # Fires: Triton is up and exports the ensemble's counters but not the LLM model's. Quiet:
    # the LLM model's counters appear before ``for`` has passed (checked while the condition
    # holds, and after).
    missing = _seconds(alert.for_) // STEP_S - 1
    loads = _series(MC.INFERENCE_COUNT, f"_x{missing} 0+4x{SAMPLES - missing}", **_model())
    return _Scenario([_series("up", f"1x{SAMPLES}"),
                      _counter(MC.INFERENCE_COUNT, 4, **_model(C.ENSEMBLE))],
                     [_series("up", f"1x{SAMPLES}"), loads],
                     quiet_at=((missing - 1) * STEP_S, 5 * 60))


def _scenarios(t: R.Thresholds) -> dict[str, Callable[[R.Alert], _Scenario]]:
    return {
        "TritonLLMQueueTimeHigh": lambda _a: _queue_time(t),
        "TritonLLMTimeToFirstTokenHigh": lambda _a: _ttft(t),
        "TritonLLMErrorRatioHigh": lambda _a: _errors(t),
        "TritonLLMKVCacheNearFull": lambda _a: _kv_cache(t),
        "TritonLLMServerDown": _server_down,
        "TritonLLMModelNotReady": _model_not_ready,
    }


def _alert_tests(alert: R.Alert, s: _Scenario) -> list[dict[str, Any]]:
    fires_at = _seconds(alert.for_) + 60
    labels = {"severity": alert.severity, "job": R.COMPOSE_JOB, "instance": INSTANCE}
    expected = {"exp_labels": labels,
                "exp_annotations": {"summary": alert.summary, "runbook": alert.runbook}}
    quiet_at = s.quiet_at or (fires_at,)
    # Pending one scrape before ``for`` has passed (the signal holds from the first or second
    # sample), firing a minute after.
    pending_at = _seconds(alert.for_) - STEP_S
    return [
        {"name": f"{alert.alert} fires", "interval": f"{STEP_S}s", "input_series": s.fires,
         "alert_rule_test": [
             {"eval_time": _duration(pending_at), "alertname": alert.alert, "exp_alerts": []},
             {"eval_time": _duration(fires_at), "alertname": alert.alert,
              "exp_alerts": [expected]}]},
        {"name": f"{alert.alert} stays quiet", "interval": f"{STEP_S}s",
         "input_series": s.quiet,
         "alert_rule_test": [{"eval_time": _duration(at), "alertname": alert.alert,
                              "exp_alerts": []} for at in quiet_at]},
    ]


# ---- the recorded series, against values worked out by hand ------------------------------------

def _recorded_test() -> dict[str, Any]:
    llm = _model()
    series = [
        # Queue / compute: the LLM queues 30 ms and computes 60 ms a second -> 0.5; the ensemble
        # (500 ms / 30 ms) is not the LLM model and must not count.
        _counter(R.QUEUE_DURATION, 30_000, **llm),
        _counter(R.COMPUTE_DURATION, 60_000, **llm),
        _counter(R.QUEUE_DURATION, 500_000, **_model(C.ENSEMBLE)),
        _counter(R.COMPUTE_DURATION, 30_000, **_model(C.ENSEMBLE)),
        # Time to first token, 100 requests a second: 90 in (0.06, 0.08], 8 in (0.08, 0.1],
        # 2 in (0.1, 0.25].
        #   p99: rank 0.99 * 100 = 99; 98 at or below 0.1, 100 at or below 0.25, so it is in
        #        (0.1, 0.25]: 0.1 + 0.15 * (99 - 98) / 2 = 0.175 s.
        #   p50: rank 50, in (0.06, 0.08] with none below: 0.06 + 0.02 * 50 / 90 = 0.0711111 s.
        *_histogram(MC.TTFT, {0.08: 90, 0.1: 8, 0.25: 2}, **llm),
        # 1200 generated tokens a second; requests finish 3/s on a stop, 1/s on the length.
        _counter(MC.GENERATION_TOKENS, 1200, **llm),
        _counter(MC.REQUEST_FINISHED, 3, finished_reason=C.FINISH_STOP, **llm),
        _counter(MC.REQUEST_FINISHED, 1, finished_reason=C.FINISH_LENGTH, **llm),
        # KV cache: the larger fraction of two versions (0.25, 0.5) -> 0.5; block counts are
        # not fractions.
        _gauge(MC.KV_CACHE_BLOCKS, 0.25, kv_cache_block_type="fraction", **llm),
        _gauge(MC.KV_CACHE_BLOCKS, 0.5, kv_cache_block_type="fraction", model=C.LLM,
               version="2"),
        _gauge(MC.KV_CACHE_BLOCKS, 700, kv_cache_block_type="used", **llm),
        # Errors of the entry models, a second: ensemble 1 failed / 3 succeeded, BLS 1 / 5
        # -> 2 / (2 + 8) = 0.2; the LLM model's own failures (4/s) do not count.
        _counter(MC.REQUEST_FAILURE, 1, reason="BACKEND", **_model(C.ENSEMBLE)),
        _counter(MC.REQUEST_SUCCESS, 3, **_model(C.ENSEMBLE)),
        _counter(MC.REQUEST_FAILURE, 1, reason="REJECTED", **_model(C.BLS)),
        _counter(MC.REQUEST_SUCCESS, 5, **_model(C.BLS)),
        _counter(MC.REQUEST_FAILURE, 4, reason="BACKEND", **llm),
    ]
    expected = {
        R.QUEUE_COMPUTE_RATIO: 0.5,
        R.TTFT_P99: 0.175,
        R.TTFT_P50: 0.06 + 0.02 * 50 / 90,
        R.TOKENS_PER_S: 1200,
        R.REQUESTS_PER_S: 4,
        R.KV_CACHE_USED: 0.5,
        R.ERROR_RATIO: 0.2,
    }
    sample = f'{{job="{R.COMPOSE_JOB}",instance="{INSTANCE}"}}'
    return {"name": "recorded series", "interval": f"{STEP_S}s", "input_series": series,
            "promql_expr_test": [
                {"expr": record, "eval_time": "5m",
                 "exp_samples": [{"labels": record + sample, "value": value}]}
                for record, value in expected.items()]}


def promtool_tests(rules_file: str) -> dict[str, Any]:
    """The ``promtool test rules`` document for the compose rules in ``rules_file`` (a path
    relative to the document's own folder, or absolute)."""
    t = R.Thresholds()
    alerts = R.alerts(COMPOSE_BY, R.COMPOSE_JOB, t)
    scenarios = _scenarios(t)
    names = [a.alert for a in alerts]
    if set(names) != set(scenarios):
        raise KeyError(f"alerts without a test: {sorted(set(names) - set(scenarios))}; tests "
                       f"without an alert: {sorted(set(scenarios) - set(names))}")
    tests = [test for a in alerts for test in _alert_tests(a, scenarios[a.alert](a))]
    return {"rule_files": [rules_file], "evaluation_interval": f"{STEP_S}s",
            "tests": [*tests, _recorded_test()]}
