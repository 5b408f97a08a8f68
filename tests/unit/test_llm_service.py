"""LLMService's sending policy, driven by a scripted engine and a fake clock.

The real engine streams in tests/integration/test_cpu_engine.py; what is checked here depends
on exact timing (which response a token lands in), so the token events and the clock are
scripted: ``ScriptedEngine`` is an ``Engine`` (the protocol LLMService depends on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from tritonllm.ensembles import llm_service
from tritonllm.ensembles.cpu_engine import EventCallback, TokenEvent
from tritonllm.ensembles.engine_stats import EngineStats
from tritonllm.ensembles.llm_service import Engine, LLMService
from tritonllm.ensembles.requests import RequestLimits
from tritonllm.ensembles.sampling import SamplingParams

TICK = 1 / 64  # one engine step on the fake clock (binary-exact, so no rounding at the cap)


class ScriptedEngine:
    """An :class:`~tritonllm.ensembles.llm_service.Engine`; the test plays the engine thread."""

    max_num_seqs = 8

    def __init__(self) -> None:
        self.after_events: Callable[[], None] | None = None
        self.callbacks: dict[int, EventCallback] = {}

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams,
               on_event: EventCallback, stream: bool = True) -> int:
        rid = len(self.callbacks) + 1
        self.callbacks[rid] = on_event
        return rid

    def cancel(self, request_id: int) -> None:
        pass

    def stats(self) -> EngineStats:
        return EngineStats(active=len(self.callbacks), waiting=0, requests_total=0,
                           generated_tokens_total=0, steps=0, max_step_ms=0.0,
                           kv_cache_usage=0.0, pipeline_requests=0)

    def close(self, timeout: float = 10.0) -> None:
        pass


def test_the_scripted_engine_and_the_cpu_engine_are_engines() -> None:
    from tritonllm.ensembles.cpu_engine import CpuEngine

    assert isinstance(ScriptedEngine(), Engine)
    assert all(hasattr(CpuEngine, name) for name in ("max_num_seqs", "submit", "cancel",
                                                     "stats", "close"))


class Recorder:
    def __init__(self) -> None:
        self.responses: list[dict[str, Any]] = []
        self.threads: set[str] = set()

    def send(self, outputs: dict[str, Any], final: bool) -> None:
        self.threads.add(threading.current_thread().name)
        self.responses.append(outputs)

    def error(self, message: str, final: bool = True) -> None:
        raise AssertionError(message)

    def is_cancelled(self) -> bool:
        return False

    def new_ids(self) -> list[list[int]]:
        """Each response's new ids (the window past its context_length)."""
        out = []
        for r in self.responses:
            ids = np.asarray(r["output_ids"]).reshape(-1).tolist()
            out.append(ids[int(np.asarray(r["context_length"]).item()):])
        return out


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(llm_service.time, "perf_counter", lambda: now[0])
    return now


def _service(cap_s: float) -> tuple[LLMService, ScriptedEngine]:
    engine = ScriptedEngine()
    service = LLMService(engine, RequestLimits(64, 1024, 1000, 2, 3),
                         lambda ids: "x" * len(ids), max_stream_interval_s=cap_s)
    service._send_cost_s = 1.0  # slow sends: the interval is the cap
    return service, engine


def _request(max_tokens: int) -> dict[str, Any]:
    return {"input_ids": np.array([[1, 5, 6]], np.int32),
            "request_output_len": np.array([[max_tokens]], np.int32),
            "streaming": np.array([[True]])}


def _play(engine: ScriptedEngine, clock: list[float], sink: Recorder,
          n: int) -> Iterator[tuple[int, int, int]]:
    """Token 100+k at step k (one engine round each) up to the limit ``n``; yields k and the
    responses the sink had before and after the round's end."""
    for k in range(1, n + 1):
        clock[0] = k * TICK
        engine.callbacks[1](TokenEvent(1, [100 + k], finished=k == n,
                                       finish_reason="length" if k == n else None,
                                       output_tokens=k))
        before = len(sink.responses)
        engine.after_events()
        yield k, before, len(sink.responses)


