"""The current GPU path on a GPU: a ``trtllm`` build (LLM API deployment) loaded by TensorRT-LLM.

Opt-in (``pytest -m gpu tests/gpu``) inside NGC's
``nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3`` (TensorRT-LLM 1.2.1) with tritonllm
installed next to it; skipped where tensorrt_llm is not importable or no GPU is visible. The
repository's ``model.yaml`` is loaded exactly as the llmapi model loads it (``LLM(**args)``),
and greedy text is checked against Hugging Face transformers on the CPU in float32. With a
``tritonserver`` on PATH, the rendered repository is also served and its classic ``ensemble``
(the front over the llmapi ``tensorrt_llm``) answered. Not run yet: no GPU host could install
TensorRT-LLM for this project (see docs/gpu.md).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

if importlib.util.find_spec("tensorrt_llm") is None:
    pytest.skip("tensorrt_llm is not installed (run inside NGC's tritonserver:26.07-trtllm-"
                "python-py3 image)", allow_module_level=True)

from tritonllm.builders import BuildSettings, build  # noqa: E402
from tritonllm.builders.repository import render_repository  # noqa: E402
from tritonllm.settings import RepoSettings  # noqa: E402
from tritonllm.trtllm_release import load_model_yaml  # noqa: E402

PROMPTS = ["The quick brown fox", "Triton serves a model", "café naïve 日本語 🙂"]
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def cuda() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible")
    return torch


@pytest.fixture(scope="module")
def repo(cuda: Any, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llmapi-gpu")
    engine = build(BuildSettings(checkpoint=tiny_model, engine="trtllm", out=root / "engine",
                                 max_batch_size=4, max_seq_len=128, max_input_len=64,
                                 max_num_tokens=256, dtype="float16")).engine_dir
    return render_repository(engine, root / "repo", RepoSettings(
        kv_cache_free_gpu_mem_fraction=0.2))


def _hf(tiny_model: Path, prompt: str) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).float().eval()
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    return str(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


def test_model_yaml_loads_in_the_llm_api_and_greedy_text_matches(repo: Path,
                                                                  tiny_model: Path) -> None:
    from tensorrt_llm import LLM, SamplingParams

    args, triton = load_model_yaml(repo / "tensorrt_llm" / "1" / "model.yaml")
    assert triton["max_batch_size"] == 0
    llm = LLM(**args)
    try:
        for prompt in PROMPTS:
            out = llm.generate(prompt, SamplingParams(max_tokens=NEW_TOKENS, top_k=1))
            # fp16 on the GPU against fp32 on the CPU: the tiny model's logits are far apart,
            # so greedy picks agree (checked token for token on the classic path too).
            assert out.outputs[0].text == _hf(tiny_model, prompt)
    finally:
        llm.shutdown()


@pytest.mark.skipif(shutil.which("tritonserver") is None, reason="no tritonserver on PATH")
def test_the_classic_ensemble_answers_through_the_llmapi_model(repo: Path,
                                                               tiny_model: Path) -> None:
    from tritonllm.client import LLMClient
    from tritonllm.server import ServerOptions, TritonServer

    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=600)) as srv, \
            LLMClient(srv.grpc_address, model="ensemble") as client:
        done = client.generate(PROMPTS[0], NEW_TOKENS)
        assert done.text == _hf(tiny_model, PROMPTS[0])
        assert done.finish_reason in ("length", "stop")
