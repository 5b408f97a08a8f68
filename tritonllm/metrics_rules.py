"""Prometheus recording and alerting rules over the LLM metrics, in one place, for both targets.

The compose stack's ``docker/prometheus/rules.yml``, the Kubernetes PrometheusRule, the
prometheus-adapter rule, the KEDA trigger, the Grafana dashboard and ``docs/observability.md``
take their names and PromQL from here; the metric names come from
:mod:`tritonllm.metrics_catalog`.

The autoscaling signal is the one NVIDIA's Triton autoscaling tutorial (TensorRT-LLM on
Kubernetes) scales on: the time requests spend in Triton's queue over the time they spend
computing::

    rate(nv_inference_queue_duration_us[1m])
      / clamp_min(rate(nv_inference_compute_infer_duration_us[1m]), 1)

recorded as ``triton:queue_compute:ratio``. It is hardware- and model-independent: 1 means a
request waits as long as it is served. We restrict it to the LLM model (``tensorrt_llm``), the
one model each request reaches once (the ensemble and its steps would count it several
times), and keep one series per pod (``namespace``, ``pod``), which prometheus-adapter maps onto
the pods the HPA averages over. On the CPU target it was measured to move with load by a real
Prometheus (``tests/integration/test_observability.py``).

Every other recorded series keeps the same labels (:data:`BY`), so a panel or an alert reads
the same on a laptop (``job``, ``instance``) and in a cluster (``namespace``, ``pod``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonllm import contract as C
from tritonllm import metrics_catalog as MC

__all__ = [
    "ALERTS",
    "ALERT_GROUP",
    "BY",
    "COMPUTE_DURATION",
    "QUEUE_COMPUTE_RATIO",
    "QUEUE_DURATION",
    "RECORDS",
    "RULE_GROUP",
    "Alert",
    "Record",
    "Thresholds",
    "queue_compute_ratio_expr",
    "rule_groups",
]

QUEUE_DURATION = MC.QUEUE_DURATION
COMPUTE_DURATION = MC.COMPUTE_DURATION
#: The recorded series (NVIDIA's tutorial's name, so their adapter and HPA configs match).
QUEUE_COMPUTE_RATIO = "triton:queue_compute:ratio"
TTFT_P50 = "tritonllm:time_to_first_token_seconds:p50"
TTFT_P99 = "tritonllm:time_to_first_token_seconds:p99"
ITL_P50 = "tritonllm:inter_token_latency_seconds:p50"
ITL_P99 = "tritonllm:inter_token_latency_seconds:p99"
E2E_P50 = "tritonllm:e2e_request_latency_seconds:p50"
E2E_P99 = "tritonllm:e2e_request_latency_seconds:p99"
TOKENS_PER_S = "tritonllm:generation_tokens:rate1m"
REQUESTS_PER_S = "tritonllm:finished_requests:rate1m"
KV_CACHE_USED = "tritonllm:kv_cache_used:ratio"
ERROR_RATIO = "tritonllm:request_errors:ratio_rate5m"
RULE_GROUP = "tritonllm-triton"
ALERT_GROUP = "tritonllm-alerts"
#: Labels each recorded series keeps: one per pod (prometheus-adapter's resource labels).
BY = ("namespace", "pod")
WINDOW = "1m"
ERROR_WINDOW = "5m"
#: The models clients call in both layouts: request errors are counted there, once each.
ENTRY_MODELS = (C.ENSEMBLE, C.BLS)
#: The scrape job of Triton in docker/prometheus/prometheus.yml (the compose stack).
COMPOSE_JOB = "triton"


@dataclass(frozen=True)
class Record:
    record: str
    expr: str
    meaning: str


@dataclass(frozen=True)
class Thresholds:
    """Where the alerts fire: one place, read by the rules, their tests and the docs."""

    queue_compute_ratio: float = 1.0  # requests wait longer than they compute
    ttft_p99_s: float = 2.0
    error_ratio: float = 0.05
    kv_cache_used: float = 0.9


@dataclass(frozen=True)
class Alert:
    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    runbook: str


def _group(by: tuple[str, ...]) -> str:
    return f" by ({', '.join(by)})" if by else ""


def queue_compute_ratio_expr(model: str = C.LLM, by: tuple[str, ...] = BY,
                             window: str = WINDOW) -> str:
    sel = f'{{model="{model}"}}'
    g = _group(by)
    return (f"sum{g} (rate({QUEUE_DURATION}{sel}[{window}]))\n"
            f"  / clamp_min(sum{g} (rate({COMPUTE_DURATION}{sel}[{window}])), 1)")


def _quantile(q: float, histogram: str, by: tuple[str, ...], window: str) -> str:
    """The q-quantile of a histogram over the window (NaN while nothing finished)."""
    return (f"histogram_quantile({q}, sum by ({', '.join(('le', *by))}) "
            f'(rate({histogram}_bucket{{model="{C.LLM}"}}[{window}])))')


def records(by: tuple[str, ...] = BY, window: str = WINDOW) -> tuple[Record, ...]:
    """The recording rules, per ``by`` (a pod in a cluster, an instance in compose).
    ``window``: the rate window of all but the error ratio (a test's short run takes a shorter
    one; the expressions are otherwise the same)."""
    g = _group(by)
    llm = f'{{model="{C.LLM}"}}'
    entry = f'{{model=~"{"|".join(ENTRY_MODELS)}"}}'
    fraction = MC.series(MC.KV_CACHE_BLOCKS, "fraction", model=C.LLM)
    failures = f"sum{g} (rate({MC.REQUEST_FAILURE}{entry}[{ERROR_WINDOW}]))"
    successes = f"sum{g} (rate({MC.REQUEST_SUCCESS}{entry}[{ERROR_WINDOW}]))"
    return (
        Record(QUEUE_COMPUTE_RATIO, queue_compute_ratio_expr(by=by, window=window),
               "Triton queue time / compute time of the LLM model: the autoscaling signal"),
        Record(TTFT_P50, _quantile(0.5, MC.TTFT, by, window),
               "median time to first token (in the LLM model)"),
        Record(TTFT_P99, _quantile(0.99, MC.TTFT, by, window),
               "p99 time to first token (in the LLM model)"),
        Record(ITL_P50, _quantile(0.5, MC.TPOT, by, window),
               "median inter-token latency (per request: decode time / (tokens - 1))"),
        Record(ITL_P99, _quantile(0.99, MC.TPOT, by, window), "p99 inter-token latency"),
        Record(E2E_P50, _quantile(0.5, MC.E2E, by, window),
               "median request latency in the LLM model"),
        Record(E2E_P99, _quantile(0.99, MC.E2E, by, window),
               "p99 request latency in the LLM model"),
        Record(TOKENS_PER_S, f"sum{g} (rate({MC.GENERATION_TOKENS}{llm}[{window}]))",
               "generated tokens per second"),
        Record(REQUESTS_PER_S, f"sum{g} (rate({MC.REQUEST_FINISHED}{llm}[{window}]))",
               "requests finished per second (any finish reason)"),
        Record(KV_CACHE_USED, f"max{g} ({fraction})", "fraction of the KV cache in use"),
        Record(ERROR_RATIO, f"{failures}\n  / clamp_min({successes} + {failures}, 1e-9)",
               "failed / all requests of the entry models (ensemble, BLS), last 5 minutes"),
    )


def alerts(by: tuple[str, ...] = BY, job: str = COMPOSE_JOB,
           t: Thresholds = Thresholds()) -> tuple[Alert, ...]:
    """The alerting rules (over the recorded series of :func:`records` with the same ``by``).
    ``job``: Triton's scrape job (``up{job=...}``)."""
    on = f"on ({', '.join(by)})" if by else ""
    up = f'up{{job="{job}"}}'
    loaded = f'{MC.INFERENCE_COUNT}{{model="{C.LLM}"}}'
    return (
        Alert("TritonLLMQueueTimeHigh", f"{QUEUE_COMPUTE_RATIO} > {t.queue_compute_ratio:g}",
              "5m", "warning",
              "Requests wait longer in Triton's queue than the LLM model takes to take them",
              "The LLM model cannot keep up: add replicas (the HPA/KEDA overlays scale on this "
              "ratio), or raise the engine's batch size if the KV cache has room "
              f"({KV_CACHE_USED}). A single slow instance shows here first: compare pods."),
        Alert("TritonLLMTimeToFirstTokenHigh", f"{TTFT_P99} > {t.ttft_p99_s:g}", "5m", "warning",
              f"p99 time to first token is over {t.ttft_p99_s:g}s",
              "Prompts wait for a slot or prefill is slow. Check the waiting requests "
              f'({MC.REQUEST_METRICS}{{request_type="waiting"}}) and the queue ratio: waiting '
              "requests mean too little capacity (scale out); none waiting with long prompts "
              "means prefill cost (enable chunked prefill, cap the input length)."),
        Alert("TritonLLMErrorRatioHigh", f"{ERROR_RATIO} > {t.error_ratio:g}", "5m", "critical",
              f"Over {t.error_ratio:.0%} of requests fail",
              "Read the reasons: sum by (model, reason) "
              f"(rate({MC.REQUEST_FAILURE}[5m])). BACKEND: the model refused or failed "
              "(bad inputs are named in the server log and the client's error); REJECTED: "
              "queues are full (scale out); CANCELED: clients give up (look at latency)."),
        Alert("TritonLLMKVCacheNearFull", f"{KV_CACHE_USED} > {t.kv_cache_used:g}", "10m",
              "warning", f"The KV cache is over {t.kv_cache_used:.0%} full",
              "New requests wait for blocks and long ones may be paused. Give the engine more "
              "cache (kv_cache_free_gpu_mem_fraction on GPU, cache_size_gb on CPU), cap "
              "max_tokens, or scale out."),
        Alert("TritonLLMServerDown", f"{up} == 0", "1m", "critical",
              "Prometheus cannot scrape Triton's metrics endpoint",
              "The server is down or unreachable: check the pod's events and logs "
              "(kubectl describe / logs), and the metrics port (8002)."),
        Alert("TritonLLMModelNotReady", f"({up} == 1) unless {on} ({loaded})", "2m", "critical",
              f"Triton is up but the LLM model ({C.LLM}) is not loaded",
              "Triton exports a model's metrics only while it is loaded. Check "
              "/v2/models/tensorrt_llm/ready and the server log for the load error "
              "(`tritonllm models list` shows every model's state)."),
    )


def rule_groups(by: tuple[str, ...] = BY, job: str = COMPOSE_JOB,
                t: Thresholds = Thresholds(), window: str = WINDOW) -> list[dict[str, Any]]:
    """The ``groups:`` of a Prometheus rule file (and of a PrometheusRule's spec)."""
    return [
        {"name": RULE_GROUP,
         "rules": [{"record": r.record, "expr": r.expr} for r in records(by, window)]},
        {"name": ALERT_GROUP,
         "rules": [{"alert": a.alert, "expr": a.expr, "for": a.for_,
                    "labels": {"severity": a.severity},
                    "annotations": {"summary": a.summary, "runbook": a.runbook}}
                   for a in alerts(by, job, t)]},
    ]


RECORDS = records()
ALERTS = alerts()
