"""The llmapi layout's GPU ``tensorrt_llm``: the llmapi contract served by TensorRT-LLM's LLM API.

What NVIDIA's ``triton_backend/all_models/llmapi`` model does, written for this project (facts
from its ``model.py`` / ``helpers.py`` at the commits named in :mod:`tritonllm.contract`):

* ``model.yaml`` beside the model code: ``triton_config`` is Triton's (``max_batch_size``,
  ``decoupled``, ``cancellation_check_period_ms``), every other key is an ``LLM()`` argument
  (:func:`tritonllm.trtllm_release.load_model_yaml`);
* a request's ``sampling_param_<field>`` inputs are ``SamplingParams(<field>=...)``, the
  ``streaming`` input is ``generate_async(..., streaming=...)``; ``sampling_param_max_tokens``
  defaults to the LLM API's 32, ``sampling_param_exclude_input_from_output`` to false;
* each ``RequestOutput`` is sent as NVIDIA's model sends it (``text_output`` the whole text so far,
  the flagged outputs only when asked: :func:`tritonllm.ensembles.llmapi.llmapi_outputs`), plus
  our token counts when asked;
* ``stop`` ends the live requests of that request id (``abort()``) and is answered with
  CANCELLED; a client cancel aborts the request and ends it with CANCELLED.

Requests are validated by the one parser (:func:`tritonllm.ensembles.requests.parse_request`)
before the LLM sees them, so a bad one gets INVALID_ARG naming the llmapi input on both targets.

Nothing here imports ``tensorrt_llm``: the adapter passes in ``LLM`` and ``SamplingParams``
(on a GPU host, the real ones; in tests a labelled fake). Not run on a GPU yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import (
    FINISH_CANCELLED,
    LLMAPI,
    LLMAPI_DEFAULT_MAX_TOKENS,
    LLMAPI_FLAGGED_OUTPUTS,
    LLMAPI_NONE,
    REQUEST_FIELDS,
    unsupported_inputs,
)
from tritonllm.contract import LLMAPI_IN as IN
from tritonllm.contract import LLMAPI_OUT as OUT
from tritonllm.ensembles.cpu_engine import FINISH_ERROR
from tritonllm.ensembles.engine_stats import EngineStats, KvBlocks, Rejections, RequestLedger
from tritonllm.ensembles.llmapi import LiveRequests, Outcome, flag, llmapi_outputs
from tritonllm.ensembles.requests import (
    RequestError,
    RequestLimits,
    check_request_id,
    parse_request,
    refuse_unsupported,
)
from tritonllm.ensembles.senders import ResponseSink
from tritonllm.metrics_catalog import INFLIGHT_BATCHER, RUNTIME_MEMORY

log = logging.getLogger(__name__)
Arrays = Mapping[str, npt.NDArray[Any]]
STATS_TIMEOUT_S = 0.5  # LLM.get_stats waits this long for the engine's stats
UNSUPPORTED = unsupported_inputs(LLMAPI)
PREFIX = "sampling_param_"
#: The SamplingParams field each llmapi request input sets (its name without the prefix).
SAMPLING_FIELDS: dict[str, str] = {
    name: name.removeprefix(PREFIX) for name in REQUEST_FIELDS[LLMAPI].values()
    if name.startswith(PREFIX)}
_LISTS = frozenset({IN.sampling_param_stop, IN.sampling_param_bad})
CANCEL_CHECK_S = 0.1  # NVIDIA's cancellation_check_period_ms default


def sampling_kwargs(inputs: Arrays, limits: RequestLimits) -> tuple[dict[str, Any], str, bool]:
    """Validate one llmapi request; returns (SamplingParams keyword arguments, prompt,
    streaming). Raises RequestError naming the llmapi input."""
    refuse_unsupported(inputs, UNSUPPORTED)
    req = parse_request(inputs, limits, model=LLMAPI)
    kwargs: dict[str, Any] = {"max_tokens": req.max_tokens,
                              "exclude_input_from_output": bool(req.exclude_input_in_output)}
    sent = set(req.sources.values())
    for name, fieldname in SAMPLING_FIELDS.items():
        if name not in sent or fieldname in kwargs:
            continue
        if name in _LISTS:
            words = req.stop_words if name == IN.sampling_param_stop else req.bad_words
            kwargs[fieldname] = list(words)
        else:
            kwargs[fieldname] = np.asarray(inputs[name]).reshape(-1)[0].item()
    return kwargs, req.prompt or "", req.streaming


class LLMAPIEngineFront:
    """Serves llmapi requests on an LLM API ``llm`` (``generate_async``); ``run`` from one
    worker thread per request. ``sampling_params`` is the ``SamplingParams`` class."""

    def __init__(self, llm: Any, sampling_params: Callable[..., Any], limits: RequestLimits, *,
                 decoupled: bool, cancel_check_s: float = CANCEL_CHECK_S) -> None:
        self.llm = llm
        self.sampling_params = sampling_params
        self.limits = limits
        self.decoupled = decoupled
        self.cancel_check_s = cancel_check_s
        self._live = LiveRequests()
        self.ledger = RequestLedger()
        self.rejections = Rejections()  # counted by the model adapter, as the CPU model's
        self._iterations = IterationStats()

    @staticmethod
    def limits_for(vocab_size: int, end_id: int, pad_id: int, max_seq_len: int | None,
                   **bounds: Any) -> RequestLimits:
        return RequestLimits.for_engine(max_seq_len, max_seq_len, vocab_size, end_id, pad_id,
                                        default_max_tokens=LLMAPI_DEFAULT_MAX_TOKENS, **bounds)

    def run(self, inputs: Arrays, sink: ResponseSink, request_id: str = "") -> Outcome:
        check_request_id(request_id)
        if flag(inputs, IN.stop):
            if not request_id:
                raise RequestError(IN.stop, "needs the request id of the request to stop")
            self.stop(request_id)
            return Outcome.CANCELLED
        kwargs, prompt, streaming = sampling_kwargs(inputs, self.limits)
        if streaming and not self.decoupled:
            raise RequestError(IN.streaming, "is only supported by a decoupled model "
                                             "(model.yaml triton_config.decoupled)")
        flags = frozenset(f for f in LLMAPI_FLAGGED_OUTPUTS.values() if flag(inputs, f))
        result = self.llm.generate_async(prompt, sampling_params=self.sampling_params(**kwargs),
                                         streaming=streaming)
        key = object()  # this request, in the ledger
        self.ledger.started(key, 0)
        reason = FINISH_ERROR  # the relay failed: an error response, not a finish
        try:
            with self._live.running(request_id, result.abort):
                outcome, reason = self._relay(result, flags, sink, key)
                return outcome
        finally:
            self.ledger.finished(key, reason)

    def _relay(self, result: Iterable[Any], flags: frozenset[str], sink: ResponseSink,
               key: object) -> tuple[Outcome, str]:
        """Send each output; returns the outcome and the request's finish reason."""
        checked = time.monotonic()
        text = ""
        for output in result:
            now = time.monotonic()
            if now - checked >= self.cancel_check_s:
                checked = now
                if sink.is_cancelled():
                    result.abort()  # type: ignore[attr-defined]
                    return Outcome.CANCELLED, FINISH_CANCELLED
            done = bool(getattr(output, "finished", False))
            first = output.outputs[0]
            self.ledger.tokens(key, len(first.token_ids or ()),
                               prompt_tokens=len(output.prompt_token_ids or ()))
            reason = str(first.finish_reason) if done and first.finish_reason else LLMAPI_NONE
            if reason == FINISH_CANCELLED and sink.is_cancelled():
                return Outcome.CANCELLED, FINISH_CANCELLED
            counts = {OUT.num_input_tokens: len(output.prompt_token_ids or ()),
                      OUT.num_output_tokens: len(first.token_ids or ())} if done else None
            cum = first.cumulative_logprob if done and LLMAPI_FLAGGED_OUTPUTS[
                OUT.cumulative_logprob] in flags else None
            stop = first.stop_reason if done and isinstance(first.stop_reason, str) \
                else LLMAPI_NONE
            text = first.text
            sink.send(llmapi_outputs(text, flags, reason, stop,
                                     None if cum is None else float(cum), counts), final=done)
            if done:
                return Outcome.SENT, reason
        # The results ended without a finished output: the request still gets its final one.
        sink.send(llmapi_outputs(text, flags, LLMAPI_NONE, LLMAPI_NONE), final=True)
        return Outcome.SENT, LLMAPI_NONE

    # ---- the metrics' StatsSource (tritonllm.ensembles.llm_metrics) ----------------------

    def engine_stats(self) -> EngineStats:
        """The engine's latest iteration stats (``LLM.get_stats``, with
        ``enable_iter_perf_stats``), and the requests relayed here since the previous call."""
        get_stats = getattr(self.llm, "get_stats", None)
        if get_stats is not None:
            try:
                self._iterations.read(get_stats(timeout=STATS_TIMEOUT_S))
            except Exception as e:  # stats are best effort: serving goes on without them
                log.warning("LLM.get_stats failed: %s", e)
        try:
            return self._iterations.stats(self.ledger)
        except (TypeError, ValueError, AttributeError) as e:  # a value of an unexpected type
            log.warning("TensorRT-LLM iteration stats not understood (%s): %s", e,
                        self._iterations.last)
            self._iterations.last = {}
            return self._iterations.stats(self.ledger)

    def take_max_send_ms(self) -> float:
        return 0.0  # the CPU engine's quantity (sends on the engine thread); none here

    def take_rejections(self) -> dict[str, int]:
        return self.rejections.take()

    def stop(self, request_id: str) -> int:
        """Abort every live request with this id; returns how many there were."""
        return self._live.stop(request_id)


