"""Fixtures of the integration tier: the HF reference for the tiny model's greedy text, and the
default CPU repository on a real tritonserver (``server``, one per module; a module that needs
other settings defines its own ``server``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def hf_text(tiny_model: Path) -> Any:
    """``hf_text(prompt, n, with_prompt=False)``: HF transformers' greedy continuation (or the
    whole sequence, prompt included, decoded as one) of the tiny model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()

    def run(prompt: str, n: int, with_prompt: bool = False) -> str:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, do_sample=False)
        start = 0 if with_prompt else ids.shape[1]
        return str(tok.decode(out[0, start:], skip_special_tokens=True))

    return run


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The tiny CPU engine's repository (one preprocessing and one BLS instance), validated,
    served by tritonserver on free ports; its log is kept beside the repository."""
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = tmp_path_factory.mktemp("served") / "repo"
    render_repository(cpu_engine, repo, RepoSettings(
        preprocessing_instance_count=1, bls_instance_count=1))
    assert validate_repository(repo) == []
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300,
                                    log_file=repo.parent / "tritonserver.log")) as srv:
        yield srv
