"""tritonllm: build, serve and measure LLMs on NVIDIA Triton Inference Server."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
