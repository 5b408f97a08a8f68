"""Find, prepare and run ``tritonserver``; wait until its models are ready; stop it cleanly.

Standard library only (no tritonclient): the CLI imports this module for ``tritonllm serve``.

Which binary (:func:`find_tritonserver`): ``$TRITONSERVER``, else ``tritonserver`` on ``PATH``
(the NGC container), else the Triton 2.51 build inside the ``nvidia-pytriton`` wheel.

The wheel's build (a "wheel layout": ``bin/tritonserver`` next to ``python_backend_stubs/3.X/``)
is made runnable here by

- a backend directory whose ``python/`` backend holds the ``triton_python_backend_stub`` built
  for the running Python (:func:`prepare_backend_dir`: symlinks into the wheel, in the server's
  temporary work directory);
- ``LD_LIBRARY_PATH`` starting with the wheel's ``nvidia_pytriton.libs``
  (:func:`server_environment`).

For every binary the directory of ``sys.executable`` (the venv's ``bin``) comes first on ``PATH``:
the Python stub finds its interpreter, and so the venv's packages, through ``PATH``.

:class:`TritonServer` runs one server in its own process group with stdout and stderr in a log
file, passes ``--exit-on-error=false`` so a model that fails to load is listed with its error in
the repository index, and polls ``/v2/health/ready`` and ``POST /v2/repository/index`` until
every model is READY. Every failure is a :class:`~tritonllm.errors.ServerError` whose first line
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
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tritonllm import supervision
from tritonllm.errors import ConfigError, ServerError
from tritonllm.http_guard import FORM_BODY_LIMIT, Head, HttpGuard, Refusal

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

MODEL_CONTROL_MODES = ("none", "poll", "explicit")
STUB_NAME = supervision.STUB_NAME
POLL_INTERVAL_S = 0.1
KILL_WAIT_S = 5.0
ORPHAN_WAIT_S = 1.5  # a stub whose tritonserver is gone exits by itself (it checks every 0.3 s)
GAVE_UP_GRACE_S = 3.0  # after Triton's "Exiting immediately", before it is killed
MANAGED_EXIT_TIMEOUT_S = 5  # managed: --exit-timeout-secs (the launcher unloads models first)
LOG_TAIL_LINES = 30
SHM_PREFIX_FLAG = "shm-region-prefix-name"
_INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/(infer|generate|generate_stream)$")

log = logging.getLogger(__name__)

# tritonserver flags that ServerOptions sets: passing them in extra_args too is a ConfigError.
_OWNED = {"repo": "the REPO argument (ServerOptions.repo)"}
_OWNED.update({f: f"--{f.replace('_', '-')} (ServerOptions.{f})" for f in (
    "http_port", "grpc_port", "metrics_port", "host", "log_verbose", "model_control_mode",
    "backend_dir", "log_file")})
_MANAGED_FLAGS = {
    "--model-repository": _OWNED["repo"], "--model-store": _OWNED["repo"],
    "--http-port": _OWNED["http_port"], "--grpc-port": _OWNED["grpc_port"],
    "--metrics-port": _OWNED["metrics_port"], "--http-address": _OWNED["host"],
    "--grpc-address": _OWNED["host"], "--metrics-address": _OWNED["host"],
    "--log-verbose": _OWNED["log_verbose"], "--model-control-mode": _OWNED["model_control_mode"],
    "--backend-directory": _OWNED["backend_dir"], "--log-file": _OWNED["log_file"],
}


# ---------------------------------------------------------------------------------------------
# Finding and preparing the binary


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` executable and where it was found ("$TRITONSERVER", "PATH", "wheel")."""

    executable: Path
    source: str

    @property
    def root(self) -> Path:
        """The install's top folder (``bin/..``), following symlinks to the real binary."""
        return self.executable.resolve().parent.parent

    @property
    def stubs_dir(self) -> Path | None:
        """``python_backend_stubs/`` of a wheel layout; None for other installs."""
        d = self.root / "python_backend_stubs"
        return d if d.is_dir() else None

    @property
    def libs_dir(self) -> Path | None:
        """The wheel's ``nvidia_pytriton.libs`` (next to the ``pytriton`` package), if any."""
        if self.stubs_dir is None:
            return None
        d = self.root.parent.parent / "nvidia_pytriton.libs"
        return d if d.is_dir() else None

    @property
    def caches_dir(self) -> Path | None:
        """The wheel's response-cache implementations (``caches/``), if any."""
        d = self.root / "caches"
        return d if self.stubs_dir is not None and d.is_dir() else None

    def stub_versions(self) -> list[str]:
        """The Python versions ("3.11", ...) the install has a backend stub for."""
        if self.stubs_dir is None:
            return []
        found = [d.name for d in self.stubs_dir.iterdir() if (d / STUB_NAME).is_file()]
        return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def wheel_tritonserver() -> Path | None:
    """The ``tritonserver`` inside the installed ``nvidia-pytriton`` wheel (not imported)."""
    try:
        spec = find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        exe = Path(location) / "tritonserver" / "bin" / "tritonserver"
        if _is_executable(exe):
            return exe
    return None


