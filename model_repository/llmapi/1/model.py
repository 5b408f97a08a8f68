"""``llmapi``: NVIDIA's llmapi ``tensorrt_llm`` contract in one decoupled Python model.

Inputs/outputs: tritonllm.contract.LLMAPI_CONTRACT (text_input, streaming, sampling_param_*,
return_*, stop → text_output, finish_reason, stop_reason, cumulative_logprob), unbatched as
NVIDIA's model. Every request runs on its own worker thread through the same preprocessing and
``tensorrt_llm`` models as the BLS model. Logic: tritonllm.ensembles.llmapi; the calls:
tritonllm.ensembles.bls_calls.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.ensembles.bls import BLSPipeline
from tritonllm.ensembles.bls_calls import UpstreamError, bls_callers
from tritonllm.ensembles.cancellation import CancellationPoller
from tritonllm.ensembles.llmapi import CANCELLED_MESSAGE, LLMAPIFront, Outcome
from tritonllm.ensembles.requests import RequestError
from tritonllm.ensembles.senders import TritonSink
from tritonllm.ensembles.tokenization import load_tokenizer, read_special_ids
from tritonllm.settings import LLMAPIParams


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = LLMAPIParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        if pb_utils.using_decoupled_model_transaction_policy(config) != p.streaming:
            raise pb_utils.TritonModelException(
                "llmapi: parameter 'streaming' disagrees with model_transaction_policy")
        tokenizer = load_tokenizer(p.tokenizer_dir)
        special = read_special_ids(p.tokenizer_dir, tokenizer)
        call_pre, call_llm = bls_callers(pb_utils, p.preprocessing_model_name,
                                         p.tensorrt_llm_model_name)
        self.cancellations = CancellationPoller(name="tritonllm-llmapi-cancel-poller")
        pipeline = BLSPipeline(tokenizer, call_pre, call_llm,
                               skip_special_tokens=p.skip_special_tokens,
                               cancellations=self.cancellations, max_words=p.max_words,
                               max_word_bytes=p.max_word_bytes)
        limits = LLMAPIFront.limits_for(len(tokenizer), special.end_id, special.pad_id,
                                        p.max_seq_len, max_words=p.max_words,
                                        max_word_bytes=p.max_word_bytes)
        self.front = LLMAPIFront(pipeline, limits, decoupled=p.streaming)

    def _serve(self, request: Any) -> None:
        sink = TritonSink(request.get_response_sender(), pb_utils)
        try:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            if self.front.run(inputs, sink, request.request_id()) is Outcome.CANCELLED:
                sink.fail(CANCELLED_MESSAGE, pb_utils.TritonError.CANCELLED)
        except RequestError as e:
            sink.fail(str(e), pb_utils.TritonError.INVALID_ARG)
        except UpstreamError as e:  # keeps the called model's code (e.g. UNAVAILABLE: queue full)
            sink.fail(self.front.client_message(str(e)), e.code)
        except Exception as e:  # report, never leave a request without its final response
            sink.fail(f"llmapi: {e}", pb_utils.TritonError.INTERNAL)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def finalize(self) -> None:
        self.cancellations.close()