class IterationStats:
    """TensorRT-LLM's iteration stats (the dicts ``LLM.get_stats()`` returns, keys as
    ``tensorrt_llm/metrics/collector.py`` reads them: ``numActiveRequests``,
    ``maxNumActiveRequests``, ``iter``, ``timestamp``, ``*MemUsage``, ``kvCacheStats``,
    ``inflightBatchingStats``) as an :class:`EngineStats`. The latest iteration wins; an
    engine that reports nothing leaves the gauges at their last values."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def read(self, iterations: Iterable[Any]) -> None:
        for it in iterations:
            if isinstance(it, str):  # some releases return JSON strings
                import json

                it = json.loads(it)
            if isinstance(it, dict):
                self.last = it

    def stats(self, ledger: RequestLedger) -> EngineStats:
        it = self.last
        kv = it.get("kvCacheStats") or {}
        ifb = it.get("inflightBatchingStats") or {}
        active = int(it.get("numActiveRequests", 0))
        blocks = None
        if "maxNumBlocks" in kv:
            blocks = KvBlocks(int(kv["maxNumBlocks"]), int(kv.get("usedNumBlocks", 0)),
                              int(kv.get("tokensPerBlock", 0)),
                              reused=int(kv["reusedBlocks"]) if "reusedBlocks" in kv else None)
        series: dict[tuple[str, str], float] = {}
        for key, value in (("cpuMemUsage", "cpu"), ("gpuMemUsage", "gpu"),
                           ("pinnedMemUsage", "pinned")):
            if key in it:
                series[RUNTIME_MEMORY, value] = float(it[key])
        for key, value in (("numCtxTokens", "total_context_tokens"),
                           ("microBatchId", "micro_batch_id"),
                           ("numPausedRequests", "paused_requests")):
            if key in ifb:
                series[INFLIGHT_BATCHER, value] = float(ifb[key])
        return EngineStats(
            active=active, waiting=0, requests_total=0,
            generated_tokens_total=ledger.generated_tokens_total, steps=int(it.get("iter", 0)),
            max_step_ms=0.0, kv_cache_usage=blocks.fraction if blocks else 0.0,
            pipeline_requests=active, scheduled=int(ifb.get("numScheduledRequests", 0)),
            context=int(ifb.get("numContextRequests", 0)),
            max_requests=int(it.get("maxNumActiveRequests", 0)),
            last_step_unix_s=_timestamp(it.get("timestamp")),
            prompt_tokens_total=ledger.prompt_tokens_total, kv_blocks=blocks,
            finished=ledger.take_finished(), series=series)


def _timestamp(value: Any) -> float:
    """TensorRT-LLM's iteration timestamp (``"%m-%d-%Y %H:%M:%S.%f"``, local time, the format
    the C++ backend parsed) as Unix seconds; 0.0 when absent or unreadable."""
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.strptime(value, "%m-%d-%Y %H:%M:%S.%f").timestamp()
    except ValueError:
        return 0.0


__all__ = ["SAMPLING_FIELDS", "IterationStats", "LLMAPIEngineFront", "sampling_kwargs"]
