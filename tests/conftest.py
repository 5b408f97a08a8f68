"""Shared fixtures: the tiny model is made once per session (seconds), engines once per module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
