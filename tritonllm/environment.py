"""Checks that an installed environment can work, run where a broken one would fail obscurely.

**torchvision beside the CPU torch.** optimum-intel (2.2) lists ``torchvision`` among its
unconditional requirements, so ``pip install ".[cpu]"`` always installs it, and the only
torchvision on PyPI is built against CUDA torch (its ``_C.so`` links ``libtorch_cuda.so``).
Beside the CPU torch of this project (``torch==2.13.0``) ``import torchvision`` fails
(``operator torchvision::nms does not exist``), and transformers, which loads torchvision
whenever it is installed, then fails with ``Could not import module 'LlamaConfig'``. No
requirement of ours can keep it out (nothing in the project needs it, and PyPI has no CPU
build to pin), so ``scripts/setup.sh`` uninstalls it, and for a plain ``pip install``
:func:`install_import_guard` – called when ``tritonllm`` is imported – checks once, just before
a process first imports ``transformers``, and raises :class:`BrokenInstall`, whose one line
names the command that fixes it. ``tritonllm --help`` imports no transformers and pays nothing;
a process without torchvision pays one metadata lookup.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

from tritonllm.errors import TritonLLMError

__all__ = ["BrokenInstall", "install_import_guard", "torchvision_problem"]


class BrokenInstall(TritonLLMError):
    """An installed package that cannot work here; the message names the command that fixes it."""


def torchvision_problem() -> str | None:
    """Why the installed torchvision breaks transformers, or None (absent, or it loads)."""
    try:
        version = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        with warnings.catch_warnings():  # its warnings are not the question asked here
            warnings.simplefilter("ignore")
            import torchvision  # noqa: F401
    except Exception as e:  # what its unloadable C++ ops raise (RuntimeError in 0.28)
        try:
            torch = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            torch = "(not installed)"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        return (f"torchvision {version} does not load beside torch {torch} ({reason}), which "
                f"breaks transformers; nothing here needs it: run "
                f"`{sys.executable} -m pip uninstall -y torchvision`")
    return None


class _TransformersImportGuard(importlib.abc.MetaPathFinder):
    """Runs :func:`torchvision_problem` before the first ``import transformers``; finds nothing
    itself. It leaves ``sys.meta_path`` once the check passes and stays (raising again) if not."""

    def __init__(self) -> None:
        self._checking = False

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != "transformers" or self._checking:
            return None
        self._checking = True
        try:
            problem = torchvision_problem()
        finally:
            self._checking = False
        if problem is not None:
            raise BrokenInstall(problem)
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        return None


def install_import_guard() -> None:
    """Put the torchvision check in front of this process's first ``import transformers``."""
    if "transformers" in sys.modules:
        return
    if any(isinstance(f, _TransformersImportGuard) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TransformersImportGuard())
