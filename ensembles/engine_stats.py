"""What an LLM engine reports to the metrics: a snapshot of its state and its finished requests.

Both engines fill the same types: the CPU engine (:mod:`tritonllm.ensembles.cpu_engine`) from its
own bookkeeping and OpenVINO GenAI's ``PipelineMetrics``; the GPU ``tensorrt_llm`` model
(:mod:`tritonllm.ensembles.llmapi_trtllm`) from TensorRT-LLM's iteration stats
(``LLM.get_stats()``) and the outputs it relays. :class:`~tritonllm.ensembles.llm_metrics.
LLMMetrics` turns them into the families of :mod:`tritonllm.metrics_catalog`.

Times are ``time.perf_counter()`` seconds except :attr:`EngineStats.last_step_unix_s`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tritonllm.contract import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP

__all__ = ["COUNTED_REASONS", "EngineStats", "FinishedRequest", "KvBlocks", "Rejections",
           "RequestLedger"]

#: The finish reasons the finished-request counter has a series for; a request that failed is
#: an error response (Triton's failure counter), not a finish.
COUNTED_REASONS = (FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED)


@dataclass(frozen=True)
class FinishedRequest:
    """One request that ended: its token counts and times (seconds)."""

    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    ttft_s: float | None  # None: no token was generated
    e2e_s: float
    decode_s: float = 0.0  # last token - first token

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (genai-perf's inter-token latency)."""
        if self.output_tokens < 2:
            return None
        return self.decode_s / (self.output_tokens - 1)


@dataclass(frozen=True)
class KvBlocks:
    """The paged KV cache: blocks in the pool, blocks in use, tokens per block."""

    max: int
    used: int
    tokens_per: int
    reused: int | None = None

    @property
    def free(self) -> int:
        return self.max - self.used

    @property
    def fraction(self) -> float:
        return self.used / self.max if self.max else 0.0


@dataclass
class EngineStats:
    """The engine's state now, and what finished since the previous ``stats()`` call.

    ``active`` and ``waiting`` are the CPU engine's own: requests in the pipeline, and
    requests handed over but not yet added to it. :attr:`held` and :attr:`not_scheduled` are
    the quantities NVIDIA's ``request_type="active"`` / ``"waiting"`` series mean.
    """

    active: int
    waiting: int
    requests_total: int
    generated_tokens_total: int
    steps: int
    max_step_ms: float  # since the previous stats() call
    kv_cache_usage: float  # fraction (0..1) of the KV cache in use after the last step
    pipeline_requests: int  # sequences the pipeline itself still holds
    scheduled: int = 0  # requests run in the last step
    context: int = 0  # of those, requests still in their prompt phase
    max_requests: int = 0
    last_step_unix_s: float = 0.0
    prompt_tokens_total: int = 0
    kv_blocks: KvBlocks | None = None
    finished: list[FinishedRequest] = field(default_factory=list)
    #: Other series of :mod:`tritonllm.metrics_catalog`, by (family, label value): what one
    #: engine has and the other lacks (the GPU engine's memory, paused requests, ...).
    series: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def held(self) -> int:
        return self.active + self.waiting

    @property
    def not_scheduled(self) -> int:
        return max(0, self.held - self.scheduled)


@dataclass
class _Clock:
    submitted: float
    prompt_tokens: int
    first_token: float | None = None
    last_token: float | None = None
    output_tokens: int = 0


class RequestLedger:
    """Per-request clocks, token counters and finished records, for an engine whose requests
    are seen one output at a time (thread-safe; the GPU model's relay threads share one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clocks: dict[object, _Clock] = {}
        self._finished: list[FinishedRequest] = []
        self.generated_tokens_total = 0
        self.prompt_tokens_total = 0

    def started(self, key: object, prompt_tokens: int) -> None:
        with self._lock:
            self._clocks[key] = _Clock(time.perf_counter(), prompt_tokens)
            self.prompt_tokens_total += prompt_tokens

    def tokens(self, key: object, total: int, prompt_tokens: int | None = None) -> None:
        """The request has produced ``total`` output tokens so far (and, where the engine
        says so only with its outputs, has ``prompt_tokens`` prompt tokens)."""
        now = time.perf_counter()
        with self._lock:
            c = self._clocks.get(key)
            if c is None:
                return
            if prompt_tokens is not None and prompt_tokens != c.prompt_tokens:
                self.prompt_tokens_total += prompt_tokens - c.prompt_tokens
                c.prompt_tokens = prompt_tokens
            if total <= c.output_tokens:
                return
            if c.first_token is None:
                c.first_token = now
            c.last_token = now
            self.generated_tokens_total += total - c.output_tokens
            c.output_tokens = total

    def finished(self, key: object, reason: str) -> None:
        now = time.perf_counter()
        with self._lock:
            c = self._clocks.pop(key, None)
            if c is None:
                return
            self._finished.append(FinishedRequest(
                c.prompt_tokens, c.output_tokens, reason,
                None if c.first_token is None else c.first_token - c.submitted,
                now - c.submitted,
                0.0 if c.first_token is None or c.last_token is None
                else c.last_token - c.first_token))

    def take_finished(self) -> list[FinishedRequest]:
        with self._lock:
            done, self._finished = self._finished, []
        return done

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._clocks)


class Rejections:
    """Requests refused, by reason (:data:`~tritonllm.metrics_catalog.REJECTED`'s label values);
    thread-safe. The model adapters count what ``submit`` / ``run`` refused:
    they see each refusal once, where a front that validates before the engine would hide
    some from the engine and pass others through it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def take(self) -> dict[str, int]:
        """The counts since the previous call."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

