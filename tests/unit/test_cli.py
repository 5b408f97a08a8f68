"""The CLI: instant --help (no heavy imports), --version, one-line errors with non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tritonllm import __version__
from tritonllm.cli import main

HEAVY = ("torch", "transformers", "openvino", "openvino_genai", "tritonclient", "numpy",
         "optimum", "tokenizers")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from tritonllm.cli import main;"
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output;"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_user_error_is_one_line_and_nonzero(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["build", str(tmp_path / "missing"), "--engine", "cpu",
                                  "--out", str(tmp_path / "e")])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "does not exist" in lines[-1]
    assert "Traceback" not in r.output


def test_verbose_error_shows_traceback(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["-v", "build", str(tmp_path / "missing"), "--engine", "cpu",
                                  "--out", str(tmp_path / "e")])
    assert r.exit_code == 1 and "Traceback" in r.output


def test_bad_option_value_names_the_option(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["build", str(tmp_path), "--engine", "cpu", "--out",
                                  str(tmp_path / "e"), "--max-batch-size", "0"])
    assert r.exit_code == 2 and "--max-batch-size" in r.output and "at least 1" in r.output


def test_generate_takes_the_contract_choices_of_the_contract_module() -> None:
    from tritonllm.contract import CONTRACT_CHOICES

    help_text = CliRunner().invoke(main, ["generate", "--help"]).output
    assert all(choice in help_text for choice in CONTRACT_CHOICES)
    r = CliRunner().invoke(main, ["generate", "hi", "--contract", "nope"])
    assert r.exit_code == 2 and "--contract" in r.output
