"""The embedding models of a repository, from an onnx engine (see tritonllm.contract,
"embeddings").

Rendered beside the LLM's models (``tritonllm repo LLM_ENGINE --embedding EMB_ENGINE``) or
alone (``tritonllm repo EMB_ENGINE``). Layout::

    cpu:  embedding/config.pbtxt               Python model: tokenize + ONNX Runtime
          embedding/1/model.py
          embedding/1/engine/                  model.onnx, embedding.json, manifest.json
          embedding/1/tokenizer/
    gpu:  embedding/config.pbtxt, embedding/1/ ensemble: embedding_tokenizer → embedding_encoder
          embedding_tokenizer/1/model.py, embedding_tokenizer/1/tokenizer/
          embedding_encoder/1/model.onnx       platform onnxruntime_onnx, TensorRT accelerator

Dynamic batching comes from the engine's limits: ``max_batch_size`` is the engine's (or
``embedding_max_batch_size``, at most the engine's), the preferred batch sizes are the powers
of two from 4 up to it, and the queue delay is ``embedding_max_queue_delay_microseconds``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonllm import contract as C
from tritonllm.builders.manifest import MANIFEST, Manifest
from tritonllm.builders.onnx import EMBEDDING_INFO, ONNX_FILE, read_embedding_info
from tritonllm.errors import ConfigError, RepositoryError
from tritonllm.settings import EmbeddingParams, RepoSettings

#: Where the GPU encoder's TensorRT engines are cached (the repository may be read-only).
TRT_CACHE_DIR = "/tmp/tritonllm-trt-cache"
TRT_WORKSPACE_BYTES = 1 << 30


@dataclass(frozen=True)
class EmbeddingPlan:
    target: str
    max_batch_size: int
    preferred: tuple[int, ...]
    delay: int
    max_length: int
    pad_id: int
    info: dict[str, Any]
    version: int = 1
    engine_key: str = ""  # the onnx engine's cache key (names its TensorRT engine cache)
    dtype: str = "auto"  # the build's --dtype


def folder(model: str, version: int, sub: str = "") -> str:
    """A model's version folder (repository-relative), or ``sub`` inside it."""
    return f"{model}/{version}" + (f"/{sub}" if sub else "")


def tokenizer_subdir(target: str, version: int = 1) -> str:
    owner = C.EMBEDDING if target == "cpu" else C.EMBEDDING_TOKENIZER
    return folder(owner, version, "tokenizer")


def preferred_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    sizes = []
    n = 4
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return (*sizes, max_batch_size)


def plan_embedding(manifest: Manifest, engine_dir: Path, target: str, settings: RepoSettings,
                   version: int = 1) -> EmbeddingPlan:
    if manifest.engine != "onnx":
        raise ConfigError(f"embedding: {engine_dir} is a {manifest.engine!r} engine; build the "
                          "embedding model with --engine onnx")
    lim = manifest.limits
    mbs = settings.embedding_max_batch_size or lim.max_batch_size
    if mbs > lim.max_batch_size:
        raise ConfigError(f"embedding_max_batch_size: {mbs} exceeds the engine's max_batch_size "
                          f"{lim.max_batch_size}")
    return EmbeddingPlan(target, mbs, preferred_batch_sizes(mbs),
                         settings.embedding_max_queue_delay_microseconds, lim.max_input_len,
                         lim.pad_token_id or 0, read_embedding_info(engine_dir), version,
                         manifest.cache_key, str(manifest.build_args.get("dtype", "auto")))


def trt_precision(plan: EmbeddingPlan) -> str:
    """TensorRT's precision_mode for the encoder: FP16 unless the build asked for float32
    explicitly (``--dtype float32``: served as checked; ``auto`` and ``float16``: FP16)."""
    return "FP32" if plan.dtype == "float32" else "FP16"


def trt_cache_path(plan: EmbeddingPlan, model: str) -> str:
    """The encoder's TensorRT engine cache: one folder per engine build and profile.

    ONNX Runtime names a cached engine after the graph's structure, not its weights, so two
    checkpoints of one architecture would share an engine in a common folder (and answer
    with the first one's weights); a re-render with other profile shapes would find a stale
    one. The engine's cache key, the max batch size and the max length make it unique."""
    key = plan.engine_key[:16] or "unkeyed"
    return (f"{TRT_CACHE_DIR}/{model}-{key}-b{plan.max_batch_size}-l{plan.max_length}-"
            f"{trt_precision(plan).lower()}")


