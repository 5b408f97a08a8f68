"""TensorRT-LLM engine builder (placeholder registration; completed in this issue)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tritonllm.builders.base import EngineBuilder, Progress, package_versions, register
from tritonllm.builders.checkpoint import SUPPORTED_ARCHITECTURES, CheckpointInfo
from tritonllm.builders.manifest import EngineLimits
from tritonllm.builders.settings import BuildSettings
from tritonllm.errors import EngineUnavailable


@register
class TrtllmBuilder(EngineBuilder):
    name = "trtllm"
    description = "TensorRT-LLM engine (NVIDIA GPU; NGC tritonserver:*-trtllm-python-py3 image)"
    dtypes: ClassVar[tuple[str, ...]] = ("auto", "float16", "bfloat16", "float32")
    quantizations: ClassVar[tuple[str, ...]] = (
        "int8_wo", "int4_wo", "int4_awq", "fp8", "smoothquant")
    architectures: ClassVar[frozenset[str]] = frozenset(SUPPORTED_ARCHITECTURES)
    parallel = True

    def tool_versions(self) -> dict[str, str]:
        return package_versions("tensorrt_llm", "tensorrt", "transformers")

    def ensure_available(self) -> None:
        raise EngineUnavailable("engine trtllm: tensorrt_llm is not installed")

    def build(self, settings: BuildSettings, info: CheckpointInfo, limits: EngineLimits,
              workdir: Path, log: Path, progress: Progress) -> list[list[str]]:
        raise EngineUnavailable("engine trtllm: tensorrt_llm is not installed")
