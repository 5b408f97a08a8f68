"""``postprocessing``: token ids → text (not decoupled).

Inputs: TOKENS_BATCH [1, beams, n], SEQUENCE_LENGTH [1, beams], optional CONTEXT_LENGTH (ours: the
leading ids that are decoding context only) and REQUEST_KEY (ours: the LLM request's key).
Output: OUTPUT [beams] (UTF-8 strings, 1-D: no batch dimension, as NVIDIA's postprocessing sends
it). Streamed windows from the CPU LLM decode to deltas that add up to the non-streamed text.
Logic: tritonllm.ensembles.processing.Postprocessor.

Cancellation (CPU target). Triton 2.51's ensemble never cancels its running LLM step when the
client cancels (gRPC cancel, HTTP disconnect); it marks the step requests it schedules next as
cancelled, and that is this model's. So a request that is cancelled and carries REQUEST_KEY
makes this model send the LLM the contract's ``stop`` with the key as request id, once per key
(on a thread of its own: the response does not wait for it). The request itself is answered as
usual: an error from any step while the LLM step still streams leaves Triton 2.51's ensemble
request in flight forever (its ``PrepareSteps`` stops counting the LLM's responses once the
status is an error, so the in-flight step count never reaches zero), whereas this way the LLM's
final response, soon after the stop, ends the ensemble request cleanly. On the CPU target this
model has no dynamic batching, whose queue would drop such a request with CANCELLED before it got
here (and so leave the ensemble request in flight, as above).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.contract import FINISH_REASON, LLM, POST_REQUEST_KEY
from tritonllm.ensembles.cancellation import stop_request_inputs
from tritonllm.ensembles.processing import Postprocessor
from tritonllm.ensembles.tokenization import load_tokenizer
from tritonllm.ensembles.wire import first_string
from tritonllm.settings import PostprocessingParams

STOPPED_KEYS = 4096


def _stop_llm_request(key: str) -> None:
    stop = pb_utils.InferenceRequest(
        model_name=LLM, request_id=key,
        inputs=[pb_utils.Tensor(k, v) for k, v in stop_request_inputs().items()],
        requested_output_names=[FINISH_REASON])
    for response in stop.exec(decoupled=True):
        if response.has_error():
            pb_utils.Logger.log_warn(
                f"postprocessing: stopping LLM request {key}: {response.error().message()}")


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = PostprocessingParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        self.post = Postprocessor(load_tokenizer(p.tokenizer_dir), p.skip_special_tokens)
        self.stopped: OrderedDict[str, None] = OrderedDict()  # keys already stopped (recent)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            if POST_REQUEST_KEY in inputs and request.is_cancelled():
                key = first_string(inputs[POST_REQUEST_KEY])
                if key not in self.stopped:
                    self.stopped[key] = None
                    while len(self.stopped) > STOPPED_KEYS:
                        self.stopped.popitem(last=False)
                    threading.Thread(target=_stop_llm_request, args=(key,), daemon=True).start()
            try:
                outputs = self.post.run(inputs)
            except ValueError as e:
                err = pb_utils.TritonError(f"TOKENS_BATCH: {e}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=err))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        return responses
