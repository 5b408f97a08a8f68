"""The asyncio client: :class:`AsyncLLMClient` and its :class:`AsyncStream`.

Same arguments and results as :class:`~tritonllm.client.LLMClient`; the logic (requests,
retries, deadlines, deltas) is :mod:`._logic`'s, this module only awaits the transport
(``tritonclient.grpc.aio`` for gRPC; the HTTP transport in worker threads).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import EllipsisType, TracebackType
from typing import Any

from tritonllm.client._embed import (
    DEFAULT_MODEL,
    MAX_CHUNKS_IN_FLIGHT,
    EmbedChunk,
    EmbedPlan,
    Part,
    max_rows,
    plan_embed,
)
from tritonllm.client._errors import Cancelled, ClientError, Timeout, Unauthorized
from tritonllm.client._logic import (
    AUTO,
    CLASSIC,
    Exchange,
    RequestSpec,
    check_contract,
    connection,
    model_input_names,
    parse_outputs,
    parse_url,
    plan_request,
    resolve_contract,
    resolve_timeout,
)
from tritonllm.client._stop import Stopper
from tritonllm.client._sync import DEFAULT
from tritonllm.client._transport import (
    AsyncCall,
    AsyncTransport,
    make_async_transport,
    make_sync_transport,
)
from tritonllm.client._types import (
    Completion,
    Delta,
    Embeddings,
    Health,
    ModelStatus,
    RetryPolicy,
)

__all__ = ["AsyncLLMClient", "AsyncStream"]


def _task_cancelling() -> bool:
    """Whether the current task is being cancelled (Python 3.11+; False before)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if callable(cancelling) else False


class AsyncStream(AsyncIterator[Delta]):
    """The deltas of one request (``async for``). Sends the request on the first step.

    Leaving early — ``break`` (the stream is then garbage), :meth:`aclose` / :meth:`close`,
    leaving its ``async with`` block, or cancelling the task that iterates — cancels the
    request on the server. :meth:`cancel` from another task makes a pending step raise
    Cancelled. After the last delta, :attr:`completion` holds the whole result.
    """

    def __init__(self, client: AsyncLLMClient, model: str, build: Any, request_id: str,
                 timeout: float | None) -> None:
        self._client = client
        self._model = model
        self._build = build
        self.request_id = request_id
        self._timeout = timeout
        self._exchange: Exchange | None = None
        self._spec: RequestSpec | None = None
        self._call: AsyncCall | None = None
        self._closed = False
        client._stopper.start()  # not later: leaving a stream may happen in a finaliser

    @property
    def completion(self) -> Completion | None:
        ex = self._exchange
        return ex.completion() if ex is not None and ex.done else None

    @property
    def attempts(self) -> int:
        return self._exchange.attempts if self._exchange is not None else 0

    @property
    def input_tokens(self) -> int | None:
        """The prompt's token count as the server reported it so far (None: not yet, or the
        model reports none); kept after the stream was left early."""
        ex = self._exchange
        return ex.assembly.input_tokens if ex is not None else None

    @property
    def output_tokens(self) -> int | None:
        """Tokens generated so far, as the server reported them (see input_tokens)."""
        ex = self._exchange
        return ex.assembly.output_tokens if ex is not None else None

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Delta:
        if self._exchange is None:
            self._exchange = Exchange(self.request_id, policy=self._client.retry,
                                      timeout=self._timeout, now=time.perf_counter())
        ex = self._exchange
        ex.raise_if_cancelled()  # cancel() from elsewhere before this read began
        while not ex.done:
            if self._closed:
                ex.finish(time.perf_counter())
                break
            call = self._call
            try:
                if call is None:
                    left = ex.begin_attempt(time.perf_counter())
                    if self._spec is None:
                        inputs = await self._client._model_inputs(self._model, left)
                        self._spec = self._build(inputs)
                    call = self._call = await self._client._transport.start(self._spec, left)
                response = await call.next(ex.remaining(time.perf_counter()))
            except ClientError as e:
                self._call = None
                if call is not None:
                    call.cancel()
                    if isinstance(e, Timeout):  # the server would run on to the end
                        self._stop_on_server()
                await asyncio.sleep(ex.on_error(e, time.perf_counter()))  # backoff
                continue
            except BaseException:  # the task was cancelled (or worse): cancel on the server
                closed_elsewhere = self._closed and not _task_cancelling()
                self.cancel()
                if closed_elsewhere:
                    raise self._cancelled() from None
                raise
            now = time.perf_counter()
            if self._closed:  # cancel() from another task while this one waited
                raise self._cancelled()
            if response is None:
                ex.finish(now)
                break
            outputs, final = response
            delta = ex.on_response(parse_outputs(outputs, self._contract), final, now)
            if final:
                self._call = None
                call.release()
            if delta is not None:
                return delta
        raise StopAsyncIteration

    def _cancelled(self) -> Cancelled:
        ex = self._exchange
        return Cancelled(f"request {self.request_id} was cancelled",
                         request_id=self.request_id, attempts=ex.attempts if ex else 1,
                         status="CANCELLED")

    @property
    def _contract(self) -> str:
        """The contract the request went out in (classic until it is built)."""
        return self._spec.contract if self._spec is not None else CLASSIC

    def _stop_on_server(self) -> None:
        """Have the Stopper end the request on the server (see tritonllm.client._stop)."""
        self._client._stopper.stop(self._model, self.request_id, self._contract)

    def cancel(self) -> None:
        """Cancel the request on the server; no more deltas follow."""
        self._closed = True
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
            self._stop_on_server()
        if self._exchange is not None:
            self._exchange.cancel(time.perf_counter())

    close = cancel

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        if getattr(self, "_call", None) is not None:
            self.cancel()


