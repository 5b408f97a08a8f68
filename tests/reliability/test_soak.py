"""A soak (``-m slow``): minutes of mixed load on the bounded server, memory watched (#14).

For :data:`SOAK_S` seconds (``TRITONLLM_SOAK_S`` overrides), five workers share the session's
server: two stream to completion (gRPC, ensemble and BLS, 32-256 tokens), one cancels streams
after their first delta, one sends HTTP generate and generate_stream requests, one cycles
through the bad-input matrix (gRPC and HTTP, every category). A sampler reads the resident
memory (VmRSS) of tritonserver and of every stub every :data:`SAMPLE_S` seconds.

Checked: every good request completed (or was refused as Overloaded by the bounded queue),
every cancel was taken, every bad request was refused; no process of the server died or was
replaced; the engine is idle at the end; and after the warm-up (:data:`WARMUP_S`) every process
stays within its bound (the measurements behind them are in docs/reliability.md):

* tritonserver and the CPU LLM stub under a ceiling (:data:`CEILING_KIB`): both grow for
  minutes before they level off (the LLM stub by ~1.1 GB over ~7 minutes, then flat, with a
  0.25 GB KV cache as with the default 1 GB), so a growth bound would only measure how far
  into that rise the warm-up ended;
* every other stub within the larger of :data:`GROWTH_REL` of its RSS at the end of the warm-up
  and :data:`GROWTH_ABS_KIB` (they are flat within a few MB).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import http_body, matrix
from harness import (
    ALL_MODELS,
    ENGINE_HELD,
    MODELS,
    Served,
    Snapshot,
    grpc_exchange,
    http_post,
    liveness_problems,
    metric,
    rss_kib,
    wait_engine_idle,
)

from tritonllm.client import LLMClient, Overloaded, RetryPolicy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK_S = float(os.environ.get("TRITONLLM_SOAK_S", "240"))
WARMUP_S = min(60.0, SOAK_S / 4)
SAMPLE_S = 2.0
GROWTH_REL = 0.10  # a stub may grow by 10% of its RSS after the warm-up ...
GROWTH_ABS_KIB = 64 << 10  # ... or by 64 MiB, whichever is larger
#: RSS ceilings (KiB) by model / program: the measured plateau plus ~20%.
CEILING_KIB = {"tritonserver": 512 << 10, "tensorrt_llm": 2 << 20}
DEADLINE = 60.0


@dataclass
class Tally:
    done: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str) -> None:
        with self.lock:
            self.done[what] = self.done.get(what, 0) + 1

    def problem(self, what: str) -> None:
        with self.lock:
            self.problems.append(what)


def _worker(stop: threading.Event, tally: Tally, name: str,
            step: Callable[[random.Random], str]) -> None:
    rng = random.Random(name)
    while not stop.is_set():
        try:
            tally.count(step(rng))
        except Overloaded:  # the bounded queue at work: a clear, retryable refusal
            tally.count("overloaded")
        except Exception as e:  # every other failure is a problem to report
            tally.problem(f"{name}: {type(e).__name__}: {e}")


def test_soak_memory_stays_bounded(bounded: Served, tmp_path: Path) -> None:
    server = bounded.server
    before = Snapshot.take(server)
    procs = {p.pid: p.label for p in before.procs}
    samples: list[tuple[float, dict[int, int | None]]] = []
    stop, sampling = threading.Event(), threading.Event()
    tally = Tally()
    once = RetryPolicy(attempts=1)
    grpc_c = LLMClient(server.grpc_address, timeout=DEADLINE, retry=once)
    http_c = LLMClient(server.url_http, timeout=DEADLINE, retry=once)
    cases = itertools.cycle(matrix())

    def stream(rng: random.Random) -> str:
        n = rng.randint(32, 256)
        done = grpc_c.generate("soak " + str(rng.random()), n, model=rng.choice(MODELS),
                               stream=True, min_tokens=n)
        if done.output_tokens not in (None, n):
            raise AssertionError(f"{done.output_tokens} tokens, asked for {n}")
        return "stream"

    def cancel(rng: random.Random) -> str:
        s = grpc_c.stream("cancel me", 1000, model=rng.choice(MODELS), min_tokens=1000)
        next(s)
        s.close()  # cancels on the server
        stop.wait(rng.uniform(0, 0.2))  # pacing: a cancel reaches the engine ~0.1 s later
        return "cancel"

    def http(rng: random.Random) -> str:
        done = http_c.generate("http soak", 48, model=rng.choice(MODELS),
                               stream=rng.random() < 0.5, min_tokens=48)
        if not done.text:
            raise AssertionError("empty text")
        return "http"

    def bad(rng: random.Random) -> str:
        model, transport, case = next(cases)
        if transport == "grpc":
            assert case.wires is not None
            got = grpc_exchange(server.grpc_address, model, case.wires, case.request_id)
            refused = got.error is not None
        else:
            path = "generate" if transport == "http" else "generate_stream"
            status, _ = http_post(f"{server.url_http}/v2/models/{model}/{path}",
                                  http_body(model, case))
            refused = status >= 400
        if not refused and not case.id.startswith(("json-wrap", "hostile/request-id")):
            raise AssertionError(f"served: {model} {transport} {case.id}")
        return "bad"

    def sample() -> None:
        start = time.monotonic()
        while not sampling.is_set():
            samples.append((time.monotonic() - start, {pid: rss_kib(pid) for pid in procs}))
            sampling.wait(SAMPLE_S)  # the sampling period, not a synchronization

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    workers = [threading.Thread(target=_worker, args=(stop, tally, name, step), daemon=True)
               for name, step in (("stream-1", stream), ("stream-2", stream),
                                  ("cancel", cancel), ("http", http), ("bad", bad))]
    for w in workers:
        w.start()
    try:
        stop.wait(SOAK_S)  # the soak's duration
    finally:
        stop.set()
        for w in workers:
            w.join(DEADLINE + 10)
    try:
        idle_s: float | None = wait_engine_idle(server, timeout=60)
    except AssertionError:
        idle_s = None
        tally.problem(f"the engine still holds {metric(server, ENGINE_HELD)} "
                      "requests 60 s after the load stopped; a new request: "
                      + _try(lambda: grpc_c.generate("after", 4, timeout=20).text))
    sampling.set()
    sampler.join(10)
    grpc_c.close()
    http_c.close()

    report = _report(samples, procs)
    report["requests"] = dict(tally.done)
    report["idle_after_s"] = idle_s
    report["seconds"] = SOAK_S
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=1))
    print("\nsoak:", json.dumps(report, indent=1))
    assert not tally.problems, "\n".join(tally.problems[:20])
    assert all(tally.done.get(k, 0) > 0 for k in ("stream", "cancel", "http", "bad")), tally.done
    assert not liveness_problems(server, before, ALL_MODELS)
    grown = [f"{label}: {r['warm_kib']} KiB after the warm-up, {r['max_kib']} KiB at most "
             f"(bound {r['bound_kib']} KiB)" for label, r in report["processes"].items()
             if r["max_kib"] > r["bound_kib"]]
    assert not grown, "\n".join(grown)


def _try(call: Callable[[], str]) -> str:
    try:
        return f"served {call()!r}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _report(samples: list[tuple[float, dict[int, int | None]]],
            procs: dict[int, str]) -> dict[str, Any]:
    """Per process: RSS at the start, after the warm-up, at most after it, at the end; its
    bound; the slope after the warm-up (KiB per minute, least squares)."""
    out: dict[str, Any] = {"warmup_s": WARMUP_S, "processes": {}}
    for pid, label in procs.items():
        series = [(t, s[pid]) for t, s in samples if s.get(pid) is not None]
        after = [(t, v) for t, v in series if t >= WARMUP_S and v is not None]
        if not series or not after:
            out["processes"][label] = {"error": "no samples"}
            continue
        warm = after[0][1]
        assert warm is not None
        n = len(after)
        mt = sum(t for t, _ in after) / n
        mv = sum(v for _, v in after) / n
        var = sum((t - mt) ** 2 for t, _ in after) or 1.0
        slope = sum((t - mt) * (v - mv) for t, v in after) / var * 60
        model = re.sub(r"_\d+_\d+$", "", label)  # a stub's instance name -> its model
        bound = CEILING_KIB.get(model, warm + max(int(warm * GROWTH_REL), GROWTH_ABS_KIB))
        out["processes"][label] = {
            "start_kib": series[0][1], "warm_kib": warm,
            "max_kib": max(v for _, v in after), "end_kib": after[-1][1],
            "bound_kib": bound,
            "slope_kib_per_min": round(slope, 1), "samples": n,
        }
    return out
