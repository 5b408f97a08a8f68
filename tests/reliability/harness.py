"""What the reliability tests observe of a running tritonserver, read from the outside.

* The server's process group (:func:`group`): tritonserver and its Python-backend stubs, each
  with its start time (a reused pid is a different process) and a label (the model instance a
  stub serves, read from its command line), its resident memory (:func:`rss_kib`) and the
  ``/dev/shm`` region it maps (:func:`shm_regions`).
* Liveness (:class:`Snapshot`, :func:`liveness_problems`): the server process runs, no stub
  died or was replaced, and the ready endpoints answer 200 (Triton 2.51 keeps answering 200 with
  a dead stub, so the process group is the real check).
* One request as the official tritonclient sends it over a gRPC stream (:func:`grpc_exchange`)
  and raw HTTP (:func:`http_post`), returning what came back, never raising for a refusal.

Standard library, numpy and tritonclient only; nothing here knows the test cases.
"""

from __future__ import annotations

import json
import queue
import resource
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt

from tritonllm import contract as C
from tritonllm import metrics_catalog as MC

STUB = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
#: Each stub's address space is capped at this (see :func:`cap_address_space`).
STUB_ADDRESS_SPACE = 12 << 30

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- the process group --------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Proc:
    """One live process of the server's group. ``start``: clock ticks after boot."""

    pid: int
    start: int
    label: str = field(compare=False)
    argv: tuple[str, ...] = field(compare=False, repr=False)

    @property
    def is_stub(self) -> bool:
        return bool(self.argv) and self.argv[0].endswith(STUB)

    def __str__(self) -> str:
        return f"{self.label} (pid {self.pid})"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def _label(argv: Sequence[str]) -> str:
    """A stub's instance name (``tensorrt_llm_bls_0_0``, its 9th argument), else the program."""
    if argv and argv[0].endswith(STUB):
        return argv[8] if len(argv) > 8 else f"stub {Path(argv[1]).parent.parent.name}"
    return Path(argv[0]).name if argv else "?"


def group(pgid: int) -> dict[int, Proc]:
    """The live (not zombie) processes of process group ``pgid``, by pid."""
    out: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields[0]: state, [2]: pgrp, [19]: starttime (the 22nd field of /proc/pid/stat)
        if fields is None or len(fields) < 20 or fields[0] == "Z" or int(fields[2]) != pgid:
            continue
        try:
            argv = tuple(a.decode("utf-8", "replace") for a in
                         (entry / "cmdline").read_bytes().split(b"\0") if a)
        except OSError:
            continue
        pid = int(entry.name)
        out[pid] = Proc(pid, int(fields[19]), _label(argv), argv)
    return out


def stubs(pgid: int) -> list[Proc]:
    return sorted((p for p in group(pgid).values() if p.is_stub), key=lambda p: p.label)


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (VmRSS), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def shm_regions(procs: Iterable[Proc]) -> set[str]:
    """The ``/dev/shm`` regions the stubs were started with (their 3rd argument)."""
    return {p.argv[2] for p in procs if p.is_stub and len(p.argv) > 2}


def cap_address_space(procs: Iterable[Proc], limit: int = STUB_ADDRESS_SPACE) -> None:
    """Cap each stub's address space (RLIMIT_AS) at ``limit`` bytes.

    A safety belt for a shared machine: a request that makes a stub allocate without bound
    (a 1 MB stop string once took a BLS stub to 18 GB, and the kernel's OOM killer then
    chooses among every process on the machine) fails inside that stub instead, and the suite
    sees a dead stub. Normal use stays far below: the stubs map 1.3-2.5 GB.
    """
    for p in procs:
        if p.is_stub:
            resource.prlimit(p.pid, resource.RLIMIT_AS, (limit, limit))


# --- liveness -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """The server's process group at one moment."""

    pgid: int
    procs: frozenset[Proc]

    @classmethod
    def take(cls, server: Any) -> Snapshot:
        pgid = int(server.pid)
        return cls(pgid, frozenset(group(pgid).values()))

    def stubs(self) -> list[Proc]:
        return sorted((p for p in self.procs if p.is_stub), key=lambda p: p.label)


