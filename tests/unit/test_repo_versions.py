"""``tritonllm repo --version N``: a new version beside the served ones, its rules and refusals;
the load plan of ``tritonllm models load`` and its errors.

FAKE engines (``fake_engine``, tests/conftest.py) as in test_repo_render.py: the renderer never
opens engine files. The swap on a live server is tests/integration/test_version_swap.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tritonllm import contract as C
from tritonllm.builders import repository as R
from tritonllm.builders.repository import MARKER, parse_config, render_repository
from tritonllm.builders.validate import validate_repository
from tritonllm.cli import main
from tritonllm.client import ClientError
from tritonllm.client._control import LoadStep, load_plan, model_calls
from tritonllm.client._transport import control_error
from tritonllm.errors import ConfigError
from tritonllm.settings import RepoSettings


@pytest.fixture(scope="module")
def engines(fake_engine: Callable[..., Path],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fake")
    return {kind: fake_engine(root / kind, kind) for kind in ("cpu", "trtllm-legacy", "trtllm")}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def param(repo: Path, model: str, key: str) -> str:
    cfg = parse_config((repo / model / "config.pbtxt").read_text(encoding="utf-8"), model)
    return str(cfg.parameters[key].string_value)


def test_the_subdirs_come_from_one_function() -> None:
    assert R.ENGINE_SUBDIR == R.engine_subdir(1) == "tensorrt_llm/1/engine"
    assert R.TOKENIZER_SUBDIR == R.tokenizer_subdir(1) == "tensorrt_llm/1/tokenizer"
    assert R.engine_subdir(7) == "tensorrt_llm/7/engine"


def test_cpu_version_2_goes_beside_version_1(engines: dict[str, Path], tmp_path: Path) -> None:
    from tritonllm.perf.prompts import find_tokenizer

    repo = tmp_path / "repo"
    render_repository(engines["cpu"], repo)
    first = tree(repo)
    assert json.loads((repo / MARKER).read_text())["versions"] == {
        "1": json.loads((repo / MARKER).read_text())["engine_cache_key"]}
    render_repository(engines["cpu"], repo, version=2)
    now = tree(repo)
    # version 1's files are untouched; only the configs and the marker were replaced
    changed = {k for k in first if first[k] != now.get(k)}
    assert changed <= {f"{m}/config.pbtxt" for m in C.LAYOUT_MODELS[C.LAYOUT_CLASSIC]} | {MARKER}
    assert {f"{C.LLM}/config.pbtxt", f"{C.PREPROCESSING}/config.pbtxt", MARKER} <= changed
    for model in C.LAYOUT_MODELS[C.LAYOUT_CLASSIC]:
        assert R.version_dirs(repo, model) == [1, 2]
        if model != C.ENSEMBLE:
            assert (repo / model / "2" / "model.py").is_file()
    assert param(repo, C.LLM, "engine_dir") == "tensorrt_llm/2/engine"
    assert param(repo, C.PREPROCESSING, "tokenizer_dir") == "tensorrt_llm/2/tokenizer"
    assert (repo / "tensorrt_llm/2/engine/openvino_model.xml").is_file()
    marker = json.loads((repo / MARKER).read_text())
    assert sorted(marker["versions"]) == ["1", "2"] and marker["version"] == 2
    assert validate_repository(repo) == []
    assert find_tokenizer(None, repo) == repo / "tensorrt_llm/2/tokenizer"
    assert not list(tmp_path.glob(".repo.rendering-*"))


def test_gpu_versions_point_at_their_own_engine(engines: dict[str, Path],
                                                tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    s = RepoSettings(server_repo_path="/models")
    render_repository(engines["trtllm-legacy"], repo, s)
    render_repository(engines["trtllm-legacy"], repo, s, version=3)
    assert param(repo, C.LLM, "gpt_model_path") == "/models/tensorrt_llm/3/engine"
    assert (repo / "tensorrt_llm/3/engine/rank0.engine").is_file()
    assert (repo / "tensorrt_llm/1/engine/rank0.engine").is_file()
    assert validate_repository(repo) == []


def test_gpu_llmapi_model_yaml_of_the_new_version(engines: dict[str, Path],
                                                  tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    s = RepoSettings(server_repo_path="/models")
    render_repository(engines["trtllm"], repo, s)
    render_repository(engines["trtllm"], repo, s, version=2)
    text = (repo / "tensorrt_llm/2" / C.LLMAPI_MODEL_YAML).read_text()
    assert "/models/tensorrt_llm/2/engine/checkpoint" in text
    assert (repo / "tensorrt_llm/1" / C.LLMAPI_MODEL_YAML).is_file()
    assert validate_repository(repo) == []
    # the validator reads the newest version's model.yaml
    (repo / "tensorrt_llm/2" / C.LLMAPI_MODEL_YAML).write_text(text + "invented_key: 1\n")
    assert any("invented_key" in str(p) for p in validate_repository(repo))


def test_the_validator_checks_the_newest_versions_model_code(engines: dict[str, Path],
                                                            tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    render_repository(engines["cpu"], repo)
    render_repository(engines["cpu"], repo, version=2)
    (repo / C.PREPROCESSING / "2" / "model.py").unlink()
    problems = [str(p) for p in validate_repository(repo)]
    assert any("2/model.py" in p for p in problems), problems


@pytest.mark.parametrize("version, message", [
    (1, "version: 1 must be greater than 1, the newest version"),
    (0, "version: must be 1 or more, got 0"),
    (-2, "version: must be 1 or more"),
])
def test_a_version_not_above_the_served_ones_is_refused(engines: dict[str, Path], tmp_path: Path,
                                                        version: int, message: str) -> None:
    repo = tmp_path / "repo"
    render_repository(engines["cpu"], repo)
    before = tree(repo)
    with pytest.raises(ConfigError, match=message):
        render_repository(engines["cpu"], repo, version=version)
    assert tree(repo) == before


def test_version_needs_a_rendered_repository(engines: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"version: .* is not a repository rendered by "):
        render_repository(engines["cpu"], tmp_path / "new", version=2)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(ConfigError, match="version: "):
        render_repository(engines["cpu"], tmp_path / "other", version=2)
    assert (tmp_path / "other" / "x.txt").read_text() == "mine"


def test_a_new_version_keeps_target_layout_and_models(engines: dict[str, Path],
                                                      tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    render_repository(engines["cpu"], repo)
    before = tree(repo)
    with pytest.raises(ConfigError, match=r"version: .* cpu target repository"):
        render_repository(engines["trtllm-legacy"], repo, version=2)
    with pytest.raises(ConfigError, match=r"version: .* classic layout repository"):
        render_repository(engines["cpu"], repo, RepoSettings(layout=C.LAYOUT_LLMAPI), version=2)
    assert tree(repo) == before
    shutil.rmtree(repo / C.LLMAPI)
    with pytest.raises(ConfigError, match=r"version: .* serves models"):
        render_repository(engines["cpu"], repo, version=2)


def test_a_failure_midway_leaves_the_served_repository(engines: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    render_repository(engines["cpu"], repo)
    before = tree(repo)

    def broken_copy(*_a: Any, **_k: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(R, "_copy_engine", broken_copy)
        with pytest.raises(OSError, match="disk full"):
            render_repository(engines["cpu"], repo, version=2)
    assert tree(repo) == before
    # moving the version folders in fails after two of them: those two are taken out again
    real_rename, moves = Path.rename, []

    def rename(self: Path, target: Any) -> Any:
        if Path(target).parent.parent == repo:
            moves.append(target)
            if len(moves) == 3:
                raise OSError("no space left")
        return real_rename(self, target)

    with monkeypatch.context() as m:
        m.setattr(Path, "rename", rename)
        with pytest.raises(OSError, match="no space left"):
            render_repository(engines["cpu"], repo, version=2)
    assert tree(repo) == before
    # ... or while replacing the configs, after three of them: those three are put back
    real_replace, replaced = R.os.replace, []

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "config.pbtxt" and Path(dst).parent.parent == repo:
            replaced.append(dst)
            if len(replaced) == 4:
                raise OSError("i/o error")
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(R.os, "replace", replace)
        with pytest.raises(OSError, match="i/o error"):
            render_repository(engines["cpu"], repo, version=2)
    assert tree(repo) == before
    assert all(R.version_dirs(repo, model) == [1] for model in C.LAYOUT_MODELS[C.LAYOUT_CLASSIC])
    assert not list(tmp_path.glob(".repo.rendering-*"))
    assert validate_repository(repo) == []


def test_cli_adds_a_version_and_reports_refusals(engines: dict[str, Path],
                                                 tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    runner = CliRunner()
    r = runner.invoke(main, ["repo", str(engines["cpu"]), "--out", str(repo)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["repo", str(engines["cpu"]), "--out", str(repo), "--version", "2"])
    assert r.exit_code == 0, r.output
    assert "added version 2" in r.output and "versions: 1, 2" in r.output
    r = runner.invoke(main, ["repo", str(engines["cpu"]), "--out", str(repo), "--version", "2"])
    assert r.exit_code == 1
    assert r.output.count("error:") == 1 and "version: 2 must be greater than 2" in r.output
    r = runner.invoke(main, ["repo", str(engines["cpu"]), "--out", str(repo), "--version", "0"])
    assert r.exit_code == 2 and "--version" in r.output


# --- the load plan ---------------------------------------------------------------------------

def _ensemble(*steps: str) -> dict[str, Any]:
    return {"config": {"platform": "ensemble", "ensemble_scheduling": {
        "step": [{"model_name": s, "model_version": -1} for s in steps]}}}


def _python(**calls: str) -> dict[str, Any]:
    return {"config": {"backend": "python", "parameters": {
        **{f"{k}_model_name": {"string_value": v} for k, v in calls.items()},
        "tokenizer_dir": {"string_value": "tensorrt_llm/1/tokenizer"}}}}


CLASSIC = {
    C.ENSEMBLE: _ensemble(C.PREPROCESSING, C.LLM, C.POSTPROCESSING),
    C.PREPROCESSING: _python(), C.LLM: _python(), C.POSTPROCESSING: _python(),
    C.BLS: _python(preprocessing=C.PREPROCESSING, tensorrt_llm=C.LLM,
                   postprocessing=C.POSTPROCESSING),
    C.LLMAPI: _python(preprocessing=C.PREPROCESSING, tensorrt_llm=C.LLM),
}


def test_classic_plan_loads_the_ensemble_with_its_steps_then_the_callers() -> None:
    assert load_plan(CLASSIC) == [
        LoadStep(C.ENSEMBLE, (C.PREPROCESSING, C.LLM, C.POSTPROCESSING)),
        LoadStep(C.LLMAPI), LoadStep(C.BLS)]


def test_plan_without_the_ensemble_orders_callees_first() -> None:
    configs = {k: v for k, v in CLASSIC.items() if k != C.ENSEMBLE}
    plan = [s.model for s in load_plan(configs)]
    assert plan.index(C.LLM) < plan.index(C.BLS) and plan.index(C.PREPROCESSING) < plan.index(
        C.LLMAPI)
    assert sorted(plan) == sorted(configs)


def test_llmapi_layout_plan_loads_the_llm_before_its_fronts() -> None:
    configs = {C.LLM: _python(), C.ENSEMBLE: _python(tensorrt_llm=C.LLM),
               C.BLS: _python(tensorrt_llm=C.LLM)}
    assert load_plan(configs) == [LoadStep(C.LLM), LoadStep(C.ENSEMBLE), LoadStep(C.BLS)]


def test_model_calls_reads_steps_and_model_name_parameters() -> None:
    assert model_calls(CLASSIC[C.ENSEMBLE]) == (C.PREPROCESSING, C.LLM, C.POSTPROCESSING)
    # HTTP's config comes without the "config" wrapper
    assert set(model_calls(CLASSIC[C.BLS]["config"])) == {C.PREPROCESSING, C.LLM,
                                                          C.POSTPROCESSING}
    assert model_calls({"config": {"parameters": {"draft_model_name": {"string_value": ""}}}}
                       ) == ()


def test_a_cycle_is_refused() -> None:
    with pytest.raises(ClientError, match="a, b call each other in a cycle"):
        load_plan({"a": _python(x="b"), "b": _python(x="a")})


def test_a_server_without_explicit_model_control_gets_a_clear_error() -> None:
    err = control_error("ensemble", "load", ClientError(
        "explicit model load / unload is not allowed if polling is enabled", status="503"))
    assert "load ensemble" in str(err) and "--model-control-mode explicit" in str(err)
    assert err.status == "503"
    other = control_error("nope", "load", ClientError("failed to load 'nope', no version"))
    assert str(other).startswith("load nope: failed") and "model-control" not in str(other)


def test_cli_models_load_errors_on_one_line() -> None:
    r = CliRunner().invoke(main, ["models", "load", "ensemble", "--url", "127.0.0.1:1",
                                  "--timeout", "2"])
    assert r.exit_code == 1
    assert r.output.startswith("error: load ensemble: ") and r.output.count("\n") == 1, r.output
    r = CliRunner().invoke(main, ["models", "unload"])
    assert r.exit_code == 2 and "MODELS" in r.output
