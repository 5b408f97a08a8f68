"""The load generator: sends a load point's requests through an asyncio client, records them.

It drives any object with the :class:`Backend` shape; in production that is
:class:`tritonllm.client.AsyncLLMClient` (see :func:`tritonllm.perf.run.run_ours`), in unit
tests an in-process fake. Two schedules:

- **concurrency C**: C workers, each sending its next request as soon as its previous one
  ended (a closed loop, as perf_analyzer's ``--concurrency-range``);
- **request rate R**: requests start at Poisson arrival times (exponential inter-arrival gaps
  with mean 1/R, seeded), however many are in flight (an open loop, as perf_analyzer's
  ``--request-rate-range --request-distribution poisson``).

A point ends after ``requests`` requests or, with ``duration``, when no new request may start
(requests in flight then finish and are recorded). Warm-up requests run first and are not
recorded. Every request yields exactly one :class:`~tritonllm.perf.metrics.RequestRecord`,
failed ones included (``error_kind`` from :func:`error_kind`), so requests sent = records.
Output tokens are counted afterwards (:func:`count_output_tokens`), off the timed path.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tritonllm.errors import TritonLLMError
from tritonllm.perf.metrics import RequestRecord
from tritonllm.perf.scenario import LoadPoint

__all__ = [
    "Backend",
    "LoadError",
    "Progress",
    "RequestSpec",
    "count_output_tokens",
    "error_kind",
    "poisson_arrivals",
    "run_point",
]


class LoadError(TritonLLMError):
    """The load could not be generated at all (e.g. every warm-up request failed)."""


class DeltaLike(Protocol):
    """What a streamed piece must carry (``tritonllm.client.Delta`` has these)."""

    @property
    def text(self) -> str: ...
    @property
    def time(self) -> float: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def output_tokens(self) -> int | None: ...


class TimingsLike(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def first_token(self) -> float | None: ...
    @property
    def end(self) -> float: ...
    @property
    def token_times(self) -> list[float]: ...


class CompletionLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def output_tokens(self) -> int | None: ...
    @property
    def timings(self) -> TimingsLike: ...


class Backend(Protocol):
    """The two calls of :class:`tritonllm.client.AsyncLLMClient` the generator uses."""

    def stream(self, prompt: str, *, max_tokens: int, request_id: str | None = None,
               **sampling: Any) -> AsyncIterator[DeltaLike]: ...

    async def generate(self, prompt: str, *, max_tokens: int, request_id: str | None = None,
                       **sampling: Any) -> CompletionLike: ...


#: Client exception class name → error kind (the first match along the class's MRO wins, so
#: ``Overloaded`` counts as ``overloaded`` although it subclasses ``Unavailable``).
ERROR_KINDS = {
    "InvalidRequest": "invalid_request", "ModelNotFound": "model_not_found",
    "Unauthorized": "unauthorized", "Overloaded": "overloaded", "Unavailable": "unavailable",
    "Timeout": "timeout", "TimeoutError": "timeout", "Cancelled": "cancelled",
    "ServerError": "server_error", "ClientError": "client_error",
}


def error_kind(exc: BaseException) -> str:
    """A short kind for an exception: by class (see :data:`ERROR_KINDS`), else its class name."""
    for cls in type(exc).__mro__:
        if cls.__name__ in ERROR_KINDS:
            return ERROR_KINDS[cls.__name__]
    return type(exc).__name__


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: prompt text, its token count, ``max_tokens`` and (to force the
    exact output length) ``min_tokens``."""

    prompt: str
    input_tokens: int
    max_tokens: int
    min_tokens: int | None = None


#: ``progress(point_label, done, total, errors)``; total is None for duration-bound points.
Progress = Callable[[str, int, int | None, int], None]


def poisson_arrivals(rate: float, seed: int) -> Iterator[float]:
    """Arrival offsets in seconds (0-based, increasing) of a Poisson process of ``rate``/s."""
    rng = random.Random(seed)
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        yield t


