"""``tensorrt_llm_bls``: the ensemble's contract in one decoupled Python model (BLS).

Inputs/outputs: tritonllm.contract.BLS_CONTRACT (text_input, max_tokens, stream, stop_words, …
→ text_output, finish_reason). Decoupled: every request runs on its own worker thread, so
requests are served concurrently; it calls ``preprocessing`` and then ``tensorrt_llm``
(streamed), detokenizes incrementally, matches stop strings on text and cancels the LLM
request on a stop string or a client cancel. Inputs no target honours, and stop/bad words over
the size bounds, get an INVALID_ARG error naming the input before any model is called; inputs
only some targets honour go on to ``tensorrt_llm``, whose refusal (naming the input) is relayed
with its code. Logic: tritonllm.ensembles.bls.

The calls and their cancel: tritonllm.ensembles.bls_calls.

In the llmapi layout (parameter ``llm_contract: llmapi``) this code serves the ``ensemble`` and
``tensorrt_llm_bls`` models as classic fronts over the llmapi ``tensorrt_llm``
(tritonllm.ensembles.classic_front).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.contract import LLMAPI
from tritonllm.ensembles.bls import BLSPipeline
from tritonllm.ensembles.bls_calls import UpstreamError, bls_callers, llmapi_caller
from tritonllm.ensembles.cancellation import CancellationPoller
from tritonllm.ensembles.classic_front import ClassicFront, classic_message
from tritonllm.ensembles.requests import RequestError, RequestLimits
from tritonllm.ensembles.senders import TritonSink
from tritonllm.ensembles.tokenization import load_tokenizer, read_special_ids
from tritonllm.settings import BLSParams


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = BLSParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        self.p = p
        self.name = args["model_name"]
        self.cancellations = CancellationPoller(name="tritonllm-bls-cancel-poller")
        tokenizer = load_tokenizer(p.tokenizer_dir)
        self.pipeline: BLSPipeline | ClassicFront
        if p.llm_contract == LLMAPI:  # the llmapi layout: a classic front over llmapi
            special = read_special_ids(p.tokenizer_dir, tokenizer)
            limits = RequestLimits.for_engine(
                p.max_seq_len, p.max_seq_len, len(tokenizer), special.end_id, special.pad_id,
                max_words=p.max_words, max_word_bytes=p.max_word_bytes)
            self.pipeline = ClassicFront(
                self.name, llmapi_caller(pb_utils, p.tensorrt_llm_model_name), limits,
                decoupled=p.streaming, accumulate_tokens=p.accumulate_tokens,
                cancellations=self.cancellations)
            self.rename = classic_message
            return
        call_pre, call_llm = bls_callers(pb_utils, p.preprocessing_model_name,
                                         p.tensorrt_llm_model_name)
        self.pipeline = BLSPipeline(tokenizer, call_pre, call_llm,
                                    skip_special_tokens=p.skip_special_tokens,
                                    accumulate_tokens=p.accumulate_tokens,
                                    cancellations=self.cancellations, max_words=p.max_words,
                                    max_word_bytes=p.max_word_bytes)
        self.rename = str

    def _serve(self, request: Any) -> None:
        sink = TritonSink(request.get_response_sender(), pb_utils)
        try:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            self.pipeline.run(inputs, sink, request.request_id())
        except RequestError as e:
            sink.fail(str(e), pb_utils.TritonError.INVALID_ARG)
        except UpstreamError as e:  # keeps the called model's code (e.g. UNAVAILABLE: queue full)
            sink.fail(self.rename(str(e)), e.code)
        except Exception as e:  # report, never leave a request without its final response
            sink.fail(f"{self.name}: {e}", pb_utils.TritonError.INTERNAL)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def finalize(self) -> None:
        self.cancellations.close()
