"""``tritonllm deploy k8s``: the manifests, checked with the tools that own their formats.

No cluster runs here. Core objects are validated with kubernetes-validate (strict, the pinned
oldest Kubernetes); the containers inside custom resources (KServe's ServingRuntime) are
validated the same way inside a Pod; custom resources are checked against the fields their
projects document (sources next to each set); the PrometheusRule's groups pass ``promtool
check rules``, and ``promtool test rules`` runs the recording rule on synthetic series.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from tritonllm import contract as C
from tritonllm import security
from tritonllm.cli import main
from tritonllm.deployment import IMAGE_USER_ID, load_deployment, parse_deployment
from tritonllm.errors import ConfigError
from tritonllm.kubernetes import (
    FILES,
    KEYS_DIR,
    KUBERNETES_VERSION,
    SECRET_FILE_MODE,
    TLS_DIR,
    adapter_values,
    render_manifests,
    termination_grace_s,
)
from tritonllm.metrics_rules import QUEUE_COMPUTE_RATIO, alerts, records, rule_groups

ROOT = Path(__file__).resolve().parents[2]
GPU_FILE = ROOT / "docker" / "tritonllm.yaml"
CPU_FILE = ROOT / "docker" / "tritonllm.cpu.yaml"
CORE_KINDS = {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy",
              "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def _render(path: Path) -> dict[str, Any]:
    return render_manifests(load_deployment(path), path.read_text("utf-8"))


@pytest.fixture(scope="module", params=[GPU_FILE, CPU_FILE], ids=["gpu", "cpu"])
def manifests(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _render(request.param)


def _by_kind(manifests: dict[str, Any], kind: str) -> dict[str, Any]:
    """The base's object of that kind (kserve/ has a ConfigMap of its own)."""
    (obj,) = [o for rel, o in manifests.items()
              if o.get("kind") == kind and (not rel.startswith("kserve/") or kind not in
                                            ("ConfigMap",))]
    return obj


def test_every_core_object_validates_strictly(manifests: dict[str, Any]) -> None:
    kinds = set()
    for _rel, obj in manifests.items():
        if obj.get("kind") in CORE_KINDS:
            kinds.add(obj["kind"])
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert kinds == CORE_KINDS


def test_strict_validation_catches_a_wrong_field(manifests: dict[str, Any]) -> None:
    """The check can fail: a misspelt probe field is refused."""
    bad = copy.deepcopy(_by_kind(manifests, "Deployment"))
    probe = bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def test_kserve_runtime_containers_are_valid_pod_containers(manifests: dict[str, Any]) -> None:
    rt = _by_kind(manifests, "ServingRuntime")["spec"]
    spec = {"containers": rt["containers"], "volumes": rt["volumes"]}
    for key in ("nodeSelector", "tolerations"):
        if key in rt:
            spec[key] = rt[key]
    kubernetes_validate.validate(_pod(spec), KUBERNETES_VERSION, strict=True)


# Documented fields of the custom resources (top-level spec keys we may use):
# KServe ServingRuntime / InferenceService: kserve.github.io/website "API reference" (v0.14),
# serving.kserve.io/v1alpha1 ServingRuntimeSpec, v1beta1 InferenceServiceSpec/PredictorSpec.
KSERVE_RUNTIME_SPEC = {"supportedModelFormats", "protocolVersions", "multiModel", "containers",
                       "volumes", "nodeSelector", "tolerations", "affinity", "disabled",
                       "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas",
                       "storageHelper", "builtInAdapter", "annotations", "labels",
                       "imagePullSecrets", "workerSpec", "hostIPC"}
KSERVE_MODEL_FORMAT = {"name", "version", "autoSelect", "priority"}
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# PredictorSpec inlines a PodSpec ("Members of PodSpec are embedded into this type"): its
# securityContext is the pod's; the ServingRuntime's pod spec has none.
KSERVE_PREDICTOR = {"model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                    "containerConcurrency", "timeout", "serviceAccountName", "nodeSelector",
                    "tolerations", "canaryTrafficPercent", "deploymentStrategy",
                    "securityContext"}
