"""``tritonllm serve`` (managed) on the tiny CPU repository: what used to take the server down.

One server for the module, driven in order (issue #14):

1. a 4 MB form-encoded POST (``curl -d``'s content type), which segfaults a bare Triton 2.51,
   gets a clear 413 from the HTTP guard and the server serves on (the same body as JSON reaches
   Triton and gets its 400; a streamed ``generate_stream`` passes the guard event by event);
2. a killed Python stub of the BLS model is noticed: a log line naming it, readiness 503, the
   model reloaded, every BLS request served again;
3. SIGTERM with 8 ensemble streams in flight: readiness 503 and new requests refused at once,
   every stream finishes its text, then tritonserver stops; ``tritonllm serve`` exits 0 and
   says it drained; no stub segfaulted; no shared-memory region of this server is left.

A second, trivial server checks the truthful exit: a client that keeps a gRPC stream open holds
a model in Triton 2.51, whose exit then times out and hangs; ``tritonllm serve`` kills it and
exits 1 saying so.

Every wait polls a condition against a deadline; free ports on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from served import tensor

from tritonllm.supervision import SHM_DIR, stub_processes

pytestmark = pytest.mark.integration

PORT_ARGS = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--host",
             "127.0.0.1")
DEADLINE = 120.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _wait_for(what: str, check: Callable[[], Any], timeout: float = DEADLINE,
              every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def _http(url: str, body: bytes | None = None, ctype: str | None = None,
          timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body)
    if ctype is not None:
        req.add_header("Content-Type", ctype)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


@dataclass
class Serve:
    """``python -m tritonllm serve`` with stdout and stderr read line by line."""

    args: tuple[str, ...]
    proc: subprocess.Popen[str] = field(init=False)
    out: queue.Queue[str | None] = field(default_factory=queue.Queue)
    err: list[str] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tritonllm", "serve", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._pumps = [threading.Thread(target=f, daemon=True)
                       for f in (self._pump_out, self._pump_err)]
        for t in self._pumps:
            t.start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.put(line.rstrip("\n"))
        self.out.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))

    def ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while "pid" not in self.endpoints:
            line = self.out.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"serve exited: {self.err[-20:]}")
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("HTTP", "gRPC", "metrics", "log", "pid"):
                self.endpoints[parts[0]] = parts[1]

    @property
    def http(self) -> str:
        return self.endpoints["HTTP"]

    @property
    def grpc(self) -> str:
        return self.endpoints["gRPC"].removeprefix("grpc://")

    @property
    def pid(self) -> int:
        return int(self.endpoints["pid"])

    def said(self, pattern: str) -> str | None:
        return next((line for line in list(self.err) if re.search(pattern, line)), None)

    def finish(self, timeout: float = DEADLINE) -> int:
        self.proc.wait(timeout=timeout)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        for t in self._pumps:  # read everything it wrote
            t.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()


def _stream_inputs(prompt: str, n: int, stream: bool = True) -> list[Any]:
    return [tensor("text_input", np.array([[prompt.encode()]], dtype=object), "BYTES"),
            tensor("max_tokens", np.array([[n]], np.int32), "INT32"),
            tensor("min_tokens", np.array([[n]], np.int32), "INT32"),
            tensor("stream", np.array([[stream]]), "BOOL")]


class Streams:
    """One tritonclient gRPC stream; per request: text pieces, final reason, error, end time."""

    def __init__(self, address: str) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(address)
        self.text: dict[str, list[str]] = {}
        self.reason: dict[str, str] = {}
        self.error: dict[str, str] = {}
        self.ended: dict[str, float] = {}
        self.last = ""
        self.lock = threading.Lock()
        self.client.start_stream(callback=self._callback)

    def _callback(self, result: Any, error: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if error is not None:
                self.error[self.last] = str(error)
                self.ended[self.last] = now
                return
            rid = result.get_response().id
            out = result.as_numpy("text_output")
            if out is not None and out.size:
                self.text.setdefault(rid, []).append(out.reshape(-1)[0].decode())
            if result.get_response().parameters["triton_final_response"].bool_param:
                fr = result.as_numpy("finish_reason")
                self.reason[rid] = fr.reshape(-1)[0].decode() if fr is not None else ""
                self.ended[rid] = now

    def send(self, rid: str, model: str, inputs: list[Any]) -> None:
        self.last = rid
        self.text.setdefault(rid, [])
        self.client.async_stream_infer(model, inputs, request_id=rid,
                                       enable_empty_final_response=True)

    def done(self, rids: list[str]) -> bool:
        with self.lock:
            return all(r in self.ended for r in rids)

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def _shm_prefixes(pgid: int) -> set[str]:
    """The shared-memory prefixes of the stubs in the group (argv[2]: prefix + a uuid)."""
    names = set()
    for pid in stub_processes(pgid):
        with contextlib.suppress(OSError, IndexError):
            names.add(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[2].decode()[:-36])
    return names


def _segfaults(pids: set[int]) -> list[str] | None:
    """dmesg lines of segfaults of these pids; None when dmesg cannot be read here."""
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [line for line in out.stdout.splitlines()
            if "segfault" in line and any(f"[{pid}]" in line for pid in pids)]


@pytest.fixture(scope="module")
def repo(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonllm.builders.repository import render_repository
    from tritonllm.settings import RepoSettings

    out = tmp_path_factory.mktemp("shutdown") / "repo"
    render_repository(cpu_engine, out, RepoSettings(
        preprocessing_instance_count=1, bls_instance_count=2, num_threads=1))
    return out


@pytest.fixture(scope="module")
def serve(repo: Path) -> Iterator[Serve]:
    s = Serve((str(repo), *PORT_ARGS, "--log-file", str(repo.parent / "tritonserver.log")))
    try:
        s.ready()
        yield s
    finally:
        s.kill()


@pytest.fixture(scope="module")
def stub_pids(serve: Serve) -> set[int]:
    """Every stub pid seen during the module (for the segfault check at the end)."""
    return set(stub_processes(serve.pid))


def test_big_form_post_gets_413_and_the_server_serves_on(serve: Serve) -> None:
    body = json.dumps({"text_input": "ab " * 1400000, "max_tokens": 16}).encode()
    assert len(body) > 4 << 20
    url = f"{serve.http}/v2/models/nosuchmodel/generate"
    status, answer = _http(url, body, "application/x-www-form-urlencoded")
    assert status == 413
    message = json.loads(answer)["error"]
    assert "1048576 bytes" in message and "application/json" in message
    status, answer = _http(url, body, "application/json")  # reaches Triton: its own answer
    assert status in (400, 404) and b"nosuchmodel" in answer
    assert _http(f"{serve.http}/v2/health/ready")[0] == 200
    # a small form-encoded body (curl -d '{...}') still works
    small = json.dumps({"text_input": "The quick brown fox", "max_tokens": 8}).encode()
    status, answer = _http(f"{serve.http}/v2/models/ensemble/generate", small,
                           "application/x-www-form-urlencoded")
    assert status == 200 and json.loads(answer)["text_output"]
    assert serve.proc.poll() is None


def test_generate_stream_passes_the_guard_event_by_event(serve: Serve) -> None:
    body = json.dumps({"text_input": "The quick brown fox", "max_tokens": 64,
                       "stream": True}).encode()
    req = urllib.request.Request(f"{serve.http}/v2/models/ensemble/generate_stream", data=body)
    req.add_header("Content-Type", "application/json")
    with _OPENER.open(req, timeout=60) as r:
        assert r.status == 200
        events = [line for line in r.read().decode().splitlines() if line.startswith("data:")]
    pieces = [json.loads(e[5:])["text_output"] for e in events]
    assert len(pieces) > 1
    _, whole = _http(f"{serve.http}/v2/models/ensemble/generate", json.dumps(
        {"text_input": "The quick brown fox", "max_tokens": 64}).encode(), "application/json")
    assert "".join(pieces) == json.loads(whole)["text_output"]


def test_a_dead_stub_is_seen_and_its_model_reloaded(serve: Serve, stub_pids: set[int]) -> None:
    stubs = stub_processes(serve.pid)
    bls = sorted(p for p, s in stubs.items() if s.model == "tensorrt_llm_bls")
    assert len(bls) == 2
    os.kill(bls[0], signal.SIGKILL)

    line = _wait_for("the dead-stub notice",
                     lambda: serve.said(r"Python stub of model 'tensorrt_llm_bls' died"))
    assert f"(pid {bls[0]}) was killed by SIGKILL" in line
    statuses = set()

    def reloaded() -> str | None:
        statuses.add(_http(f"{serve.http}/v2/health/ready")[0])
        return serve.said(r"model 'tensorrt_llm_bls' reloaded in")

    _wait_for("the reload", reloaded, timeout=300, every=0.2)
    assert 503 in statuses  # not ready while the model was being reloaded
    assert _http(f"{serve.http}/v2/health/ready")[0] == 200
    now = {p for p, s in stub_processes(serve.pid).items() if s.model == "tensorrt_llm_bls"}
    assert len(now) == 2 and bls[0] not in now
    stub_pids.update(stub_processes(serve.pid))

    s = Streams(serve.grpc)
    try:
        rids = [f"b{i}" for i in range(8)]
        for rid in rids:
            s.send(rid, "tensorrt_llm_bls", _stream_inputs("Hello", 16))
        _wait_for("BLS answers", lambda: s.done(rids))
        assert s.error == {}
        assert all(s.reason[r] == "length" for r in rids)
    finally:
        s.close()


def test_sigterm_drains_streams_in_flight(serve: Serve, stub_pids: set[int]) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    stub_pids.update(stub_processes(serve.pid))
    prefixes = _shm_prefixes(serve.pid)
    assert len(prefixes) == 1 and next(iter(prefixes)).startswith("tritonllm_")
    assert list(SHM_DIR.glob(next(iter(prefixes)) + "*"))
    s = Streams(serve.grpc)
    rids = [f"d{i}" for i in range(8)]
    try:
        for rid in rids:
            s.send(rid, "ensemble", _stream_inputs("The quick brown fox", 900))
        _wait_for("a first piece of every stream", lambda: all(s.text[r] for r in rids))
        signalled = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)

        _wait_for("readiness 503", lambda: _http(f"{serve.http}/v2/health/ready")[0] == 503,
                  every=0.05)
        refused = _http(f"{serve.http}/v2/models/ensemble/generate", json.dumps(
            {"text_input": "x", "max_tokens": 4}).encode(), "application/json")
        assert refused[0] == 503 and b"draining" in refused[1]
        client = grpcclient.InferenceServerClient(serve.grpc)
        with pytest.raises(InferenceServerException, match="no available versions"):
            client.infer("ensemble", _stream_inputs("x", 4, stream=False)[:2])
        client.close()

        _wait_for("every stream's end", lambda: s.done(rids))
        assert s.error == {}
        assert {s.reason[r] for r in rids} == {"length"}
        assert sum(s.ended[r] > signalled for r in rids) >= 4  # they were in flight
    finally:
        s.close()

    code = serve.finish()
    # one stub died (killed above): its model's old version going later is no death
    assert len([line for line in serve.err if "Python stub of model" in line]) == 1
    stopped = serve.said(r"^tritonserver stopped")
    assert code == 0, serve.err[-15:]
    assert stopped is not None and "drained in" in stopped and "exited with code 0" in stopped
    assert list(SHM_DIR.glob(next(iter(prefixes)) + "*")) == []
    crashes = _segfaults(stub_pids)
    assert not crashes, crashes


@pytest.fixture
def trivial_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "echo" / "1").mkdir(parents=True)
    (repo / "echo" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\nmodel_transaction_policy { decoupled: true }\n'
        'input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]\n')
    (repo / "echo" / "1" / "model.py").write_text(
        "import triton_python_backend_utils as pb_utils\n\n\n"
        "class TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        for r in requests:\n"
        "            x = pb_utils.get_input_tensor_by_name(r, 'IN')\n"
        "            r.get_response_sender().send(\n"
        "                pb_utils.InferenceResponse([pb_utils.Tensor('OUT', x.as_numpy())]),\n"
        "                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)\n")
    return repo


def test_a_stop_that_had_to_kill_exits_non_zero(trivial_repo: Path) -> None:
    serve = Serve((str(trivial_repo), *PORT_ARGS, "--", "--exit-timeout-secs=2"))
    s: Streams | None = None
    try:
        serve.ready(timeout=120)
        s = Streams(serve.grpc)
        s.send("e0", "echo", [tensor("IN", np.ones(2, np.float32), "FP32")])
        _wait_for("the answer", lambda: s is not None and s.done(["e0"]))
        serve.proc.send_signal(signal.SIGTERM)  # the stream stays open
        code = serve.finish(timeout=60)
    finally:
        if s is not None:
            s.close()
        serve.kill()
    assert code == 1
    error = serve.said(r"^error: tritonserver stopped uncleanly")
    assert error is not None, serve.err[-10:]
    assert "exit timeout expired" in error and "killed with SIGKILL" in error
