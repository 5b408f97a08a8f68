"""The generated parts of the docs: tables from the code they describe, so a page cannot drift
from it. ``docs/observability.md``: the metric catalog, the recording rules, the alerts and the
dashboard's queries; ``docs/openai.md``: the OpenAI front's parameter table.

Each part sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` in its page
(:data:`PAGES`); ``scripts/render_deploy_files.py`` rewrites them (``--check``: fails when
stale).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tritonllm import metrics_catalog as MC
from tritonllm import metrics_rules as R

__all__ = ["PAGES", "SECTIONS", "render_page"]

_YES, _NO = "yes", "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(expr: str) -> str:
    return f"`{_cell(' '.join(expr.split()))}`"


def _where(targets: frozenset[MC.Target], target: MC.Target) -> str:
    return _YES if target in targets else _NO


def metrics_table() -> str:
    head = ("| name | type | labels (besides `model`, `version`) | meaning | CPU | GPU (ours) "
            "| GPU legacy | OpenAI front |\n|---|---|---|---|:-:|:-:|:-:|:-:|")
    rows = [head]
    for f in MC.CATALOG:
        meaning = f.meaning or f.help
        if f.buckets:
            meaning += f" Buckets: {', '.join(f'{b:g}' for b in f.buckets)}."
        labels = _NO
        if f.label is not None:
            labels = f"`{f.label}`"
        rows.append(f"| `{f.name}` | {f.kind} | {labels} | {_cell(meaning)} | "
                    f"{_where(f.targets, MC.CPU)} | {_where(f.targets, MC.GPU)} | "
                    f"{_where(f.targets, MC.GPU_LEGACY)} | {_where(f.targets, MC.OPENAI)} |")
        for v in f.values:
            rows.append(f"| | | `{f.label}=\"{v.name}\"` | {_cell(v.meaning)} | "
                        f"{_where(v.targets & f.targets, MC.CPU)} | "
                        f"{_where(v.targets & f.targets, MC.GPU)} | "
                        f"{_where(v.targets & f.targets, MC.GPU_LEGACY)} | "
                        f"{_where(v.targets & f.targets, MC.OPENAI)} |")
    sources = sorted({f.source for f in MC.CATALOG})
    rows.append("")
    rows.append("Where the names come from: " + "; ".join(sources) + ".")
    return "\n".join(rows)


def records_table() -> str:
    rows = ["| recorded series | PromQL (per `namespace`, `pod` in a cluster; per `job`, "
            "`instance` in compose) | meaning |", "|---|---|---|"]
    for r in R.records():
        rows.append(f"| `{r.record}` | {_code(r.expr)} | {_cell(r.meaning)} |")
    return "\n".join(rows)


def alerts_table() -> str:
    t = R.Thresholds()
    rows = [f"Thresholds (`tritonllm.metrics_rules.Thresholds`): queue/compute ratio "
            f"{t.queue_compute_ratio:g}, TTFT p99 {t.ttft_p99_s:g} s, error ratio "
            f"{t.error_ratio:g}, KV cache {t.kv_cache_used:g}.", "",
            "| alert | PromQL | for | severity | what to do |", "|---|---|---|---|---|"]
    for a in R.alerts():
        rows.append(f"| `{a.alert}` | {_code(a.expr)} | {a.for_} | {a.severity} | "
                    f"{_cell(a.summary)}. {_cell(a.runbook)} |")
    return "\n".join(rows)


def panels_table() -> str:
    from tritonllm.dashboard import panel_queries

    rows = ["| panel | PromQL |", "|---|---|"]
    last = ""
    for title, expr in panel_queries():
        rows.append(f"| {_cell(title) if title != last else ''} | {_code(expr)} |")
        last = title
    return "\n".join(rows)


def openai_parameters_table() -> str:
    from tritonllm.openai.protocol import ACCEPTED, REFUSED, SUPPORTED

    rows = ["| parameter | here |", "|---|---|"]
    rows += [f"| `{k}` | {_cell(v)} |" for k, v in SUPPORTED.items()]
    rows += [f"| `{k}` | accepted, no effect: {_cell(v)} |" for k, v in ACCEPTED.items()]
    rows += [f"| `{k}` | **400**: {_cell(v)} |" for k, v in REFUSED.items()]
    rows += ["| anything else | **400** `unknown parameter`, naming it |"]
    return "\n".join(rows)


def openai_embedding_parameters_table() -> str:
    from tritonllm.openai.protocol import EMBEDDING_PARAMETERS

    rows = ["| parameter | here |", "|---|---|"]
    rows += [f"| `{k}` | {_cell(v)} |" for k, v in EMBEDDING_PARAMETERS.items()]
    rows += ["| anything else | **400** `unknown parameter`, naming it |"]
    return "\n".join(rows)


#: name -> renderer of one generated part of docs/observability.md.
SECTIONS: dict[str, Callable[[], str]] = {
    "metrics": metrics_table,
    "records": records_table,
    "alerts": alerts_table,
    "panels": panels_table,
}
#: page (relative to the repository root) -> its generated parts.
PAGES: dict[str, dict[str, Callable[[], str]]] = {
    "docs/observability.md": SECTIONS,
    "docs/openai.md": {"parameters": openai_parameters_table,
                       "embedding-parameters": openai_embedding_parameters_table},
}


def render_page(text: str, sections: dict[str, Callable[[], str]] = SECTIONS,
                page: str = "docs/observability.md") -> str:
    """``text`` with every generated part rewritten (KeyError for a part the page lacks)."""
    for name, render in sections.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
        if not pattern.search(text):
            raise KeyError(f"{page} has no '<!-- generated: {name} -->' part")
        body = render()

        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(2)

        text = pattern.sub(fill, text)
    return text
