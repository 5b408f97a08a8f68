"""``tritonllm validate``: a fresh repository is clean; each broken one is caught precisely.

Every broken fixture starts from a freshly rendered repository (FAKE engine dirs from the
``fake_engine`` fixture, tests/conftest.py) and breaks one thing, the way a hand edit would.
The repository of the real CPU engine is validated in tests/integration/test_repo_triton_load.py.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm import contract as C
from tritonllm.builders.repository import render_repository
from tritonllm.builders.validate import Problem, validate_repository
from tritonllm.errors import RepositoryError
from tritonllm.settings import RepoSettings


@pytest.fixture(scope="module")
def clean(fake_engine: Callable[..., Path],
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Freshly rendered repositories (with the real model code) per flavour."""
    root = tmp_path_factory.mktemp("validate")
    engines = {"cpu": fake_engine(root / "engine-cpu", "cpu"),
               "gpu": fake_engine(root / "engine-gpu", "trtllm-legacy")}
    repos = {}
    for flavour, engine, settings in (
        ("cpu", "cpu", RepoSettings()),
        ("gpu", "gpu", RepoSettings()),
        ("cpu-nostream", "cpu", RepoSettings(streaming=False)),
    ):
        repos[flavour] = render_repository(engines[engine], root / flavour, settings)
    return repos


def copy_of(clean: dict[str, Path], flavour: str, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(clean[flavour], repo, symlinks=True)
    if flavour == "gpu":  # gpt_model_path is absolute: point it at the copy
        edit(repo, "tensorrt_llm", str(clean[flavour].resolve()), str(repo.resolve()))
    return repo


def edit(repo: Path, model: str, old: str, new: str, count: int = 1) -> None:
    path = repo / model / "config.pbtxt"
    text = path.read_text()
    assert old in text, f"{old!r} not in {model}/config.pbtxt"
    path.write_text(text.replace(old, new, count))


def drop_line(repo: Path, model: str, pattern: str) -> None:
    path = repo / model / "config.pbtxt"
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not re.search(pattern, ln)]
    assert len(kept) == len(lines) - 1, f"{pattern!r} must match one line of {model}"
    path.write_text("".join(kept))


def drop_tensor(repo: Path, model: str, name: str) -> None:
    """Remove the declaration block of tensor ``name`` (input or output)."""
    path = repo / model / "config.pbtxt"
    text = path.read_text()
    new = re.sub(r"  \{\n    name: \"" + re.escape(name) + r"\"\n(?:    .*\n)*?  \},?\n", "", text)
    assert new != text
    path.write_text(new)


# --- fresh repositories are clean ------------------------------------------------------------

@pytest.mark.parametrize("flavour", ["cpu", "gpu", "cpu-nostream"])
def test_fresh_repository_is_clean(flavour: str, clean: dict[str, Path]) -> None:
    assert validate_repository(clean[flavour]) == []


# --- broken repositories ---------------------------------------------------------------------

Breaker = Callable[[Path], None]


def _placeholder_in_parameter(repo: Path) -> None:
    edit(repo, "postprocessing", 'string_value: "tensorrt_llm/1/tokenizer"',
         'string_value: "${tokenizer_dir}"')


def _jinja_leftover(repo: Path) -> None:
    edit(repo, "preprocessing", 'key: "add_special_tokens"\n  value { string_value: "true" }',
         'key: "add_special_tokens"\n  value { string_value: "{{ add_special_tokens }}" }')


def _decoupled_off(repo: Path) -> None:
    edit(repo, "tensorrt_llm", "decoupled: true", "decoupled: false")


def _decoupled_on(repo: Path) -> None:
    edit(repo, "tensorrt_llm", "decoupled: false", "decoupled: true")


def _drop_stop_words_mapping(repo: Path) -> None:
    drop_line(repo, "ensemble", r'key: "STOP_WORDS_DICT"')


