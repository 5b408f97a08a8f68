"""The classic request contract in front of an llmapi ``tensorrt_llm``: the llmapi layout's
``ensemble`` and ``tensorrt_llm_bls``.

NVIDIA's current stack serves one text-in, text-out ``tensorrt_llm`` model (the llmapi
contract). Existing clients, NVIDIA's scripts and genai-perf's ``--backend tensorrtllm`` speak
the classic ensemble contract (``text_input``, ``max_tokens``, ``stream``, ``stop_words``, ...).
:class:`ClassicFront` serves that contract by calling the llmapi model, on both targets:

* every classic input some llmapi input carries (:data:`tritonllm.contract.CLASSIC_TO_LLMAPI`)
  is passed on under its llmapi name; the others are refused unless their value asks for
  nothing (:func:`tritonllm.contract.llmapi_front_unsupported`), INVALID_ARG naming them;
* the llmapi model is always asked to stream, with the prompt excluded and its finish reason:
  its ``text_output`` is the whole text so far, so a classic stream gets the new part of each
  response (or the whole text so far with ``accumulate_tokens``), a classic one-shot request
  the whole text once, after the prompt when ``exclude_input_in_output`` is false;
* ``finish_reason`` is the llmapi model's (``stop``, ``length``, ``cancelled``), token counts
  are its ``num_input_tokens`` / ``num_output_tokens`` when the request asks for them;
* a client cancel (noticed as in :mod:`tritonllm.ensembles.bls`) stops the llmapi request,
  which frees its engine slot, and the classic request ends with finish reason ``cancelled``.

What the llmapi model refuses comes back under the classic name the client sent.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import BLS_IN as IN
from tritonllm.contract import BLS_OUT as OUT
from tritonllm.contract import (
    CLASSIC_TO_LLMAPI,
    FINISH_CANCELLED,
    FINISH_REASON,
    FINISH_STOP,
    LLMAPI_FLAGGED_OUTPUTS,
    LLMAPI_NONE,
    llmapi_front_unsupported,
)
from tritonllm.contract import LLMAPI_IN as API_IN
from tritonllm.contract import LLMAPI_OUT as API_OUT
from tritonllm.ensembles import wire
from tritonllm.ensembles.bls import CANCEL_CHECK_S, LLMStream
from tritonllm.ensembles.cancellation import CancellationPoller
from tritonllm.ensembles.llmapi import flag
from tritonllm.ensembles.requests import (
    RequestError,
    RequestLimits,
    check_request_id,
    parse_request,
    refuse_unsupported,
)
from tritonllm.ensembles.senders import ResponseSink

Arrays = Mapping[str, npt.NDArray[Any]]
CallLLM = Callable[[dict[str, npt.NDArray[Any]], list[str]], LLMStream]
#: llmapi input -> the classic input it came from (to name it in errors).
FROM_LLMAPI = {api: classic for classic, api in CLASSIC_TO_LLMAPI.items()}
_COUNTS = (API_OUT.num_input_tokens, API_OUT.num_output_tokens)


def classic_message(message: str) -> str:
    """An llmapi error message with the llmapi input it names renamed to the classic input the
    client sent (``sampling_param_top_p: …`` → ``top_p: …``)."""
    head, sep, rest = message.partition(":")
    name = head.strip()
    return f"{FROM_LLMAPI[name]}{sep}{rest}" if sep and name in FROM_LLMAPI else message


class ClassicFront:
    """Serves ``model``'s classic contract (``ensemble`` or ``tensorrt_llm_bls``) over the
    llmapi model that ``call_llm`` calls; ``run`` from one worker thread per request."""

    def __init__(self, model: str, call_llm: CallLLM, limits: RequestLimits, *,
                 decoupled: bool, default_exclude_input: bool = True,
                 accumulate_tokens: bool = False,
                 cancellations: CancellationPoller | None = None) -> None:
        self.model = model
        self.call_llm = call_llm
        self.limits = limits
        self.decoupled = decoupled
        self.default_exclude_input = default_exclude_input
        self.accumulate = accumulate_tokens
        self.cancellations = cancellations
        self.unsupported = llmapi_front_unsupported(model)
        self._keys = itertools.count()

    def llmapi_inputs(self, inputs: Arrays) -> tuple[dict[str, npt.NDArray[Any]], bool, str]:
        """Validate one classic request; returns (llmapi inputs, stream, text before the
        output). Raises RequestError naming the classic input."""
        refuse_unsupported(inputs, self.unsupported)
        req = parse_request(inputs, self.limits, model=self.model)
        if req.streaming and not self.decoupled:
            raise RequestError(IN.stream, "needs a decoupled model; this repository was "
                                          "rendered without streaming")
        out: dict[str, npt.NDArray[Any]] = {}
        for classic, api in CLASSIC_TO_LLMAPI.items():
            value = inputs.get(classic)
            if value is not None and np.asarray(value).size:
                out[api] = np.asarray(value).reshape(-1)  # llmapi dims are whole shapes
        out[API_IN.streaming] = np.array([True])
        out[API_IN.sampling_param_exclude_input_from_output] = np.array([True])
        out[API_IN.sampling_param_max_tokens] = np.array([req.max_tokens], np.int32)
        out[API_IN.return_finish_reason] = np.array([True])
        exclude = (req.exclude_input_in_output if req.exclude_input_in_output is not None
                   else self.default_exclude_input)
        prefix = "" if (exclude or req.streaming) else (req.prompt or "")
        return out, req.streaming, prefix

    @staticmethod
    def wanted_outputs(llm_in: Mapping[str, Any]) -> list[str]:
        names = [API_OUT.text_output, API_OUT.finish_reason]
        names += [n for n in _COUNTS if flag(llm_in, LLMAPI_FLAGGED_OUTPUTS[n])]
        return names

    def run(self, inputs: Arrays, sink: ResponseSink, request_id: str = "") -> None:
        """Serve one request; RequestError before anything was sent means a bad request."""
        check_request_id(request_id)
        llm_in, stream, prefix = self.llmapi_inputs(inputs)
        try:
            llm = self.call_llm(llm_in, self.wanted_outputs(llm_in))
        except RequestError as e:
            raise RequestError(FROM_LLMAPI.get(e.field, e.field), e.message) from None
        key = next(self._keys)
        if self.cancellations is not None:  # a client cancel while waiting for a slot
            self.cancellations.watch(key, sink.is_cancelled, llm.cancel)
        try:
            self._relay(llm, stream, prefix, sink)
        finally:
            if self.cancellations is not None:
                self.cancellations.unwatch(key)

    def _relay(self, llm: LLMStream, stream: bool, prefix: str, sink: ResponseSink) -> None:
        text, sent, reason = "", 0, ""
        counts: dict[str, npt.NDArray[Any]] = {}
        checked = time.monotonic()
        for out in llm:
            now = time.monotonic()
            if now - checked >= CANCEL_CHECK_S:
                checked = now
                if sink.is_cancelled():
                    llm.cancel()
                    for _ in llm:  # up to the llmapi model's final response
                        pass
                    self._send(sink, "", FINISH_CANCELLED, {}, final=True)
                    return
            text = wire.first_string(out[API_OUT.text_output])
            if API_OUT.finish_reason in out:
                got = wire.first_string(out[API_OUT.finish_reason])
                reason = got if got != LLMAPI_NONE else reason
            for name in _COUNTS:
                if name in out:
                    counts[name] = np.asarray(out[name], np.int32).reshape(1, 1)
            if stream and len(text) > sent:
                self._send(sink, text if self.accumulate else text[sent:], "", {}, final=False)
                sent = len(text)
        final = (text if self.accumulate else text[sent:]) if stream else prefix + text
        self._send(sink, final, reason or FINISH_STOP, counts, final=True)

    def _send(self, sink: ResponseSink, text: str, reason: str,
              extras: dict[str, npt.NDArray[Any]], final: bool) -> None:
        out = {OUT.text_output: wire.strings(self.model, OUT.text_output, [text]),
               FINISH_REASON: wire.strings(self.model, FINISH_REASON, [reason])}
        out.update(extras)
        sink.send(out, final)


__all__ = ["FROM_LLMAPI", "ClassicFront", "classic_message"]
