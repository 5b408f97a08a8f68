"""The client speaking NVIDIA's llmapi contract: detection, requests, cumulative text → deltas,
stopping. Sans IO, and the clients over a scripted transport (the real server is
tests/integration/test_client_llmapi.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np
import pytest

from tritonllm.client import AsyncLLMClient, Cancelled, InvalidRequest, LLMClient
from tritonllm.client._logic import (
    LLMAPI_SAMPLING_INPUTS,
    SAMPLING_INPUTS,
    Assembly,
    Exchange,
    Piece,
    RequestSpec,
    build_request,
    detect_contract,
    parse_outputs,
    resolve_contract,
    stop_request,
)
from tritonllm.client._stop import Stopper
from tritonllm.client._types import RetryPolicy
from tritonllm.contract import (
    ENSEMBLE_CONTRACT,
    LLMAPI,
    LLMAPI_CONTRACT,
    LLMAPI_NONE,
    REQUEST_FIELDS,
)

LLMAPI_INPUTS = frozenset(t.name for t in LLMAPI_CONTRACT.inputs)
#: What NVIDIA's own llmapi model declares: the contract without our additions.
NVIDIA_LLMAPI_INPUTS = frozenset(t.name for t in LLMAPI_CONTRACT.inputs if not t.ours)
ENSEMBLE_INPUTS = frozenset(t.name for t in ENSEMBLE_CONTRACT.inputs)


# --- detection ----------------------------------------------------------------------------------

def test_the_contract_is_detected_from_the_declared_inputs_or_else_the_name() -> None:
    assert detect_contract("anything", LLMAPI_INPUTS) == LLMAPI
    assert detect_contract("llmapi", ENSEMBLE_INPUTS) == "classic"
    assert detect_contract("tensorrt_llm_bls", {"text_input", "max_tokens"}) == "classic"
    assert detect_contract("llmapi", None) == LLMAPI  # metadata refused: the name decides
    assert detect_contract("ensemble", None) == "classic"


def test_auto_follows_the_metadata_and_a_forced_contract_must_agree_with_it() -> None:
    assert resolve_contract("auto", "m", LLMAPI_INPUTS) == LLMAPI
    assert resolve_contract("auto", "m", ENSEMBLE_INPUTS) == "classic"
    assert resolve_contract("llmapi", "m", LLMAPI_INPUTS) == LLMAPI
    assert resolve_contract("llmapi", "m", None) == LLMAPI  # no metadata: trusted
    assert resolve_contract("classic", "llmapi", None) == "classic"
    with pytest.raises(InvalidRequest, match=r"'llmapi' speaks the llmapi contract.*"
                                             r"contract='llmapi' or 'auto'"):
        resolve_contract("classic", "llmapi", LLMAPI_INPUTS)
    with pytest.raises(InvalidRequest, match=r"'ensemble' does not speak the llmapi contract"):
        resolve_contract("llmapi", "ensemble", ENSEMBLE_INPUTS)
    with pytest.raises(ValueError, match="contract must be one of"):
        resolve_contract("openai", "m", None)
    with pytest.raises(ValueError, match="'openai'"):
        LLMClient("localhost:1", contract="openai")


# --- requests -----------------------------------------------------------------------------------

def test_each_mapped_option_carries_the_same_request_field() -> None:
    fields = {name: f for f, name in REQUEST_FIELDS[LLMAPI].items()}
    classic = {name: f for f, name in REQUEST_FIELDS["ensemble"].items()}
    assert set(LLMAPI_SAMPLING_INPUTS) < set(SAMPLING_INPUTS)
    assert set(LLMAPI_SAMPLING_INPUTS) == {"temperature", "top_k", "top_p", "seed", "stop",
                                           "presence_penalty", "frequency_penalty",
                                           "exclude_input_in_output", "min_tokens",
                                           "repetition_penalty", "length_penalty", "bad_words",
                                           "end_id", "pad_id"} & set(SAMPLING_INPUTS)
    for key, name in LLMAPI_SAMPLING_INPUTS.items():
        assert LLMAPI_CONTRACT.has_input(name)
        assert fields[name] == classic[SAMPLING_INPUTS[key]]


def test_llmapi_request_names_dtypes_and_unbatched_shapes() -> None:
    spec = build_request("llmapi", "héllo", 16, stream=True, request_id="r1",
                         sampling={"temperature": 0.5, "top_k": 3, "top_p": None, "seed": 7,
                                   "stop": ["a", "b"], "presence_penalty": 0.1,
                                   "frequency_penalty": 0.2},
                         model_inputs=LLMAPI_INPUTS)
    assert spec.contract == LLMAPI and spec.stream and spec.request_id == "r1"
    by_name = {t.name: t for t in spec.inputs}
    assert set(by_name) == {
        "text_input", "sampling_param_max_tokens", "streaming", "sampling_param_temperature",
        "sampling_param_top_k", "sampling_param_seed", "sampling_param_stop",
        "sampling_param_presence_penalty", "sampling_param_frequency_penalty",
        "sampling_param_exclude_input_from_output", "return_finish_reason",
        "return_num_input_tokens", "return_num_output_tokens"}  # ours: the model declares them
    for t in spec.inputs:  # dtype from the contract; the dims are the whole shape (unbatched)
        declared = LLMAPI_CONTRACT.input(t.name)
        assert t.dtype == declared.dtype and t.value.ndim == 1
        assert t.value.shape == ((2,) if t.name == "sampling_param_stop" else (1,))
    assert by_name["text_input"].value.tolist() == ["héllo".encode()]
    assert by_name["sampling_param_max_tokens"].value.dtype == np.int32
    assert by_name["sampling_param_seed"].value.dtype == np.uint64
    assert by_name["sampling_param_stop"].value.tolist() == [b"a", b"b"]
    assert bool(by_name["sampling_param_exclude_input_from_output"].value[0]) is True
    assert bool(by_name["return_finish_reason"].value[0]) is True
    body = spec.json_body()
    assert body["text_input"] == ["héllo"] and body["sampling_param_max_tokens"] == 16
    assert body["sampling_param_stop"] == ["a", "b"] and body["streaming"] is True
    assert body["id"] == "r1"


def test_the_prompt_can_be_asked_for_and_defaults_follow_the_metadata() -> None:
    spec = build_request("llmapi", "x", 4, stream=False, model_inputs=LLMAPI_INPUTS,
                         sampling={"exclude_input_in_output": False})
    values = {t.name: t.value for t in spec.inputs}
    assert bool(values["sampling_param_exclude_input_from_output"][0]) is False
    assert bool(values["streaming"][0]) is False
    bare = {"text_input", "sampling_param_max_tokens"}  # a model declaring only these
    spec = build_request("m", "x", 4, stream=False, sampling={}, model_inputs=bare)
    assert spec.contract == LLMAPI and {t.name for t in spec.inputs} == bare
    with pytest.raises(InvalidRequest, match="sampling_param_top_k: model 'm' has no such input"):
        build_request("m", "x", 4, stream=False, sampling={"top_k": 2}, model_inputs=bare)
    spec = build_request("llmapi", "x", 4, stream=False, sampling={}, model_inputs=None)
    assert spec.contract == LLMAPI  # no metadata: by name, every default flag sent
    assert {"sampling_param_exclude_input_from_output", "return_finish_reason"} <= {
        t.name for t in spec.inputs}


def test_options_the_llmapi_contract_cannot_carry_are_refused_naming_them() -> None:
    """NVIDIA's llmapi model declares none of our sampling_param_* additions: those options
    are refused by name for it, and carried to ours (which declares them)."""
    with pytest.raises(InvalidRequest, match=r"^bad_words, min_tokens: model 'llmapi' speaks "
                                             r"the llmapi contract and declares no input.*it "
                                             r"takes exclude_input_in_output, frequency_penalty"):
        build_request("llmapi", "x", 4, stream=False, model_inputs=NVIDIA_LLMAPI_INPUTS,
                      sampling={"min_tokens": 2, "bad_words": ["z"], "temperature": 0.0})
    with pytest.raises(InvalidRequest, match=r"^repetition_penalty: .*this option"):
        build_request("llmapi", "x", 4, stream=False, model_inputs=NVIDIA_LLMAPI_INPUTS,
                      sampling={"repetition_penalty": 1.1})
    ours = build_request("llmapi", "x", 4, stream=False, model_inputs=LLMAPI_INPUTS,
                         sampling={"min_tokens": 2, "bad_words": ["z"]})
    assert {t.name for t in ours.inputs} >= {"sampling_param_min_tokens", "sampling_param_bad"}
    spec = build_request("llmapi", "x", 4, stream=False, model_inputs=NVIDIA_LLMAPI_INPUTS,
                         sampling={"min_tokens": None})  # None: left out, nothing to refuse
    assert spec.contract == LLMAPI
    with pytest.raises(TypeError, match="'topk'"):  # unknown keywords stay TypeErrors
        build_request("llmapi", "x", 4, stream=False, sampling={"topk": 2})
    with pytest.raises(InvalidRequest, match="sampling_param_top_k: expected an integer"):
        build_request("llmapi", "x", 4, stream=False, sampling={"top_k": 1.5})


def test_a_classic_model_still_gets_the_classic_request() -> None:
    spec = build_request("ensemble", "x", 4, stream=True, sampling={"stop": ["a"]},
                         model_inputs=ENSEMBLE_INPUTS)
    assert spec.contract == "classic"
    assert {t.name for t in spec.inputs} >= {"text_input", "max_tokens", "stream", "stop_words"}
    assert all(t.value.shape[0] == 1 and t.value.ndim == 2 for t in spec.inputs)


def test_the_llmapi_stop_goes_to_the_model_itself_unbatched() -> None:
    spec = stop_request("llmapi", "req-7", LLMAPI)
    assert (spec.model, spec.request_id, spec.stream, spec.contract) == (
        "llmapi", "req-7", False, LLMAPI)
    values = {t.name: t.value for t in spec.inputs}
    assert set(values) == {"text_input", "stop"}
    required = {t.name for t in LLMAPI_CONTRACT.inputs if not t.optional}
    assert required <= set(values)
    assert values["stop"].shape == (1,) and bool(values["stop"][0]) is True
    assert spec.json_body() == {"text_input": [""], "stop": True, "id": "req-7"}


# --- responses ----------------------------------------------------------------------------------

def _out(text: str | None, reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if text is not None:
        out["text_output"] = np.array([text.encode()], dtype=object)
    if reason is not None:
        out["finish_reason"] = np.array([reason.encode()], dtype=object)
    return out


def test_parse_llmapi_outputs() -> None:
    assert parse_outputs(_out("ab", LLMAPI_NONE), LLMAPI) == Piece("ab", None, cumulative=True)
    assert parse_outputs(_out("abc", "length"), LLMAPI) == Piece("abc", "length", cumulative=True)
    assert parse_outputs({}, LLMAPI) == Piece("")  # an empty final response: no text at all
    http = parse_outputs({"text_output": "añ", "finish_reason": "stop"}, LLMAPI)
    assert http == Piece("añ", "stop", cumulative=True)
    # The same outputs read as classic are a delta.
    assert parse_outputs(_out("ab"), "classic") == Piece("ab")


def test_cumulative_text_becomes_deltas() -> None:
    a = Assembly("r", start=0.0)
    pieces = [_out("", LLMAPI_NONE), _out("The", LLMAPI_NONE), _out("The qu", LLMAPI_NONE),
              _out("The qu", LLMAPI_NONE), _out("The quick", "length"), {}]
    deltas = [a.feed(parse_outputs(p, LLMAPI), float(i)) for i, p in enumerate(pieces)]
    handed = [d for d in deltas if d is not None]
    assert [d.text for d in handed] == ["The", " qu", "ick"]
    assert [d.index for d in handed] == [0, 1, 2]
    assert handed[-1].finish_reason == "length" and handed[-1].output_tokens is None
    c = a.completion(9.0)
    assert (c.text, c.finish_reason, c.input_tokens, c.output_tokens) == (
        "The quick", "length", None, None)
    assert c.timings.token_times == [1.0, 2.0, 4.0]


def test_a_rewritten_cumulative_text_hands_out_what_follows_the_common_prefix() -> None:
    a = Assembly("r", start=0.0)
    a.feed(Piece("caf\ufffd", cumulative=True), 1.0)
    d = a.feed(Piece("café!", cumulative=True), 2.0)
    assert d is not None and d.text == "é!"
    assert a.completion(3.0).text == "café!"  # the last whole text


def test_exchange_over_a_non_streamed_llmapi_response() -> None:
    ex = Exchange("r", policy=RetryPolicy(), timeout=None, now=0.0)
    ex.begin_attempt(0.0)
    d = ex.on_response(parse_outputs(_out("whole text", "stop"), LLMAPI), True, 0.5)
    assert d is not None and d.text == "whole text" and d.finish_reason == "stop"
    assert ex.done and ex.completion().text == "whole text"


# --- the clients over a scripted transport -------------------------------------------------------

class _Call:
    def __init__(self, responses: list[tuple[dict[str, Any], bool]],
                 error: Exception | None = None) -> None:
        self.responses = list(responses)
        self.error = error
        self.cancelled = False

    def next(self, timeout: float | None) -> tuple[dict[str, Any], bool] | None:
        if self.responses:
            return self.responses.pop(0)
        if self.error is not None:
            raise self.error
        return None

    def cancel(self) -> None:
        self.cancelled = True

    def release(self) -> None:
        pass


class ScriptedTransport:
    """Answers an llmapi model's metadata, streams a cumulative text, refuses a stop as the
    llmapi model does (CANCELLED)."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.started: list[RequestSpec] = []
        self.calls: list[_Call] = []
        self.stopped = threading.Event()

    def start(self, spec: RequestSpec, timeout: float | None) -> _Call:
        self.started.append(spec)
        values = {t.name: t.value for t in spec.inputs}
        if "stop" in values:
            self.stopped.set()
            call = _Call([], Cancelled("Request cancelled by client"))
        else:
            texts = ["".join(self.words[:i + 1]) for i in range(len(self.words))]
            call = _Call([(_out(t, LLMAPI_NONE), False) for t in texts[:-1]]
                         + [(_out(texts[-1], "length"), True)])
        self.calls.append(call)
        return call

    def metadata(self, model: str, timeout: float | None) -> dict[str, Any]:
        inputs = NVIDIA_LLMAPI_INPUTS if model == "served_llmapi" else ENSEMBLE_INPUTS
        return {"name": model, "inputs": [{"name": n} for n in sorted(inputs)]}

    def config(self, model: str, timeout: float | None) -> dict[str, Any]:
        return {"config": {"name": model, "backend": "python"}}

    def close(self) -> None:
        pass