def _drop_text_output_mapping(repo: Path) -> None:
    edit(repo, "ensemble", 'output_map { key: "OUTPUT" value: "text_output" }',
         'output_map { key: "OUTPUT" value: "_TEXT" }')


def _drop_official_optional_input(repo: Path) -> None:
    drop_tensor(repo, "ensemble", "num_return_sequences")
    drop_line(repo, "ensemble", r'key: "num_return_sequences"')


def _instance_group_on_ensemble(repo: Path) -> None:
    path = repo / "ensemble" / "config.pbtxt"
    path.write_text(path.read_text() + "instance_group [ { count: 2 kind: KIND_CPU } ]\n")


def _stray_folder(repo: Path) -> None:
    (repo / "notes").mkdir()
    (repo / "notes" / "README.md").write_text("not a model\n")


def _ensemble_bigger_than_step(repo: Path) -> None:
    edit(repo, "postprocessing", "max_batch_size: 8", "max_batch_size: 4")


def _remove_rank_engine(repo: Path) -> None:
    (repo / "tensorrt_llm" / "1" / "engine" / "rank0.engine").unlink()


CASES: list[tuple[str, str, Breaker, Problem]] = [
    ("unparsable config", "cpu",
     lambda r: edit(r, "preprocessing", "max_batch_size: 8", "max_batch_size: eight"),
     Problem("preprocessing", "config.pbtxt", "line 6", "not a valid Triton ModelConfig")),
    ("leftover ${placeholder}", "cpu", _placeholder_in_parameter,
     Problem("postprocessing", "config.pbtxt", "line", "unfilled placeholder ${tokenizer_dir}")),
    ("leftover jinja expression", "cpu", _jinja_leftover,
     Problem("preprocessing", "config.pbtxt", "line",
             "unfilled placeholder {{ add_special_tokens }}")),
    ("step names a missing model", "cpu",
     lambda r: edit(r, "ensemble", 'model_name: "postprocessing"', 'model_name: "postprocess"'),
     Problem("ensemble", "config.pbtxt", "ensemble_scheduling.step[2].model_name",
             "model 'postprocess' is not in the repository")),
    ("step maps a missing input", "cpu",
     lambda r: edit(r, "ensemble", 'key: "QUERY"', 'key: "PROMPT"'),
     Problem("ensemble", "config.pbtxt", "ensemble_scheduling.step[0].input_map.PROMPT",
             "preprocessing has no input 'PROMPT'")),
    ("required step input left unmapped", "cpu",
     lambda r: edit(r, "ensemble", 'key: "QUERY"', 'key: "PROMPT"'),
     Problem("ensemble", "config.pbtxt", "ensemble_scheduling.step[0].input_map",
             "required input 'QUERY' of preprocessing is not mapped")),
    ("step maps a missing output", "gpu",
     lambda r: edit(r, "ensemble", 'key: "sequence_length"', 'key: "seq_len"'),
     Problem("ensemble", "config.pbtxt", "ensemble_scheduling.step[1].output_map.seq_len",
             "tensorrt_llm has no output 'seq_len'")),
    ("dtype mismatch along the graph", "cpu",
     lambda r: edit(r, "postprocessing", 'name: "TOKENS_BATCH"\n    data_type: TYPE_INT32',
                    'name: "TOKENS_BATCH"\n    data_type: TYPE_INT64'),
     Problem("ensemble", "config.pbtxt", "ensemble_scheduling.step[2].input_map.TOKENS_BATCH",
             "tensor '_TOKENS_BATCH': TYPE_INT64 in postprocessing input TOKENS_BATCH but "
             "TYPE_INT32 in tensorrt_llm output output_ids")),
    ("dims mismatch along the graph", "gpu",
     lambda r: edit(r, "preprocessing", 'name: "QUERY"\n    data_type: TYPE_STRING\n'
                    '    dims: [ 1 ]', 'name: "QUERY"\n    data_type: TYPE_STRING\n'
                    '    dims: [ 2 ]'),
     Problem("ensemble", "config.pbtxt", "ensemble_scheduling.step[0].input_map.QUERY",
             "tensor 'text_input': dims [-1, 2] in preprocessing input QUERY but [-1, 1] in "
             "ensemble input")),
    ("ensemble output never produced", "cpu", _drop_text_output_mapping,
     Problem("ensemble", "config.pbtxt", "output.text_output", "never produced by any step")),
    ("intermediate tensor never used", "cpu", _drop_text_output_mapping,
     Problem("ensemble", "config.pbtxt", "ensemble_scheduling",
             "tensor '_TEXT' written by postprocessing is never used")),
    ("ensemble input never used", "cpu", _drop_stop_words_mapping,
     Problem("ensemble", "config.pbtxt", "input.stop_words", "not used by any step")),
    ("official optional input missing", "gpu", _drop_official_optional_input,
     Problem("ensemble", "config.pbtxt", "input.num_return_sequences",
             "missing (clients sending it would be rejected)")),
    ("streaming ensemble over a non-decoupled LLM", "cpu", _decoupled_off,
     Problem("ensemble", "config.pbtxt", "model_transaction_policy.decoupled",
             "the ensemble streams but tensorrt_llm is not decoupled")),
    ("non-streaming ensemble over a decoupled LLM", "cpu-nostream", _decoupled_on,
     Problem("ensemble", "config.pbtxt", "model_transaction_policy.decoupled",
             "the ensemble does not stream but tensorrt_llm is decoupled")),
    ("streaming BLS over a non-decoupled LLM", "gpu", _decoupled_off,
     Problem("tensorrt_llm_bls", "config.pbtxt", "model_transaction_policy.decoupled",
             "tensorrt_llm_bls streams but tensorrt_llm is not decoupled")),
    ("streaming parameter disagrees with the policy", "cpu", _decoupled_off,
     Problem("tensorrt_llm", "config.pbtxt", "parameters.streaming",
             "true but model_transaction_policy.decoupled is false")),
    ("max_batch_size beyond the engine", "cpu",
     lambda r: edit(r, "preprocessing", "max_batch_size: 8", "max_batch_size: 16"),
     Problem("preprocessing", "config.pbtxt", "max_batch_size",
             "16 exceeds the engine's max_batch_size 8")),
    ("ensemble batch beyond a step's", "cpu", _ensemble_bigger_than_step,
     Problem("ensemble", "config.pbtxt", "max_batch_size",
             "8 exceeds postprocessing's max_batch_size 4")),
    ("sequence limit beyond the engine", "cpu",
     lambda r: edit(r, "tensorrt_llm", 'key: "max_seq_len"\n  value { string_value: "256" }',
                    'key: "max_seq_len"\n  value { string_value: "4096" }'),
     Problem("tensorrt_llm", "config.pbtxt", "parameters.max_seq_len",
             "4096 exceeds the engine's limit 256")),
    ("input limit beyond the engine", "cpu",
     lambda r: edit(r, "preprocessing", 'string_value: "255"', 'string_value: "300"'),
     Problem("preprocessing", "config.pbtxt", "parameters.max_input_len",
             "300 exceeds the engine's limit 255")),
    ("end id not the tokenizer's eos", "cpu",
     lambda r: edit(r, "preprocessing", 'key: "end_id"\n  value { string_value: "2" }',
                    'key: "end_id"\n  value { string_value: "5" }'),
     Problem("preprocessing", "config.pbtxt", "parameters.end_id",
             "5 is not an end-of-sequence id of the tokenizer ([2]")),
    ("pad id not the tokenizer's", "cpu",
     lambda r: edit(r, "tensorrt_llm", 'key: "pad_id"\n  value { string_value: "3" }',
                    'key: "pad_id"\n  value { string_value: "7" }'),
     Problem("tensorrt_llm", "config.pbtxt", "parameters.pad_id",
             "7 disagrees with the tokenizer's pad id [3]")),
    ("id outside the vocabulary", "cpu",
     lambda r: edit(r, "preprocessing", 'key: "pad_id"\n  value { string_value: "3" }',
                    'key: "pad_id"\n  value { string_value: "5000" }'),
     Problem("preprocessing", "config.pbtxt", "parameters.pad_id",
             "5000 is outside the vocabulary (0..999)")),
    ("missing model.py", "cpu",
     lambda r: (r / "postprocessing" / "1" / "model.py").unlink(),
     Problem("postprocessing", "1/model.py", "file", "missing (a Python-backend model needs it)")),
    ("missing tokenizer", "gpu",
     lambda r: shutil.rmtree(r / "tensorrt_llm" / "1" / "tokenizer"),
     Problem("preprocessing", "config.pbtxt", "parameters.tokenizer_dir", "does not exist")),
    ("missing cpu engine file", "cpu",
     lambda r: (r / "tensorrt_llm" / "1" / "engine" / "openvino_model.xml").unlink(),
     Problem("tensorrt_llm", "config.pbtxt", "parameters.engine_dir",
             "has no openvino_model.xml")),
    ("missing gpu engine file", "gpu", _remove_rank_engine,
     Problem("tensorrt_llm", "config.pbtxt", "parameters.gpt_model_path",
             "has no rank*.engine file")),
    ("instance groups on the ensemble", "cpu", _instance_group_on_ensemble,
     Problem("ensemble", "config.pbtxt", "instance_group",
             "an ensemble must not have instance groups")),
    ("bad boolean parameter", "cpu",
     lambda r: edit(r, "postprocessing", 'key: "skip_special_tokens"\n  value { string_value: '
                    '"true" }', 'key: "skip_special_tokens"\n  value { string_value: "maybe" }'),
     Problem("postprocessing", "config.pbtxt", "parameters.skip_special_tokens",
             "expected true or false, got 'maybe'")),
    ("unknown tensorrtllm parameter", "gpu",
     lambda r: edit(r, "tensorrt_llm", 'key: "kv_cache_free_gpu_mem_fraction"',
                    'key: "kv_cache_free_gpu_memory_fraction"'),
     Problem("tensorrt_llm", "config.pbtxt", "parameters.kv_cache_free_gpu_memory_fraction",
             "not a parameter of the tensorrtllm backend")),
    ("contract dtype changed", "gpu",
     lambda r: edit(r, "ensemble", 'name: "max_tokens"\n    data_type: TYPE_INT32',
                    'name: "max_tokens"\n    data_type: TYPE_INT64'),
     Problem("ensemble", "config.pbtxt", "input.max_tokens.data_type",
             "TYPE_INT64, the contract says TYPE_INT32")),
    ("name does not match folder", "cpu",
     lambda r: edit(r, "postprocessing", 'name: "postprocessing"', 'name: "post"'),
     Problem("postprocessing", "config.pbtxt", "name",
             "'post' does not match its folder 'postprocessing'")),
    ("stray folder without config", "cpu", _stray_folder,
     Problem("notes", "config.pbtxt", "file", "missing (Triton cannot load this folder)")),
    ("BLS calls a missing model", "cpu",
     lambda r: edit(r, "tensorrt_llm_bls", 'string_value: "tensorrt_llm"', 'string_value: "llm"'),
     Problem("tensorrt_llm_bls", "config.pbtxt", "parameters.tensorrt_llm_model_name",
             "model 'llm' is not in the repository")),
    ("llmapi calls a missing model", "cpu",
     lambda r: edit(r, "llmapi", 'string_value: "tensorrt_llm"', 'string_value: "llm"'),
     Problem("llmapi", "config.pbtxt", "parameters.tensorrt_llm_model_name",
             "model 'llm' is not in the repository")),
    ("llmapi batched: NVIDIA's clients send whole shapes", "gpu",
     lambda r: edit(r, "llmapi", "max_batch_size: 0", "max_batch_size: 8"),
     Problem("llmapi", "config.pbtxt", "max_batch_size", "must be 0")),
    ("CPU postprocessing batched: cancels would not stop the LLM", "cpu",
     lambda r: edit(r, "postprocessing", "instance_group [",
                    "dynamic_batching { max_queue_delay_microseconds: 100 }\ninstance_group ["),
     Problem("postprocessing", "config.pbtxt", "dynamic_batching", "client's cancel")),
    ("CPU postprocessing on several instances reorders a stream", "cpu",
     lambda r: edit(r, "postprocessing", "count: 1", "count: 2"),
     Problem("postprocessing", "config.pbtxt", "instance_group", "reorder")),
]


