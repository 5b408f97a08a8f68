"""Find, prepare and run ``tritonserver``; wait until its models are ready; stop it cleanly.

Standard library only (no tritonclient): the CLI imports this module for ``tritonllm serve``.

The launcher is four modules; this one is their public face and re-exports the names of the
others that callers use:

    tritonllm.server         TritonServer (start, wait until ready, supervise, stop), StopReport
    ├── triton_binary        which tritonserver (find_tritonserver), its backends, its environment
    ├── triton_command       ServerOptions and the tritonserver command line they make
    └── triton_state         ModelStatus (a repository index row) and reading tritonserver's log

:class:`TritonServer` runs one server in its own process group with stdout and stderr in a log
file, passes ``--exit-on-error=false`` so a model that fails to load is listed with its error in
the repository index, and polls ``/v2/health/ready`` and ``POST /v2/repository/index`` until
every model is READY. Every failure is a :class:`~tritonllm.errors.ServingError` whose first line
says what went wrong (the model and its own error, or the busy port) and whose next lines hold
the tail of the log; the server has been stopped by then.

    with TritonServer(ServerOptions("repo", http_port=0, grpc_port=0, metrics_port=0)) as s:
        print(s.url_http, s.url_grpc, s.url_metrics)

Managed serving (``ServerOptions(managed=True)``, what ``tritonllm serve`` runs; the library's
default is off, so tests and benchmarks talk to tritonserver directly):

- tritonserver runs with explicit model control and loads every model at start
  (``--load-model=*``); its model-repository API (index, load, unload) is restricted to the
  launcher, which holds a random key (``--http-restricted-api`` / ``--grpc-restricted-protocol``),
  unless ``model_control_mode="explicit"`` was asked for (then it stays open to clients);
- an HTTP guard (:mod:`tritonllm.http_guard`) listens on the HTTP port in front of
  tritonserver's, which moves to a loopback port: it refuses the form-encoded bodies that crash
  Triton 2.51, answers readiness, and lists the repository index;
- a :class:`~tritonllm.supervision.Supervisor` reloads a model whose Python stub died
  (readiness false meanwhile), and ``stop()`` drains before tritonserver gets its signal.

Every server gets its own shared-memory prefix for the Python backend; its regions in
``/dev/shm`` are removed once it is gone, and those of dead tritonllm servers at start.
:attr:`TritonServer.stop_report` says how the last stop went (drained, exit code, killed).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm import supervision
from tritonllm.errors import ConfigError, ServingError
from tritonllm.http_guard import Head, HttpGuard, Refusal
from tritonllm.security import auth_headers
from tritonllm.triton_binary import (
    TritonInstall,
    find_tritonserver,
    is_executable,
    prepare_backend_dir,
    server_environment,
    wheel_tritonserver,
)
from tritonllm.triton_command import MODEL_CONTROL_MODES, ServerOptions, tritonserver_command
from tritonllm.triton_state import (
    LogFollower,
    ModelStatus,
    busy_port_from_log,
    failure_message,
    last_error_line,
    load_failures_from_log,
    poll_failures_from_log,
)

__all__ = [
    "MODEL_CONTROL_MODES",
    "ModelStatus",
    "ServerOptions",
    "StopReport",
    "TritonInstall",
    "TritonServer",
    "busy_port_from_log",
    "describe_exit",
    "find_tritonserver",
    "free_port",
    "load_failures_from_log",
    "prepare_backend_dir",
    "server_environment",
    "tritonserver_command",
    "wheel_tritonserver",
]

POLL_INTERVAL_S = 0.1
KILL_WAIT_S = 5.0
ORPHAN_WAIT_S = 1.5  # a stub whose tritonserver is gone exits by itself (it checks every 0.3 s)
GAVE_UP_GRACE_S = 3.0  # after Triton's "Exiting immediately", before it is killed
LOG_TAIL_LINES = 30
_INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/(infer|generate|generate_stream)$")

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Ports, HTTP, the process group


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS picks it)."""
    with _bound_socket(host, 0) as s:
        return int(s.getsockname()[1])


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)  # SO_REUSEADDR on POSIX