class AsyncScripted:
    def __init__(self, sync: ScriptedTransport) -> None:
        self.sync = sync

    async def start(self, spec: RequestSpec, timeout: float | None) -> Any:
        call = self.sync.start(spec, timeout)

        class Aio:
            async def next(self, timeout: float | None) -> Any:
                return call.next(timeout)

            def cancel(self) -> None:
                call.cancel()

            def release(self) -> None:
                pass

        return Aio()

    async def metadata(self, model: str, timeout: float | None) -> dict[str, Any]:
        return self.sync.metadata(model, timeout)

    async def close(self) -> None:
        pass


WORDS = ["Once", " upon", " a", " time"]


def test_the_sync_client_detects_llmapi_and_streams_deltas() -> None:
    t = ScriptedTransport(WORDS)
    with LLMClient("localhost:1", model="served_llmapi") as c:
        c._transport = t
        assert c.model_contract() == LLMAPI and c.model_contract("ensemble") == "classic"
        deltas = list(c.stream("prompt", 4, temperature=0.0))
        assert [d.text for d in deltas] == WORDS and deltas[-1].finish_reason == "length"
        done = c.generate("prompt", 4)
        assert done.text == "Once upon a time" and done.finish_reason == "length"
        assert done.output_tokens is None
        assert all(s.contract == LLMAPI for s in t.started)
        with pytest.raises(InvalidRequest, match="min_tokens"):
            c.generate("prompt", 4, min_tokens=2)
    with LLMClient("localhost:1", model="served_llmapi", contract="classic") as c:
        c._transport = t
        with pytest.raises(InvalidRequest, match="speaks the llmapi contract") as info:
            c.generate("prompt", 4)
        assert info.value.request_id and info.value.attempts == 1


