"""``tensorrt_llm_bls``: the ensemble's contract in one decoupled Python model (BLS).

Inputs/outputs: tritonllm.contract.BLS_CONTRACT (text_input, max_tokens, stream, stop_words, …
→ text_output, finish_reason). Decoupled: every request runs on its own worker thread, so
requests are served concurrently; it calls ``preprocessing`` and then ``tensorrt_llm``
(streamed), detokenizes incrementally, matches stop strings on text and cancels the LLM
request on a stop string or a client cancel. Inputs no target honours, and stop/bad words over
the size bounds, get an INVALID_ARG error naming the input before any model is called; inputs
only some targets honour go on to ``tensorrt_llm``, whose refusal (naming the input) is relayed
with its code. Logic: tritonllm.ensembles.bls.

Cancelling the LLM request: Triton 2.51's BLS response iterator has no ``cancel()``, so the
model sends the LLM the contract's ``stop`` request with the LLM request's id (what
tensorrtllm_backend documents for stopping a request); where the iterator can cancel, it does.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.contract import FINISH_REASON
from tritonllm.ensembles.bls import PRE_TO_LLM, BLSPipeline
from tritonllm.ensembles.cancellation import CancellationPoller, stop_request_inputs
from tritonllm.ensembles.requests import RequestError
from tritonllm.ensembles.senders import TritonSink
from tritonllm.ensembles.tokenization import load_tokenizer
from tritonllm.settings import BLSParams


class _Upstream(Exception):
    """A called model refused the request; its message already names the field."""

    def __init__(self, error: Any) -> None:
        super().__init__(error.message())
        code = error.code() if hasattr(error, "code") else None
        self.code = pb_utils.TritonError.INVALID_ARG if code is None else code


def _outputs(response: Any) -> dict[str, Any]:
    if response.has_error():
        raise _Upstream(response.error())
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


class _LLMStream:
    def __init__(self, responses: Any, model: str, request_id: str) -> None:
        self._responses = responses
        self._model = model
        self._request_id = request_id

    def __iter__(self) -> Any:
        for response in self._responses:
            if response.has_error():
                raise _Upstream(response.error())
            if response.output_tensors():
                yield _outputs(response)

    def cancel(self) -> None:
        if hasattr(self._responses, "cancel"):
            self._responses.cancel()
            return
        stop = pb_utils.InferenceRequest(
            model_name=self._model, request_id=self._request_id,
            inputs=[pb_utils.Tensor(k, v) for k, v in stop_request_inputs().items()],
            requested_output_names=[FINISH_REASON])
        for response in stop.exec(decoupled=True):
            if response.has_error():
                raise _Upstream(response.error())


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = BLSParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        self.p = p

        def call_pre(inputs: dict[str, Any]) -> dict[str, Any]:
            request = pb_utils.InferenceRequest(
                model_name=p.preprocessing_model_name, inputs=[
                    pb_utils.Tensor(k, v) for k, v in inputs.items()],
                requested_output_names=list(PRE_TO_LLM))
            return _outputs(request.exec())

        def call_llm(inputs: dict[str, Any], outputs: list[str]) -> _LLMStream:
            request_id = f"bls-{uuid.uuid4().hex}"  # unique: a stop must hit this one only
            request = pb_utils.InferenceRequest(
                model_name=p.tensorrt_llm_model_name, request_id=request_id,
                inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()],
                requested_output_names=outputs)
            return _LLMStream(request.exec(decoupled=True), p.tensorrt_llm_model_name,
                              request_id)

        self.cancellations = CancellationPoller(name="tritonllm-bls-cancel-poller")
        self.pipeline = BLSPipeline(load_tokenizer(p.tokenizer_dir), call_pre, call_llm,
                                    skip_special_tokens=p.skip_special_tokens,
                                    accumulate_tokens=p.accumulate_tokens,
                                    cancellations=self.cancellations, max_words=p.max_words,
                                    max_word_bytes=p.max_word_bytes)

    def _serve(self, request: Any) -> None:
        sink = TritonSink(request.get_response_sender(), pb_utils)
        try:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            self.pipeline.run(inputs, sink, request.request_id())
        except RequestError as e:
            sink.fail(str(e), pb_utils.TritonError.INVALID_ARG)
        except _Upstream as e:  # keeps the called model's code (e.g. UNAVAILABLE: queue full)
            sink.fail(str(e), e.code)
        except Exception as e:  # report, never leave a request without its final response
            sink.fail(f"tensorrt_llm_bls: {e}", pb_utils.TritonError.INTERNAL)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def finalize(self) -> None:
        self.cancellations.close()
