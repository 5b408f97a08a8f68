"""Fixtures of the integration tier: the HF reference for the tiny model's greedy text."""

from __future__ import annotations

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
