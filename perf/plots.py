"""PNG plots of a run (matplotlib, Agg backend: no display needed).

- ``throughput_vs_ttft.png``: output tokens/s (x) against TTFT p50 and p99 (y), one marker
  per load point, labelled — where the latency/throughput trade-off bends.
- ``latency_distributions.png``: CDFs of TTFT, ITL and e2e latency per load point.

:data:`PLOTS` is the registry: name → function drawing onto a new figure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tritonllm.perf.run import RunResult

__all__ = ["PLOTS", "render_plots"]


def _throughput_vs_ttft(run: RunResult, plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    pts = [(p.point.label, p.summary) for p in run.points if p.summary.ttft_ms is not None]
    xs = [s.output_tokens_per_s for _, s in pts]
    for stat, style in (("p50", "o--"), ("p99", "s-")):
        ys = [s.ttft_ms.get(stat) for _, s in pts if s.ttft_ms is not None]
        ax.plot(xs, ys, style, label=f"TTFT {stat}")
    for (label, s), x in zip(pts, xs, strict=True):
        if s.ttft_ms is not None:
            ax.annotate(label.split("=")[-1], (x, s.ttft_ms.p99), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    mode = run.points[0].point.mode.replace("_", " ") if run.points else ""
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel("time to first token (ms)")
    ax.set_title(f"{run.scenario.model}: throughput vs TTFT ({mode}, {run.tool})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _latency_distributions(run: RunResult, plt: Any) -> Any:
    """Empirical CDFs (log-scaled ms): outliers do not squash the bulk, points overlay."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=110)
    metrics = (("ttft", "TTFT"), ("itl", "inter-token latency"), ("e2e", "e2e latency"))
    for ax, (name, title) in zip(axes, metrics, strict=True):
        drawn = False
        for p in run.points:
            vals = [getattr(r, name) for r in p.records]
            ms = sorted(v * 1e3 for v in vals if v is not None and v > 0)
            if ms:
                ys = [(i + 1) / len(ms) for i in range(len(ms))]
                ax.step(ms, ys, where="post", label=p.point.label.split("=")[-1])
                drawn = True
        if drawn:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ms (log scale)")
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of requests")
    if run.points:
        axes[-1].legend(title=run.points[0].point.mode.replace("_", " "), fontsize=8,
                        loc="lower right")
    fig.tight_layout()
    return fig


PLOTS: dict[str, Callable[[RunResult, Any], Any]] = {
    "throughput_vs_ttft.png": _throughput_vs_ttft,
    "latency_distributions.png": _latency_distributions,
}


def render_plots(run: RunResult, out: Path) -> list[Path]:
    """Write every plot of :data:`PLOTS` into ``out``; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, draw in PLOTS.items():
        fig = draw(run, plt)
        try:
            fig.savefig(out / name)
        finally:
            plt.close(fig)
        files.append(out / name)
    return files
