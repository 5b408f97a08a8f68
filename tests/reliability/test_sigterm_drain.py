"""SIGTERM drain of ``tritonllm serve --drain-timeout`` under load (issue #14, item (a)).

The documented behaviour: on SIGTERM, ``tritonllm serve`` stops taking
new requests (they are refused, our client raises Unavailable), lets the requests in flight
finish within ``--drain-timeout`` seconds, then stops tritonserver and exits 0, leaving no
process behind.

The scenario (fixture ``drained``) runs ``python -m tritonllm serve REPO --drain-timeout
DRAIN_S`` on fixed ports; while a background load of long streams keeps the engine busy, six
tracked requests are in flight (per model: a gRPC stream, a gRPC generate, an HTTP stream, all
LONG tokens); then SIGTERM to the ``tritonllm serve`` process. Once the server stops answering
ready, new requests probe it until it has exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import MODELS, group, http_get, render

from tritonllm.client import Completion, LLMClient, RetryPolicy, Unavailable

pytestmark = pytest.mark.integration

DRAIN_S = 20  # --drain-timeout
LONG = 1000  # tokens (min_tokens too) of the requests in flight
BACKGROUND = 12
DEADLINE = 60.0
EXIT_SLACK_S = 10.0  # after the drain timeout, stopping tritonserver may take this long
PROMPT = "The quick brown fox"


@dataclass
class Outcome:
    kind: str
    model: str
    result: Completion | BaseException | None = None
    seconds: float | None = None  # from SIGTERM to the end (negative: ended before)

    def __str__(self) -> str:
        r = self.result
        what = (f"completed ({r.finish_reason}, {r.output_tokens} tokens)"
                if isinstance(r, Completion) else f"{type(r).__name__}: {r}")
        return f"{self.kind} {self.model} (ended {self.seconds}s after SIGTERM): {what}"


@dataclass
class Drained:
    started: str = ""  # why the server did not start, if it did not
    in_flight: list[Outcome] = field(default_factory=list)
    probes: list[Outcome] = field(default_factory=list)
    not_ready_s: float | None = None
    exit_code: int | None = None
    exit_s: float | None = None
    left: list[str] = field(default_factory=list)
    output: str = ""


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float) -> str:
    """'' once every model answers ready, else why not (the process exited, or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"tritonllm serve exited with {proc.returncode} before it was ready"
        if all(http_get(f"{url}/v2/models/{m}/ready", timeout=2)[0] == 200 for m in MODELS):
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)  # polling the server's ready endpoint
    return f"not ready after {timeout:g}s"


