"""A benchmark run: its scenario, per-point records and summaries; running our generator.

:class:`RunResult` is what every tool produces (our generator here, perf_analyzer and
genai-perf in :mod:`tritonllm.perf.drivers`) and what :mod:`tritonllm.perf.report` writes and
reads back. :func:`build_requests` turns a scenario into the requests every tool sends (the
same prompts, output lengths and ``min_tokens``), so runs of different tools are comparable.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import platform
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm import __version__
from tritonllm.contract import ENSEMBLE_IN
from tritonllm.errors import ConfigError
from tritonllm.perf.loadgen import Backend, Progress, RequestSpec, count_output_tokens, run_point
from tritonllm.perf.metrics import RequestRecord, Summary, summarize
from tritonllm.perf.prompts import Prompt, Tokenizer, draw_lengths, load_dataset, make_prompts
from tritonllm.perf.scenario import LoadPoint, Scenario
from tritonllm.security import Secret

__all__ = ["BACKENDS", "PointResult", "RequestPlan", "RunResult", "build_requests", "run_ours"]

FORMAT = "tritonllm-perf/1"


@dataclass
class PointResult:
    """One load point: its records (may be empty when loaded from disk), summary and, for
    external tools, the tool's own summary (``tool_summary``, its units and names)."""

    point: LoadPoint
    summary: Summary
    records: list[RequestRecord] = field(default_factory=list)
    tool_summary: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"load": self.point.to_dict(), "summary": self.summary.to_dict(),
                "tool_summary": self.tool_summary}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PointResult:
        return cls(LoadPoint.from_dict(d["load"]), Summary.from_dict(d["summary"]),
                   tool_summary=d.get("tool_summary"))


