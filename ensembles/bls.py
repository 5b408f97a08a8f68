"""The ``tensorrt_llm_bls`` pipeline: the ensemble's contract in one request-scoped flow.

preprocessing → tensorrt_llm (always streamed internally) → text, with what the ensemble cannot
do: stop strings matched on text (the stop string is not returned), stateful incremental
detokenizing (streamed deltas add up to the non-streamed text exactly), and cancellation that
reaches the LLM (a client cancel or a stop string ends the LLM request and frees its slot).

The Triton adapter injects two calls, so this module imports nothing from Triton:
  * ``call_pre(inputs) -> outputs`` runs the preprocessing model (raises RequestError),
  * ``call_llm(inputs, outputs) -> LLMStream`` starts the LLM request (asking for those output
    tensors) and yields its output dicts; ``LLMStream.cancel()`` asks the LLM to end it, after
    which the stream ends with the LLM's final response.

A client cancel (gRPC cancel, HTTP disconnect) is noticed while the LLM responds: the relay
asks the request at most once per ``CANCEL_CHECK_S`` when an LLM response arrives (asking per
token would cost a round trip to the Triton core per token), and a shared
:class:`~tritonllm.ensembles.cancellation.CancellationPoller` covers a request that waits for an
engine slot. The poller alone was too slow under load: it keeps its round trips to a small share
of the time, so with 50 streams it asked each one every few seconds.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tritonllm.contract import (
    BLS,
    BLS_FORWARDS,
    BLS_OWN_INPUTS,
    CONTEXT_LENGTH,
    FINISH_CANCELLED,
    FINISH_REASON,
    FINISH_STOP,
    LLM,
    LLM_CONTRACT,
    LLM_IN,
    LLM_OUT,
    OPTIONAL_OUTPUTS,
    PRE_IN,
    PREPROCESSING,
    PREPROCESSING_DERIVES,
    PREPROCESSING_SENDS,
    client_names,
    step_links,
    unsupported_inputs,
)
from tritonllm.contract import BLS_IN as IN
from tritonllm.contract import BLS_OUT as OUT
from tritonllm.ensembles import wire
from tritonllm.ensembles.cancellation import CancellationPoller
from tritonllm.ensembles.detokenize import IncrementalDetokenizer
from tritonllm.ensembles.requests import (
    RequestError,
    check_request_id,
    read_words,
    refuse_unsupported,
)
from tritonllm.ensembles.senders import ResponseSink
from tritonllm.ensembles.stops import StopStrings
from tritonllm.settings import RepoSettings

Arrays = Mapping[str, npt.NDArray[Any]]
CANCEL_CHECK_S = 0.05  # the most often one request is asked whether its client cancelled

# What no target honours; what only some targets cannot honour goes on to the LLM, which refuses
# it there (tritonllm.contract.unsupported_inputs).
UNSUPPORTED = unsupported_inputs(BLS)
# BLS input → LLM input, passed through as given (those of one value per request as [1, 1])
PASSTHROUGH = {k: name for k, (model, name) in BLS_FORWARDS.items() if model == LLM}
_LLM_SCALARS = frozenset(t.name for t in LLM_CONTRACT.inputs if t.dims == (1,))
# BLS input → preprocessing input
TO_PRE = {k: name for k, (model, name) in BLS_FORWARDS.items()
          if model == PREPROCESSING and k not in UNSUPPORTED}
# preprocessing output → LLM input, as the ensemble wires them, for what preprocessing sends
# but for what the BLS model does itself (stop strings on the text: BLS_OWN_INPUTS)
_PRE_CLIENT = client_names(PREPROCESSING)
PRE_TO_LLM = {out: llm for out, llm in step_links(PREPROCESSING, LLM).items()
              if out in PREPROCESSING_SENDS
              and _PRE_CLIENT.get(PREPROCESSING_DERIVES.get(out, ""), "") not in BLS_OWN_INPUTS}
# LLM outputs always asked for; the optional ones when the request asks (OPTIONAL_OUTPUTS)
LLM_OUTPUTS = (LLM_OUT.output_ids, LLM_OUT.sequence_length, CONTEXT_LENGTH, FINISH_REASON)
_COUNTS = frozenset(OPTIONAL_OUTPUTS[LLM_IN.return_num_input_tokens]
                    + OPTIONAL_OUTPUTS[LLM_IN.return_num_output_tokens])


class LLMStream(Protocol):
    def __iter__(self) -> Iterator[dict[str, npt.NDArray[Any]]]: ...

    def cancel(self) -> None: ...


def _flag(inputs: Arrays, name: str, default: bool) -> bool:
    if name not in inputs or np.asarray(inputs[name]).size == 0:
        return default
    return bool(np.asarray(inputs[name]).reshape(-1)[0])


def _prompt(inputs: Arrays) -> str:
    """The prompt as text (preprocessing has already checked its size and encoding)."""
    item = np.asarray(inputs[IN.text_input]).reshape(-1)[0]
    return item if isinstance(item, str) else bytes(item).decode("utf-8")


def _text_tensor(name: str, text: str) -> npt.NDArray[np.object_]:
    return wire.strings(BLS, name, [text])


class BLSPipeline:
    """One instance per model; ``run`` serves one request (call it from a worker thread).

    Before calling any model, ``prepare`` refuses what no target honours (INVALID_ARG naming the
    input) and bounds ``stop_words`` / ``bad_words`` (``max_words`` entries of at most
    ``max_word_bytes`` bytes), so stop strings cost what they weigh (see
    tritonllm.ensembles.stops); preprocessing bounds the prompt before tokenizing it.
    """

    def __init__(self, tokenizer: Any, call_pre: Callable[[dict[str, Any]], dict[str, Any]],
                 call_llm: Callable[[dict[str, Any], list[str]], LLMStream], *,
                 skip_special_tokens: bool = True, accumulate_tokens: bool = False,
                 default_exclude_input: bool = True,
                 cancellations: CancellationPoller | None = None,
                 max_words: int = RepoSettings.max_words,
                 max_word_bytes: int = RepoSettings.max_word_bytes) -> None:
        self.tokenizer = tokenizer
        self.cancellations = cancellations
        self._keys = itertools.count()
        self.call_pre = call_pre
        self.call_llm = call_llm
        self.skip = skip_special_tokens
        self.accumulate = accumulate_tokens
        self.default_exclude_input = default_exclude_input
        self.max_words = max_words
        self.max_word_bytes = max_word_bytes

    def prepare(self, inputs: Arrays) -> tuple[dict[str, Any], list[str], bool, str]:
        """Validate and build the LLM inputs; returns (llm inputs, stops, stream, prefix)."""
        refuse_unsupported(inputs, UNSUPPORTED)
        words = {name: read_words(name, np.asarray(inputs[name]), self.max_words,
                                  self.max_word_bytes)
                 for name in (IN.stop_words, IN.bad_words) if inputs.get(name) is not None}
        stops = list(words.get(IN.stop_words, ()))
        pre_in = {TO_PRE[k]: np.asarray(v) for k, v in inputs.items() if k in TO_PRE}
        if PRE_IN.QUERY not in pre_in:
            raise RequestError(IN.text_input, "is required")
        pre_out = self.call_pre(pre_in)
        llm_in: dict[str, Any] = {PRE_TO_LLM[k]: v for k, v in pre_out.items() if k in PRE_TO_LLM}
        bad = LLM_IN.bad_words_list
        if bad in llm_in and not (np.asarray(llm_in[bad])[..., 1, :] >= 0).any():
            del llm_in[bad]  # no bad words: don't ask the engine for any
        for k, v in inputs.items():
            if k in PASSTHROUGH and v is not None:
                name = PASSTHROUGH[k]
                llm_in[name] = np.asarray(v).reshape(1, 1) if name in _LLM_SCALARS \
                    else np.asarray(v)
        llm_in[LLM_IN.streaming] = np.array([[True]])
        stream = _flag(inputs, IN.stream, False)
        exclude = _flag(inputs, IN.exclude_input_in_output, self.default_exclude_input)
        prefix = "" if (exclude or stream) else _prompt(inputs)
        return llm_in, stops, stream, prefix

    @staticmethod
    def llm_outputs(llm_in: Mapping[str, Any]) -> list[str]:
        """The LLM outputs to ask for: the text's, plus counts / log probs when wanted."""
        names = list(LLM_OUTPUTS)
        for flag, wanted in OPTIONAL_OUTPUTS.items():
            if flag in llm_in and bool(np.asarray(llm_in[flag]).reshape(-1)[0]):
                names.extend(wanted)
        return names

    def run(self, inputs: Arrays, sink: ResponseSink, request_id: str = "") -> str | None:
        """Serve one request; RequestError before anything was sent means a bad request.

        Returns the stop string that ended the request (None: it ended otherwise)."""
        check_request_id(request_id)
        llm_in, stops, stream, prefix = self.prepare(inputs)
        llm = self.call_llm(llm_in, self.llm_outputs(llm_in))
        key = next(self._keys)
        if self.cancellations is not None:  # a client cancel ends the LLM request too
            self.cancellations.watch(key, sink.is_cancelled, llm.cancel)
        try:
            return self._relay(llm, stops, stream, prefix, sink)
        finally:
            if self.cancellations is not None:
                self.cancellations.unwatch(key)

    def _relay(self, llm: LLMStream, stops: list[str], stream: bool, prefix: str,
               sink: ResponseSink) -> str | None:
        detok = IncrementalDetokenizer(self.tokenizer, skip_special_tokens=self.skip)
        matcher = StopStrings(stops)
        reason = ""
        pending: list[str] = [prefix] if prefix else []
        counts: dict[str, Any] = {}
        log_probs: list[float] | None = None
        checked = time.monotonic()
        for out in llm:
            now = time.monotonic()
            if now - checked >= CANCEL_CHECK_S:  # a client cancel, noticed within a response
                checked = now
                if sink.is_cancelled():
                    llm.cancel()
                    for _ in llm:  # up to the LLM's final response (finish_reason cancelled)
                        pass
                    self._send(sink, "", FINISH_CANCELLED, {}, final=True, detok=detok)
                    return None
            ids = np.asarray(out[LLM_OUT.output_ids]).reshape(-1)
            ctx = int(np.asarray(out[CONTEXT_LENGTH]).reshape(-1)[0]) if CONTEXT_LENGTH in out \
                else 0
            n = int(np.asarray(out[LLM_OUT.sequence_length]).reshape(-1)[0]) \
                if LLM_OUT.sequence_length in out else len(ids)
            delta = detok.push(ids[ctx:n])
            if FINISH_REASON in out:
                reason = np.asarray(out[FINISH_REASON]).reshape(-1)[0].decode() or reason
            counts.update({k: v for k, v in out.items() if k in _COUNTS})
            if LLM_OUT.output_log_probs in out:
                log_probs = log_probs if log_probs is not None else []
                log_probs.extend(np.asarray(out[LLM_OUT.output_log_probs],
                                            np.float32).reshape(-1))
            step = matcher.push(delta)
            if step.text:
                pending.append(step.text)
            if step.stopped:
                llm.cancel()
                reason = FINISH_STOP
                break
            if stream and pending:
                self._send(sink, "".join(pending), "", {}, final=False, detok=detok)
                pending = []
        if not matcher.stopped:
            tail = detok.finish()
            step = matcher.push(tail)
            pending.append(step.text + ("" if step.stopped else matcher.finish()))
            if step.stopped:
                reason = FINISH_STOP
        text = "".join(pending)
        extras = dict(counts)
        if log_probs is not None:  # the whole output's, on the final response
            lps = np.asarray(log_probs, np.float32)
            extras[OUT.output_log_probs] = lps.reshape(1, 1, -1)
            extras[OUT.cum_log_probs] = np.asarray([[lps.sum()]], np.float32)
        self._send(sink, text, reason or FINISH_STOP, extras, final=True, detok=detok)
        return matcher.stop_string

    def _send(self, sink: ResponseSink, text: str, reason: str, extras: dict[str, Any],
              final: bool, detok: IncrementalDetokenizer) -> None:
        if self.accumulate:
            text = detok.text
        out = {OUT.text_output: _text_tensor(OUT.text_output, text),
               FINISH_REASON: _text_tensor(FINISH_REASON, reason)}
        out.update(extras)
        sink.send(out, final)