def find_tritonserver(environ: Mapping[str, str] | None = None) -> TritonInstall:
    """``$TRITONSERVER``, else ``tritonserver`` on ``PATH``, else the nvidia-pytriton wheel's."""
    env = os.environ if environ is None else environ
    override = env.get("TRITONSERVER")
    if override:
        exe = Path(override).expanduser()
        if not _is_executable(exe):
            raise ConfigError(f"$TRITONSERVER={override} is not an executable file")
        return TritonInstall(exe, "$TRITONSERVER")
    on_path = shutil.which("tritonserver", path=env.get("PATH", os.defpath))
    if on_path:
        return TritonInstall(Path(on_path), "PATH")
    wheel = wheel_tritonserver()
    if wheel is not None:
        return TritonInstall(wheel, "wheel")
    raise ServerError("no tritonserver found: set $TRITONSERVER, put tritonserver on PATH, "
                      "or pip install 'tritonllm[serve]' (the nvidia-pytriton wheel ships one)")


def _link(src: Path, dst: Path) -> None:
    """Symlink ``dst`` -> ``src`` (replacing ``dst``); copy where symlinks are not allowed."""
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    try:
        dst.symlink_to(src, target_is_directory=src.is_dir())
    except OSError:
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def prepare_backend_dir(install: TritonInstall, dest: Path | None = None, *,
                        python: Sequence[int] | None = None) -> Path:
    """Make a backend directory for a wheel-layout ``install`` and return it.

    ``dest`` (default: a new temporary folder, the caller removes it) gets one folder per backend
    in the wheel, its files symlinked (copied where symlinks fail), plus the
    ``triton_python_backend_stub`` built for ``python`` (default: the running interpreter).
    Preparing the same ``dest`` again refreshes it.
    """
    major, minor = tuple(python if python is not None else sys.version_info[:2])[:2]
    version = f"{major}.{minor}"
    if install.stubs_dir is None:
        raise ServerError(f"{install.executable} has no python_backend_stubs/ next to it; "
                          "give its backend directory instead (backend_dir)")
    stub = install.stubs_dir / version / STUB_NAME
    if not stub.is_file():
        have = ", ".join(install.stub_versions()) or "none"
        raise ServerError(f"the tritonserver at {install.executable} has no Python backend stub "
                          f"for Python {version} (it has: {have}); run tritonllm under one of "
                          "those Python versions")
    backends = install.root / "backends"
    if not (backends / "python").is_dir():
        raise ServerError(f"{backends}/python is missing: the nvidia-pytriton install is broken")
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="tritonllm-backends-"))
    for backend in sorted(p for p in backends.iterdir() if p.is_dir()):
        target = dest / backend.name
        target.mkdir(parents=True, exist_ok=True)
        for item in backend.iterdir():
            if item.name not in ("__pycache__", STUB_NAME):
                _link(item, target / item.name)
    _link(stub, dest / "python" / STUB_NAME)
    return dest


