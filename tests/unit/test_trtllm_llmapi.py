"""The current GPU path without a GPU: the ``trtllm`` build (an LLM API deployment) and the
llmapi ``tensorrt_llm`` model's logic over the LLM API.

Two things here cannot be real, and are FAKES, labelled where used:

* ModelOpt quantization needs a GPU: the RECORDING FAKE ``python`` of
  tests/unit/fakes/trtllm_recorder.py (via test_trtllm_builder's ``fake_tools``) records the
  quantizer's argv and writes what ModelOpt's Hugging Face export writes;
* ``tensorrt_llm.LLM`` needs a GPU: :class:`FakeLLM` plays ``generate_async`` with scripted
  ``RequestOutput`` s shaped like the LLM API's (``outputs[0].text`` cumulative, ``finished``,
  ``finish_reason``, ``token_ids``, ``prompt_token_ids``) and records the SamplingParams.

An unquantized build needs no GPU tool and runs for real.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from test_trtllm_builder import FakeTools, fake_tools  # noqa: F401  (the recording fake)

from tritonllm.builders import BuildSettings, build, read_manifest
from tritonllm.builders.repository import render_repository
from tritonllm.builders.trtllm_llmapi import QUANTIZE_SCRIPT
from tritonllm.builders.validate import validate_repository
from tritonllm.cli import main
from tritonllm.contract import LLMAPI_IN as IN
from tritonllm.contract import LLMAPI_OUT as OUT
from tritonllm.ensembles.llmapi import Outcome
from tritonllm.ensembles.llmapi_trtllm import LLMAPIEngineFront
from tritonllm.ensembles.requests import RequestError
from tritonllm.errors import ConfigError, EngineUnavailable
from tritonllm.settings import RepoSettings
from tritonllm.trtllm_release import LLM_ARGS, TRTLLM_RELEASE, load_model_yaml


def _settings(model: Path, out: Path, **kw: Any) -> BuildSettings:
    return BuildSettings(checkpoint=model, engine="trtllm", out=out, **kw)


# --- the build ------------------------------------------------------------------------------

def test_an_unquantized_build_copies_the_checkpoint_and_checks_the_llm_arguments(
        tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    result = build(_settings(tiny_model, out, max_batch_size=16, max_num_tokens=512, tp=1))
    assert not result.cached
    m = read_manifest(out)
    assert m.engine == "trtllm" and m.commands == []  # nothing ran: no GPU tool needed
    assert m.tools["tensorrt_llm (pinned)"] == TRTLLM_RELEASE
    args = json.loads((out / "llm_args.json").read_text())
    assert set(args) <= LLM_ARGS
    assert args == {"model": "checkpoint", "backend": "pytorch", "tensor_parallel_size": 1,
                    "pipeline_parallel_size": 1, "max_batch_size": 16, "max_num_tokens": 512,
                    "max_input_len": 1023, "max_seq_len": 1024, "dtype": "float16",
                    "trust_remote_code": False, "enable_chunked_prefill": True}
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "checkpoint" / name).read_bytes() == (tiny_model / name).read_bytes()
    assert build(_settings(tiny_model, out, max_batch_size=16, max_num_tokens=512)).cached


def test_the_repository_of_a_build_validates_and_points_at_its_checkpoint(
        tiny_model: Path, tmp_path: Path) -> None:
    import yaml

    engine = build(_settings(tiny_model, tmp_path / "engine", ep=1)).engine_dir
    repo = render_repository(engine, tmp_path / "repo", RepoSettings(
        server_repo_path="/models", kv_cache_free_gpu_mem_fraction=0.8,
        enable_kv_cache_reuse=True))
    assert validate_repository(repo) == []
    data = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert data["model"] == "/models/tensorrt_llm/1/engine/checkpoint"
    assert data["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "enable_block_reuse": True}
    # An edit that invents a key is a validation problem naming it.
    text = (repo / "tensorrt_llm" / "1" / "model.yaml").read_text()
    (repo / "tensorrt_llm" / "1" / "model.yaml").write_text(text + "max_bacth_size: 4\n")
    problems = [str(p) for p in validate_repository(repo)]
    assert any("'max_bacth_size' is not an argument of TensorRT-LLM" in p for p in problems)


def test_quantizing_runs_modelopt_with_the_recorded_argv(  # RECORDING FAKE (see module doc)
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools) -> None:  # noqa: F811
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "a.txt").write_text("some calibration text\n")
    out = tmp_path / "engine"
    result = build(_settings(tiny_model, out, quantization="fp8", dtype="bfloat16",
                             extra={"calib_dataset": str(calib), "calib_size": 8}))
    (call,) = [c for c in fake_tools.calls() if c["tool"] == "python"]
    argv = call["argv"]
    assert argv[0] == str(QUANTIZE_SCRIPT)
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert flags["--qformat"] == "fp8" and flags["--dtype"] == "bfloat16"
    assert flags["--model-dir"] == str(tiny_model.resolve())
    assert flags["--calib-dataset"] == str(calib.resolve()) and flags["--calib-size"] == "8"
    assert call["env"]["HF_HUB_OFFLINE"] == "1"  # a local calibration set: never the hub
    assert json.loads((out / "checkpoint" / "hf_quant_config.json").read_text())[
        "quantization"]["quant_algo"] == "FP8"
    assert result.manifest.commands == [[fake_tools.python, *argv]]
    assert json.loads((out / "llm_args.json").read_text())["model"] == "checkpoint"


def test_quantizing_without_modelopt_is_one_clear_line(  # RECORDING FAKE
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODELOPT", "0")
    with pytest.raises(EngineUnavailable, match="nvidia-modelopt is not installed") as exc:
        build(_settings(tiny_model, tmp_path / "engine", quantization="nvfp4"))
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "engine").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"quantization": "int8_wo"}, "the trtllm engine cannot do 'int8_wo'; it supports: fp8, "
                                  "nvfp4, int4_awq, w4a8_awq"),
    ({"dtype": "float32"}, "dtype: 'float32' is not supported by the trtllm engine"),
    ({"ep": 2}, "ep: 2 must be at most tp"),
    ({"quantization": "int4_awq", "group_size": 64}, "group_size: ModelOpt picks"),
])
def test_invalid_combinations(tiny_model: Path, tmp_path: Path, options: dict[str, Any],
                              message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build(_settings(tiny_model, tmp_path / "engine", **options))


def test_the_cli_builds_the_current_path_and_names_the_legacy_flag(
        tiny_model: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["build", str(tiny_model), "--engine", "trtllm",
                                  "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "built trtllm engine" in r.output
    r = CliRunner().invoke(main, ["build", str(tiny_model), "--engine", "cpu",
                                  "--legacy-engine", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--legacy-engine: only with --engine trtllm" in r.output


# --- the llmapi model over the LLM API (FAKE LLM, see module doc) --------------------------------

@dataclass
class _Completion:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: str | None = None
    cumulative_logprob: float | None = None


@dataclass
class _Output:
    outputs: list[_Completion]
    finished: bool
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3])


class _Result:
    """A GenerationResult: iterates RequestOutputs; ``abort()`` ends it as cancelled."""

    def __init__(self, words: list[str], streaming: bool) -> None:
        self.words = words
        self.streaming = streaming
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def __iter__(self) -> Any:
        text = ""
        steps = self.words if self.streaming else ["".join(self.words)]
        for i, w in enumerate(steps):
            text += w
            last = i == len(steps) - 1 or self.aborted
            reason = ("cancelled" if self.aborted else "length") if last else None
            yield _Output([_Completion(text, list(range(len(text.split()))), reason,
                                       None, -1.5 if last else None)], last)
            if last:
                return


class FakeLLM:
    """FAKE ``tensorrt_llm.LLM``: records each generate_async call."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self.results: list[_Result] = []

    def generate_async(self, prompt: str, sampling_params: dict[str, Any],
                       streaming: bool = False) -> _Result:
        self.calls.append((prompt, sampling_params, streaming))
        self.results.append(_Result(self.words, streaming))
        return self.results[-1]


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], bool]] = []
        self.cancelled = False

    def send(self, outputs: dict[str, Any], final: bool) -> None:
        self.sent.append((outputs, final))

    def error(self, message: str, final: bool = True) -> None:
        raise AssertionError(message)

    def is_cancelled(self) -> bool:
        return self.cancelled