class AsyncLLMClient:
    """Asyncio client; the arguments are :class:`~tritonllm.client.LLMClient`'s."""

    def __init__(self, url: str = "localhost:8001", model: str = "ensemble", *,
                 protocol: str | None = None, headers: Mapping[str, str] | None = None,
                 ssl: bool = False, root_certificates: str | None = None,
                 certificate_chain: str | None = None, private_key: str | None = None,
                 inference_key: Any = None, admin_key: Any = None,
                 timeout: float | None = 60.0, retry: RetryPolicy | None = None,
                 contract: str = AUTO) -> None:
        self.endpoint = parse_url(url, protocol, ssl)
        self._connection = conn = connection(
            self.endpoint, headers, root_certificates=root_certificates,
            certificate_chain=certificate_chain, private_key=private_key,
            inference_key=inference_key, admin_key=admin_key)
        self.model = model
        self.contract = check_contract(contract)
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self._transport: AsyncTransport = make_async_transport(self.endpoint, conn.headers,
                                                               conn.tls)
        # Stops go out on a thread of their own with a blocking transport (see ._stop).
        self._stopper = Stopper(lambda: make_sync_transport(self.endpoint, conn.headers,
                                                            conn.tls),
                                owns_transport=True)
        self._inputs: dict[str, frozenset[str] | None] = {}
        self._rows: dict[str, int] = {}  # embedding model -> texts per request

    def __repr__(self) -> str:
        e = self.endpoint
        return (f"AsyncLLMClient({e.protocol}{'s' if e.ssl else ''}://{e.address}, "
                f"model={self.model!r}, keys={list(self._connection.keys)!r})")

    def stream(self, prompt: str, max_tokens: int = 64, *, request_id: str | None = None,
               timeout: float | EllipsisType | None = DEFAULT, model: str | None = None,
               **sampling: Any) -> AsyncStream:
        """Stream the generation of ``prompt``: ``async for delta in client.stream(...)``."""
        return self._stream(prompt, max_tokens, request_id, timeout, model, True, sampling,
                            "stream")

    async def generate(self, prompt: str, max_tokens: int = 64, *,
                       request_id: str | None = None,
                       timeout: float | EllipsisType | None = DEFAULT, model: str | None = None,
                       stream: bool = False, **sampling: Any) -> Completion:
        """Generate from ``prompt`` and return the whole :class:`Completion` (see LLMClient)."""
        s = self._stream(prompt, max_tokens, request_id, timeout, model, stream, sampling,
                         "generate")
        async with s:
            async for _ in s:
                pass
        completion = s.completion
        if completion is None:  # pragma: no cover - a closed stream always ends its exchange
            raise ClientError(f"request {s.request_id} ended without a result")
        return completion

    def _stream(self, prompt: str, max_tokens: int, request_id: str | None,
                timeout: float | EllipsisType | None, model: str | None, stream: bool,
                sampling: dict[str, Any], where: str) -> AsyncStream:
        r = plan_request(self.model, self.timeout, prompt, max_tokens, request_id=request_id,
                         timeout=timeout, model=model, stream=stream, sampling=sampling,
                         where=where, contract=self.contract)
        return AsyncStream(self, r.model, r.build, r.request_id,  # type: ignore[arg-type,unused-ignore]
                     r.timeout)

    async def model_contract(self, model: str | None = None,
                             timeout: float | EllipsisType | None = DEFAULT) -> str:
        """The contract requests to ``model`` go out in (see LLMClient.model_contract)."""
        name = model or self.model
        return resolve_contract(self.contract, name,
                                await self._model_inputs(name, self._deadline(timeout)))

    async def _model_inputs(self, model: str, timeout: float | None) -> frozenset[str] | None:
        if model not in self._inputs:
            try:
                meta = await self._transport.metadata(model, timeout)
                self._inputs[model] = model_input_names(meta)
            except Unauthorized:
                self._inputs[model] = None
        return self._inputs[model]

    async def embed(self, texts: str | Sequence[str], *, model: str = DEFAULT_MODEL,
                    truncate: bool = False, timeout: float | EllipsisType | None = DEFAULT,
                    field: str = "texts") -> Embeddings:
        """See :meth:`LLMClient.embed`; here the requests of one call go out concurrently
        (at most :data:`~tritonllm.client._embed.MAX_CHUNKS_IN_FLIGHT` at once) and the first
        error cancels the others."""
        plan = plan_embed(self.timeout, texts, model=model, truncate=truncate,
                          timeout=timeout, field=field)
        start = time.perf_counter()
        rows = await self._embed_rows(plan.model, plan.timeout)
        gate = asyncio.Semaphore(MAX_CHUNKS_IN_FLIGHT)

        async def one(chunk: EmbedChunk) -> Part:
            async with gate:
                return await self._embed_chunk(plan, chunk, start)

        tasks = [asyncio.ensure_future(one(c)) for c in plan.chunks(rows)]
        try:
            parts = await asyncio.gather(*tasks)
        finally:  # the first error (or our cancellation): the other requests are cancelled
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return plan.result(parts)

    async def _embed_chunk(self, plan: EmbedPlan, chunk: EmbedChunk, start: float) -> Part:
        ex = plan.exchange(chunk, self.retry, start)
        while True:
            try:
                outputs = await self._transport.infer(chunk.spec,
                                                      ex.begin_attempt(time.perf_counter()))
            except ClientError as e:
                await asyncio.sleep(ex.on_error(plan.error(chunk, e), time.perf_counter()))
                continue
            ex.finish(time.perf_counter())
            return plan.read(chunk, outputs)

    async def _embed_rows(self, model: str, timeout: float | None) -> int:
        """See LLMClient._embed_rows."""
        if model not in self._rows:
            try:
                config = await self._transport.config(model, timeout)
                self._rows[model] = max_rows(config, model)
            except Unauthorized:
                self._rows[model] = 1
        return self._rows[model]

    async def health(self, timeout: float | EllipsisType | None = DEFAULT) -> Health:
        return await self._transport.health(self._deadline(timeout))

    async def models(self, timeout: float | EllipsisType | None = DEFAULT) -> list[ModelStatus]:
        return list(await self._transport.models(self._deadline(timeout)))

    async def metadata(self, model: str | None = None,
                       timeout: float | EllipsisType | None = DEFAULT) -> dict[str, Any]:
        return dict(await self._transport.metadata(model or self.model,
                                                   self._deadline(timeout)))

    async def config(self, model: str | None = None,
                     timeout: float | EllipsisType | None = DEFAULT) -> dict[str, Any]:
        """The model's configuration (Triton's ModelConfig) as JSON."""
        return dict(await self._transport.config(model or self.model,
                                                 self._deadline(timeout)))

    async def load_model(self, name: str,
                         timeout: float | EllipsisType | None = DEFAULT) -> None:
        """See :meth:`LLMClient.load_model`."""
        await self._transport.control(name, "load", self._deadline(timeout))

    async def unload_model(self, name: str,
                           timeout: float | EllipsisType | None = DEFAULT) -> None:
        """See :meth:`LLMClient.unload_model`."""
        await self._transport.control(name, "unload", self._deadline(timeout))

    def _deadline(self, timeout: float | EllipsisType | None) -> float | None:
        resolved: float | None = resolve_timeout(timeout, self.timeout)
        return resolved

    async def close(self) -> None:
        await asyncio.to_thread(self._stopper.close)
        await self._transport.close()

    async def __aenter__(self) -> AsyncLLMClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
