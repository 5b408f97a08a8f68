"""The deployment file (tritonllm/deployment.py): every bad key or value is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm.cli import main
from tritonllm.deployment import load_deployment, parse_deployment
from tritonllm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["docker/tritonllm.yaml", "docker/tritonllm.cpu.yaml"])
def test_shipped_files_parse(path: str) -> None:
    d = load_deployment(ROOT / path)
    assert d.build_settings().engine == d.engine


@pytest.mark.parametrize(("data", "named"), [
    ({}, "checkpoint: required"),
    ({"checkpoint": "rel/path"}, "checkpoint: must be an absolute path"),
    ({"checkpoint": "/c", "engin": "cpu"}, "engin: unknown key"),
    ({"checkpoint": "/c", "engine": "vllm"}, "engine: one of"),
    ({"checkpoint": "/c", "name": "Has_Caps"}, "name: a lower-case DNS label"),
    ({"checkpoint": "/c", "repo_dir": "/models"}, "repo_dir: needs a parent folder"),
    ({"checkpoint": "/c", "server": {"htp_port": 1}}, "server.htp_port: unknown key"),
    ({"checkpoint": "/c", "server": {"http_port": "x"}}, "server.http_port: expected int"),
    ({"checkpoint": "/c", "server": {"http_port": 8000, "grpc_port": 8000}}, "must differ"),
    ({"checkpoint": "/c", "server": {"model_control_mode": "poll"}},
     "server.model_control_mode"),
    ({"checkpoint": "/c", "build": {"tp": "2"}}, "build.tp: expected int"),
    ({"checkpoint": "/c", "build": {"out": "/x"}}, "build.out: set by tritonllm launch"),
    ({"checkpoint": "/c", "repository": {"engine_path": "/x"}},
     "repository.engine_path: set by tritonllm launch"),
    ({"checkpoint": "/c", "repository": {"max_queue_size": -1}}, "repository.max_queue_size"),
    ({"checkpoint": "/c", "kubernetes": {"memory": "lots"}}, "kubernetes.memory"),
    ({"checkpoint": "/c", "kubernetes": {"replicas": 9, "max_replicas": 4}}, "max_replicas"),
    ({"checkpoint": "/c", "kubernetes": {"cache_access_mode": "ReadOnlyMany"}},
     "kubernetes.cache_access_mode"),
    ([1, 2], "expected a mapping"),
])
def test_bad_values_are_named(data: object, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_deployment(data)


def test_launch_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["launch", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and missing.output.count("\n") == 1
    assert "cannot read the deployment file" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("checkpoint: /c\nserver: [\n")
    r = CliRunner().invoke(main, ["launch", "--config", str(bad)])
    assert r.exit_code == 1 and "not valid YAML" in r.output and r.output.count("\n") == 1


def test_launch_names_a_missing_checkpoint(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text(f"checkpoint: {tmp_path}/none\nengine: cpu\ncache_dir: {tmp_path}/c\n"
                 f"repo_dir: {tmp_path}/w/models\n")
    r = CliRunner().invoke(main, ["launch", "--config", str(f), "--dry-run"])
    assert r.exit_code == 1 and f"{tmp_path}/none" in r.output, r.output
    assert not (tmp_path / "w" / "models").exists()
