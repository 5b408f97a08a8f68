"""The Grafana dashboard shipped in docker/grafana (provisioned by docker/compose.yaml).

Built with the Grafana Foundation SDK (``grafana-foundation-sdk``, the build for Grafana 11.6,
the version compose runs) and encoded to the dashboard JSON Grafana provisions. Every PromQL
name comes from the modules that own it: metric families from :mod:`tritonllm.metrics_catalog`
(selectors through :func:`~tritonllm.metrics_catalog.series`, which checks them), recorded
series and alert thresholds from :mod:`tritonllm.metrics_rules`. Recorded series are kept per
(``job``, ``instance``) in compose and per (``namespace``, ``pod``) in Kubernetes, so their
legends name both (:data:`BY_POD`; Grafana renders a missing label as nothing).

Four rows: load and autoscaling, latency, throughput and cache, errors. The panels are data
(:data:`ROWS`); one builder per panel kind (:data:`_KINDS`) turns them into SDK panels.
``scripts/render_deploy_files.py`` writes the JSON; a unit test checks the file is current and
that every name in every query is a catalog family or a recorded series (:func:`panel_queries`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import heatmap as heatmap_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m

from tritonllm import contract as C
from tritonllm import metrics_catalog as MC
from tritonllm import metrics_rules as R

__all__ = ["BY_POD", "DASHBOARD_UID", "DATASOURCE_UID", "ROWS", "PanelSpec", "Query",
           "dashboard", "panel_queries"]

DASHBOARD_UID = "tritonllm"
DATASOURCE_UID = "prometheus"  # docker/grafana/provisioning/datasources/prometheus.yml
#: Legend of a recorded series: its instance in compose, its pod in Kubernetes.
BY_POD = "{{instance}}{{pod}}"
#: Window of the dashboard's own rates (Grafana sizes it from the scrape interval).
RATE = "$__rate_interval"

PanelKind = Literal["timeseries", "stat", "heatmap"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = BY_POD
    #: Drawn as a dashed line (a capacity, not a load).
    dashed: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: PanelKind = "timeseries"
    width: int = 8
    height: int = 8
    max: float | None = None
    #: The alert's threshold (:class:`tritonllm.metrics_rules.Thresholds`), drawn in red.
    threshold: float | None = None


def _llm(name: str, value: str) -> str:
    return MC.series(name, value, model=C.LLM)


def _buckets(name: str, value: str) -> str:
    """The ``_bucket`` series of one catalog histogram, in the LLM model."""
    if MC.family(name).kind != "histogram":
        raise ValueError(f"{name} is not a histogram")
    return f"{name}_bucket{_llm(name, value)[len(name):]}"


def _rate(selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({selector}[{RATE}]))"


def _quantiles(p50: str, p99: str) -> tuple[Query, ...]:
    return (Query(p50, f"p50 {BY_POD}"), Query(p99, f"p99 {BY_POD}"))


def _values(name: str, values: tuple[str, ...], capacity: str = "max") -> tuple[Query, ...]:
    return tuple(Query(_llm(name, v), f"{v} {BY_POD}", dashed=v == capacity) for v in values)


_T = R.Thresholds()
_LLM = f'{{model="{C.LLM}"}}'

ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    ("Load and autoscaling", (
        PanelSpec("Queue time / compute time",
                  "Time requests wait in Triton's queue over the time the LLM model computes "
                  "(1m). Above 1 they wait longer than they are served: the autoscaling signal.",
                  "none", (Query(R.QUEUE_COMPUTE_RATIO),), width=12,
                  threshold=_T.queue_compute_ratio),
        PanelSpec("Engine requests: active, waiting, scheduled, max",
                  "Requests the engine holds (active), holds but did not run last iteration "
                  "(waiting), ran last iteration (scheduled), and can hold at once (max, dashed).",
                  "short", _values(MC.REQUEST_METRICS, ("active", "waiting", "scheduled", "max")),
                  width=12),
        PanelSpec("Triton pending requests by model",
                  "Requests in Triton's queue or executing, per model.",
                  "short", (Query(f"sum by (model) ({MC.PENDING_REQUESTS})", "{{model}}"),)),
        PanelSpec("Requests finished per second by reason",
                  "Requests the LLM model finished: stop (end id or stop sequence), length "
                  "(max_tokens), cancelled; all of them dashed.",
                  "reqps", (Query(_rate(f"{MC.REQUEST_FINISHED}{_LLM}", MC.FINISHED_REASON),
                                  f"{{{{{MC.FINISHED_REASON}}}}}"),
                            Query(f"sum ({R.REQUESTS_PER_S})", "all", dashed=True))),
        PanelSpec("Rejected requests per second by reason",
                  "Requests refused before generating: a bad input (invalid_argument) or a full "
                  "engine wait queue (queue_full).",
                  "reqps", (Query(_rate(MC.REJECTED, f"model, {MC.REJECT_REASON}"),
                                  f"{{{{model}}}} {{{{{MC.REJECT_REASON}}}}}"),)),
    )),
    ("Latency", (
        PanelSpec("Time to first token",
                  "From the request reaching the LLM model to its first token; p50 and p99 "
                  "over the last minute.",
                  "s", _quantiles(R.TTFT_P50, R.TTFT_P99), threshold=_T.ttft_p99_s),
        PanelSpec("Inter-token latency",
                  "Per request: decode time / (output tokens - 1); p50 and p99 over the last "
                  "minute.",
                  "s", _quantiles(R.ITL_P50, R.ITL_P99)),
        PanelSpec("End-to-end request latency",
                  "From the request reaching the LLM model to its last token; p50 and p99 over "
                  "the last minute.",
                  "s", _quantiles(R.E2E_P50, R.E2E_P99)),
    )),
    ("Throughput and cache", (
        PanelSpec("Generated tokens per second",
                  "Output tokens the LLM model produces per second (1m), counted as they are "
                  "generated.",
                  "short", (Query(R.TOKENS_PER_S),)),
        PanelSpec("KV cache used",
                  "Fraction of the engine's KV cache blocks in use. Near 1, new requests wait "
                  "for blocks.",
                  "percentunit", (Query(R.KV_CACHE_USED),), max=1.0,
                  threshold=_T.kv_cache_used),
        PanelSpec("KV cache blocks: used, free, max",
                  "KV cache blocks in use, free, and in the pool (max, dashed).",
                  "short", _values(MC.KV_CACHE_BLOCKS, ("used", "free", "max"))),
        PanelSpec("Input token length",
                  "Prompt tokens of each finished request: requests per second in each bucket.",
                  "short", (Query(_rate(_buckets(MC.INPUT_TOKEN_LEN, "total_input_tokens"), "le"),
                                  "{{le}}"),), kind="heatmap", width=12),
        PanelSpec("Output token length",
                  "Generated tokens of each finished request: requests per second in each "
                  "bucket.",
                  "short", (Query(_rate(_buckets(MC.OUTPUT_TOKEN_LEN, "total_output_tokens"),
                                        "le"), "{{le}}"),), kind="heatmap", width=12),
    )),
    ("Errors", (
        PanelSpec("Error ratio",
                  "Failed / all requests of the entry models (ensemble, BLS) over 5 minutes.",
                  "percentunit", (Query(f"max ({R.ERROR_RATIO})", "worst"),), kind="stat",
                  width=6, threshold=_T.error_ratio),
        PanelSpec("Error ratio by instance",
                  "Failed / all requests of the entry models (ensemble, BLS) over 5 minutes, "
                  "per instance or pod.",
                  "percentunit", (Query(R.ERROR_RATIO),), width=6, threshold=_T.error_ratio),
        PanelSpec("Failures per second by model and reason",
                  "Triton's failed requests: REJECTED (queue full, bad shape), CANCELED (by "
                  "the client), BACKEND (the model refused or failed), OTHER.",
                  "reqps", (Query(_rate(MC.REQUEST_FAILURE, "model, reason"),
                                  "{{model}} {{reason}}"),), width=12),
    )),
)


def _datasource() -> dash_m.DataSourceRef:
    return dash_m.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


def _thresholds(value: float | None) -> dash_b.ThresholdsConfig:
    steps = [dash_m.Threshold(value=None, color="green")]
    if value is not None:
        steps.append(dash_m.Threshold(value=value, color="red"))
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(steps)


_P = TypeVar("_P", ts_b.Panel, stat_b.Panel, heatmap_b.Panel)


def _common(panel: _P, spec: PanelSpec, panel_id: int) -> _P:
    panel = (panel.id(panel_id).title(spec.title).description(spec.description).unit(spec.unit)
             .datasource(_datasource()).span(spec.width).height(spec.height)
             .thresholds(_thresholds(spec.threshold)))
    if spec.max is not None:
        panel = panel.min(0).max(spec.max)
    for i, q in enumerate(spec.queries):
        target = (prom_b.Dataquery().ref_id(chr(ord("A") + i)).expr(q.expr)
                  .legend_format(q.legend).datasource(_datasource()))
        if spec.kind == "heatmap":
            target = target.format(prom_m.PromQueryFormat.HEATMAP)
        panel = panel.with_target(target)
    return panel


def _timeseries(spec: PanelSpec, panel_id: int) -> Builder[dash_m.Panel]:
    panel = (ts_b.Panel().fill_opacity(10).legend(
        common_b.VizLegendOptions().show_legend(True)
        .display_mode(common_m.LegendDisplayMode.LIST)
        .placement(common_m.LegendPlacement.BOTTOM)))
    if spec.threshold is not None:
        panel = panel.thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common_m.GraphThresholdsStyleMode.DASHED))
    for i, q in enumerate(spec.queries):
        if q.dashed:
            panel = panel.override_by_query(chr(ord("A") + i), [dash_m.DynamicConfigValue(
                "custom.lineStyle", {"fill": "dash", "dash": [10, 10]})])
    return _common(panel, spec, panel_id)


def _stat(spec: PanelSpec, panel_id: int) -> Builder[dash_m.Panel]:
    panel = (stat_b.Panel().graph_mode(common_m.BigValueGraphMode.AREA)
             .color_mode(common_m.BigValueColorMode.VALUE)
             .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"])))
    return _common(panel, spec, panel_id)


def _heatmap(spec: PanelSpec, panel_id: int) -> Builder[dash_m.Panel]:
    # The buckets are Prometheus's already (format heatmap): Grafana must not bucket them again.
    panel = (heatmap_b.Panel().calculate(False)
             .y_axis(heatmap_b.YAxisConfig().unit(spec.unit))
             .cell_values(heatmap_b.CellValues().unit("reqps")))
    return _common(panel, spec, panel_id)


_KINDS: dict[PanelKind, Callable[[PanelSpec, int], Builder[dash_m.Panel]]] = {
    "timeseries": _timeseries,
    "stat": _stat,
    "heatmap": _heatmap,
}


def _build() -> dash_b.Dashboard:
    board = (dash_b.Dashboard("tritonllm").uid(DASHBOARD_UID).tags(["tritonllm", "triton"])
             .description("Triton + TensorRT-LLM serving: load and autoscaling signal, latency, "
                          "throughput, KV cache and errors (tritonllm/dashboard.py).")
             .editable().refresh("10s").time("now-30m", "now").version(1)
             .tooltip(dash_m.DashboardCursorSync.CROSSHAIR))
    ids = itertools.count(1)
    for title, panels in ROWS:
        board = board.with_row(dash_b.Row(title).id(next(ids)))
        for spec in panels:
            board = board.with_panel(_KINDS[spec.kind](spec, next(ids)))
    return board


def dashboard() -> dict[str, Any]:
    """The dashboard JSON (what Grafana's provisioning reads)."""
    encoded: dict[str, Any] = json.loads(json.dumps(_build().build(), cls=JSONEncoder))
    return encoded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels") or [])  # a collapsed row holds its panels


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, read from :func:`dashboard`."""
    return [(p["title"], t["expr"]) for p in _panels(dashboard()["panels"])
            for t in p.get("targets") or []]
