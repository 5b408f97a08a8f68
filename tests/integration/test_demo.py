"""``tritonllm demo``, the README's main job: it streams the tiny model's greedy text (checked
against HF transformers) through tritonllm.client and stops its server."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tritonllm.cli import main

pytestmark = pytest.mark.integration


def test_demo_streams_the_reference_text(tiny_model: Path, tmp_path: Path, hf_text: Any) -> None:
    shutil.copytree(tiny_model, tmp_path / "model")  # the demo's own tiny model, made once
    prompt, n = "The quick brown fox", 24
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path), "--prompt", prompt,
                                       "--max-tokens", str(n)])
    assert result.exit_code == 0, result.output
    assert "streamed text == non-streamed text" in result.output
    assert prompt + hf_text(prompt, n) in result.output
    assert "server stopped" in result.output
