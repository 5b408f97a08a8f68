"""ONNX engine: a sentence-embedding encoder (BERT family) as one ONNX graph.

The graph takes ``input_ids`` and ``attention_mask`` (INT64, dynamic batch and sequence axes)
and returns ``embedding`` FP32 [batch, dim]: the encoder, then the checkpoint's own
sentence-transformers pooling (``1_Pooling/config.json``) and, where ``modules.json`` lists a
``Normalize`` module, L2 normalization, all inside the graph, so every server (ONNX Runtime on
CPU, Triton's onnxruntime backend on GPU) returns the finished vector.

The export runs as a child process (:mod:`tritonllm.builders.onnx_export`), so torch and the
model stay out of the caller's memory; it checks the graph with ``onnx.checker``, converts it
to float16 or quantizes it to int8 when asked, and compares ONNX Runtime's output with
PyTorch's on sample texts. The largest difference goes into the manifest (``checks``); a
graph outside the tolerance of its dtype fails the build.

The engine dir holds ``model.onnx``, ``embedding.json`` (dimension, pooling, max length) and
the tokenizer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tritonllm.builders.base import EngineBuilder, Progress, package_versions, register, run_logged
from tritonllm.builders.checkpoint import ENCODER_ARCHITECTURES, CheckpointInfo
from tritonllm.builders.manifest import CHECKS_FILE, EngineLimits
from tritonllm.builders.settings import BuildSettings
from tritonllm.errors import BuildError, ConfigError, EngineUnavailable

ONNX_FILE = "model.onnx"
EMBEDDING_INFO = "embedding.json"
#: Pinned: the operators every onnxruntime since 1.13 and Triton's onnxruntime backend run.
OPSET = 17
#: sentence-transformers pooling flags (1_Pooling/config.json) -> our pooling name.
POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
_UNSUPPORTED_POOLING = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
#: The modules the export reproduces; any other (Dense, LayerNorm, WordWeights, ...) would be
#: dropped from the vectors, so a checkpoint that has one is refused.
_ST_SUPPORTED = (_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE)
#: The largest difference to PyTorch's fp32 vectors a build may show, per weight format:
#: (max absolute difference of any component, min cosine of any sample).
TOLERANCE: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 0.99999),
    "float16": (1e-2, 0.999),
    "int8": (1.0, 0.98),
}


@dataclass(frozen=True)
class SentenceEmbedder:
    """What a sentence-transformers checkpoint says about its vectors."""

    pooling: str
    normalize: bool
    max_seq_length: int | None
    dimension: int


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: missing; the onnx engine builds sentence-transformers checkpoints "
            "(modules.json, 1_Pooling/config.json), whose pooling it puts in the graph"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e


def read_sentence_embedder(root: Path, hidden_size: int) -> SentenceEmbedder:
    """Pooling, normalization and max length from the sentence-transformers files."""
    modules = _json(root / "modules.json")
    if not isinstance(modules, list):
        raise ConfigError(f"{root / 'modules.json'}: expected a list of modules")
    if not all(isinstance(m, dict) for m in modules):
        raise ConfigError(f"{root / 'modules.json'}: expected a list of objects")
    for m in modules:
        if m.get("type") not in _ST_SUPPORTED:
            raise ConfigError(
                f"{root / 'modules.json'}: module {m.get('name', '?')!r} is "
                f"{m.get('type')!r}, which the onnx engine does not export (supported: "
                f"{', '.join(t.rsplit('.', 1)[1] for t in _ST_SUPPORTED)}); its vectors would "
                "be wrong")
    kinds = {m.get("type"): m for m in modules}
    if _ST_POOLING not in kinds:
        raise ConfigError(f"{root / 'modules.json'}: lists no {_ST_POOLING} module")
    pool_dir = root / str(kinds[_ST_POOLING].get("path") or "1_Pooling")
    config = _json(pool_dir / "config.json")
    for key in _UNSUPPORTED_POOLING:
        if config.get(key):
            raise ConfigError(f"{pool_dir / 'config.json'}: {key} is not supported; supported: "
                              + ", ".join(POOLING_MODES))
    modes = [name for key, name in POOLING_MODES.items() if config.get(key)]
    if len(modes) != 1:
        raise ConfigError(f"{pool_dir / 'config.json'}: expected exactly one pooling mode, got "
                          f"{modes or 'none'} (of {', '.join(POOLING_MODES)})")
    dim = config.get("word_embedding_dimension", hidden_size)
    if dim != hidden_size:
        raise ConfigError(f"{pool_dir / 'config.json'}: word_embedding_dimension {dim} is not "
                          f"the encoder's hidden_size {hidden_size}")
    max_len = None
    if (root / "sentence_bert_config.json").is_file():
        max_len = _json(root / "sentence_bert_config.json").get("max_seq_length")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 2):
            raise ConfigError(f"{root / 'sentence_bert_config.json'}: max_seq_length must be an "
                              f"integer >= 2, got {max_len!r}")
    return SentenceEmbedder(modes[0], _ST_NORMALIZE in kinds, max_len, int(dim))


def weight_format(settings: BuildSettings) -> str:
    """float32, float16 or int8: what ends up in model.onnx."""
    if settings.quantization == "int8":
        return "int8"
    return "float16" if settings.dtype == "float16" else "float32"


@register
class OnnxBuilder(EngineBuilder):
    name = "onnx"
    description = ("ONNX sentence-embedding encoder, pooling in the graph (ONNX Runtime on CPU, "
                   "Triton's onnxruntime backend with TensorRT on GPU)")
    dtypes: ClassVar[tuple[str, ...]] = ("auto", "float32", "float16")
    quantizations: ClassVar[tuple[str, ...]] = ("int8",)
    architectures: ClassVar[frozenset[str]] = frozenset(ENCODER_ARCHITECTURES)

    def tool_versions(self) -> dict[str, str]:
        return package_versions("torch", "transformers", "onnx", "onnxruntime")

    def ensure_available(self) -> None:
        missing = [n for n, v in package_versions("torch", "transformers", "onnx",
                                                  "onnxruntime").items() if v == "absent"]
        if missing:
            raise EngineUnavailable(
                f"engine onnx: {', '.join(missing)} not installed; install the extra: "
                "pip install 'tritonllm[onnx]'")

    def check(self, settings: BuildSettings, info: CheckpointInfo) -> EngineLimits:
        if settings.quantization and settings.dtype == "float16":
            raise ConfigError("dtype: --quantization int8 quantizes the float32 graph; drop "
                              "--dtype float16")
        self.check_common(settings, info)
        if settings.group_size is not None:
            raise ConfigError("group_size: only applies to the cpu engine's int4")
        st = read_sentence_embedder(info.path, info.hidden_size)
        max_pos = info.max_position_embeddings
        asked = settings.max_input_len or settings.max_seq_len
        length = asked or st.max_seq_length or max_pos
        if not 2 <= length <= max_pos:
            raise ConfigError(f"max_input_len: {length} must be between 2 and the model's "
                              f"max_position_embeddings ({max_pos})")
        if settings.max_input_len and settings.max_seq_len and \
                settings.max_input_len != settings.max_seq_len:
            raise ConfigError("max_input_len / max_seq_len: an encoder has one max length; "
                              "give one of them")
        return EngineLimits(
            max_batch_size=settings.max_batch_size, max_input_len=length, max_seq_len=length,
            max_num_tokens=settings.max_num_tokens, vocab_size=info.vocab_size,
            bos_token_id=info.bos_token_id, eos_token_ids=(),
            pad_token_id=info.pad_token_id if info.pad_token_id is not None else 0)

    def export_command(self, settings: BuildSettings, info: CheckpointInfo,
                       limits: EngineLimits, out: Path) -> list[str]:
        st = read_sentence_embedder(info.path, info.hidden_size)
        return [sys.executable, "-m", "tritonllm.builders.onnx_export",
                "--checkpoint", str(info.path), "--out", str(out),
                "--format", weight_format(settings), "--opset", str(OPSET),
                "--pooling", st.pooling, "--normalize" if st.normalize else "--no-normalize",
                "--max-length", str(limits.max_input_len)]

    def build(self, settings: BuildSettings, info: CheckpointInfo, limits: EngineLimits,
              workdir: Path, log: Path, progress: Progress) -> list[list[str]]:
        argv = self.export_command(settings, info, limits, workdir)
        progress(f"exporting to ONNX (opset {OPSET}, {weight_format(settings)}), then checking "
                 "it against PyTorch")
        run_logged(argv, log, env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
                   what="ONNX export")
        for name in (ONNX_FILE, EMBEDDING_INFO, CHECKS_FILE):
            if not (workdir / name).is_file():
                raise BuildError(f"ONNX export finished without writing {name} (log: {log})")
        return [argv]


def read_embedding_info(engine_dir: Path) -> dict[str, Any]:
    """``embedding.json`` of an onnx engine dir (dimension, pooling, max_length, ...)."""
    path = Path(engine_dir) / EMBEDDING_INFO
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); rebuild the engine with --force") from e
    if not isinstance(data, dict) or not isinstance(data.get("dimension"), int):
        raise ConfigError(f"{path}: malformed (no dimension); rebuild the engine with --force")
    return data
