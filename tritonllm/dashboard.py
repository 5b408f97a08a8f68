"""The Grafana dashboard shipped in docker/grafana (provisioned by docker/compose.yaml).

Panels over the metrics both targets export: Triton's per-model counters and our engine's
``tritonllm_*`` gauges (:mod:`tritonllm.ensembles.llm_metrics`), and the autoscaling signal
(:mod:`tritonllm.metrics_rules`). Generated as plain dashboard JSON so the names come from the
modules that own them; ``scripts/render_deploy_files.py`` writes it, a unit test checks the
file is current.
"""

from __future__ import annotations

from typing import Any

from tritonllm import contract as C
from tritonllm import metrics_catalog as MC
from tritonllm.metrics_rules import QUEUE_COMPUTE_RATIO

__all__ = ["DASHBOARD_UID", "DATASOURCE_UID", "dashboard"]

DASHBOARD_UID = "tritonllm"
DATASOURCE_UID = "prometheus"  # docker/grafana/provisioning/datasources/prometheus.yml

_PANELS: tuple[tuple[str, str, str, list[str]], ...] = (
    # title, unit, legend, PromQL
    ("Requests per second (by model)", "reqps", "{{model}}",
     ["sum by (model) (rate(nv_inference_request_success[1m]))"]),
    ("Failed requests per second (by model)", "reqps", "{{model}}",
     ["sum by (model) (rate(nv_inference_request_failure[1m]))"]),
    ("Queue time / compute time (autoscaling signal)", "none", "{{instance}}",
     [QUEUE_COMPUTE_RATIO]),
    ("Pending requests (Triton queue)", "short", "{{model}}",
     ["sum by (model) (nv_inference_pending_request_count)"]),
    ("Generated tokens per second", "short", "{{instance}}",
     [f"sum by (instance) (rate({MC.GENERATION_TOKENS}[1m]))"]),
    ("Engine requests: active and waiting", "short", "{{__name__}}",
     [f"sum({MC.series(MC.REQUEST_METRICS, 'active')})",
      f"sum({MC.series(MC.REQUEST_METRICS, 'waiting')})"]),
    (f"Mean request latency, {C.ENSEMBLE} (ms)", "ms", "{{instance}}",
     [f'sum by (instance) (rate(nv_inference_request_duration_us{{model="{C.ENSEMBLE}"}}[1m]))'
      f' / clamp_min(sum by (instance) (rate(nv_inference_request_success{{model="{C.ENSEMBLE}"}}'
      f"[1m])), 1e-9) / 1000"]),
)


def dashboard() -> dict[str, Any]:
    panels = []
    for i, (title, unit, legend, exprs) in enumerate(_PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
            "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(ord("A") + j), "expr": e, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": DATASOURCE_UID}}
                        for j, e in enumerate(exprs)],
        })
    return {"uid": DASHBOARD_UID, "title": "tritonllm", "schemaVersion": 39, "version": 1,
            "editable": True, "refresh": "10s", "time": {"from": "now-30m", "to": "now"},
            "tags": ["tritonllm", "triton"], "panels": panels}
