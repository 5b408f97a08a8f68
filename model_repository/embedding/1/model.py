"""``embedding`` on the CPU target: texts → sentence vectors (dynamically batched).

Input: ``text`` STRING [rows, 1] (optional ``truncate`` BOOL); outputs: ``embedding`` FP32
[rows, dim], ``num_tokens`` INT32 [rows, 1] (tritonllm.contract.EMBEDDING_CONTRACT). Every
request of a batch is validated on its own (a bad one gets INVALID_ARG naming the field, the
others are computed); the valid texts of the whole batch go through the ONNX encoder together,
in calls of similar lengths. Logic: tritonllm.ensembles.embedding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonllm.builders.onnx import ONNX_FILE
from tritonllm.ensembles.embedding import (
    EmbeddingEncoder,
    EmbeddingTokenizer,
    embedding_outputs,
    encode,
    read_rows,
)
from tritonllm.ensembles.requests import RequestError, check_request_id
from tritonllm.settings import EmbeddingParams


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = EmbeddingParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        if p.engine_dir is None:
            raise pb_utils.TritonModelException("embedding: parameter 'engine_dir' is required")
        self.p = p
        self.tokenizer = EmbeddingTokenizer(p.tokenizer_dir, p.max_length, p.pad_id)
        self.encoder = EmbeddingEncoder(p.engine_dir / ONNX_FILE, p.num_threads or 0)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        ids: list[list[int]] = []
        owners: list[tuple[int, int, int]] = []  # (request, first row in ids, rows)
        for n, request in enumerate(requests):
            try:
                check_request_id(request.request_id())
                rows = read_rows({t.name(): t.as_numpy() for t in request.inputs()},
                                 self.p.max_text_bytes)
                mine = self.tokenizer.ids(rows)
            except RequestError as e:
                err = pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)
                responses[n] = pb_utils.InferenceResponse(error=err)
                continue
            owners.append((n, len(ids), len(mine)))
            ids += mine
        if ids:
            vectors = encode(self.tokenizer, self.encoder, ids)
            for n, first, count in owners:
                outputs = embedding_outputs(vectors[first:first + count],
                                            ids[first:first + count])
                responses[n] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in outputs.items()])
        return responses
