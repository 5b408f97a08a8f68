"""The llmapi front's wire behaviour, over a scripted pipeline (the served model is checked in
tests/integration/test_llmapi.py): cumulative text, NVIDIA's "None" reasons while a stream
runs, the stop string as stop reason, stop by id, a client cancel, refusals naming the input."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tritonllm.contract import BLS, BLS_OUT, FINISH_REASON, LLMAPI_IN, LLMAPI_NONE, LLMAPI_OUT
from tritonllm.ensembles import wire
from tritonllm.ensembles.llmapi import LLMAPIFront, Outcome
from tritonllm.ensembles.requests import RequestError


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

    def texts(self, name: str = LLMAPI_OUT.text_output) -> list[str]:
        return [wire.first_string(out[name]) for out, _ in self.sent]


def _bls(text: str, reason: str = "") -> dict[str, Any]:
    return {BLS_OUT.text_output: wire.strings(BLS, BLS_OUT.text_output, [text]),
            FINISH_REASON: wire.strings(BLS, FINISH_REASON, [reason])}


class Pipeline:
    """Plays the BLS pipeline: sends ``deltas`` then a final response, returns ``stop``."""

    def __init__(self, deltas: list[str], reason: str = "length", stop: str | None = None,
                 wait: Callable[[Any], None] | None = None) -> None:
        self.deltas, self.reason, self.stop, self.wait = deltas, reason, stop, wait
        self.inputs: dict[str, Any] = {}

    def run(self, inputs: dict[str, Any], sink: Any, request_id: str = "") -> str | None:
        self.inputs = inputs
        for d in self.deltas[:-1]:
            sink.send(_bls(d), final=False)
        if self.wait is not None:
            self.wait(sink)
        sink.send(_bls(self.deltas[-1], self.reason), final=True)
        return self.stop


def front(pipeline: Any, decoupled: bool = True) -> LLMAPIFront:
    return LLMAPIFront(pipeline, LLMAPIFront.limits_for(1000, 2, 3), decoupled=decoupled)


def request(prompt: str = "Hi", **values: Any) -> dict[str, Any]:
    out = {LLMAPI_IN.text_input: np.array([prompt.encode()], dtype=object)}
    for name, value in values.items():
        out[name] = np.array(value if isinstance(value, list) else [value])
    return out


def test_a_stream_carries_the_whole_text_and_none_until_the_end() -> None:
    sink = Sink()
    pipe = Pipeline(["a", "b", "c"], reason="stop", stop="X")
    outcome = front(pipe).run(request(streaming=True, return_finish_reason=True,
                                      return_stop_reason=True,
                                      sampling_param_stop=[b"X"]), sink, "r")
    assert outcome is Outcome.SENT
    assert sink.texts() == ["Hia", "Hiab", "Hiabc"]  # the prompt first: NVIDIA's default
    assert sink.texts(LLMAPI_OUT.finish_reason) == [LLMAPI_NONE, LLMAPI_NONE, "stop"]
    assert sink.texts(LLMAPI_OUT.stop_reason) == [LLMAPI_NONE, LLMAPI_NONE, "X"]
    assert [final for _, final in sink.sent] == [False, False, True]
    # passed on with the classic names, shaped [1, ...]; the default max_tokens is the LLM API's
    assert pipe.inputs["stop_words"].shape == (1, 1)
    assert pipe.inputs["max_tokens"].tolist() == [[32]]


def test_reasons_only_when_asked_and_no_prompt_when_excluded() -> None:
    sink = Sink()
    front(Pipeline(["done"])).run(request(sampling_param_exclude_input_from_output=True,
                                          sampling_param_max_tokens=np.int32(5)), sink)
    (out, final), = sink.sent
    assert final and set(out) == {LLMAPI_OUT.text_output}
    assert sink.texts() == ["done"]


def test_stop_by_id_ends_the_running_request() -> None:
    f = front(Pipeline(["x", "y"], reason="cancelled", wait=lambda relay: stopped.wait(5)))
    stopped = threading.Event()
    sink = Sink()

    def stop_when_running() -> None:
        while not f.stop("rid"):
            pass
        stopped.set()

    t = threading.Thread(target=stop_when_running)
    t.start()
    assert f.run(request(streaming=True, return_finish_reason=True), sink, "rid") is Outcome.SENT
    t.join()
    assert sink.texts(LLMAPI_OUT.finish_reason)[-1] == "cancelled"
    assert f.run(request(stop=True), Sink(), "rid") is Outcome.CANCELLED  # NVIDIA's answer


def test_a_client_cancel_is_answered_with_cancelled() -> None:
    sink = Sink(cancelled=True)
    assert front(Pipeline(["x"], reason="cancelled")).run(request(), sink) is Outcome.CANCELLED
    assert sink.sent == []


@pytest.mark.parametrize(("values", "field"), [
    ({"sampling_param_best_of": np.int32(2)}, "sampling_param_best_of"),
    ({"sampling_param_top_p": np.float32(1.5)}, "sampling_param_top_p"),
    ({"sampling_param_max_tokens": np.int32(0)}, "sampling_param_max_tokens"),
    ({"stop": True}, "stop"),  # without a request id
])
def test_bad_requests_name_the_llmapi_input(values: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as e:
        front(Pipeline(["never"])).run(request(**values), Sink())
    assert e.value.field == field


def test_streaming_needs_a_decoupled_model() -> None:
    with pytest.raises(RequestError) as e:
        front(Pipeline(["x"]), decoupled=False).run(request(streaming=True), Sink())
    assert e.value.field == LLMAPI_IN.streaming


def test_messages_of_the_models_behind_name_the_llmapi_input() -> None:
    msg = "max_tokens: prompt (9 tokens) + max_tokens (99) exceeds max_seq_len (64)"
    assert LLMAPIFront.client_message(msg).startswith("sampling_param_max_tokens: prompt")
    assert LLMAPIFront.client_message("text_input: must not be empty") == \
        "text_input: must not be empty"
    assert LLMAPIFront.client_message("no field here") == "no field here"