KSERVE_MODEL = {"modelFormat", "runtime", "storageUri", "protocolVersion", "args", "env",
                "resources", "ports", "volumeMounts"}
# KEDA ScaledObject (keda.sh/docs/2.16/reference/scaledobject-spec) and its prometheus
# trigger (keda.sh/docs/2.16/scalers/prometheus).
KEDA_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
             "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
             "triggers"}
KEDA_TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef",
                "metricType"}
KEDA_PROMETHEUS = {"serverAddress", "query", "threshold", "activationThreshold", "namespace",
                   "customHeaders", "ignoreNullValues", "queryParameters", "unsafeSsl"}
# prometheus-operator monitoring.coreos.com/v1 (prometheus-operator.dev "API reference").
SERVICE_MONITOR_SPEC = {"selector", "endpoints", "namespaceSelector", "jobLabel",
                        "targetLabels", "podTargetLabels", "sampleLimit"}
SERVICE_MONITOR_ENDPOINT = {"port", "targetPort", "path", "scheme", "interval",
                            "scrapeTimeout", "honorLabels", "relabelings",
                            "metricRelabelings"}
# prometheus-adapter: docs/config.md (rules: seriesQuery, resources, name, metricsQuery).
ADAPTER_RULE = {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}


def _subset(found: Any, allowed: set[str], where: str) -> None:
    extra = set(found) - allowed
    assert not extra, f"{where}: undocumented fields {sorted(extra)}"


