"""What the OpenAI front costs: the same load straight over Triton's gRPC and through it.

    python -m tritonllm.perf.bench_openai [--repo REPO] [--concurrency 16] [--requests 512]
        [--rounds 3] [--genai-perf] [--out DIR] [--check]

Makes the tiny model, builds its CPU engine and renders a repository (or serves ``--repo``),
starts tritonserver, then the front as its own process (``python -m tritonllm openai``, as it is
deployed: in this process its event loop would share the GIL with the load generator's and
each would slow the other), and measures with the perf harness
(:func:`tritonllm.perf.run.run_ours`), the same prompts on both paths:

1. at ``--concurrency`` C, ``--rounds`` times, one run straight over gRPC and one through the
   front (``--endpoint openai``: ``/v1/completions``, streamed), alternating which goes first;
   the host is noisy, so the headline numbers are the medians of the rounds' own ratios and
   differences (as bench_serving's);
2. the same at concurrency 1 (``--idle-requests`` per run): the TTFT the front adds at idle;
3. with ``--genai-perf``: genai-perf against the front at C (``--endpoint-type chat``,
   streaming, the same prompts in a user message), beside our harness's runs through the front.

Tokens/s on both paths count the server's tokens (``num_output_tokens``; the front's
``usage``), so both count the same tokens. genai-perf counts by re-tokenizing the text, so it is
compared with our harness's re-tokenized count (``output_tokens_per_s``) of the front runs.
Output lengths are not forced on either path: the OpenAI API has no ``min_tokens``, so neither
path sends it (``max_tokens`` = ``--output-tokens``); the table shows the mean length each got.

Targets, printed with the numbers: front/gRPC tokens/s at C >= 0.9, added TTFT p50 (front p50 -
gRPC p50) <= 3 ms at C and at 1, genai-perf/ours tokens/s within 15 %; ``--check`` exits 1 if
one is missed. ``--out`` (default ``perf-runs/<UTC time>-openai``) gets ``openai.json`` (every
number, each run's summary, the command line), ``table.md``, and the logs of tritonserver, the
front and genai-perf.

Client, front, server and engine share this machine's cores: on a 2-core box the front's and
the client's per-chunk work is taken from the engine, which a deployment would not feel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.perf import targets

__all__ = ["TARGETS", "Numbers", "Round", "main", "missed", "parser", "table"]

PROG = "python -m tritonllm.perf.bench_openai"
#: name -> (comparison, bound): ">=" / "<=" a bound, or "within" a relative distance of 1.
TARGETS: targets.Targets = {
    "front_over_grpc_tps": (">=", 0.9),
    "added_ttft_p50_ms": ("<=", 3.0),
    "added_ttft_p50_idle_ms": ("<=", 3.0),
    "genai_perf_over_ours_tps": ("within", 0.15),
}
LABELS = {
    "front_over_grpc_tps": "front / gRPC output tokens/s at C",
    "added_ttft_p50_ms": "added TTFT p50 at C, ms",
    "added_ttft_p50_idle_ms": "added TTFT p50 at 1, ms",
    "genai_perf_over_ours_tps": "genai-perf / ours tokens/s via the front",
}


# ---- the numbers -------------------------------------------------------------------------------

@dataclass
class Measured:
    """One run's headline numbers (tokens/s; TTFT in ms; tokens per request)."""

    tps: float  # server-counted output tokens/s
    retokenized_tps: float  # the output text re-tokenized (genai-perf's count)
    ttft_p50_ms: float
    itl_p50_ms: float | None
    output_tokens_mean: float | None  # server-counted, per request
    retokenized_tokens_mean: float | None = None  # the text re-tokenized, per request
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    wall_s: float = 0.0  # the whole run, warm-up and token counting included
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process over wall_s

    @classmethod
    def of(cls, summary: Any) -> Measured:
        """From a :class:`~tritonllm.perf.metrics.Summary`; RuntimeError naming what is
        missing (failed requests, no server counts, no TTFT)."""
        if summary.errors:
            raise RuntimeError(f"requests failed: {summary.errors}")
        if summary.server_output_tokens_per_s is None or summary.ttft_ms is None:
            raise RuntimeError("the server reported no token counts (num_output_tokens / "
                               "usage) or no text arrived")
        server, text = summary.server_output_tokens, summary.output_tokens
        return cls(float(summary.server_output_tokens_per_s), summary.output_tokens_per_s,
                   summary.ttft_ms.p50, summary.itl_ms.p50 if summary.itl_ms else None,
                   server.mean if server else None, text.mean if text else None,
                   summary.to_dict())


