"""Build settings: one typed object with every default, read by the CLI, builders and manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class BuildSettings:
    """What to build. ``None`` limits are derived from the checkpoint by the builder.

    Attributes:
        checkpoint: Hugging Face checkpoint directory (safetensors weights only).
        engine: registered engine name (``cpu``, ``trtllm``).
        out: engine output directory; ``manifest.json`` lands here.
        dtype: compute/weight dtype; ``auto`` picks the engine's default for the checkpoint.
        quantization: engine-specific weight/activation quantization, or ``None``.
        tp / pp: tensor / pipeline parallel sizes (TensorRT-LLM only).
        ep: MoE expert parallel size (the trtllm engine, LLM API; 1: none).
        max_batch_size: most sequences decoded together (in-flight batch slots).
        max_input_len: longest prompt in tokens.
        max_seq_len: longest prompt + generated tokens.
        max_num_tokens: most tokens processed in one engine step (prefill chunking budget).
        group_size: weight-compression group size for int4 (``None``: picked from the shapes).
        trust_remote_code: allow checkpoint-provided modeling code (off by default).
        force: rebuild even when the manifest says the engine is up to date.
    """

    checkpoint: Path
    engine: str
    out: Path
    dtype: str = "auto"
    quantization: str | None = None
    tp: int = 1
    pp: int = 1
    ep: int = 1
    max_batch_size: int = 64
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_num_tokens: int = 8192
    group_size: int | None = None
    trust_remote_code: bool = False
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def build_args(self) -> dict[str, Any]:
        """The arguments that decide the engine's content (part of the cache key)."""
        args = asdict(self)
        for key in ("checkpoint", "out", "force"):
            args.pop(key)
        return args
