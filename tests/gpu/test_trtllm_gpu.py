"""Real TensorRT-LLM builds of the tiny model, and greedy tokens checked against transformers.

Opt-in (``pytest -m gpu tests/gpu``) on a host with an NVIDIA GPU and TensorRT-LLM with
``trtllm-build`` (NGC's ``nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3`` image, with
tritonllm installed next to it). Skipped cleanly where tensorrt_llm is not importable or no
GPU is visible. The engine is read back through TensorRT-LLM's own runtime (``ModelRunnerCpp``,
the executor Triton's tensorrtllm backend uses, or the Python ``ModelRunner`` where the C++
bindings are missing), the reference is Hugging Face transformers on the CPU in float32.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.gpu,
    # tensorrt_llm, modelopt and their CUDA stacks warn on import; those are not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

if importlib.util.find_spec("tensorrt_llm") is None:
    pytest.skip("tensorrt_llm is not installed (run inside NGC's tritonserver:<yy.mm>-trtllm-"
                "python-py3 image)", allow_module_level=True)

from tritonllm.builders import BuildSettings, build, read_manifest  # noqa: E402

PROMPTS = ["The quick brown fox", "Triton serves a model", "café naïve 日本語 🙂", "a"]
NEW_TOKENS = 24
LIMITS = {"max_batch_size": 4, "max_input_len": 64, "max_seq_len": 128, "max_num_tokens": 256}


@pytest.fixture(scope="module")
def cuda() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible")
    return torch


def _engine(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, name: str,
            **options: Any) -> Path:
    out = tmp_path_factory.mktemp("trtllm") / name
    build(BuildSettings(checkpoint=tiny_model, engine="trtllm-legacy", out=out, **LIMITS,
                        **options))
    return out


@pytest.fixture(scope="module")
def fp16_engine(cuda: Any, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _engine(tiny_model, tmp_path_factory, "fp16")


@pytest.fixture(scope="module")
def fp32_engine(cuda: Any, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _engine(tiny_model, tmp_path_factory, "fp32", dtype="float32")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local calibration set (no hub on test hosts): a 'train' split with a 'text' column."""
    import random

    rng = random.Random(1)
    words = [*" ".join(PROMPTS).split(), "model", "server", "token", "batch", "engine", "the"]
    rows = [" ".join(rng.choice(words) for _ in range(48)) for _ in range(64)]
    d = tmp_path_factory.mktemp("calib")
    (d / "train.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows),
                                   encoding="utf-8")
    return d


def _prompt_ids(tiny_model: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    return [tok(p)["input_ids"] for p in PROMPTS]


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:tokens.index(eos)] if eos in tokens else tokens


def _hf_greedy(tiny_model: Path, prompts: list[list[int]], eos: int, pad: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    # The tiny checkpoint is float32; .float() pins it whatever transformers' default dtype.
    model = AutoModelForCausalLM.from_pretrained(tiny_model).float().eval()
    outs = []
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                               do_sample=False, eos_token_id=eos, pad_token_id=pad)
            outs.append(_until_eos(y[0, len(ids):].tolist(), eos))
    return outs


def _trtllm_greedy(engine: Path, prompts: list[list[int]], eos: int,
                   pad: int) -> list[list[int]]:
    import torch
    from tensorrt_llm.runtime import PYTHON_BINDINGS, ModelRunner

    kwargs: dict[str, Any] = {"engine_dir": str(engine), "rank": 0}
    runner_cls: Any = ModelRunner
    if PYTHON_BINDINGS:
        from tensorrt_llm.runtime import ModelRunnerCpp

        runner_cls = ModelRunnerCpp
        kwargs.update(max_batch_size=len(prompts), max_input_len=max(map(len, prompts)),
                      max_output_len=NEW_TOKENS, max_beam_width=1)
    runner = runner_cls.from_dir(**kwargs)
    batch = [torch.tensor(ids, dtype=torch.int32) for ids in prompts]
    with torch.no_grad():
        out = runner.generate(batch_input_ids=batch, max_new_tokens=NEW_TOKENS, end_id=eos,
                              pad_id=pad, top_k=1, top_p=0.0, temperature=1.0, num_beams=1,
                              output_sequence_lengths=True, return_dict=True)
        torch.cuda.synchronize()
    ids, lengths = out["output_ids"], out["sequence_lengths"]
    return [_until_eos(ids[i][0][len(p):int(lengths[i][0])].tolist(), eos)
            for i, p in enumerate(prompts)]


def _ids(engine: Path) -> tuple[int, int]:
    lim = read_manifest(engine).limits
    assert lim.eos_token_ids and lim.pad_token_id is not None
    return lim.eos_token_ids[0], lim.pad_token_id