def test_custom_resources_use_documented_fields(manifests: dict[str, Any]) -> None:
    rt = _by_kind(manifests, "ServingRuntime")
    assert rt["apiVersion"] == "serving.kserve.io/v1alpha1"
    _subset(rt["spec"], KSERVE_RUNTIME_SPEC, "ServingRuntime.spec")
    for fmt in rt["spec"]["supportedModelFormats"]:
        _subset(fmt, KSERVE_MODEL_FORMAT, "supportedModelFormats[]")
    assert set(rt["spec"]["protocolVersions"]) <= KSERVE_PROTOCOLS
    isvc = _by_kind(manifests, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    _subset(isvc["spec"]["predictor"], KSERVE_PREDICTOR, "predictor")
    _subset(isvc["spec"]["predictor"]["model"], KSERVE_MODEL, "predictor.model")
    assert isvc["spec"]["predictor"]["model"]["runtime"] == rt["metadata"]["name"]
    assert (isvc["spec"]["predictor"]["model"]["modelFormat"]["name"]
            == rt["spec"]["supportedModelFormats"][0]["name"])

    so = _by_kind(manifests, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    _subset(so["spec"], KEDA_SPEC, "ScaledObject.spec")
    for trig in so["spec"]["triggers"]:
        _subset(trig, KEDA_TRIGGER, "triggers[]")
        assert trig["type"] == "prometheus"
        _subset(trig["metadata"], KEDA_PROMETHEUS, "prometheus trigger")
        float(trig["metadata"]["threshold"])  # KEDA reads it as a number in a string
        assert isinstance(trig["metadata"]["threshold"], str)

    sm = _by_kind(manifests, "ServiceMonitor")
    _subset(sm["spec"], SERVICE_MONITOR_SPEC, "ServiceMonitor.spec")
    for ep in sm["spec"]["endpoints"]:
        _subset(ep, SERVICE_MONITOR_ENDPOINT, "endpoints[]")
    for rule in adapter_values()["rules"]["custom"]:
        _subset(rule, ADAPTER_RULE, "prometheus-adapter rule")


def test_ports_paths_and_names_agree(manifests: dict[str, Any]) -> None:
    """Probes, Service, ServiceMonitor and the server use the deployment file's ports."""
    conf = yaml.safe_load(_by_kind(manifests, "ConfigMap")["data"]["tritonllm.yaml"])
    d = parse_deployment(conf)
    dep = _by_kind(manifests, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": d.server.http_port, "grpc": d.server.grpc_port,
                     "metrics": d.server.metrics_port}
    svc = _by_kind(manifests, "Service")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == ports
    assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])
    assert _by_kind(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # The startup probe allows the whole startup_timeout before the pod counts as failed.
    sp = c["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= d.server.startup_timeout
    # The container reads the ConfigMap's file where launch looks for it.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert c["args"] == ["--config", f"{mounts['config']}/tritonllm.yaml"]
    assert mounts["engine-cache"] == str(d.cache_dir)
    assert mounts["dshm"] == "/dev/shm"
    assert Path(mounts["repository"]) == Path(d.repo_dir).parent
    assert Path(d.checkpoint).parent == Path(mounts["checkpoint"])
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    assert vols["config"]["projected"]["sources"][0]["configMap"]["name"] == _by_kind(
        manifests, "ConfigMap")["metadata"]["name"]
    assert (vols["engine-cache"]["persistentVolumeClaim"]["claimName"]
            == _by_kind(manifests, "PersistentVolumeClaim")["metadata"]["name"])


def test_rollout_drain_and_security(manifests: dict[str, Any]) -> None:
    conf = yaml.safe_load(_by_kind(manifests, "ConfigMap")["data"]["tritonllm.yaml"])
    d = parse_deployment(conf)
    dep = _by_kind(manifests, "Deployment")
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The kubelet's SIGKILL comes after preStop + the server's whole stop.
    assert grace == termination_grace_s(d)
    assert grace >= pre_stop + d.server.stop_budget_s()
    assert grace >= d.server.exit_timeout or d.server.managed
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == IMAGE_USER_ID
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", "/dev/shm", str(d.cache_dir), str(Path(d.repo_dir).parent)} <= writable
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    if d.target == "gpu":
        assert gpus == d.kubernetes.gpus and pod["nodeSelector"]
    else:
        assert gpus is None and "nodeSelector" not in pod
    pdb = _by_kind(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]


def _served_files(container: dict[str, Any], volumes: list[dict[str, Any]]
                  ) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret, key) for every Secret file the container sees."""
    by_name = {v["name"]: v for v in volumes}
    out = {}
    for m in container["volumeMounts"]:
        projected = by_name[m["name"]].get("projected")
        for source in (projected or {}).get("sources", []):
            if "secret" in source:
                for item in source["secret"]["items"]:
                    out[f"{m['mountPath']}/{item['path']}"] = (source["secret"]["name"],
                                                               item["key"])
        if "secret" in by_name[m["name"]]:
            raise AssertionError("a Secret is mounted outside the projected config volume")
    return out


def _server_key_paths(config_text: str) -> dict[str, str]:
    d = parse_deployment(yaml.safe_load(config_text))
    s = d.server
    paths = {"admin_key_file": s.admin_key_file, "inference_key_file": s.inference_key_file}
    if s.tls is not None:
        paths |= {f"tls.{n}": getattr(s.tls, n) for n in ("cert", "key", "ca")}
    return {k: str(v) for k, v in paths.items() if v is not None}


def test_the_pods_read_their_keys_from_the_secret(manifests: dict[str, Any]) -> None:
    """The ConfigMap's file names the files the keys Secret projects, mode 0440, group the
    image's user: the server's user reads them, no one else; the KServe runtime likewise."""
    conf = _by_kind(manifests, "ConfigMap")["data"]["tritonllm.yaml"]
    d = parse_deployment(yaml.safe_load(conf))
    paths = _server_key_paths(conf)
    assert paths == {"admin_key_file": f"{KEYS_DIR}/admin-key",
                     "inference_key_file": f"{KEYS_DIR}/inference-key"}
    assert d.kubernetes.keys_secret == "tritonllm-keys" and not d.server.no_auth
    pod = _by_kind(manifests, "Deployment")["spec"]["template"]["spec"]
    rt = _by_kind(manifests, "ServingRuntime")["spec"]
    kserve_conf = manifests["kserve/configmap.yaml"]["data"]["tritonllm.yaml"]
    assert _server_key_paths(kserve_conf) == paths
    for (c, *_), volumes in ((pod["containers"], pod["volumes"]),
                             (rt["containers"], rt["volumes"])):
        served = _served_files(c, volumes)
        assert served == {paths["admin_key_file"]: ("tritonllm-keys", "admin-key"),
                          paths["inference_key_file"]: ("tritonllm-keys", "inference-key")}
        (config,) = [v for v in volumes if v["name"] == "config"]
        assert config["projected"]["defaultMode"] == SECRET_FILE_MODE == 0o440
        assert all("mode" not in i for src in config["projected"]["sources"]
                   for i in src.get("secret", {}).get("items", []))
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
        assert mount["readOnly"] and mount["mountPath"] == str(KEYS_DIR.parent)
        assert c["securityContext"]["runAsGroup"] == IMAGE_USER_ID
    assert pod["securityContext"]["fsGroup"] == IMAGE_USER_ID
    predictor = _by_kind(manifests, "InferenceService")["spec"]["predictor"]
    assert predictor["securityContext"] == {"fsGroup": IMAGE_USER_ID}
    # Health stays open: the probes need no key.
    (c,) = pod["containers"]
    assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe",
                                              "livenessProbe")} <= {"/v2/health/ready",
                                                                    "/v2/health/live"}


def _render_with(kubernetes: dict[str, Any], server: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    data = yaml.safe_load(CPU_FILE.read_text("utf-8"))
    data["kubernetes"] = {**data["kubernetes"], **kubernetes}
    data["server"] = {**data["server"], **(server or {})}
    text = yaml.safe_dump(data, sort_keys=False)
    return render_manifests(parse_deployment(data), text)


def test_tls_secret_and_mutual_tls() -> None:
    m = _render_with({"tls_secret": "tritonllm-tls", "inference_key": False},
                     {"tls": {"cert": f"{TLS_DIR}/tls.crt", "key": f"{TLS_DIR}/tls.key",
                              "ca": f"{TLS_DIR}/ca.crt"}})
    for rel in ("base/deployment.yaml", "base/configmap.yaml", "base/networkpolicy.yaml"):
        kubernetes_validate.validate(m[rel], KUBERNETES_VERSION, strict=True)
    conf = m["base/configmap.yaml"]["data"]["tritonllm.yaml"]
    assert _server_key_paths(conf) == {"admin_key_file": f"{KEYS_DIR}/admin-key",
                                       "tls.cert": f"{TLS_DIR}/tls.crt",
                                       "tls.key": f"{TLS_DIR}/tls.key",
                                       "tls.ca": f"{TLS_DIR}/ca.crt"}
    pod = m["base/deployment.yaml"]["spec"]["template"]["spec"]
    assert _served_files(pod["containers"][0], pod["volumes"]) == {
        f"{KEYS_DIR}/admin-key": ("tritonllm-keys", "admin-key"),
        f"{TLS_DIR}/tls.crt": ("tritonllm-tls", "tls.crt"),
        f"{TLS_DIR}/tls.key": ("tritonllm-tls", "tls.key"),
        f"{TLS_DIR}/ca.crt": ("tritonllm-tls", "ca.crt")}
    # Without server.tls, the TLS Secret's certificate and key (no client CA: plain TLS).
    plain = _render_with({"tls_secret": "tritonllm-tls"})
    paths = _server_key_paths(plain["base/configmap.yaml"]["data"]["tritonllm.yaml"])
    assert {k for k in paths if k.startswith("tls.")} == {"tls.cert", "tls.key"}


def test_no_auth_and_no_secret() -> None:
    m = _render_with({"keys_secret": ""}, {"no_auth": True})
    pod = m["base/deployment.yaml"]["spec"]["template"]["spec"]
    assert _served_files(pod["containers"][0], pod["volumes"]) == {}
    assert _server_key_paths(m["base/configmap.yaml"]["data"]["tritonllm.yaml"]) == {}
    kubernetes_validate.validate(m["base/deployment.yaml"], KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("kubernetes", "server", "named"), [
    ({}, {"no_auth": True}, "kubernetes.keys_secret: server.no_auth"),
    ({}, {"admin_key_file": "/run/secrets/admin"}, "server.admin_key_file: /run/secrets/admin"),
    ({"keys_secret": ""}, {"admin_key_file": f"{KEYS_DIR}/admin-key"},
     "kubernetes.keys_secret is empty"),
    ({}, {"tls": {"cert": f"{TLS_DIR}/tls.crt", "key": f"{TLS_DIR}/tls.key"}},
     "server.tls.cert: .* kubernetes.tls_secret is empty"),
    ({"tls_secret": "t"}, {"tls": {"cert": f"{KEYS_DIR}/tls.crt", "key": f"{TLS_DIR}/k"}},
     "server.tls.cert: .* a file of the Secret kubernetes.tls_secret"),
    ({"inference_key": False}, {"inference_key_file": f"{KEYS_DIR}/inference-key"},
     "kubernetes.inference_key: false"),
])
def test_key_paths_no_secret_provides_are_named(kubernetes: dict[str, Any],
                                                server: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _render_with(kubernetes, server)


def test_network_policy_lets_in_only_the_served_ports(manifests: dict[str, Any]) -> None:
    conf = yaml.safe_load(_by_kind(manifests, "ConfigMap")["data"]["tritonllm.yaml"])
    d = parse_deployment(conf)
    netpol = _by_kind(manifests, "NetworkPolicy")
    spec = netpol["spec"]
    dep = _by_kind(manifests, "Deployment")
    assert spec["podSelector"] == dep["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress"]  # egress is not restricted
    inference, metrics = spec["ingress"]
    assert inference["from"] == [{"podSelector": {"matchLabels": {}}}]  # the namespace's pods
    assert {(p["protocol"], p["port"]) for p in inference["ports"]} == {
        ("TCP", d.server.http_port), ("TCP", d.server.grpc_port)}
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": d.kubernetes.monitoring_namespace}}}]
    assert [(p["protocol"], p["port"]) for p in metrics["ports"]] == [
        ("TCP", d.server.metrics_port)]
    # Every port the pod opens is in exactly one rule.
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert sorted(p["containerPort"] for p in c["ports"]) == sorted(
        p["port"] for rule in spec["ingress"] for p in rule["ports"])
    front = _render_with({"inference_from": {"app.kubernetes.io/name": "tritonllm-openai"},
                          "monitoring_namespace": "observability"})
    rules = front["base/networkpolicy.yaml"]["spec"]["ingress"]
    assert rules[0]["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "tritonllm-openai"}}}]
    assert rules[1]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"}
    kubernetes_validate.validate(front["base/networkpolicy.yaml"], KUBERNETES_VERSION,
                                 strict=True)


def test_no_secret_value_in_the_rendered_files(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys exist where the render runs (the environment, a file): none reaches a file,
    and no Secret object is rendered; the commands to make the Secrets are there instead."""
    value = "s3cret-value-0123456789abcdef"
    monkeypatch.setenv(security.ADMIN_KEY_ENV, value)
    monkeypatch.setenv(security.INFERENCE_KEY_ENV, value[::-1])
    (tmp_path / "admin-key").write_text(value)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["deploy", "k8s", "--config", str(GPU_FILE),
                                  "--out", str(tmp_path / "k8s")])
    assert r.exit_code == 0, r.output
    for path in (tmp_path / "k8s").rglob("*.yaml"):
        text = path.read_text()
        assert value not in text and value[::-1] not in text, path
        for obj in yaml.safe_load_all(text):
            assert obj.get("kind") != "Secret", path
    kust = (tmp_path / "k8s" / "base" / "kustomization.yaml").read_text()
    assert "kubectl -n llm create secret generic tritonllm-keys" in kust
    assert "--from-file=admin-key=./admin-key" in kust and "rollout restart" in kust


