"""The CPU in-flight batching engine on the real OpenVINO GenAI pipeline and the tiny model.

References: HF transformers' greedy output for correctness; event order for batching.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonllm.contract import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP
from tritonllm.ensembles.cpu_engine import CpuEngine, EngineConfig, TokenEvent
from tritonllm.ensembles.sampling import SamplingParams

pytestmark = pytest.mark.integration
TIMEOUT = 60


@pytest.fixture(scope="module")
def engine(cpu_engine: Path) -> Iterator[CpuEngine]:
    eng = CpuEngine(EngineConfig(cpu_engine, max_num_seqs=32))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf(tiny_model: Path):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)

    def greedy(prompt: str, n: int) -> tuple[list[int], list[int]]:
        ids = tok(prompt).input_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
        return ids, [int(t) for t in out[0, len(ids):]]

    return greedy


class Collector:
    """Gathers one request's events; ``wait()`` blocks until the final one."""

    def __init__(self) -> None:
        self.events: list[TokenEvent] = []
        self.done = threading.Event()
        self.first = threading.Event()

    def __call__(self, ev: TokenEvent) -> None:
        self.events.append(ev)
        if ev.token_ids:
            self.first.set()
        if ev.finished:
            self.done.set()

    def wait(self) -> list[int]:
        assert self.done.wait(TIMEOUT), "request did not finish"
        return [t for ev in self.events for t in ev.token_ids]

    @property
    def reason(self) -> str | None:
        return self.events[-1].finish_reason


def test_greedy_stream_and_final_equal_transformers(engine: CpuEngine, hf) -> None:  # type: ignore[no-untyped-def]
    ids, want = hf("The quick brown fox", 24)
    streamed, final = Collector(), Collector()
    engine.submit(ids, SamplingParams(max_tokens=24, end_ids=(2,)), streamed, stream=True)
    engine.submit(ids, SamplingParams(max_tokens=24, end_ids=(2,)), final, stream=False)
    assert streamed.wait() == want
    assert final.wait() == want
    assert len(final.events) == 1 and len(streamed.events) > 1
    assert sum(e.finished for e in streamed.events) == 1
    assert streamed.reason == (FINISH_LENGTH if len(want) == 24 else FINISH_STOP)


def test_sixteen_concurrent_requests_all_correct(engine: CpuEngine, hf) -> None:  # type: ignore[no-untyped-def]
    prompts = [f"request {i} " + "token " * (i % 5) for i in range(16)]
    refs = [hf(p, 16) for p in prompts]
    cols = [Collector() for _ in prompts]
    for (ids, _), col in zip(refs, cols, strict=True):
        engine.submit(ids, SamplingParams(max_tokens=16, end_ids=(2,)), col)
    for (_, want), col in zip(refs, cols, strict=True):
        assert col.wait() == want


def test_late_request_joins_running_batch(engine: CpuEngine) -> None:
    long = [Collector() for _ in range(8)]
    for col in long:
        engine.submit([1, 40, 41, 42], SamplingParams(max_tokens=400, end_ids=()), col)
    assert all(c.first.wait(TIMEOUT) for c in long)
    late = Collector()
    engine.submit([1, 50, 51], SamplingParams(max_tokens=4, end_ids=()), late)
    assert late.first.wait(TIMEOUT)
    # The late request produced tokens while every long one was still running.
    assert not any(c.done.is_set() for c in long)
    late.wait()
    assert not any(c.done.is_set() for c in long)
    for col in long:
        col.wait()
        assert len([t for e in col.events for t in e.token_ids]) == 400


def test_cancel_frees_sequences(engine: CpuEngine) -> None:
    cols = [Collector() for _ in range(10)]
    rids = [engine.submit([1, 60, 61], SamplingParams(max_tokens=1000, end_ids=()), c)
            for c in cols]
    assert all(c.first.wait(TIMEOUT) for c in cols)
    for rid in rids:
        engine.cancel(rid)
    for col in cols:
        col.wait()
        assert col.reason == FINISH_CANCELLED
        assert sum(e.finished for e in col.events) == 1
    # The engine thread releases the KV blocks right after the last cancel event; a new request
    # served afterwards proves it is done with them and the counters read empty.
    after = Collector()
    engine.submit([1, 70], SamplingParams(max_tokens=2, end_ids=()), after)
    assert len(after.wait()) == 2
    stats = engine.stats()
    assert stats.active == 0 and stats.waiting == 0 and stats.pipeline_requests == 0


def test_multi_token_stop_sequence(engine: CpuEngine, hf) -> None:  # type: ignore[no-untyped-def]
    ids, want = hf("hello world", 12)
    stop = (want[3], want[4])
    col = Collector()
    engine.submit(ids, SamplingParams(max_tokens=12, end_ids=(2,), stop_ids=(stop,)),
                  col, stream=False)
    got = col.wait()
    first = next(i for i in range(1, len(want)) if tuple(want[i - 1:i + 1]) == stop)
    assert got == want[: first + 1] and col.reason == FINISH_STOP


def test_seeded_sampling_is_reproducible_and_differs_from_greedy(engine: CpuEngine) -> None:
    runs = []
    for seed in (7, 7, 8):
        col = Collector()
        engine.submit([1, 80, 81], SamplingParams(max_tokens=20, temperature=1.5, seed=seed,
                                                  end_ids=()), col)
        runs.append(col.wait())
    greedy = Collector()
    engine.submit([1, 80, 81], SamplingParams(max_tokens=20, end_ids=()), greedy)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2] or runs[0] != greedy.wait()


