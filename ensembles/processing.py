"""The logic of the ``preprocessing`` and ``postprocessing`` models, one request at a time.

``Preprocessor.run(inputs)`` takes one request's preprocessing tensors (``QUERY``,
``REQUEST_OUTPUT_LEN``, ``STOP_WORDS_DICT``, ``BAD_WORDS_DICT``, ``END_ID``, ``PAD_ID``; each
``[1, ...]``) and returns its output tensors (``INPUT_ID`` ``[1, n]``, ``REQUEST_INPUT_LEN``,
``REQUEST_OUTPUT_LEN``, ``STOP_WORDS_IDS`` / ``BAD_WORDS_IDS`` ``[1, 2, m]``, ``OUT_END_ID``,
``OUT_PAD_ID``). Every bad value raises RequestError naming the field by the name the client
sent (``text_input``, ``max_tokens``, …), so the error reads the same through the ensemble.
Sizes are checked before any tokenizing: a prompt of more UTF-8 bytes than ``max_input_len``
tokens can stand for (:attr:`Preprocessor.max_prompt_bytes`) and more or longer stop/bad words
than the limits allow are refused from their byte counts (see ``docs/serving.md``, "Request
limits"). Inputs no target honours (:func:`tritonllm.contract.unsupported_inputs`) are refused.

``Postprocessor.run(inputs)`` turns ``TOKENS_BATCH`` ``[batch, beams, n]`` + ``SEQUENCE_LENGTH``
``[batch, beams]`` into ``OUTPUT`` ``[batch * beams]``: 1-D, no batch dimension, as NVIDIA's
postprocessing sends it (see "Shapes on the wire" in :mod:`tritonllm.contract`). With our
optional ``CONTEXT_LENGTH`` (sent by the CPU LLM while streaming) the first ids are decoding
context only and just the new text is returned; see tritonllm.ensembles.llm_service for why
the deltas then add up exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import (
    POST_CONTEXT_LENGTH,
    POST_IN,
    POST_OUT,
    POSTPROCESSING,
    PRE_IN,
    PRE_OUT,
    PREPROCESSING,
    client_names,
    unsupported_inputs,
)
from tritonllm.ensembles import wire
from tritonllm.ensembles.detokenize import decode
from tritonllm.ensembles.requests import (
    RequestError,
    RequestLimits,
    parse_request,
    refuse_unsupported,
)
from tritonllm.ensembles.tokenization import SpecialIds, Tokenization, pack_word_list
from tritonllm.settings import PreprocessingParams

log = logging.getLogger(__name__)

Arrays = Mapping[str, npt.NDArray[Any]]
#: Bytes per token of the prompt bound when the tokenizer gives none (see
#: tritonllm.ensembles.tokenization.max_token_bytes); set max_prompt_bytes to change it.
FALLBACK_BYTES_PER_TOKEN = 64

# preprocessing tensor → the ensemble input a client sets for it
CLIENT_NAMES = client_names(PREPROCESSING)
UNSUPPORTED = unsupported_inputs(PREPROCESSING)


def _err(tensor: str, message: str) -> RequestError:
    return RequestError(CLIENT_NAMES.get(tensor, tensor), message)


def _present(inputs: Arrays, name: str) -> bool:
    return name in inputs and np.asarray(inputs[name]).size > 0


class Preprocessor:
    """Text → ids for one request; see the module docstring.

    The request's tensors are read by :func:`tritonllm.ensembles.requests.parse_request`.
    Without an ``END_ID`` from the client the end id is the tokenizer's first EOS id and the
    others (Llama 3 has several) go out as one-token stop words, so every engine stops on all
    of them, TensorRT-LLM (one end id per request) included.
    """

    def __init__(self, tokenization: Tokenization, special: SpecialIds,
                 params: PreprocessingParams) -> None:
        self.tok = tokenization
        self.vocab = tokenization.vocab_size
        end_id = params.end_id if params.end_id is not None else special.end_id
        pad_id = params.pad_id if params.pad_id is not None else special.pad_id
        # A configured end_id replaces the tokenizer's EOS ids rather than adding to them.
        extra_end_ids = () if params.end_id is not None else tuple(
            i for i in special.end_ids if i != end_id)
        max_input_len = params.max_input_len or params.max_seq_len
        max_bytes, why = params.max_prompt_bytes, ""
        if max_bytes is None and max_input_len:
            per_token = tokenization.max_token_bytes
            if per_token is None:
                log.warning("preprocessing: the tokenizer can delete text while normalizing, so "
                            "no prompt byte bound follows from it; using %d bytes per token "
                            "(set max_prompt_bytes to change it)", FALLBACK_BYTES_PER_TOKEN)
                per_token = FALLBACK_BYTES_PER_TOKEN
            max_bytes = max_input_len * per_token
            why = (f"{max_bytes}, the most that max_input_len ({max_input_len}) tokens can stand "
                   f"for at {per_token} bytes per token (set max_prompt_bytes to change it)")
        #: The longest prompt in UTF-8 bytes (None: not bounded); see the module docstring.
        self.max_prompt_bytes = max_bytes
        self.limits = RequestLimits.for_engine(
            max_input_len, params.max_seq_len, self.vocab, end_id, pad_id,
            max_prompt_bytes=max_bytes, prompt_bytes_why=why, max_words=params.max_words,
            max_word_bytes=params.max_word_bytes, extra_end_ids=extra_end_ids)

    def run(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        refuse_unsupported(inputs, UNSUPPORTED, lambda name: CLIENT_NAMES.get(name, name))
        try:
            req = parse_request(inputs, self.limits, model="preprocessing",
                                encode=self.tok.encode)
        except RequestError as e:
            raise _err(e.field, e.message) from None
        ids = list(req.prompt_ids or ())  # encode= was given: always set
        stop = [self.tok.encode_words(req.stop_words)]
        if PRE_IN.END_ID not in req.sources.values():
            stop[0] = [*stop[0], *([i] for i in self.limits.extra_end_ids)]
        return {
            PRE_OUT.INPUT_ID: np.asarray([ids], dtype=np.int32),
            PRE_OUT.REQUEST_INPUT_LEN: np.asarray([[len(ids)]], dtype=np.int32),
            PRE_OUT.REQUEST_OUTPUT_LEN: np.asarray([[req.max_tokens]], dtype=np.int32),
            PRE_OUT.STOP_WORDS_IDS: pack_word_list(stop),
            PRE_OUT.BAD_WORDS_IDS: self.tok.word_list_layout([req.bad_words]),
            PRE_OUT.OUT_END_ID: np.asarray([[req.end_id]], np.int32),
            PRE_OUT.OUT_PAD_ID: np.asarray([[req.pad_id]], np.int32),
        }


class Postprocessor:
    """Ids → text for one request; see the module docstring."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens

    def text(self, ids: list[int], context: int = 0) -> str:
        full = decode(self.tokenizer, ids, skip_special_tokens=self.skip)
        if context <= 0:
            return full
        before = decode(self.tokenizer, ids[:context], skip_special_tokens=self.skip)
        return full[len(before):]

    def run(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        tokens = np.asarray(inputs[POST_IN.TOKENS_BATCH])
        lengths = np.asarray(inputs[POST_IN.SEQUENCE_LENGTH])
        if tokens.ndim == 2:  # [beams, n] without the batch dim
            tokens = tokens[None]
        lengths = lengths.reshape(tokens.shape[:2])
        context = None
        if _present(inputs, POST_CONTEXT_LENGTH):
            context = np.asarray(inputs[POST_CONTEXT_LENGTH]).reshape(-1)
        out = []
        for beams, beam_lengths in zip(tokens, lengths, strict=True):
            for b, (beam, n) in enumerate(zip(beams, beam_lengths, strict=True)):
                ctx = int(context[min(b, len(context) - 1)]) if context is not None else 0
                out.append(self.text([int(t) for t in beam[: int(n)]], ctx))
        return {POST_OUT.OUTPUT: wire.strings(POSTPROCESSING, POST_OUT.OUTPUT, out)}