@pytest.fixture(scope="module")
def drained(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drained]:
    from tritonllm.server import free_port

    base = tmp_path_factory.mktemp("drain")
    repo = render(cpu_engine, base / "repo")
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = base / "serve.out"
    d = Drained()
    clients: list[LLMClient] = []
    threads: list[threading.Thread] = []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tritonllm", "serve", str(repo), "--http-port", str(http),
             "--grpc-port", str(grpc), "--metrics-port", str(metrics),
             "--drain-timeout", str(DRAIN_S), "--log-file", str(base / "tritonserver.log")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        d.started = _wait_ready(proc, f"http://127.0.0.1:{http}", 300)
        if d.started:
            d.output = log.read_text(errors="replace")
            yield d
            return
        once = RetryPolicy(attempts=1)
        grpc_c = LLMClient(f"127.0.0.1:{grpc}", timeout=DEADLINE, retry=once)
        http_c = LLMClient(f"http://127.0.0.1:{http}", timeout=DEADLINE, retry=once)
        load = LLMClient(f"127.0.0.1:{grpc}", timeout=DEADLINE, retry=once)
        clients += [grpc_c, http_c, load]
        for model in MODELS:
            grpc_c.generate(PROMPT, 2, model=model)
            http_c.generate(PROMPT, 2, model=model)
        signalled: list[float] = []

        def run(o: Outcome, call: Callable[[], Completion]) -> None:
            try:
                o.result = call()
            except Exception as e:  # every outcome is checked by the tests
                o.result = e
            o.seconds = round(time.monotonic() - signalled[0], 2) if signalled else -1.0

        def streamed(client: LLMClient, model: str, first: threading.Event) -> Completion:
            s = client.stream(PROMPT, LONG, model=model, min_tokens=LONG)
            for _ in s:
                first.set()
            assert s.completion is not None
            return s.completion

        firsts: list[threading.Event] = []

        def start(o: Outcome, call: Callable[[threading.Event], Completion],
                  streaming: bool) -> None:
            first = threading.Event()
            if streaming:
                firsts.append(first)
            t = threading.Thread(target=run, args=(o, lambda: call(first)), daemon=True)
            threads.append(t)
            t.start()

        for i in range(BACKGROUND):
            m = MODELS[i % 2]
            start(Outcome("background", m), lambda f, m=m: streamed(load, m, f), True)
        for model in MODELS:
            for kind, call, streaming in (
                    ("grpc stream", lambda f, m=model: streamed(grpc_c, m, f), True),
                    ("grpc generate", lambda f, m=model: grpc_c.generate(
                        PROMPT, LONG, model=m, min_tokens=LONG), False),
                    ("http stream", lambda f, m=model: streamed(http_c, m, f), True)):
                o = Outcome(kind, model)
                d.in_flight.append(o)
                start(o, call, streaming)
        for first in firsts:
            assert first.wait(DEADLINE), "a stream never started"

        signalled.append(time.monotonic())
        os.kill(proc.pid, signal.SIGTERM)
        url = f"http://127.0.0.1:{http}/v2/health/ready"
        while proc.poll() is None and http_get(url, timeout=2)[0] == 200:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)  # polling the ready endpoint
        d.not_ready_s = time.monotonic() - signalled[0]
        while proc.poll() is None:  # new requests until it has exited
            for model in MODELS:
                for kind, new in (("grpc generate", grpc_c), ("http generate", http_c)):
                    o = Outcome(kind, model)
                    run(o, lambda c=new, m=model: c.generate(PROMPT, 4, model=m))
                    d.probes.append(o)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)  # pacing the probes
            if time.monotonic() - signalled[0] > DRAIN_S + EXIT_SLACK_S + 30:
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        d.exit_code = proc.poll()
        d.exit_s = time.monotonic() - signalled[0] if d.exit_code is not None else None
        end = time.monotonic() + 10
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        d.left = [str(p) for p in group(proc.pid).values()]
        d.output = log.read_text(errors="replace")
        yield d
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None or group(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _started(d: Drained) -> None:
    assert not d.started, f"{d.started}:\n{d.output[-2000:]}"


def test_requests_in_flight_finish_within_the_drain_timeout(drained: Drained) -> None:
    _started(drained)
    wrong = [str(o) for o in drained.in_flight
             if not (isinstance(o.result, Completion) and o.result.finish_reason == "length"
                     and o.seconds is not None and 0 <= o.seconds <= DRAIN_S)]
    assert not wrong, "\n".join(wrong)


def test_new_requests_are_refused_as_unavailable(drained: Drained) -> None:
    _started(drained)
    assert drained.probes, "no request was sent while the server drained"
    wrong = [str(o) for o in drained.probes if type(o.result) is not Unavailable]
    assert not wrong, "\n".join(wrong)


@pytest.mark.xfail(strict=False, reason="#14 open: the launcher's exit code after a drain while "
                   "clients still hold idle gRPC streams (Triton 2.51 exits 1 on its exit timeout) "
                   "is still being settled (see the serve commits of 2026-11-29)")
def test_serve_exits_0_after_the_drain_and_leaves_nothing(drained: Drained) -> None:
    _started(drained)
    assert drained.exit_code == 0, drained.output[-2000:]
    assert drained.exit_s is not None and drained.exit_s <= DRAIN_S + EXIT_SLACK_S
    assert not drained.left
