"""A burst of load on the CPU target watched by a real Prometheus: what a dashboard would show.

    python -m tritonllm.perf.bench_observability [--repo REPO] [--concurrency 16] [--duration 20]
        [--window 10s] [--out DIR] [--docs]

Makes the tiny model and builds the CPU engine (or serves ``--repo``), renders a repository,
starts tritonserver and Debian's ``prometheus`` on it (1 s scrapes, the project's rules over a
``--window`` rate window), and runs :func:`tritonllm.perf.observe.observed_run`: idle, then
``--concurrency`` streams for ``--duration`` seconds, then idle until the autoscaling signal
falls back. Writes to ``--out`` (default ``perf-runs/<UTC time>-observability``):

* ``observability.json``: :meth:`~tritonllm.perf.observe.ObservedRun.to_dict` (non-finite
  values as null), the settings, the machine and the command line;
* ``observability.png``: the queue/compute ratio, generated tokens/s, TTFT and ITL p99, and the
  engine's active requests over the run, the load window shaded (``--docs`` also copies it to
  ``docs/img/observability_run.png``).

The table printed at the end compares the harness (client-side TTFT, server-counted tokens)
with what Prometheus computed over the same seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonllm import metrics_catalog as MC
from tritonllm import metrics_rules as R

if TYPE_CHECKING:
    from tritonllm.perf.observe import LocalPrometheus, ObservedRun

__all__ = ["ACTIVE", "main", "plot", "table"]

SCRAPE_S = 1.0
#: The engine's active requests, as observed_run records them.
ACTIVE = MC.series(MC.REQUEST_METRICS, "active", model="tensorrt_llm")
DOCS_PNG = Path(__file__).resolve().parents[1] / "docs" / "img" / "observability_run.png"
PROG = "python -m tritonllm.perf.bench_observability"


class Progress:
    """``[12.3s] message`` lines on stderr, seconds since the benchmark started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:.1f}s] {msg}", file=sys.stderr, flush=True)


class Watcher:
    """Prints the signal and the active requests every ``period_s`` while observed_run runs
    (it is one call of a minute or more)."""

    def __init__(self, prom: LocalPrometheus, say: Progress, period_s: float = 5.0) -> None:
        self.prom, self.say, self.period_s = prom, say, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="obs-watcher")

    def _run(self) -> None:
        from tritonllm.perf.observe import PrometheusError

        while not self._stop.wait(self.period_s):
            try:
                ratio = self.prom.value(R.QUEUE_COMPUTE_RATIO)
                active = self.prom.value(ACTIVE)
                tps = self.prom.value(R.TOKENS_PER_S)
            except PrometheusError:
                continue  # a progress line missed; the run itself reports real failures
            self.say(f"Prometheus: queue/compute {_fmt(ratio, '.3f')}, tokens/s "
                     f"{_fmt(tps, '.0f')}, active requests {_fmt(active, '.0f')}")

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def prepare(work: Path, say: Progress) -> Path:
    """The tiny model, its CPU engine and a repository rendered with the defaults, under
    ``work``; returns the repository."""
    from tritonllm.builders import BuildSettings, build
    from tritonllm.builders.repository import render_repository
    from tritonllm.settings import RepoSettings
    from tritonllm.tiny import make_tiny_model

    say("making the tiny model")
    model = make_tiny_model(work / "model", size="tiny", seed=0)
    say("building the CPU engine")
    engine = work / "engine"
    build(BuildSettings(checkpoint=model, engine="cpu", out=engine))
    say("rendering the repository")
    repo = work / "repo"
    render_repository(engine, repo, RepoSettings())
    return repo