def test_leaving_an_llmapi_stream_sends_the_llmapi_stop(caplog: pytest.LogCaptureFixture) -> None:
    t = ScriptedTransport(WORDS)
    with caplog.at_level(logging.WARNING, "tritonllm.client"):
        with LLMClient("localhost:1", model="served_llmapi") as c:
            c._transport = t
            with c.stream("prompt", 4, request_id="left") as s:
                assert next(s).text == "Once"
            assert t.stopped.wait(10)
        stop = t.started[-1]
        assert (stop.model, stop.request_id, stop.contract) == ("served_llmapi", "left", LLMAPI)
        assert t.calls[0].cancelled  # the call itself was cancelled first
    assert "could not stop" not in caplog.text  # CANCELLED is the llmapi answer to a stop


def test_the_stopper_takes_the_llmapi_cancelled_answer_as_done(
        caplog: pytest.LogCaptureFixture) -> None:
    t = ScriptedTransport(WORDS)
    s = Stopper(lambda: t)
    with caplog.at_level(logging.WARNING, "tritonllm.client"):
        s.stop("served_llmapi", "a", LLMAPI)
        s.stop("served_llmapi", "b")  # classic, not an ensemble: nothing to send
        s.close()
    assert [(x.model, x.request_id) for x in t.started] == [("served_llmapi", "a")]
    assert caplog.text == ""


def test_the_async_client_speaks_llmapi_too() -> None:
    t = ScriptedTransport(WORDS)

    async def run() -> tuple[list[str], str, str]:
        async with AsyncLLMClient("localhost:1", model="served_llmapi") as ac:
            ac._transport = AsyncScripted(t)
            parts = [d.text async for d in ac.stream("prompt", 4)]
            done = await ac.generate("prompt", 4)
            return parts, done.text, await ac.model_contract()

    parts, text, contract = asyncio.run(run())
    assert parts == WORDS and text == "Once upon a time" and contract == LLMAPI
