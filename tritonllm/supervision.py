"""What ``tritonllm serve`` does around a running tritonserver 2.51 that Triton does not.

Standard library only. :class:`~tritonllm.server.TritonServer` uses it when
``ServerOptions.managed`` is set (``tritonllm serve`` sets it); docs/serving.md, "Shutdown and
health", has the measurements.

A dead Python stub. When a ``triton_python_backend_stub`` dies, Triton 2.51 neither restarts it
nor reports it: restarting is a TODO for decoupled models (python_backend r24.10
``src/python_be.cc`` ``TRITONBACKEND_ModelInstanceExecute``), ``/v2/health/ready`` stays 200
and every model READY, while each request scheduled on that instance fails with "Stub process
'<instance>' is not healthy." (``src/stub_launcher.cc``). Worse, such a failed decoupled request
keeps its model referenced for good: the model can no longer finish unloading, and a later
shutdown waits for Triton's exit timeout. :class:`Supervisor` watches the stub processes in the
server's process group (the stubs are tritonserver's children, started in its group); when one
disappears (or turns zombie) without the launcher having unloaded its model, it

1. says so in one line (the model, the instance, the pid and how it died);
2. reports not ready (``health_reason``; the HTTP guard answers ``/v2/health/ready`` with 503),
   so a load balancer stops sending new requests here;
3. reloads the model (unload, then load; explicit model control): the way back for this
   replica, without restarting the models that are fine or dropping their streams. A
   reload takes what a load takes (18 s for the tiny CPU repository's BLS model here);
4. gives up (``fatal``) when a reload fails or one model needed more than ``max_reloads``
   reloads within ``reload_window_s``: the launcher then stops and exits non-zero, so a
   supervisor (Kubernetes) restarts the whole server. A stub that keeps dying is a bug or a
   resource limit that reloading will not fix.

A drain. Triton's own SIGTERM stops every model's scheduler at once: an ensemble's later steps
are refused while its earlier ones still run, and in-flight streams break. :meth:`drain` does
what a rolling update needs before Triton gets its signal: readiness false, then it unloads the
client-facing models (those no ensemble step or other model's parameters name: ``ensemble``,
``tensorrt_llm_bls``). An unloading model takes no new requests ("... has no available
versions", gRPC NOT_FOUND; the guard answers HTTP with 503) while its requests in flight run to
their end on the models below, which stay loaded. The drain ends when those models are unloaded
or when nothing has moved for ``QUIET_S``: no request queued or decoding (the
``BUSY_GAUGES``, ``TRTLLM_BUSY``) and no Triton or LLM metric (``ACTIVITY_PREFIXES``) changed.
(Waiting for the unload alone is not enough: Triton 2.51 keeps a model referenced while a
client's gRPC stream that used it stays open, even idle.) It ends at ``timeout`` in any case.

Shared memory. The Python backend names its regions ``<prefix><uuid>`` in ``/dev/shm``; a
server that is killed leaves them behind. Each server gets its own prefix
(:func:`new_shm_prefix`, ``tritonllm_<12 hex>_``, through
``--backend-config=python,shm-region-prefix-name=``), so its regions are removed once its
process group is gone (:func:`remove_shm_regions`), and regions of dead tritonllm servers
(our prefix, our uid, mapped by no live process) are swept at start (:func:`stale_shm_regions`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.metrics_catalog import PENDING_REQUESTS, REQUEST_METRICS

__all__ = [
    "ADMIN_HEADER",
    "BUSY_GAUGES",
    "QUIET_S",
    "SHM_PREFIX_ROOT",
    "STUB_NAME",
    "DeadStub",
    "DrainResult",
    "MetricsSnapshot",
    "StubProcess",
    "Supervisor",
    "TritonAdmin",
    "describe_status",
    "entry_models",
    "new_shm_prefix",
    "remove_shm_regions",
    "stale_shm_regions",
    "stub_processes",
]

log = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"
ADMIN_HEADER = "tritonllm-admin"  # the restricted model-repository API's header
SHM_DIR = Path("/dev/shm")
SHM_PREFIX_ROOT = "tritonllm_"
STALE_SHM_AGE_S = 60.0  # a region younger than this may belong to a stub being started
WATCH_INTERVAL_S = 0.5
DRAIN_POLL_S = 0.25
QUIET_S = 1.0  # nothing moved this long: nothing is in flight (the CPU LLM's gauges: 0.25 s)
HELD_AFTER_S = 10.0  # an unloading Python model none of whose stubs went: held (see unload_all)
STUBLESS_HELD_AFTER_S = 1.0  # the same for a model without stubs (an ensemble)
BUSY_GAUGES = (PENDING_REQUESTS,)
# The LLM model (ours on both targets, the GPU's C++ backend): requests it holds (its "max"
# sample is a capacity).
TRTLLM_BUSY = re.compile(rf'^{REQUEST_METRICS}\{{.*request_type="(active|scheduled|'
                         r'context|waiting)"')
ACTIVITY_PREFIXES = ("nv_inference_", "tritonllm_", "nv_trt_llm_", "nv_llm_", "trtllm_")
MAX_RELOADS = 3
RELOAD_WINDOW_S = 600.0


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class StubProcess:
    """One ``triton_python_backend_stub``: its pid, model (the model directory's name),
    instance (``<model>_<group>_<index>``) and version (the version folder), from its
    command line."""

    pid: int
    model: str
    instance: str
    version: str = ""


@dataclass(frozen=True)
class DeadStub:
    stub: StubProcess
    how: str  # "was killed by SIGKILL", "exited with code 1", "exited"


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def stub_processes(pgid: int, proc: Path = Path("/proc")) -> dict[int, StubProcess]:
    """The live (not zombie) Python stubs in process group ``pgid``."""
    found: dict[int, StubProcess] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) < 3 or fields[0] == "Z" or int(fields[2]) != pgid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if not argv[0].endswith(STUB_NAME.encode()) or len(argv) < 9:
            continue
        model_py = Path(argv[1].decode(errors="replace"))
        instance = argv[8].decode(errors="replace")
        pid = int(entry.name)
        found[pid] = StubProcess(pid, model_py.parent.parent.name, instance,
                                 model_py.parent.name)
    return found


def describe_status(pid: int) -> str:
    """How a dead process ended, from its zombie's /proc entry (exit_code, Linux 3.5+)."""
    fields = _proc_stat(pid)
    if fields is None or fields[0] != "Z" or len(fields) < 50:
        return "exited"
    status = int(fields[49])
    if status & 0x7F:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(status & 0x7F).name}"
        return f"was killed by signal {status & 0x7F}"
    return f"exited with code {(status >> 8) & 0xFF}"