@dataclass
class Round:
    """One gRPC run and one front run at the same concurrency, back to back."""

    concurrency: int
    first: str  # "grpc" or "front": which ran first
    grpc: Measured
    front: Measured

    @property
    def ratio(self) -> float:
        return self.front.tps / self.grpc.tps

    @property
    def added_ttft_ms(self) -> float:
        return self.front.ttft_p50_ms - self.grpc.ttft_p50_ms


@dataclass
class Numbers:
    """Everything one benchmark measured; :meth:`values` are what the targets judge."""

    concurrency: int
    input_tokens: int
    output_tokens: int
    requests: int
    idle_requests: int
    cores: int
    busy: list[Round] = field(default_factory=list)
    idle: list[Round] = field(default_factory=list)
    genai_perf: dict[str, Any] | None = None  # its summary's headline numbers
    genai_perf_error: str | None = None  # asked for, but it failed

    def values(self) -> dict[str, float]:
        out = {
            "front_over_grpc_tps": statistics.median(r.ratio for r in self.busy),
            "added_ttft_p50_ms": statistics.median(r.added_ttft_ms for r in self.busy),
            "added_ttft_p50_idle_ms": statistics.median(r.added_ttft_ms for r in self.idle),
        }
        if self.genai_perf is not None:
            out["genai_perf_over_ours_tps"] = (self.genai_perf["output_tokens_per_s"]
                                               / self.ours_via_front("retokenized_tps"))
            out["genai_perf_over_ours_ttft"] = (self.genai_perf["ttft_p50_ms"]
                                                / self.ours_via_front("ttft_p50_ms"))
        return out

    def ours_via_front(self, attr: str) -> float:
        """The median over the rounds at C of our front runs' ``attr``."""
        return float(statistics.median(float(getattr(r.front, attr)) for r in self.busy))

    def median(self, rounds: Sequence[Round], path: str, attr: str) -> float | None:
        values = [getattr(getattr(r, path), attr) for r in rounds]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def missed(self) -> list[str]:
        """The targets missed; a genai-perf run that failed misses its comparison."""
        out = missed(self.values())
        if self.genai_perf_error is not None:
            out.append("genai_perf_over_ours_tps")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = self.values()
        d["targets"] = targets.targets_doc(TARGETS)
        d["missed"] = self.missed()
        return d


def meets(name: str, value: float) -> bool:
    """Whether ``value`` meets target ``name`` (see :data:`TARGETS`)."""
    return targets.meets(TARGETS, name, value)


def missed(values: dict[str, float]) -> list[str]:
    """The targets among ``values`` that are missed (targets with no value are not judged)."""
    return targets.missed(TARGETS, values)


def _target_text(name: str) -> str:
    op, bound = TARGETS[name]
    return f"1 ± {bound:g}" if op == "within" else f"{op} {bound:g}"


