"""The contract is the only wiring: every name table of the code is declared by it, and no
product module outside ``tritonllm/contract.py`` spells a tensor name as a string literal."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tritonllm import contract as C
from tritonllm.ensembles import bls, llm_service, processing
from tritonllm.ensembles.requests import GenerationRequest
from tritonllm.ensembles.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("tritonllm", "builders", "ensembles", "client", "perf", "model_repository")
TENSOR_NAMES = frozenset(t.name for c in C.CONTRACTS.values() for t in (*c.inputs, *c.outputs))
#: Our request model's field names (GenerationRequest, SamplingParams, the parser's fields):
#: many are named after the ensemble input they come from, but they are attributes, not tensors.
FIELD_NAMES = frozenset(
    {f.name for f in dataclasses.fields(GenerationRequest)}
    | {f.name for f in dataclasses.fields(SamplingParams)}
    | {k.removeprefix("sampling.") for fields in C.REQUEST_FIELDS.values() for k in fields})

#: OpenAI's request parameters that share a name with a tensor of the contract.
_OPENAI_PARAMS = frozenset({"max_tokens", "temperature", "top_p", "seed", "stop",
                            "presence_penalty", "frequency_penalty", "stream"})

#: Literals equal to a tensor name that are something else, per file (reason first).
NOT_TENSORS: dict[str, tuple[str, frozenset[str]]] = {
    "ensembles/requests.py": ("request-model field names (GenerationRequest, SamplingParams)",
                              FIELD_NAMES),
    "ensembles/stops.py": ("a __slots__ attribute", frozenset({"stop"})),
    "ensembles/tokenization.py": ("the key of a Hugging Face tokenizer's BatchEncoding",
                                  frozenset({"input_ids"})),
    "tritonllm/cli/client.py": ("keyword arguments of LLMClient.generate; keys of --json",
                                frozenset({"bad_words", "stop", "exclude_input_in_output",
                                           "finish_reason"})),
    "tritonllm/cli/perf.py": ("keys of a perf scenario", frozenset({"streaming", "seed"})),
    "tritonllm/cli/repo.py": ("RepoSettings fields (config.pbtxt parameter keys)",
                              frozenset({"streaming", "exclude_input_in_output"})),
    "client/_logic.py": ("the stop= keyword of generate()/stream()", frozenset({"stop"})),
    "client/_async.py": ("a method name in a TypeError message", frozenset({"stream"})),
    "client/_sync.py": ("a method name in a TypeError message", frozenset({"stream"})),
    "perf/loadgen.py": ("a keyword of AsyncLLMClient.stream", frozenset({"min_tokens"})),
    "tritonllm/openai/protocol.py": ("OpenAI API parameter names (and the client keywords "
                                     "they become)", _OPENAI_PARAMS),
    "tritonllm/openai/serving.py": ("OpenAI API parameter and response field names",
                                    frozenset({"max_tokens", "temperature", "top_p", "seed",
                                               "stop", "presence_penalty",
                                               "frequency_penalty", "finish_reason"})),
    "perf/metrics.py": ("a key of the JSON report's request record",
                        frozenset({"finish_reason"})),
    "perf/prompts.py": ("the tokenizer output's key; keys of the --dataset JSONL format",
                        frozenset({"input_ids", "text_input", "max_tokens"})),
    "perf/report.py": ("a word of the Markdown report", frozenset({"streaming"})),
    "builders/repository.py": ("config.pbtxt parameter keys / template variables; KvCacheConfig's "
                               "max_tokens in model.yaml",
                               frozenset({"exclude_input_in_output", "streaming", "max_tokens"})),
    "tritonllm/trtllm_release.py": ("TensorRT-LLM's LLM() / KvCacheConfig argument names",
                                frozenset({"lora_config", "max_tokens"})),
    "ensembles/llmapi_trtllm.py": ("a SamplingParams keyword of the LLM API",
                                   frozenset({"max_tokens"})),
    "builders/trtllm_convert.py": ("a keyword of ModelOpt's calibration", frozenset({"seed"})),
    "builders/validate.py": ("config.pbtxt parameter keys",
                             frozenset({"exclude_input_in_output", "streaming", "end_id",
                                        "pad_id"})),
    "tritonllm/settings.py": ("settings field names (config.pbtxt parameter keys)",
                              frozenset({"end_id", "pad_id"})),
}


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value in TENSOR_NAMES and id(n) not in docstrings]


def test_no_tensor_name_literal_outside_the_contract() -> None:
    found = []
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "tritonllm/contract.py":
                continue
            allowed = NOT_TENSORS.get(rel, ("", frozenset()))[1]
            found += [f"{rel}:{line}: {value!r}" for line, value in _literals(path)
                      if value not in allowed]
    assert not found, ("tensor names spelled outside tritonllm/contract.py (use its "
                       "TensorNames attributes, e.g. LLM_OUT.output_ids):\n" + "\n".join(found))


def test_the_allow_list_has_no_stale_entries() -> None:
    for rel, (_why, allowed) in NOT_TENSORS.items():
        used = {value for _, value in _literals(ROOT / rel)}
        if rel != "ensembles/requests.py":
            assert allowed <= used, f"{rel}: {sorted(allowed - used)} no longer used"


@pytest.mark.parametrize(("model", "table", "kind"), [
    (C.PREPROCESSING, processing.CLIENT_NAMES, "keys"),
    (C.ENSEMBLE, processing.CLIENT_NAMES, "values"),
    (C.LLM, llm_service.CLIENT_NAMES, "keys"),
    (C.ENSEMBLE, llm_service.CLIENT_NAMES, "values"),
    (C.BLS, bls.PASSTHROUGH, "keys"),
    (C.LLM, bls.PASSTHROUGH, "values"),
    (C.BLS, bls.TO_PRE, "keys"),
    (C.PREPROCESSING, bls.TO_PRE, "values"),
    (C.LLM, bls.PRE_TO_LLM, "values"),
])
def test_every_input_name_table_is_declared(model: str, table: dict[str, str],
                                            kind: str) -> None:
    names = table.keys() if kind == "keys" else table.values()
    assert names and all(C.contract(model).has_input(n) for n in names), sorted(names)


def test_output_name_tables_are_declared() -> None:
    assert all(C.LLM_CONTRACT.has_output(n) for n in bls.LLM_OUTPUTS)
    assert all(C.PREPROCESSING_CONTRACT.has_output(n) for n in bls.PRE_TO_LLM)
    assert all(C.PREPROCESSING_CONTRACT.has_output(n) for n in C.PREPROCESSING_SENDS)
    for flag, outputs in C.OPTIONAL_OUTPUTS.items():
        assert C.LLM_CONTRACT.has_input(flag)
        assert all(C.LLM_CONTRACT.has_output(n) and C.BLS_CONTRACT.has_output(n)
                   for n in outputs)


def test_request_fields_agree_with_the_wiring() -> None:
    """Each inner model reads a field from the tensor the ensemble feeds that field to."""
    ensemble = C.REQUEST_FIELDS[C.ENSEMBLE]
    as_text = {"prompt_ids": "prompt", "stop_ids": "stop_words", "bad_ids": "bad_words"}
    checked = 0
    for model in (C.PREPROCESSING, C.LLM):
        clients = C.client_names(model)
        for field, tensor in C.REQUEST_FIELDS[model].items():
            client_field = as_text.get(field, field)
            if client_field in ensemble:  # input_lengths has no client input of its own
                assert clients.get(tensor, tensor) == ensemble[client_field], (model, field)
                checked += 1
    assert checked >= 25


def test_tensor_names_refuse_what_a_model_does_not_declare() -> None:
    assert C.LLM_OUT.output_ids == "output_ids" and "QUERY" in C.PRE_IN
    with pytest.raises(AttributeError, match="tensorrt_llm declares no tensor 'text_input'"):
        _ = C.LLM_IN.text_input


def test_preprocessing_sends_what_the_contract_says(tiny_model: Path) -> None:
    from tritonllm.ensembles.tokenization import Tokenization
    from tritonllm.settings import PreprocessingParams

    tok = Tokenization.from_dir(tiny_model)
    pre = processing.Preprocessor(tok, tok.special, PreprocessingParams(tokenizer_dir=tiny_model))
    out = pre.run({C.PRE_IN.QUERY: np.array([[b"hi"]], dtype=object),
                   C.PRE_IN.REQUEST_OUTPUT_LEN: np.array([[4]], np.int32)})
    assert tuple(out) == C.PREPROCESSING_SENDS
