"""``tritonllm launch``: the containers' entrypoint, a plain program (docs/deploy.md).

One start of a container, in order:

1. **Build, or reuse the cache.** The engine lives in the cache volume at
   ``<cache_dir>/engines/<name>``; :func:`tritonllm.builders.build` compares the checkpoint's
   content, the build arguments and the tool versions with the manifest already there and
   rebuilds only when one differs. An exclusive lock on ``<cache_dir>/engines/<name>.lock``
   makes pods that share the volume (ReadWriteMany) build once: the others wait, then hit.
2. **Render** the repository into ``repo_dir`` (a writable emptyDir in a pod), referencing the
   engine in the cache instead of copying it.
3. **Validate** it (``tritonllm validate``); any problem stops the start with the first ones.
4. **exec** the server, so the container's PID 1 is the server and SIGTERM reaches it:
   managed (default) ``tritonllm serve`` — it drains with readiness false, then stops
   tritonserver; unmanaged, ``tritonserver`` itself with ``--exit-timeout-secs``.

Keys and TLS (``server.admin_key_file``, ``inference_key_file``, ``no_auth``, ``tls``): a
managed server gets the paths (``tritonllm serve --admin-key-file ...`` reads them); for a bare
tritonserver, launch reads the keys itself (:func:`tritonllm.security.read_secret`) and puts the
restrictions on its command line, as Triton takes them: that argv holds the keys' values, so
:meth:`LaunchPlan.shown` masks them.

Tests run this very function outside a container against the CPU target, with ``exec``
replaced by a subprocess only where they must observe it (tests/integration/test_launch.py
runs the real command and signals the process it became).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn

from tritonllm.deployment import Deployment, ServerSection
from tritonllm.errors import ConfigError, RepositoryError
from tritonllm.security import (
    ADMIN_KEY_ENV,
    INFERENCE_KEY_ENV,
    AccessPolicy,
    TlsSettings,
    read_secret,
)

__all__ = ["LaunchPlan", "access_policy", "exec_server", "launch", "prepare", "server_argv",
           "tls_settings"]

Say = Callable[[str], None]
# A restriction flag's key (``--http-restricted-api=GROUPS:HEADER=KEY``): what shown() masks.
_RESTRICTION_KEY = re.compile(r"^(--(?:http-restricted-api|grpc-restricted-protocol)=[^=]*=).+$")


@dataclass(frozen=True)
class LaunchPlan:
    """What a start resolved to: the paths used and the server command to exec."""

    engine_dir: Path
    repo_dir: Path
    cached: bool
    argv: tuple[str, ...]
    env: dict[str, str]

    def shown(self) -> str:
        """The command as it may be printed or logged: the keys of tritonserver's restriction
        flags (an unmanaged server's argv holds them) replaced by ``***``."""
        return " ".join(_RESTRICTION_KEY.sub(r"\1***", a) for a in self.argv)


@contextlib.contextmanager
def _build_lock(engine_dir: Path, say: Say) -> Iterator[None]:
    engine_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = engine_dir.parent / f"{engine_dir.name}.lock"
    with open(lock_path, "a+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            say(f"another start holds {lock_path}: waiting for its build")
            fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def access_policy(s: ServerSection, environ: Mapping[str, str] = os.environ) -> AccessPolicy:
    """The server section's keys, read now (from the files, else ``$TRITONLLM_ADMIN_KEY`` /
    ``$TRITONLLM_INFERENCE_KEY``, as ``tritonllm serve`` reads them)."""
    if s.no_auth:
        return AccessPolicy(no_auth=True)
    return AccessPolicy(
        admin_key=read_secret(_path(s.admin_key_file), ADMIN_KEY_ENV, "server.admin_key_file",
                              environ),
        inference_key=read_secret(_path(s.inference_key_file), INFERENCE_KEY_ENV,
                                  "server.inference_key_file", environ))


def tls_settings(s: ServerSection) -> TlsSettings | None:
    """The server section's gRPC TLS; ConfigError naming the field whose file is missing."""
    if s.tls is None:
        return None
    for name in ("cert", "key", "ca"):
        path = getattr(s.tls, name)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"server.tls.{name}: {path} is not a file")
    return TlsSettings(Path(str(s.tls.cert)), Path(str(s.tls.key)), _path(s.tls.ca))


def _path(p: PurePosixPath | None) -> Path | None:
    return None if p is None else Path(p)


def _serve_security_args(s: ServerSection) -> list[str]:
    """``tritonllm serve``'s options for the keys and TLS (paths only: serve reads them)."""
    args = []
    for flag, path in (("--admin-key-file", s.admin_key_file),
                       ("--inference-key-file", s.inference_key_file)):
        if path is not None:
            args += [flag, str(path)]
    if s.no_auth:
        args.append("--no-auth")
    if s.tls is not None:
        for name in ("cert", "key", "ca"):
            path = getattr(s.tls, name)
            if path is not None:
                args += [f"--tls-{name}", str(path)]
    return args


def server_argv(deployment: Deployment, repo_dir: Path,
                work_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The command the container becomes, and its environment.

    Managed, the keys and TLS go to ``tritonllm serve`` as paths; unmanaged, the argv holds
    the keys' values (print it with :meth:`LaunchPlan.shown`)."""
    s = deployment.server
    if s.managed:
        argv = [sys.executable, "-m", "tritonllm", "serve", str(repo_dir),
                "--host", s.host,
                "--http-port", str(s.http_port), "--grpc-port", str(s.grpc_port),
                "--metrics-port", str(s.metrics_port), *_serve_security_args(s),
                "--model-control-mode", s.model_control_mode,
                "--timeout", f"{s.startup_timeout:g}", "--drain-timeout", f"{s.drain_timeout:g}",
                "--log-verbose", str(s.log_verbose)]
        if s.args:
            argv += ["--", *s.args]
        return argv, dict(os.environ)
    from tritonllm.triton_binary import find_tritonserver, prepare_backend_dir, server_environment
    from tritonllm.triton_command import ServerOptions, tritonserver_command

    options = ServerOptions(repo=repo_dir, host=s.host, http_port=s.http_port,
                            grpc_port=s.grpc_port, metrics_port=s.metrics_port,
                            log_verbose=s.log_verbose, model_control_mode=s.model_control_mode,
                            extra_args=(f"--exit-timeout-secs={s.exit_timeout}", *s.args),
                            access=access_policy(s), tls=tls_settings(s))
    install = find_tritonserver()
    backend_dir = None
    if install.stubs_dir is not None:  # the nvidia-pytriton wheel (CPU image): prepare it
        backend_dir = prepare_backend_dir(install, work_dir / "backends")
    argv = tritonserver_command(options, install.executable,
                                ports={"http": s.http_port, "grpc": s.grpc_port,
                                       "metrics": s.metrics_port},
                                backend_dir=backend_dir, cache_dir=install.caches_dir)
    return argv, server_environment(install)


def prepare(deployment: Deployment, *, checkpoint: Path | None = None,
            cache_dir: Path | None = None, repo_dir: Path | None = None,
            force_build: bool = False, say: Say = lambda _m: None) -> LaunchPlan:
    """Steps 1-3 (build or hit, render, validate) and the command of step 4."""
    from tritonllm.builders import build
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository

    settings = deployment.build_settings(checkpoint=checkpoint, cache_dir=cache_dir,
                                         force=force_build)
    engine_dir = Path(settings.out)
    repo = Path(repo_dir or deployment.repo_dir)
    t0 = time.perf_counter()
    with _build_lock(engine_dir, say):
        result = build(settings, progress=say)
    say(f"engine {engine_dir}: " + (f"cache hit ({result.manifest.cache_key[:12]})"
                                    if result.cached else
                                    f"built in {time.perf_counter() - t0:.1f}s"))
    render_repository(engine_dir, repo, deployment.repo_settings(engine_dir, repo),
                      progress=say)
    problems = validate_repository(repo)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        raise RepositoryError(f"{repo}: {len(problems)} validation problem(s): {shown}")
    say(f"repository {repo}: valid")
    argv, env = server_argv(deployment, repo, repo.parent / f".{repo.name}.server")
    return LaunchPlan(engine_dir, repo, result.cached, tuple(argv), env)


def exec_server(argv: Sequence[str], env: dict[str, str]) -> NoReturn:
    """Become the server (same PID), so the signals sent to the container reach it."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], list(argv), env)
    except OSError as e:
        raise ConfigError(f"cannot exec {argv[0]}: {e.strerror}") from e


def launch(deployment: Deployment, *, checkpoint: Path | None = None,
           cache_dir: Path | None = None, repo_dir: Path | None = None,
           force_build: bool = False, say: Say = lambda _m: None) -> NoReturn:
    """:func:`prepare`, then :func:`exec_server`: never returns."""
    plan = prepare(deployment, checkpoint=checkpoint, cache_dir=cache_dir, repo_dir=repo_dir,
                   force_build=force_build, say=say)
    say(f"exec {' '.join(plan.shown().split()[:4])} ...")
    exec_server(plan.argv, plan.env)