def test_fp16_engine_files_and_build_config(fp16_engine: Path) -> None:
    assert (fp16_engine / "rank0.engine").stat().st_size > 0
    cfg = json.loads((fp16_engine / "config.json").read_text())
    build_cfg, pretrained = cfg["build_config"], cfg["pretrained_config"]
    assert pretrained["dtype"] == "float16"
    assert pretrained["mapping"]["world_size"] == 1
    for key, value in LIMITS.items():
        assert build_cfg[key] == value, key
    plugins = build_cfg["plugin_config"]
    assert plugins["remove_input_padding"] is True
    assert plugins["context_fmha"] is True and plugins["use_paged_context_fmha"] is True
    assert plugins["gemm_plugin"] == "float16" and plugins["gpt_attention_plugin"] == "float16"
    m = read_manifest(fp16_engine)
    assert [Path(c[0]).name for c in m.commands][-1] == "trtllm-build"
    assert m.tools["tensorrt_llm"] != "absent"


def test_second_build_is_a_cache_hit(fp16_engine: Path, tiny_model: Path) -> None:
    again = build(BuildSettings(checkpoint=tiny_model, engine="trtllm-legacy", out=fp16_engine,
                                **LIMITS))
    assert again.cached


def test_fp32_greedy_tokens_match_transformers(fp32_engine: Path, tiny_model: Path) -> None:
    eos, pad = _ids(fp32_engine)
    prompts = _prompt_ids(tiny_model)
    expected = _hf_greedy(tiny_model, prompts, eos, pad)
    assert any(expected), "the reference generated nothing; the test would prove nothing"
    assert _trtllm_greedy(fp32_engine, prompts, eos, pad) == expected


def test_fp16_greedy_tokens_match_transformers(fp16_engine: Path, tiny_model: Path) -> None:
    # The tiny model's wide init makes greedy choices clear-cut, so fp16 rounding does not
    # flip them; compare the first tokens, where no accumulated drift can excuse a mismatch.
    eos, pad = _ids(fp16_engine)
    prompts = _prompt_ids(tiny_model)
    expected = [t[:8] for t in _hf_greedy(tiny_model, prompts, eos, pad)]
    got = [t[:8] for t in _trtllm_greedy(fp16_engine, prompts, eos, pad)]
    assert got == expected


@pytest.mark.parametrize("quantization", ["int8_wo", "int4_wo"])
def test_weight_only_engines_generate(cuda: Any, tiny_model: Path,
                                      tmp_path_factory: pytest.TempPathFactory,
                                      quantization: str) -> None:
    engine = _engine(tiny_model, tmp_path_factory, quantization, quantization=quantization)
    cfg = json.loads((engine / "config.json").read_text())
    algo = {"int8_wo": "W8A16", "int4_wo": "W4A16"}[quantization]
    assert cfg["pretrained_config"]["quantization"]["quant_algo"] == algo
    eos, pad = _ids(engine)
    prompts = _prompt_ids(tiny_model)
    assert len(_trtllm_greedy(engine, prompts, eos, pad)) == len(prompts)


@pytest.mark.parametrize(("quantization", "algo"),
                         [("int4_awq", "W4A16_AWQ"), ("smoothquant", "W8A8_SQ_PER_CHANNEL"),
                          ("fp8", "FP8")])
def test_calibrated_engines_build_and_generate(cuda: Any, tiny_model: Path, calib_dir: Path,
                                               tmp_path_factory: pytest.TempPathFactory,
                                               quantization: str, algo: str) -> None:
    if importlib.util.find_spec("modelopt") is None:
        pytest.skip("nvidia-modelopt is not installed")
    if quantization == "fp8" and cuda.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs an Ada or Hopper GPU")
    engine = _engine(tiny_model, tmp_path_factory, quantization, quantization=quantization,
                     extra={"calib_dataset": str(calib_dir), "calib_size": 32})
    cfg = json.loads((engine / "config.json").read_text())
    assert cfg["pretrained_config"]["quantization"]["quant_algo"] == algo
    eos, pad = _ids(engine)
    prompts = _prompt_ids(tiny_model)
    assert len(_trtllm_greedy(engine, prompts, eos, pad)) == len(prompts)


def test_tp2_build_writes_two_ranks(cuda: Any, tiny_model: Path,
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    if cuda.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    engine = _engine(tiny_model, tmp_path_factory, "tp2", tp=2)
    assert sorted(p.name for p in engine.glob("rank*.engine")) == ["rank0.engine",
                                                                  "rank1.engine"]
    cfg = json.loads((engine / "config.json").read_text())
    assert cfg["pretrained_config"]["mapping"]["tp_size"] == 2
