"""``tensorrt_llm`` of the llmapi layout: NVIDIA's llmapi contract, on either target.

GPU (a ``model.yaml`` beside this file, as NVIDIA's llmapi model has): TensorRT-LLM's LLM API,
``tensorrt_llm.LLM(**model.yaml)`` on the PyTorch backend, one request per worker thread
(tritonllm.ensembles.llmapi_trtllm). Not run on a GPU yet.

CPU (no model.yaml; the engine in the ``engine_dir`` parameter):

Inputs/outputs: tritonllm.contract.LLMAPI_CONTRACT (text_input, streaming, sampling_param_*,
return_*, stop → text_output, finish_reason, stop_reason, cumulative_logprob, token counts),
unbatched as NVIDIA's model. Every request runs on its own worker thread: tokenizing, the
OpenVINO GenAI engine (one engine thread, in-flight batching), stop strings and detokenizing,
all in this process (tritonllm.ensembles.llmapi_local). The classic ``ensemble`` and
``tensorrt_llm_bls`` of the layout call this model, as they call NVIDIA's on a GPU.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.contract import LLMAPI_MODEL_YAML
from tritonllm.ensembles.llm_metrics import LLMMetrics, TritonMetricFactory
from tritonllm.ensembles.llm_model import build_service
from tritonllm.ensembles.llm_service import QueueFull
from tritonllm.ensembles.llmapi import CANCELLED_MESSAGE, Outcome
from tritonllm.ensembles.llmapi_local import local_front
from tritonllm.ensembles.processing import Preprocessor
from tritonllm.ensembles.requests import RequestError
from tritonllm.ensembles.senders import TritonSink
from tritonllm.ensembles.tokenization import Tokenization, load_tokenizer, read_special_ids
from tritonllm.metrics_catalog import GPU, REJECT_INVALID, REJECT_QUEUE_FULL
from tritonllm.settings import CpuLLMAPIParams, PreprocessingParams

METRICS_PERIOD_S = 0.25
METRICS_JOIN_S = 5.0  # finalize waits this long for the metrics thread


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        model_yaml = Path(__file__).with_name(LLMAPI_MODEL_YAML)
        if model_yaml.is_file():
            self._initialize_llm_api(config, model_yaml)
            self.metrics = LLMMetrics(TritonMetricFactory(pb_utils, args["model_name"],
                                                            args["model_version"]), GPU)
            self.metrics.start(self.front, METRICS_PERIOD_S)
            return
        p = CpuLLMAPIParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        if pb_utils.using_decoupled_model_transaction_policy(config) != p.streaming:
            raise pb_utils.TritonModelException(
                "tensorrt_llm: parameter 'streaming' disagrees with model_transaction_policy")
        tokenizer = load_tokenizer(p.engine_dir)
        special = read_special_ids(p.engine_dir, tokenizer)
        self.service = build_service(p, tokenizer, special)
        pre = Preprocessor(
            Tokenization(tokenizer, special, add_special_tokens=p.add_special_tokens), special,
            PreprocessingParams(
                tokenizer_dir=p.engine_dir, add_special_tokens=p.add_special_tokens,
                end_id=p.end_id, pad_id=p.pad_id, max_input_len=p.max_input_len,
                max_seq_len=p.max_seq_len, max_prompt_bytes=p.max_prompt_bytes,
                max_words=p.max_words, max_word_bytes=p.max_word_bytes))
        self.front, self.cancellations = local_front(
            pre, self.service, tokenizer, skip_special_tokens=p.skip_special_tokens,
            decoupled=p.streaming, max_words=p.max_words, max_word_bytes=p.max_word_bytes)
        self.source: Any = self.service
        self.metrics = LLMMetrics(TritonMetricFactory(pb_utils, args["model_name"],
                                                        args["model_version"]))
        self.metrics.start(self.service, METRICS_PERIOD_S)

    def _initialize_llm_api(self, config: dict[str, Any], model_yaml: Path) -> None:
        """GPU: the LLM API engine that model.yaml describes (TensorRT-LLM, PyTorch)."""
        from tensorrt_llm import LLM, SamplingParams  # the NGC image's TensorRT-LLM

        from tritonllm.ensembles.llmapi_trtllm import LLMAPIEngineFront
        from tritonllm.trtllm_release import load_model_yaml

        llm_args, triton = load_model_yaml(model_yaml)
        decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        if bool(triton.get("decoupled", False)) != decoupled:
            raise pb_utils.TritonModelException(
                "tensorrt_llm: model.yaml triton_config.decoupled disagrees with "
                "model_transaction_policy")
        # The request limits come from the checkpoint's own tokenizer files (the LLM API loads
        # the same ones), read as everywhere else in tritonllm.
        checkpoint = Path(str(llm_args["model"]))
        tokenizer = load_tokenizer(checkpoint)
        special = read_special_ids(checkpoint, tokenizer)
        limits = LLMAPIEngineFront.limits_for(
            len(tokenizer), special.end_id, special.pad_id, llm_args.get("max_seq_len"))
        llm = LLM(**llm_args)  # single node; tensor/pipeline ranks are the LLM API's workers
        period = float(triton.get("cancellation_check_period_ms", 100)) / 1000
        self.front = LLMAPIEngineFront(llm, SamplingParams, limits, decoupled=decoupled,
                                       cancel_check_s=period)
        self.llm = llm
        self.source = self.front
        self.service = None
        self.cancellations = None

    def _serve(self, request: Any) -> None:
        sink = TritonSink(request.get_response_sender(), pb_utils)
        try:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            if self.front.run(inputs, sink, request.request_id()) is Outcome.CANCELLED:
                sink.fail(CANCELLED_MESSAGE, pb_utils.TritonError.CANCELLED)
        except RequestError as e:
            self.source.rejections.count(REJECT_INVALID)
            sink.fail(str(e), pb_utils.TritonError.INVALID_ARG)
        except QueueFull as e:
            self.source.rejections.count(REJECT_QUEUE_FULL)
            sink.fail(str(e), pb_utils.TritonError.UNAVAILABLE)
        except Exception as e:  # report, never leave a request without its final response
            sink.fail(f"tensorrt_llm: {e}", pb_utils.TritonError.INTERNAL)

    def execute(self, requests: list[Any]) -> None:
        t0 = time.perf_counter()
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        self.metrics.executed((time.perf_counter() - t0) * 1000)
        return None

    def finalize(self) -> None:
        """As the classic model's: stop the metrics thread, finish every request, and delete
        the custom metrics while the stub is whole (see model_repository/tensorrt_llm)."""
        stopped = self.metrics.stop(METRICS_JOIN_S)
        if self.service is None:  # GPU: the LLM API engine
            self.llm.shutdown()
            if stopped:
                self.metrics.close()
            return
        self.cancellations.close()
        self.service.close()
        if not stopped:
            return
        self.metrics.close()
        del self.metrics
