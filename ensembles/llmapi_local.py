"""The llmapi layout's CPU ``tensorrt_llm``: NVIDIA's llmapi contract served on the engine itself.

In the llmapi layout (see :data:`tritonllm.contract.LAYOUTS`) the model named ``tensorrt_llm``
speaks the llmapi contract, as NVIDIA's current model does on a GPU, and the classic
``ensemble`` / ``tensorrt_llm_bls`` are fronts that call it. On CPU this model runs the same
:class:`~tritonllm.ensembles.llmapi.LLMAPIFront` as the classic layout's ``llmapi`` model, but
its two calls stay in this process instead of going over BLS: tokenizing is a
:class:`~tritonllm.ensembles.processing.Preprocessor` and the engine is an
:class:`~tritonllm.ensembles.llm_service.LLMService` (OpenVINO GenAI in production). Requests,
limits and errors are therefore exactly those of the classic models.
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy.typing as npt

from tritonllm.ensembles.bls import BLSPipeline
from tritonllm.ensembles.cancellation import CancellationPoller
from tritonllm.ensembles.llm_service import LLMService
from tritonllm.ensembles.llmapi import LLMAPIFront
from tritonllm.ensembles.processing import Preprocessor
from tritonllm.ensembles.requests import UNBOUNDED
from tritonllm.errors import TritonLLMError

Outputs = dict[str, npt.NDArray[Any]]
_END = object()


class EngineFailed(TritonLLMError):
    """The engine ended a request with an error after accepting it."""


class _QueueSink:
    """The ResponseSink the service writes one request's responses to; read by LocalStream."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue[tuple[Outputs | str, bool]] = queue.SimpleQueue()

    def send(self, outputs: Outputs, final: bool) -> None:
        self.items.put((outputs, final))

    def error(self, message: str, final: bool = True) -> None:
        self.items.put((message, final))

    def is_cancelled(self) -> bool:  # the front notices its client's cancel and calls cancel()
        return False


class LocalStream:
    """One engine request's responses as output dicts (the BLS pipeline's ``LLMStream``)."""

    def __init__(self, service: LLMService, inputs: Outputs) -> None:
        self._service = service
        self._request_id = f"local-{uuid.uuid4().hex}"  # unique: a stop must hit this one only
        self._sink = _QueueSink()
        service.submit(inputs, self._sink, self._request_id)  # RequestError, QueueFull

    def __iter__(self) -> Iterator[Outputs]:
        while True:
            item, final = self._sink.items.get()
            if isinstance(item, str):
                if final:
                    raise EngineFailed(item)
                continue
            yield item
            if final:
                return

    def cancel(self) -> None:
        self._service.stop(self._request_id)


def local_callers(pre: Preprocessor, service: LLMService
                  ) -> tuple[Callable[[Outputs], Outputs], Callable[[Outputs, list[str]],
                                                                   LocalStream]]:
    """``(call_pre, call_llm)`` for a :class:`~tritonllm.ensembles.bls.BLSPipeline` that runs
    preprocessing and the engine in this process."""

    def call_llm(inputs: Outputs, _outputs: list[str]) -> LocalStream:
        # The service sends what each request asks for (its return_* flags), so the list of
        # wanted outputs, needed over BLS, has nothing to add here.
        return LocalStream(service, inputs)

    return pre.run, call_llm


def local_front(pre: Preprocessor, service: LLMService, tokenizer: Any, *,
                skip_special_tokens: bool, decoupled: bool, max_words: int,
                max_word_bytes: int) -> tuple[LLMAPIFront, CancellationPoller]:
    """The llmapi front over this process's preprocessing and engine, and the poller that
    notices cancelled requests waiting for a slot (close it at finalize)."""
    call_pre, call_llm = local_callers(pre, service)
    poller = CancellationPoller(name="tritonllm-llmapi-local-cancel-poller")
    pipeline = BLSPipeline(tokenizer, call_pre, call_llm, skip_special_tokens=skip_special_tokens,
                           cancellations=poller, max_words=max_words,
                           max_word_bytes=max_word_bytes)
    limits = pre.limits
    max_seq_len = limits.max_seq_len if limits.max_seq_len < UNBOUNDED else None
    front_limits = LLMAPIFront.limits_for(
        limits.vocab_size, limits.end_id, limits.pad_id, max_seq_len,
        max_words=max_words, max_word_bytes=max_word_bytes)
    return LLMAPIFront(pipeline, front_limits, decoupled=decoupled), poller


__all__ = ["EngineFailed", "LocalStream", "local_callers", "local_front"]
