"""Prometheus recording rules over Triton's metrics: the autoscaling signal, in one place.

The Kubernetes PrometheusRule, the compose stack's ``docker/prometheus/rules.yml``, the
prometheus-adapter rule and the KEDA trigger all take their names and PromQL from here.

The signal is the one NVIDIA's Triton autoscaling tutorial (TensorRT-LLM on Kubernetes) scales
on: the time requests spend in Triton's queue over the time they spend computing::

    rate(nv_inference_queue_duration_us[1m])
      / clamp_min(rate(nv_inference_compute_infer_duration_us[1m]), 1)

recorded as ``triton:queue_compute:ratio``. It is hardware- and model-independent: 1 means a
request waits as long as it is served. We restrict it to the LLM model (``tensorrt_llm``), the
one model each request reaches once (the ensemble and its steps would count it several
times), and keep one series per pod (``namespace``, ``pod``), which prometheus-adapter maps onto
the pods the HPA averages over.
"""

from __future__ import annotations

from typing import Any

from tritonllm import contract as C

__all__ = [
    "COMPUTE_DURATION",
    "QUEUE_COMPUTE_RATIO",
    "QUEUE_DURATION",
    "RULE_GROUP",
    "queue_compute_ratio_expr",
    "rule_groups",
]

#: Triton's cumulative per-model counters (microseconds), in every Triton since 2.x.
QUEUE_DURATION = "nv_inference_queue_duration_us"
COMPUTE_DURATION = "nv_inference_compute_infer_duration_us"
#: The recorded series (NVIDIA's tutorial's name, so their adapter and HPA configs match).
QUEUE_COMPUTE_RATIO = "triton:queue_compute:ratio"
RULE_GROUP = "tritonllm-triton"
#: Labels each recorded series keeps: one per pod (prometheus-adapter's resource labels).
BY = ("namespace", "pod")
WINDOW = "1m"


def queue_compute_ratio_expr(model: str = C.LLM, by: tuple[str, ...] = BY) -> str:
    sel = f'{{model="{model}"}}'
    group = f" by ({', '.join(by)})" if by else ""
    return (f"sum{group} (rate({QUEUE_DURATION}{sel}[{WINDOW}]))\n"
            f"  / clamp_min(sum{group} (rate({COMPUTE_DURATION}{sel}[{WINDOW}])), 1)")


def rule_groups(by: tuple[str, ...] = BY) -> list[dict[str, Any]]:
    """The ``groups:`` of a Prometheus rule file (and of a PrometheusRule's spec)."""
    return [{
        "name": RULE_GROUP,
        "rules": [{
            "record": QUEUE_COMPUTE_RATIO,
            "expr": queue_compute_ratio_expr(by=by),
        }],
    }]
