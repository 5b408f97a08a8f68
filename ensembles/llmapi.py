"""The ``llmapi`` model: NVIDIA's LLM API request contract in front of our pipeline.

NVIDIA's current Triton model for TensorRT-LLM (``triton_backend/all_models/llmapi``) speaks
its own contract (:data:`tritonllm.contract.LLMAPI_CONTRACT`): ``text_input``, ``streaming``,
``sampling_param_*``, ``return_*`` flags and ``stop``, unbatched. :class:`LLMAPIFront` serves
it over a :class:`~tritonllm.ensembles.bls.BLSPipeline` (preprocessing → ``tensorrt_llm`` →
stop strings and detokenizing), so the same engine answers both contracts.

What goes on the wire is what NVIDIA's model sends (read at the commits named in the
contract), since its clients index responses that way:

* ``text_output`` ``[1]``: the whole text so far, in every streamed response too (the LLM API's
  ``CompletionOutput.text``); the prompt first unless ``sampling_param_exclude_input_from_output``
  is true (NVIDIA's default is false).
* ``finish_reason`` / ``stop_reason`` ``[1]`` only when ``return_finish_reason`` /
  ``return_stop_reason`` is set: ``"None"`` while a stream runs, then ``"stop"``, ``"length"`` or
  ``"cancelled"``; the stop reason is the stop string that matched, else ``"None"``.
  ``cumulative_logprob`` ``[1]`` (FP32) on the final response with ``return_cumulative_logprob``.
* ``sampling_param_max_tokens`` defaults to the LLM API's 32.
* A client cancel ends the request with a CANCELLED error ("Request cancelled by client"), as
  NVIDIA's model does. ``stop`` with a request id ends the live requests of that id (each gets
  its final response, finish reason ``cancelled``) and is itself answered with that CANCELLED
  error, as NVIDIA's ``handle_stop_request`` answers.

Bad inputs are refused before any model is called, naming the llmapi input (the one parser,
:func:`tritonllm.ensembles.requests.parse_request`); what the models behind refuse is renamed
to the llmapi input it came from (:meth:`LLMAPIFront.client_message`).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import BLS_IN as CLASSIC
from tritonllm.contract import BLS_OUT as CLASSIC_OUT
from tritonllm.contract import (
    CLASSIC_TO_LLMAPI,
    FINISH_CANCELLED,
    FINISH_REASON,
    LLMAPI,
    LLMAPI_DEFAULT_MAX_TOKENS,
    LLMAPI_FLAGGED_OUTPUTS,
    LLMAPI_NONE,
    unsupported_inputs,
)
from tritonllm.contract import LLMAPI_IN as IN
from tritonllm.contract import LLMAPI_OUT as OUT
from tritonllm.ensembles import wire
from tritonllm.ensembles.bls import BLSPipeline
from tritonllm.ensembles.requests import (
    GenerationRequest,
    RequestError,
    RequestLimits,
    check_request_id,
    parse_request,
    refuse_unsupported,
)
from tritonllm.ensembles.senders import ResponseSink

Arrays = Mapping[str, npt.NDArray[Any]]
UNSUPPORTED = unsupported_inputs(LLMAPI)
#: The classic (ensemble / BLS) input each llmapi input is passed on as.
TO_CLASSIC: dict[str, str] = {name: classic for classic, name in CLASSIC_TO_LLMAPI.items()}
#: llmapi count output -> the classic output it is read from (the same name).
_COUNTS = tuple(name for name in (OUT.num_input_tokens, OUT.num_output_tokens)
                if name in CLASSIC_OUT)
_FROM_CLASSIC = {classic: name for name, classic in TO_CLASSIC.items()}
CANCELLED_MESSAGE = "Request cancelled by client"  # NVIDIA's text, clients may match it


class Outcome(enum.Enum):
    """How :meth:`LLMAPIFront.run` ended: the final response went out, or the request must
    be answered with a CANCELLED error (a client cancel, or a ``stop`` request)."""

    SENT = "sent"
    CANCELLED = "cancelled"


def flag(inputs: Arrays, name: str) -> bool:
    """A BOOL input's value (false when absent); RequestError naming it if it is not one BOOL."""
    value = inputs.get(name)
    if value is None or np.asarray(value).size == 0:
        return False
    arr = np.asarray(value)
    if arr.dtype.kind != "b" or arr.size != 1:
        raise RequestError(name, f"expected one BOOL value, got {arr.dtype} "
                                 f"shape {list(arr.shape)}")
    return bool(arr.reshape(-1)[0])


