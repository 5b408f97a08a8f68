"""``tritonllm deploy k8s``: Kubernetes manifests from the deployment file (docs/deploy.md).

Everything is rendered from one :class:`~tritonllm.deployment.Deployment`, so the ports the
server listens on are the ports the probes call and the Service exposes, the model the rules
select is the contract's LLM model, and the paths the volumes mount are the paths
``tritonllm launch`` reads. Output: a Kustomize base and two autoscaling overlays, plus KServe::

    OUT/base/          kustomization, ConfigMap (the deployment file), engine-cache PVC,
                       Deployment, Service, NetworkPolicy, PodDisruptionBudget, ServiceMonitor,
                       PrometheusRule
    OUT/overlays/hpa/  base + autoscaling/v2 HPA on triton:queue_compute:ratio (through
                       prometheus-adapter: prometheus-adapter-values.yaml holds its rule)
    OUT/overlays/keda/ base + a KEDA ScaledObject on the same recorded series
    OUT/kserve/        ServingRuntime for our image + an InferenceService using it

Plain YAML: ``kubectl apply -k OUT/overlays/hpa`` (or ``keda``), ``kubectl apply -k OUT/kserve``.

Keys and TLS: the pod's ``/etc/tritonllm`` is one projected volume, the ConfigMap's file plus
the files of the keys Secret (``kubernetes.keys_secret``: ``keys/admin-key``,
``keys/inference-key``) and of the TLS Secret (``kubernetes.tls_secret``: ``tls/tls.crt``,
``tls/tls.key``, ``tls/ca.crt``), mode 0440, group fsGroup = the image's user, so the server's
user alone (and root) reads them. :func:`pod_server` is the server section as the pod runs it:
the paths the file leaves unset point at those files; the ConfigMap holds the file with them
filled in. No Secret is rendered: the Secrets' values never go into a generated file
(:func:`notes` puts the ``kubectl create secret`` commands at the top of the kustomizations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tritonllm.deployment import (
    DEFAULT_CONFIG_PATH,
    IMAGE_USER_ID,
    Deployment,
    ServerSection,
    TlsSection,
)
from tritonllm.errors import ConfigError
from tritonllm.metrics_rules import QUEUE_COMPUTE_RATIO, rule_groups

__all__ = ["FILES", "KEYS_DIR", "KUBERNETES_VERSION", "SECRET_FILE_MODE", "TLS_DIR",
           "adapter_values", "dump", "keda_query", "notes", "pod_config_text", "pod_server",
           "render_manifests", "termination_grace_s", "write_manifests"]

#: The oldest Kubernetes the manifests are for (validated against its schemas, strict): 1.30
#: made the preStop ``sleep`` action beta and on by default; 1.31 is the oldest still patched.
KUBERNETES_VERSION = "1.31.0"
HEALTH_READY = "/v2/health/ready"
CONFIG_DIGEST_ANNOTATION = "tritonllm.dev/config-sha256"
HEALTH_LIVE = "/v2/health/live"
STARTUP_PERIOD_S = 10
GRACE_MARGIN_S = 15  # between the stop budget and the kubelet's SIGKILL
PORT_NAMES = {"http": "http", "grpc": "grpc", "metrics": "metrics"}
#: KServe's v2 protocol names for the two endpoints (its Triton runtime serves both).
KSERVE_PROTOCOLS = ("v2", "grpc-v2")
#: Where the pod sees the keys Secret's and the TLS Secret's files (inside the projected
#: config volume: a mount point inside a read-only ConfigMap mount cannot be created).
KEYS_DIR = DEFAULT_CONFIG_PATH.parent / "keys"
TLS_DIR = DEFAULT_CONFIG_PATH.parent / "tls"
ADMIN_KEY_FILE = "admin-key"
INFERENCE_KEY_FILE = "inference-key"
#: The files of a ``kubernetes.io/tls`` Secret (ca.crt as cert-manager writes it).
TLS_FILES = {"cert": "tls.crt", "key": "tls.key", "ca": "ca.crt"}
#: Owner root, group the pod's fsGroup (the image's user): nobody else reads a key.
SECRET_FILE_MODE = 0o440
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")  # a Secret's data key

Obj = dict[str, Any]


def _labels(d: Deployment) -> dict[str, str]:
    return {"app.kubernetes.io/name": "tritonllm", "app.kubernetes.io/instance": d.name}


def _meta(d: Deployment, name: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": d.kubernetes.namespace, "labels": _labels(d), **extra}


def _ports(d: Deployment) -> dict[str, int]:
    s = d.server
    return {"http": s.http_port, "grpc": s.grpc_port, "metrics": s.metrics_port}


def termination_grace_s(d: Deployment) -> int:
    """preStop + the server's whole stop (drain, then Triton's exit timeout) + a margin."""
    return math.ceil(d.kubernetes.pre_stop_seconds + d.server.stop_budget_s()
                         + GRACE_MARGIN_S)


def pod_server(d: Deployment) -> ServerSection:
    """The server section as the pod runs it: the key and TLS paths the file leaves unset
    point at the mounted Secrets' files; a path no mounted Secret provides is a ConfigError."""
    s, k = d.server, d.kubernetes
    if s.no_auth and k.keys_secret:
        raise ConfigError("kubernetes.keys_secret: server.no_auth opens every endpoint; set "
                          'keys_secret: "" with it')
    if not k.inference_key and s.inference_key_file is not None:
        raise ConfigError("kubernetes.inference_key: false, but server.inference_key_file is "
                          "set")
    changes: dict[str, Any] = {}
    if k.keys_secret and s.admin_key_file is None:
        changes["admin_key_file"] = KEYS_DIR / ADMIN_KEY_FILE
    if k.keys_secret and k.inference_key and s.inference_key_file is None:
        changes["inference_key_file"] = KEYS_DIR / INFERENCE_KEY_FILE
    if k.tls_secret and s.tls is None:
        changes["tls"] = TlsSection(cert=TLS_DIR / TLS_FILES["cert"],
                                    key=TLS_DIR / TLS_FILES["key"])
    pod = dataclasses.replace(s, **changes)
    for where, path, folder, setting in _secret_paths(pod):
        secret = getattr(k, setting)
        if path.parent != folder:
            raise ConfigError(f"{where}: {path}: in a pod, it is a file of the Secret "
                              f"kubernetes.{setting}, in {folder}")
        if not secret:
            raise ConfigError(f"{where}: {path}: kubernetes.{setting} is empty, no Secret is "
                              f"mounted in {folder}")
        if not _SECRET_KEY.match(path.name):
            raise ConfigError(f"{where}: {path.name!r} is not a Secret's key (letters, digits, "
                              "'-', '_', '.')")
    return pod


