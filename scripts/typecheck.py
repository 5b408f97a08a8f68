"""Run ``mypy --strict`` over our packages as they are installed, with real cross-package types.

``pyproject.toml`` maps top-level folders onto ``tritonllm.*`` (``builders/`` is
``tritonllm.builders``, …) with setuptools' ``package-dir``; mypy cannot follow that mapping, so
run over the folders it would see ``from tritonllm.builders import …`` as a missing module and,
with ``ignore_missing_imports``, as ``Any``. This script lays the installed tree out under
``build/typecheck/`` (symbolic links, from ``package-dir`` itself, so the mapping is written
once), runs mypy there and prints every path as it is in the checkout.

    python scripts/typecheck.py            # what .ci/run runs
    python scripts/typecheck.py -- --no-incremental   # extra mypy arguments after --

The typing canary (``tests/typing/``) is checked in the same run: it misuses our types across
packages on purpose under ``# type: ignore[...]``, and ``warn_unused_ignores`` turns each of
those ignores into an error the day the types behind it collapse to ``Any``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
CANARY = "tests/typing"
#: Python-backend models import triton_python_backend_utils, which exists only inside a stub.
SKIPPED_PACKAGES = ("tritonllm.model_repository",)


def package_dirs() -> dict[str, str]:
    """``package-dir`` from pyproject.toml: package name -> folder in the checkout."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {pkg: folder for pkg, folder in mapping.items() if pkg not in SKIPPED_PACKAGES}


def lay_out(mapping: dict[str, str]) -> dict[str, str]:
    """Build the tree; returns tree prefix -> checkout prefix for rewriting mypy's paths."""
    if TREE.exists():
        shutil.rmtree(TREE)
    TREE.mkdir(parents=True)
    back: dict[str, str] = {}
    # A package's own folder holds links to its files; a sub-package is a link to its folder.
    for pkg, folder in sorted(mapping.items()):
        where = TREE.joinpath(*pkg.split("."))
        parent = pkg.rpartition(".")[0]
        if not parent:
            where.mkdir(parents=True, exist_ok=True)
            for child in (ROOT / folder).iterdir():
                if child.suffix in (".py", ".pyi") or child.name == "py.typed":
                    (where / child.name).symlink_to(child)
        else:
            where.symlink_to(ROOT / folder, target_is_directory=True)
        back[pkg.replace(".", "/") + "/"] = folder.rstrip("/") + "/"
    (TREE / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    return back


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    mapping = package_dirs()
    back = lay_out(mapping)
    top = sorted({pkg.split(".")[0] for pkg in mapping})
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--cache-dir", str(ROOT / ".mypy_cache"), *extra, *top, CANARY]
    proc = subprocess.run(cmd, cwd=TREE, capture_output=True, text=True,
                          env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    # Longest prefix first: tritonllm/builders/ before tritonllm/.
    pattern = re.compile("^(" + "|".join(re.escape(p) for p in
                                          sorted(back, key=len, reverse=True)) + ")", re.M)
    for stream, out in ((sys.stdout, proc.stdout), (sys.stderr, proc.stderr)):
        stream.write(pattern.sub(lambda m: back[m.group(1)], out))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
