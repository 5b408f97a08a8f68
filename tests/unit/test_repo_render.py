"""``tritonllm repo``: rendering, golden files, determinism, options and refusals.

GPU engines cannot be built here (no TensorRT-LLM), so the ``fake_engine`` fixture
(tests/conftest.py) writes a FAKE engine dir: a real manifest and the tiny model's real
tokenizer, with placeholder engine files. The renderer never opens engine files, so this
exercises everything it does. The CLI over the real CPU engine is in
tests/integration/test_repo_triton_load.py.
Set ``TRITONLLM_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm import contract as C
from tritonllm.builders.manifest import EngineLimits
from tritonllm.builders.repository import (
    ENGINE_SUBDIR,
    MARKER,
    TEMPLATES,
    TOKENIZER_SUBDIR,
    parse_config,
    render_repository,
)
from tritonllm.errors import ConfigError, RepositoryError
from tritonllm.settings import RepoSettings

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("TRITONLLM_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def fake_gpu_engine(fake_engine: Callable[..., Path],
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_engine(tmp_path_factory.mktemp("fake") / "gpu", "trtllm-legacy")


@pytest.fixture(scope="module")
def fake_cpu_engine(fake_engine: Callable[..., Path],
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_engine(tmp_path_factory.mktemp("fake") / "cpu", "cpu")


def configs(repo: Path) -> dict[str, str]:
    return {m: (repo / m / "config.pbtxt").read_text(encoding="utf-8") for m in C.MODEL_NAMES}


def check_golden(name: str, texts: dict[str, str]) -> None:
    for model, text in texts.items():
        path = GOLDEN / name / model / "config.pbtxt"
        if UPDATE_GOLDEN:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            continue
        assert path.is_file(), f"no golden file {path}; run with TRITONLLM_UPDATE_GOLDEN=1"
        assert text == path.read_text(encoding="utf-8"), (
            f"{model}/config.pbtxt differs from {path} (TRITONLLM_UPDATE_GOLDEN=1 to accept)")


# --- golden files ------------------------------------------------------------------------------

def test_gpu_repository_matches_golden(fake_gpu_engine: Path, tmp_path: Path) -> None:
    out = render_repository(fake_gpu_engine, tmp_path / "repo",
                            RepoSettings(server_repo_path="/models"))
    check_golden("repo_gpu", configs(out))


def test_cpu_repository_matches_golden(fake_cpu_engine: Path, tmp_path: Path) -> None:
    out = render_repository(fake_cpu_engine, tmp_path / "repo", RepoSettings())
    check_golden("repo_cpu", configs(out))


def test_non_streaming_options_match_golden(fake_gpu_engine: Path, tmp_path: Path) -> None:
    settings = RepoSettings(
        streaming=False, max_batch_size=4, max_queue_delay_microseconds=500, max_queue_size=32,
        queue_timeout_microseconds=2_000_000, priority_levels=3, preprocessing_instance_count=3,
        postprocessing_instance_count=5, bls_instance_count=6, exclude_input_in_output=False,
        enable_kv_cache_reuse=True, enable_chunked_context=True,
        batch_scheduler_policy="max_utilization", kv_cache_free_gpu_mem_fraction=0.5,
        max_tokens_in_paged_kv_cache=4096, cancellation_check_period_ms=20,
        logits_datatype="FP16", extra_llm_parameters={"lora_cache_gpu_memory_fraction": "0.1"},
        engine_path="/mnt/engines/tiny",
    )
    out = render_repository(fake_gpu_engine, tmp_path / "repo", settings)
    check_golden("repo_gpu_options", configs(out))


# --- determinism and layout --------------------------------------------------------------------

def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("engine", ["gpu", "cpu"])
def test_rendering_is_deterministic(engine: str, fake_gpu_engine: Path, fake_cpu_engine: Path,
                                    tmp_path: Path) -> None:
    src = fake_gpu_engine if engine == "gpu" else fake_cpu_engine
    s = RepoSettings(server_repo_path="/models")
    a = tree(render_repository(src, tmp_path / "a", s))
    b = tree(render_repository(src, tmp_path / "b", s))
    assert a == b
    again = tree(render_repository(src, tmp_path / "a", s))  # re-render in place
    assert again == a


def test_layout_copies_engine_tokenizer_and_model_code(fake_cpu_engine: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the templates with known model code and a lib/ module, to check the copy exactly.
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates, ignore=shutil.ignore_patterns("__pycache__"))
    for model in ("preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"):
        (templates / model / "1" / "lib").mkdir(parents=True, exist_ok=True)
        (templates / model / "1" / "model.py").write_text(f"# {model}\n")
        (templates / model / "1" / "lib" / "helper.py").write_text("X = 1\n")
    monkeypatch.setattr("tritonllm.builders.repository.TEMPLATES", templates)

    out = render_repository(fake_cpu_engine, tmp_path / "repo")
    files = set(tree(out))
    for model in C.MODEL_NAMES:
        assert f"{model}/config.pbtxt" in files
        assert (out / model / "1").is_dir()
    for model in ("preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"):
        assert (out / model / "1" / "model.py").read_text() == f"# {model}\n"
        assert f"{model}/1/lib/helper.py" in files
    assert not list((out / "ensemble" / "1").iterdir())
    assert {p.name for p in (out / TOKENIZER_SUBDIR).iterdir()} >= {
        "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    engine = {p.name for p in (out / ENGINE_SUBDIR).iterdir()}
    assert engine == {p.name for p in fake_cpu_engine.iterdir() if p.name != "tokenizer"}
    marker = json.loads((out / MARKER).read_text())
    assert marker["target"] == "cpu" and marker["engine_copied"] is True
    assert "tensorrt_llm/1/model.py" in marker["model_code"]
    # nothing but model folders and the hidden marker at the root (Triton loads every folder)
    assert sorted(p.name for p in out.iterdir()) == sorted([*C.MODEL_NAMES, MARKER])


def test_gpu_model_path_is_absolute_and_engine_path_skips_copy(fake_gpu_engine: Path,
                                                               tmp_path: Path) -> None:
    out = render_repository(fake_gpu_engine, tmp_path / "repo")
    cfg = parse_config((out / "tensorrt_llm" / "config.pbtxt").read_text(), "x")
    path = cfg.parameters["gpt_model_path"].string_value
    assert path == f"{(tmp_path / 'repo').resolve().as_posix()}/{ENGINE_SUBDIR}"
    assert (Path(path) / "rank0.engine").is_file()

    out2 = render_repository(fake_gpu_engine, tmp_path / "mounted",
                             RepoSettings(engine_path="/mnt/engine"))
    cfg2 = parse_config((out2 / "tensorrt_llm" / "config.pbtxt").read_text(), "x")
    assert cfg2.parameters["gpt_model_path"].string_value == "/mnt/engine"
    assert not (out2 / ENGINE_SUBDIR).exists()
    assert (out2 / TOKENIZER_SUBDIR / "tokenizer.json").is_file()


def test_python_model_paths_are_relative_to_the_repository(fake_cpu_engine: Path,
                                                           tmp_path: Path) -> None:
    out = render_repository(fake_cpu_engine, tmp_path / "repo")
    for model, key, sub in (("preprocessing", "tokenizer_dir", TOKENIZER_SUBDIR),
                            ("postprocessing", "tokenizer_dir", TOKENIZER_SUBDIR),
                            ("tensorrt_llm_bls", "tokenizer_dir", TOKENIZER_SUBDIR),
                            ("tensorrt_llm", "engine_dir", ENGINE_SUBDIR)):
        cfg = parse_config((out / model / "config.pbtxt").read_text(), model)
        assert cfg.parameters[key].string_value == sub
        assert (out / sub).is_dir()


def test_limits_and_ids_come_from_the_manifest(fake_cpu_engine: Path, tmp_path: Path) -> None:
    out = render_repository(fake_cpu_engine, tmp_path / "repo")
    for model in C.MODEL_NAMES:
        cfg = parse_config((out / model / "config.pbtxt").read_text(), model)
        assert cfg.max_batch_size == (0 if model == C.LLMAPI else 8)  # llmapi: as NVIDIA's
    pre = parse_config((out / "preprocessing" / "config.pbtxt").read_text(), "p").parameters
    llm = parse_config((out / "tensorrt_llm" / "config.pbtxt").read_text(), "l").parameters
    assert pre["end_id"].string_value == llm["end_id"].string_value == "2"
    assert pre["pad_id"].string_value == llm["pad_id"].string_value == "3"
    assert llm["max_num_seqs"].string_value == "8"
    assert llm["max_num_batched_tokens"].string_value == "2048"
    assert llm["max_input_len"].string_value == "255"
    assert llm["max_seq_len"].string_value == "256"


def test_pad_id_defaults_to_end_id(fake_engine: Callable[..., Path], tmp_path: Path) -> None:
    limits = EngineLimits(8, 255, 256, 2048, 1000, 1, (2,), None)
    engine = fake_engine(tmp_path / "e", "cpu", limits)
    out = render_repository(engine, tmp_path / "repo")
    pre = parse_config((out / "preprocessing" / "config.pbtxt").read_text(), "p").parameters
    assert pre["pad_id"].string_value == "2"


def test_request_size_bounds_reach_the_models_that_check_them(fake_cpu_engine: Path,
                                                              tmp_path: Path) -> None:
    from tritonllm.settings import BLSParams, PreprocessingParams

    out = render_repository(fake_cpu_engine, tmp_path / "repo", RepoSettings(
        max_prompt_bytes=5000, max_words=8, max_word_bytes=100))
    configs = {m: parse_config((out / m / "config.pbtxt").read_text(), m).parameters
               for m in ("preprocessing", "tensorrt_llm_bls")}
    pre = PreprocessingParams.from_triton_parameters(
        {k: {"string_value": v.string_value} for k, v in configs["preprocessing"].items()})
    bls = BLSParams.from_triton_parameters(
        {k: {"string_value": v.string_value} for k, v in configs["tensorrt_llm_bls"].items()})
    assert (pre.max_prompt_bytes, pre.max_words, pre.max_word_bytes) == (5000, 8, 100)
    assert (bls.max_words, bls.max_word_bytes) == (8, 100)
    default = render_repository(fake_cpu_engine, tmp_path / "default", RepoSettings())
    text = (default / "preprocessing" / "config.pbtxt").read_text()
    assert "max_prompt_bytes" not in text  # derived from the tokenizer at load


# --- refusals -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "message"), [
    (RepoSettings(max_batch_size=9), "max_batch_size: 9 exceeds the engine's max_batch_size 8"),
    (RepoSettings(target="cpu"), "target: 'cpu' cannot serve a 'trtllm-legacy' engine"),
    (RepoSettings(extra_llm_parameters={"no_such_key": "1"}),
     "extra_llm_parameters: 'no_such_key' is not a parameter of the tensorrtllm backend"),
    (RepoSettings(extra_llm_parameters={"enable_kv_cache_reuse": "true"}),
     "'enable_kv_cache_reuse' has its own option"),
    (RepoSettings(engine_path="relative/engine"), "engine_path: the tensorrtllm backend needs"),
])
def test_bad_settings_for_the_engine_are_refused(settings: RepoSettings, message: str,
                                                 fake_gpu_engine: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        render_repository(fake_gpu_engine, tmp_path / "repo", settings)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": "tpu"}, "target: must be one of gpu, cpu"),
    ({"batching_strategy": "V1"}, "batching_strategy: must be one of"),
    ({"kv_cache_free_gpu_mem_fraction": 1.5}, "kv_cache_free_gpu_mem_fraction: must be in"),
    ({"preprocessing_instance_count": 0}, "preprocessing_instance_count: must be at least 1"),
    ({"default_priority_level": 2}, "default_priority_level: needs priority_levels > 0"),
    ({"priority_levels": 2, "default_priority_level": 3}, "must be <= priority_levels"),
    ({"server_repo_path": "models"}, "server_repo_path: must be absolute"),
    ({"kv_cache_precision": "i4"}, "kv_cache_precision: must be one of"),
    ({"max_words": 0}, "max_words: must be at least 1"),
    ({"max_prompt_bytes": 0}, "max_prompt_bytes: must be at least 1"),
    ({"max_words": 1024, "max_word_bytes": 1024}, r"max_words × max_word_bytes: 1024 × 1024"),
])
def test_repo_settings_validate_their_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RepoSettings(**kwargs)  # type: ignore[arg-type]


def test_refuses_to_overwrite_a_foreign_directory(fake_cpu_engine: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a rendered repository"):
        render_repository(fake_cpu_engine, out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_missing_engine_files_are_refused(fake_engine: Callable[..., Path],
                                          tmp_path: Path) -> None:
    engine = fake_engine(tmp_path / "e", "trtllm-legacy")
    (engine / "rank0.engine").unlink()
    with pytest.raises(RepositoryError, match=r"rank0\.engine"):
        render_repository(engine, tmp_path / "repo")
    with pytest.raises(RepositoryError, match=r"manifest\.json: not found"):
        render_repository(tmp_path, tmp_path / "repo2")


def test_a_broken_template_is_caught_before_writing(fake_cpu_engine: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    monkeypatch.setattr("tritonllm.builders.repository.TEMPLATES", templates)
    pre = templates / "preprocessing" / "config.pbtxt.j2"

    pre.write_text(pre.read_text().replace("{{ max_batch_size }}", "{{ max_batch_sise }}"))
    with pytest.raises(RepositoryError, match="max_batch_sise"):  # StrictUndefined
        render_repository(fake_cpu_engine, tmp_path / "repo")

    pre.write_text(pre.read_text().replace("{{ max_batch_sise }}", "${triton_max_batch_size}"))
    with pytest.raises(RepositoryError, match="not a valid Triton ModelConfig"):
        render_repository(fake_cpu_engine, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_renders_a_gpu_repository(fake_gpu_engine: Path, tmp_path: Path) -> None:
    from tritonllm.cli import main

    out = tmp_path / "repo"
    r = CliRunner().invoke(main, ["repo", str(fake_gpu_engine), "--out", str(out),
                                  "--server-repo-path", "/models", "--enable-kv-cache-reuse",
                                  "--trtllm-param", "lora_cache_max_adapter_size=64"])
    assert r.exit_code == 0, r.output
    llm = parse_config((out / "tensorrt_llm" / "config.pbtxt").read_text(), "l")
    assert llm.backend == "tensorrtllm"
    assert llm.parameters["gpt_model_path"].string_value == "/models/tensorrt_llm/1/engine"
    assert llm.parameters["enable_kv_cache_reuse"].string_value == "true"
    assert llm.parameters["lora_cache_max_adapter_size"].string_value == "64"


def test_cli_reports_a_bad_option_on_one_line(fake_gpu_engine: Path, tmp_path: Path) -> None:
    from tritonllm.cli import main

    r = CliRunner().invoke(main, ["repo", str(fake_gpu_engine), "--out", str(tmp_path / "r"),
                                  "--max-batch-size", "99"])
    assert r.exit_code == 1
    assert "max_batch_size: 99 exceeds the engine's max_batch_size 8" in r.output
    r = CliRunner().invoke(main, ["repo", str(fake_gpu_engine), "--out", str(tmp_path / "r"),
                                  "--trtllm-param", "novalue"])
    assert r.exit_code == 2
    assert "expected KEY=VALUE" in r.output