def _secret_paths(s: ServerSection) -> list[tuple[str, PurePosixPath, PurePosixPath, str]]:
    """(field, path, the folder it must be in, the kubernetes setting naming its Secret)."""
    out = [(f"server.{name}", path, KEYS_DIR, "keys_secret")
           for name, path in (("admin_key_file", s.admin_key_file),
                              ("inference_key_file", s.inference_key_file)) if path is not None]
    if s.tls is not None:
        out += [(f"server.tls.{name}", path, TLS_DIR, "tls_secret")
                for name in ("cert", "key", "ca") if (path := getattr(s.tls, name)) is not None]
    return out


def pod_config_text(d: Deployment, config_text: str, checkpoint: str | None = None) -> str:
    """The deployment file as the pod reads it: ``config_text`` verbatim when the pod runs its
    server section as written, else re-dumped with the Secrets' paths (and ``checkpoint``)
    filled in."""
    import yaml

    pod = pod_server(d)
    if pod == d.server and checkpoint is None:
        return config_text
    data = yaml.safe_load(config_text)
    server = dict(data.get("server") or {})
    for name in ("admin_key_file", "inference_key_file"):
        if getattr(pod, name) is not None:
            server[name] = str(getattr(pod, name))
    if pod.tls is not None:
        server["tls"] = {n: str(getattr(pod.tls, n)) for n in ("cert", "key", "ca")
                         if getattr(pod.tls, n) is not None}
    data["server"] = server
    if checkpoint is not None:
        data["checkpoint"] = checkpoint
    body: str = yaml.safe_dump(data, sort_keys=False)
    return (f"# The deployment file of {d.name!r} as the pod reads it (tritonllm deploy k8s "
            "filled in the pod's paths).\n" + body)