# ---------------------------------------------------------------------------------------------
# Shared memory


def new_shm_prefix() -> str:
    """A region-name prefix unique to one server."""
    return f"{SHM_PREFIX_ROOT}{uuid.uuid4().hex[:12]}_"


def _mapped_shm(proc: Path = Path("/proc")) -> set[str]:
    """Names of /dev/shm files some (readable) live process maps."""
    names: set[str] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            maps = (entry / "maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            at = line.find("/dev/shm/")
            if at >= 0:
                names.add(line[at + 9:].removesuffix(" (deleted)"))
    return names


def stale_shm_regions(root: str = SHM_PREFIX_ROOT, shm: Path = SHM_DIR, *,
                      min_age_s: float = STALE_SHM_AGE_S,
                      mapped: set[str] | None = None) -> list[Path]:
    """Regions named ``root...``, owned by this user, older than ``min_age_s`` and mapped by
    no live process: left by tritonllm servers that died."""
    try:
        candidates = [p for p in shm.iterdir() if p.name.startswith(root)]
    except OSError:
        return []
    if not candidates:
        return []
    in_use = _mapped_shm() if mapped is None else mapped
    now, uid = time.time(), os.getuid()
    stale = []
    for p in candidates:
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_uid == uid and now - st.st_mtime >= min_age_s and p.name not in in_use:
            stale.append(p)
    return stale


def remove_shm_regions(paths: Iterable[Path]) -> int:
    """Unlink ``paths``; how many were removed."""
    removed = 0
    for p in paths:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            p.unlink()
            removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# Talking to tritonserver


class TritonAdmin:
    """tritonserver's HTTP endpoint as the launcher uses it (with the admin header)."""

    def __repr__(self) -> str:
        return f"TritonAdmin({self.base_url}, key={'***' if self.key else None})"

    def __init__(self, base_url: str, metrics_url: str | None, key: str | None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.base_url, self.metrics_url, self.key = base_url, metrics_url, key
        self.headers = dict(headers or {})  # e.g. the inference key's (metadata, config)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, path: str, body: Mapping[str, Any] | None = None, *,
                timeout: float = 5.0, url: str | None = None) -> tuple[int, bytes] | None:
        """(status, body); None when nothing answers."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url or self.base_url + path, data=data,
                                     method="POST" if data is not None else "GET")
        if self.key:
            req.add_header(ADMIN_HEADER, self.key)
        for name, value in self.headers.items():
            req.add_header(name, value)
        try:
            with self._opener.open(req, timeout=timeout) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            with e:
                return int(e.code), bytes(e.read())
        except (OSError, http.client.HTTPException):
            return None

    def index(self) -> list[dict[str, Any]] | None:
        got = self.request("/v2/repository/index", {})
        if got is None or got[0] != 200:
            return None
        rows = json.loads(got[1] or b"[]")
        return rows if isinstance(rows, list) else None

    def config(self, model: str) -> dict[str, Any] | None:
        got = self.request(f"/v2/models/{urllib.parse.quote(model)}/config")
        return json.loads(got[1]) if got is not None and got[0] == 200 else None

    def _control(self, model: str, action: str, timeout: float) -> str | None:
        """None on success, else the error."""
        got = self.request(f"/v2/repository/models/{urllib.parse.quote(model)}/{action}", {},
                           timeout=timeout)
        if got is None:
            return "tritonserver did not answer"
        if got[0] != 200:
            try:
                return str(json.loads(got[1]).get("error", got[1][:200]))
            except ValueError:
                return got[1][:200].decode(errors="replace")
        return None

    def unload(self, model: str) -> str | None:
        return self._control(model, "unload", 30.0)

    def load(self, model: str, timeout: float) -> str | None:
        return self._control(model, "load", timeout)

    def metrics(self) -> MetricsSnapshot | None:
        if self.metrics_url is None:
            return None
        got = self.request("", url=self.metrics_url)
        if got is None or got[0] != 200:
            return None
        return MetricsSnapshot.parse(got[1].decode(errors="replace"))


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the drain reads from the metrics page: work waiting or running, and activity."""

    busy: float  # sum of BUSY_GAUGES samples
    samples: tuple[tuple[str, str], ...]  # every nv_inference_* / tritonllm_* sample

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        busy = 0.0
        samples = []
        for line in text.splitlines():
            if not line.startswith(ACTIVITY_PREFIXES):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            if name.endswith("_max_ms"):  # "worst of the last period": moves by itself
                continue
            samples.append((name_labels, value))
            if name in BUSY_GAUGES or TRTLLM_BUSY.match(name_labels):
                with contextlib.suppress(ValueError):
                    busy += float(value)
        return cls(busy, tuple(samples))


def entry_models(configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Models clients call: those no ensemble step and no other model's string parameter
    names (a BLS model names the models it calls in its parameters)."""
    called: set[str] = set()
    for name, cfg in configs.items():
        for step in (cfg.get("ensemble_scheduling") or {}).get("step") or []:
            called.add(str(step.get("model_name", "")))
        for value in (cfg.get("parameters") or {}).values():
            text = value.get("string_value") if isinstance(value, Mapping) else None
            if isinstance(text, str) and text in configs and text != name:
                called.add(text)
    return sorted(n for n in configs if n not in called)


# ---------------------------------------------------------------------------------------------
# The supervisor


@dataclass
class DrainResult:
    drained: bool
    seconds: float
    how: str  # "unloaded", "quiet", "timed out", "server exited", "skipped"
    busy: list[str] = field(default_factory=list)  # entry models still unloading at the end


class Supervisor:
    """Watches one running tritonserver (see the module docstring); thread-safe reads."""

    def __init__(self, admin: TritonAdmin, pgid: int, say: Callable[[str], None], *,
                 is_running: Callable[[], bool], load_timeout: float,
                 max_reloads: int = MAX_RELOADS, reload_window_s: float = RELOAD_WINDOW_S) -> None:
        self.admin, self.pgid, self.say = admin, pgid, say
        self.is_running = is_running
        self.load_timeout = load_timeout
        self.max_reloads, self.reload_window_s = max_reloads, reload_window_s
        self.entry: list[str] = []
        self.fatal: str | None = None
        self.draining = False
        self._reasons: dict[str, str] = {}  # model -> why it is not ready
        self._unload_asked: dict[str, tuple[float, frozenset[int]]] = {}  # when; its stubs
        self._reloads: dict[str, deque[float]] = {}
        self._known: dict[int, StubProcess] = {}
        self._retired: set[int] = set()  # stubs of a model version being replaced: may go
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state read by the guard and the launcher ---------------------------------------------
    @property
    def health_reason(self) -> str | None:
        """None when this replica should get traffic, else why not."""
        if self.draining:
            return "tritonllm serve is draining: the server is shutting down"
        with self._lock:
            reasons = list(self._reasons.values())
        if self.fatal:
            reasons.insert(0, self.fatal)
        return "; ".join(reasons) if reasons else None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, models: Sequence[str]) -> None:
        configs = {m: c for m in models if (c := self.admin.config(m)) is not None}
        self.entry = entry_models(configs)
        self._known = stub_processes(self.pgid)
        self._thread = threading.Thread(target=self._watch, name="tritonllm-supervisor",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching (before tritonserver is signalled: its stubs are about to go)."""
        self._stop.set()
        self._hurry.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.load_timeout + 5)

    def hurry(self) -> None:
        """End a drain (or a reload wait) now: a second signal."""
        self._hurry.set()

    # -- dead stubs ----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            if self.draining or not self.is_running():
                continue
            try:
                self.check_stubs()
            except Exception:  # never let the watch die silently
                log.exception("stub watch failed")

    def check_stubs(self) -> list[DeadStub]:
        """One look at the stubs; recovers the models of dead ones. Returns the dead ones."""
        now = self._current()
        dead = [DeadStub(s, describe_status(pid)) for pid, s in self._known.items()
                if pid not in now]
        replaced = {s.model for pid, s in now.items() if pid not in self._known}
        self._known = now
        if dead:
            dead = self._crashed(dead, replaced)
        if not dead or self._stop.is_set() or not self.is_running():
            return []
        for model in sorted({d.stub.model for d in dead}):
            self._recover(model, [d for d in dead if d.stub.model == model])
        self._known = self._current()
        return dead

    def _crashed(self, dead: list[DeadStub], replaced: set[str]) -> list[DeadStub]:
        """The stubs that died on their own, not by a (re)load or unload someone asked for.

        A client's load of a new version (``tritonllm models load``, explicit model control)
        starts the new version's stubs, then ends the old version's once its requests are
        done; an unload ends them. Neither is a crash: a stub whose model got new stubs in the
        same look, or whose version is no longer READY, was retired by Triton. A crashed stub's
        version stays READY (Triton 2.51 does not notice) and nothing replaces it.
        """
        dead = [d for d in dead if d.stub.model not in replaced]
        if not dead:
            return []
        rows = self.admin.index()
        if rows is None:  # cannot tell: treat as crashed, as before
            return dead
        ready = {(str(r.get("name")), str(r.get("version"))) for r in rows
                 if r.get("state") == "READY"}
        return [d for d in dead if not d.stub.version
                or (d.stub.model, d.stub.version) in ready]

    def _current(self) -> dict[int, StubProcess]:
        """The live stubs, less those of replaced model versions (their teardown may still
        be going on, or never end: a version a failed request leaked)."""
        now = stub_processes(self.pgid)
        self._retired &= set(now)
        return {pid: s for pid, s in now.items() if pid not in self._retired}

    def _recover(self, model: str, dead: list[DeadStub]) -> None:
        stubs = ", ".join(f"'{d.stub.instance}' (pid {d.stub.pid}) {d.how}" for d in dead)
        self.say(f"the Python stub of model '{model}' died: {stubs}. Triton 2.51 neither "
                 "restarts nor reports it (requests on that instance fail: 'Stub process "
                 "... is not healthy'); readiness is false until the model is reloaded")
        with self._lock:
            self._reasons[model] = f"model '{model}' is being reloaded: its Python stub died"
        history = self._reloads.setdefault(model, deque())
        now = time.monotonic()
        while history and now - history[0] > self.reload_window_s:
            history.popleft()
        if len(history) >= self.max_reloads:
            self._give_up(f"the Python stub of model '{model}' died again after "
                          f"{len(history)} reloads within {self.reload_window_s:g}s")
            return
        history.append(now)
        t0 = time.monotonic()
        self._retired |= {pid for pid, s in stub_processes(self.pgid).items()
                          if s.model == model}
        self.say(f"reloading model '{model}' (unload, then load)")
        error = self.admin.unload(model)
        if error is None:
            error = self.admin.load(model, self.load_timeout)
        if error is not None:
            self._give_up(f"reloading model '{model}' after its Python stub died failed: "
                          f"{error}")
            return
        with self._lock:
            self._reasons.pop(model, None)
        self.say(f"model '{model}' reloaded in {time.monotonic() - t0:.1f}s; ready"
                 + ("" if self.health_reason is None else f" (still not: {self.health_reason})"))

    def _give_up(self, why: str) -> None:
        self.fatal = (f"{why}; stopping, so that a supervisor (Kubernetes) restarts the server")
        self.say(self.fatal)

    # -- drain -----------------------------------------------------------------------------
    def drain(self, timeout: float) -> DrainResult:
        """Refuse new requests, wait for the ones in flight (see the module docstring)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        entry = list(self.entry)
        self._unload(entry)  # first: once readiness says 503, new requests are refused
        self.draining = True
        quiet_since: float | None = None
        last: MetricsSnapshot | None = None
        busy = entry
        while True:
            now = time.monotonic()
            if not self.is_running():
                return DrainResult(False, now - t0, "server exited", busy)
            busy = self._still_loaded(entry)
            if not busy:
                return DrainResult(True, now - t0, "unloaded")
            snap = self.admin.metrics()
            if snap is not None and snap.busy == 0 and last is not None and (
                    snap.samples == last.samples):
                quiet_since = quiet_since or now
                if now - quiet_since >= QUIET_S:
                    return DrainResult(True, now - t0, "quiet", busy)
            else:
                quiet_since = None
            last = snap
            if now >= deadline or self._hurry.is_set():
                return DrainResult(False, now - t0, "timed out", busy)
            self._hurry.wait(min(DRAIN_POLL_S, max(0.0, deadline - now)))

    def _unload(self, models: Iterable[str]) -> None:
        """Ask tritonserver to unload ``models``, noting when and their stubs at that time
        (no stub can have gone yet: each instance's teardown starts with a 1 s wait)."""
        asked, names = time.monotonic(), list(models)
        for model in names:
            error = self.admin.unload(model)
            if error is not None:
                self.say(f"could not unload '{model}': {error}")
        by_model: dict[str, set[int]] = {}
        for pid, stub in stub_processes(self.pgid).items():
            by_model.setdefault(stub.model, set()).add(pid)
        for model in names:
            self._unload_asked[model] = (asked, frozenset(by_model.get(model, ())))

    def unload_all(self, timeout: float) -> list[str]:
        """After the drain: unload every model and wait until each is unloaded or *held*;
        returns the held ones.

        A model stays UNLOADING while anything references it. Once nothing is in flight,
        what still does is a client's open gRPC stream (Triton 2.51 keeps each stream's last
        request, ``src/grpc/infer_handler.h``) or a request Triton leaked (the ensemble bug):
        nothing that will let go. Such a model's teardown never starts, so none of its stubs
        goes (a stub-less ensemble: it stays UNLOADING at all); one being torn down loses a
        stub within seconds (each instance: python_backend's 1 s health wait, then the
        stub's exit). Held models are left to tritonserver's (short) exit timeout; waiting
        here for them would only wait ``timeout``. A version replaced by a reload whose stubs
        are still there is held too (a request failed on its dead stub and leaked it).
        """
        deadline = time.monotonic() + timeout
        rows = self.admin.index() or []
        self._unload(str(r.get("name")) for r in rows
                     if r.get("state") in ("READY", "LOADING") and r.get("name")
                     not in self._unload_asked)
        while True:
            now = time.monotonic()
            loaded = self._still_loaded(list(self._unload_asked))
            live: dict[str, set[int]] = {}
            for pid, stub in stub_processes(self.pgid).items():
                live.setdefault(stub.model, set()).add(pid)
            held: list[str] = []
            waiting: list[str] = []
            for model in loaded:
                asked, stubs = self._unload_asked[model]
                started = bool(stubs) and not stubs <= live.get(model, set())
                grace = HELD_AFTER_S if stubs else STUBLESS_HELD_AFTER_S
                (waiting if started or now - asked < grace else held).append(model)
            if not waiting or now >= deadline or self._hurry.is_set() or not self.is_running():
                replaced = {s.model for pid, s in stub_processes(self.pgid).items()
                            if pid in self._retired}
                return sorted(held + waiting) + [f"{m} (a replaced version)"
                                                 for m in sorted(replaced)]
            self._hurry.wait(DRAIN_POLL_S)

    def _still_loaded(self, models: Sequence[str]) -> list[str]:
        rows = self.admin.index()
        if rows is None:
            return list(models)
        states = {str(r.get("name")): r.get("state") for r in rows}
        return [m for m in models if states.get(m) in ("READY", "LOADING", "UNLOADING")]


_EXITING_RE = re.compile(r"Exit timeout expired\. Exiting immediately")


def gave_up_in_log(text: str) -> bool:
    """Whether tritonserver's log says its exit timeout expired (it then calls exit(1), which
    can hang on a client's open gRPC stream)."""
    return _EXITING_RE.search(text) is not None
