"""``postprocessing``: token ids → text (not decoupled, dynamically batched).

Inputs: TOKENS_BATCH [1, beams, n], SEQUENCE_LENGTH [1, beams], optional CONTEXT_LENGTH (ours: the
leading ids that are decoding context only). Output: OUTPUT [beams] (UTF-8 strings, 1-D: no batch
dimension, as NVIDIA's postprocessing sends it).
Streamed windows from the CPU LLM decode to deltas that add up to the non-streamed text.
Logic: tritonllm.ensembles.processing.Postprocessor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.ensembles.processing import Postprocessor
from tritonllm.ensembles.tokenization import load_tokenizer
from tritonllm.settings import PostprocessingParams


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = PostprocessingParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        self.post = Postprocessor(load_tokenizer(p.tokenizer_dir), p.skip_special_tokens)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            try:
                outputs = self.post.run(inputs)
            except ValueError as e:
                err = pb_utils.TritonError(f"TOKENS_BATCH: {e}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=err))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        return responses
