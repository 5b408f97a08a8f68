"""The GPU ``tensorrt_llm`` model's metrics without a GPU: TensorRT-LLM's iteration stats
(``LLM.get_stats()``) as EngineStats, those as NVIDIA's ``nv_trt_llm_*`` series, and the
requests relayed by :class:`LLMAPIEngineFront` in its ledger.

``tensorrt_llm.LLM`` needs a GPU, so it is a FAKE here, labelled where used: its iteration dicts
have the keys and shapes of TensorRT-LLM's ``IterationStats.to_json_str()`` (what
``tensorrt_llm/metrics/collector.py`` and NVIDIA's C++ backend read), its outputs those of the
LLM API's ``RequestOutput``. The metric factory is test_llm_metrics's fake ``pb_utils``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from test_llm_metrics import FakeFactory

from tritonllm import metrics_catalog as MC
from tritonllm.contract import LLMAPI_IN as IN
from tritonllm.ensembles.engine_stats import FinishedRequest, KvBlocks, RequestLedger
from tritonllm.ensembles.llm_metrics import LLMMetrics
from tritonllm.ensembles.llmapi import Outcome
from tritonllm.ensembles.llmapi_trtllm import IterationStats, LLMAPIEngineFront

RQ, KVB, IFB, MEM, GEN = (MC.REQUEST_METRICS, MC.KV_CACHE_BLOCKS, MC.INFLIGHT_BATCHER,
                          MC.RUNTIME_MEMORY, MC.GENERAL)

#: FAKE, a stand-in for TensorRT-LLM: one iteration as ``IterationStats.to_json_str()`` has it
#: (the keys NVIDIA's backend reads, and some it does not, which must be ignored).
ITERATION: dict[str, Any] = {
    "iter": 41,
    "iterLatencyMS": 12.5,
    "timestamp": "12-06-2026 10:11:12.345678",
    "numActiveRequests": 7,
    "maxNumActiveRequests": 64,
    "numNewActiveRequests": 1,
    "numQueuedRequests": 0,
    "numCompletedRequests": 2,
    "gpuMemUsage": 3_221_225_472,
    "cpuMemUsage": 104_857_600,
    "pinnedMemUsage": 8_388_608,
    "kvCacheStats": {"maxNumBlocks": 1000, "freeNumBlocks": 750, "usedNumBlocks": 250,
                     "tokensPerBlock": 32, "allocTotalBlocks": 300, "allocNewBlocks": 288,
                     "reusedBlocks": 12, "missedBlocks": 288, "cacheHitRate": 0.04},
    "inflightBatchingStats": {"numScheduledRequests": 5, "numContextRequests": 2,
                              "numGenRequests": 3, "numPausedRequests": 1, "numCtxTokens": 96,
                              "microBatchId": 0, "avgNumDecodedTokensPerIter": 1.0},
    "staticBatchingStats": None,
}
#: FAKE: an earlier iteration of the same engine (every quantity different).
EARLIER: dict[str, Any] = {
    "iter": 40, "timestamp": "12-06-2026 10:11:12.300000", "numActiveRequests": 3,
    "maxNumActiveRequests": 64, "gpuMemUsage": 1, "cpuMemUsage": 2, "pinnedMemUsage": 3,
    "kvCacheStats": {"maxNumBlocks": 1000, "freeNumBlocks": 900, "usedNumBlocks": 100,
                     "tokensPerBlock": 32, "reusedBlocks": 4},
    "inflightBatchingStats": {"numScheduledRequests": 3, "numContextRequests": 3,
                              "numGenRequests": 0, "numPausedRequests": 0, "numCtxTokens": 192,
                              "microBatchId": 0},
}


def unix(text: str) -> float:
    """TensorRT-LLM's timestamps are local time (the C++ backend reads them with mktime)."""
    return datetime.strptime(text, "%m-%d-%Y %H:%M:%S.%f").timestamp()


# ---- IterationStats -> EngineStats --------------------------------------------------------------