def test_a_changed_deployment_file_rolls_the_pods() -> None:
    text = GPU_FILE.read_text("utf-8")
    d = load_deployment(GPU_FILE)
    before = render_manifests(d, text)["base/deployment.yaml"]
    after = render_manifests(d, text.replace("max_batch_size: 64", "max_batch_size: 32"))[
        "base/deployment.yaml"]
    assert (before["spec"]["template"]["metadata"]["annotations"]
            != after["spec"]["template"]["metadata"]["annotations"])


def test_autoscalers_scale_on_the_recorded_signal(manifests: dict[str, Any]) -> None:
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    assert QUEUE_COMPUTE_RATIO in recorded
    hpa = _by_kind(manifests, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == QUEUE_COMPUTE_RATIO
    (rule,) = adapter_values()["rules"]["custom"]
    assert rule["name"]["as"] == QUEUE_COMPUTE_RATIO
    assert rule["seriesQuery"].startswith(QUEUE_COMPUTE_RATIO)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    so = _by_kind(manifests, "ScaledObject")
    assert QUEUE_COMPUTE_RATIO in so["spec"]["triggers"][0]["metadata"]["query"]
    assert so["spec"]["scaleTargetRef"]["name"] == hpa["spec"]["scaleTargetRef"]["name"]
    pr = _by_kind(manifests, "PrometheusRule")
    # The operator names a ServiceMonitor's scrape job after the Service: up{job=...} reads it.
    assert pr["spec"]["groups"] == rule_groups(job=_by_kind(manifests, "Service")["metadata"][
        "name"])
    # The rule selects the LLM model by the contract's name.
    assert f'model="{C.LLM}"' in pr["spec"]["groups"][0]["rules"][0]["expr"]


def test_promtool_accepts_the_rules(tmp_path: Path, manifests: dict[str, Any]) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(
        {"groups": _by_kind(manifests, "PrometheusRule")["spec"]["groups"]}))
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(records()) + len(alerts())} rules found" in r.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": QUEUE_COMPUTE_RATIO, "expr": "rate(nv_inference_queue_duration_us[1m]"}]}]}))
    assert subprocess.run(["promtool", "check", "rules", str(bad)],
                          capture_output=True).returncode != 0