async def _send(backend: Backend, spec: RequestSpec, record: RequestRecord, *, streaming: bool,
                sampling: dict[str, Any], timeout: float) -> None:
    """Send one request and fill ``record`` in place (never raises for request errors)."""
    record.requested_output_tokens = spec.max_tokens
    record.input_tokens = spec.input_tokens
    pieces: list[str] = []
    if spec.min_tokens is not None:
        sampling = {**sampling, "min_tokens": spec.min_tokens}

    async def consume() -> None:
        if streaming:
            last: float | None = None
            stream = backend.stream(spec.prompt, max_tokens=spec.max_tokens,
                                    request_id=record.request_id, **sampling)
            async for d in stream:
                last = d.time
                if d.text:
                    pieces.append(d.text)
                    record.response_times.append(d.time)
                    if record.first_token is None:
                        record.first_token = d.time
                if d.output_tokens is not None:
                    record.server_output_tokens = d.output_tokens
                if d.finish_reason:
                    record.finish_reason = d.finish_reason
            # the final response may carry no text (no delta): the client's completion, when
            # it keeps one, knows when it arrived
            completion = getattr(stream, "completion", None)
            end = getattr(getattr(completion, "timings", None), "end", None)
            record.end = end if isinstance(end, float) else (
                last if last is not None else time.perf_counter())
        else:
            comp = await backend.generate(spec.prompt, max_tokens=spec.max_tokens,
                                          request_id=record.request_id, **sampling)
            t = comp.timings
            pieces.append(comp.text)
            record.end = t.end
            record.first_token = t.first_token if t.first_token is not None else t.end
            record.response_times = list(t.token_times) or [t.end]
            record.server_output_tokens = comp.output_tokens
            record.finish_reason = comp.finish_reason

    record.start = time.perf_counter()
    try:
        await asyncio.wait_for(consume(), timeout)
    except asyncio.TimeoutError as e:
        record.error_kind, record.error = "timeout", f"no end after {timeout:g}s ({e!r})"
        record.end = None
    except Exception as e:  # every request error is data, not a crash
        record.error_kind, record.error = error_kind(e), str(e).splitlines()[0] if str(e) else ""
        record.end = None
    record.output_text = "".join(pieces)


async def run_point(backend: Backend, point: LoadPoint, specs: Callable[[int], RequestSpec], *,
                    requests: int, duration: float | None = None, warmup: int = 0,
                    streaming: bool = True, sampling: dict[str, Any] | None = None,
                    timeout: float = 120.0, seed: int = 0,
                    progress: Progress | None = None) -> list[RequestRecord]:
    """Run one load point and return its records, in send order.

    ``specs(i)`` gives the i-th request (measured ones count from 0; warm-up requests use
    ``specs(-1 - k)``). With ``duration`` the point sends until that many seconds have passed
    (``requests`` is ignored); otherwise exactly ``requests`` requests.
    """
    sampling = dict(sampling or {})
    label = point.label
    if warmup:
        warm = [RequestRecord(index=k, point=label, request_id=f"warmup-{label}-{k}", start=0.0)
                for k in range(warmup)]
        slots = point.concurrency or 1
        sem = asyncio.Semaphore(slots)

        async def warm_one(k: int) -> None:
            async with sem:
                await _send(backend, specs(-1 - k), warm[k], streaming=streaming,
                            sampling=sampling, timeout=timeout)

        await asyncio.gather(*(warm_one(k) for k in range(warmup)))
        if all(not r.ok for r in warm):
            first = warm[0]
            raise LoadError(f"all {warmup} warm-up requests failed ({first.error_kind}): "
                            f"{first.error}")

    records: list[RequestRecord] = []
    errors = done = 0
    total = None if duration is not None else requests
    t0 = time.perf_counter()
    deadline = t0 + duration if duration is not None else None

    def new_record() -> RequestRecord | None:
        i = len(records)
        if deadline is None and i >= requests:
            return None
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        rec = RequestRecord(index=i, point=label, request_id=f"{label}-{i}", start=0.0)
        records.append(rec)
        return rec

    async def one(rec: RequestRecord) -> None:
        nonlocal errors, done
        await _send(backend, specs(rec.index), rec, streaming=streaming, sampling=sampling,
                    timeout=timeout)
        done += 1
        errors += 0 if rec.ok else 1
        if progress is not None:
            progress(label, done, total, errors)

    if point.concurrency is not None:
        async def worker() -> None:
            while (rec := new_record()) is not None:
                await one(rec)

        await asyncio.gather(*(worker() for _ in range(point.concurrency)))
    else:
        tasks: list[asyncio.Task[None]] = []
        for at in poisson_arrivals(point.value, seed):
            if deadline is not None and t0 + at >= deadline:
                break
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule itself, not synchronisation
            rec = new_record()
            if rec is None:
                break
            tasks.append(asyncio.create_task(one(rec)))
        await asyncio.gather(*tasks)
    return records


def count_output_tokens(records: Sequence[RequestRecord], count_many: Callable[[list[str]],
                        list[int]]) -> None:
    """Set ``output_tokens`` of successful records by re-tokenizing their text (batched)."""
    ok = [r for r in records if r.ok]
    for r, n in zip(ok, count_many([r.output_text for r in ok]), strict=True):
        r.output_tokens = n