def test_an_iteration_becomes_engine_stats_and_series() -> None:
    it = IterationStats()
    it.read([ITERATION])
    s = it.stats(RequestLedger())
    assert (s.active, s.waiting, s.held, s.pipeline_requests) == (7, 0, 7, 7)
    assert (s.scheduled, s.context, s.max_requests, s.steps) == (5, 2, 64, 41)
    assert s.not_scheduled == 2  # NVIDIA's "waiting": active - scheduled
    assert s.last_step_unix_s == pytest.approx(unix(ITERATION["timestamp"]), abs=1e-6)
    assert s.last_step_unix_s % 1 == pytest.approx(0.345678, abs=1e-6)  # microseconds kept
    assert s.kv_blocks == KvBlocks(max=1000, used=250, tokens_per=32, reused=12)
    assert s.kv_blocks.free == 750 and s.kv_cache_usage == 0.25
    assert s.series == {
        (MEM, "gpu"): 3_221_225_472.0, (MEM, "cpu"): 104_857_600.0, (MEM, "pinned"): 8_388_608.0,
        (IFB, "total_context_tokens"): 96.0, (IFB, "micro_batch_id"): 0.0,
        (IFB, "paused_requests"): 1.0}
    assert (s.generated_tokens_total, s.prompt_tokens_total, s.finished) == (0, 0, [])


def test_the_latest_iteration_wins_and_json_strings_are_read() -> None:
    it = IterationStats()
    it.read(iter([json.dumps(EARLIER), json.dumps(ITERATION)]))  # some releases: JSON strings
    s = it.stats(RequestLedger())
    assert (s.steps, s.active, s.scheduled) == (41, 7, 5)
    assert s.kv_blocks is not None and s.kv_blocks.used == 250
    it.read([])  # nothing new: the gauges keep their last values
    assert it.stats(RequestLedger()).steps == 41
    it.read([ITERATION, EARLIER])  # the order given is the order of the iterations
    assert it.stats(RequestLedger()).steps == 40


@pytest.mark.parametrize("iteration", [
    {},
    {"kvCacheStats": None, "inflightBatchingStats": None},  # no KV manager, static batching
    {"kvCacheStats": {"freeNumBlocks": 5}, "inflightBatchingStats": {}},
])
def test_missing_keys_give_zeros_and_none(iteration: dict[str, Any]) -> None:
    it = IterationStats()
    it.read([iteration])
    s = it.stats(RequestLedger())
    assert (s.active, s.scheduled, s.context, s.max_requests, s.steps) == (0, 0, 0, 0, 0)
    assert s.kv_blocks is None and s.kv_cache_usage == 0.0
    assert s.last_step_unix_s == 0.0 and s.series == {}


def test_no_stats_yet_are_zeros() -> None:
    s = IterationStats().stats(RequestLedger())
    assert (s.active, s.steps, s.kv_blocks, s.last_step_unix_s) == (0, 0, None, 0.0)


@pytest.mark.parametrize("stamp", ["2026-12-06T10:11:12", "12-06-2026 10:11:12", "",
                                   "13-45-2026 10:11:12.000000", None, 1781000000])
def test_an_unreadable_timestamp_is_zero(stamp: Any) -> None:
    it = IterationStats()
    it.read([{**ITERATION, "timestamp": stamp}])
    s = it.stats(RequestLedger())
    assert s.last_step_unix_s == 0.0 and s.steps == 41  # the rest is still read


# ---- EngineStats -> NVIDIA's series ---------------------------------------------------------

@dataclass
class Completion:
    """FAKE, a stand-in for TensorRT-LLM: the LLM API's ``CompletionOutput`` (cumulative
    ``text`` and ``token_ids``)."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: str | None = None
    cumulative_logprob: float | None = None


@dataclass
class Output:
    """FAKE, a stand-in for TensorRT-LLM: the LLM API's ``RequestOutput``."""

    outputs: list[Completion]
    finished: bool
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 17, 18, 19])


class Result:
    """FAKE, a stand-in for TensorRT-LLM's ``GenerationResult``: the scripted outputs, then
    ``fail`` raised if given (an engine error mid-stream)."""

    def __init__(self, outputs: list[Output], fail: Exception | None = None) -> None:
        self.outputs, self.fail = outputs, fail
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def __iter__(self) -> Iterator[Output]:
        yield from self.outputs
        if self.fail is not None:
            raise self.fail


def stream(words: list[str], reason: str = "length") -> list[Output]:
    outs = []
    for i in range(1, len(words) + 1):
        last = i == len(words)
        outs.append(Output([Completion("".join(words[:i]), list(range(100, 100 + i)),
                                       reason if last else None)], last))
    return outs


