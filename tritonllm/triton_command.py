"""How to run one ``tritonserver`` (part of :mod:`tritonllm.server`): :class:`ServerOptions`,
checked when made, and :func:`tritonserver_command`, the command line they make.

Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonllm import supervision
from tritonllm.errors import ConfigError
from tritonllm.http_guard import FORM_BODY_LIMIT
from tritonllm.security import AccessPolicy, TlsSettings

__all__ = [
    "MANAGED_EXIT_TIMEOUT_S",
    "MODEL_CONTROL_MODES",
    "SHM_PREFIX_FLAG",
    "ServerOptions",
    "tritonserver_command",
]

MODEL_CONTROL_MODES = ("none", "poll", "explicit")
MANAGED_EXIT_TIMEOUT_S = 5  # managed: --exit-timeout-secs (the launcher unloads models first)
SHM_PREFIX_FLAG = "shm-region-prefix-name"

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
    #: Who may call what (tritonllm.security); None: no restriction of ours (a managed server
    #: still keeps its model-repository API to itself). ``tritonllm serve`` always sets one.
    access: AccessPolicy | None = None
    tls: TlsSettings | None = None  # gRPC TLS (and mutual TLS with a CA)

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
        restricting = [f for f in ("--http-restricted-api", "--grpc-restricted-protocol")
                       if _flag_value(self.extra_args, f) is not None]
        if self.access is not None and restricting:
            raise ConfigError(f"tritonserver argument {restricting[0]} is managed by tritonllm "
                              "when keys are set (--admin-key-file, --inference-key-file, "
                              "--no-auth): use those")
        if self.tls is not None and any(a.startswith("--grpc-use-ssl") or
                                        a.startswith("--grpc-server-") or
                                        a.startswith("--grpc-root-cert")
                                        for a in self.extra_args):
            raise ConfigError("tritonserver's gRPC TLS arguments are managed by tritonllm when "
                              "--tls-cert is given: use --tls-cert/--tls-key/--tls-ca")
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
    With ``options.access`` the restrictions are the policy's (its admin key is then the one
    the launcher uses); ``options.tls`` adds gRPC TLS.

    The argv holds the keys' values (Triton takes them on its command line): it is never
    logged; :func:`tritonllm.security.mask` it before showing it.
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
    if o.access is not None:
        argv += o.access.tritonserver_args()
    elif o.managed and admin_key is not None:
        restriction = f"model-repository:{supervision.ADMIN_HEADER}={admin_key}"
        argv += [f"--http-restricted-api={restriction}",
                 f"--grpc-restricted-protocol={restriction}"]
    if o.tls is not None:
        argv += o.tls.tritonserver_args()
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
