"""kill -9 of tritonserver under load, a restart, and a SIGTERM drain under load (issue #14).

One story, run once by the module fixture ``story`` (each test checks one part of its record),
on fixed ports so that clients made before the kill reach the server after it:

1. **kill -9.** A managed server (``TritonServer(ServerOptions(managed=True))``, what ``tritonllm
   serve`` runs: the HTTP guard in front, the stub supervisor) decodes a background load of
   long streams while ten tracked requests are in flight: for the ensemble and the BLS model, a
   sync gRPC stream and generate, an asyncio gRPC stream, an HTTP stream and generate, all of our
   client (tritonllm.client) without retries. Then SIGKILL to tritonserver. Every tracked
   request, and every new one while the server is down, must end with Unavailable (typed, soon:
   not a hang until the deadline, not ServerError). The launcher must tell the truth (not
   running; ``wait()``/``stop()`` give -SIGKILL or ``wait()`` raises ServingError saying so; the
   stop report reads "killed by SIGKILL" and is not clean) and stopping it must leave no process
   of its group and none of its stubs' /dev/shm regions.
2. **Restart.** ``python -m tritonllm serve REPO --drain-timeout DRAIN_S`` on the same ports:
   a client made before the kill (with retries) and new gRPC and HTTP clients generate.
3. **SIGTERM drain.** While a background load keeps the engine busy, six tracked requests are in
   flight (per model: a gRPC stream, a gRPC generate, an HTTP stream); SIGTERM to ``tritonllm
   serve``. The documented behaviour (docs/serving.md, "Shutdown and health"): the requests in
   flight finish within the drain timeout, new requests (sent once the ready endpoint stops
   answering 200) are refused as Unavailable, and ``tritonllm serve`` exits 0 leaving no
   process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import (
    MODELS,
    SHM_DIR,
    group,
    http_get,
    ready_snapshot,
    render,
    server_options,
    shm_regions,
    signal_name,
)

from tritonllm.client import AsyncLLMClient, Completion, LLMClient, RetryPolicy, Unavailable
from tritonllm.client._transport import GONE_SILENCE_S

pytestmark = pytest.mark.integration

LONG = 1000  # tokens (min_tokens too) of every tracked request
BACKGROUND = 16  # long streams that keep the engine busy, so the tracked ones are in flight
DEADLINE = 60.0  # every client call's timeout
ENDS_WITHIN_S = GONE_SILENCE_S + 10.0  # a request in flight ends this soon after the kill
DRAIN_S = 20  # --drain-timeout of the restarted server
EXIT_SLACK_S = 15.0  # after the drain, unloading and stopping tritonserver take this long
PROMPT = "The quick brown fox"
ONCE = RetryPolicy(attempts=1)


class AioThread:
    """An event loop on a thread of its own, for the asyncio client beside the sync ones."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = DEADLINE + 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Outcome:
    kind: str
    model: str
    result: Completion | BaseException | None = None
    ended_s: float | None = None  # seconds after the signal (-1: ended before it)

    def __str__(self) -> str:
        r = self.result
        what = (f"completed ({r.finish_reason!r}, {r.output_tokens} tokens)"
                if isinstance(r, Completion) else f"{type(r).__name__}: {r}")
        return f"{self.kind} {self.model} (ended {self.ended_s}s after the signal): {what}"


