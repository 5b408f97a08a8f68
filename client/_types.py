"""Result and option types of the client: plain dataclasses, no I/O, no tritonclient.

Times are :func:`time.perf_counter` stamps taken when the client received something; the
derived properties (``ttft``, ``e2e``, ``itl``) are in seconds. :class:`ModelStatus` is
:mod:`tritonllm.triton_state`'s, the type the launcher uses too (stdlib only, no I/O).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from tritonllm.triton_state import ModelStatus  # shared with the launcher (tritonllm.server)

__all__ = ["Completion", "Delta", "Embeddings", "Health", "ModelStatus", "RetryPolicy",
           "Timings"]


@dataclass(frozen=True)
class Timings:
    """When one request started, produced its first text, each later piece, and ended.

    Attributes:
        start: just before the (first attempt's) request was sent.
        first_token: when the first response carrying text arrived; None if none did.
        end: when the final response arrived (or the request failed / was closed).
        token_times: arrival time of every response that carried text, in order.
    """

    start: float
    first_token: float | None
    end: float
    token_times: list[float] = field(default_factory=list)

    @property
    def ttft(self) -> float | None:
        """Time to first token (seconds), or None when no text arrived."""
        return None if self.first_token is None else self.first_token - self.start

    @property
    def e2e(self) -> float:
        """End-to-end latency (seconds)."""
        return self.end - self.start

    @property
    def itl(self) -> list[float]:
        """Inter-token latencies: the gaps (seconds) between consecutive text responses."""
        t = self.token_times
        return [b - a for a, b in itertools.pairwise(t)]


@dataclass(frozen=True)
class Delta:
    """One streamed piece of text.

    Attributes:
        text: the new text (deltas concatenate to the whole generated text).
        time: ``time.perf_counter()`` when the response arrived.
        index: 0, 1, 2, ... over the deltas of one request.
        finish_reason: ``"stop"``, ``"length"``, ``"cancelled"`` on the last delta when the
            server reports it; None otherwise.
        output_tokens: cumulative generated-token count when the server reports it.
    """

    text: str
    time: float
    index: int
    finish_reason: str | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    """A finished generation.

    Attributes:
        text: the generated text (the prompt only if ``exclude_input_in_output=False``).
        finish_reason: ``"stop"``, ``"length"``, ... or None when the model does not say.
        input_tokens / output_tokens: token counts when the model reports them (our ensemble
            and BLS when asked; see ``return_num_*_tokens``), else None (always for an llmapi
            model: its contract has none).
        request_id: the id the request was sent with.
        timings: see :class:`Timings`.
        attempts: how many times the request was sent (retries + 1).
    """

    text: str
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    request_id: str
    timings: Timings
    attempts: int = 1


@dataclass(frozen=True)
class Embeddings(Sequence[list[float]]):
    """The vectors of ``embed(texts)``, one per text, in the order of the texts.

    A sequence: ``len(e)``, ``e[i]`` (text ``i``'s vector, a ``list[float]``: the model's FP32
    values as Python floats, exactly), iteration. :meth:`numpy` gives them as one float32
    array of shape ``[len(e), dimension]``.

    Attributes:
        vectors: the vectors (what indexing reads).
        num_tokens: each text's token count as the model saw it (after truncation).
        model: the model that computed them.
        dimension: the length of every vector.
    """

    vectors: list[list[float]]
    num_tokens: list[int]
    model: str
    dimension: int

    @property
    def prompt_tokens(self) -> int:
        """The tokens of every text together (OpenAI's ``usage.prompt_tokens``)."""
        return sum(self.num_tokens)

    @overload
    def __getitem__(self, index: int) -> list[float]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[float]]: ...

    def __getitem__(self, index: int | slice) -> list[float] | list[list[float]]:
        return self.vectors[index]

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self) -> Iterator[list[float]]:
        return iter(self.vectors)

    def numpy(self) -> Any:
        """The vectors as a float32 ``numpy.ndarray`` of shape ``[len(self), dimension]``."""
        import numpy as np

        return np.asarray(self.vectors, dtype=np.float32).reshape(len(self.vectors),
                                                                   self.dimension)


@dataclass(frozen=True)
class Health:
    """Server liveness and readiness (``/v2/health/live``, ``/v2/health/ready``)."""

    live: bool
    ready: bool


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a request is sent again.

    A request is retried only while no response text has reached the caller (so no text can
    ever be delivered twice), only for :class:`~tritonllm.client.Unavailable` (server down,
    connection refused or reset, model not ready) and, if ``retry_overloaded``, for
    :class:`~tritonllm.client.Overloaded` (queue full), and only while the call's deadline
    leaves time. Delays grow exponentially: attempt ``n`` (1-based) waits
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))``, scaled by a random factor
    in ``[1 - jitter, 1 + jitter]``.

    Attributes:
        attempts: total tries, the first included (1 disables retries).
        initial_backoff / max_backoff: seconds.
        multiplier: growth per retry.
        jitter: relative spread of each delay, in [0, 1].
        retry_overloaded: also retry when the server's queue is full.
    """

    attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    jitter: float = 0.2
    multiplier: float = 2.0
    retry_overloaded: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoffs must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter}")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier}")
