"""The serving benchmark of the CPU target: what Triton costs on top of the bare engine.

    python -m tritonllm.perf.bench_serving [--size small] [--concurrency 16] [--out DIR]

One run, four measurements, all on the same engine build and the same prompts:

1. **bare**: OpenVINO GenAI's ContinuousBatchingPipeline in this process, driven by a plain
   ``step()`` loop, closed loop at concurrency C (a new request as soon as one ends) and 1;
2. **served**: the rendered repository on the real tritonserver, the same load sent by the
   perf harness (:func:`tritonllm.perf.run.run_ours`, streaming through ``--model``) at C and 1;
3. **idle TTFT**: single short requests on the idle server, one after the other;
4. **late TTFT**: the same request sent while C-1 long streams are decoding (each has already
   streamed its first token), so it has to join the running batch.

Bare and served at C alternate ``--rounds`` times and the served/bare ratio is the median of
the rounds' ratios: on a shared machine the speed drifts between minutes, and a bare run
measured far from its served run says little.

Every request generates exactly ``--output-tokens`` tokens (``min_tokens`` = ``max_tokens``), so
tokens/s compare like with like. The targets (issue #4) are printed with the numbers:
served/bare at C >= 0.9, served C-stream/1-stream >= 3, late/idle TTFT <= 3; ``--check`` exits 1
if one is missed. A JSON file with every number goes to ``--out``.

Client, server and engine share this machine's cores: on a 2-core box the client's and
Triton's per-response work is taken from the engine, which a GPU deployment would not feel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

TARGETS = {"served_over_bare": 0.9, "concurrent_over_single": 3.0, "late_over_idle_ttft": 3.0}


@dataclass
class Numbers:
    """Everything one run measured (tokens/s, TTFT in ms)."""

    size: str
    model: str
    concurrency: int
    input_tokens: int
    output_tokens: int
    requests: int
    cores: int
    bare_tps: float = 0.0
    bare_single_tps: float = 0.0
    served_tps: float = 0.0
    served_single_tps: float = 0.0
    idle_ttft_ms: float = 0.0
    late_ttft_ms: float = 0.0
    max_step_ms: float = 0.0  # bare pipeline
    served_max_step_ms: float = 0.0  # the served model's worst step, response send, execute()
    served_max_send_ms: float = 0.0
    served_max_execute_ms: float = 0.0
    # CPU seconds per process during the last served round at C (where the cores went)
    served_cpu_s: dict[str, float] = field(default_factory=dict)
    served_wall_s: float = 0.0
    bare_rounds: list[float] = field(default_factory=list)  # tokens/s at C, round by round
    served_rounds: list[float] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)

    def finish(self) -> None:
        self.bare_tps = statistics.median(self.bare_rounds)
        self.served_tps = statistics.median(self.served_rounds)
        self.ratios = {
            "served_over_bare": statistics.median(
                s / b for s, b in zip(self.served_rounds, self.bare_rounds, strict=True)),
            "concurrent_over_single": self.served_tps / self.served_single_tps,
            "late_over_idle_ttft": self.late_ttft_ms / self.idle_ttft_ms,
        }

    def missed(self) -> list[str]:
        out = []
        for key, target in TARGETS.items():
            value = self.ratios[key]
            ok = value <= target if key == "late_over_idle_ttft" else value >= target
            if not ok:
                out.append(key)
        return out


def process_cpu_s(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of ``root_pid`` and its children, by process: the server
    as ``tritonserver``, each Python-backend stub by its model's folder name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        pid, ppid = int(proc.name), int(stat[1])
        if pid != root_pid and ppid != root_pid:
            continue
        if pid == root_pid:
            label = "tritonserver"
        elif len(argv) > 1 and argv[1].endswith(b"model.py"):  # stub: argv[1] = <model>/1/model.py
            label = Path(argv[1].decode()).parent.parent.name
        else:
            label = Path(argv[0].decode()).name
        cpu = (int(stat[11]) + int(stat[12])) / tick
        key, n = label, 2
        while key in out:  # several instances of one model
            key, n = f"{label} #{n}", n + 1
        out[key] = cpu
    return out


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def prepare(work: Path, size: str, max_batch_size: int,
            max_stream_interval_ms: int | None = None) -> tuple[Path, Path, Path]:
    """Model, engine (cached builds) and a freshly rendered repository under ``work``
    (repository defaults, but for ``max_stream_interval_ms`` when given)."""
    import shutil

    from tritonllm.builders import BuildSettings, build
    from tritonllm.builders.repository import render_repository
    from tritonllm.settings import RepoSettings
    from tritonllm.tiny import make_tiny_model

    model, engine, repo = work / f"model-{size}", work / f"engine-{size}", work / f"repo-{size}"
    if not (model / "config.json").exists():
        _say(f"making the {size} model")
        make_tiny_model(model, size=size, seed=0)
    _say("building the CPU engine (cached)")
    build(BuildSettings(checkpoint=model, engine="cpu", out=engine,
                        max_batch_size=max_batch_size))
    shutil.rmtree(repo, ignore_errors=True)
    settings = RepoSettings(preprocessing_instance_count=1, bls_instance_count=1)
    if max_stream_interval_ms is not None:
        settings = replace(settings, max_stream_interval_ms=max_stream_interval_ms)
    render_repository(engine, repo, settings)
    return model, engine, repo


def bare_pipeline(engine: Path, concurrency: int) -> Any:
    """The pipeline exactly as the served model creates it."""
    from tritonllm.ensembles.cpu_engine import CpuEngine, EngineConfig

    return CpuEngine.make_pipeline(EngineConfig(engine, max_num_seqs=max(64, concurrency)))


_ids = iter(range(1 << 62))


def bare_throughput(pipe: Any, prompts: list[list[int]], output_tokens: int,
                    concurrency: int, requests: int) -> tuple[float, float]:
    """(tokens/s, worst step ms) of a closed loop at ``concurrency`` on the bare pipeline."""
    import numpy as np
    import openvino as ov
    import openvino_genai as ovg

    def config() -> Any:
        g = ovg.GenerationConfig()
        g.max_new_tokens = g.min_new_tokens = output_tokens
        g.do_sample = False
        return g

    sent = tokens = 0
    live: dict[int, Any] = {}

    def add() -> None:
        nonlocal sent
        ids = prompts[sent % len(prompts)]
        live[sent] = pipe.add_request(next(_ids), ov.Tensor(np.asarray([ids], np.int64)),
                                      config())
        sent += 1

    t0 = time.perf_counter()
    worst = 0.0
    while sent < min(concurrency, requests):
        add()
    while live:
        s0 = time.perf_counter()
        pipe.step()
        worst = max(worst, time.perf_counter() - s0)
        for rid, handle in list(live.items()):
            if handle.can_read():
                tokens += sum(len(o.generated_ids) for o in handle.read().values())
            if handle.get_status() != ovg.GenerationStatus.RUNNING:
                del live[rid]
                if sent < requests:
                    add()
    return tokens / (time.perf_counter() - t0), worst * 1000


async def ttfts(address: str, model: str, prompt: str, load: int, probes: int,
                long_tokens: int) -> tuple[float, float]:
    """(idle, late) median TTFT in ms; late = while ``load`` long streams decode."""
    from tritonllm.client import AsyncLLMClient

    async with AsyncLLMClient(address, model=model, timeout=600) as client:
        async def one() -> float:
            t0 = time.perf_counter()
            first: float | None = None
            async for delta in client.stream(prompt, max_tokens=8, min_tokens=8):
                if first is None and delta.text:
                    first = delta.time
            if first is None:
                raise RuntimeError("no token streamed")
            return (first - t0) * 1000

        idle = [await one() for _ in range(probes)]
        started = [asyncio.Event() for _ in range(load)]
        stop = asyncio.Event()

        async def background(i: int) -> None:
            async for delta in client.stream(prompt, max_tokens=long_tokens,
                                             min_tokens=long_tokens):
                if delta.text:
                    started[i].set()
                if stop.is_set():
                    break  # leaving the stream cancels it on the server

        tasks = [asyncio.create_task(background(i)) for i in range(load)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 300)
        late = [await one() for _ in range(probes)]
        ended = sum(t.done() for t in tasks)
        stop.set()
        await asyncio.gather(*tasks)
        if ended:
            raise RuntimeError(f"{ended} of the {load} load streams ended before the probes "
                               "did: raise --long-tokens")
    return statistics.median(idle), statistics.median(late)


class StallSampler:
    """Polls the served model's per-period worst step/send/execute() gauges; keeps the max."""

    from tritonllm.metrics_catalog import EXECUTE_MAX_MS, SEND_MAX_MS, STEP_MAX_MS

    GAUGES = (STEP_MAX_MS, SEND_MAX_MS, EXECUTE_MAX_MS)

    def __init__(self, metrics_url: str, period: float = 0.2) -> None:
        import threading

        self.url = metrics_url
        self.worst = dict.fromkeys(self.GAUGES, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        import urllib.request

        while not self._stop.wait(period):
            with urllib.request.urlopen(self.url, timeout=5) as r:
                for line in r.read().decode().splitlines():
                    name = line.split("{", 1)[0]
                    if name in self.worst:
                        self.worst[name] = max(self.worst[name], float(line.rsplit(" ", 1)[1]))

    def __enter__(self) -> StallSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(args: argparse.Namespace) -> Numbers:
    import os

    from tritonllm.perf.prompts import Tokenizer, make_prompts
    from tritonllm.perf.run import run_ours
    from tritonllm.perf.scenario import LengthSpec, Scenario
    from tritonllm.server import ServerOptions, TritonServer

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model, engine, repo = prepare(work, args.size, max(64, args.concurrency),
                                  args.max_stream_interval_ms)
    tok = Tokenizer(model)
    prompts = [p.text for p in make_prompts(tok, 32, args.input_tokens, seed=0)]
    numbers = Numbers(args.size, args.model, args.concurrency, args.input_tokens,
                      args.output_tokens, args.requests, os.cpu_count() or 0)

    ids = [tok.encode(p) for p in prompts]
    pipe = bare_pipeline(engine, args.concurrency)  # idle while the server runs
    bare_throughput(pipe, ids, 16, args.concurrency, args.concurrency)  # warm-up
    single = max(2, args.requests // args.concurrency)

    log = work / "tritonserver.log"
    _say(f"starting tritonserver (log: {log})")
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=600, log_file=log)) as server:

        def served(conc: int, n: int) -> float:
            scenario = Scenario(
                url=server.grpc_address, model=args.model, concurrency=(conc,),
                input_tokens=LengthSpec(args.input_tokens),
                output_tokens=LengthSpec(args.output_tokens), requests=n, warmup=conc,
                num_prompts=32, streaming=True, exact_output=True, timeout=600)
            summary = run_ours(scenario, tok).points[0].summary
            if summary.errors:
                raise RuntimeError(f"served requests failed: {summary.errors}")
            # The server's own count: re-tokenizing a random model's text is not exact.
            tps = summary.server_output_tokens_per_s
            if tps is None:
                raise RuntimeError(f"{args.model} did not report num_output_tokens")
            return float(tps)

        sampler = StallSampler(server.url_metrics).__enter__()
        for r in range(args.rounds):
            bare, worst = bare_throughput(pipe, ids, args.output_tokens, args.concurrency,
                                          args.requests)
            numbers.max_step_ms = max(numbers.max_step_ms, worst)
            numbers.bare_rounds.append(bare)
            pid = server.pid
            before, self_before, t0 = process_cpu_s(pid or 0), _self_cpu_s(), time.monotonic()
            numbers.served_rounds.append(served(args.concurrency, args.requests))
            after = process_cpu_s(pid or 0)
            numbers.served_wall_s = time.monotonic() - t0
            numbers.served_cpu_s = {k: after[k] - v for k, v in before.items() if k in after}
            numbers.served_cpu_s["benchmark client (this process)"] = _self_cpu_s() - self_before
            _say(f"round {r + 1}/{args.rounds} at concurrency {args.concurrency}: bare "
                 f"{bare:.0f}, served {numbers.served_rounds[-1]:.0f} tok/s through "
                 f"{args.model}")
        numbers.bare_single_tps, _ = bare_throughput(pipe, ids, args.output_tokens, 1, single)
        numbers.served_single_tps = served(1, single)
        sampler.__exit__()
        numbers.served_max_step_ms, numbers.served_max_send_ms, numbers.served_max_execute_ms = (
            sampler.worst[g] for g in StallSampler.GAUGES)
        _say(f"at 1: bare {numbers.bare_single_tps:.0f}, served "
             f"{numbers.served_single_tps:.0f} tok/s")
        _say(f"TTFT: idle, then with {args.concurrency - 1} streams decoding")
        numbers.idle_ttft_ms, numbers.late_ttft_ms = asyncio.run(ttfts(
            server.grpc_address, args.model, prompts[0], args.concurrency - 1, args.probes,
            args.long_tokens))
    numbers.finish()
    return numbers


