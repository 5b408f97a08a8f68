"""Artifact directories: write a run as JSON, CSV, Markdown and PNG plots; read it back; compare.

Layout of an artifact directory (every tool writes the same)::

    run.json          meta, scenario, per load point: summary (+ the tool's own summary), SLOs
    records.csv       one row per measured request, all points (``point`` column)
    summary.csv       one row per load point, flattened metrics
    report.md         the summary table (+ SLO results), links to the plots
    plots/*.png       throughput vs TTFT p99 across points, latency distributions
    <tool>/           raw exports of perf_analyzer / genai-perf (driver runs only)

Counts agree by construction: ``records.csv`` has one row per request sent, and each point's
``summary.requests`` is its number of rows. :data:`WRITERS` is the registry of report files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonllm.errors import ConfigError
from tritonllm.perf.metrics import RequestRecord, Summary
from tritonllm.perf.run import RunResult
from tritonllm.perf.slo import SLOResult

__all__ = ["WRITERS", "compare", "format_compare", "load_run", "markdown", "write_run"]

RUN_FILE = "run.json"
RECORDS_FILE = "records.csv"
SUMMARY_FILE = "summary.csv"
MARKDOWN_FILE = "report.md"
PLOTS_DIR = "plots"


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _stat(s: Summary, metric: str, stat: str) -> float | None:
    v = getattr(s, metric)
    return None if v is None else float(v.get(stat))


def markdown_table(run: RunResult) -> str:
    """The summary table: one row per load point."""
    head = ("| load | requests | errors | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) "
            "| e2e p50 / p99 (ms) | output tok/s | req/s |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for p in run.points:
        s = p.summary
        err = sum(s.errors.values())
        rows.append(
            f"| {p.point.label} | {s.requests} | {err} "
            f"| {_fmt(_stat(s, 'ttft_ms', 'p50'))} / {_fmt(_stat(s, 'ttft_ms', 'p99'))} "
            f"| {_fmt(_stat(s, 'itl_ms', 'p50'), 2)} / {_fmt(_stat(s, 'itl_ms', 'p99'), 2)} "
            f"| {_fmt(_stat(s, 'e2e_ms', 'p50'))} / {_fmt(_stat(s, 'e2e_ms', 'p99'))} "
            f"| {_fmt(s.output_tokens_per_s)} | {_fmt(s.requests_per_s, 2)} |")
    return "\n".join([head, *rows])


def markdown(run: RunResult, slo: Sequence[SLOResult] = (), plots: Sequence[str] = ()) -> str:
    """``report.md``: what ran, the table, errors by kind, SLO results, plot links."""
    sc = run.scenario
    load = (f"request rate {sc.request_rate:g}/s (Poisson)" if sc.request_rate is not None
            else "concurrency " + ", ".join(map(str, sc.concurrency)))
    prompts = f"dataset {sc.dataset}" if sc.dataset else f"{sc.input_tokens} input tokens"
    amount = f"{sc.duration:g} s" if sc.duration is not None else f"{sc.requests} requests"
    lines = [
        f"# {sc.model} at {sc.url} ({run.tool})",
        "",
        f"{load}; {amount} per point after {sc.warmup} warm-up; {prompts}, "
        f"{sc.output_tokens} output tokens{' (exact)' if sc.exact_output else ''}; "
        f"{'streaming' if sc.streaming else 'not streaming'}.",
        "",
        markdown_table(run),
    ]
    errs = [(p.point.label, k, n) for p in run.points for k, n in p.summary.errors.items()]
    if errs:
        lines += ["", "Errors: " + "; ".join(f"{lbl}: {n} {k}" for lbl, k, n in errs)]
    if slo:
        lines += ["", "| SLO | result |", "|---|---|"]
        lines += [f"| {r.slo} at {r.point} | {'pass' if r.passed else 'FAIL'}: "
                  f"{r.describe()} |" for r in slo]
    if plots:
        lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _write_records(run: RunResult, path: Path) -> None:
    rows = [r.to_row() for p in run.points for r in p.records]
    fields = list(RequestRecord(0, "", "", 0.0).to_row())
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _write_summary_csv(run: RunResult, path: Path) -> None:
    rows = [{"point": p.point.label, **p.summary.flat()} for p in run.points]
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


#: Report files: name → writer(run, path). ``run.json`` and the plots are written by
#: :func:`write_run` itself (they need the SLO results / matplotlib).
WRITERS: dict[str, Callable[[RunResult, Path], None]] = {
    RECORDS_FILE: _write_records,
    SUMMARY_FILE: _write_summary_csv,
}


def write_run(run: RunResult, out: Path, slo: Sequence[SLOResult] = (),
              plots: bool = True) -> list[Path]:
    """Write the artifact directory ``out`` (created) and return the files written."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create {out}: {e.strerror}") from e
    written = []
    data = run.to_dict()
    data["slo"] = [{"key": r.slo.key, "op": r.slo.op, "limit": r.slo.limit, "point": r.point,
                    "value": r.value, "passed": r.passed} for r in slo]
    (out / RUN_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    written.append(out / RUN_FILE)
    for name, writer in WRITERS.items():
        writer(run, out / name)
        written.append(out / name)
    plot_files: list[Path] = []
    if plots:
        from tritonllm.perf.plots import render_plots

        plot_files = render_plots(run, out / PLOTS_DIR)
        written += plot_files
    md = markdown(run, slo, [p.relative_to(out).as_posix() for p in plot_files])
    (out / MARKDOWN_FILE).write_text(md, encoding="utf-8")
    written.append(out / MARKDOWN_FILE)
    return written


def load_run(path: Path) -> RunResult:
    """Read an artifact directory (or its ``run.json``); ConfigError if it is not one."""
    path = Path(path)
    file = path / RUN_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not a perf run (no {RUN_FILE})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{file}: cannot read: {e}") from e
    if not isinstance(data, dict) or "points" not in data or "scenario" not in data:
        raise ConfigError(f"{file}: not a tritonllm perf run")
    return RunResult.from_dict(data)


#: Compared metrics: (name, summary getter, higher is better).
_COMPARED: list[tuple[str, Callable[[Summary], float | None], bool]] = [
    ("ttft_p50_ms", lambda s: _stat(s, "ttft_ms", "p50"), False),
    ("ttft_p99_ms", lambda s: _stat(s, "ttft_ms", "p99"), False),
    ("itl_p50_ms", lambda s: _stat(s, "itl_ms", "p50"), False),
    ("itl_p99_ms", lambda s: _stat(s, "itl_ms", "p99"), False),
    ("e2e_p50_ms", lambda s: _stat(s, "e2e_ms", "p50"), False),
    ("e2e_p99_ms", lambda s: _stat(s, "e2e_ms", "p99"), False),
    ("output_tps", lambda s: s.output_tokens_per_s, True),
    ("rps", lambda s: s.requests_per_s, True),
    ("error_rate", lambda s: s.error_rate, False),
]


@dataclass(frozen=True)
class Delta:
    """One metric at one load point in runs A and B."""

    point: str
    metric: str
    a: float | None
    b: float | None
    higher_is_better: bool

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> float | None:
        """(B − A) / A, None when A is 0 or missing."""
        if self.change is None or not self.a:
            return None
        return self.change / abs(self.a)

    @property
    def better(self) -> bool | None:
        if not self.change:
            return None
        return (self.change > 0) == self.higher_is_better


def compare(a: RunResult, b: RunResult) -> list[Delta]:
    """Deltas of the key metrics at every load point present in both runs (A's order)."""
    deltas = []
    for pa in a.points:
        pb = b.point(pa.point.label)
        if pb is None:
            continue
        for name, get, hib in _COMPARED:
            deltas.append(Delta(pa.point.label, name, get(pa.summary), get(pb.summary), hib))
    return deltas


def format_compare(a: RunResult, b: RunResult, deltas: Sequence[Delta]) -> str:
    """A plain-text table of :func:`compare`'s deltas (``+`` better, ``-`` worse)."""
    lines = [f"A: {a.meta.get('started', '?')} {a.tool}   B: {b.meta.get('started', '?')} "
             f"{b.tool}"]
    only_a = [p.point.label for p in a.points if b.point(p.point.label) is None]
    only_b = [p.point.label for p in b.points if a.point(p.point.label) is None]
    if only_a or only_b:
        lines.append(f"not compared: only in A: {only_a or '-'}; only in B: {only_b or '-'}")
    lines.append(f"{'point':<20} {'metric':<12} {'A':>12} {'B':>12} {'B-A':>12} {'%':>8}")
    for d in deltas:
        def num(x: float | None) -> str:
            return "–" if x is None else f"{x:.4g}"
        rel = "–" if d.relative is None else f"{d.relative * 100:+.1f}%"
        mark = {True: " +", False: " -", None: ""}[d.better]
        lines.append(f"{d.point:<20} {d.metric:<12} {num(d.a):>12} {num(d.b):>12} "
                     f"{num(d.change):>12} {rel:>8}{mark}")
    return "\n".join(lines)


def read_records(out: Path) -> list[dict[str, Any]]:
    """The rows of ``records.csv`` (strings, as written)."""
    with (Path(out) / RECORDS_FILE).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