def _prepend_paths(first: str, rest: str | None) -> str:
    parts = [p for p in (rest or "").split(os.pathsep) if p and p != first]
    return os.pathsep.join([first, *parts])


def server_environment(install: TritonInstall,
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``tritonserver`` runs in: ``environ`` (default ``os.environ``) with

    - ``PATH`` starting with the running interpreter's ``bin`` (how the stub finds the venv), and
    - ``LD_LIBRARY_PATH`` starting with the running interpreter's own ``libpython`` directory
      and the wheel's ``nvidia_pytriton.libs`` (wheel layout only). The stub links
      ``libpython3.X.so.1.0``; without the first entry it may pick the system's copy, whose
      patch level differs from the interpreter's extension modules (``_ssl`` then fails to
      import with an undefined symbol).
    """
    env = dict(os.environ if environ is None else environ)
    env["PATH"] = _prepend_paths(str(Path(sys.executable).parent), env.get("PATH", os.defpath))
    if install.libs_dir is not None:
        env["LD_LIBRARY_PATH"] = _prepend_paths(str(install.libs_dir), env.get("LD_LIBRARY_PATH"))
        libdir = sysconfig.get_config_var("LIBDIR")
        soname = sysconfig.get_config_var("INSTSONAME")
        if libdir and soname and (Path(libdir) / str(soname)).exists():
            env["LD_LIBRARY_PATH"] = _prepend_paths(str(libdir), env["LD_LIBRARY_PATH"])
    return env


_POLL_FAILED = re.compile(r"Poll failed for model directory '([^']+)': ([^\"\n]+)")


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
        raise ServerError(f"port {port} ({service}) is already in use on {host}: {e.strerror}"
                          ) from e


# ---------------------------------------------------------------------------------------------
# Options and the command line


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The last value given to ``flag`` (``--f=v`` or ``--f v``) in ``args``."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class ServerOptions:
    """How to run one ``tritonserver``. Ports: 0 picks a free one at start."""

    repo: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "0.0.0.0"  # address all three endpoints listen on (tritonserver's default)
    log_verbose: int = 0
    model_control_mode: str = "none"
    extra_args: tuple[str, ...] = ()  # appended to tritonserver's command line
    startup_timeout: float = 300.0  # seconds until every model must be READY
    stop_timeout: float = 45.0  # grace after SIGINT before SIGTERM, then SIGKILL
    backend_dir: Path | None = None  # use as is instead of preparing one
    log_file: Path | None = None  # default: in the server's temporary folder
    tritonserver: Path | None = None  # the binary; default: find_tritonserver()
    managed: bool = False  # guard, stub watch, drain (see the module docstring)
    drain_timeout: float = 30.0  # managed: seconds a stop waits for requests in flight
    http_form_limit: int = FORM_BODY_LIMIT  # managed: form-encoded bodies from this size: 413

    def __post_init__(self) -> None:
        object.__setattr__(self, "repo", Path(self.repo))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be 0 (pick a free port) to 65535, got {port!r}")
        fixed = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if p]
        if len(set(fixed)) != len(fixed):
            raise ConfigError(f"http_port, grpc_port and metrics_port must differ, got {fixed}")
        if self.log_verbose < 0:
            raise ConfigError(f"log_verbose must be 0 or more, got {self.log_verbose}")
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ConfigError(f"model_control_mode must be one of {', '.join(MODEL_CONTROL_MODES)}"
                              f", got {self.model_control_mode!r}")
        for name in ("startup_timeout", "stop_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.drain_timeout >= 0:
            raise ConfigError(f"drain_timeout must be 0 or more, got {self.drain_timeout!r}")
        if isinstance(self.http_form_limit, bool) or not self.http_form_limit >= 1:
            raise ConfigError(f"http_form_limit must be positive, got {self.http_form_limit!r}")
        if self.managed and self.model_control_mode == "poll":
            raise ConfigError("managed serving loads and unloads models itself (explicit model "
                              "control): it cannot run with model_control_mode 'poll'")
        if self.managed and self.model_control_mode == "none" and any(
                "model-repository" in (_flag_value(self.extra_args, f) or "")
                for f in ("--http-restricted-api", "--grpc-restricted-protocol")):
            raise ConfigError("managed serving restricts the model-repository API to itself; "
                              "drop that restriction, or pass model_control_mode 'explicit'")
        for arg in self.extra_args:
            flag = arg.split("=", 1)[0]
            if flag in _MANAGED_FLAGS:
                raise ConfigError(f"tritonserver argument {flag} is managed by tritonllm: use "
                                  f"{_MANAGED_FLAGS[flag]} instead")
            if flag == "--allow-http":
                raise ConfigError("tritonserver argument --allow-http is managed by tritonllm: "
                                  "it polls readiness over HTTP")

    @property
    def metrics_enabled(self) -> bool:
        value = _flag_value(self.extra_args, "--allow-metrics")
        return value is None or value.lower() not in ("false", "0", "off", "no")

    @property
    def shm_prefix_given(self) -> bool:
        """Whether extra_args set the Python backend's shared-memory prefix themselves."""
        return any(SHM_PREFIX_FLAG in a for a in self.extra_args)

    @property
    def loads_all_at_start(self) -> bool:
        """Every model is asked to load at start (mode none, or managed without --load-model)."""
        return self.model_control_mode == "none" and (
            not self.managed or _flag_value(self.extra_args, "--load-model") is None)


