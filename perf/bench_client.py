"""Streaming throughput of tritonllm.client against a hand-written tritonclient loop.

    python -m tritonllm.perf.bench_client                      # own server, tiny model
    python -m tritonllm.perf.bench_client --url localhost:8001 # a running server

The same closed-loop load runs through three drivers, in interleaved rounds:

- ``raw``: the baseline a user would write by hand: one ``tritonclient.grpc`` client, one
  bidirectional stream, ``concurrency`` requests in flight, a callback that queues responses
  and a loop that sends the next request when one finishes;
- ``async``: :class:`~tritonllm.client.AsyncLLMClient`, ``concurrency`` tasks each iterating
  ``client.stream(...)``;
- ``sync``: :class:`~tritonllm.client.LLMClient`, ``concurrency`` threads each iterating
  ``client.stream(...)``.

Every request is the same streamed generation (``stream``, ``max_tokens``, token counts
asked for) so the server does the same work for each driver. Reported per driver: streamed
responses per second and generated tokens per second (median over rounds), and the ratio to
``raw``. Without ``--url`` the benchmark makes a random Llama (``tritonllm.tiny``), builds it
with the CPU engine, renders a repository and starts ``tritonserver`` on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tritonllm.contract import ENSEMBLE_IN, ENSEMBLE_OUT

DRIVERS = ("raw", "async", "sync")


@dataclass(frozen=True)
class Load:
    url: str
    model: str
    concurrency: int
    requests: int
    max_tokens: int
    prompt: str
    headers: dict[str, str]


@dataclass(frozen=True)
class RoundResult:
    driver: str
    seconds: float
    responses: int
    tokens: int

    @property
    def responses_per_s(self) -> float:
        return self.responses / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


# --- drivers ----------------------------------------------------------------------------------

def run_raw(load: Load) -> RoundResult:
    """The hand-written baseline: one tritonclient stream, ``concurrency`` requests in flight."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    def tensor(name: str, value: Any, dtype: str) -> Any:
        x = grpcclient.InferInput(name, list(value.shape), dtype)
        x.set_data_from_numpy(value)
        return x

    def inputs() -> list[Any]:
        return [
            tensor(ENSEMBLE_IN.text_input, np.array([[load.prompt.encode()]], dtype=object),
                   "BYTES"),
            tensor(ENSEMBLE_IN.max_tokens, np.array([[load.max_tokens]], dtype=np.int32),
                   "INT32"),
            tensor(ENSEMBLE_IN.stream, np.array([[True]]), "BOOL"),
            tensor(ENSEMBLE_IN.return_num_input_tokens, np.array([[True]]), "BOOL"),
            tensor(ENSEMBLE_IN.return_num_output_tokens, np.array([[True]]), "BOOL"),
        ]

    responses: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
    client = grpcclient.InferenceServerClient(load.url.removeprefix("grpc://"))
    client.start_stream(callback=lambda result, error: responses.put((result, error)),
                        headers=load.headers or None)
    sent = done = n_responses = n_tokens = 0
    start = time.perf_counter()
    try:
        while sent < min(load.concurrency, load.requests):
            client.async_stream_infer(load.model, inputs(), request_id=str(sent),
                                      enable_empty_final_response=True)
            sent += 1
        while done < load.requests:
            result, error = responses.get(timeout=120)
            if error is not None:
                raise RuntimeError(f"raw driver: {error}")
            resp = result.get_response()
            text = result.as_numpy(ENSEMBLE_OUT.text_output)
            if text is not None and text.size and text.reshape(-1)[0]:
                n_responses += 1
            if resp.parameters["triton_final_response"].bool_param:
                done += 1
                count = result.as_numpy(ENSEMBLE_OUT.num_output_tokens)
                n_tokens += int(count.reshape(-1)[0]) if count is not None else 0
                if sent < load.requests:
                    client.async_stream_infer(load.model, inputs(), request_id=str(sent),
                                              enable_empty_final_response=True)
                    sent += 1
        seconds = time.perf_counter() - start
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
    return RoundResult("raw", seconds, n_responses, n_tokens)


def _shares(load: Load) -> list[int]:
    base, extra = divmod(load.requests, load.concurrency)
    return [base + (1 if i < extra else 0) for i in range(load.concurrency)]


def run_async(load: Load) -> RoundResult:
    from tritonllm.client import AsyncLLMClient

    async def main() -> RoundResult:
        counts = {"responses": 0, "tokens": 0}
        async with AsyncLLMClient(load.url, load.model, headers=load.headers or None,
                                  timeout=None) as client:
            await client.generate(load.prompt, 1)  # metadata fetched before the clock starts

            async def worker(n: int) -> None:
                for _ in range(n):
                    last = None
                    async for delta in client.stream(load.prompt, load.max_tokens):
                        if delta.text:
                            counts["responses"] += 1
                        last = delta
                    counts["tokens"] += (last.output_tokens or 0) if last else 0

            start = time.perf_counter()
            await asyncio.gather(*(worker(n) for n in _shares(load)))
            seconds = time.perf_counter() - start
        return RoundResult("async", seconds, counts["responses"], counts["tokens"])

    return asyncio.run(main())


