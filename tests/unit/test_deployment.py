"""The deployment file (tritonllm/deployment.py): every bad key or value is named; the server
section's keys and TLS reach the server (tritonllm/launch.py)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tritonllm import security, triton_binary, triton_command
from tritonllm.cli import main
from tritonllm.deployment import ServerSection, TlsSection, load_deployment, parse_deployment
from tritonllm.errors import ConfigError
from tritonllm.launch import LaunchPlan, access_policy, server_argv, tls_settings

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
    # keys, TLS, address
    ({"checkpoint": "/c", "server": {"host": ""}}, "server.host: an address"),
    ({"checkpoint": "/c", "server": {"host": ["::"]}}, "server.host: expected str"),
    ({"checkpoint": "/c", "server": {"admin_key_file": "keys/admin"}},
     "server.admin_key_file: must be an absolute path"),
    ({"checkpoint": "/c", "server": {"inference_key_file": 7}},
     "server.inference_key_file: expected a path"),
    ({"checkpoint": "/c", "server": {"admin_key_file": "/k/a", "inference_key_file": "/k/a"}},
     "server.inference_key_file: the admin and the inference key must differ"),
    ({"checkpoint": "/c", "server": {"no_auth": "yes"}}, "server.no_auth: expected bool"),
    ({"checkpoint": "/c", "server": {"no_auth": True, "admin_key_file": "/k/a"}},
     "server.no_auth: opens every endpoint"),
    ({"checkpoint": "/c", "server": {"tls": "/etc/tls"}}, "server.tls: expected a mapping"),
    ({"checkpoint": "/c", "server": {"tls": {"cert": "/t/c"}}}, "server.tls.key: required"),
    ({"checkpoint": "/c", "server": {"tls": {"cert": "/t/c", "key": "/t/k", "crt": "/x"}}},
     "server.tls.crt: unknown key"),
    ({"checkpoint": "/c", "server": {"tls": {"cert": "/t/c", "key": "/t/k", "ca": "ca.crt"}}},
     "server.tls.ca: must be an absolute path"),
    ({"checkpoint": "/c", "kubernetes": {"keys_secret": "Keys_1"}}, "kubernetes.keys_secret"),
    ({"checkpoint": "/c", "kubernetes": {"tls_secret": ["t"]}},
     "kubernetes.tls_secret: expected str"),
    ({"checkpoint": "/c", "kubernetes": {"inference_key": "no"}},
     "kubernetes.inference_key: expected bool"),
    ({"checkpoint": "/c", "kubernetes": {"inference_from": ["app"]}},
     "kubernetes.inference_from: expected a mapping"),
    ({"checkpoint": "/c", "kubernetes": {"inference_from": {"app": 1}}},
     "kubernetes.inference_from.app: a label value"),
    ({"checkpoint": "/c", "kubernetes": {"monitoring_namespace": "Mon"}},
     "kubernetes.monitoring_namespace"),
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


def test_security_defaults_and_types() -> None:
    d = parse_deployment({"checkpoint": "/c"})
    s, k = d.server, d.kubernetes
    assert s.host == "0.0.0.0"  # a container listens beyond its loopback
    assert (s.admin_key_file, s.inference_key_file, s.no_auth, s.tls) == (None, None, False, None)
    assert (k.keys_secret, k.inference_key, k.tls_secret, k.inference_from,
            k.monitoring_namespace) == ("tritonllm-keys", True, "", {}, "monitoring")
    d = parse_deployment({"checkpoint": "/c", "server": {
        "host": "::", "admin_key_file": "/k/admin", "tls": {"cert": "/t/c", "key": "/t/k"}}})
    assert d.server.host == "::"
    assert d.server.admin_key_file == PurePosixPath("/k/admin")
    assert d.server.tls == TlsSection(cert=PurePosixPath("/t/c"), key=PurePosixPath("/t/k"))
    assert parse_deployment({"checkpoint": "/c", "server": {"tls": None}}).server.tls is None


KEY = "k3y-0f-the-admin-0123456789"
INFERENCE = "inf3rence-key-0123456789"


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A server section with key files (>= 16 characters) and TLS files in tmp_path."""
    for env in (security.ADMIN_KEY_ENV, security.INFERENCE_KEY_ENV):
        monkeypatch.delenv(env, raising=False)
    files = {"admin": KEY, "inference": INFERENCE, "cert": "CERT", "key": "PEM KEY",
             "ca": "CA"}
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    return {"admin_key_file": str(tmp_path / "admin"),
            "inference_key_file": str(tmp_path / "inference"),
            "tls": {"cert": str(tmp_path / "cert"), "key": str(tmp_path / "key"),
                    "ca": str(tmp_path / "ca")}}