def _config_map(d: Deployment, config_text: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(d, f"{d.name}-config"),
            "data": {DEFAULT_CONFIG_PATH.name: pod_config_text(d, config_text)}}


def _cache_claim(d: Deployment) -> Obj:
    k = d.kubernetes
    spec: Obj = {"accessModes": [k.cache_access_mode],
                 "resources": {"requests": {"storage": k.cache_size}}}
    if k.cache_storage_class:
        spec["storageClassName"] = k.cache_storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(d, f"{d.name}-engine-cache"), "spec": spec}


def _container(d: Deployment, name: str) -> Obj:
    k, ports = d.kubernetes, _ports(d)
    gpu = d.target == "gpu"
    resources: Obj = {"requests": {"cpu": k.cpu, "memory": k.memory},
                      "limits": {"memory": k.memory}}
    if gpu and k.gpus:
        resources["requests"]["nvidia.com/gpu"] = k.gpus
        resources["limits"]["nvidia.com/gpu"] = k.gpus

    def probe(path: str, period: int, failures: int) -> Obj:
        return {"httpGet": {"path": path, "port": PORT_NAMES["http"]},
                "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 5}

    return {
        "name": name,
        "image": k.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config", str(DEFAULT_CONFIG_PATH)],
        "env": [{"name": "HOME", "value": "/tmp"}],  # caches of the libraries: writable
        "ports": [{"name": PORT_NAMES[p], "containerPort": n, "protocol": "TCP"}
                  for p, n in ports.items()],
        # The engine builds (or loads from the cache) before the server is ready: the startup
        # probe allows server.startup_timeout, then readiness and liveness take over.
        "startupProbe": probe(HEALTH_READY, STARTUP_PERIOD_S,
                              max(1, math.ceil(d.server.startup_timeout / STARTUP_PERIOD_S))),
        "readinessProbe": probe(HEALTH_READY, 5, 3),
        "livenessProbe": probe(HEALTH_LIVE, 10, 3),
        # Endpoints drop a terminating pod asynchronously: keep serving until they have,
        # then SIGTERM starts the drain (readiness false, in-flight streams finish).
        "lifecycle": {"preStop": {"sleep": {"seconds": k.pre_stop_seconds}}},
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": IMAGE_USER_ID, "runAsGroup": IMAGE_USER_ID,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": str(DEFAULT_CONFIG_PATH.parent), "readOnly": True},
            {"name": "checkpoint", "mountPath": str(PurePosixPath(d.checkpoint).parent),
             "readOnly": True},
            {"name": "engine-cache", "mountPath": str(d.cache_dir)},
            # The renderer swaps the finished repository into place beside it: the volume
            # holds the repository's parent folder.
            {"name": "repository", "mountPath": str(d.repo_dir.parent)},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }


def _config_volume(d: Deployment, config_map: str) -> Obj:
    """/etc/tritonllm: the ConfigMap's file and the Secrets' files the server reads."""
    k = d.kubernetes
    sources: list[Obj] = [{"configMap": {"name": config_map}}]
    by_secret: dict[str, list[Obj]] = {}
    for _where, path, folder, setting in _secret_paths(pod_server(d)):
        by_secret.setdefault(getattr(k, setting), []).append(
            {"key": path.name, "path": f"{folder.name}/{path.name}"})
    sources += [{"secret": {"name": name, "items": items}} for name, items in by_secret.items()]
    return {"name": "config", "projected": {"defaultMode": SECRET_FILE_MODE, "sources": sources}}


def _volumes(d: Deployment, config_map: str) -> list[Obj]:
    k = d.kubernetes
    return [
        _config_volume(d, config_map),
        {"name": "checkpoint", "persistentVolumeClaim": {"claimName": k.checkpoint_claim,
                                                         "readOnly": True}},
        {"name": "engine-cache", "persistentVolumeClaim": {"claimName": f"{d.name}-engine-cache"}},
        {"name": "repository", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k.shm_size}},
    ]


def _pod_security(d: Deployment) -> Obj:
    # fsGroup: the volumes (the cache, the Secrets' files) belong to the image's group.
    return {"runAsNonRoot": True, "runAsUser": IMAGE_USER_ID, "runAsGroup": IMAGE_USER_ID,
            "fsGroup": IMAGE_USER_ID, "seccompProfile": {"type": "RuntimeDefault"}}