class _Relay:
    """The sink the BLS pipeline writes to: deltas in, NVIDIA's llmapi responses out."""

    def __init__(self, sink: ResponseSink, prefix: str, flags: frozenset[str],
                 stopped: threading.Event) -> None:
        self.sink = sink
        self.text = prefix
        self.flags = flags
        self.stopped = stopped
        self.final: tuple[str, dict[str, npt.NDArray[Any]]] | None = None

    def is_cancelled(self) -> bool:
        return self.stopped.is_set() or self.sink.is_cancelled()

    def error(self, message: str, final: bool = True) -> None:
        self.sink.error(message, final)

    def send(self, outputs: dict[str, npt.NDArray[Any]], final: bool) -> None:
        self.text += wire.first_string(outputs[CLASSIC_OUT.text_output])
        if not final:
            self.sink.send(self._outputs(LLMAPI_NONE, LLMAPI_NONE), final=False)
            return
        reason = wire.first_string(outputs[FINISH_REASON]) if FINISH_REASON in outputs else ""
        self.final = (reason, outputs)

    def _outputs(self, finish: str, stop: str, cum_log_prob: float | None = None,
                 counts: Mapping[str, int] | None = None) -> dict[str, npt.NDArray[Any]]:
        return llmapi_outputs(self.text, self.flags, finish, stop, cum_log_prob, counts)

    def finish(self, stop_string: str | None) -> Outcome:
        """Send the final response held back by :meth:`send` (or say the request was
        cancelled by its client)."""
        if self.final is None:  # the pipeline ended without one: nothing more to say
            return Outcome.SENT
        reason, outputs = self.final
        if reason == FINISH_CANCELLED and self.sink.is_cancelled():
            return Outcome.CANCELLED
        cum = None
        if (LLMAPI_FLAGGED_OUTPUTS[OUT.cumulative_logprob] in self.flags
                and CLASSIC_OUT.cum_log_probs in outputs):
            cum = float(np.asarray(outputs[CLASSIC_OUT.cum_log_probs]).reshape(-1)[0])
        stop = stop_string if stop_string is not None else LLMAPI_NONE
        counts = {name: int(np.asarray(outputs[name]).reshape(-1)[0])
                  for name in _COUNTS if name in outputs}
        self.sink.send(self._outputs(reason or LLMAPI_NONE, stop, cum, counts), final=True)
        return Outcome.SENT


def llmapi_outputs(text: str, flags: frozenset[str], finish: str, stop: str,
                   cum_log_prob: float | None = None,
                   counts: Mapping[str, int] | None = None) -> dict[str, npt.NDArray[Any]]:
    """One llmapi response as NVIDIA's model sends it: ``text_output``, and each flagged output
    the request asked for (``flags``: the ``return_*`` inputs set)."""
    out = {OUT.text_output: wire.strings(LLMAPI, OUT.text_output, [text])}
    if LLMAPI_FLAGGED_OUTPUTS[OUT.finish_reason] in flags:
        out[OUT.finish_reason] = wire.strings(LLMAPI, OUT.finish_reason, [finish])
    if LLMAPI_FLAGGED_OUTPUTS[OUT.stop_reason] in flags:
        out[OUT.stop_reason] = wire.strings(LLMAPI, OUT.stop_reason, [stop])
    if cum_log_prob is not None:
        out[OUT.cumulative_logprob] = np.asarray([cum_log_prob], np.float32)
    for name, n in (counts or {}).items():
        if LLMAPI_FLAGGED_OUTPUTS[name] in flags:
            out[name] = np.asarray([n], np.int32)
    return out


