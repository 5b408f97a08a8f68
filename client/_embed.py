"""The logic of ``embed()``, sans I/O: texts checked, split into requests, responses read.

Both clients' ``embed`` (:meth:`tritonllm.client.LLMClient.embed`,
:meth:`tritonllm.client.AsyncLLMClient.embed`) call :func:`plan_embed` and do only the I/O:
read the model's ``max_batch_size`` once (:func:`max_rows`, cached per model), send each
:class:`EmbedChunk` (sync: one after another; asyncio: concurrently), hand every response to
:meth:`EmbedPlan.read`, every error to :meth:`EmbedPlan.error`, and the parts, in chunk order,
to :meth:`EmbedPlan.result`.

Each chunk is retried as a generation request is before any text came
(:class:`~tritonllm.client.RetryPolicy`: Unavailable, and Overloaded on request), all of them
within the call's one deadline (:meth:`EmbedPlan.exchange`).

The contract is :data:`tritonllm.contract.EMBEDDING_CONTRACT`: ``text`` STRING, one text per
batch row (the model batches, ``max_batch_size > 0``, so a request of ``rows`` texts is shaped
``[rows, 1]``), optional ``truncate`` BOOL (sent, ``[rows, 1]``, only when true, so a model
without it still takes the default); out ``embedding`` FP32 ``[rows, dim]`` and ``num_tokens``
INT32 ``[rows, 1]``. The tensor names are the contract's (``EMB_IN`` / ``EMB_OUT``).

Errors. Bad texts are refused here, before anything is sent, with InvalidRequest naming the
field (``texts: empty``, ``texts[3]: expected str, got int``, ``texts[2]: empty text``). The
server names the row of its request (``text[1]: 300 tokens, more than the model's 256 ...``):
:meth:`EmbedPlan.error` turns that into the caller's index (``texts[k + 1]`` for the chunk that
starts at text ``k``), same error class, the server's error chained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import numpy as np

from tritonllm.client._errors import ClientError, InvalidRequest, ModelNotFound, ServerError
from tritonllm.client._logic import (
    Exchange,
    RequestSpec,
    TensorValue,
    new_request_id,
    resolve_timeout,
)
from tritonllm.client._types import Embeddings, RetryPolicy
from tritonllm.contract import EMB_IN, EMB_OUT, EMBEDDING, EMBEDDING_CONTRACT

__all__ = [
    "DEFAULT_MODEL",
    "MAX_CHUNKS_IN_FLIGHT",
    "EmbedChunk",
    "EmbedPlan",
    "check_texts",
    "max_rows",
    "plan_embed",
]

#: The model ``embed()`` calls unless told otherwise.
DEFAULT_MODEL = EMBEDDING
#: The asyncio client's bound on the requests of one ``embed()`` call in flight at once.
MAX_CHUNKS_IN_FLIGHT = 8
_TEXT = EMBEDDING_CONTRACT.input(EMB_IN.text)
_TRUNCATE = EMBEDDING_CONTRACT.input(EMB_IN.truncate)
#: A row of a request, as the server's messages name it (``text[2]``).
_ROW = re.compile(rf"(?<![\w.])({re.escape(EMB_IN.text)})\[(\d+)\]")

#: What one response gives: the vectors and the token counts of its rows.
Part = tuple[list[list[float]], list[int]]


def check_texts(texts: Any, field: str = "texts") -> list[str]:
    """``texts`` (one str, or a sequence of str) as a list; InvalidRequest naming the field
    (``field``, ``field[i]``) for an empty list, an item that is not a str, an empty text."""
    if isinstance(texts, str):
        items: list[Any] = [texts]
        where = [field]
    elif isinstance(texts, (bytes, bytearray, Mapping)) or not isinstance(texts, Sequence):
        raise InvalidRequest(f"{field}: expected a str or a sequence of str, got "
                             f"{type(texts).__name__}")
    else:
        items = list(texts)
        where = [f"{field}[{i}]" for i in range(len(items))]
        if not items:
            raise InvalidRequest(f"{field}: empty")
    for name, item in zip(where, items, strict=True):
        if not isinstance(item, str):
            raise InvalidRequest(f"{name}: expected str, got {type(item).__name__}")
        if not item:
            raise InvalidRequest(f"{name}: empty text")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: no UTF-8 for it
            raise InvalidRequest(f"{name}: not encodable as UTF-8 (a lone surrogate at "
                                 f"character {e.start})") from None
    return items


def max_rows(config: Mapping[str, Any], model: str) -> int:
    """The most texts one request to ``model`` may carry: its ``max_batch_size``, from its
    configuration as JSON (gRPC's ``{"config": ...}`` or HTTP's plain one); InvalidRequest for
    a model that does not batch (not the embedding contract)."""
    cfg = config.get("config", config)
    raw = cfg.get("max_batch_size", 0)  # protobuf's JSON leaves a 0 out
    try:
        rows = int(raw)
    except (TypeError, ValueError):
        raise ServerError(f"model {model!r}: max_batch_size {raw!r} in its config is not "
                          "a number") from None
    if rows < 1:
        raise InvalidRequest(f"model {model!r} does not batch (max_batch_size {rows}): the "
                             "embedding contract sends one text per batch row")
    return rows


@dataclass(frozen=True)
class EmbedChunk:
    """One request of an ``embed()`` call: texts ``offset .. offset + rows - 1``."""

    offset: int
    rows: int
    spec: RequestSpec


@dataclass(frozen=True)
class EmbedPlan:
    """One ``embed()`` call: its texts, how they go out, how the answers come back."""

    model: str
    texts: tuple[str, ...]
    truncate: bool
    timeout: float | None
    field: str = "texts"

    def chunks(self, rows: int) -> list[EmbedChunk]:
        """The requests, at most ``rows`` texts each (``rows``: :func:`max_rows`), in order."""
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        out = []
        for offset in range(0, len(self.texts), rows):
            batch = self.texts[offset:offset + rows]
            n = len(batch)
            text = np.array([[t.encode("utf-8")] for t in batch], dtype=np.object_)
            inputs = [TensorValue(_TEXT.name, _TEXT.dtype, _TEXT.dims, text)]
            if self.truncate:
                inputs.append(TensorValue(_TRUNCATE.name, _TRUNCATE.dtype, _TRUNCATE.dims,
                                          np.ones((n, 1), dtype=np.bool_)))
            spec = RequestSpec(self.model, new_request_id(), False, tuple(inputs))
            out.append(EmbedChunk(offset, n, spec))
        return out

    def read(self, chunk: EmbedChunk, outputs: Mapping[str, Any]) -> Part:
        """One response's vectors and counts; ServerError when it breaks the contract."""
        where = f"model {self.model!r}, request {chunk.spec.request_id}"
        vec, tok = outputs.get(EMB_OUT.embedding), outputs.get(EMB_OUT.num_tokens)
        if vec is None or tok is None:
            missing = EMB_OUT.embedding if vec is None else EMB_OUT.num_tokens
            raise ServerError(f"{where}: the response has no {missing} output",
                              request_id=chunk.spec.request_id)
        vectors = np.asarray(vec, dtype=np.float32)
        counts = np.asarray(tok).reshape(-1)
        if vectors.ndim != 2 or vectors.shape[0] != chunk.rows or vectors.shape[1] < 1:
            raise ServerError(f"{where}: {EMB_OUT.embedding} has shape {list(vectors.shape)}, "
                              f"expected [{chunk.rows}, dimension]",
                              request_id=chunk.spec.request_id)
        if counts.size != chunk.rows:
            raise ServerError(f"{where}: {EMB_OUT.num_tokens} has {counts.size} values for "
                              f"{chunk.rows} texts", request_id=chunk.spec.request_id)
        return vectors.tolist(), [int(c) for c in counts]

    def error(self, chunk: EmbedChunk, err: ClientError) -> ClientError:
        """``err`` with the server's row (``text[i]``) named as the caller's text
        (``texts[offset + i]``); other errors unchanged."""
        if not isinstance(err, InvalidRequest) or isinstance(err, ModelNotFound):
            return err

        def caller(m: re.Match[str]) -> str:
            row = int(m.group(2))
            return f"{self.field}[{chunk.offset + row}]" if row < chunk.rows else m.group(0)

        message = _ROW.sub(caller, err.message)
        if message == err.message:
            return err
        mapped = type(err)(message, request_id=err.request_id, attempts=err.attempts,
                           status=err.status)
        mapped.__cause__ = err
        return mapped

    def exchange(self, chunk: EmbedChunk, policy: RetryPolicy, start: float) -> Exchange:
        """The attempts of ``chunk``: retried as any request is (:class:`RetryPolicy`), within
        the call's deadline (``start``: when the call began, ``time.perf_counter()``)."""
        return Exchange(chunk.spec.request_id, policy=policy, timeout=self.timeout, now=start)

    def result(self, parts: Sequence[Part]) -> Embeddings:
        """The call's result from every chunk's part, in chunk order."""
        vectors = [v for vs, _ in parts for v in vs]
        counts = [c for _, cs in parts for c in cs]
        if len(vectors) != len(self.texts):
            raise ServerError(f"model {self.model!r}: {len(vectors)} vectors for "
                              f"{len(self.texts)} texts")
        dims = {len(v) for v in vectors}
        if len(dims) != 1:
            raise ServerError(f"model {self.model!r}: vectors of different lengths "
                              f"{sorted(dims)}")
        return Embeddings(vectors, counts, self.model, dims.pop())


def plan_embed(default_timeout: float | None, texts: Any, *, model: str, truncate: bool,
               timeout: float | EllipsisType | None, field: str = "texts") -> EmbedPlan:
    """The one place both clients turn an ``embed`` call into its plan (InvalidRequest for bad
    arguments, naming them). ``timeout``: the call's (``...``: the client's default)."""
    if not isinstance(truncate, (bool, np.bool_)):
        raise InvalidRequest(f"truncate: expected True or False, got {truncate!r}")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(f"model: expected a model name, got {model!r}")
    return EmbedPlan(model, tuple(check_texts(texts, field)), bool(truncate),
                     resolve_timeout(timeout, default_timeout), field)