def run_sync(load: Load) -> RoundResult:
    from tritonllm.client import LLMClient

    lock = threading.Lock()
    counts = {"responses": 0, "tokens": 0}
    errors: list[BaseException] = []
    with LLMClient(load.url, load.model, headers=load.headers or None, timeout=None) as client:
        client.generate(load.prompt, 1)

        def worker(n: int) -> None:
            try:
                for _ in range(n):
                    responses, last = 0, None
                    for delta in client.stream(load.prompt, load.max_tokens):
                        responses += bool(delta.text)
                        last = delta
                    with lock:
                        counts["responses"] += responses
                        counts["tokens"] += (last.output_tokens or 0) if last else 0
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in _shares(load)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return RoundResult("sync", seconds, counts["responses"], counts["tokens"])


RUNNERS: dict[str, Callable[[Load], RoundResult]] = {
    "raw": run_raw, "async": run_async, "sync": run_sync}


# --- server -----------------------------------------------------------------------------------

@contextmanager
def own_server(size: str, workdir: Path, say: Callable[[str], None],
               max_stream_interval_ms: int | None = None) -> Iterator[str]:
    """Tiny/small model → CPU engine → repository → tritonserver on free ports; yields url."""
    from tritonllm.builders import BuildSettings, build
    from tritonllm.builders.repository import render_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings
    from tritonllm.tiny import make_tiny_model

    say(f"making the {size} model and its CPU engine in {workdir}")
    model = make_tiny_model(workdir / "model", size=size, seed=0)
    engine = workdir / "engine"
    build(BuildSettings(checkpoint=model, engine="cpu", out=engine))
    repo = workdir / "repo"
    settings = RepoSettings() if max_stream_interval_ms is None else RepoSettings(
        max_stream_interval_ms=max_stream_interval_ms)
    render_repository(engine, repo, settings)
    say("starting tritonserver")
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    log_file=workdir / "tritonserver.log")) as srv:
        yield srv.grpc_address


# --- main -------------------------------------------------------------------------------------

def _headers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--header: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tritonllm.perf.bench_client",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", help="gRPC host:port of a running server [default: start one]")
    p.add_argument("--model", default="ensemble")
    p.add_argument("--size", choices=["tiny", "small"], default="tiny",
                   help="model made for the own server (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, help="streams in flight")
    p.add_argument("--requests", type=int, default=64, help="requests per round")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt", default="The quick brown fox jumps over the lazy dog")
    p.add_argument("--rounds", type=int, default=3, help="rounds per driver (interleaved)")
    p.add_argument("--drivers", default=",".join(DRIVERS),
                   help="comma-separated subset of raw,async,sync")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-stream-interval-ms", type=int, default=None,
                   help="the own server's setting (0: one response per token, the client's "
                   "hardest case) [default: the repository default]")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    if not drivers or any(d not in DRIVERS for d in drivers):
        p.error(f"--drivers: choose from {', '.join(DRIVERS)}")
    if min(args.concurrency, args.requests, args.max_tokens, args.rounds) < 1:
        p.error("--concurrency, --requests, --max-tokens and --rounds must be >= 1")
    args.drivers = drivers
    return args


def summarize(results: list[RoundResult], drivers: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for d in drivers:
        rows = [r for r in results if r.driver == d]
        summary[d] = {
            "responses_per_s": statistics.median(r.responses_per_s for r in rows),
            "tokens_per_s": statistics.median(r.tokens_per_s for r in rows),
            "rounds": [asdict(r) for r in rows],
        }
    if "raw" in summary:
        base = summary["raw"]
        for d in drivers:
            summary[d]["ratio_responses"] = summary[d]["responses_per_s"] / base["responses_per_s"]
            summary[d]["ratio_tokens"] = summary[d]["tokens_per_s"] / base["tokens_per_s"]
    return summary


def bench(load: Load, drivers: list[str], rounds: int,
          say: Callable[[str], None]) -> dict[str, Any]:
    warm = Load(**{**asdict(load), "requests": load.concurrency})
    for d in drivers:
        RUNNERS[d](warm)
    results = []
    for i in range(rounds):
        for d in drivers:
            r = RUNNERS[d](load)
            say(f"round {i + 1}/{rounds} {d:>5}: {r.responses_per_s:8.1f} responses/s "
                f"{r.tokens_per_s:8.1f} tokens/s ({r.seconds:.2f}s)")
            results.append(r)
    return summarize(results, drivers)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def run(url: str) -> dict[str, Any]:
        load = Load(url, args.model, args.concurrency, args.requests, args.max_tokens,
                    args.prompt, _headers(args.header))
        return {"load": asdict(load), "results": bench(load, args.drivers, args.rounds, say)}

    if args.url:
        report = run(args.url)
    else:
        with tempfile.TemporaryDirectory(prefix="tritonllm-bench-") as tmp, \
                own_server(args.size, Path(tmp), say, args.max_stream_interval_ms) as url:
            report = run(url)
    report["load"]["headers"] = sorted(report["load"]["headers"])  # names only
    print(f"{'driver':>6}  {'responses/s':>12}  {'tokens/s':>10}  {'vs raw':>7}")
    for d, row in report["results"].items():
        ratio = row.get("ratio_tokens")
        print(f"{d:>6}  {row['responses_per_s']:12.1f}  {row['tokens_per_s']:10.1f}  "
              f"{'' if ratio is None else f'{ratio:7.3f}'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