class FakeLLM:
    """FAKE, a stand-in for ``tensorrt_llm.LLM``: ``generate_async`` plays the next scripted
    result; ``get_stats`` hands out the queued iteration batches once each (TensorRT-LLM's
    drains its queue), or raises ``stats_error``."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.stats: list[list[Any]] = []
        self.stats_error: Exception | None = None
        self.timeouts: list[float] = []

    def generate_async(self, prompt: str, sampling_params: Any, streaming: bool) -> Result:
        return self.results.pop(0)

    def get_stats(self, timeout: float) -> list[Any]:
        self.timeouts.append(timeout)
        if self.stats_error is not None:
            raise self.stats_error
        return self.stats.pop(0) if self.stats else []


class Sink:
    def __init__(self, cancelled: bool = False) -> None:
        self.sent: list[tuple[dict[str, Any], bool]] = []
        self.cancelled = cancelled

    def send(self, outputs: dict[str, Any], final: bool) -> None:
        self.sent.append((outputs, final))

    def error(self, message: str, final: bool = True) -> None:
        raise AssertionError(message)

    def is_cancelled(self) -> bool:
        return self.cancelled


def make_front() -> tuple[LLMAPIEngineFront, FakeLLM]:
    llm = FakeLLM()
    limits = LLMAPIEngineFront.limits_for(1000, 2, 2, 256)
    return LLMAPIEngineFront(llm, dict, limits, decoupled=True, cancel_check_s=0.0), llm


def request(streaming: bool = True) -> dict[str, Any]:
    return {IN.text_input: np.array([b"The prompt"], dtype=object),
            IN.streaming: np.array([streaming])}


def set_values(calls: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    """The value each gauge was set to (each set once in these updates)."""
    out = {}
    for name, cs in calls.items():
        (kind, value), = cs
        if kind == "set":
            out[name] = value
    return out


def test_the_iteration_reaches_nvidias_series_on_the_gpu_target() -> None:
    front, llm = make_front()
    llm.stats = [[EARLIER, ITERATION]]
    factory = FakeFactory()
    metrics = LLMMetrics(factory, MC.GPU)
    metrics.update(front)
    got = set_values(factory.calls())
    assert {k: v for k, v in got.items() if k.startswith(f"{RQ}/")} == {
        f"{RQ}/active": 7, f"{RQ}/max": 64, f"{RQ}/scheduled": 5, f"{RQ}/context": 2,
        f"{RQ}/waiting": 2}  # as NVIDIA's backend: numActiveRequests - numScheduledRequests
    assert {k: v for k, v in got.items() if k.startswith(f"{KVB}/")} == {
        f"{KVB}/max": 1000, f"{KVB}/free": 750, f"{KVB}/used": 250, f"{KVB}/tokens_per": 32,
        f"{KVB}/reused": 12, f"{KVB}/fraction": 0.25}
    assert {k: v for k, v in got.items() if k.startswith(f"{IFB}/")} == {
        f"{IFB}/generation_requests": 3,  # = numGenRequests
        f"{IFB}/total_context_tokens": 96, f"{IFB}/micro_batch_id": 0,
        f"{IFB}/paused_requests": 1}
    assert {k: v for k, v in got.items() if k.startswith(f"{MEM}/")} == {
        f"{MEM}/gpu": 3_221_225_472, f"{MEM}/cpu": 104_857_600, f"{MEM}/pinned": 8_388_608}
    assert got[f"{GEN}/iteration_counter"] == 41
    whole = int(unix("12-06-2026 10:11:12.000000"))
    assert got[f"{GEN}/timestamp"] == whole * 1_000_000 + 345_678  # microseconds, as NVIDIA's
    assert MC.STEP_MAX_MS not in factory.metrics  # the CPU engine's own
    assert llm.timeouts == [0.5]

    metrics.update(front)  # no new iteration: nothing moved, no round trip
    assert factory.calls() == {}


def test_a_relayed_request_is_in_the_ledger_and_counted() -> None:
    front, llm = make_front()
    llm.results = [Result(stream(["Once", " upon", " a"], reason="length"))]
    sink = Sink()
    assert front.run(request(), sink, "r1") is Outcome.SENT
    assert [final for _, final in sink.sent] == [False, False, True]
    s = front.engine_stats()
    (done,) = s.finished
    assert (done.prompt_tokens, done.output_tokens, done.finish_reason) == (4, 3, "length")
    assert done.ttft_s is not None and 0 <= done.ttft_s <= done.e2e_s
    assert 0 <= done.decode_s <= done.e2e_s and done.tpot_s == pytest.approx(done.decode_s / 2)
    assert (s.generated_tokens_total, s.prompt_tokens_total) == (3, 4)
    again = front.engine_stats()  # finished requests are handed out once; totals stay
    assert again.finished == [] and again.generated_tokens_total == 3
    assert front.ledger.live == 0

    factory = FakeFactory()
    metrics = LLMMetrics(factory, MC.GPU)
    llm.results = [Result(stream(["x", "y"], reason="stop"))]
    front.run(request(streaming=False), Sink(), "")
    front.rejections.count(MC.REJECT_INVALID)  # as the model adapter counts a RequestError
    metrics.update(front)
    calls = factory.calls()
    assert calls[MC.GENERATION_TOKENS] == [("increment", 5)]  # 3 + 2
    assert calls[MC.PROMPT_TOKENS] == [("increment", 8)]
    assert calls[f"{MC.REQUEST_FINISHED}/stop"] == [("increment", 1)]
    assert calls[f"{MC.OUTPUT_TOKEN_LEN}/total_output_tokens"] == [("observe", 2)]
    assert calls[f"{MC.REJECTED}/{MC.REJECT_INVALID}"] == [("increment", 1)]
    assert front.take_rejections() == {}


def test_a_cancelled_request_finishes_cancelled_and_a_failed_one_is_no_finish() -> None:
    front, llm = make_front()
    llm.results = [Result(stream(["a", "b"])), Result(stream(["a", "b", "c"])[:1],
                                                      fail=RuntimeError("engine died"))]
    assert front.run(request(), Sink(cancelled=True), "c") is Outcome.CANCELLED
    with pytest.raises(RuntimeError, match="engine died"):
        front.run(request(), Sink(), "f")
    cancelled, failed = front.engine_stats().finished
    assert cancelled.finish_reason == "cancelled"
    # A failed request gets an error response (Triton's failure counter), not a finish.
    assert failed == FinishedRequest(4, 1, "error", failed.ttft_s, failed.e2e_s, 0.0)
    factory = FakeFactory()
    llm.results = [Result(stream(["a"]))]
    front.run(request(), Sink(cancelled=True), "c2")
    llm.results = [Result([], fail=RuntimeError("engine died"))]
    with pytest.raises(RuntimeError):
        front.run(request(), Sink(), "f2")
    LLMMetrics(factory, MC.GPU).update(front)
    calls = factory.calls()
    assert calls[f"{MC.REQUEST_FINISHED}/cancelled"] == [("increment", 1)]
    assert len(calls[MC.E2E]) == 1  # the cancelled request's; the failed one is no finish
    assert not any(k.startswith(f"{MC.REQUEST_FINISHED}/") and k.endswith("error")
                   for k in calls)


def test_a_failing_get_stats_is_logged_and_keeps_the_last_iteration(
        caplog: pytest.LogCaptureFixture) -> None:
    front, llm = make_front()
    llm.stats = [[ITERATION]]
    assert front.engine_stats().steps == 41
    llm.stats_error = RuntimeError("stats queue closed")
    llm.results = [Result(stream(["a", "b"]))]
    front.run(request(), Sink(), "r")
    with caplog.at_level(logging.WARNING, logger="tritonllm.ensembles.llmapi_trtllm"):
        s = front.engine_stats()
    assert "LLM.get_stats failed: stats queue closed" in caplog.text
    assert s.steps == 41 and s.active == 7  # the last iteration read
    assert [r.output_tokens for r in s.finished] == [2] and s.generated_tokens_total == 2

    llm.stats_error = None
    llm.stats = [["{not json"]]  # a broken JSON string: logged too, nothing lost
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tritonllm.ensembles.llmapi_trtllm"):
        assert front.engine_stats().steps == 41
    assert "LLM.get_stats failed" in caplog.text


def test_an_llm_without_get_stats_gives_the_ledger_only() -> None:
    front, _ = make_front()

    class NoStats:
        """FAKE, a stand-in for an LLM API object without ``get_stats``."""

        def generate_async(self, prompt: str, sampling_params: Any, streaming: bool) -> Result:
            return Result(stream(["a"]))

    front.llm = NoStats()
    front.run(request(), Sink(), "")
    s = front.engine_stats()
    assert s.steps == 0 and s.kv_blocks is None and len(s.finished) == 1