def _f(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def table(n: Numbers) -> str:
    """The measurements, then the targets, as Markdown."""
    c = n.concurrency
    out = ["| measurement (median of rounds) | gRPC direct | through the front |",
           "|---|---:|---:|"]
    for rounds, where in ((n.busy, f"C={c}"), (n.idle, "C=1")):
        if not rounds:
            continue
        rows = [("output tokens/s (server-counted)", "tps", ".0f"),
                ("output tokens/s (re-tokenized)", "retokenized_tps", ".0f"),
                ("TTFT p50, ms", "ttft_p50_ms", ".1f"),
                ("ITL p50, ms", "itl_p50_ms", ".2f"),
                ("output tokens per request (server)", "output_tokens_mean", ".1f")]
        out += [f"| {label} at {where} | {_f(n.median(rounds, 'grpc', a), s)} | "
                f"{_f(n.median(rounds, 'front', a), s)} |" for label, a, s in rows]
    out += ["", "| round | C | first | gRPC tok/s | front tok/s | ratio | gRPC TTFT p50 | "
            "front TTFT p50 | added ms |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for k, r in enumerate([*n.busy, *n.idle]):
        out.append(f"| {k + 1} | {r.concurrency} | {r.first} | {r.grpc.tps:.0f} | "
                   f"{r.front.tps:.0f} | {r.ratio:.3f} | {r.grpc.ttft_p50_ms:.1f} | "
                   f"{r.front.ttft_p50_ms:.1f} | {r.added_ttft_ms:+.1f} |")
    if n.busy and n.busy[-1].grpc.cpu_s:
        last = n.busy[-1]
        names = list(last.front.cpu_s)
        out += ["", f"CPU seconds of the last round at C={c} (wall s x {n.cores} cores = CPU s "
                "available; warm-up and token counting included):", "",
                "| run | wall s | " + " | ".join(names) + " |",
                "|---|---:|" + "---:|" * len(names)]
        for label, m in (("gRPC direct", last.grpc), ("through the front", last.front)):
            out.append(f"| {label} | {m.wall_s:.1f} | "
                       + " | ".join(_f(m.cpu_s.get(k)) for k in names) + " |")
    g = n.genai_perf
    if g is not None:
        out += ["", f"| via the front at C={c} | genai-perf (chat) | ours (completions) |",
                "|---|---:|---:|",
                f"| output tokens/s (re-tokenized) | {g['output_tokens_per_s']:.0f} | "
                f"{n.ours_via_front('retokenized_tps'):.0f} |",
                f"| TTFT p50, ms | {g['ttft_p50_ms']:.1f} | "
                f"{n.ours_via_front('ttft_p50_ms'):.1f} |",
                f"| output tokens per request (re-tokenized) | "
                f"{_f(g.get('output_tokens_mean'))} | "
                f"{_f(n.median(n.busy, 'front', 'retokenized_tokens_mean'))} |",
                f"| requests | {_f(g.get('requests'), '.0f')} | {n.requests} |"]
    if n.genai_perf_error is not None:
        out += ["", f"genai-perf failed: {n.genai_perf_error}"]
    values = n.values()
    out += ["", "| target | measured | target | |", "|---|---:|---|---|"]
    for name in TARGETS:
        if name in values:
            ok = meets(name, values[name])
            out.append(f"| {LABELS[name]} | {values[name]:.3g} | {_target_text(name)} | "
                       f"{'met' if ok else 'MISSED'} |")
    if "genai_perf_over_ours_ttft" in values:
        out.append(f"| genai-perf / ours TTFT p50 (not a target) | "
                   f"{values['genai_perf_over_ours_ttft']:.3g} | | |")
    return "\n".join(out)


# ---- the processes -----------------------------------------------------------------------------

def wait_healthy(url: str, deadline_s: float, alive: Callable[[], bool],
                 poll_s: float = 0.2) -> None:
    """Poll ``url`` until it answers 200; RuntimeError when ``alive()`` turns false or the
    deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the front exited before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(poll_s)
    raise RuntimeError(f"{url} did not answer 200 within {deadline_s:g}s")


@contextmanager
def front_process(grpc_address: str, model: str, repo: Path, log: Path,
                  startup_s: float = 120.0) -> Iterator[tuple[str, int]]:
    """``tritonllm openai`` in its own process on a free port, no API key; yields its base
    URL (``http://127.0.0.1:PORT``) and process id once ``/health`` answers 200."""
    from tritonllm.openai.app import API_KEYS_ENV
    from tritonllm.server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "tritonllm", "openai", "--url", grpc_address, "--model", model,
           "--repo", str(repo), "--port", str(port), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if k != API_KEYS_ENV}
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(f"{url}/health", startup_s, lambda: proc.poll() is None)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def genai_perf(front_url: str, args: argparse.Namespace, prompts: list[str], tokenizer: Path,
               work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """genai-perf's chat endpoint against the front at ``args.concurrency``; its headline
    numbers (tokens/s and TTFT as it computes them) and the command."""
    from tritonllm.perf import drivers

    env = drivers.tool_environment()
    exe = drivers.find_tool(drivers.GENAI_PERF, env)
    drivers.find_tool(drivers.PERF_ANALYZER, env)
    work.mkdir(parents=True, exist_ok=True)
    prompts_file = work / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts),
                            encoding="utf-8")
    art = work / "artifacts"
    cmd = genai_perf_command(exe, front_url, args, prompts_file, tokenizer, art)
    say(f"genai-perf: {shlex.join(cmd)}")
    # genai-perf in its own process group, killed with its perf_analyzer on a timeout
    drivers._run(cmd, env, work / "genai-perf.log", 600.0)
    summaries = sorted(art.glob("*/profile_export_genai_perf.json"))
    if not summaries:
        raise RuntimeError(f"genai-perf wrote no profile_export_genai_perf.json under {art}")
    s = drivers.read_genai_perf_summary(summaries[0])
    return {"output_tokens_per_s": float(s["output_token_throughput"]["avg"]),
            "ttft_p50_ms": float(s["time_to_first_token"]["p50"]),
            "ttft_mean_ms": float(s["time_to_first_token"]["avg"]),
            "output_tokens_mean": float(s["output_sequence_length"]["avg"]),
            "requests": float(s["request_count"]["avg"]),
            "version": drivers.tool_version(drivers.GENAI_PERF),
            "command": shlex.join(cmd)}


def genai_perf_command(exe: Path | str, front_url: str, args: argparse.Namespace,
                       prompts_file: Path, tokenizer: Path, artifact_dir: Path) -> list[str]:
    """genai-perf 0.0.16's command line: chat completions, streamed, ``--requests`` requests
    after ``--concurrency`` warm-up ones, ``max_tokens`` = ``--output-tokens``."""
    host = front_url.split("://", 1)[-1]
    return [str(exe), "profile", "-m", args.model, "--endpoint-type", "chat", "-u", host,
            "--streaming", "--tokenizer", str(tokenizer), "--input-file", str(prompts_file),
            "--output-tokens-mean", str(args.output_tokens), "--output-tokens-stddev", "0",
            "--concurrency", str(args.concurrency), "--request-count", str(args.requests),
            "--warmup-request-count", str(args.concurrency), "--random-seed", "0",
            "--artifact-dir", str(artifact_dir)]


# ---- the run -----------------------------------------------------------------------------------

def measure(args: argparse.Namespace, repo: Path, out: Path,
            say: Callable[[str], None]) -> Numbers:
    """Serve ``repo``, start the front, run the rounds (and genai-perf)."""
    from tritonllm.errors import TritonLLMError
    from tritonllm.perf.bench_serving import _self_cpu_s, process_cpu_s
    from tritonllm.perf.prompts import Tokenizer, find_tokenizer
    from tritonllm.perf.run import build_requests, run_ours
    from tritonllm.perf.scenario import LengthSpec, Scenario
    from tritonllm.server import ServerOptions, TritonServer

    tok_dir = find_tokenizer(None, repo)
    tok = Tokenizer(tok_dir)
    numbers = Numbers(args.concurrency, args.input_tokens, args.output_tokens, args.requests,
                      args.idle_requests, os.cpu_count() or 0)
    log = out / "tritonserver.log"
    say(f"starting tritonserver (log: {log})")
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300, log_file=log)) as server:
        front_log = out / "front.log"
        say(f"starting the front: python -m tritonllm openai (log: {front_log})")
        with front_process(server.grpc_address, args.model, repo, front_log) as (front, pid):
            base = Scenario(url=server.grpc_address, model=args.model,
                            input_tokens=LengthSpec(args.input_tokens),
                            output_tokens=LengthSpec(args.output_tokens), num_prompts=32,
                            exact_output=False, timeout=600)

            def cpu() -> dict[str, float]:
                return {"client (this process)": _self_cpu_s(),
                        "front": sum(process_cpu_s(pid).values()),
                        "tritonserver + stubs": sum(process_cpu_s(server.pid or 0).values())}

            def one(path: str, conc: int, n: int) -> Measured:
                sc = base.replace(concurrency=(conc,), requests=n, warmup=conc)
                if path == "front":
                    sc = sc.replace(url=f"{front}/v1", endpoint="openai")
                before, t0 = cpu(), time.monotonic()
                try:
                    m = Measured.of(run_ours(sc, tok).points[0].summary)
                except RuntimeError as e:
                    raise RuntimeError(f"{path} at concurrency {conc}: {e}") from None
                m.wall_s = time.monotonic() - t0
                m.cpu_s = {k: v - before[k] for k, v in cpu().items()}
                return m

            for rounds, conc, n in ((numbers.busy, args.concurrency, args.requests),
                                    (numbers.idle, 1, args.idle_requests)):
                for k in range(args.rounds):
                    order = ("grpc", "front") if k % 2 == 0 else ("front", "grpc")
                    got = {path: one(path, conc, n) for path in order}
                    r = Round(conc, order[0], got["grpc"], got["front"])
                    rounds.append(r)
                    say(f"round {k + 1}/{args.rounds} at concurrency {conc}: gRPC "
                        f"{r.grpc.tps:.0f} tok/s, TTFT p50 {r.grpc.ttft_p50_ms:.1f} ms; front "
                        f"{r.front.tps:.0f} tok/s, TTFT p50 {r.front.ttft_p50_ms:.1f} ms "
                        f"(ratio {r.ratio:.3f}, added {r.added_ttft_ms:+.1f} ms)")
            if args.genai_perf:
                prompts = [p.text for p in build_requests(base, tok).prompts]
                try:
                    g = genai_perf(front, args, prompts, tok_dir, out / "genai-perf", say)
                except (TritonLLMError, RuntimeError) as e:  # the rounds' numbers still count
                    numbers.genai_perf_error = str(e).splitlines()[0] if str(e) else repr(e)
                    say(f"genai-perf failed: {numbers.genai_perf_error}")
                else:
                    numbers.genai_perf = g
                    say(f"genai-perf: {g['output_tokens_per_s']:.0f} tok/s, TTFT p50 "
                        f"{g['ttft_p50_ms']:.1f} ms")
    return numbers