def _pod_spec(d: Deployment, container_name: str = "triton") -> Obj:
    k = d.kubernetes
    spec: Obj = {
        "terminationGracePeriodSeconds": termination_grace_s(d),
        "securityContext": _pod_security(d),
        "containers": [_container(d, container_name)],
        "volumes": _volumes(d, f"{d.name}-config"),
    }
    if d.target == "gpu":
        if k.node_selector:
            spec["nodeSelector"] = dict(k.node_selector)
        if k.tolerations:
            spec["tolerations"] = [dict(t) for t in k.tolerations]
    return spec


def _deployment(d: Deployment, config_text: str) -> Obj:
    k = d.kubernetes
    # A changed deployment file changes the pod template, so `kubectl apply` rolls it out.
    # (A changed Secret does not: Triton reads its keys at start, `kubectl rollout restart`.)
    digest = hashlib.sha256(pod_config_text(d, config_text).encode("utf-8")).hexdigest()
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(d, d.name),
        "spec": {
            "replicas": k.replicas,
            "selector": {"matchLabels": _labels(d)},
            # A new pod must be ready before an old one goes: no capacity is ever lost.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": _labels(d),
                                      "annotations": {CONFIG_DIGEST_ANNOTATION: digest}},
                         "spec": _pod_spec(d)},
        },
    }


def _service(d: Deployment) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(d, d.name),
            "spec": {"type": "ClusterIP", "selector": _labels(d),
                     "ports": [{"name": PORT_NAMES[p], "port": n, "targetPort": PORT_NAMES[p],
                                "protocol": "TCP"} for p, n in _ports(d).items()]}}


def _network_policy(d: Deployment) -> Obj:
    """Ingress: HTTP and gRPC from the namespace's pods (``kubernetes.inference_from``: those
    with these labels), metrics from the monitoring namespace's pods; nothing else. Egress is
    not restricted. The kubelet's probes come from the node, which a NetworkPolicy never
    blocks."""
    k, ports = d.kubernetes, _ports(d)

    def tcp(*names: str) -> list[Obj]:
        return [{"protocol": "TCP", "port": ports[n]} for n in names]

    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(d, d.name),
        "spec": {
            "podSelector": {"matchLabels": _labels(d)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": dict(k.inference_from)}}],
                 "ports": tcp("http", "grpc")},
                {"from": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": k.monitoring_namespace}}}],
                 "ports": tcp("metrics")},
            ],
        },
    }


def _pdb(d: Deployment) -> Obj:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(d, d.name),
            "spec": {"minAvailable": d.kubernetes.pdb_min_available,
                     "selector": {"matchLabels": _labels(d)}}}


def _service_monitor(d: Deployment) -> Obj:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": _meta(d, d.name),
            "spec": {"selector": {"matchLabels": _labels(d)},
                     "endpoints": [{"port": PORT_NAMES["metrics"], "path": "/metrics",
                                    "interval": "15s"}]}}


def _prometheus_rule(d: Deployment) -> Obj:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": _meta(d, d.name), "spec": {"groups": rule_groups(job=d.name)}}


def _hpa(d: Deployment) -> Obj:
    k = d.kubernetes
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(d, d.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": d.name},
            "minReplicas": k.min_replicas, "maxReplicas": k.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": QUEUE_COMPUTE_RATIO},
                "target": {"type": "AverageValue",
                           "averageValue": f"{round(k.queue_compute_ratio * 1000)}m"}}}],
            # A new GPU pod takes minutes to load: scale down slowly, up at once.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1,
                                                     "periodSeconds": 120}]},
                         "scaleUp": {"stabilizationWindowSeconds": 0}},
        },
    }


def adapter_values() -> Obj:
    """prometheus-adapter's Helm values: the custom-metrics rule that serves the HPA's metric."""
    return {"rules": {"custom": [{
        "seriesQuery": f'{QUEUE_COMPUTE_RATIO}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"},
                                    "pod": {"resource": "pod"}}},
        "name": {"matches": QUEUE_COMPUTE_RATIO, "as": QUEUE_COMPUTE_RATIO},
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
    }]}}


