"""The typing canary: deliberate cross-package misuse that mypy must report.

Checked by ``scripts/typecheck.py`` (not collected by pytest). Each line below misuses one of
our types from another package under a ``# type: ignore[code]``. While mypy sees the real
types, the error is there and the ignore is used; if our imports ever collapse to ``Any`` (the
package-dir mapping no longer followed, a module silently missing), the error goes away and
``warn_unused_ignores`` reports the ignore as unused, failing the check.
"""

from __future__ import annotations

from tritonllm.builders.base import EngineBuilder, get_builder
from tritonllm.client import LLMClient
from tritonllm.ensembles.cpu_engine import CpuEngine
from tritonllm.ensembles.llm_service import Engine
from tritonllm.ensembles.requests import parse_request
from tritonllm.perf.metrics import summarize
from tritonllm.settings import RepoSettings


def misuse() -> None:
    LLMClient(url=8001)  # type: ignore[arg-type]
    parse_request({}, limits="none")  # type: ignore[arg-type]
    RepoSettings(max_batch_size="eight")  # type: ignore[arg-type]
    summarize(42)  # type: ignore[arg-type]
    builder: EngineBuilder = get_builder(3)  # type: ignore[arg-type]
    del builder


def conforms(engine: CpuEngine) -> Engine:
    """The real engine is what LLMService depends on (checked here, where types are real)."""
    return engine
