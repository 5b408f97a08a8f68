"""The Grafana dashboard (tritonllm/dashboard.py): its JSON, its datasource, and every name in
every query, which must be a catalog family (tritonllm/metrics_catalog.py) or a recorded series
(tritonllm/metrics_rules.py). That the shipped file is current is tested in test_kubernetes.py
(``scripts/render_deploy_files.py --check``) and test_docker_files.py."""

from __future__ import annotations

import json
import re

import pytest

from tritonllm import metrics_catalog as MC
from tritonllm import metrics_rules as R
from tritonllm.dashboard import DASHBOARD_UID, DATASOURCE_UID, ROWS, dashboard, panel_queries

RECORDED = {r.record for r in R.RECORDS}
FAMILIES = {f.name for f in MC.CATALOG}
HISTOGRAMS = {f.name for f in MC.CATALOG if f.kind == "histogram"}

# What is not a metric name: strings, label matchers, range windows, label lists of by/without
# and of vector matching.
_NOT_NAMES = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]'
                        r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier (recorded series have ':') not inside a number and not called as a function.
_NAME = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    return {n for n in _NAME.findall(_NOT_NAMES.sub(" ", expr)) if n.lower() not in _KEYWORDS}


def known(name: str) -> bool:
    if name in RECORDED or name in FAMILIES:
        return True
    base, _, suffix = name.rpartition("_")
    return suffix in ("bucket", "sum", "count") and base in HISTOGRAMS


def _panels(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels") or []))
    return out


def test_metric_names_reads_what_a_query_names() -> None:
    # The check below is only as good as this extractor: it must find names, not skip them.
    expr = ('histogram_quantile(0.99, sum by (le, pod) (rate(a_bucket{model="x", le=~"1e-9"}'
            '[$__rate_interval]))) / clamp_min(sum without (job) (b:c:d) + on (pod) e, 1e-9)'
            ' > bool 2 unless f')
    assert metric_names(expr) == {"a_bucket", "b:c:d", "e", "f"}
    assert not known("nv_inference_request_sucess")
    assert known(f"{MC.TTFT}_bucket") and not known(f"{MC.REQUEST_SUCCESS}_bucket")


def test_dashboard_is_json_with_uid_title_and_panels() -> None:
    d = json.loads(json.dumps(dashboard()))
    assert d == dashboard()  # deterministic: the shipped file is compared to it
    assert d["uid"] == DASHBOARD_UID and d["title"]
    panels = _panels(d["panels"])
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == [title for title, _ in ROWS]
    others = [p for p in panels if p["type"] != "row"]
    assert len(others) == sum(len(specs) for _, specs in ROWS)
    assert len({p["id"] for p in panels}) == len(panels)
    for p in others:
        assert p["type"] in ("timeseries", "stat", "heatmap")
        assert p["title"] and p["description"] and p["targets"], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert [t["refId"] for t in p["targets"]] == [chr(ord("A") + i)
                                                      for i in range(len(p["targets"]))]


def test_every_panel_and_target_reads_the_provisioned_datasource() -> None:
    for p in _panels(dashboard()["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == DATASOURCE_UID, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, p["title"]


@pytest.mark.parametrize(("title", "expr"), panel_queries())
def test_every_query_names_catalog_metrics_or_recorded_series(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr!r}"
    assert [n for n in names if not known(n)] == [], f"{title}: {expr!r}"


def test_panel_queries_cover_the_recorded_series_and_the_brief() -> None:
    used = set().union(*(metric_names(e) for _, e in panel_queries()))
    assert RECORDED - used == set()
    for name in (MC.REQUEST_METRICS, MC.PENDING_REQUESTS, MC.REQUEST_FINISHED, MC.REJECTED,
                 MC.KV_CACHE_BLOCKS, f"{MC.INPUT_TOKEN_LEN}_bucket",
                 f"{MC.OUTPUT_TOKEN_LEN}_bucket", MC.REQUEST_FAILURE):
        assert name in used, name
    titles = {t for t, _ in panel_queries()}
    assert len(titles) == sum(len(specs) for _, specs in ROWS)


def test_units_of_the_fraction_panels() -> None:
    by_title = {p["title"]: p for p in _panels(dashboard()["panels"])}
    kv = by_title["KV cache used"]["fieldConfig"]["defaults"]
    assert (kv["unit"], kv["min"], kv["max"]) == ("percentunit", 0, 1)
    assert by_title["Error ratio"]["fieldConfig"]["defaults"]["unit"] == "percentunit"
    steps = by_title["Queue time / compute time"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == R.Thresholds().queue_compute_ratio