class LLMAPIFront:
    """Serves the llmapi contract over ``pipeline``; ``run`` from one worker thread per
    request (as the BLS model does). ``limits`` bound what is parsed here (the prompt and
    lengths are checked again, exactly, by preprocessing); ``decoupled`` is the model's
    transaction policy (``streaming`` needs it)."""

    def __init__(self, pipeline: BLSPipeline, limits: RequestLimits, *, decoupled: bool) -> None:
        self.pipeline = pipeline
        self.limits = limits
        self.decoupled = decoupled
        self._live = LiveRequests()

    @staticmethod
    def limits_for(vocab_size: int, end_id: int, pad_id: int, max_seq_len: int | None = None,
                   **bounds: Any) -> RequestLimits:
        """The front's limits: ``max_tokens`` at most ``max_seq_len`` (the prompt is not
        tokenized here: preprocessing checks it, and prompt + max_tokens, exactly), the LLM
        API's default ``max_tokens``."""
        return RequestLimits.for_engine(max_seq_len, max_seq_len, vocab_size, end_id, pad_id,
                                        default_max_tokens=LLMAPI_DEFAULT_MAX_TOKENS, **bounds)

    @staticmethod
    def client_message(message: str) -> str:
        """A called model's error message with the classic input it names renamed to the
        llmapi input the client sent (``max_tokens: …`` → ``sampling_param_max_tokens: …``)."""
        head, sep, rest = message.partition(":")
        name = head.strip()
        return f"{_FROM_CLASSIC[name]}{sep}{rest}" if sep and name in _FROM_CLASSIC else message

    def run(self, inputs: Arrays, sink: ResponseSink, request_id: str = "") -> Outcome:
        """Serve one request. Raises RequestError (naming the llmapi input) before anything
        was sent for a bad request; returns :attr:`Outcome.CANCELLED` when the adapter must
        answer with NVIDIA's CANCELLED error."""
        check_request_id(request_id)
        if flag(inputs, IN.stop):
            if not request_id:
                raise RequestError(IN.stop, "needs the request id of the request to stop")
            self.stop(request_id)
            return Outcome.CANCELLED
        refuse_unsupported(inputs, UNSUPPORTED)
        req = parse_request(inputs, self.limits, model=LLMAPI)
        if req.streaming and not self.decoupled:
            raise RequestError(IN.streaming, "needs a decoupled model; this repository was "
                                             "rendered without streaming")
        flags = frozenset(f for f in LLMAPI_FLAGGED_OUTPUTS.values() if flag(inputs, f))
        # NVIDIA's default (no sampling_param_exclude_input_from_output): the prompt is included.
        prefix = (req.prompt or "") if req.exclude_input_in_output is not True else ""
        stopped = threading.Event()
        relay = _Relay(sink, prefix, flags, stopped)
        try:
            with self._live.running(request_id, stopped.set):
                stop_string = self.pipeline.run(self._classic_inputs(inputs, req, flags), relay,
                                                request_id)
        except RequestError as e:
            raise RequestError(_FROM_CLASSIC.get(e.field, e.field), e.message) from None
        return relay.finish(stop_string)

    def _classic_inputs(self, inputs: Arrays, req: GenerationRequest,
                        flags: frozenset[str]) -> dict[str, npt.NDArray[Any]]:
        """The request as the BLS pipeline takes it (classic names, shaped ``[1, ...]``)."""
        out: dict[str, npt.NDArray[Any]] = {}
        for name, classic in TO_CLASSIC.items():
            value = inputs.get(name)
            if value is not None and np.asarray(value).size:
                arr = np.asarray(value)
                out[classic] = arr.reshape(1, -1)
        if CLASSIC.max_tokens not in out:
            out[CLASSIC.max_tokens] = np.array([[req.max_tokens]], np.int32)
        # The relay accumulates the text and adds the prompt itself.
        out[CLASSIC.stream] = np.array([[req.streaming]])
        out[CLASSIC.exclude_input_in_output] = np.array([[True]])
        if LLMAPI_FLAGGED_OUTPUTS[OUT.cumulative_logprob] in flags:
            out[CLASSIC.return_log_probs] = np.array([[True]])
        return out

    def stop(self, request_id: str) -> int:
        """End every live request with this id; returns how many there were."""
        return self._live.stop(request_id)


class LiveRequests:
    """The live requests of each request id, for NVIDIA's ``stop``: each registers how it is
    ended while it runs (:meth:`running`); :meth:`stop` ends all of one id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, list[Callable[[], None]]] = {}

    @contextmanager
    def running(self, request_id: str, end: Callable[[], None]) -> Iterator[None]:
        if not request_id:  # no id: no stop can name it
            yield
            return
        with self._lock:
            self._live.setdefault(request_id, []).append(end)
        try:
            yield
        finally:
            with self._lock:
                live = self._live.get(request_id, [])
                if end in live:
                    live.remove(end)
                if not live:
                    self._live.pop(request_id, None)

    def stop(self, request_id: str) -> int:
        """End every live request with this id; returns how many there were."""
        with self._lock:
            ends = list(self._live.get(request_id, ()))
        for end in ends:
            end()
        return len(ends)


__all__ = ["CANCELLED_MESSAGE", "TO_CLASSIC", "LLMAPIFront", "LiveRequests", "Outcome", "flag",
           "llmapi_outputs"]