@dataclass
class RunResult:
    """A finished run. ``meta`` holds the tool, versions, host, time and command line."""

    scenario: Scenario
    points: list[PointResult]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tool(self) -> str:
        return str(self.meta.get("tool", self.scenario.tool))

    def point(self, label: str) -> PointResult | None:
        return next((p for p in self.points if p.point.label == label), None)

    def to_dict(self) -> dict[str, Any]:
        """What run.json holds: the scenario with its header values as ``***`` (a header may
        carry a key; the names say what was sent)."""
        scenario = self.scenario.to_dict()
        scenario["headers"] = {name: "***" for name in scenario.get("headers") or {}}
        return {"format": FORMAT, "meta": self.meta, "scenario": scenario,
                "points": [p.to_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(Scenario.from_dict(d["scenario"]),
                   [PointResult.from_dict(p) for p in d["points"]], dict(d.get("meta") or {}))


def base_meta(tool: str, tool_version: str | None = None) -> dict[str, Any]:
    """Who measured, where and when."""
    return {"tool": tool, "tool_version": tool_version, "tritonllm_version": __version__,
            "host": platform.node(), "python": platform.python_version(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


@dataclass(frozen=True)
class RequestPlan:
    """The requests of a scenario: distinct prompts and, per prompt, ``max_tokens``.

    Request ``i`` (any integer; warm-up requests use negative ones) sends prompt
    ``i mod len(prompts)``.
    """

    prompts: list[Prompt]
    max_tokens: list[int]
    exact_output: bool

    def spec(self, i: int) -> RequestSpec:
        k = i % len(self.prompts)
        n = self.max_tokens[k]
        p = self.prompts[k]
        return RequestSpec(p.text, p.input_tokens, n, n if self.exact_output else None)


def build_requests(scenario: Scenario, tokenizer: Tokenizer) -> RequestPlan:
    """Prompts (synthetic with exact token counts, or the dataset) and output lengths."""
    if scenario.dataset is not None:
        prompts = load_dataset(scenario.dataset, tokenizer)
    else:
        prompts = make_prompts(tokenizer, scenario.num_prompts, scenario.input_tokens.mean,
                               scenario.input_tokens.std, seed=scenario.seed)
    drawn = draw_lengths(len(prompts), scenario.output_tokens.mean, scenario.output_tokens.std,
                         scenario.seed)
    max_tokens = [p.output_tokens or d for p, d in zip(prompts, drawn, strict=True)]
    return RequestPlan(prompts, max_tokens, scenario.exact_output)


#: Request inputs our generator sends unless the scenario's ``sampling`` says otherwise
#: (genai-perf's tensorrtllm converter sends the same).
DEFAULT_SAMPLING = {ENSEMBLE_IN.exclude_input_in_output: True}


async def run_points(backend: Backend, scenario: Scenario, plan: RequestPlan,
                     count_many: Callable[[list[str]], list[int]],
                     progress: Progress | None = None) -> list[PointResult]:
    """Every load point of ``scenario`` through ``backend``, one after the other."""
    results = []
    sampling = {**DEFAULT_SAMPLING, **scenario.sampling}
    for k, point in enumerate(scenario.points):
        records = await run_point(
            backend, point, plan.spec, requests=scenario.requests, duration=scenario.duration,
            warmup=scenario.warmup, streaming=scenario.streaming, sampling=sampling,
            timeout=scenario.timeout, seed=scenario.seed + k, progress=progress)
        count_output_tokens(records, count_many)
        results.append(PointResult(point, summarize(records), records))
    return results


def _grpc_backend(scenario: Scenario, api_key: str | None, inference_key: Secret | None
                  ) -> AbstractAsyncContextManager[Backend]:
    from tritonllm.client import AsyncLLMClient, RetryPolicy

    if api_key is not None:
        raise ConfigError("an API key is for --endpoint openai (Triton's gRPC takes the "
                          "inference key: --inference-key-file)")
    return AsyncLLMClient(scenario.grpc_address, model=scenario.model,
                          headers=scenario.headers or None, inference_key=inference_key,
                          timeout=scenario.timeout,
                          retry=RetryPolicy(attempts=1))  # errors are data


def _openai_backend(scenario: Scenario, api_key: str | None, inference_key: Secret | None
                    ) -> AbstractAsyncContextManager[Backend]:
    from tritonllm.perf.openai_backend import OpenAIBackend, request_body

    if inference_key is not None:
        raise ConfigError("an inference key is Triton's (--endpoint grpc); the OpenAI API "
                          "takes an API key (--api-key-file)")
    # fail before the first request on an option the API cannot express
    request_body({**DEFAULT_SAMPLING, **scenario.sampling})
    return OpenAIBackend(scenario.url, scenario.model, api_key=api_key,
                         headers=scenario.headers, timeout=scenario.timeout)


#: Scenario.endpoint -> (scenario, API key, Triton's inference key) -> its backend, an async
#: context manager (made inside the running event loop). The keys are not the scenario's: a
#: run records its scenario, never a key.
BACKENDS: dict[str, Callable[[Scenario, str | None, Secret | None],
                             AbstractAsyncContextManager[Backend]]] = {
    "grpc": _grpc_backend, "openai": _openai_backend}


def run_ours(scenario: Scenario, tokenizer: Tokenizer, progress: Progress | None = None, *,
             api_key: str | None = None, inference_key: Secret | None = None) -> RunResult:
    """Run ``scenario`` with our generator over its endpoint: Triton's gRPC API
    (:class:`tritonllm.client.AsyncLLMClient`, with ``inference_key`` for a served repository
    that restricts inference) or an OpenAI-compatible API
    (:class:`tritonllm.perf.openai_backend.OpenAIBackend`, with ``api_key``). Neither key is
    recorded."""
    plan = build_requests(scenario, tokenizer)
    meta = base_meta("ours", __version__)
    meta["tokenizer"] = str(tokenizer.path)
    meta["endpoint"] = scenario.endpoint

    async def main() -> list[PointResult]:
        # made in the loop that uses it: a gRPC asyncio channel belongs to its loop
        async with BACKENDS[scenario.endpoint](scenario, api_key, inference_key) as b:
            return await run_points(b, scenario, plan, tokenizer.count_many, progress)

    points = asyncio.run(main())
    meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return RunResult(scenario, points, meta)


def default_out_dir(tool: str, root: Path = Path("perf-runs")) -> Path:
    """``perf-runs/<UTC time>-<tool>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{tool}"