def keda_query(d: Deployment) -> str:
    """The pods' ratios summed: KEDA divides by the replica count (AverageValue)."""
    return (f'sum({QUEUE_COMPUTE_RATIO}{{namespace="{d.kubernetes.namespace}",'
            f'pod=~"{d.name}-.*"}})')


def _scaled_object(d: Deployment) -> Obj:
    k = d.kubernetes
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _meta(d, d.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": d.name},
            "minReplicaCount": k.min_replicas, "maxReplicaCount": k.max_replicas,
            "cooldownPeriod": 300,
            "triggers": [{"type": "prometheus", "metricType": "AverageValue", "metadata": {
                "serverAddress": k.prometheus_url, "query": keda_query(d),
                "threshold": f"{k.queue_compute_ratio:g}"}}],
        },
    }


def _serving_runtime(d: Deployment) -> Obj:
    k, ports = d.kubernetes, _ports(d)
    container = _container(d, "kserve-container")
    for key in ("startupProbe", "lifecycle"):  # KServe manages the pod's lifecycle
        container.pop(key)
    container["volumeMounts"] = [m for m in container["volumeMounts"]
                                 if m["name"] not in ("checkpoint",)]
    spec: Obj = {
        "supportedModelFormats": [{"name": "tritonllm", "version": "1", "autoSelect": True}],
        "protocolVersions": list(KSERVE_PROTOCOLS),
        "multiModel": False,
        "containers": [container | {
            "ports": [{"name": "h2c" if p == "grpc" else PORT_NAMES[p], "containerPort": n,
                       "protocol": "TCP"} for p, n in ports.items() if p != "metrics"]}],
        "volumes": [v for v in _volumes(d, f"{d.name}-kserve-config")
                    if v["name"] != "checkpoint"],
    }
    if d.target == "gpu" and k.node_selector:
        spec["nodeSelector"] = dict(k.node_selector)
    if d.target == "gpu" and k.tolerations:
        spec["tolerations"] = [dict(t) for t in k.tolerations]
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
            "metadata": _meta(d, f"{d.name}-runtime"), "spec": spec}


def _inference_service(d: Deployment) -> Obj:
    k = d.kubernetes
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": _meta(d, d.name),
        "spec": {"predictor": {
            "minReplicas": k.min_replicas, "maxReplicas": k.max_replicas,
            # The runtime's pod spec has no securityContext; the predictor's (an inline
            # PodSpec) does. fsGroup alone (our container sets its own user): the Secrets'
            # files and the cache belong to the image's group; KServe's containers are untouched.
            "securityContext": {"fsGroup": IMAGE_USER_ID},
            "model": {"modelFormat": {"name": "tritonllm"}, "runtime": f"{d.name}-runtime",
                      # KServe's storage initializer mounts the checkpoint at /mnt/models.
                      "storageUri": f"pvc://{k.checkpoint_claim}/{d.checkpoint.name}"},
        }},
    }


def _kustomization(resources: list[str]) -> Obj:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": resources}


#: File → what renders it (relative to OUT). Order is the order docs/deploy.md lists them.
FILES = (
    "base/kustomization.yaml", "base/configmap.yaml", "base/pvc.yaml", "base/deployment.yaml",
    "base/service.yaml", "base/networkpolicy.yaml", "base/pdb.yaml", "base/servicemonitor.yaml",
    "base/prometheusrule.yaml",
    "overlays/hpa/kustomization.yaml", "overlays/hpa/hpa.yaml",
    "overlays/hpa/prometheus-adapter-values.yaml",
    "overlays/keda/kustomization.yaml", "overlays/keda/scaledobject.yaml",
    "kserve/kustomization.yaml", "kserve/configmap.yaml", "kserve/servingruntime.yaml",
    "kserve/inferenceservice.yaml",
)


