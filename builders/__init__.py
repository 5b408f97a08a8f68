"""Checkpoint → engine builders, one module per engine, registered by name.

    from tritonllm.builders import BuildSettings, build
    result = build(BuildSettings(checkpoint=Path("m"), engine="cpu", out=Path("e")))
"""

from __future__ import annotations

from tritonllm.builders import cpu, onnx, trtllm, trtllm_llmapi  # noqa: F401  (register engines)
from tritonllm.builders.base import ENGINES, EngineBuilder, get_builder, register
from tritonllm.builders.build import BuildResult, build
from tritonllm.builders.checkpoint import CheckpointInfo, inspect_checkpoint
from tritonllm.builders.manifest import EngineLimits, Manifest, read_manifest
from tritonllm.builders.settings import BuildSettings

__all__ = [
    "ENGINES",
    "BuildResult",
    "BuildSettings",
    "CheckpointInfo",
    "EngineBuilder",
    "EngineLimits",
    "Manifest",
    "build",
    "get_builder",
    "inspect_checkpoint",
    "read_manifest",
    "register",
]
