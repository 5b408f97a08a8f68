"""One deployment file (``tritonllm.yaml``) for the container entrypoint and the cluster.

``tritonllm launch --config FILE`` (the containers' entrypoint) and ``tritonllm deploy k8s
--config FILE`` read the same file, so the ports the server listens on, the probes that call
them, the Service that exposes them, the model names the rules select and the paths the volumes
mount agree by construction. In a cluster the file travels into the pod as a ConfigMap
(:mod:`tritonllm.kubernetes`).

The file's sections map onto the settings objects that already own every default:

============== ==================================================================================
``build:``      :class:`~tritonllm.builders.BuildSettings` (minus checkpoint, engine, out)
``repository:`` :class:`~tritonllm.settings.RepoSettings` (minus the paths launch sets)
``server:``     :class:`ServerSection`: ports, managed serving, drain and exit timeouts
``kubernetes:`` :class:`KubernetesSection`: image, replicas, GPUs, volumes, autoscaling
============== ==================================================================================

An unknown key anywhere is a ConfigError naming it (``server.htp_port: unknown key; known:
...``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tritonllm.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENGINES",
    "Deployment",
    "KubernetesSection",
    "ServerSection",
    "load_deployment",
    "parse_deployment",
]

#: Where the containers look for the deployment file (the ConfigMap mounts it here).
DEFAULT_CONFIG_PATH = PurePosixPath("/etc/tritonllm/tritonllm.yaml")
#: ``engine:`` values: the builder names of ``tritonllm build --engine`` (+ the legacy one).
ENGINES = ("cpu", "trtllm", "trtllm-legacy")
#: The non-root user the images run as (docker/Dockerfile*, the pods' securityContext).
IMAGE_USER_ID = 10001
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")  # a DNS-1035 label, room for suffixes
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


@dataclass(frozen=True)
class ServerSection:
    """How the container runs Triton.

    Attributes:
        http_port / grpc_port / metrics_port: what the server listens on (and the probes,
            Service, ServiceMonitor and KServe runtime use).
        managed: exec ``tritonllm serve`` (drain with readiness false, HTTP guard, stub
            recovery; see docs/serving.md) rather than a bare ``tritonserver``.
        model_control_mode: ``none`` (every model loaded at start) or ``explicit`` (models
            load and unload through the repository API: ``tritonllm models load``).
        drain_timeout: managed: seconds a SIGTERM waits for requests in flight.
        exit_timeout: unmanaged: tritonserver's ``--exit-timeout-secs`` (Triton's own drain).
        startup_timeout: seconds the engine may take to load before the pod counts as failed.
        log_verbose: tritonserver ``--log-verbose``.
        args: more tritonserver arguments, passed unchanged.
    """

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    managed: bool = True
    model_control_mode: str = "none"
    drain_timeout: float = 30.0
    exit_timeout: int = 30
    startup_timeout: float = 1800.0
    log_verbose: int = 0
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(f"server.{name}: must be 1 to 65535, got {port}")
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if len(set(ports)) != 3:
            raise ConfigError(f"server: http_port, grpc_port and metrics_port must differ, "
                              f"got {ports}")
        if self.model_control_mode not in ("none", "explicit"):
            raise ConfigError("server.model_control_mode: 'none' or 'explicit', got "
                              f"{self.model_control_mode!r}")
        for name in ("drain_timeout", "exit_timeout", "startup_timeout"):
            if getattr(self, name) < 0 or (name == "startup_timeout" and not self.startup_timeout):
                raise ConfigError(f"server.{name}: must be positive, got {getattr(self, name)}")

    def stop_budget_s(self) -> float:
        """Seconds a SIGTERM may take from start to a clean exit (drain + Triton's own exit)."""
        from tritonllm.triton_command import MANAGED_EXIT_TIMEOUT_S

        if self.managed:
            return self.drain_timeout + MANAGED_EXIT_TIMEOUT_S
        return float(self.exit_timeout)


@dataclass(frozen=True)
class KubernetesSection:
    """What ``tritonllm deploy k8s`` renders (docs/deploy.md, "The manifests").

    Attributes:
        namespace: of every object.
        image: the container image (built from docker/Dockerfile or docker/Dockerfile.cpu).
        replicas: of the Deployment before the autoscaler acts; min/max_replicas: its range.
        gpus: ``nvidia.com/gpu`` per pod (GPU engines; must cover tp × pp).
        cpu / memory: requests (= limits for memory).
        node_selector / tolerations: GPU node placement.
        shm_size: the ``/dev/shm`` memory volume (Python backend, NCCL).
        cache_size / cache_storage_class / cache_access_mode: the engine-cache claim; with more
            than one replica use a ReadWriteMany class so pods share one build.
        checkpoint_claim: a PersistentVolumeClaim that holds the checkpoint, mounted read-only
            at the checkpoint's parent folder.
        queue_compute_ratio: the autoscaler's target for ``triton:queue_compute:ratio`` per pod
            (NVIDIA's tutorial uses 1: as long queued as computed).
        pre_stop_seconds: how long a stopping pod keeps serving while the Service stops
            sending it traffic, before the drain starts.
        pdb_min_available: pods a voluntary disruption (node drain) must leave running.
        prometheus_url: where KEDA's trigger queries Prometheus.
    """

    namespace: str = "default"
    image: str = "tritonllm:0.1.0-gpu"
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 4
    gpus: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: tuple[dict[str, Any], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    shm_size: str = "16Gi"
    cache_size: str = "200Gi"
    cache_storage_class: str | None = None
    cache_access_mode: str = "ReadWriteOnce"
    checkpoint_claim: str = "tritonllm-checkpoints"
    queue_compute_ratio: float = 1.0
    pre_stop_seconds: int = 10
    pdb_min_available: int = 1
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise ConfigError("kubernetes: need 1 <= min_replicas <= replicas <= max_replicas, "
                              f"got {self.min_replicas}, {self.replicas}, {self.max_replicas}")
        for name in ("cpu", "memory", "shm_size", "cache_size"):
            if not _QUANTITY.match(str(getattr(self, name))):
                raise ConfigError(f"kubernetes.{name}: not a Kubernetes quantity: "
                                  f"{getattr(self, name)!r}")
        if self.gpus < 0 or self.pre_stop_seconds < 0 or self.pdb_min_available < 0:
            raise ConfigError("kubernetes: gpus, pre_stop_seconds and pdb_min_available must "
                              "be 0 or more")
        if self.cache_access_mode not in ("ReadWriteOnce", "ReadWriteMany"):
            raise ConfigError("kubernetes.cache_access_mode: ReadWriteOnce or ReadWriteMany, "
                              f"got {self.cache_access_mode!r}")
        if not self.queue_compute_ratio > 0:
            raise ConfigError("kubernetes.queue_compute_ratio: must be positive")


@dataclass(frozen=True)
class Deployment:
    """A parsed deployment file. Paths are as the container sees them."""

    checkpoint: PurePosixPath
    engine: str = "trtllm"
    name: str = "tritonllm"
    cache_dir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/cache"))
    repo_dir: PurePosixPath = field(
        default_factory=lambda: PurePosixPath("/var/lib/tritonllm/models"))
    build: Mapping[str, Any] = field(default_factory=dict)
    repository: Mapping[str, Any] = field(default_factory=dict)
    server: ServerSection = field(default_factory=ServerSection)
    kubernetes: KubernetesSection = field(default_factory=KubernetesSection)

    @property
    def target(self) -> str:
        from tritonllm.settings import ENGINE_TARGETS

        return ENGINE_TARGETS[self.engine]

    @property
    def engine_dir(self) -> PurePosixPath:
        """The engine in the cache volume; its manifest decides whether a start rebuilds."""
        return self.cache_dir / "engines" / self.name

    def build_settings(self, *, checkpoint: Path | None = None, cache_dir: Path | None = None,
                       force: bool = False) -> Any:
        from tritonllm.builders.settings import BuildSettings

        engine_dir = (Path(cache_dir) / "engines" / self.name if cache_dir
                      else Path(self.engine_dir))
        try:
            return BuildSettings(checkpoint=Path(checkpoint or self.checkpoint),
                                 engine=self.engine, out=engine_dir, force=force,
                                 **dict(self.build))
        except TypeError as e:
            raise ConfigError(f"build: {e}") from e

    def repo_settings(self, engine_dir: Path, repo_dir: Path) -> Any:
        """The render settings: the engine is referenced in the cache, not copied."""
        from tritonllm.settings import RepoSettings

        return RepoSettings(**dict(self.repository), engine_path=str(Path(engine_dir).resolve()),
                            server_repo_path=str(Path(repo_dir).resolve()))


# -- parsing -----------------------------------------------------------------------------------

_RESERVED_BUILD = ("checkpoint", "engine", "out", "force")
_RESERVED_REPO = ("engine_path", "server_repo_path")


def _known(cls: type) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_keys(where: str, data: Mapping[str, Any], known: list[str]) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}{key}: unknown key; known: {', '.join(sorted(known))}")


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check a YAML value against a field's type (int, float, bool, str, X | None, tuple, dict)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be empty")
    origin = typing.get_origin(annotation) or annotation
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if origin is Any or not isinstance(origin, type):
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is float and number:
        return float(value)
    if origin is str and number:
        return str(value)  # YAML reads cpu: 8 as a number
    if not isinstance(value, origin) or (origin is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {origin.__name__}, got {value!r}")
    return value


def _section(cls: type, where: str, data: Any) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = _known(cls)
    _check_keys(f"{where}.", data, list(fields))
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in data.items()})


