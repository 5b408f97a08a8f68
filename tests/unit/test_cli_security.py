"""Keys and TLS on the client command line (generate, health, models, perf): keys from files
or the environment reach the client, bad ones are one-line errors naming the option, and no
output, error or run.json holds a key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from tritonllm.cli import main
from tritonllm.cli.client import Connection
from tritonllm.client import ClientError, Unauthorized
from tritonllm.security import ADMIN_KEY_ENV, INFERENCE_KEY_ENV, Secret

INFERENCE = "inference-key-0123456789"
ADMIN = "admin-key-9876543210abcdef"


@pytest.fixture(autouse=True)
def _no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (INFERENCE_KEY_ENV, ADMIN_KEY_ENV, "TRITONLLM_URL"):
        monkeypatch.delenv(name, raising=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class FakeClient:
    """Stands in for LLMClient: records its arguments; ``fail`` is raised by every call."""

    made: ClassVar[list[tuple[tuple[Any, ...], dict[str, Any]]]] = []
    fail: ClassVar[Exception | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        FakeClient.made.append((args, kwargs))

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _call(self) -> None:
        if FakeClient.fail is not None:
            raise FakeClient.fail

    def health(self) -> Any:
        self._call()
        return type("H", (), {"live": True, "ready": True})()

    def models(self) -> list[Any]:
        self._call()
        return []

    def load_model(self, name: str) -> None:
        self._call()

    unload_model = load_model


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.made, FakeClient.fail = [], None
    monkeypatch.setattr("tritonllm.client.LLMClient", FakeClient)
    return FakeClient


def test_key_files_and_tls_files_reach_the_client(tmp_path: Path,
                                                  fake: type[FakeClient]) -> None:
    inf = _write(tmp_path / "inference", f"\n{INFERENCE}\n")
    adm = _write(tmp_path / "admin", ADMIN)
    cert, key = _write(tmp_path / "c.pem", "x"), _write(tmp_path / "k.pem", "x")
    r = CliRunner().invoke(main, ["health", "--url", "h:1", "--inference-key-file", str(inf),
                                  "--admin-key-file", str(adm), "--tls-cert", str(cert),
                                  "--tls-key", str(key)])
    assert r.exit_code == 0, r.output
    (url, _model), kw = fake.made[-1]
    assert url == "h:1"
    assert kw["inference_key"].reveal() == INFERENCE and kw["admin_key"].reveal() == ADMIN
    assert kw["inference_key"].source == f"--inference-key-file {inf}"
    assert kw["certificate_chain"] == str(cert) and kw["private_key"] == str(key)
    assert kw["ssl"] is True  # a client certificate means TLS
    assert INFERENCE not in r.output and ADMIN not in r.output


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                   fake: type[FakeClient]) -> None:
    monkeypatch.setenv(INFERENCE_KEY_ENV, INFERENCE)
    monkeypatch.setenv(ADMIN_KEY_ENV, ADMIN)
    r = CliRunner().invoke(main, ["models", "list", "--url", "h:1"])
    assert r.exit_code == 0, r.output
    kw = fake.made[-1][1]
    assert kw["inference_key"].reveal() == INFERENCE and kw["admin_key"].reveal() == ADMIN
    assert kw["admin_key"].source == f"${ADMIN_KEY_ENV}" and kw["ssl"] is False


def test_the_built_connection_sends_the_keys_as_grpc_headers() -> None:
    from tritonllm.client._logic import connection, parse_url

    c = Connection(inference_key=Secret(INFERENCE, "f"), admin_key=Secret(ADMIN, "g"))
    conn = connection(parse_url(c.url), None, root_certificates=None, certificate_chain=None,
                      private_key=None, inference_key=c.inference_key, admin_key=c.admin_key)
    assert conn.headers == {"triton-grpc-protocol-tritonllm-inference": INFERENCE,
                            "triton-grpc-protocol-tritonllm-admin": ADMIN}
    assert INFERENCE not in repr(c) and ADMIN not in repr(c) and ADMIN not in repr(conn)


@pytest.mark.parametrize("setup, args, words", [
    (lambda d: _write(d / "k", "short"), ["--inference-key-file", "FILE"],
     ["--inference-key-file", "at least 16"]),
    (lambda d: d / "missing", ["--admin-key-file", "FILE"], ["--admin-key-file", "cannot read"]),
    (lambda d: _write(d / "k", "has a space in it!"), ["--admin-key-file", "FILE"],
     ["--admin-key-file", "spaces"]),
])
def test_a_bad_key_is_one_line_naming_the_option(tmp_path: Path, fake: type[FakeClient],
                                                 setup: Any, args: list[str],
                                                 words: list[str]) -> None:
    path = setup(tmp_path)
    r = CliRunner().invoke(main, ["health", *[str(path) if a == "FILE" else a for a in args]])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert all(w in lines[0] for w in words), r.output
    assert "short" not in r.output and "space in" not in r.output  # the value is not echoed
    assert not fake.made


def test_a_short_key_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                           fake: type[FakeClient]) -> None:
    monkeypatch.setenv(INFERENCE_KEY_ENV, "tiny")
    r = CliRunner().invoke(main, ["generate", "hi"])
    assert r.exit_code == 1 and f"${INFERENCE_KEY_ENV}" in r.output and "tiny" not in r.output


def test_the_same_key_for_both_is_refused(tmp_path: Path, fake: type[FakeClient]) -> None:
    f = _write(tmp_path / "k", INFERENCE)
    r = CliRunner().invoke(main, ["health", "--inference-key-file", str(f),
                                  "--admin-key-file", str(f)])
    assert r.exit_code == 1 and "must differ" in r.output


@pytest.mark.parametrize("given, missing", [("--tls-cert", "--tls-key"),
                                            ("--tls-key", "--tls-cert")])
def test_tls_cert_and_key_go_together(tmp_path: Path, fake: type[FakeClient], given: str,
                                      missing: str) -> None:
    f = _write(tmp_path / "c.pem", "x")
    r = CliRunner().invoke(main, ["health", given, str(f)])
    assert r.exit_code == 2
    error = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and given in error[0] and missing in error[0], r.output
    assert not fake.made


def test_header_help_points_at_the_key_files() -> None:
    text = " ".join(CliRunner().invoke(main, ["generate", "--help"]).output.split())
    assert "--inference-key-file" in text and "--admin-key-file" in text
    assert "SECRET" not in text and "apikey=" not in text


def test_unauthorized_model_control_names_the_admin_key_option(
        tmp_path: Path, fake: type[FakeClient]) -> None:
    def refused() -> Unauthorized:
        return Unauthorized("[StatusCode.PERMISSION_DENIED] This API is restricted, "
                            "expecting header 'triton-grpc-protocol-tritonllm-admin'")

    fake.fail = refused()
    r = CliRunner().invoke(main, ["models", "load", "ensemble"])
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert "--admin-key-file" in line and f"${ADMIN_KEY_ENV}" in line, r.output
    adm = _write(tmp_path / "admin", ADMIN)
    fake.fail = refused()
    r = CliRunner().invoke(main, ["models", "unload", "ensemble", "--admin-key-file", str(adm)])
    assert r.exit_code == 1 and "was refused" in r.output and f"--admin-key-file {adm}" in r.output
    assert ADMIN not in r.output


def test_unauthorized_generation_names_the_inference_key_option(fake: type[FakeClient]) -> None:
    fake.fail = Unauthorized("unauthorized")
    r = CliRunner().invoke(main, ["health"])  # a call with no header named: the inference key
    assert r.exit_code == 1 and "--inference-key-file" in r.output


def test_no_error_or_traceback_shows_a_key(tmp_path: Path, fake: type[FakeClient]) -> None:
    inf = _write(tmp_path / "inference", INFERENCE)
    for verbose in ([], ["-v"]):
        try:
            raise ValueError(f"transport saw header tritonllm-inference={INFERENCE}")
        except ValueError as cause:
            err = ClientError(f"failed: tritonllm-inference={INFERENCE}")
            err.__cause__ = cause
        fake.fail = err
        r = CliRunner().invoke(main, [*verbose, "health", "--inference-key-file", str(inf)])
        assert r.exit_code == 1 and "***" in r.output, r.output
        assert INFERENCE not in r.output
    assert "Traceback" in r.output  # -v shows the chain, masked


def test_client_repr_holds_no_key() -> None:
    from tritonllm.client import LLMClient

    with LLMClient("localhost:1", inference_key="x" * 20, admin_key="y" * 20) as client:
        text = repr(client)
    assert "x" * 20 not in text and "y" * 20 not in text
    assert "inference_key argument" in text


# --- perf --------------------------------------------------------------------------------------

def _perf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]],
                                                                     list[str]]:
    from tritonllm.errors import ConfigError
    from tritonllm.perf import run as run_mod

    seen: list[dict[str, Any]] = []

    def fake_run_ours(scenario: Any, tokenizer: Any, progress: Any = None,
                      **keys: Any) -> Any:
        seen.append({"scenario": scenario, **keys})
        raise ConfigError("stop here")

    monkeypatch.setattr(run_mod, "run_ours", fake_run_ours)
    monkeypatch.setattr("tritonllm.perf.prompts.Tokenizer", lambda path: type(
        "T", (), {"path": path})())
    tok = tmp_path / "tok"
    tok.mkdir(exist_ok=True)
    return seen, ["perf", "--tokenizer", str(tok), "--out", str(tmp_path / "out"), "-q"]


def test_perf_sends_the_inference_key_outside_the_scenario(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    seen, base = _perf(tmp_path, monkeypatch)
    inf = _write(tmp_path / "inference", INFERENCE)
    r = CliRunner().invoke(main, [*base, "--inference-key-file", str(inf)])
    assert r.exit_code == 1 and "stop here" in r.output, r.output
    assert seen[-1]["inference_key"].reveal() == INFERENCE
    assert INFERENCE not in json.dumps(seen[-1]["scenario"].to_dict())
    monkeypatch.setenv(INFERENCE_KEY_ENV, INFERENCE)
    CliRunner().invoke(main, base)
    assert seen[-1]["inference_key"].source == f"${INFERENCE_KEY_ENV}"


def test_perf_refuses_the_key_where_it_would_reach_a_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen, base = _perf(tmp_path, monkeypatch)
    inf = _write(tmp_path / "inference", INFERENCE)
    r = CliRunner().invoke(main, [*base, "--inference-key-file", str(inf), "--tool",
                                  "perf_analyzer"])
    assert r.exit_code == 1 and "--inference-key-file" in r.output and "--tool ours" in r.output
    r = CliRunner().invoke(main, [*base, "--inference-key-file", str(inf), "--endpoint",
                                  "openai"])
    assert r.exit_code == 2 and "--inference-key-file" in r.output and "--endpoint" in r.output
    assert not seen


def test_perf_grpc_backend_gets_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonllm.perf.run import BACKENDS
    from tritonllm.perf.scenario import Scenario

    made: list[dict[str, Any]] = []
    monkeypatch.setattr("tritonllm.client.AsyncLLMClient",
                        lambda *a, **kw: made.append(kw))
    key = Secret(INFERENCE, "f")
    BACKENDS["grpc"](Scenario(url="h:1"), None, key)
    assert made[-1]["inference_key"] is key


def test_run_json_holds_header_names_not_values(tmp_path: Path) -> None:
    from tritonllm.perf.report import write_run
    from tritonllm.perf.run import RunResult
    from tritonllm.perf.scenario import Scenario

    run = RunResult(Scenario(headers={"x-api-key": INFERENCE}), [], {"tool": "ours"})
    write_run(run, tmp_path, plots=False)
    text = (tmp_path / "run.json").read_text()
    assert INFERENCE not in text
    assert json.loads(text)["scenario"]["headers"] == {"x-api-key": "***"}


def test_recorded_perf_command_masks_header_values() -> None:
    from tritonllm.cli.perf import _recorded_command

    cmd = _recorded_command(["tritonllm", "perf", "-H", f"k:{INFERENCE}",
                             f"--header=j:{INFERENCE}", f"-Hi:{INFERENCE}", "--model", "m"])
    assert cmd == "tritonllm perf -H k:*** --header=j:*** -Hi:*** --model m"
    assert _recorded_command(["x"]) is None