def ready_problems(server: Any, models: Iterable[str]) -> list[str]:
    problems = []
    for path in ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]:
        status, body = http_get(f"{server.url_http}{path}", timeout=10)
        if status != 200:
            problems.append(f"GET {path}: {status} {body[:200]!r}")
    return problems


def liveness_problems(server: Any, before: Snapshot, models: Iterable[str]) -> list[str]:
    """Whatever went wrong since ``before``: the server exited, a stub died or was replaced,
    a ready endpoint does not answer 200."""
    if not server.is_running():
        return [f"tritonserver (pid {before.pgid}) is not running"]
    after = Snapshot.take(server)
    problems = [f"died: {p}" for p in sorted(before.procs - after.procs)]
    problems += [f"new process: {p}" for p in sorted(after.procs - before.procs)]
    return problems + ready_problems(server, models)


# --- HTTP ---------------------------------------------------------------------------------------

def http_post(url: str, body: bytes, content_type: str = "application/json",
              timeout: float = 60) -> tuple[int, bytes]:
    """(status, body) of a POST; status 0 with the reason when nothing answered."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), bytes(e.read())
    except OSError as e:
        return 0, str(e).encode()


#: The LLM model's requests held (running or waiting): NVIDIA's request_type="active".
ENGINE_HELD = MC.series(MC.REQUEST_METRICS, "active")


def metric(server: Any, name: str) -> float:
    """The sum of a Prometheus metric's samples on the server's metrics endpoint; ``name`` may
    be a selector with labels (``ENGINE_HELD``)."""
    status, body = http_get(server.url_metrics)
    if status != 200:
        raise AssertionError(f"GET {server.url_metrics}: {status} {body[:200]!r}")
    base, _, labels = name.partition("{")
    wanted = [p for p in labels.rstrip("}").split(",") if p]
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if (line.startswith(base + "{") or line.startswith(base + " "))
               and all(p in line for p in wanted))


def wait_engine_idle(server: Any, timeout: float = 60) -> float:
    """Wait until the CPU engine reports no active and no waiting request (its gauges,
    refreshed every 0.25 s: server-side state, nothing of ours to wait on); the seconds it
    took. AssertionError after ``timeout``."""
    start = time.monotonic()
    while metric(server, ENGINE_HELD):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"the engine is still busy after {timeout:g}s")
        time.sleep(0.05)  # polling a server-side gauge
    return time.monotonic() - start


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), bytes(e.read())
    except OSError as e:
        return 0, str(e).encode()


# --- gRPC ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Wire:
    """One input tensor as sent: ``value`` has the batch dimension; ``dtype`` is Triton's wire
    name (``BYTES`` for STRING)."""

    name: str
    value: npt.NDArray[Any]
    dtype: str

    def __repr__(self) -> str:
        return f"Wire({self.name!r}, {self.dtype}{list(self.value.shape)})"


@dataclass
class Exchange:
    """What one request got back: ``error`` (the message of an error response), the text of
    the data responses, whether a final response came, and how long it all took."""

    error: str | None = None
    texts: list[str] = field(default_factory=list)
    final: bool = False
    seconds: float = 0.0
    timed_out: bool = False


def infer_inputs(wires: Sequence[Wire]) -> list[Any]:
    import tritonclient.grpc as grpcclient

    out = []
    for w in wires:
        x = grpcclient.InferInput(w.name, list(w.value.shape), w.dtype)
        x.set_data_from_numpy(w.value)
        out.append(x)
    return out


def grpc_exchange(address: str, model: str, wires: Sequence[Wire], request_id: str = "",
                  timeout: float = 60) -> Exchange:
    """Send one request on a gRPC stream of its own (an error response carries no request id,
    so a stream per request keeps it unambiguous) and collect it until its error or its final
    response, or ``timeout`` (then the stream is cancelled)."""
    import tritonclient.grpc as grpcclient

    events: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(address)
    out = Exchange()
    start = time.monotonic()
    try:
        client.start_stream(callback=lambda result, error: events.put((result, error)))
        client.async_stream_infer(model, infer_inputs(wires), request_id=request_id,
                                  enable_empty_final_response=True)
        deadline = start + timeout
        while True:
            try:
                result, error = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                out.timed_out = True
                break
            if error is not None:
                out.error = str(error)
                break
            text = result.as_numpy("text_output")
            if text is not None and text.size:
                out.texts.append(text.reshape(-1)[0].decode("utf-8", "replace"))
            if result.get_response().parameters["triton_final_response"].bool_param:
                out.final = True
                break
    finally:
        out.seconds = time.monotonic() - start
        # Cancel only a request still running: Triton 2.51 keeps a model it refused a request
        # to alive after that stream's cancel, and its shutdown then waits its whole exit
        # timeout (test_kill9.py::test_a_cancelled_refused_stream_does_not_hold_up_shutdown).
        client.stop_stream(cancel_requests=out.timed_out)
        client.close()
    return out


def numpy_of(dtype: str) -> Any:
    """The numpy dtype tritonclient sends for Triton ``dtype`` (STRING/BYTES: object)."""
    from tritonclient.utils import triton_to_np_dtype

    return triton_to_np_dtype("BYTES" if dtype == "STRING" else dtype)


def triton_wire_dtype(dtype: str) -> str:
    return "BYTES" if dtype == "STRING" else dtype


def pids_alive(pids: Iterable[int]) -> list[int]:
    alive = []
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z":
            alive.append(pid)
    return alive


def signal_name(code: int | None) -> str:
    import signal

    if code is None or code >= 0:
        return str(code)
    return signal.Signals(-code).name


# --- servers ------------------------------------------------------------------------------------

SLOTS, QUEUE = 4, 8  # engine slots (max_batch_size) and max_queue_size of the bounded server
MODELS = ("ensemble", "tensorrt_llm_bls")
ALL_MODELS = ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls")
#: One stub per Python model (every model but the ensemble), one instance each (see render).
STUBS = len(C.MODEL_NAMES) - 1


@dataclass
class Served:
    """A running server, its repository, and its process group when it became ready."""

    server: Any
    repo: Path
    baseline: Snapshot


def render(engine: Path, repo: Path, **settings: Any) -> Path:
    """The CPU repository of ``engine`` with one instance per model and one OpenVINO thread
    (``settings`` override RepoSettings), validated."""
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository
    from tritonllm.settings import RepoSettings

    options: dict[str, Any] = {"preprocessing_instance_count": 1, "bls_instance_count": 1,
                               "num_threads": 1, **settings}
    render_repository(engine, repo, RepoSettings(**options))
    assert validate_repository(repo) == []
    return repo


def server_options(repo: Path, **options: Any) -> Any:
    from tritonllm.server import ServerOptions

    values: dict[str, Any] = {"http_port": 0, "grpc_port": 0, "metrics_port": 0,
                              "startup_timeout": 300, "log_file": repo.parent / "tritonserver.log",
                              **options}
    return ServerOptions(repo=repo, **values)


def ready_snapshot(server: Any) -> Snapshot:
    """The process group of a server that just became ready: every stub is there, capped."""
    snap = Snapshot.take(server)
    assert len(snap.stubs()) == STUBS, [str(p) for p in snap.stubs()]
    cap_address_space(snap.stubs())
    return snap


def engine_limits(engine: Path) -> Any:
    from bad_inputs import Limits

    limits = json.loads((engine / "manifest.json").read_text())["limits"]
    return Limits(vocab_size=int(limits["vocab_size"]), max_seq_len=int(limits["max_seq_len"]))


__all__ = [
    "ALL_MODELS",
    "MODELS",
    "QUEUE",
    "SHM_DIR",
    "SLOTS",
    "STUB",
    "STUBS",
    "Exchange",
    "Proc",
    "Served",
    "Snapshot",
    "Wire",
    "cap_address_space",
    "engine_limits",
    "group",
    "grpc_exchange",
    "http_get",
    "http_post",
    "infer_inputs",
    "liveness_problems",
    "metric",
    "numpy_of",
    "pids_alive",
    "ready_problems",
    "ready_snapshot",
    "render",
    "rss_kib",
    "server_options",
    "shm_regions",
    "signal_name",
    "stubs",
    "triton_wire_dtype",
    "wait_engine_idle",
]
