"""A tritonserver stopped under load (SIGTERM), as a rolling update or a scale-down does it.

Two real servers, replicas A and B, serve the tiny CPU repository; a TCP relay in front of them
stands in for a load balancer (a Kubernetes Service): each new connection goes to the backend
of the moment, and is switched from A to B when A is signalled. While A serves streamed and
whole requests over sync gRPC, asyncio gRPC and HTTP to the ensemble and the BLS model, it gets
SIGTERM; probes keep sending new requests until it has exited. Triton 2.51 drains in phases
(see tritonllm.client._errors): "Server is stopping, ...", "... has no available versions",
then GOAWAY. Checked, with the real client and server:

- every request in flight or sent during the drain completes or raises Unavailable: never
  ModelNotFound or ServerError, and never waits for its deadline (a Triton 2.51 ensemble may
  leave a streamed request unanswered when it stops: the client gives it up once the
  connection has gone);
- A exits by itself while our clients stay open (they drop their streams on GOAWAY; Triton
  waits for every open stream);
- a request sent through the relay while A drains, before any text, is retried and answered by
  B, with the same text A gave before.

The scenario runs once (module fixture ``drain``); each test checks one part of its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tritonllm.client import (
    AsyncLLMClient,
    Completion,
    LLMClient,
    RetryPolicy,
    Stream,
    Unavailable,
)
from tritonllm.client._transport import GONE_SILENCE_S

pytestmark = pytest.mark.integration

MODELS = ("ensemble", "tensorrt_llm_bls")
EXIT_TIMEOUT_S = 5  # --exit-timeout-secs of replica A (Triton's default is 30)
DEADLINE = 60.0  # every client call's timeout
# A request must end well before its deadline: the drain, the silence after GOAWAY, slack for
# a busy 2-core runner.
BOUND_S = EXIT_TIMEOUT_S + GONE_SILENCE_S + 15.0
LONG, HTTP_LONG = 1000, 200  # tokens of the requests in flight (min_tokens too)
PROMPT = "The quick brown fox"
DRAINING = re.compile(r"Server is stopping|has no available versions")


class Relay:
    """A TCP relay standing in for a load balancer: a new connection goes to ``backend``."""

    def __init__(self, backend: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.backend = backend
        self.connections: list[int] = []  # the backend port of each connection relayed
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            port = self.backend
            try:
                server = socket.create_connection(("127.0.0.1", port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections.append(port)
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()


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
    kind: str  # "grpc stream", "aio generate", ...
    model: str
    phase: str  # "in flight" (sent before SIGTERM) or "new" (sent during the drain)
    result: Completion | BaseException
    seconds: float

    def __str__(self) -> str:
        r = self.result
        what = "completed" if isinstance(r, Completion) else f"{type(r).__name__}: {r}"
        return f"{self.phase} {self.kind} {self.model} ({self.seconds:.1f}s): {what}"


@dataclass
class Drain:
    outcomes: list[Outcome] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)  # requests still running at the end
    a_exit_s: float | None = None  # seconds from SIGTERM to A's exit (None: still running)
    reference: str = ""  # A's text for PROMPT before the drain
    retried: Completion | BaseException | None = None  # the request sent while A drained
    retried_sent_s: float | None = None
    relayed: list[int] = field(default_factory=list)
    b_port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, o: Outcome) -> None:
        with self.lock:
            self.outcomes.append(o)


def _run(drain: Drain, kind: str, model: str, phase: str,
         call: Callable[[], Completion]) -> Outcome:
    start = time.monotonic()
    try:
        result: Completion | BaseException = call()
    except Exception as e:  # every outcome is checked by the tests
        result = e
    o = Outcome(kind, model, phase, result, time.monotonic() - start)
    drain.record(o)
    return o


def _stream_to_end(stream: Stream, first: threading.Event | None) -> Completion:
    for _ in stream:
        if first is not None:
            first.set()
    assert stream.completion is not None
    return stream.completion


@pytest.fixture(scope="module")
def drain(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drain]:
    from tritonllm.builders.repository import render_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    base = tmp_path_factory.mktemp("drain")
    repo = base / "repo"
    render_repository(cpu_engine, repo, RepoSettings(
        max_batch_size=8, preprocessing_instance_count=1, postprocessing_instance_count=1,
        bls_instance_count=1, num_threads=1))

    def options(name: str) -> ServerOptions:
        return ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                             startup_timeout=300, stop_timeout=5,
                             extra_args=(f"--exit-timeout-secs={EXIT_TIMEOUT_S}",),
                             log_file=base / f"{name}.log")

    a, b = TritonServer(options("a")), TritonServer(options("b"))
    relay: Relay | None = None
    aio = AioThread()
    clients: list[LLMClient] = []
    aclients: list[AsyncLLMClient] = []
    threads: list[threading.Thread] = []
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        relay = Relay(a.grpc_port)
        d = Drain(b_port=b.grpc_port)
        once = RetryPolicy(attempts=1)
        grpc_a = LLMClient(a.grpc_address, timeout=DEADLINE, retry=once)
        http_a = LLMClient(a.url_http, timeout=DEADLINE, retry=once)
        balanced = LLMClient(f"127.0.0.1:{relay.port}", timeout=DEADLINE, retry=RetryPolicy(
            attempts=500, initial_backoff=0.05, max_backoff=0.25))
        clients += [grpc_a, http_a, balanced]

        async def make_aio() -> AsyncLLMClient:
            return AsyncLLMClient(a.grpc_address, timeout=DEADLINE, retry=once)

        aio_a: AsyncLLMClient = aio.run(make_aio())
        aclients.append(aio_a)
        # warm every client: metadata cached, a pooled stream (through the relay: to A) idle
        for model in MODELS:
            grpc_a.generate(PROMPT, 2, model=model)
            http_a.generate(PROMPT, 2, model=model)
            aio.run(aio_a.generate(PROMPT, 2, model=model))
        d.reference = balanced.generate(PROMPT, 16).text

        # one request of each kind: n tokens (min_tokens too); a stream sets ``first`` at
        # its first delta
        def grpc_stream(model: str, n: int, first: threading.Event | None) -> Completion:
            return _stream_to_end(grpc_a.stream(PROMPT, n, model=model, min_tokens=n), first)

        def grpc_generate(model: str, n: int, first: threading.Event | None) -> Completion:
            return grpc_a.generate(PROMPT, n, model=model, min_tokens=n)

        async def aio_streamed(model: str, n: int, first: threading.Event | None) -> Completion:
            s = aio_a.stream(PROMPT, n, model=model, min_tokens=n)
            async for _ in s:
                if first is not None:
                    first.set()
            assert s.completion is not None
            return s.completion

        def aio_stream(model: str, n: int, first: threading.Event | None) -> Completion:
            return aio.run(aio_streamed(model, n, first))

        def aio_generate(model: str, n: int, first: threading.Event | None) -> Completion:
            return aio.run(aio_a.generate(PROMPT, n, model=model, min_tokens=n))

        def http_stream(model: str, n: int, first: threading.Event | None) -> Completion:
            return _stream_to_end(http_a.stream(PROMPT, n, model=model, min_tokens=n), first)

        def http_generate(model: str, n: int, first: threading.Event | None) -> Completion:
            return http_a.generate(PROMPT, n, model=model, min_tokens=n)

        Kind = Callable[[str, int, threading.Event | None], Completion]
        in_flight: dict[str, tuple[Kind, int, bool]] = {  # kind: call, tokens, streamed
            "grpc stream": (grpc_stream, LONG, True),
            "grpc generate": (grpc_generate, LONG, False),
            "aio stream": (aio_stream, LONG, True),
            "aio generate": (aio_generate, LONG, False),
            "http stream": (http_stream, HTTP_LONG, True),
            "http generate": (http_generate, HTTP_LONG, False),
        }
        probed: dict[str, Kind] = {"grpc stream": grpc_stream, "grpc generate": grpc_generate,
                                   "aio stream": aio_stream, "http generate": http_generate}

        # requests in flight: streamed ones signal their first delta
        firsts: list[threading.Event] = []
        for model in MODELS:
            for kind, (fn, n, streamed) in in_flight.items():
                first = threading.Event() if streamed else None
                if first is not None:
                    firsts.append(first)
                t = threading.Thread(target=_run, args=(d, kind, model, "in flight",
                                                        functools.partial(fn, model, n, first)),
                                     name=f"in flight {kind} {model}", daemon=True)
                threads.append(t)
                t.start()
        for f in firsts:
            assert f.wait(DEADLINE), "a request in flight never streamed"

        # SIGTERM; the load balancer sends new connections to B from now on
        assert a.pid is not None
        signalled = time.monotonic()
        os.kill(a.pid, signal.SIGTERM)
        relay.backend = b.grpc_port
        exited = threading.Event()
        draining = threading.Event()

        def probe(kind: str, model: str, call: Callable[[], Completion]) -> None:
            while not exited.is_set():
                o = _run(d, kind, model, "new", call)
                if isinstance(o.result, Unavailable) and DRAINING.search(str(o.result)):
                    draining.set()
                exited.wait(0.05)  # pace the probes; they end when A has exited

        for model in MODELS:
            for kind, fn in probed.items():
                t = threading.Thread(target=probe, args=(kind, model,
                                                         functools.partial(fn, model, 4, None)),
                                     name=f"probe {kind} {model}", daemon=True)
                threads.append(t)
                t.start()

        # once A answers as a draining server, send one request through the relay
        def retried() -> None:
            try:
                d.retried = balanced.generate(PROMPT, 16)
            except Exception as e:
                d.retried = e

        if draining.wait(EXIT_TIMEOUT_S + 10):
            d.retried_sent_s = time.monotonic() - signalled
            r = threading.Thread(target=retried, name="retried", daemon=True)
            threads.append(r)
            r.start()

        with contextlib.suppress(Exception):  # ServingError: still running (checked by a test)
            a.wait(timeout=BOUND_S)
            d.a_exit_s = time.monotonic() - signalled
        exited.set()
        end = time.monotonic() + BOUND_S
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        d.hung = [t.name for t in threads if t.is_alive()]
        d.relayed = list(relay.connections)
        yield d
    finally:
        for ac in aclients:
            with contextlib.suppress(Exception):
                aio.run(ac.close(), timeout=10)
        aio.close()
        for c in clients:
            c.close()
        a.stop()
        b.stop()
        if relay is not None:
            relay.close()


def test_every_request_completed_or_raised_unavailable(drain: Drain) -> None:
    assert not drain.hung, f"still running when the scenario ended: {drain.hung}"
    wrong = [str(o) for o in drain.outcomes
             if not isinstance(o.result, (Completion, Unavailable))]
    assert not wrong, "\n".join(wrong)
    slow = [str(o) for o in drain.outcomes if o.seconds > BOUND_S]
    assert not slow, "\n".join(slow)
    # the scenario ran: all twelve requests in flight, probes of every kind
    in_flight = [o for o in drain.outcomes if o.phase == "in flight"]
    assert len(in_flight) == 12
    kinds = {(o.kind, o.model) for o in drain.outcomes if o.phase == "new"}
    assert {k for k, _ in kinds} == {"grpc stream", "grpc generate", "aio stream",
                                     "http generate"}
    assert {m for _, m in kinds} == set(MODELS)


def test_the_draining_messages_are_unavailable(drain: Drain) -> None:
    """Triton's own words for a draining server reached the client, classified Unavailable."""
    draining = [o for o in drain.outcomes
                if isinstance(o.result, BaseException) and DRAINING.search(str(o.result))]
    assert draining, "no request met a draining server:\n" + "\n".join(
        str(o) for o in drain.outcomes)
    assert all(type(o.result) is Unavailable for o in draining), \
        "\n".join(str(o) for o in draining)


def test_a_exits_while_the_clients_stay_open(drain: Drain) -> None:
    assert drain.a_exit_s is not None, f"A still running {BOUND_S:g}s after SIGTERM"
    assert drain.a_exit_s <= EXIT_TIMEOUT_S + GONE_SILENCE_S + 10


def test_a_request_sent_while_a_drains_is_retried_on_b(drain: Drain) -> None:
    assert drain.retried_sent_s is not None, "A never answered as a draining server"
    assert drain.a_exit_s is None or drain.retried_sent_s < drain.a_exit_s
    r = drain.retried
    assert isinstance(r, Completion), r
    assert r.attempts >= 2  # the first went to A, draining
    assert r.text == drain.reference
    assert drain.b_port in drain.relayed  # ... and it was B that answered