def _matches(problem: Problem, want: Problem) -> bool:
    return (problem.model == want.model and problem.file == want.file
            and problem.field.startswith(want.field) and want.message in problem.message)


@pytest.mark.parametrize(("flavour", "breaker", "want"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_repository_is_caught(flavour: str, breaker: Breaker, want: Problem,
                                     clean: dict[str, Path], tmp_path: Path) -> None:
    repo = copy_of(clean, flavour, tmp_path)
    breaker(repo)
    problems = validate_repository(repo)
    assert any(_matches(p, want) for p in problems), "\n".join(map(str, problems))


def test_there_are_at_least_fifteen_distinct_broken_fixtures() -> None:
    assert len({c[0] for c in CASES}) >= 15


def test_every_problem_is_reported_at_once(clean: dict[str, Path], tmp_path: Path) -> None:
    repo = copy_of(clean, "cpu", tmp_path)
    _instance_group_on_ensemble(repo)
    _drop_stop_words_mapping(repo)
    (repo / "postprocessing" / "1" / "model.py").unlink()
    edit(repo, "preprocessing", 'key: "end_id"\n  value { string_value: "2" }',
         'key: "end_id"\n  value { string_value: "5" }')
    problems = validate_repository(repo)
    assert {p.field for p in problems} >= {"instance_group", "input.stop_words", "file",
                                           "parameters.end_id"}


def test_problem_formats_as_model_file_field_message() -> None:
    p = Problem("ensemble", "config.pbtxt", "instance_group", "not allowed")
    assert str(p) == "ensemble/config.pbtxt: instance_group: not allowed"


def test_moved_gpu_repository_finds_its_engine_inside_itself(clean: dict[str, Path],
                                                             tmp_path: Path) -> None:
    repo = copy_of(clean, "gpu", tmp_path)  # gpt_model_path: <tmp_path>/repo/tensorrt_llm/...
    moved = repo.rename(tmp_path / "moved")  # as if mounted elsewhere (e.g. /models)
    assert not repo.exists()
    assert validate_repository(moved) == []


def test_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="not a directory"):
        validate_repository(tmp_path / "nope")


def test_missing_core_models_are_reported(tmp_path: Path) -> None:
    problems = validate_repository(tmp_path)
    assert {p.model for p in problems} == {C.ENSEMBLE, C.PREPROCESSING, C.LLM, C.POSTPROCESSING}


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_validate_clean_and_broken(clean: dict[str, Path], tmp_path: Path) -> None:
    from tritonllm.cli import main

    r = CliRunner().invoke(main, ["validate", str(clean["cpu"])])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith(": ok")

    repo = copy_of(clean, "cpu", tmp_path)
    _instance_group_on_ensemble(repo)
    _drop_stop_words_mapping(repo)
    r = CliRunner().invoke(main, ["validate", str(repo)])
    assert r.exit_code == 1
    assert "ensemble/config.pbtxt: instance_group: an ensemble must not have instance groups" \
        in r.output
    assert "ensemble/config.pbtxt: input.stop_words: not used by any step" in r.output
    assert "2 problem(s)" in r.output

    r = CliRunner().invoke(main, ["validate", "--json", str(repo)])
    assert r.exit_code == 1
    assert {p["field"] for p in json.loads(r.output)} == {"instance_group", "input.stop_words"}
