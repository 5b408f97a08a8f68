"""``tensorrt_llm`` on CPU: OpenVINO GenAI continuous batching behind Triton's Python backend.

Decoupled: each request gets zero or more streamed responses and exactly one final one.
Inputs/outputs: the official ``tensorrt_llm`` contract (tritonllm.contract.LLM_CONTRACT) plus
our ``finish_reason`` and ``context_length`` outputs. ``execute()`` only validates and enqueues;
one engine thread owns the pipeline and sends the responses (tritonllm.ensembles.llm_service).
A bad request gets an INVALID_ARG error naming the field; the others carry on.
The engine, the service and the custom metrics are library code (tritonllm.ensembles.llm_model,
tritonllm.ensembles.llm_metrics); this file holds only what needs ``pb_utils``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.ensembles.llm_metrics import LLMMetrics, TritonMetricFactory
from tritonllm.ensembles.llm_model import build_service
from tritonllm.ensembles.llm_service import QueueFull
from tritonllm.ensembles.requests import RequestError
from tritonllm.ensembles.senders import TritonSink
from tritonllm.ensembles.tokenization import load_tokenizer, read_special_ids
from tritonllm.metrics_catalog import REJECT_INVALID, REJECT_QUEUE_FULL
from tritonllm.settings import CpuLLMParams

METRICS_PERIOD_S = 0.25
METRICS_JOIN_S = 5.0  # finalize waits this long for the metrics thread


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = CpuLLMParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        if pb_utils.using_decoupled_model_transaction_policy(config) != p.streaming:
            raise pb_utils.TritonModelException(
                "tensorrt_llm: parameter 'streaming' disagrees with model_transaction_policy")
        tokenizer = load_tokenizer(p.engine_dir)
        self.service = build_service(p, tokenizer, read_special_ids(p.engine_dir, tokenizer))
        self.metrics = LLMMetrics(TritonMetricFactory(pb_utils, args["model_name"],
                                                        args["model_version"]))
        self.metrics.start(self.service, METRICS_PERIOD_S)

    def execute(self, requests: list[Any]) -> None:
        t0 = time.perf_counter()
        for request in requests:
            sink = TritonSink(request.get_response_sender(), pb_utils)
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            try:
                self.service.submit(inputs, sink, request.request_id())
            except RequestError as e:
                self.service.rejections.count(REJECT_INVALID)
                sink.fail(str(e), pb_utils.TritonError.INVALID_ARG)
            except QueueFull as e:
                self.service.rejections.count(REJECT_QUEUE_FULL)
                sink.fail(str(e), pb_utils.TritonError.UNAVAILABLE)
        self.metrics.executed((time.perf_counter() - t0) * 1000)
        return None

    def finalize(self) -> None:
        """Finish every request, stop the threads, and release what talks to tritonserver.

        The custom metrics must be deleted here, while the stub is whole: a pb_utils Metric or
        MetricFamily sends a delete message to tritonserver from its C++ destructor through
        ``Stub::GetOrCreateInstance()``. Left to the end of the stub's ``main``, they were
        destroyed inside ``stub.reset()`` (when the model object goes) or at interpreter
        exit, when that call creates a fresh Stub with no shared memory pool:
        ``Metric::SaveToSharedMemory`` then read a null pointer (segfault at 0x60, on every
        shutdown; python_backend r24.10 src/pb_stub.cc main(), src/metric.cc ~Metric).
        """
        stopped = self.metrics.stop(METRICS_JOIN_S)
        self.service.close()
        if not stopped:  # stuck in a round trip: leave its metrics be
            return
        self.metrics.close()
        del self.metrics
