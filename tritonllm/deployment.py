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
``server:``     :class:`ServerSection`: address, ports, keys and TLS, managed serving, timeouts
``kubernetes:`` :class:`KubernetesSection`: image, replicas, GPUs, volumes, Secrets, network
                policy, autoscaling
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
    "TlsSection",
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
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # RFC 1123 (a namespace)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a Secret's name


def _absolute(where: str, path: PurePosixPath | None) -> None:
    if path is not None and not path.is_absolute():
        raise ConfigError(f"{where}: must be an absolute path (in the container), got "
                          f"{str(path)!r}")


@dataclass(frozen=True)
class TlsSection:
    """``server.tls``: gRPC TLS (:class:`tritonllm.security.TlsSettings`), paths in the container.

    Attributes:
        cert / key: the server's certificate and private key (PEM); both required.
        ca: mutual TLS: clients must present a certificate this CA signed.
    """

    cert: PurePosixPath | None = None
    key: PurePosixPath | None = None
    ca: PurePosixPath | None = None

    def __post_init__(self) -> None:
        for name in ("cert", "key"):
            if getattr(self, name) is None:
                raise ConfigError(f"server.tls.{name}: required with server.tls (cert and key "
                                  "go together)")
        for name in ("cert", "key", "ca"):
            _absolute(f"server.tls.{name}", getattr(self, name))


@dataclass(frozen=True)
class ServerSection:
    """How the container runs Triton.

    Attributes:
        host: the address the endpoints listen on. ``tritonllm serve`` alone listens on
            127.0.0.1; a container must listen beyond its loopback, hence 0.0.0.0.
        http_port / grpc_port / metrics_port: what the server listens on (and the probes,
            Service, ServiceMonitor, NetworkPolicy and KServe runtime use).
        admin_key_file: the key of the admin endpoints (model control, shared memory,
            statistics, trace, logging; :mod:`tritonllm.security`). None: not configured, the
            admin endpoints stay closed (only the launcher holds a key). In a cluster the
            rendering sets it to the keys Secret's file (``kubernetes.keys_secret``).
        inference_key_file: a key for inference, metadata and model config too. None: open
            (to whom the network lets in: the cluster's NetworkPolicy).
        no_auth: open every endpoint; cannot go with a key file.
        tls: gRPC TLS (:class:`TlsSection`); None: plaintext gRPC.
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

    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    admin_key_file: PurePosixPath | None = None
    inference_key_file: PurePosixPath | None = None
    no_auth: bool = False
    tls: TlsSection | None = None
    managed: bool = True
    model_control_mode: str = "none"
    drain_timeout: float = 30.0
    exit_timeout: int = 30
    startup_timeout: float = 1800.0
    log_verbose: int = 0
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"server.host: an address to listen on, got {self.host!r}")
        for name in ("admin_key_file", "inference_key_file"):
            _absolute(f"server.{name}", getattr(self, name))
        if self.no_auth and (self.admin_key_file or self.inference_key_file):
            raise ConfigError("server.no_auth: opens every endpoint, it cannot go with "
                              "server.admin_key_file or server.inference_key_file")
        if self.admin_key_file is not None and self.admin_key_file == self.inference_key_file:
            raise ConfigError("server.inference_key_file: the admin and the inference key "
                              "must differ, got the same file")
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
        keys_secret: a generic Secret holding ``admin-key`` (and ``inference-key``), mounted
            read-only in /etc/tritonllm/keys; the rendering points ``server.admin_key_file`` /
            ``inference_key_file`` there. "" mounts none (with ``server.no_auth``, it must be "").
        inference_key: the keys Secret holds ``inference-key`` too and inference needs it;
            false: inference and metadata are open to what the NetworkPolicy lets in.
        tls_secret: a ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``; ``ca.crt`` for
            mutual TLS, when ``server.tls.ca`` names it), mounted read-only in
            /etc/tritonllm/tls; "" is plaintext gRPC.
        inference_from: the labels of the pods the NetworkPolicy lets reach the HTTP and gRPC
            ports ({}: every pod of the namespace; e.g. the OpenAI front's labels).
        monitoring_namespace: the namespace whose pods (Prometheus) may reach the metrics
            port; nothing else may.
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
    keys_secret: str = "tritonllm-keys"
    inference_key: bool = True
    tls_secret: str = ""
    inference_from: dict[str, str] = field(default_factory=dict)
    monitoring_namespace: str = "monitoring"

    def __post_init__(self) -> None:
        for name in ("keys_secret", "tls_secret"):
            value = getattr(self, name)
            if value and not _DNS_SUBDOMAIN.match(value):
                raise ConfigError(f"kubernetes.{name}: a Secret's name (lower-case DNS "
                                  f"subdomain) or \"\" for none, got {value!r}")
        if not _DNS_LABEL.match(self.monitoring_namespace):
            raise ConfigError("kubernetes.monitoring_namespace: a namespace's name, got "
                              f"{self.monitoring_namespace!r}")
        for key, value in self.inference_from.items():
            if not isinstance(value, str) or not key:
                raise ConfigError(f"kubernetes.inference_from.{key}: a label value (a "
                                  f"string), got {value!r}")
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
    """Check a YAML value against a field's type (int, float, bool, str, a path, X | None, tuple,
    dict, a nested section)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be empty")
    origin = typing.get_origin(annotation) or annotation
    if dataclasses.is_dataclass(origin) and isinstance(origin, type):
        return _section(origin, where, value)
    if origin is PurePosixPath:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return PurePosixPath(value)
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