def test_responses_go_out_after_the_round_and_none_just_before_the_final(
        clock: list[float]) -> None:
    """One token per step, a cap of 8 steps, 30 tokens: the first token alone, then a
    response per 8 steps; at step 25 only 5 tokens are left, fewer than the 8 the response
    would carry, so the final (step 30) takes them instead."""
    service, engine = _service(cap_s=8 * TICK)
    sink = Recorder()
    service.submit(_request(30), sink)
    try:
        for k, before, after in _play(engine, clock, sink, 30):
            assert before == after - (k in (1, 9, 17, 30))  # sent after the round, not before
        assert sink.new_ids() == [[101], list(range(102, 110)), list(range(110, 118)),
                                  list(range(118, 131))]
    finally:
        service.close()


def test_without_a_cap_every_token_goes_out(clock: list[float]) -> None:
    service, engine = _service(cap_s=0.0)
    sink = Recorder()
    service.submit(_request(12), sink)
    try:
        list(_play(engine, clock, sink, 12))
        assert sink.new_ids() == [[100 + k] for k in range(1, 13)]
    finally:
        service.close()


def test_a_round_of_several_responses_is_sent_over_the_send_threads(
        clock: list[float]) -> None:
    service, engine = _service(cap_s=8 * TICK)
    sinks = [Recorder() for _ in range(6)]
    for sink in sinks:
        service.submit(_request(4), sink)
    try:
        for rid in engine.callbacks:
            engine.callbacks[rid](TokenEvent(rid, [7], finished=False, output_tokens=1))
        assert not any(s.responses for s in sinks)  # nothing before the round ends
        engine.after_events()  # returns once all are out
        assert all(s.new_ids() == [[7]] for s in sinks)
        assert all(name.startswith("tritonllm-send") for s in sinks for name in s.threads)
    finally:
        service.close()


def test_outputs_have_the_shapes_of_nvidias_backend(clock: list[float]) -> None:
    """output_log_probs [1, beams, n] per response, cum_log_probs [1, beams] cumulative over the
    stream (as the C++ backend's executor reports it), finish_reason 1-D (one per sequence)."""
    service, engine = _service(cap_s=0.0)
    sink = Recorder()
    service.submit({**_request(3), "return_log_probs": np.array([[True]])}, sink)
    try:
        for k in range(1, 4):
            engine.callbacks[1](TokenEvent(1, [100 + k], finished=k == 3,
                                           finish_reason="length" if k == 3 else None,
                                           log_probs=[-0.5 * k], output_tokens=k))
            engine.after_events()
        assert [r["output_log_probs"].shape for r in sink.responses] == [(1, 1, 1)] * 3
        assert [r["cum_log_probs"].shape for r in sink.responses] == [(1, 1)] * 3
        assert [float(r["cum_log_probs"][0][0]) for r in sink.responses] == [-0.5, -1.5, -3.0]
        assert [r["finish_reason"].shape for r in sink.responses] == [(1,)] * 3
        assert sink.responses[-1]["finish_reason"][0] == b"length"
    finally:
        service.close()


def test_a_request_id_over_the_bound_is_refused_before_anything_else() -> None:
    from tritonllm.ensembles.requests import RequestError
    from tritonllm.settings import MAX_REQUEST_ID_BYTES

    service, engine = _service(cap_s=0)
    try:
        service.submit(_request(4), Recorder(), "é" * (MAX_REQUEST_ID_BYTES // 2))
        with pytest.raises(RequestError, match=f"258 bytes, more than {MAX_REQUEST_ID_BYTES}") \
                as exc:
            service.submit(_request(4), Recorder(), "é" * 129)
        assert exc.value.field == "request_id"
        assert len(engine.callbacks) == 1  # the refused one never reached the engine
    finally:
        service.close()
