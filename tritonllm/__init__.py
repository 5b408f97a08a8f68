"""tritonllm: build, serve and measure LLMs on NVIDIA Triton Inference Server."""

from __future__ import annotations

from tritonllm.environment import install_import_guard

__version__ = "0.1.0"

__all__ = ["__version__"]

# A torchvision that cannot load beside the CPU torch breaks transformers obscurely: say so,
# with the fix, when a process first imports transformers (see tritonllm.environment).
install_import_guard()