def observe(args: argparse.Namespace, repo: Path, out: Path, say: Progress) -> ObservedRun:
    """Serve ``repo``, watch it with Prometheus, run the burst."""
    from tritonllm.perf.observe import LocalPrometheus, observed_run
    from tritonllm.perf.prompts import find_tokenizer
    from tritonllm.server import ServerOptions, TritonServer

    tokenizer = find_tokenizer(None, repo)
    log = out / "tritonserver.log"
    say(f"starting tritonserver (log: {log})")
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300, log_file=log)) as srv:
        target = srv.url_metrics.split("://", 1)[1].split("/", 1)[0]
        say(f"starting prometheus on {target} (scrape {SCRAPE_S:g}s, window {args.window})")
        with LocalPrometheus(target, scrape_s=SCRAPE_S, window=args.window) as prom:
            prom.wait_for(f'up{{job="{R.COMPOSE_JOB}"}}', lambda v: v == 1, 60)
            # A whole rate window of idle before the burst: the plot shows it (observed_run
            # plots from one window before the load) and the idle ratio is a full window's.
            idle_s = window_seconds(args.window) + 2 * SCRAPE_S
            say(f"idle for {idle_s:g}s (one rate window and two scrapes)")
            time.sleep(idle_s)
            say(f"observing: {args.concurrency} streams of {args.input_tokens} + "
                f"{args.output_tokens} tokens for {args.duration:g}s, idle until the signal "
                "falls back")
            with Watcher(prom, say):
                return observed_run(prom, srv.grpc_address, tokenizer,
                                    concurrency=args.concurrency, duration_s=args.duration,
                                    input_tokens=args.input_tokens,
                                    output_tokens=args.output_tokens)


# ---- the figure ------------------------------------------------------------------------------