def _front(words: list[str] | None = None, decoupled: bool = True) -> tuple[LLMAPIEngineFront,
                                                                          FakeLLM]:
    llm = FakeLLM(words or ["Once", " upon", " a", " time"])
    limits = LLMAPIEngineFront.limits_for(1000, 2, 2, 256)
    return LLMAPIEngineFront(llm, dict, limits, decoupled=decoupled, cancel_check_s=0.0), llm


def _req(**params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {IN.text_input: np.array([b"The prompt"], dtype=object)}
    for name, value in params.items():
        if isinstance(value, list):
            out[name] = np.array([v.encode() for v in value], dtype=object)
        elif isinstance(value, bool):
            out[name] = np.array([value])
        elif isinstance(value, float):
            out[name] = np.array([value], np.float32)
        else:
            out[name] = np.array([value], np.int32)
    return out


def test_sampling_inputs_become_sampling_params_fields() -> None:
    front, llm = _front()
    inputs = _req(sampling_param_max_tokens=12, sampling_param_temperature=0.5,
                  sampling_param_top_k=4, sampling_param_stop=["x", "y"],
                  sampling_param_min_tokens=2, sampling_param_repetition_penalty=1.1)
    assert front.run(inputs, Sink(), "r") is Outcome.SENT
    ((prompt, params, streaming),) = llm.calls
    assert prompt == "The prompt" and streaming is False
    assert params == {"max_tokens": 12, "exclude_input_from_output": False, "temperature": 0.5,
                      "top_k": 4, "stop": ["x", "y"], "min_tokens": 2,
                      "repetition_penalty": pytest.approx(1.1)}


def test_defaults_are_the_llm_apis() -> None:
    front, llm = _front()
    front.run(_req(), Sink())
    assert llm.calls[0][1] == {"max_tokens": 32, "exclude_input_from_output": False}


def test_a_stream_sends_nvidias_responses() -> None:
    front, _ = _front()
    sink = Sink()
    front.run(_req(streaming=True, return_finish_reason=True, return_num_output_tokens=True,
                   return_cumulative_logprob=True), sink)
    texts = [o[OUT.text_output].tolist() for o, _ in sink.sent]
    assert texts == [[b"Once"], [b"Once upon"], [b"Once upon a"], [b"Once upon a time"]]
    assert [o[OUT.finish_reason].tolist() for o, _ in sink.sent] == [[b"None"]] * 3 + [[b"length"]]
    assert [final for _, final in sink.sent] == [False, False, False, True]
    last = sink.sent[-1][0]
    assert last[OUT.num_output_tokens].tolist() == [4] and OUT.num_input_tokens not in last
    assert last[OUT.cumulative_logprob].tolist() == [-1.5]
    assert OUT.stop_reason not in last  # not asked for


def test_stop_by_id_aborts_and_a_client_cancel_ends_with_cancelled() -> None:
    front, llm = _front()
    assert front.run(_req(stop=True), Sink(), "r1") is Outcome.CANCELLED  # nothing live: fine
    sink = Sink()
    sink.cancelled = True
    assert front.run(_req(streaming=True), sink, "r2") is Outcome.CANCELLED
    assert llm.results[-1].aborted
    with pytest.raises(RequestError, match=r"^stop: needs the request id"):
        front.run(_req(stop=True), Sink(), "")


@pytest.mark.parametrize(("params", "field"), [
    ({"sampling_param_top_p": 1.5}, "sampling_param_top_p"),
    ({"sampling_param_best_of": 2}, "sampling_param_best_of"),
    ({"sampling_param_max_tokens": 0}, "sampling_param_max_tokens"),
    ({"sampling_param_end_id": 5000}, "sampling_param_end_id"),
])
def test_bad_input_names_the_llmapi_input_before_the_llm_sees_it(
        params: dict[str, Any], field: str) -> None:
    front, llm = _front()
    with pytest.raises(RequestError, match=f"^{field}: "):
        front.run(_req(**params), Sink())
    assert llm.calls == []


def test_streaming_needs_a_decoupled_model() -> None:
    front, _ = _front(decoupled=False)
    with pytest.raises(RequestError, match=r"^streaming: "):
        front.run(_req(streaming=True), Sink())


def test_model_yaml_is_read_as_nvidias_model_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("model: /m\nbackend: pytorch\ntensor_parallel_size: 2\n"
                    "triton_config:\n  max_batch_size: 0\n  decoupled: true\n")
    args, triton = load_model_yaml(path)
    assert args == {"model": "/m", "backend": "pytorch", "tensor_parallel_size": 2}
    assert triton == {"max_batch_size": 0, "decoupled": True}
    path.write_text("model: /m\ntensor_paralel_size: 2\n")
    with pytest.raises(ConfigError, match="'tensor_paralel_size' is not an argument"):
        load_model_yaml(path)