def tritonserver_command(options: ServerOptions, executable: Path, *, ports: Mapping[str, int],
                         backend_dir: Path | None = None, cache_dir: Path | None = None,
                         shm_prefix: str | None = None,
                         admin_key: str | None = None) -> list[str]:
    """The argv for ``options``; ``ports`` maps "http", "grpc", "metrics" to real ports.

    Managed (``ports`` then also has "triton_http"): tritonserver's HTTP endpoint listens on
    127.0.0.1 at that port (the guard has "http"), with explicit model control, every model
    loaded at start, and, given ``admin_key``, the model-repository API restricted to it.
    """
    o = options
    http_host, http_port = o.host, ports["http"]
    mode = o.model_control_mode
    if o.managed:
        http_host, http_port, mode = "127.0.0.1", ports["triton_http"], "explicit"
    argv = [str(executable), f"--model-repository={o.repo.resolve()}",
            f"--http-address={http_host}", f"--http-port={http_port}",
            f"--grpc-address={o.host}", f"--grpc-port={ports['grpc']}",
            f"--metrics-address={o.host}", f"--metrics-port={ports['metrics']}",
            f"--model-control-mode={mode}", f"--log-verbose={o.log_verbose}"]
    if o.managed and _flag_value(o.extra_args, "--load-model") is None:
        argv.append("--load-model=*")
    if o.managed and _flag_value(o.extra_args, "--exit-timeout-secs") is None:
        argv.append(f"--exit-timeout-secs={MANAGED_EXIT_TIMEOUT_S}")
    if o.managed and admin_key is not None:
        restriction = f"model-repository:{supervision.ADMIN_HEADER}={admin_key}"
        argv += [f"--http-restricted-api={restriction}",
                 f"--grpc-restricted-protocol={restriction}"]
    if shm_prefix is not None:
        argv.append(f"--backend-config=python,{SHM_PREFIX_FLAG}={shm_prefix}")
    if backend_dir is not None:
        argv.append(f"--backend-directory={backend_dir}")
    if cache_dir is not None and _flag_value(o.extra_args, "--cache-directory") is None:
        argv.append(f"--cache-directory={cache_dir}")
    if _flag_value(o.extra_args, "--exit-on-error") is None:
        # keep serving with a failed model so the repository index reports its error
        argv.append("--exit-on-error=false")
    return [*argv, *o.extra_args]


# ---------------------------------------------------------------------------------------------
# Reading the server's state: HTTP and the log