def _check_port_free(host: str, port: int, service: str) -> None:
    try:
        _bound_socket(host, port).close()
    except OSError as e:
        raise ServingError(f"port {port} ({service}) is already in use on {host}: {e.strerror}"
                           ) from e


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(url: str, body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """(status, body) of a request; None while nothing answers on the port."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), bytes(e.read())
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, garbled
        return None


def describe_exit(code: int) -> str:
    """'exited with code 1' / 'was killed by SIGKILL' for a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _live_group_members(pgid: int) -> list[int]:
    """Processes (not zombies) in process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _kill_group(proc: subprocess.Popen[bytes]) -> int:
    """Kill what is left of the server's process group and reap the server; how many
    processes had to be killed with SIGKILL.

    The group is signalled only while it has members (so its id cannot have been reused).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_WAIT_S)
    else:  # stubs left by a tritonserver that exited notice it and exit (pb_stub.cc main)
        orphans_gone_by = time.monotonic() + ORPHAN_WAIT_S
        while _live_group_members(proc.pid) and time.monotonic() < orphans_gone_by:
            time.sleep(POLL_INTERVAL_S / 2)
    deadline = time.monotonic() + KILL_WAIT_S
    killed: set[int] = set()
    while True:
        members = _live_group_members(proc.pid)
        if members:
            killed.update(members)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_INTERVAL_S)
        elif not members or time.monotonic() > deadline:
            return len(killed)
        else:
            time.sleep(POLL_INTERVAL_S)  # killed stubs are reaped by their new parent


@dataclass(frozen=True)
class StopReport:
    """How a stop went. ``clean``: drained (or nothing to drain), exit code 0, nothing killed."""

    exit_code: int | None
    seconds: float
    drain: supervision.DrainResult | None = None
    gave_up: bool = False  # tritonserver's log: "Exit timeout expired. Exiting immediately"
    killed: int = 0  # processes of the group killed with SIGKILL (tritonserver, stubs)
    shm_removed: int = 0  # /dev/shm regions the stop removed
    held: tuple[str, ...] = ()  # drained models clients' open gRPC streams still referenced

    @property
    def clean(self) -> bool:
        """Nothing lost, nothing killed. A drained server whose exit timeout expired only on
        models held by idle client streams counts as clean: tritonserver then calls exit(1),
        and its destructors may abort (SIGABRT, seen when the clients drop their streams on
        the GOAWAY that comes with them); no request was in flight by then."""
        if self.killed or (self.drain is not None and not self.drain.drained):
            return False
        return self.exit_code == 0 or (self.gave_up and bool(self.held))

    def describe(self) -> str:
        parts = []
        d = self.drain
        if d is not None:
            if d.drained:
                parts.append(f"drained in {d.seconds:.1f}s ({d.how})")
            else:
                busy = f"; still in flight on {', '.join(d.busy)}" if d.busy else ""
                parts.append(f"drain {d.how} after {d.seconds:.1f}s{busy}")
        if self.held:
            parts.append(f"{', '.join(self.held)} still referenced after the drain (by open "
                         "client gRPC streams, which keep their last request in Triton 2.51, "
                         "or by a request Triton leaked)")
        if self.gave_up:
            parts.append("tritonserver's exit timeout expired (models still referenced)")
        if self.killed:
            parts.append(f"{self.killed} process(es) killed with SIGKILL")
        code = "running" if self.exit_code is None else describe_exit(self.exit_code)
        parts.append(f"tritonserver {code}")
        if self.shm_removed:
            parts.append(f"{self.shm_removed} shared-memory region(s) removed")
        return f"{'; '.join(parts)}; {self.seconds:.1f}s"


# ---------------------------------------------------------------------------------------------
# The server


