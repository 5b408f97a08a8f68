"""``embedding_tokenizer`` on the GPU target: texts → token ids padded to the max length.

The first step of the ``embedding`` ensemble (tritonllm.contract.EMBEDDING_STEPS): input
``text`` STRING [rows, 1] (optional ``truncate``); outputs ``input_ids`` / ``attention_mask``
INT64 [rows, max_length] (a fixed width, so Triton batches the encoder's inputs) and
``num_tokens`` INT32 [rows, 1]. A bad request gets INVALID_ARG naming the field; the others
go on. Logic: tritonllm.ensembles.embedding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.contract import EMB_OUT, ONNX_ATTENTION_MASK, ONNX_INPUT_IDS
from tritonllm.ensembles.embedding import EmbeddingTokenizer, read_rows, token_counts
from tritonllm.ensembles.requests import RequestError, check_request_id
from tritonllm.settings import EmbeddingParams


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.p = EmbeddingParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        self.tokenizer = EmbeddingTokenizer(self.p.tokenizer_dir, self.p.max_length,
                                            self.p.pad_id)

    def execute(self, requests: list[Any]) -> list[Any]:

        responses = []
        width = self.p.max_length if self.p.pad_to_max_length else None
        for request in requests:
            try:
                check_request_id(request.request_id())
                rows = read_rows({t.name(): t.as_numpy() for t in request.inputs()},
                                 self.p.max_text_bytes)
                ids = self.tokenizer.ids(rows)
            except RequestError as e:
                err = pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=err))
                continue
            input_ids, mask = self.tokenizer.pad(ids, width)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(ONNX_INPUT_IDS, input_ids),
                pb_utils.Tensor(ONNX_ATTENTION_MASK, mask),
                pb_utils.Tensor(EMB_OUT.num_tokens, token_counts(ids))]))
        return responses