@dataclass(frozen=True)
class ModelStatus:
    """One row of the repository index. ``state`` is None for a model never asked to load."""

    name: str
    version: str | None = None
    state: str | None = None
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.state == "UNAVAILABLE" and bool(self.reason) and self.reason != "unloaded"

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ModelStatus:
        return cls(name=str(row.get("name", "?")), version=row.get("version"),
                   state=row.get("state"), reason=str(row.get("reason", "")))


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


_LOADING_RE = re.compile(r'"loading: (?P<name>[^"]+):(?P<version>\d+)"')
_LOADED_RE = re.compile(r"successfully loaded '(?P<name>[^']+)'")
_FAILED_RE = re.compile(r"failed to load '(?P<name>[^']+)' version (?P<version>\d+): "
                        r'(?P<reason>.*?)"?\s*$')
_BUSY_RE = re.compile(r"failed to start (?P<service>\w+) service:.*?Socket '(?P<address>[^']*)'"
                      r" already in use", re.IGNORECASE)


def load_failures_from_log(text: str) -> list[ModelStatus]:
    """Models the log says failed to load, with their errors (the last one per model)."""
    failures: dict[str, ModelStatus] = {}
    for line in text.splitlines():
        m = _FAILED_RE.search(line)
        if m:
            failures[m["name"]] = ModelStatus(m["name"], m["version"], "UNAVAILABLE",
                                              m["reason"].replace("\\n", "\n"))
    return list(failures.values())


def busy_port_from_log(text: str) -> str | None:
    """A one-line message if the log says an endpoint could not bind its port."""
    m = _BUSY_RE.search(text)
    if m is None:
        return None
    host, _, port = m["address"].rpartition(":")
    service = {"http": "HTTP", "grpc": "gRPC"}.get(m["service"].lower(), m["service"])
    return f"port {port} ({service}) is already in use on {host}"


def _failure_message(failed: Sequence[ModelStatus]) -> str:
    def first(reason: str) -> str:
        return next((line.strip() for line in reason.splitlines() if line.strip()), "no reason")

    if len(failed) == 1:
        head = f"model '{failed[0].name}' failed to load: {first(failed[0].reason)}"
    else:
        head = f"{len(failed)} models failed to load: " + "; ".join(
            f"'{m.name}': {first(m.reason)}" for m in failed)
    details = "\n".join(f"--- {m.name} (version {m.version}) ---\n{m.reason.rstrip()}"
                        for m in failed)
    return f"{head}\n{details}"


def describe_exit(code: int) -> str:
    """'exited with code 1' / 'was killed by SIGKILL' for a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _last_error_line(text: str) -> str | None:
    """tritonserver's fatal "error: ..." line, else its last E-level log line."""
    lines = [ln.strip() for ln in reversed(text.splitlines())]
    fatal = [ln for ln in lines if ln.startswith("error:")]
    logged = [ln for ln in lines if re.match(r"E\d{4} ", ln)]
    return next(iter(fatal or logged), None)


