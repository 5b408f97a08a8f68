"""The embedding models' logic: validate texts, tokenize a batch, run the ONNX encoder.

``embedding`` (tritonllm.contract.EMBEDDING_CONTRACT) is dynamically batched: ``execute()``
gets several requests, each with one or more texts (rows). Every request is validated on its
own, so a bad one gets an INVALID_ARG error naming the field (``text[2]: empty``) while the
others in the batch are computed. The valid texts of the whole batch are tokenized together
(the tokenizers library, as Hugging Face's fast tokenizer does), sorted by length and run
through ONNX Runtime in a few calls of similar lengths (:func:`length_groups`: bounded
padding); pooling and normalization are in the graph.

A text longer than the engine's max length is refused (``text[i]: N tokens, more than M``)
unless the request sends ``truncate`` true, which cuts it to M tokens as sentence-transformers
does. Its UTF-8 size is bounded before it is decoded or tokenized (``max_text_bytes``).

On GPU the tokenizing half runs as ``embedding_tokenizer`` (padding to the max length, so
Triton can batch the encoder's fixed-shape inputs) in front of Triton's onnxruntime backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import EMB_IN, EMB_OUT, ONNX_ATTENTION_MASK, ONNX_EMBEDDING, ONNX_INPUT_IDS
from tritonllm.ensembles.requests import RequestError

__all__ = ["EmbeddingEncoder", "EmbeddingTokenizer", "Rows", "embedding_outputs", "encode",
           "length_groups", "read_rows", "token_counts"]


@dataclass(frozen=True)
class Rows:
    """One request's valid texts and whether to cut them to the max length."""

    texts: list[str]
    truncate: bool


def _flag(value: Any, rows: int) -> bool:
    arr = np.asarray(value)
    if arr.dtype != np.bool_:
        raise RequestError(EMB_IN.truncate, f"expected BOOL, got {arr.dtype}")
    flat = arr.reshape(-1)
    if flat.size not in (1, rows) or (flat.size > 1 and not (flat == flat[0]).all()):
        raise RequestError(EMB_IN.truncate, "one value per request (the same for every text)")
    return bool(flat[0])


def read_rows(inputs: dict[str, Any], max_text_bytes: int) -> Rows:
    """The texts of one request (``text`` [rows, 1] STRING); RequestError names the bad one."""
    raw = inputs.get(EMB_IN.text)
    if raw is None:
        raise RequestError(EMB_IN.text, "missing")
    arr = np.asarray(raw)
    if arr.dtype != np.object_:
        raise RequestError(EMB_IN.text, f"expected STRING, got {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 1 or arr.shape[0] < 1:
        raise RequestError(EMB_IN.text, f"expected shape [rows, 1], got {list(arr.shape)}")
    texts = []
    for i, item in enumerate(arr[:, 0]):
        field = f"{EMB_IN.text}[{i}]"
        if not isinstance(item, bytes):
            raise RequestError(field, "expected bytes")
        if len(item) > max_text_bytes:
            raise RequestError(field, f"{len(item)} bytes, more than {max_text_bytes}")
        if not item:
            raise RequestError(field, "empty text")
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise RequestError(field, f"not valid UTF-8 (byte {e.start})") from None
    truncate = False
    if inputs.get(EMB_IN.truncate) is not None:
        truncate = _flag(inputs[EMB_IN.truncate], len(texts))
    return Rows(texts, truncate)


class EmbeddingTokenizer:
    """The checkpoint's tokenizer (tokenizer.json), with no padding or truncation of its own."""

    def __init__(self, tokenizer_dir: Path, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        path = Path(tokenizer_dir) / "tokenizer.json"
        self.full = Tokenizer.from_file(str(path))
        self.full.no_padding()
        self.full.no_truncation()
        self.cut = Tokenizer.from_file(str(path))
        self.cut.no_padding()
        self.cut.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = pad_id

    def ids(self, rows: Rows) -> list[list[int]]:
        """Token ids of each text; RequestError for one over the max length (not truncating)."""
        tok = self.cut if rows.truncate else self.full
        out = [e.ids for e in tok.encode_batch(rows.texts)]
        for i, ids in enumerate(out):
            if len(ids) > self.max_length:
                raise RequestError(
                    f"{EMB_IN.text}[{i}]",
                    f"{len(ids)} tokens, more than the model's {self.max_length} (send "
                    f"{EMB_IN.truncate}=true to cut it to {self.max_length})")
        return out

    def pad(self, ids: Sequence[Sequence[int]], length: int | None = None
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(input_ids, attention_mask) [len(ids), length or the longest], right-padded."""
        width = length or max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, x in enumerate(ids):
            input_ids[row, :len(x)] = x
            mask[row, :len(x)] = 1
        return input_ids, mask


class EmbeddingEncoder:
    """The ONNX file on ONNX Runtime (CPU): ids and mask in, pooled vectors out."""

    def __init__(self, onnx_path: Path, num_threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=["CPUExecutionProvider"])

    def run(self, input_ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
            ) -> npt.NDArray[np.float32]:
        out = self.session.run([ONNX_EMBEDDING], {ONNX_INPUT_IDS: input_ids,
                                                  ONNX_ATTENTION_MASK: mask})[0]
        return np.ascontiguousarray(out, dtype=np.float32)


#: A group of texts run in one ONNX Runtime call may hold at most this many padded cells per
#: real token (see :func:`length_groups`).
MAX_PADDING = 1.25


def length_groups(lengths: Sequence[int], max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices of ``lengths`` in groups to run one call each: shortest first, a group grows
    while ``rows x its longest`` stays within ``max_padding x its real tokens``.

    One call for a whole batch pads every text to the batch's longest; on a CPU the padded
    cells cost as much as real ones (attention more), so a dynamically batched mix of short
    and long texts ran slower than one text at a time. Sorting and cutting keeps the padding
    bounded and the calls few."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    real = 0
    for i in order:
        n = lengths[i]
        if groups and (len(groups[-1]) + 1) * n <= max_padding * (real + n):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    return groups


def encode(tokenizer: EmbeddingTokenizer, encoder: EmbeddingEncoder,
           ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
    """The vectors of tokenized texts, in their order, in :func:`length_groups` calls."""
    groups = length_groups([len(x) for x in ids])
    parts = [encoder.run(*tokenizer.pad([ids[i] for i in g])) for g in groups]
    out = np.empty((len(ids), parts[0].shape[1]), dtype=np.float32)
    for g, vectors in zip(groups, parts, strict=True):
        out[g] = vectors  # a group is in length order, not the batch's
    return out


def token_counts(ids: Sequence[Sequence[int]]) -> npt.NDArray[np.int32]:
    """``num_tokens`` of tokenized texts: [rows, 1] INT32."""
    return np.asarray([len(x) for x in ids], dtype=np.int32).reshape(-1, 1)


def embedding_outputs(vectors: npt.NDArray[np.float32], ids: Sequence[Sequence[int]]
                      ) -> dict[str, npt.NDArray[Any]]:
    """One request's output tensors: its vectors and its texts' token counts."""
    return {EMB_OUT.embedding: vectors, EMB_OUT.num_tokens: token_counts(ids)}

