"""The logic of the ``preprocessing`` and ``postprocessing`` models, one request at a time.

``Preprocessor.run(inputs)`` takes one request's preprocessing tensors (``QUERY``,
``REQUEST_OUTPUT_LEN``, ``STOP_WORDS_DICT``, ``BAD_WORDS_DICT``, ``END_ID``, ``PAD_ID``; each
``[1, ...]``) and returns its output tensors (``INPUT_ID`` ``[1, n]``, ``REQUEST_INPUT_LEN``,
``REQUEST_OUTPUT_LEN``, ``STOP_WORDS_IDS`` / ``BAD_WORDS_IDS`` ``[1, 2, m]``, ``OUT_END_ID``,
``OUT_PAD_ID``). Every bad value raises RequestError naming the field by the name the client
sent (``text_input``, ``max_tokens``, …), so the error reads the same through the ensemble.

``Postprocessor.run(inputs)`` turns ``TOKENS_BATCH`` ``[1, beams, n]`` + ``SEQUENCE_LENGTH``
``[1, beams]`` into ``OUTPUT`` ``[1, beams]``. With our optional ``CONTEXT_LENGTH`` (sent by the
CPU LLM while streaming) the first ids are decoding context only and just the new text is
returned; see tritonllm.ensembles.llm_service for why the deltas then add up exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.ensembles.detokenize import decode
from tritonllm.ensembles.requests import RequestError
from tritonllm.ensembles.tokenization import SpecialIds, Tokenization

Arrays = Mapping[str, npt.NDArray[Any]]
MAX_TOKENS_CAP = 1 << 20

# preprocessing tensor → the ensemble input a client sets
CLIENT_NAMES = {
    "QUERY": "text_input",
    "DECODER_QUERY": "decoder_text_input",
    "REQUEST_OUTPUT_LEN": "max_tokens",
    "STOP_WORDS_DICT": "stop_words",
    "BAD_WORDS_DICT": "bad_words",
    "END_ID": "end_id",
    "PAD_ID": "pad_id",
    "EMBEDDING_BIAS_WORDS": "embedding_bias_words",
    "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights",
    "PROMPT_TABLE_EXTRA_ID": "prompt_table_extra_id",
}
UNSUPPORTED = ("DECODER_QUERY", "EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS",
               "PROMPT_TABLE_EXTRA_ID")


def _err(tensor: str, message: str) -> RequestError:
    return RequestError(CLIENT_NAMES.get(tensor, tensor), message)


def _present(inputs: Arrays, name: str) -> bool:
    return name in inputs and np.asarray(inputs[name]).size > 0


def _one_int(inputs: Arrays, name: str) -> int | None:
    if not _present(inputs, name):
        return None
    arr = np.asarray(inputs[name])
    if arr.size != 1:
        raise _err(name, f"expected one value, got shape {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise _err(name, f"expected an integer, got {arr.dtype}")
    return int(arr.reshape(-1)[0])


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, (bytes, np.bytes_)):
        raise _err(name, f"expected a string, got {type(value).__name__}")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _err(name, f"is not valid UTF-8 (byte 0x{value[e.start]:02x} at offset {e.start})"
                   ) from None


def _words(inputs: Arrays, name: str) -> list[str]:
    if not _present(inputs, name):
        return []
    arr = np.asarray(inputs[name])
    if arr.dtype != np.object_:
        raise _err(name, f"expected a list of strings, got {arr.dtype}")
    return [w for w in (_text(v, name) for v in arr.reshape(-1)) if w]


@dataclass(frozen=True)
class Limits:
    max_input_len: int | None = None
    max_seq_len: int | None = None


class Preprocessor:
    """Text → ids for one request; see the module docstring."""

    def __init__(self, tokenization: Tokenization, special: SpecialIds, limits: Limits,
                 end_id: int | None = None, pad_id: int | None = None) -> None:
        self.tok = tokenization
        self.limits = limits
        self.vocab = tokenization.vocab_size
        self.end_id = end_id if end_id is not None else special.end_id
        self.pad_id = pad_id if pad_id is not None else special.pad_id

    def run(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        for name in UNSUPPORTED:
            if _present(inputs, name):
                raise _err(name, "is not supported by this model repository")
        if not _present(inputs, "QUERY"):
            raise _err("QUERY", "is required and must not be empty")
        query = np.asarray(inputs["QUERY"])
        if query.size != 1:
            raise _err("QUERY", f"expected one string per request, got shape {list(query.shape)}")
        prompt = _text(query.reshape(-1)[0], "QUERY")
        if not prompt:
            raise _err("QUERY", "is empty")
        max_tokens = _one_int(inputs, "REQUEST_OUTPUT_LEN")
        if max_tokens is None:
            raise _err("REQUEST_OUTPUT_LEN", "is required")
        if max_tokens <= 0 or max_tokens > MAX_TOKENS_CAP:
            raise _err("REQUEST_OUTPUT_LEN", f"must be in 1..{MAX_TOKENS_CAP}, got {max_tokens}")
        ids = self.tok.encode(prompt)
        lim = self.limits
        if lim.max_input_len is not None and len(ids) > lim.max_input_len:
            raise _err("QUERY", f"prompt is {len(ids)} tokens, more than the engine's "
                       f"max_input_len ({lim.max_input_len})")
        if lim.max_seq_len is not None and len(ids) + max_tokens > lim.max_seq_len:
            raise _err("REQUEST_OUTPUT_LEN", f"prompt ({len(ids)} tokens) + max_tokens "
                       f"({max_tokens}) exceeds the engine's max_seq_len ({lim.max_seq_len})")
        end_id = _one_int(inputs, "END_ID")
        pad_id = _one_int(inputs, "PAD_ID")
        for name, value in (("END_ID", end_id), ("PAD_ID", pad_id)):
            if value is not None and not 0 <= value < self.vocab:
                raise _err(name, f"{value} is not a token id (vocabulary size {self.vocab})")
        stop = self.tok.word_list_layout([_words(inputs, "STOP_WORDS_DICT")])
        bad = self.tok.word_list_layout([_words(inputs, "BAD_WORDS_DICT")])
        return {
            "INPUT_ID": np.asarray([ids], dtype=np.int32),
            "REQUEST_INPUT_LEN": np.asarray([[len(ids)]], dtype=np.int32),
            "REQUEST_OUTPUT_LEN": np.asarray([[max_tokens]], dtype=np.int32),
            "STOP_WORDS_IDS": stop.astype(np.int32),
            "BAD_WORDS_IDS": bad.astype(np.int32),
            "OUT_END_ID": np.asarray([[self.end_id if end_id is None else end_id]], np.int32),
            "OUT_PAD_ID": np.asarray([[self.pad_id if pad_id is None else pad_id]], np.int32),
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
        tokens = np.asarray(inputs["TOKENS_BATCH"])
        lengths = np.asarray(inputs["SEQUENCE_LENGTH"])
        if tokens.ndim == 2:  # [beams, n] without the batch dim
            tokens = tokens[None]
        lengths = lengths.reshape(tokens.shape[:2])
        context = None
        if _present(inputs, "CONTEXT_LENGTH"):
            context = np.asarray(inputs["CONTEXT_LENGTH"]).reshape(-1)
        out = []
        for beams, beam_lengths in zip(tokens, lengths, strict=True):
            row = []
            for b, (beam, n) in enumerate(zip(beams, beam_lengths, strict=True)):
                ctx = int(context[min(b, len(context) - 1)]) if context is not None else 0
                row.append(self.text([int(t) for t in beam[: int(n)]], ctx).encode())
            out.append(row)
        return {"OUTPUT": np.array(out, dtype=np.object_)}
