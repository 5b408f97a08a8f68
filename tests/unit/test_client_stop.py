"""Stopping a left ensemble request: the sans-IO pieces in ``_logic`` and the Stopper thread.

The Stopper runs against a recording fake of the sync transport here (the real transport and
server are exercised by tests/integration/test_client.py, where leaving an ensemble stream
must free its engine slot).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from tritonllm.client import Overloaded, Unavailable
from tritonllm.client._logic import (
    RequestSpec,
    ensemble_steps,
    model_input_names,
    stop_request,
    stop_target,
)
from tritonllm.client._stop import Stopper
from tritonllm.contract import LLM_CONTRACT

ENSEMBLE_CONFIG = {"config": {"name": "ensemble", "platform": "ensemble", "ensemble_scheduling": {
    "step": [{"model_name": "preprocessing"}, {"model_name": "tensorrt_llm"},
             {"model_name": "postprocessing"}]}}}
METADATA = {
    "preprocessing": {"inputs": [{"name": "QUERY"}, {"name": "REQUEST_OUTPUT_LEN"}]},
    "tensorrt_llm": {"inputs": [{"name": "input_ids"}, {"name": "stop"}]},
    "postprocessing": {"inputs": [{"name": "TOKENS_BATCH"}]},
    "tensorrt_llm_bls": {"inputs": [{"name": "text_input"}]},
}


def test_ensemble_steps_from_a_config_and_none_for_other_models() -> None:
    assert ensemble_steps(ENSEMBLE_CONFIG) == ("preprocessing", "tensorrt_llm", "postprocessing")
    assert ensemble_steps(ENSEMBLE_CONFIG["config"]) == ensemble_steps(ENSEMBLE_CONFIG)
    assert ensemble_steps({"config": {"name": "bls", "backend": "python"}}) == ()


def test_stop_target_is_the_first_step_taking_stop() -> None:
    steps = [(m, model_input_names(METADATA[m])) for m in ensemble_steps(ENSEMBLE_CONFIG)]
    assert stop_target(steps) == "tensorrt_llm"
    assert stop_target([("preprocessing", None), ("postprocessing", {"TOKENS_BATCH"})]) is None


def test_stop_request_carries_the_id_and_the_llm_contracts_required_inputs() -> None:
    spec = stop_request("my_llm", "req-7")
    assert (spec.model, spec.request_id, spec.stream) == ("my_llm", "req-7", False)
    values = {t.name: t.value for t in spec.inputs}
    assert bool(values["stop"].item()) is True
    required = {t.name for t in LLM_CONTRACT.inputs if not t.optional}
    assert required <= set(values)  # Triton refuses a request missing a required input
    for t in spec.inputs:
        assert t.dtype == LLM_CONTRACT.input(t.name).dtype
        assert t.value.shape[0] == 1  # one request of the batch
    assert spec.json_body()["id"] == "req-7" and spec.json_body()["stop"] is True


class _Call:
    def __init__(self, responses: list[tuple[dict[str, Any], bool]]) -> None:
        self.responses = responses
        self.released = False

    def next(self, timeout: float | None) -> tuple[dict[str, Any], bool] | None:
        return self.responses.pop(0) if self.responses else None

    def cancel(self) -> None:
        pass

    def release(self) -> None:
        self.released = True


class FakeTransport:
    """Records what the Stopper asks; ``refuse`` errors are raised by the next starts."""

    def __init__(self, refuse: list[Exception] | None = None) -> None:
        self.started: list[RequestSpec] = []
        self.config_calls = 0
        self.refuse = list(refuse or [])
        self.calls: list[_Call] = []
        self.done = threading.Event()

    def config(self, model: str, timeout: float | None) -> dict[str, Any]:
        self.config_calls += 1
        return ENSEMBLE_CONFIG if model == "ensemble" else {"config": {"name": model}}

    def metadata(self, model: str, timeout: float | None) -> dict[str, Any]:
        return METADATA[model]

    def start(self, spec: RequestSpec, timeout: float | None) -> _Call:
        if self.refuse:
            raise self.refuse.pop(0)
        self.started.append(spec)
        call = _Call([({"finish_reason": np.array([[b"cancelled"]], object)}, True)])
        self.calls.append(call)
        return call

    def close(self) -> None:
        self.done.set()


def test_a_left_ensemble_request_gets_a_stop_for_its_llm_step() -> None:
    t = FakeTransport()
    s = Stopper(lambda: t)
    s.stop("ensemble", "a")
    s.stop("ensemble", "b")
    s.stop("tensorrt_llm_bls", "c")  # not an ensemble: its cancel reached the model already
    s.close()
    assert [(x.model, x.request_id) for x in t.started] == [("tensorrt_llm", "a"),
                                                            ("tensorrt_llm", "b")]
    assert all(c.released for c in t.calls)  # the pooled stream goes back after the final
    assert t.config_calls == 2  # one lookup per model, cached
    assert not t.done.is_set()  # the client's transport is not the Stopper's to close


def test_a_busy_server_is_asked_again_then_the_failure_is_logged(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tritonllm.client._stop.STOP_RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    t = FakeTransport(refuse=[Overloaded("Exceeds maximum queue size"), Unavailable("down")])
    s = Stopper(lambda: t, owns_transport=True)
    s.stop("ensemble", "a")  # refused twice, then sent
    s.close()
    assert [x.request_id for x in t.started] == ["a"]
    assert t.done.is_set()  # an owned transport is closed with the Stopper

    t = FakeTransport(refuse=[Overloaded("busy")] * 4)
    s = Stopper(lambda: t)
    s.stop("ensemble", "z")
    s.close()
    assert t.started == []
    assert "could not stop request z of ensemble" in caplog.text


def test_nothing_is_started_after_close() -> None:
    t = FakeTransport()
    s = Stopper(lambda: t)
    s.close()
    s.stop("ensemble", "late")
    assert t.started == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_stopper_thread_starts_with_the_first_stream_not_when_it_is_left(kind: str) -> None:
    """Leaving a stream may run in a finaliser, and a thread started there can deadlock (a
    collection inside another thread's start() holds the lock the new thread needs): the
    Stopper's thread is running as soon as a stream exists, before anything is sent."""
    import asyncio

    from tritonllm.client import AsyncLLMClient, LLMClient

    def check(client: Any) -> threading.Thread:
        assert client._stopper._thread is None
        client.stream("hi")  # made, never sent
        thread = client._stopper._thread
        assert isinstance(thread, threading.Thread) and thread.is_alive()
        return thread

    if kind == "sync":
        with LLMClient("localhost:1") as client:
            thread = check(client)
    else:
        async def run() -> threading.Thread:
            async with AsyncLLMClient("localhost:1") as client:
                return check(client)

        thread = asyncio.run(run())
    thread.join(5)
    assert not thread.is_alive()  # closing the client ends it