class Load:
    """Requests run on threads, each recording its Outcome; ``mark()`` sets time zero."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.threads: list[threading.Thread] = []
        self.firsts: list[threading.Event] = []

    def mark(self) -> None:
        self.t0 = time.monotonic()

    def run(self, o: Outcome, call: Callable[[], Completion]) -> Outcome:
        try:
            o.result = call()
        except Exception as e:  # every outcome is checked by the tests
            o.result = e
        o.ended_s = round(time.monotonic() - self.t0, 2) if self.t0 is not None else -1.0
        return o

    def start(self, o: Outcome, call: Callable[[threading.Event], Completion],
              streamed: bool) -> Outcome:
        first = threading.Event()
        if streamed:
            self.firsts.append(first)
        t = threading.Thread(target=self.run, args=(o, lambda: call(first)), daemon=True,
                             name=f"{o.kind} {o.model}")
        self.threads.append(t)
        t.start()
        return o

    def wait_started(self) -> None:
        for first in self.firsts:
            assert first.wait(DEADLINE), "a stream never started"

    def join(self, seconds: float) -> list[str]:
        """Join every thread within ``seconds``; the names of those still running."""
        end = time.monotonic() + seconds
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]


def streamed(client: LLMClient, model: str, first: threading.Event) -> Completion:
    s = client.stream(PROMPT, LONG, model=model, min_tokens=LONG)
    for _ in s:
        first.set()
    assert s.completion is not None
    return s.completion


def generate(client: LLMClient, model: str, first: threading.Event) -> Completion:
    return client.generate(PROMPT, LONG, model=model, min_tokens=LONG)


def background(load: Load, client: LLMClient) -> None:
    for i in range(BACKGROUND):
        load.start(Outcome("background", MODELS[i % 2]),
                   lambda f, m=MODELS[i % 2]: streamed(client, m, f), True)


@dataclass
class Story:
    # 1. kill -9
    tracked: list[Outcome] = field(default_factory=list)
    down: list[Outcome] = field(default_factory=list)  # sent while the server was down
    hung: list[str] = field(default_factory=list)
    running_after: bool | None = None
    wait_result: int | str | None = None  # wait()'s code, or its ServingError's message
    stop_code: int | None = None
    stop_report: str = ""
    stop_clean: bool | None = None
    left_processes: list[str] = field(default_factory=list)
    left_shm: list[str] = field(default_factory=list)
    # 2. restart
    restart_error: str = ""
    served_after_restart: list[Outcome] = field(default_factory=list)
    old_client_s: float | None = None  # how long the old client took to get its answer
    # 3. drain
    in_flight: list[Outcome] = field(default_factory=list)
    probes: list[Outcome] = field(default_factory=list)
    drain_hung: list[str] = field(default_factory=list)
    exit_code: int | None = None
    exit_s: float | None = None
    serve_left: list[str] = field(default_factory=list)
    serve_output: str = ""


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
def story(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    from tritonllm.errors import ServingError
    from tritonllm.server import TritonServer, free_port

    base = tmp_path_factory.mktemp("kill")
    repo = render(cpu_engine, base / "repo")
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(server_options(repo, log_file=base / "killed.log", stop_timeout=10,
                                         managed=True, **ports))
    grpc_url = f"127.0.0.1:{ports['grpc_port']}"
    http_url = f"http://127.0.0.1:{ports['http_port']}"
    aio = AioThread()
    s = Story()
    clients: list[LLMClient] = []
    aclient: AsyncLLMClient | None = None
    serve: subprocess.Popen[bytes] | None = None

    def client(url: str, retry: RetryPolicy = ONCE) -> LLMClient:
        c = LLMClient(url, timeout=DEADLINE, retry=retry)
        clients.append(c)
        return c

    try:
        # --- 1. kill -9 under load ---------------------------------------------------------
        server.start()
        server.wait_ready()
        snap = ready_snapshot(server)
        grpc_c, http_c, load_c = client(grpc_url), client(http_url), client(grpc_url)
        old = client(grpc_url, RetryPolicy(attempts=200, initial_backoff=0.1, max_backoff=0.5))

        async def make_aio() -> AsyncLLMClient:
            return AsyncLLMClient(grpc_url, timeout=DEADLINE, retry=ONCE)

        aclient = aio.run(make_aio())
        ac = aclient
        for model in MODELS:  # warm: metadata cached, connections open
            for c in (grpc_c, http_c, old):
                c.generate(PROMPT, 2, model=model)
            aio.run(ac.generate(PROMPT, 2, model=model))

        async def aio_streamed(model: str, first: threading.Event) -> Completion:
            st = ac.stream(PROMPT, LONG, model=model, min_tokens=LONG)
            async for _ in st:
                first.set()
            assert st.completion is not None
            return st.completion

        kill = Load()
        background(kill, load_c)
        kill.wait_started()
        kinds: dict[str, tuple[Callable[[str, threading.Event], Completion], bool]] = {
            "grpc stream": (lambda m, f: streamed(grpc_c, m, f), True),
            "grpc generate": (lambda m, f: generate(grpc_c, m, f), False),
            "aio stream": (lambda m, f: aio.run(aio_streamed(m, f)), True),
            "http stream": (lambda m, f: streamed(http_c, m, f), True),
            "http generate": (lambda m, f: generate(http_c, m, f), False),
        }
        for model in MODELS:
            for kind, (call, is_stream) in kinds.items():
                s.tracked.append(kill.start(Outcome(kind, model),
                                            lambda f, c=call, m=model: c(m, f), is_stream))
        kill.wait_started()
        assert server.pid is not None
        regions = shm_regions(snap.stubs())
        kill.mark()
        os.kill(server.pid, signal.SIGKILL)
        for model in MODELS:  # new requests while the server is down
            for kind, call in {"grpc generate": lambda m: grpc_c.generate(PROMPT, 4, model=m),
                               "http generate": lambda m: http_c.generate(PROMPT, 4, model=m),
                               "aio generate": lambda m: aio.run(ac.generate(PROMPT, 4,
                                                                             model=m))}.items():
                s.down.append(kill.run(Outcome(kind, model), lambda c=call, m=model: c(m)))
        s.hung = kill.join(ENDS_WITHIN_S + 10)
        s.running_after = server.is_running()
        try:
            s.wait_result = server.wait(timeout=10)
        except ServingError as e:
            s.wait_result = str(e)
        s.stop_code = server.stop()
        if server.stop_report is not None:
            s.stop_report = server.stop_report.describe()
            s.stop_clean = server.stop_report.clean
        s.left_processes = [str(p) for p in group(snap.pgid).values()]
        s.left_shm = sorted(r for r in regions if (SHM_DIR / r).exists())

        # --- 2. restart with tritonllm serve on the same ports -----------------------------
        out = (base / "serve.out").open("wb")
        serve = subprocess.Popen(
            [sys.executable, "-m", "tritonllm", "serve", str(repo),
             *(a for k, v in ports.items() for a in (f"--{k.replace('_', '-')}", str(v))),
             "--drain-timeout", str(DRAIN_S), "--log-file", str(base / "restarted.log")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        s.restart_error = _wait_ready(serve, http_url, 300)
        if s.restart_error:
            s.serve_output = (base / "serve.out").read_text(errors="replace")
            yield s
            return
        after = Load()
        after.mark()
        for model in MODELS:
            o = after.run(Outcome("old grpc client", model),
                          lambda m=model: old.generate(PROMPT, 8, model=m))
            s.served_after_restart.append(o)
            if model == MODELS[0]:
                s.old_client_s = o.ended_s
        fresh_grpc, fresh_http, drain_load = client(grpc_url), client(http_url), client(grpc_url)
        for model in MODELS:
            for kind, c in (("new grpc client", fresh_grpc), ("new http client", fresh_http)):
                s.served_after_restart.append(after.run(
                    Outcome(kind, model), lambda c=c, m=model: c.generate(PROMPT, 8, model=m)))

        # --- 3. SIGTERM drain under load ---------------------------------------------------
        drain = Load()
        background(drain, drain_load)
        for model in MODELS:
            for kind, call, is_stream in (
                    ("grpc stream", lambda f, m=model: streamed(fresh_grpc, m, f), True),
                    ("grpc generate", lambda f, m=model: generate(fresh_grpc, m, f), False),
                    ("http stream", lambda f, m=model: streamed(fresh_http, m, f), True)):
                s.in_flight.append(drain.start(Outcome(kind, model), call, is_stream))
        drain.wait_started()
        drain.mark()
        os.kill(serve.pid, signal.SIGTERM)
        while serve.poll() is None and http_get(f"{http_url}/v2/health/ready",
                                                timeout=2)[0] == 200:
            with contextlib.suppress(subprocess.TimeoutExpired):
                serve.wait(timeout=0.05)  # polling the ready endpoint
        limit = DRAIN_S + EXIT_SLACK_S + 30
        while serve.poll() is None and time.monotonic() - (drain.t0 or 0) < limit:
            for model in MODELS:  # new requests until it has exited
                for kind, c in (("grpc generate", fresh_grpc), ("http generate", fresh_http)):
                    s.probes.append(drain.run(Outcome(kind, model),
                                              lambda c=c, m=model: c.generate(PROMPT, 4,
                                                                              model=m)))
            with contextlib.suppress(subprocess.TimeoutExpired):
                serve.wait(timeout=0.2)  # pacing the probes
        with contextlib.suppress(subprocess.TimeoutExpired):
            serve.wait(timeout=5)
        s.exit_code = serve.poll()
        s.exit_s = time.monotonic() - (drain.t0 or 0) if s.exit_code is not None else None
        s.drain_hung = drain.join(10)
        s.serve_left = [str(p) for p in group(serve.pid).values()]
        s.serve_output = (base / "serve.out").read_text(errors="replace")
        ends = [o.ended_s for o in s.tracked if o.ended_s is not None]
        print(f"\nkill -9: tracked requests ended {min(ends, default=None)}-"
              f"{max(ends, default=None)}s after it; stop report: {s.stop_report}; "
              f"the old client was answered {s.old_client_s}s after the restart; drain: "
              f"{len(s.in_flight)} in flight ended "
              f"{[o.ended_s for o in s.in_flight]}s after SIGTERM, {len(s.probes)} probes, "
              f"exit {s.exit_code} after {s.exit_s and round(s.exit_s, 1)}s: "
              f"{s.serve_output.strip().splitlines()[-1] if s.serve_output.strip() else ''}")
        yield s
    finally:
        if aclient is not None:
            with contextlib.suppress(Exception):
                aio.run(aclient.close(), timeout=10)
        aio.close()
        for c in clients:
            c.close()
        server.stop()
        if serve is not None:
            if serve.poll() is None or group(serve.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=30)


# --- 1. kill -9 ---------------------------------------------------------------------------------

KINDS = ["grpc stream", "grpc generate", "aio stream", "http stream", "http generate"]


@pytest.mark.parametrize("kind", KINDS)
def test_requests_in_flight_at_the_kill_end_with_unavailable(story: Story, kind: str) -> None:
    mine = [o for o in story.tracked if o.kind == kind]
    assert len(mine) == len(MODELS)
    wrong = [str(o) for o in mine if type(o.result) is not Unavailable]
    assert not wrong, "\n".join(wrong)
    late = [str(o) for o in mine if o.ended_s is None or not 0 <= o.ended_s <= ENDS_WITHIN_S]
    assert not late, "\n".join(late)


def test_requests_while_down_are_unavailable(story: Story) -> None:
    assert not story.hung, story.hung
    wrong = [str(o) for o in story.down if type(o.result) is not Unavailable
             or o.ended_s is None or o.ended_s > ENDS_WITHIN_S]
    assert not wrong, "\n".join(wrong)


def test_the_launcher_reports_the_death(story: Story) -> None:
    from tritonllm.server import describe_exit

    assert story.running_after is False
    code = story.wait_result
    assert code == -signal.SIGKILL or (isinstance(code, str) and "SIGKILL" in code), code
    assert story.stop_code == -signal.SIGKILL, signal_name(story.stop_code)
    assert describe_exit(story.stop_code) == "was killed by SIGKILL"
    assert "killed by SIGKILL" in story.stop_report and story.stop_clean is False, \
        story.stop_report


def test_stopping_the_killed_server_leaves_no_process_and_no_shm_region(story: Story) -> None:
    assert not story.left_processes
    assert not story.left_shm, story.left_shm


# --- 2. restart ---------------------------------------------------------------------------------

def test_a_restarted_server_serves_old_and_new_clients(story: Story) -> None:
    assert not story.restart_error, f"{story.restart_error}:\n{story.serve_output[-2000:]}"
    wrong = [str(o) for o in story.served_after_restart
             if not (isinstance(o.result, Completion) and o.result.text)]
    assert not wrong, "\n".join(wrong)
    assert len(story.served_after_restart) == 3 * len(MODELS)


# --- 3. SIGTERM drain ---------------------------------------------------------------------------

def _restarted(s: Story) -> None:
    assert not s.restart_error, f"{s.restart_error}:\n{s.serve_output[-2000:]}"


def test_drain_lets_requests_in_flight_finish_within_the_drain_timeout(story: Story) -> None:
    _restarted(story)
    assert not story.drain_hung, story.drain_hung
    wrong = [str(o) for o in story.in_flight
             if not (isinstance(o.result, Completion) and o.result.finish_reason == "length"
                     and o.ended_s is not None and 0 <= o.ended_s <= DRAIN_S)]
    assert not wrong, "\n".join(wrong)


def test_drain_refuses_new_requests_as_unavailable(story: Story) -> None:
    _restarted(story)
    assert story.probes, "no request was sent while the server drained"
    wrong = [str(o) for o in story.probes if type(o.result) is not Unavailable]
    assert not wrong, "\n".join(wrong)


def test_drain_then_serve_exits_0_and_leaves_nothing(story: Story) -> None:
    _restarted(story)
    assert story.exit_code == 0, story.serve_output[-2000:]
    assert story.exit_s is not None and story.exit_s <= DRAIN_S + EXIT_SLACK_S, \
        (story.exit_s, story.serve_output[-2000:])
    assert not story.serve_left
