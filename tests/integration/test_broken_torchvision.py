"""A plain ``pip install ".[all]"`` (without scripts/setup.sh) keeps optimum-intel's torchvision,
the CUDA build from PyPI, which does not load beside the CPU torch and so breaks transformers
(``Could not import module 'LlamaConfig'``). tritonllm must refuse such an environment in one
line that names the fix, and ``tritonllm --help`` must not be affected.

The broken torchvision is the real wheel pip resolves for our extras, installed with
``--no-deps`` into a folder put on ``PYTHONPATH`` so that the test venv stays as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TORCHVISION = "torchvision==0.28.0"  # what pip resolves for optimum-intel beside torch 2.13.0


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("torchvision")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), TORCHVISION],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}


def tritonllm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tritonllm", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_command_needing_transformers_names_the_fix(broken_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    p = tritonllm(broken_env, "make-tiny-model", str(tmp_path / "model"))
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: torchvision 0.28.0 does not load beside torch 2.13.0")
    assert lines[0].endswith(f"`{sys.executable} -m pip uninstall -y torchvision`")
    assert not (tmp_path / "model").exists()


def test_help_is_unaffected(broken_env: dict[str, str]) -> None:
    probe = ("import sys\nfrom tritonllm.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
             "print(sorted({'torch', 'torchvision', 'transformers'} & set(sys.modules)))")
    p = subprocess.run([sys.executable, "-c", probe], env=broken_env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Commands:" in p.stdout and p.stdout.strip().endswith("[]")
