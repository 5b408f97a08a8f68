"""docker/: the Dockerfiles, the compose stack and its Prometheus/Grafana files.

No Docker engine runs here: the Dockerfiles are parsed with dockerfile-parse and checked for
what a reviewer checks (pinned bases, a non-root user, no secrets, COPY sources that exist,
entrypoint commands our CLI has); the compose file goes through Debian's ``docker-compose
config`` (no daemon needed) and the Prometheus config through ``promtool check config``.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dockerfile_parse import DockerfileParser

from tritonllm.cli import main
from tritonllm.dashboard import DATASOURCE_UID, dashboard
from tritonllm.deployment import IMAGE_USER_ID, load_deployment
from tritonllm.trtllm_release import NGC_IMAGE

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = {"gpu": DOCKER / "Dockerfile", "cpu": DOCKER / "Dockerfile.cpu"}
SECRET = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL)", re.IGNORECASE)


@functools.cache
def _parse(kind: str) -> DockerfileParser:
    # dockerfile-parse reads <path>/Dockerfile: give it a copy under that name.
    folder = Path(tempfile.mkdtemp(prefix="dockerfile-"))
    (folder / "Dockerfile").write_bytes(DOCKERFILES[kind].read_bytes())
    return DockerfileParser(path=str(folder))


def _values(df: DockerfileParser, instruction: str) -> list[str]:
    return [i["value"] for i in df.structure if i["instruction"] == instruction]


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_base_image_is_pinned(kind: str) -> None:
    df = _parse(kind)
    (base,) = _values(df, "FROM")
    name, _, tag = base.rpartition(":")
    assert name and tag and tag != "latest" and "$" not in base, base
    if kind == "gpu":
        # The tag that carries the TensorRT-LLM release our trtllm builder targets.
        assert base == NGC_IMAGE


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_runs_as_the_non_root_user(kind: str) -> None:
    users = _values(_parse(kind), "USER")
    assert users and users[-1] == str(IMAGE_USER_ID)  # the pods' runAsUser
    assert any(f"--uid {IMAGE_USER_ID}" in v for v in _values(_parse(kind), "RUN"))


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_no_secret_in_env_or_arg(kind: str) -> None:
    df = _parse(kind)
    for key in [*df.envs, *df.args]:
        assert not SECRET.search(key), f"{DOCKERFILES[kind].name}: {key} looks like a secret"


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_every_copy_source_exists(kind: str) -> None:
    for value in _values(_parse(kind), "COPY"):
        *sources, _dest = value.split()
        for src in sources:
            assert not src.startswith("--from"), value
            assert (ROOT / src).exists(), f"COPY {src}: not in the build context"


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_entrypoint_and_healthcheck_are_our_cli(kind: str) -> None:
    df = _parse(kind)
    entry = json.loads(_values(df, "ENTRYPOINT")[-1])
    cmd = json.loads(_values(df, "CMD")[-1])
    assert entry[0] == "tritonllm"
    for argv in (entry[1:] + cmd, _healthcheck(df)[1:]):
        # --help after the arguments: click parses them first, so an unknown command or
        # option fails here.
        r = CliRunner().invoke(main, [*argv, "--help"])
        assert r.exit_code == 0, (argv, r.output)
    assert _healthcheck(df)[0] == "tritonllm"
    conf = cmd[cmd.index("--config") + 1]
    copied = {v.split()[-1]: v.split()[0] for v in _values(df, "COPY")}
    # The image's default deployment file is one of ours, and it parses.
    load_deployment(ROOT / copied[conf])


def _healthcheck(df: DockerfileParser) -> list[str]:
    (value,) = _values(df, "HEALTHCHECK")
    return list(json.loads(value[value.index("CMD") + 3:].strip()))


def test_cpu_image_installs_with_setup_sh() -> None:
    """One list of install steps: Dockerfile.cpu runs scripts/setup.sh."""
    runs = " ".join(_values(_parse("cpu"), "RUN"))
    assert "scripts/setup.sh" in runs and "pip install" not in runs


def test_gpu_image_installs_nothing_cpu_only() -> None:
    runs = " ".join(_values(_parse("gpu"), "RUN"))
    assert "pip install ." in runs and "[" not in runs.split("pip install")[1].split()[0]
    assert "check_installed_release" in runs


def _compose() -> dict:
    r = subprocess.run(["docker-compose", "-f", str(DOCKER / "compose.yaml"), "config"],
                       capture_output=True, text=True, cwd=DOCKER)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_compose_file_is_valid_and_agrees_with_the_deployment_files() -> None:
    conf = _compose()
    assert set(conf["services"]) == {"triton", "triton-gpu", "prometheus", "grafana"}
    gpu = conf["services"]["triton-gpu"]
    assert gpu["profiles"] == ["gpu"]  # `up` starts it only with --profile gpu
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for service, file in ((conf["services"]["triton"], "tritonllm.cpu.yaml"),
                          (gpu, "tritonllm.yaml")):
        d = load_deployment(DOCKER / file)
        published = {int(p["target"]) for p in service["ports"]}
        assert published == {d.server.http_port, d.server.grpc_port, d.server.metrics_port}
        # docker-compose 1.29 prints volumes as SOURCE:TARGET:MODE
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert mounts[str(d.cache_dir)] == "engine-cache"  # the named volume
        assert Path(mounts["/etc/tritonllm/tritonllm.yaml"]).name == file
        assert Path(mounts["/etc/tritonllm/tritonllm.yaml"]).is_file()
        assert Path(d.checkpoint).parent.as_posix() in mounts
        assert service["read_only"] is True
    assert {"engine-cache", "prometheus-data", "grafana-data"} <= set(conf["volumes"])
    for service in ("prometheus", "grafana"):
        for v in conf["services"][service]["volumes"]:
            source = v.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), source
        _name, _, tag = conf["services"][service]["image"].rpartition(":")
        assert tag and tag != "latest"


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DOCKER / "prometheus" / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    r = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    metrics_port = load_deployment(DOCKER / "tritonllm.cpu.yaml").server.metrics_port
    assert all(t.endswith(f":{metrics_port}") for t in targets)


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == DATASOURCE_UID
    shipped = json.loads((DOCKER / "grafana/dashboards/tritonllm.json").read_text())
    assert shipped == dashboard()
    for panel in shipped["panels"]:
        if panel["type"] != "row":  # rows hold no queries (test_dashboard.py checks the rest)
            assert panel["datasource"]["uid"] == DATASOURCE_UID and panel["targets"]