def table(n: Numbers) -> str:
    r = n.ratios
    rows = [
        ("bare pipeline, tokens/s", f"{n.bare_tps:.0f} (C={n.concurrency})",
         f"{n.bare_single_tps:.0f} (C=1)"),
        (f"served via {n.model}, tokens/s", f"{n.served_tps:.0f} (C={n.concurrency})",
         f"{n.served_single_tps:.0f} (C=1)"),
        ("TTFT ms, idle / late arrival", f"{n.idle_ttft_ms:.1f}", f"{n.late_ttft_ms:.1f}"),
        ("worst step ms, bare / served", f"{n.max_step_ms:.1f}", f"{n.served_max_step_ms:.1f}"),
        ("worst response send / execute() ms (served)", f"{n.served_max_send_ms:.1f}",
         f"{n.served_max_execute_ms:.1f}"),
    ]
    checks = [
        ("served / bare at C", r["served_over_bare"], ">=", TARGETS["served_over_bare"]),
        ("served C / served 1", r["concurrent_over_single"], ">=",
         TARGETS["concurrent_over_single"]),
        ("late / idle TTFT", r["late_over_idle_ttft"], "<=", TARGETS["late_over_idle_ttft"]),
    ]
    out = ["| measurement | | |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if n.served_cpu_s:
        out += ["", f"CPU seconds during the last served round at C (wall {n.served_wall_s:.1f} "
                f"s x {n.cores} cores = {n.served_wall_s * n.cores:.1f} CPU s available):", "",
                "| process | CPU s |", "|---|---:|"]
        out += [f"| {k} | {v:.1f} |" for k, v in sorted(n.served_cpu_s.items(),
                                                        key=lambda kv: -kv[1])]
    out += ["", "| ratio | measured | target | |", "|---|---|---|---|"]
    for name, value, op, target in checks:
        ok = value >= target if op == ">=" else value <= target
        out.append(f"| {name} | {value:.2f} | {op} {target} | {'met' if ok else 'MISSED'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonllm.perf.bench_serving",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small", choices=("tiny", "small"),
                   help="model made by tritonllm make-tiny-model (default: small)")
    p.add_argument("--model", default="ensemble", choices=("ensemble", "tensorrt_llm_bls"))
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=64, help="requests at the concurrency")
    p.add_argument("--rounds", type=int, default=5,
                   help="bare/served pairs at the concurrency (the ratio is their median)")
    p.add_argument("--max-stream-interval-ms", type=int, default=None,
                   help="render the repository with this max_stream_interval_ms (default: the "
                        "repository default)")
    p.add_argument("--input-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--long-tokens", type=int, default=512,
                   help="output tokens of each background stream in the late-TTFT test")
    p.add_argument("--probes", type=int, default=5, help="TTFT samples, idle and late")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="model/engine cache")
    p.add_argument("--out", type=Path, default=None, help="write numbers.json and table.md")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = p.parse_args(argv)
    if args.concurrency < 2:
        p.error("--concurrency: must be at least 2")
    numbers = run(args)
    text = table(numbers)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "numbers.json").write_text(json.dumps(asdict(numbers), indent=2) + "\n")
        (args.out / "table.md").write_text(text + "\n")
    return 1 if args.check and numbers.missed() else 0


if __name__ == "__main__":
    sys.exit(main())
