"""A real Triton 2.51 (the nvidia-pytriton wheel's, CPU only) loads what ``tritonllm repo`` renders.

The Python models are replaced by a stub ``model.py`` that parses its parameters with
:mod:`tritonllm.settings` and checks the paths they name, so these tests check the rendered
configs, parameters and layout against Triton itself, apart from the model code (which
test_serving.py serves). They also confirm two of the validator's claims: Triton refuses an
ensemble with instance groups or with an unused input. The repository rendered from the real
CPU engine of the tiny model (a real OpenVINO build) is checked here too: by the validator and
through the ``repo`` command.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm import contract as C
from tritonllm.builders.repository import ENGINE_SUBDIR, parse_config, render_repository
from tritonllm.builders.validate import validate_repository
from tritonllm.settings import RepoSettings

pytestmark = pytest.mark.integration

STUB = '''\
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from tritonllm.settings import PARAMS_BY_MODEL


class TritonPythonModel:
    """Test stub: parses its parameters, checks the paths in them, answers every request
    with an error."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        cls = PARAMS_BY_MODEL[config["name"]]
        params = cls.from_triton_parameters(config.get("parameters", {}),
                                            model_dir=Path(args["model_repository"]))
        for key in ("tokenizer_dir", "engine_dir"):
            path = getattr(params, key, None)
            if path is not None and not Path(path).is_dir():
                raise RuntimeError(f"{key}: {path} is not a directory")
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)

    def execute(self, requests):
        error = pb_utils.TritonError("stub model")
        if self.decoupled:
            for request in requests:
                request.get_response_sender().send(
                    pb_utils.InferenceResponse(error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
'''


def _server_available() -> bool:
    try:
        from tritonllm.server import find_tritonserver

        find_tritonserver()
    except Exception:
        return False
    return True


needs_server = pytest.mark.skipif(not _server_available(), reason="no tritonserver here")


def stubbed(repo: Path) -> Path:
    for model in ("preprocessing", "postprocessing", "tensorrt_llm_bls", "tensorrt_llm"):
        if 'backend: "python"' in (repo / model / "config.pbtxt").read_text():
            (repo / model / "1" / "model.py").write_text(STUB)
    return repo


def model_config(url: str, model: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/v2/models/{model}/config", timeout=10) as r:
        return json.load(r)  # type: ignore[no-any-return]


def model_ready(url: str, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{model}/ready", timeout=10) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError:
        return False


@pytest.fixture(scope="module")
def cpu_engine_dir(fake_engine: Callable[..., Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_engine(tmp_path_factory.mktemp("load") / "engine", "cpu")


@needs_server
@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "non-streaming"])
def test_triton_loads_the_rendered_cpu_repository(streaming: bool, cpu_engine_dir: Path,
                                                  tmp_path: Path) -> None:
    from tritonllm.server import ServerOptions, TritonServer

    repo = stubbed(render_repository(cpu_engine_dir, tmp_path / "repo",
                                     RepoSettings(streaming=streaming, priority_levels=2,
                                                  preprocessing_instance_count=1,
                                                  postprocessing_instance_count=1,
                                                  bls_instance_count=1)))
    assert validate_repository(repo) == []
    options = ServerOptions(repo, http_port=0, grpc_port=0, metrics_port=0, host="127.0.0.1",
                            startup_timeout=180)
    with TritonServer(options) as server:
        for model in C.MODEL_NAMES:
            cfg = model_config(server.url_http, model)
            policy = cfg.get("model_transaction_policy") or {}
            assert isinstance(policy, dict)
            if model in (C.ENSEMBLE, C.LLM, C.BLS):
                assert bool(policy.get("decoupled")) is streaming, model
        ens = model_config(server.url_http, C.ENSEMBLE)
        names = [t["name"] for t in ens["input"]]  # type: ignore[index, union-attr]
        assert names == [t.name for t in C.TargetModels("cpu")[C.ENSEMBLE].inputs]


def _break_with_instance_group(repo: Path) -> None:
    path = repo / "ensemble" / "config.pbtxt"
    path.write_text(path.read_text() + "instance_group [ { count: 1 kind: KIND_CPU } ]\n")


def _break_with_unused_input(repo: Path) -> None:
    path = repo / "ensemble" / "config.pbtxt"
    text = path.read_text()
    line = '      input_map { key: "STOP_WORDS_DICT" value: "stop_words" }\n'
    assert line in text
    path.write_text(text.replace(line, ""))


@needs_server
@pytest.mark.parametrize(("breaker", "field"), [
    (_break_with_instance_group, "instance_group"),
    (_break_with_unused_input, "input.stop_words"),
], ids=["instance-group", "unused-input"])
def test_triton_agrees_with_the_validator(breaker: object, field: str, cpu_engine_dir: Path,
                                          tmp_path: Path) -> None:
    from tritonllm.errors import ServingError
    from tritonllm.server import ServerOptions, TritonServer

    repo = stubbed(render_repository(cpu_engine_dir, tmp_path / "repo",
                                     RepoSettings(preprocessing_instance_count=1,
                                                  postprocessing_instance_count=1,
                                                  bls_instance_count=1)))
    breaker(repo)  # type: ignore[operator]
    assert [p.field for p in validate_repository(repo)] == [field]
    options = ServerOptions(repo, http_port=0, grpc_port=0, metrics_port=0, host="127.0.0.1",
                            startup_timeout=120)
    # The launcher raises when a listed model fails; a config Triton rejects while polling the
    # repository is not listed at all, so ask for the ensemble's readiness too.
    try:
        with TritonServer(options) as server:
            ready = model_ready(server.url_http, C.ENSEMBLE)
    except ServingError as e:
        assert "ensemble" in str(e)
        ready = False
    assert not ready
    shutil.rmtree(repo)


# --- the repository of the real CPU engine -------------------------------------------------------

def test_real_cpu_engine_repository_is_clean(cpu_engine: Path, tmp_path: Path) -> None:
    assert validate_repository(render_repository(cpu_engine, tmp_path / "repo")) == []


def test_cli_renders_the_tiny_cpu_engine(cpu_engine: Path, tmp_path: Path) -> None:
    from tritonllm.cli import main

    out = tmp_path / "repo"
    r = CliRunner().invoke(main, ["repo", str(cpu_engine), "--out", str(out), "--no-streaming",
                                  "--postprocessing-instances", "2", "--max-batch-size", "16"])
    assert r.exit_code == 0, r.output
    assert "rendered cpu classic-layout repository" in r.output
    ens = parse_config((out / "ensemble" / "config.pbtxt").read_text(), "e")
    assert ens.max_batch_size == 16
    assert ens.model_transaction_policy.decoupled is False
    post = parse_config((out / "postprocessing" / "config.pbtxt").read_text(), "p")
    assert post.instance_group[0].count == 2
    assert (out / ENGINE_SUBDIR / "openvino_model.xml").is_file()