def _deployment(server: dict[str, Any]) -> Any:
    return parse_deployment({"checkpoint": "/c", "engine": "cpu", "server": server})


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_managed_argv_passes_the_paths_to_serve(tmp_path: Path,
                                                secured: dict[str, Any]) -> None:
    d = _deployment(secured)
    argv, _env = server_argv(d, tmp_path, tmp_path / "work")
    assert argv[1:4] == ["-m", "tritonllm", "serve"]
    assert _flag(argv, "--host") == "0.0.0.0"
    assert _flag(argv, "--admin-key-file") == secured["admin_key_file"]
    assert _flag(argv, "--inference-key-file") == secured["inference_key_file"]
    for name in ("cert", "key", "ca"):
        assert _flag(argv, f"--tls-{name}") == secured["tls"][name]
    assert "--no-auth" not in argv
    assert KEY not in " ".join(argv)  # serve reads the files: no value on the command line
    # serve has every option launch passes (click parses them before --help).
    r = CliRunner().invoke(main, [*argv[3:], "--help"])
    assert r.exit_code == 0, r.output
    bare, _ = server_argv(_deployment({"no_auth": True, "host": "10.0.0.1"}), tmp_path,
                          tmp_path / "work")
    assert "--no-auth" in bare and _flag(bare, "--host") == "10.0.0.1"
    assert not {"--admin-key-file", "--inference-key-file", "--tls-cert"} & set(bare)


@pytest.fixture
def fake_tritonserver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """find_tritonserver finds a plain binary; the ServerOptions made are recorded."""
    made: list[Any] = []
    real = triton_command.tritonserver_command

    def record(options: Any, *args: Any, **kwargs: Any) -> list[str]:
        made.append(options)
        return real(options, *args, **kwargs)

    install = SimpleNamespace(executable=tmp_path / "bin" / "tritonserver", stubs_dir=None,
                              caches_dir=None)
    monkeypatch.setattr(triton_binary, "find_tritonserver", lambda: install)
    monkeypatch.setattr(triton_binary, "server_environment", lambda _install: {})
    monkeypatch.setattr(triton_command, "tritonserver_command", record)
    return made


def test_unmanaged_argv_restricts_with_the_keys_and_tls(
        tmp_path: Path, secured: dict[str, Any], fake_tritonserver: list[Any]) -> None:
    d = _deployment({**secured, "managed": False})
    argv, _env = server_argv(d, tmp_path, tmp_path / "work")
    (options,) = fake_tritonserver
    assert options.host == "0.0.0.0" and "--http-address=0.0.0.0" in argv
    assert options.access.admin_key.reveal() == KEY
    assert options.access.inference_key.reveal() == INFERENCE
    assert options.tls == security.TlsSettings(tmp_path / "cert", tmp_path / "key",
                                               tmp_path / "ca")
    admin = f"{','.join(security.ADMIN_GROUPS)}:{security.ADMIN_HEADER}={KEY}"
    assert f"--http-restricted-api={admin}" in argv
    assert f"--grpc-restricted-protocol={admin}" in argv
    assert any(a.endswith(f"{security.INFERENCE_HEADER}={INFERENCE}") for a in argv)
    assert "--grpc-use-ssl=true" in argv and "--grpc-use-ssl-mutual=true" in argv
    assert f"--grpc-server-cert={(tmp_path / 'cert').resolve()}" in argv
    # The argv holds the keys (Triton takes them there): what is shown does not.
    shown = LaunchPlan(tmp_path, tmp_path, True, tuple(argv), {}).shown()
    assert KEY not in shown and INFERENCE not in shown
    assert f"{security.ADMIN_HEADER}=***" in shown and f"{security.INFERENCE_HEADER}=***" in shown
    assert shown.split()[0] == argv[0]


def test_unmanaged_without_keys_closes_admin_and_no_auth_opens(
        tmp_path: Path, secured: dict[str, Any], fake_tritonserver: list[Any]) -> None:
    argv, _ = server_argv(_deployment({"managed": False}), tmp_path, tmp_path / "w")
    restricted = [a for a in argv if a.startswith("--http-restricted-api=")]
    assert len(restricted) == 1 and security.ADMIN_HEADER in restricted[0]  # a launcher's key
    assert fake_tritonserver[-1].tls is None
    argv, _ = server_argv(_deployment({"managed": False, "no_auth": True}), tmp_path,
                          tmp_path / "w")
    assert not [a for a in argv if "restricted" in a]
    assert fake_tritonserver[-1].access.no_auth


def test_unmanaged_names_the_bad_file(tmp_path: Path, secured: dict[str, Any]) -> None:
    def section(**fields: Any) -> ServerSection:
        return _deployment({**secured, **fields}).server

    with pytest.raises(ConfigError, match=r"server\.admin_key_file: cannot read"):
        access_policy(section(admin_key_file=str(tmp_path / "none")), environ={})
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match=r"server\.inference_key_file .*16 characters"):
        access_policy(section(inference_key_file=str(tmp_path / "short")), environ={})
    with pytest.raises(ConfigError, match=r"server\.tls\.ca: .* is not a file"):
        tls_settings(section(tls={**secured["tls"], "ca": str(tmp_path / "none")}))
    # The environment stands in for a file, as for tritonllm serve.
    env = {security.ADMIN_KEY_ENV: KEY}
    assert access_policy(_deployment({}).server, environ=env).admin_key == security.Secret(
        KEY, "env")


def test_compose_mounts_the_gpu_files_keys() -> None:
    """docker/tritonllm.yaml's key files are where compose mounts docker/keys (read-only)."""
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    d = load_deployment(ROOT / "docker" / "tritonllm.yaml")
    mounts = compose["services"]["triton-gpu"]["volumes"]
    for path in (d.server.admin_key_file, d.server.inference_key_file):
        assert path is not None
        assert f"./keys:{path.parent}:ro" in mounts