def _xy(run: ObservedRun, name: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    samples = run.series.get(name) or []
    return [t - run.start for t, _ in samples], [v * scale for _, v in samples]


def plot(run: ObservedRun, path: Path, title: str = "") -> Path:
    """The run over time (seconds since the load started), four panels sharing that axis,
    the load window shaded; written as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(7.5, 8.4), dpi=110, sharex=True)
    ratio_ax, tps_ax, lat_ax, act_ax = axes
    load = run.end - run.start
    ratio_ax.plot(*_xy(run, R.QUEUE_COMPUTE_RATIO), "-", color="C3")
    ratio_ax.set_ylabel("queue / compute")
    ratio_ax.set_title(f"{R.QUEUE_COMPUTE_RATIO} (the autoscaling signal)", fontsize=10)

    tps_ax.plot(*_xy(run, R.TOKENS_PER_S), "-", color="C0", label="Prometheus")
    harness_tps = run.summary.get("server_output_tokens_per_s")
    if harness_tps is not None:
        tps_ax.hlines(harness_tps, 0.0, load, linestyles="--", color="C0", alpha=0.6,
                      label=f"harness, over the load ({harness_tps:.0f})")
    tps_ax.set_ylabel("tokens/s")
    tps_ax.set_title("generated tokens/s", fontsize=10)
    tps_ax.legend(fontsize=8, loc="best")

    lat_ax.plot(*_xy(run, R.TTFT_P99, 1e3), "-", color="C1", label="TTFT p99")
    lat_ax.plot(*_xy(run, R.ITL_P99, 1e3), "-", color="C2", label="ITL p99")
    client = run.summary.get("ttft_ms") or {}
    if client.get("p99") is not None:
        lat_ax.hlines(client["p99"], 0.0, load, linestyles="--", color="C1", alpha=0.6,
                      label=f"harness TTFT p99, over the load ({client['p99']:.0f} ms)")
    lat_ax.set_ylabel("ms")
    lat_ax.set_title("TTFT p99 and inter-token latency p99 (LLM model)", fontsize=10)
    lat_ax.legend(fontsize=8, loc="best")

    act_ax.plot(*_xy(run, ACTIVE), "-", color="C4", drawstyle="steps-post")
    act_ax.set_ylabel("requests")
    act_ax.set_title("engine active requests", fontsize=10)
    act_ax.set_xlabel("seconds since the load started")

    for ax in axes:
        ax.axvspan(0.0, load, color="0.5", alpha=0.12, lw=0,
                   label=f"load ({load:.1f} s)" if ax is ratio_ax else None)
        ax.grid(True, alpha=0.3)
        ax.margins(y=0.15)
        ax.set_ylim(bottom=0)
    ratio_ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


# ---- the numbers -------------------------------------------------------------------------------

def _finite(value: Any) -> Any:
    """``value`` with NaN / ±Inf (an empty histogram window) as None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def table(run: ObservedRun) -> str:
    """The run's headline numbers, harness beside Prometheus, as Markdown."""
    s = run.summary
    client = s.get("ttft_ms") or {}
    rows = [
        ("generated tokens/s (server-counted tokens)", s.get("server_output_tokens_per_s"),
         run.prom_tokens_per_s, ".0f"),
        ("TTFT mean, ms", client.get("mean"), _ms(run.prom_ttft_mean_s), ".1f"),
        ("TTFT p99, ms", client.get("p99"), _ms(run.prom_ttft_p99_s), ".1f"),
    ]
    out = ["| measurement | harness | Prometheus |", "|---|---:|---:|"]
    out += [f"| {name} | {_fmt(a, spec)} | {_fmt(b, spec)} |" for name, a, b, spec in rows]
    out += ["", "| queue/compute ratio | idle | peak | after |", "|---|---:|---:|---:|",
            f"| `{R.QUEUE_COMPUTE_RATIO}` | {run.idle_ratio:.3f} | {run.peak_ratio:.3f} | "
            f"{run.ratio_after:.3f} |",
            "", f"{run.requests} requests ({s.get('completed')} measured completed, errors "
            f"{s.get('errors') or 'none'}) over {run.end - run.start:.1f} s."]
    return "\n".join(out)


def record(run: ObservedRun, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """What ``observability.json`` holds."""
    doc: dict[str, Any] = _finite({
        **run.to_dict(),
        "settings": {"concurrency": args.concurrency, "duration_s": args.duration,
                     "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
                     "window": args.window, "scrape_s": SCRAPE_S,
                     "repo": None if args.repo is None else str(args.repo)},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "command": f"{PROG} {shlex.join(argv)}".rstrip(),
    })
    return doc


# ---- the command line ------------------------------------------------------------------------

def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def window_seconds(window: str) -> float:
    """A Prometheus duration of one unit (``10s``, ``1m``, ``1h``) in seconds."""
    return float(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


def _window(text: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?[smh]", text):
        raise argparse.ArgumentTypeError(f"a Prometheus duration like 10s or 1m, got {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=None,
                   help="serve this rendered repository (default: build the tiny model's)")
    p.add_argument("--concurrency", type=_positive(int), default=16)
    p.add_argument("--duration", type=_positive(float), default=20.0,
                   help="seconds of load (default: 20)")
    p.add_argument("--input-tokens", type=_positive(int), default=64)
    p.add_argument("--output-tokens", type=_positive(int), default=64)
    p.add_argument("--window", type=_window, default="10s",
                   help="rate window of the rules (default: 10s; the deployed rules use 1m)")
    p.add_argument("--out", type=Path, default=None,
                   help="artifact directory (default: perf-runs/<UTC time>-observability)")
    p.add_argument("--docs", action="store_true",
                   help=f"also copy the plot to {DOCS_PNG.relative_to(DOCS_PNG.parents[2])}")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    from tritonllm.errors import ConfigError, TritonLLMError
    from tritonllm.perf.run import default_out_dir

    say = Progress()
    out: Path = args.out if args.out is not None else default_out_dir("observability")
    try:
        if args.docs and not DOCS_PNG.parents[1].is_dir():
            raise ConfigError(f"--docs: {DOCS_PNG.parents[1]} is not there (run from a checkout)")
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tritonllm-obs-") as tmp:
            repo = args.repo if args.repo is not None else prepare(Path(tmp), say)
            run = observe(args, repo, out, say)
        errors = run.summary.get("errors") or {}
        if errors:
            say(f"warning: requests failed: {errors}")
        (out / "observability.json").write_text(
            json.dumps(record(run, args, argv), indent=2, allow_nan=False) + "\n")
        model = "the tiny model" if args.repo is None else str(args.repo)
        png = plot(run, out / "observability.png",
                   f"{model}: {args.concurrency} streams of {args.input_tokens} + "
                   f"{args.output_tokens} tokens for {args.duration:g} s, {os.cpu_count()} "
                   f"cores, {SCRAPE_S:g} s scrapes, rate window {args.window}")
        say(f"wrote {out / 'observability.json'} and {png}")
        if args.docs:
            DOCS_PNG.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, DOCS_PNG)
            say(f"copied the plot to {DOCS_PNG}")
    except TritonLLMError as e:
        lines = str(e).splitlines() or [type(e).__name__]
        log = out / "tritonserver.log"
        more = f" (tritonserver log: {log})" if len(lines) > 1 and log.is_file() else ""
        print(f"error: {lines[0]}{more}", file=sys.stderr)
        return 1
    print(table(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
