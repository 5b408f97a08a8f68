"""Keys, the access policy and TLS settings as tritonserver arguments (no server here; the real
server's behaviour is tests/integration/test_security.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm import security as S
from tritonllm.errors import ConfigError
from tritonllm.server import ServerOptions
from tritonllm.triton_command import tritonserver_command

KEY = "k" * 24  # a test key, not a secret
OTHER = "o" * 24


def test_a_secret_never_shows_its_value() -> None:
    s = S.Secret(KEY, "--admin-key-file /x")
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", f"{s}", repr([s]), repr({"k": s})):
        assert KEY not in shown
    assert s.reveal() == KEY and s == S.Secret(KEY, "elsewhere") and s != S.Secret(OTHER, "x")
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert S.mask(f"header={KEY}; other", [s, None]) == "header=***; other"


def test_keys_come_from_files_or_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text(f"\n  {KEY}  \nignored\n")
    assert S.read_secret(f, "ENV", "--admin-key-file", {}).reveal() == KEY
    assert S.read_secret(None, "ENV", "--x", {"ENV": KEY}).reveal() == KEY
    assert S.read_secret(None, "ENV", "--x", {}) is None
    with pytest.raises(ConfigError, match="--admin-key-file: cannot read"):
        S.read_secret(tmp_path / "missing", "ENV", "--admin-key-file", {})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        S.read_secret(None, "ENV", "--x", {"ENV": "short"})
    for bad in ("a" * 16 + " b", "a" * 16 + ":b", "a" * 16 + ",b"):
        with pytest.raises(ConfigError, match="may not hold"):
            S.read_secret(None, "ENV", "--x", {"ENV": bad})


def test_the_policy_makes_triton_restrictions_for_http_and_grpc() -> None:
    p = S.AccessPolicy(admin_key=S.Secret(KEY, "a"), inference_key=S.Secret(OTHER, "i"))
    args = p.tritonserver_args()
    admin = f"{','.join(S.ADMIN_GROUPS)}:{S.ADMIN_HEADER}={KEY}"
    infer = f"{','.join(S.INFERENCE_GROUPS)}:{S.INFERENCE_HEADER}={OTHER}"
    assert args == [f"--http-restricted-api={admin}", f"--grpc-restricted-protocol={admin}",
                    f"--http-restricted-api={infer}", f"--grpc-restricted-protocol={infer}"]
    assert set(S.ADMIN_GROUPS) | set(S.INFERENCE_GROUPS) | {"health"} == set(S.TRITON_GROUPS)
    assert KEY not in p.describe() and "health is open" in p.describe()
    # no admin key given: a random one the launcher alone holds; inference stays open
    closed = S.AccessPolicy()
    assert closed.admin is not None and len(closed.admin.reveal()) >= 32
    assert S.AccessPolicy().admin != closed.admin
    assert len(closed.tritonserver_args()) == 2 and "inference and metadata are open" in \
        closed.describe()
    assert S.AccessPolicy(no_auth=True).tritonserver_args() == []
    with pytest.raises(ConfigError, match="--no-auth"):
        S.AccessPolicy(no_auth=True, admin_key=S.Secret(KEY, "a"))
    with pytest.raises(ConfigError, match="must differ"):
        S.AccessPolicy(admin_key=S.Secret(KEY, "a"), inference_key=S.Secret(KEY, "i"))


def test_headers_follow_tritons_rule_per_protocol() -> None:
    a, i = S.Secret(KEY, "a"), S.Secret(OTHER, "i")
    assert S.auth_headers("http", admin=a, inference=i) == {S.ADMIN_HEADER: KEY,
                                                            S.INFERENCE_HEADER: OTHER}
    assert S.auth_headers("grpc", inference=i) == {
        S.GRPC_HEADER_PREFIX + S.INFERENCE_HEADER: OTHER}


def test_tls_settings_and_the_server_command(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("PEM")
    with pytest.raises(ConfigError, match="--tls-cert"):
        S.TlsSettings(tmp_path / "nope.pem", tmp_path / "k.pem")
    tls = S.TlsSettings(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    assert tls.mutual and "--grpc-use-ssl-mutual=true" in tls.tritonserver_args()
    policy = S.AccessPolicy(admin_key=S.Secret(KEY, "a"))
    o = ServerOptions(repo=tmp_path, access=policy, tls=tls, managed=True)
    argv = tritonserver_command(o, Path("tritonserver"), ports={
        "http": 1, "grpc": 2, "metrics": 3, "triton_http": 4}, admin_key=KEY)
    assert argv.count(f"--grpc-restricted-protocol={','.join(S.ADMIN_GROUPS)}:"
                      f"{S.ADMIN_HEADER}={KEY}") == 1
    assert not any(a.startswith("--grpc-restricted-protocol=model-repository:") for a in argv)
    assert f"--grpc-server-cert={(tmp_path / 'c.pem').resolve()}" in argv
    assert KEY not in repr(o)
    with pytest.raises(ConfigError, match="managed by tritonllm when keys are set"):
        ServerOptions(repo=tmp_path, access=policy,
                      extra_args=("--grpc-restricted-protocol=inference:a=b",))
    with pytest.raises(ConfigError, match="TLS arguments are managed"):
        ServerOptions(repo=tmp_path, tls=tls, extra_args=("--grpc-use-ssl=true",))


def test_serve_refuses_contradictory_or_weak_security_options(tmp_path: Path) -> None:
    from tritonllm.cli import main

    (tmp_path / "key").write_text(KEY)
    (tmp_path / "short").write_text("short")
    (tmp_path / "c.pem").write_text("PEM")
    runner = CliRunner()
    r = runner.invoke(main, ["serve", str(tmp_path), "--no-auth", "--admin-key-file",
                             str(tmp_path / "key")])
    assert r.exit_code == 2 and "--no-auth" in r.output
    r = runner.invoke(main, ["serve", str(tmp_path), "--admin-key-file",
                             str(tmp_path / "short")])
    assert r.exit_code == 1 and "at least 16 characters" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["serve", str(tmp_path), "--tls-cert", str(tmp_path / "c.pem")])
    assert r.exit_code == 2 and "--tls-key" in r.output
    r = runner.invoke(main, ["serve", "--help"])
    assert "127.0.0.1" in r.output
