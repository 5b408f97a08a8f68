"""``preprocessing``: text → token ids (not decoupled, dynamically batched).

Inputs: QUERY, REQUEST_OUTPUT_LEN, optional STOP_WORDS_DICT, BAD_WORDS_DICT, END_ID, PAD_ID.
Outputs: INPUT_ID, REQUEST_INPUT_LEN, REQUEST_OUTPUT_LEN, STOP_WORDS_IDS, BAD_WORDS_IDS
([2,-1] ids + offsets), OUT_END_ID, OUT_PAD_ID (tritonllm.contract.PREPROCESSING_CONTRACT).
Each request of a batch is processed on its own: a bad one (an input no target honours, a
prompt or stop/bad words over the size bounds, checked before tokenizing) gets an INVALID_ARG
error naming the field (as the client called it) and the others go on.
Logic: tritonllm.ensembles.processing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonllm.ensembles.processing import Preprocessor
from tritonllm.ensembles.requests import RequestError
from tritonllm.ensembles.tokenization import Tokenization, read_special_ids
from tritonllm.settings import PreprocessingParams


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        p = PreprocessingParams.from_triton_parameters(
            config.get("parameters"), model_dir=Path(args["model_repository"]))
        tok = Tokenization.from_dir(p.tokenizer_dir, add_special_tokens=p.add_special_tokens)
        self.pre = Preprocessor(tok, read_special_ids(p.tokenizer_dir, tok.tokenizer), p)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            try:
                outputs = self.pre.run(inputs)
            except RequestError as e:
                err = pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=err))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        return responses