class _LogFollower:
    """Reads the log as it grows; turns load lines into progress messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending: dict[str, None] = {}  # models loading, in order

    def events(self) -> Iterator[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            if m := _LOADING_RE.search(line):
                self.pending[m["name"]] = None
                yield f"loading model '{m['name']}' (version {m['version']})"
            elif m := _LOADED_RE.search(line):
                self.pending.pop(m["name"], None)
                yield f"loaded model '{m['name']}'"
            elif m := _FAILED_RE.search(line):
                self.pending.pop(m["name"], None)


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
    failure). A ServerError from ``start`` or ``wait_ready`` means the server has been stopped.
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
            raise ServerError(f"the {name} port is picked at start(); the server is not started")
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
            raise ServerError("this TritonServer is already started")
        o = self.options
        if not o.repo.is_dir():
            raise ConfigError(f"model repository {o.repo} is not a directory")
        if o.tritonserver is not None:
            if not _is_executable(Path(o.tritonserver)):
                raise ConfigError(f"tritonserver {o.tritonserver} is not an executable file")
            install = TritonInstall(Path(o.tritonserver), "options")
        else:
            install = self._install or find_tritonserver()
        ports = self._ports()
        swept = supervision.remove_shm_regions(supervision.stale_shm_regions())
        if swept:
            self.say(f"removed {swept} shared-memory region(s) of dead tritonllm servers")
        shm_prefix = None if o.shm_prefix_given else supervision.new_shm_prefix()
        admin_key = secrets.token_hex(16) if o.managed and o.model_control_mode == "none" else None
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
            raise ServerError(f"cannot start {install.executable}: {e}") from e
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        run = _Run(proc, ports, work_dir, log_path, shm_prefix)
        run.finalizer = weakref.finalize(self, _kill_group, proc)
        self._run, self._last = run, None
        self.version, self.models, self.stop_report = None, [], None
        internal = f"http://127.0.0.1:{ports['triton_http']}" if o.managed else self.url_http
        run.admin = supervision.TritonAdmin(
            internal, self.url_metrics if o.metrics_enabled else None, admin_key)
        if o.managed:
            run.guard = HttpGuard(o.host, ports["http"], ("127.0.0.1", ports["triton_http"]),
                                  form_limit=o.http_form_limit, policy=self._guard_policy,
                                  extra_headers=self._guard_headers)
            try:
                run.guard.start()
            except OSError as e:
                self.stop()
                raise ServerError(f"port {ports['http']} (HTTP) is already in use on {o.host}: "
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
        """The repository index stays readable over HTTP (the API is restricted otherwise)."""
        run = self._run
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
        ServerError raised.
        """
        run = self._require_run()
        timeout = self.options.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        follower = _LogFollower(run.log_path)
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
                    raise ServerError(f"tritonserver was not ready after {timeout:g}s{still}"
                                      + self._tail_note())
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.proc.wait(timeout=POLL_INTERVAL_S)
        except ServerError:
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
        """One poll: True when ready; raises ServerError for models that failed to load."""
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
            raise ServerError(_failure_message(failed) + self._tail_note())
        if health[0] != 200 or any(m.state not in (None, "READY") for m in self.models):
            return False
        never = [m.name for m in self.models if m.state is None]
        if never and self.options.loads_all_at_start:
            # In mode "none" every model is loaded at start; one that never got a state was
            # refused when its directory was polled (bad config), which the index does not say.
            reasons = dict(_POLL_FAILED.findall(self._log_text()))
            detail = "; ".join(f"'{n}': {reasons.get(n, 'not loaded (see the log)')}"
                               for n in never)
            raise ServerError(f"{len(never)} model(s) did not load: {detail}" + self._tail_note())
        if self.options.metrics_enabled:
            metrics = _http(self.url_metrics)
            if metrics is None or metrics[0] != 200:
                return False
        meta = admin.request("/v2", timeout=2.0)
        if meta is not None and meta[0] == 200:
            self.version = json.loads(meta[1]).get("version")
        return True

    def _exit_error(self, code: int) -> ServerError:
        text = self._log_text()
        busy = busy_port_from_log(text)
        if busy:
            return ServerError(busy + self._tail_note())
        failed = load_failures_from_log(text)
        if failed:
            return ServerError(_failure_message(failed) + self._tail_note())
        last = _last_error_line(text)
        return ServerError(f"tritonserver {describe_exit(code)} before it was ready"
                           + (f": {last}" if last else "") + self._tail_note())

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits (or ``timeout``: ServerError); its exit code.

        Managed: a ServerError also when the supervisor gave up on a model (``fatal``).
        """
        run = self._require_run()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if run.supervisor is not None and run.supervisor.fatal:
                raise ServerError(run.supervisor.fatal)
            step = POLL_INTERVAL_S * 5
            if deadline is not None:
                step = min(step, max(0.0, deadline - time.monotonic()))
            try:
                return run.proc.wait(timeout=step)
            except subprocess.TimeoutExpired as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ServerError(f"tritonserver still running after {timeout:g}s") from e

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
            raise ServerError("tritonserver is not started")
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