def test_the_recording_rule_computes_queue_over_compute(tmp_path: Path) -> None:
    """promtool runs the rule on series shaped like Triton's: per pod, per model counters.

    Pod a: the LLM queues 30 ms and computes 60 ms per second -> 0.5; pod b: 90 over 30 -> 3.
    The ensemble's own counters (much larger) must not count.
    """
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}))
    series = []
    for pod, queue_us, compute_us in (("a", 30_000, 60_000), ("b", 90_000, 30_000)):
        # The ensemble queues 10x longer than it computes: counted, it would move both ratios.
        for model, q_scale, c_scale in ((C.LLM, 1, 1), (C.ENSEMBLE, 50, 5)):
            labels = f'namespace="llm",pod="{pod}",model="{model}",version="1"'
            series.append({"series": f"nv_inference_queue_duration_us{{{labels}}}",
                           "values": f"0+{queue_us * q_scale * 60}x10"})
            series.append({"series": f"nv_inference_compute_infer_duration_us{{{labels}}}",
                           "values": f"0+{compute_us * c_scale * 60}x10"})
    test = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{
            "expr": QUEUE_COMPUTE_RATIO, "eval_time": "5m",
            "exp_samples": [
                {"labels": f'{QUEUE_COMPUTE_RATIO}{{namespace="llm",pod="a"}}', "value": 0.5},
                {"labels": f'{QUEUE_COMPUTE_RATIO}{{namespace="llm",pod="b"}}', "value": 3},
            ]}]}]}
    spec = tmp_path / "test.yml"
    spec.write_text(yaml.safe_dump(test))
    r = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_writes_every_file(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["deploy", "k8s", "--config", str(GPU_FILE),
                                  "--out", str(tmp_path / "k8s")])
    assert r.exit_code == 0, r.output
    written = sorted(str(p.relative_to(tmp_path / "k8s"))
                     for p in (tmp_path / "k8s").rglob("*.yaml"))
    assert written == sorted(FILES)
    for rel in FILES:  # every file is YAML that a kustomization lists or is the adapter's
        yaml.safe_load((tmp_path / "k8s" / rel).read_text())
    kust = yaml.safe_load((tmp_path / "k8s" / "base" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (tmp_path / "k8s" / "base" / res).is_file()


def test_cli_bad_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("checkpoint: /c\nserver:\n  htp_port: 8000\n")
    r = CliRunner().invoke(main, ["deploy", "k8s", "--config", str(f), "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "server.htp_port: unknown key" in r.output
    assert not (tmp_path / "o").exists()


def test_docker_generated_files_are_current() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_deploy_files.py"),
                        "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