# ---- the command line --------------------------------------------------------------------------

def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


_positive.__name__ = "int"  # argparse names the type in its messages


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=None,
                   help="serve this rendered repository (default: build the tiny model's)")
    p.add_argument("--model", default="ensemble", choices=("ensemble", "tensorrt_llm_bls"))
    p.add_argument("--concurrency", type=_positive, default=16)
    p.add_argument("--requests", type=_positive, default=512,
                   help="measured requests per run at the concurrency (default: 512)")
    p.add_argument("--idle-requests", type=_positive, default=64,
                   help="measured requests per run at concurrency 1 (default: 64)")
    p.add_argument("--rounds", type=_positive, default=3,
                   help="gRPC/front pairs per concurrency; the numbers are their medians")
    p.add_argument("--input-tokens", type=_positive, default=64)
    p.add_argument("--output-tokens", type=_positive, default=64)
    p.add_argument("--genai-perf", action="store_true",
                   help="also run genai-perf (chat) against the front at the concurrency")
    p.add_argument("--out", type=Path, default=None,
                   help="artifact directory (default: perf-runs/<UTC time>-openai)")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    from tritonllm.errors import TritonLLMError
    from tritonllm.perf.bench_observability import Progress, prepare
    from tritonllm.perf.run import default_out_dir

    say = Progress()
    out: Path = args.out if args.out is not None else default_out_dir("openai")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tritonllm-openai-") as tmp:
            repo = args.repo if args.repo is not None else prepare(Path(tmp), say)
            numbers = measure(args, repo, out, say)
    except (TritonLLMError, RuntimeError) as e:
        lines = str(e).splitlines() or [type(e).__name__]
        print(f"error: {lines[0]} (logs: {out})", file=sys.stderr)
        return 1
    text = table(numbers)
    doc = {**numbers.to_dict(),
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version()},
           "command": f"{PROG} {shlex.join(argv)}".rstrip()}
    (out / "openai.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"\n{doc['command']}\nartifacts: {out}")
    return 1 if args.check and numbers.missed() else 0


if __name__ == "__main__":
    sys.exit(main())