def _params(plan: EmbeddingPlan, settings: RepoSettings) -> dict[str, str]:
    cpu = plan.target == "cpu"
    return EmbeddingParams(
        tokenizer_dir=Path(tokenizer_subdir(plan.target, plan.version)),
        max_length=plan.max_length,
        engine_dir=Path(folder(C.EMBEDDING, plan.version, "engine")) if cpu else None,
        pad_id=plan.pad_id,
        max_text_bytes=settings.embedding_max_text_bytes,
        num_threads=settings.embedding_num_threads if cpu else None,
        pad_to_max_length=not cpu,
    ).to_triton_parameters()


def _profile(plan: EmbeddingPlan, batch: int) -> str:
    return ",".join(f"{name}:{batch}x{plan.max_length}"
                    for name in (C.ONNX_INPUT_IDS, C.ONNX_ATTENTION_MASK))


def render_embedding_configs(plan: EmbeddingPlan, settings: RepoSettings) -> list[Any]:
    """The RenderedModel of each embedding model (nothing is written)."""
    from tritonllm.builders.repository import render_model

    common = {"max_batch_size": plan.max_batch_size, "preferred": plan.preferred,
              "delay": plan.delay, "instance_count": settings.embedding_instance_count}
    out = []
    for name in C.EMBEDDING_MODELS[plan.target]:
        contract = C.EMBEDDING_CONTRACTS[name]
        extra: dict[str, Any] = {}
        if name in (C.EMBEDDING, C.EMBEDDING_TOKENIZER):
            extra["params"] = _params(plan, settings)
        if name == C.EMBEDDING and plan.target == "gpu":
            extra["steps"] = C.EMBEDDING_STEPS
        if name == C.EMBEDDING_ENCODER:
            fmt = plan.info.get("format", "float32")
            extra |= {
                "model_file": ONNX_FILE,
                # int8 graphs hold ONNX Runtime's integer ops, which TensorRT does not take:
                # they run on the CUDA provider, in the precision they were quantized to.
                "tensorrt": fmt != "int8",
                "precision": trt_precision(plan),
                "workspace_bytes": TRT_WORKSPACE_BYTES,
                "cache_path": trt_cache_path(plan, name),
                "profile_min": _profile(plan, 1),
                "profile_opt": _profile(plan, plan.preferred[min(2, len(plan.preferred) - 1)]),
                "profile_max": _profile(plan, plan.max_batch_size),
            }
        out.append(render_model(name, name, plan.target, contract, {**common, **extra}))
    return out


def write_embedding(work: Path, engine_dir: Path, manifest: Manifest, plan: EmbeddingPlan,
                    rendered: list[Any]) -> list[str]:
    """Write the rendered configs, model code, engine and tokenizer into ``work``; returns the
    model code copied (repository-relative)."""
    from tritonllm.builders.repository import copy_model_code

    v = plan.version
    code: list[str] = []
    for r in rendered:
        (work / r.name / str(v)).mkdir(parents=True, exist_ok=True)
        (work / r.name / "config.pbtxt").write_text(r.text, encoding="utf-8")
        if r.name == C.EMBEDDING_TOKENIZER or (r.name == C.EMBEDDING and plan.target == "cpu"):
            code += copy_model_code(r.name, r.name, work, v)
    tok = engine_dir / manifest.tokenizer_dir
    if not (tok / "tokenizer.json").is_file():
        raise RepositoryError(f"{tok}: no tokenizer.json in the engine dir; rebuild with --force")
    shutil.copytree(tok, work / tokenizer_subdir(plan.target, v))
    if plan.target == "cpu":
        dest = work / folder(C.EMBEDDING, v, "engine")
        dest.mkdir(parents=True)
        for name in (ONNX_FILE, EMBEDDING_INFO, MANIFEST):
            shutil.copy2(engine_dir / name, dest / name)
    else:
        shutil.copy2(engine_dir / ONNX_FILE, work / folder(C.EMBEDDING_ENCODER, v, ONNX_FILE))
    return code