def test_close_finishes_everything_in_flight(cpu_engine: Path) -> None:
    eng = CpuEngine(EngineConfig(cpu_engine, max_num_seqs=4))
    q: queue.Queue[TokenEvent] = queue.Queue()
    col = Collector()
    eng.submit([1, 90], SamplingParams(max_tokens=100_000, end_ids=()), col)
    assert col.first.wait(TIMEOUT)
    eng.close()
    col.wait()
    assert col.reason == FINISH_CANCELLED
    with pytest.raises(RuntimeError, match="shut down"):
        eng.submit([1], SamplingParams(max_tokens=1), q.put)


class _Sink:
    def __init__(self) -> None:
        self.final = threading.Event()
        self.cancelled = False

    def send(self, outputs: dict[str, object], final: bool) -> None:
        if final:
            self.final.set()

    def error(self, message: str, final: bool = True) -> None:
        self.final.set()

    def is_cancelled(self) -> bool:
        return self.cancelled


def test_max_queue_size_refuses_requests_beyond_the_slots_and_queue(cpu_engine: Path) -> None:
    import numpy as np

    from tritonllm.ensembles.llm_service import LLMService, QueueFull
    from tritonllm.ensembles.requests import RequestLimits

    service = LLMService(CpuEngine(EngineConfig(cpu_engine, max_num_seqs=2)),
                         RequestLimits(64, 1024, 1000, 2, 3), lambda ids: "x" * len(ids),
                         max_queue_size=1)

    def request(n: int) -> dict[str, object]:
        return {"input_ids": np.array([[1, 40, 41]], np.int32),
                "request_output_len": np.array([[n]], np.int32),
                "min_tokens": np.array([[n]], np.int32)}

    try:
        sinks = [_Sink() for _ in range(3)]  # two decoding + one waiting
        for sink in sinks:
            service.submit(request(400), sink)
        with pytest.raises(QueueFull, match="max_queue_size 1"):
            service.submit(request(4), _Sink())
        for sink in sinks:
            sink.cancelled = True  # the service polls its sinks and cancels them
        assert all(s.final.wait(TIMEOUT) for s in sinks)
        after = _Sink()
        service.submit(request(4), after)  # room again
        assert after.final.wait(TIMEOUT)
    finally:
        service.close()


class _RecordingSink(_Sink):
    """Keeps every response; each send takes ``send_s`` (a slow response path)."""

    def __init__(self, send_s: float = 0.0) -> None:
        super().__init__()
        self.responses: list[dict[str, object]] = []
        self.send_s = send_s

    def send(self, outputs: dict[str, object], final: bool) -> None:
        if self.send_s:
            threading.Event().wait(self.send_s)  # the cost of a send, not synchronisation
        self.responses.append(outputs)
        super().send(outputs, final)


def _stream_all(cpu_engine: Path, max_stream_interval_s: float, send_s: float,
                n_streams: int, n_tokens: int) -> list[_RecordingSink]:
    import numpy as np

    from tritonllm.ensembles.llm_service import LLMService
    from tritonllm.ensembles.requests import RequestLimits

    service = LLMService(CpuEngine(EngineConfig(cpu_engine, max_num_seqs=n_streams)),
                         RequestLimits(64, 1024, 1000, 2, 3), lambda ids: "x" * len(ids),
                         max_stream_interval_s=max_stream_interval_s)
    sinks = [_RecordingSink(send_s) for _ in range(n_streams)]
    try:
        for i, sink in enumerate(sinks):
            service.submit({"input_ids": np.array([[1, 40 + i, 41]], np.int32),
                            "request_output_len": np.array([[n_tokens]], np.int32),
                            "min_tokens": np.array([[n_tokens]], np.int32),
                            "streaming": np.array([[True]]),
                            "return_log_probs": np.array([[True]]),
                            "return_num_output_tokens": np.array([[True]])}, sink)
        assert all(s.final.wait(TIMEOUT) for s in sinks)
    finally:
        service.close()
    return sinks


def _new_ids(response: dict[str, object]) -> list[int]:
    import numpy as np

    ids = np.asarray(response["output_ids"]).reshape(-1)
    return [int(t) for t in ids[int(np.asarray(response["context_length"]).reshape(-1)[0]):]]


def test_busy_streams_get_several_tokens_per_response_and_lose_none(cpu_engine: Path) -> None:
    """Coalescing (llm_service "Coalescing"): with sends that cost 2 ms, 8 streams get fewer
    responses than tokens, yet every stream's first response is its first token alone and the
    ids, log probs and counts add up to the same greedy output as one response per token."""
    import numpy as np

    n_streams, n_tokens = 8, 48
    every = _stream_all(cpu_engine, 0.0, 0.002, n_streams, n_tokens)
    coalesced = _stream_all(cpu_engine, 0.2, 0.002, n_streams, n_tokens)
    for one, many in zip(every, coalesced, strict=True):
        ids = [t for r in many.responses for t in _new_ids(r)]
        assert ids == [t for r in one.responses for t in _new_ids(r)]
        assert len(ids) == n_tokens
        assert len(_new_ids(many.responses[0])) == 1  # the first token is never held
        lps = [x for r in many.responses
               for x in np.asarray(r["output_log_probs"]).reshape(-1)]
        assert len(lps) == n_tokens
        assert int(np.asarray(many.responses[-1]["num_output_tokens"]).item()) == n_tokens
    assert sum(len(s.responses) for s in every) >= n_streams * n_tokens
    assert sum(len(s.responses) for s in coalesced) < n_streams * n_tokens / 2