def _settings_keys(where: str, data: Any, cls: type, reserved: tuple[str, ...]) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    known = [n for n in _known(cls) if n not in reserved]
    for key in data:
        if key in reserved:
            raise ConfigError(f"{where}.{key}: set by tritonllm launch, not in the file")
    _check_keys(f"{where}.", data, known)
    hints = typing.get_type_hints(cls)
    return {k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in data.items()}


def parse_deployment(data: Any, source: str = "deployment file") -> Deployment:
    """Check and parse the deployment file's content (a mapping, as YAML loads it)."""
    from tritonllm.builders.settings import BuildSettings
    from tritonllm.settings import RepoSettings

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top, got {type(data).__name__}")
    top = [f.name for f in dataclasses.fields(Deployment)]
    _check_keys("", data, top)
    if not data.get("checkpoint"):
        raise ConfigError("checkpoint: required (the Hugging Face checkpoint folder, as the "
                          "container sees it)")
    engine = str(data.get("engine", "trtllm"))
    if engine not in ENGINES:
        raise ConfigError(f"engine: one of {', '.join(ENGINES)}, got {engine!r}")
    name = str(data.get("name", "tritonllm"))
    if not _NAME.match(name):
        raise ConfigError(f"name: a lower-case DNS label of at most 42 characters, got {name!r}")
    paths = {}
    for key in ("checkpoint", "cache_dir", "repo_dir"):
        if key in data:
            p = PurePosixPath(str(data[key]))
            if not p.is_absolute():
                raise ConfigError(f"{key}: must be an absolute path, got {str(p)!r}")
            paths[key] = p
    if "repo_dir" in paths and len(paths["repo_dir"].parts) < 3:
        raise ConfigError(f"repo_dir: needs a parent folder below / (the repository is swapped "
                          f"into place beside it), got {str(paths['repo_dir'])!r}")
    deployment = Deployment(
        engine=engine, name=name, **paths,
        build=_settings_keys("build", data.get("build"), BuildSettings, _RESERVED_BUILD),
        repository=_settings_keys("repository", data.get("repository"), RepoSettings,
                                  _RESERVED_REPO),
        server=_section(ServerSection, "server", data.get("server")),
        kubernetes=_section(KubernetesSection, "kubernetes", data.get("kubernetes")),
    )
    # Build and repository settings check their own values: construct them once here.
    deployment.build_settings()
    try:
        RepoSettings(**dict(deployment.repository))
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"repository.{e}") from e
    return deployment


def load_deployment(path: Path) -> Deployment:
    """Read and check a deployment file; ConfigError names the file and the key."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the deployment file: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from e
    try:
        return parse_deployment(data, str(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