@dataclass
class _Run:
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    work_dir: Path
    log_path: Path
    shm_prefix: str | None = None
    admin: supervision.TritonAdmin | None = None
    guard: HttpGuard | None = None
    supervisor: supervision.Supervisor | None = None
    keep_log: bool = False
    finalizer: weakref.finalize[Any, Any] | None = field(default=None, repr=False)


class TritonServer:
    """One ``tritonserver`` process. As a context manager: start, wait until ready, stop.

    ``start()`` launches it; ``wait_ready()`` blocks until every model is READY; ``stop()``
    (managed: after a drain) sends SIGINT, then SIGTERM after ``stop_timeout`` and SIGKILL to
    the process group, and removes the temporary folder (the log in it is kept after a
    failure). A ServingError from ``start`` or ``wait_ready`` means the server has been stopped.
    ``say`` gets the launcher's own one-line notices (a dead stub, a reload, a drain); the
    default logs them.
    """

    def __init__(self, options: ServerOptions, install: TritonInstall | None = None, *,
                 say: Callable[[str], None] | None = None) -> None:
        self.options = options
        self._install = install
        self._run: _Run | None = None
        self._last: _Run | None = None
        self.version: str | None = None
        self.models: list[ModelStatus] = []
        self.say: Callable[[str], None] = say or log.warning
        self.stop_report: StopReport | None = None

    # -- addresses -------------------------------------------------------------------------
    @property
    def connect_host(self) -> str:
        """Where clients on this machine reach the server."""
        host = self.options.host
        return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    def _port(self, name: str) -> int:
        run = self._run or self._last
        if run is not None:
            return run.ports[name]
        port: int = getattr(self.options, f"{name}_port")
        if port == 0:
            raise ServingError(f"the {name} port is picked at start(); the server is not started")
        return port

    def _address(self, name: str) -> str:
        host = self.connect_host
        return f"[{host}]:{self._port(name)}" if ":" in host else f"{host}:{self._port(name)}"

    @property
    def http_port(self) -> int:
        return self._port("http")

    @property
    def grpc_port(self) -> int:
        return self._port("grpc")

    @property
    def metrics_port(self) -> int:
        return self._port("metrics")

    @property
    def http_address(self) -> str:
        """``host:port`` as tritonclient.http takes it."""
        return self._address("http")

    @property
    def grpc_address(self) -> str:
        """``host:port`` as tritonclient.grpc takes it."""
        return self._address("grpc")

    @property
    def url_http(self) -> str:
        return f"http://{self._address('http')}"

    @property
    def url_grpc(self) -> str:
        return f"grpc://{self._address('grpc')}"

    @property
    def url_metrics(self) -> str:
        return f"http://{self._address('metrics')}/metrics"

    @property
    def pid(self) -> int | None:
        """The process id (also its process group) of the running or last server."""
        run = self._run or self._last
        return run.proc.pid if run else None

    @property
    def log_path(self) -> Path | None:
        run = self._run or self._last
        return run.log_path if run else None

    def is_running(self) -> bool:
        return self._run is not None and self._run.proc.poll() is None

    @property
    def supervisor(self) -> supervision.Supervisor | None:
        """The managed server's supervisor (after wait_ready), else None."""
        return self._run.supervisor if self._run else None

    @property
    def shm_prefix(self) -> str | None:
        """This server's Python-backend shared-memory prefix (None: extra_args chose one)."""
        run = self._run or self._last
        return run.shm_prefix if run else None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> TritonServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Launch the server (returns at once; see wait_ready)."""
        if self._run is not None:
            raise ServingError("this TritonServer is already started")
        o = self.options
        if not o.repo.is_dir():
            raise ConfigError(f"model repository {o.repo} is not a directory")
        if o.tritonserver is not None:
            if not is_executable(Path(o.tritonserver)):
                raise ConfigError(f"tritonserver {o.tritonserver} is not an executable file")
            install = TritonInstall(Path(o.tritonserver), "options")
        else:
            install = self._install or find_tritonserver()
        ports = self._ports()
        swept = supervision.remove_shm_regions(supervision.stale_shm_regions())
        if swept:
            self.say(f"removed {swept} shared-memory region(s) of dead tritonllm servers")
        shm_prefix = None if o.shm_prefix_given else supervision.new_shm_prefix()
        if o.access is not None and o.access.admin is not None:
            admin_key: str | None = o.access.admin.reveal()
        elif o.managed and o.model_control_mode == "none":
            admin_key = secrets.token_hex(16)
        else:
            admin_key = None
        work_dir = Path(tempfile.mkdtemp(prefix="tritonllm-server-"))
        try:
            backend_dir = o.backend_dir
            if backend_dir is None and install.stubs_dir is not None:
                backend_dir = prepare_backend_dir(install, work_dir / "backends")
            argv = tritonserver_command(o, install.executable, ports=ports,
                                        backend_dir=backend_dir, cache_dir=install.caches_dir,
                                        shm_prefix=shm_prefix, admin_key=admin_key)
            log_path = Path(o.log_file) if o.log_file else work_dir / "tritonserver.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("wb") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=server_environment(install),
                                        start_new_session=True)
        except OSError as e:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise ServingError(f"cannot start {install.executable}: {e}") from e
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        run = _Run(proc, ports, work_dir, log_path, shm_prefix)
        run.finalizer = weakref.finalize(self, _kill_group, proc)
        self._run, self._last = run, None
        self.version, self.models, self.stop_report = None, [], None
        internal = f"http://127.0.0.1:{ports['triton_http']}" if o.managed else self.url_http
        inference = o.access.inference_key if o.access is not None else None
        run.admin = supervision.TritonAdmin(
            internal, self.url_metrics if o.metrics_enabled else None, admin_key,
            auth_headers("http", inference=inference))
        if o.managed:
            run.guard = HttpGuard(o.host, ports["http"], ("127.0.0.1", ports["triton_http"]),
                                  form_limit=o.http_form_limit, policy=self._guard_policy,
                                  extra_headers=self._guard_headers)
            try:
                run.guard.start()
            except OSError as e:
                self.stop()
                raise ServingError(f"port {ports['http']} (HTTP) is already in use on {o.host}: "
                                  f"{e.strerror}") from e

    def _guard_policy(self, head: Head) -> Refusal | None:
        """The guard's answers of its own (see tritonllm.http_guard)."""
        sup = self.supervisor
        if sup is None:  # starting: tritonserver answers (not ready while loading)
            return None
        if head.method == "GET" and head.path == "/v2/health/ready":
            reason = sup.health_reason
            return None if reason is None else Refusal(503, f"not ready: {reason}")
        if sup.draining and head.method == "POST" and _INFER_PATH.match(head.path):
            return Refusal(503, "Server is draining (shutting down): no new requests; retry "
                                "on another replica")
        return None

    def _guard_headers(self, head: Head) -> list[tuple[str, str]]:
        """The repository index stays readable over HTTP (the API is restricted to the launcher
        otherwise). Not with an access policy: there the index is an admin endpoint."""
        run = self._run
        if self.options.access is not None:
            return []
        key = run.admin.key if run and run.admin else None
        if key and head.method == "POST" and head.path == "/v2/repository/index":
            return [(supervision.ADMIN_HEADER, key)]
        return []

    def _ports(self) -> dict[str, int]:
        o = self.options
        wanted = {"http": o.http_port, "grpc": o.grpc_port, "metrics": o.metrics_port}
        labels = {"http": "HTTP", "grpc": "gRPC", "metrics": "metrics"}
        for name, port in wanted.items():
            if port and (name != "metrics" or o.metrics_enabled):
                _check_port_free(o.host, port, labels[name])
        ports = dict(wanted)
        with contextlib.ExitStack() as held:  # hold picked ports so the picks differ
            for name, port in wanted.items():
                if port == 0:
                    s = held.enter_context(_bound_socket(o.host, 0))
                    ports[name] = int(s.getsockname()[1])
            if o.managed:  # tritonserver's own HTTP endpoint, behind the guard
                s = held.enter_context(_bound_socket("127.0.0.1", 0))
                ports["triton_http"] = int(s.getsockname()[1])
        return ports

    def wait_ready(self, timeout: float | None = None,
                   progress: Callable[[str], None] | None = None) -> None:
        """Block until the server is up and every model it loads is READY.

        Polls every 0.1 s and watches the process. ``progress`` gets "loading model 'x'"-style
        lines from the log. On failure (a model's load error, a busy port, the process exiting,
        ``timeout`` seconds passing; default ``startup_timeout``) the server is stopped and a
        ServingError raised.
        """
        run = self._require_run()
        timeout = self.options.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        follower = LogFollower(run.log_path)
        try:
            while True:
                for message in follower.events():
                    if progress is not None:
                        progress(message)
                code = run.proc.poll()
                if code is not None:
                    raise self._exit_error(code)
                if self._ready_now():
                    self._supervise(run)
                    return
                if time.monotonic() >= deadline:
                    waiting = ", ".join(follower.pending) or ", ".join(
                        m.name for m in self.models if m.state != "READY")
                    still = f" (still loading: {waiting})" if waiting else ""
                    raise ServingError(f"tritonserver was not ready after {timeout:g}s{still}"
                                      + self._tail_note())
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.proc.wait(timeout=POLL_INTERVAL_S)
        except ServingError:
            run.keep_log = True
            self.stop()
            raise
        except BaseException:
            self.stop()
            raise

    def _supervise(self, run: _Run) -> None:
        if not self.options.managed or run.admin is None or run.supervisor is not None:
            return
        run.supervisor = supervision.Supervisor(
            run.admin, run.proc.pid, self.say, is_running=self.is_running,
            load_timeout=self.options.startup_timeout)
        run.supervisor.start([m.name for m in self.models if m.state == "READY"])

    def _ready_now(self) -> bool:
        """One poll: True when ready; raises ServingError for models that failed to load."""
        admin = self._require_run().admin
        assert admin is not None
        health = admin.request("/v2/health/ready", timeout=2.0)
        if health is None:
            return False
        rows = admin.index()
        if rows is None:
            return False
        self.models = [ModelStatus.from_json(row) for row in rows]
        failed = [m for m in self.models if m.failed]
        if failed:
            raise ServingError(failure_message(failed) + self._tail_note())
        if health[0] != 200 or any(m.state not in (None, "READY") for m in self.models):
            return False
        never = [m.name for m in self.models if m.state is None]
        if never and self.options.loads_all_at_start:
            # In mode "none" every model is loaded at start; one that never got a state was
            # refused when its directory was polled (bad config), which the index does not say.
            reasons = poll_failures_from_log(self._log_text())
            detail = "; ".join(f"'{n}': {reasons.get(n, 'not loaded (see the log)')}"
                               for n in never)
            raise ServingError(f"{len(never)} model(s) did not load: {detail}" + self._tail_note())
        if self.options.metrics_enabled:
            metrics = _http(self.url_metrics)
            if metrics is None or metrics[0] != 200:
                return False
        meta = admin.request("/v2", timeout=2.0)
        if meta is not None and meta[0] == 200:
            self.version = json.loads(meta[1]).get("version")
        return True

    def _exit_error(self, code: int) -> ServingError:
        text = self._log_text()
        busy = busy_port_from_log(text)
        if busy:
            return ServingError(busy + self._tail_note())
        failed = load_failures_from_log(text)
        if failed:
            return ServingError(failure_message(failed) + self._tail_note())
        last = last_error_line(text)
        return ServingError(f"tritonserver {describe_exit(code)} before it was ready"
                           + (f": {last}" if last else "") + self._tail_note())

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits (or ``timeout``: ServingError); its exit code.

        Managed: a ServingError also when the supervisor gave up on a model (``fatal``).
        """
        run = self._require_run()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if run.supervisor is not None and run.supervisor.fatal:
                raise ServingError(run.supervisor.fatal)
            step = POLL_INTERVAL_S * 5
            if deadline is not None:
                step = min(step, max(0.0, deadline - time.monotonic()))
            try:
                return run.proc.wait(timeout=step)
            except subprocess.TimeoutExpired as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ServingError(f"tritonserver still running after {timeout:g}s") from e

    def hurry(self) -> None:
        """Cut a drain in progress short (a second signal to ``tritonllm serve``)."""
        sup = self.supervisor
        if sup is not None:
            sup.hurry()

    def stop(self, grace: float | None = None) -> int | None:
        """Stop the server (idempotent); its exit code, None if it was never started.

        The temporary folder is removed; a log in it is kept if the server had failed or had
        exited by itself.
        """
        run = self._run
        if run is None:
            return self._last.proc.returncode if self._last else None
        proc = run.proc
        grace = self.options.stop_timeout if grace is None else grace
        t0 = time.monotonic()
        drain: supervision.DrainResult | None = None
        gave_up = False
        killed = 0
        held: list[str] = []
        try:
            if proc.poll() is None:
                sup = run.supervisor
                if sup is not None and self.options.drain_timeout > 0:
                    self.say(f"draining: readiness is false, new requests are refused; waiting "
                             f"up to {self.options.drain_timeout:g}s for those in flight")
                    drain = sup.drain(self.options.drain_timeout)
                    held = sup.unload_all(grace)  # tritonserver's exit timeout is short
                if sup is not None:
                    sup.close()
                gave_up = self._signal_and_wait(run, grace)
            else:
                run.keep_log = True
        finally:
            if run.supervisor is not None:
                run.supervisor.close()
            killed = _kill_group(proc)
            if run.guard is not None:
                run.guard.close()
            removed = 0
            if run.shm_prefix and not _live_group_members(proc.pid):
                removed = supervision.remove_shm_regions(
                    supervision.SHM_DIR.glob(run.shm_prefix + "*"))
            if run.finalizer is not None:
                run.finalizer.detach()
            keep = run.keep_log and run.log_path.parent == run.work_dir
            shutil.rmtree(run.work_dir / "backends" if keep else run.work_dir, ignore_errors=True)
            self._run, self._last = None, run
            self.stop_report = StopReport(proc.returncode, time.monotonic() - t0, drain,
                                          gave_up, killed, removed, tuple(held))
        return proc.returncode

    def _signal_and_wait(self, run: _Run, grace: float) -> bool:
        """SIGINT, then wait up to ``grace`` (SIGTERM after it); True if tritonserver's exit
        timeout expired. A server that says so and then hangs in exit is left to the kill."""
        proc = run.proc
        offset = self._log_size()
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        gave_up_at: float | None = None
        while True:
            try:
                proc.wait(timeout=POLL_INTERVAL_S * 5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if gave_up_at is None and supervision.gave_up_in_log(self._log_text()[offset:]):
                gave_up_at = now
            if now >= deadline or (gave_up_at is not None and now - gave_up_at >= GAVE_UP_GRACE_S):
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=KILL_WAIT_S if gave_up_at is None else POLL_INTERVAL_S)
                break
        return gave_up_at is not None or supervision.gave_up_in_log(self._log_text()[offset:])

    def _log_size(self) -> int:
        return len(self._log_text())

    # -- logs ------------------------------------------------------------------------------
    def _require_run(self) -> _Run:
        if self._run is None:
            raise ServingError("tritonserver is not started")
        return self._run

    def _log_text(self) -> str:
        path = self.log_path
        try:
            return path.read_text("utf-8", "replace") if path else ""
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log."""
        return "\n".join(self._log_text().splitlines()[-lines:])

    def _tail_note(self) -> str:
        tail = self.log_tail()
        return f"\n--- last lines of {self.log_path} ---\n{tail}" if tail else ""