def _kserve_config(d: Deployment, config_text: str) -> Obj:
    """The deployment file as the KServe pod sees it: the checkpoint is at /mnt/models."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(d, f"{d.name}-kserve-config"),
            "data": {DEFAULT_CONFIG_PATH.name: pod_config_text(d, config_text, "/mnt/models")}}


def render_manifests(d: Deployment, config_text: str) -> dict[str, Obj]:
    """Every file of OUT as a mapping (``config_text``: the deployment file, verbatim)."""
    base = ["configmap.yaml", "pvc.yaml", "deployment.yaml", "service.yaml",
            "networkpolicy.yaml", "pdb.yaml", "servicemonitor.yaml", "prometheusrule.yaml"]
    out = {
        "base/kustomization.yaml": _kustomization(base),
        "base/configmap.yaml": _config_map(d, config_text),
        "base/pvc.yaml": _cache_claim(d),
        "base/deployment.yaml": _deployment(d, config_text),
        "base/service.yaml": _service(d),
        "base/networkpolicy.yaml": _network_policy(d),
        "base/pdb.yaml": _pdb(d),
        "base/servicemonitor.yaml": _service_monitor(d),
        "base/prometheusrule.yaml": _prometheus_rule(d),
        "overlays/hpa/kustomization.yaml": _kustomization(["../../base", "hpa.yaml"]),
        "overlays/hpa/hpa.yaml": _hpa(d),
        "overlays/hpa/prometheus-adapter-values.yaml": adapter_values(),
        "overlays/keda/kustomization.yaml": _kustomization(["../../base", "scaledobject.yaml"]),
        "overlays/keda/scaledobject.yaml": _scaled_object(d),
        "kserve/kustomization.yaml": _kustomization(
            ["../base/pvc.yaml", "configmap.yaml", "servingruntime.yaml",
             "inferenceservice.yaml"]),
        "kserve/configmap.yaml": _kserve_config(d, config_text),
        "kserve/servingruntime.yaml": _serving_runtime(d),
        "kserve/inferenceservice.yaml": _inference_service(d),
    }
    assert tuple(out) == FILES
    return out


def notes(d: Deployment) -> dict[str, str]:
    """Comment lines for the top of the kustomizations: the Secrets to create before applying
    (the commands, never values), and how a key is rotated."""
    k, ns = d.kubernetes, d.kubernetes.namespace
    files: dict[str, list[str]] = {}
    for _where, path, _folder, setting in _secret_paths(pod_server(d)):
        files.setdefault(setting, []).append(path.name)
    lines = []
    if "keys_secret" in files:
        keys = files["keys_secret"]
        lines += [f"Before applying, create the Secret {k.keys_secret} ({', '.join(keys)}; a key "
                  "has 16 or more", "characters, no spaces, ':' or ','), for example:",
                  "  (umask 077; " + "; ".join(f"openssl rand -hex 24 > {n}" for n in keys) + ")",
                  f"  kubectl -n {ns} create secret generic {k.keys_secret} \\",
                  *[f"      --from-file={n}=./{n}" + (" \\" if i < len(keys) - 1 else "")
                    for i, n in enumerate(keys)]]
    if "tls_secret" in files:
        tls = files["tls_secret"]
        lines += [f"and the TLS Secret {k.tls_secret} (or let cert-manager write it):",
                  f"  kubectl -n {ns} create secret generic {k.tls_secret} "
                  "--type=kubernetes.io/tls \\",
                  *[f"      --from-file={n}=./{n}" + (" \\" if i < len(tls) - 1 else "")
                    for i, n in enumerate(tls)]]
    if not lines:
        return {}
    restart = {
        "base/kustomization.yaml": f"kubectl -n {ns} rollout restart deployment/{d.name}",
        "kserve/kustomization.yaml": (f"kubectl -n {ns} rollout restart deployment "
                                      f"-l serving.kserve.io/inferenceservice={d.name}"),
    }
    return {rel: "".join(f"# {line}\n" for line in [
        *lines, "Triton reads its keys at start: after changing a Secret, restart the pods:",
        f"  {command}"]) for rel, command in restart.items()}


def dump(obj: Mapping[str, Any]) -> str:
    import yaml

    class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
        pass

    def _str(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    text: str = yaml.dump(dict(obj), Dumper=_Dumper, sort_keys=False, width=100)
    return text


def write_manifests(d: Deployment, config_text: str, out: Path) -> list[Path]:
    """Write every file under ``out`` (replacing earlier renders of the same files)."""
    written = []
    header = (f"# Rendered by `tritonllm deploy k8s` from the deployment file of {d.name!r};\n"
              "# edit that file and render again rather than this one.\n")
    extra = notes(d)
    for rel, obj in render_manifests(d, config_text).items():
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + extra.get(rel, "") + dump(obj), encoding="utf-8")
        written.append(path)
    return written
