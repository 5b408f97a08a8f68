"""The BLS calls of our Python models: preprocessing once, ``tensorrt_llm`` streamed.

Both the ``tensorrt_llm_bls`` and the ``llmapi`` models drive
:class:`~tritonllm.ensembles.bls.BLSPipeline` with these. ``pb_utils`` is the stub's
``triton_python_backend_utils`` module, passed in because it exists only inside a stub.

Cancelling the LLM request: Triton 2.51's BLS response iterator has no ``cancel()``, so
:class:`LLMStream` sends the LLM the contract's ``stop`` request with the LLM request's id (what
tensorrtllm_backend documents for stopping a request); where the iterator can cancel, it does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import FINISH_REASON, LLMAPI_IN
from tritonllm.ensembles.bls import PRE_TO_LLM
from tritonllm.ensembles.cancellation import stop_request_inputs
from tritonllm.errors import TritonLLMError

Outputs = dict[str, npt.NDArray[Any]]


class UpstreamError(TritonLLMError):
    """A model called over BLS refused the request; ``code`` is its Triton error code (the
    message already names the field)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _raise(pb_utils: Any, error: Any) -> None:
    code = error.code() if hasattr(error, "code") else None
    raise UpstreamError(error.message(),
                        pb_utils.TritonError.INVALID_ARG if code is None else code)


def _outputs(pb_utils: Any, response: Any) -> Outputs:
    if response.has_error():
        _raise(pb_utils, response.error())
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


class LLMStream:
    """The LLM model's responses to one BLS request, as output dicts; ``cancel()`` ends it."""

    def __init__(self, pb_utils: Any, responses: Any, model: str, request_id: str,
                 stop_inputs: Callable[[], Outputs] = stop_request_inputs) -> None:
        self._pb = pb_utils
        self._responses = responses
        self._model = model
        self._request_id = request_id
        self._stop_inputs = stop_inputs

    def __iter__(self) -> Iterator[Outputs]:
        for response in self._responses:
            if response.has_error():
                _raise(self._pb, response.error())
            if response.output_tensors():
                yield _outputs(self._pb, response)

    def cancel(self) -> None:
        if hasattr(self._responses, "cancel"):
            self._responses.cancel()
            return
        stop = self._pb.InferenceRequest(
            model_name=self._model, request_id=self._request_id,
            inputs=[self._pb.Tensor(k, v) for k, v in self._stop_inputs().items()],
            requested_output_names=[FINISH_REASON])  # both LLM contracts declare it
        for response in stop.exec(decoupled=True):
            # An llmapi model answers a stop with CANCELLED, as NVIDIA's does: it worked.
            if response.has_error() and response.error().code() != self._pb.TritonError.CANCELLED:
                _raise(self._pb, response.error())


def bls_callers(pb_utils: Any, preprocessing: str, llm: str
                ) -> tuple[Callable[[Outputs], Outputs], Callable[[Outputs, list[str]], LLMStream]]:
    """``(call_pre, call_llm)`` for :class:`~tritonllm.ensembles.bls.BLSPipeline`, calling the
    models named ``preprocessing`` and ``llm``."""

    def call_pre(inputs: Outputs) -> Outputs:
        request = pb_utils.InferenceRequest(
            model_name=preprocessing, inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()],
            requested_output_names=list(PRE_TO_LLM))
        return _outputs(pb_utils, request.exec())

    def call_llm(inputs: Outputs, outputs: list[str]) -> LLMStream:
        request_id = f"bls-{uuid.uuid4().hex}"  # unique: a stop must hit this one only
        request = pb_utils.InferenceRequest(
            model_name=llm, request_id=request_id,
            inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()],
            requested_output_names=outputs)
        return LLMStream(pb_utils, request.exec(decoupled=True), llm, request_id)

    return call_pre, call_llm


def llmapi_stop_inputs() -> Outputs:
    """A llmapi ``stop`` request: ``stop`` true (``text_input`` is required, so an empty one)."""
    return {LLMAPI_IN.text_input: np.array([b""], dtype=np.object_),
            LLMAPI_IN.stop: np.array([True])}


def llmapi_caller(pb_utils: Any, llm: str) -> Callable[[Outputs, list[str]], LLMStream]:
    """``call_llm`` for :class:`~tritonllm.ensembles.classic_front.ClassicFront`: a streamed
    request to the llmapi model named ``llm``, stopped with a llmapi ``stop`` request."""

    def call_llm(inputs: Outputs, outputs: list[str]) -> LLMStream:
        request_id = f"front-{uuid.uuid4().hex}"  # unique: a stop must hit this one only
        request = pb_utils.InferenceRequest(
            model_name=llm, request_id=request_id,
            inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()],
            requested_output_names=outputs)
        return LLMStream(pb_utils, request.exec(decoupled=True), llm, request_id,
                         llmapi_stop_inputs)

    return call_llm


__all__ = ["LLMStream", "UpstreamError", "bls_callers", "llmapi_caller", "llmapi_stop_inputs"]
