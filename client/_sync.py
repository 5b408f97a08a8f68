"""The blocking client: :class:`LLMClient` and its :class:`Stream`.

Thread-safe: one client may serve many threads, each with its own requests (the gRPC transport
keeps a pool of streams). The logic (requests, retries, deadlines, deltas) is
:mod:`._logic`'s; this module only blocks on the transport.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import EllipsisType, TracebackType
from typing import Any

from tritonllm.client._embed import DEFAULT_MODEL, EmbedChunk, EmbedPlan, Part, max_rows, plan_embed
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
from tritonllm.client._transport import SyncCall, SyncTransport, make_sync_transport
from tritonllm.client._types import (
    Completion,
    Delta,
    Embeddings,
    Health,
    ModelStatus,
    RetryPolicy,
)

__all__ = ["LLMClient", "Stream"]

#: The default of every ``timeout=`` argument: the client's own timeout.
DEFAULT: EllipsisType = ...


class Stream(Iterator[Delta]):
    """The deltas of one request, as they arrive. Sends the request on the first ``next()``.

    Leaving early — ``break`` (the stream is then garbage), :meth:`close`, or leaving its
    ``with`` block — cancels the request on the server (for an ensemble or an llmapi model,
    also by the contract's ``stop``: see tritonllm.client._stop), as does a missed deadline.
    :meth:`cancel` may be called from
    another thread; a thread blocked in ``next()`` then gets Cancelled. After the last delta,
    :attr:`completion` holds the whole result.
    """

    def __init__(self, client: LLMClient, model: str, build: Any, request_id: str,
                 timeout: float | None) -> None:
        self._client = client
        self._model = model
        self._build = build
        self.request_id = request_id
        self._timeout = timeout
        self._exchange: Exchange | None = None
        self._spec: RequestSpec | None = None
        self._call: SyncCall | None = None
        self._lock = threading.Lock()
        self._closed = False
        client._stopper.start()  # not later: leaving a stream may happen in a finaliser

    @property
    def completion(self) -> Completion | None:
        """The finished result (None until the stream has ended)."""
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

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Delta:
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
                        self._spec = self._build(self._client._model_inputs(self._model, left))
                    call = self._client._transport.start(self._spec, left)
                    with self._lock:
                        if self._closed:
                            call.cancel()
                            continue
                        self._call = call
                response = call.next(ex.remaining(time.perf_counter()))
            except ClientError as e:
                self._call = None
                if call is not None:
                    call.cancel()
                    if isinstance(e, Timeout):  # the server would run on to the end
                        self._stop_on_server()
                time.sleep(ex.on_error(e, time.perf_counter()))  # backoff before a retry
                continue
            now = time.perf_counter()
            if self._closed:  # cancel() from another thread while this one waited
                raise Cancelled(f"request {self.request_id} was cancelled",
                                request_id=self.request_id, attempts=ex.attempts,
                                status="CANCELLED")
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
        raise StopIteration

    @property
    def _contract(self) -> str:
        """The contract the request went out in (classic until it is built)."""
        return self._spec.contract if self._spec is not None else CLASSIC

    def _stop_on_server(self) -> None:
        """Have the Stopper end the request on the server (see tritonllm.client._stop)."""
        self._client._stopper.stop(self._model, self.request_id, self._contract)

    def cancel(self) -> None:
        """Cancel the request on the server (thread-safe); no more deltas follow."""
        with self._lock:
            self._closed = True
            call, self._call = self._call, None
        if call is not None:
            call.cancel()
            self._stop_on_server()
        if self._exchange is not None:
            self._exchange.cancel(time.perf_counter())

    close = cancel

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_call", None) is not None:
            self.close()


class LLMClient:
    """Blocking client for a tritonllm or tensorrtllm_backend model repository.

    ``url``: ``host:port`` or ``grpc://host:port`` (gRPC), ``http(s)://host:port`` (HTTP);
    ``protocol`` overrides the scheme. ``model``: ``ensemble``, ``tensorrt_llm_bls``,
    ``llmapi`` or any model with one of their contracts. ``headers`` go with every call.
    ``inference_key`` / ``admin_key`` (a :class:`tritonllm.security.Secret` or a string):
    the keys of a server started with them (``tritonllm serve --inference-key-file`` /
    ``--admin-key-file``), sent as its restriction headers; never shown in ``repr``. TLS:
    ``ssl`` (or an ``https://`` / ``grpcs://`` URL) with ``root_certificates`` (the CA's PEM
    file), plus ``certificate_chain`` and ``private_key`` for mutual TLS. ``timeout``: the
    default deadline of every call, seconds (None: none). ``retry``: see
    :class:`RetryPolicy`. ``contract``: ``"auto"`` (each model's from its metadata),
    ``"classic"`` (ensemble / BLS) or ``"llmapi"`` (NVIDIA's llmapi model); see "Contracts"
    in :mod:`tritonllm.client._logic`.
    """

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
        self._transport: SyncTransport = make_sync_transport(self.endpoint, conn.headers,
                                                             conn.tls)
        self._stopper = Stopper(lambda: self._transport)
        self._inputs: dict[str, frozenset[str] | None] = {}
        self._rows: dict[str, int] = {}  # embedding model -> texts per request

    def __repr__(self) -> str:
        e = self.endpoint
        return (f"LLMClient({e.protocol}{'s' if e.ssl else ''}://{e.address}, "
                f"model={self.model!r}, keys={list(self._connection.keys)!r})")

    # -- generation ----------------------------------------------------------------------------
    def stream(self, prompt: str, max_tokens: int = 64, *, request_id: str | None = None,
               timeout: float | EllipsisType | None = DEFAULT, model: str | None = None,
               **sampling: Any) -> Stream:
        """Stream the generation of ``prompt``: an iterator of :class:`Delta`."""
        return self._stream(prompt, max_tokens, request_id, timeout, model, True, sampling,
                            "stream")

    def generate(self, prompt: str, max_tokens: int = 64, *, request_id: str | None = None,
                 timeout: float | EllipsisType | None = DEFAULT, model: str | None = None,
                 stream: bool = False, **sampling: Any) -> Completion:
        """Generate from ``prompt`` and return the whole :class:`Completion`.

        Not streamed by default (one response); ``stream=True`` streams under the hood, so
        the timings hold a real time to first token and inter-token latencies.
        """
        s = self._stream(prompt, max_tokens, request_id, timeout, model, stream, sampling,
                         "generate")
        with s:
            for _ in s:
                pass
        completion = s.completion
        if completion is None:  # pragma: no cover - a closed stream always ends its exchange
            raise ClientError(f"request {s.request_id} ended without a result")
        return completion

    def _stream(self, prompt: str, max_tokens: int, request_id: str | None,
                timeout: float | EllipsisType | None, model: str | None, stream: bool,
                sampling: dict[str, Any], where: str) -> Stream:
        r = plan_request(self.model, self.timeout, prompt, max_tokens, request_id=request_id,
                         timeout=timeout, model=model, stream=stream, sampling=sampling,
                         where=where, contract=self.contract)
        return Stream(self, r.model, r.build, r.request_id,  # type: ignore[arg-type,unused-ignore]
                     r.timeout)

    def model_contract(self, model: str | None = None,
                       timeout: float | EllipsisType | None = DEFAULT) -> str:
        """The contract requests to ``model`` go out in: ``"classic"`` or ``"llmapi"`` (from
        the client's ``contract`` and the model's metadata, read once); InvalidRequest where a
        forced contract contradicts the metadata."""
        name = model or self.model
        return resolve_contract(self.contract, name,
                                self._model_inputs(name, self._deadline(timeout)))

    def _model_inputs(self, model: str, timeout: float | None) -> frozenset[str] | None:
        """The model's input names from its metadata (cached); None where metadata is refused."""
        if model not in self._inputs:
            try:
                self._inputs[model] = model_input_names(self._transport.metadata(model, timeout))
            except Unauthorized:
                self._inputs[model] = None
        return self._inputs[model]

    # -- embeddings ----------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str], *, model: str = DEFAULT_MODEL,
              truncate: bool = False, timeout: float | EllipsisType | None = DEFAULT,
              field: str = "texts") -> Embeddings:
        """The vectors of ``texts`` (one str, or a sequence of str) from the embedding model
        ``model`` (:data:`tritonllm.contract.EMBEDDING_CONTRACT`), in their order.

        The texts go out in requests of at most the model's ``max_batch_size`` texts (read
        from its config once), one after another; ``timeout`` bounds the whole call.
        ``truncate``: cut a text longer than the model's max length instead of refusing it.
        InvalidRequest, naming the text as ``field[i]`` (``texts[2]: empty text``), for an
        empty list, a text that is not a str or is empty (refused before anything is sent), or
        one the server refuses (over the max length). See :mod:`tritonllm.client._embed`.
        """
        plan = plan_embed(self.timeout, texts, model=model, truncate=truncate,
                          timeout=timeout, field=field)
        start = time.perf_counter()
        rows = self._embed_rows(plan.model, plan.timeout)
        return plan.result([self._embed_chunk(plan, c, start) for c in plan.chunks(rows)])

    def _embed_chunk(self, plan: EmbedPlan, chunk: EmbedChunk, start: float) -> Part:
        ex = plan.exchange(chunk, self.retry, start)
        while True:
            try:
                outputs = self._transport.infer(chunk.spec, ex.begin_attempt(time.perf_counter()))
            except ClientError as e:
                time.sleep(ex.on_error(plan.error(chunk, e), time.perf_counter()))
                continue
            ex.finish(time.perf_counter())
            return plan.read(chunk, outputs)

    def _embed_rows(self, model: str, timeout: float | None) -> int:
        """Texts per request to ``model``: its max_batch_size (cached); 1 where the config
        is refused (a restricted model-config endpoint)."""
        if model not in self._rows:
            try:
                self._rows[model] = max_rows(self._transport.config(model, timeout), model)
            except Unauthorized:
                self._rows[model] = 1
        return self._rows[model]

    # -- server --------------------------------------------------------------------------------
    def health(self, timeout: float | EllipsisType | None = DEFAULT) -> Health:
        """Liveness and readiness of the server."""
        return self._transport.health(self._deadline(timeout))

    def models(self, timeout: float | EllipsisType | None = DEFAULT) -> list[ModelStatus]:
        """Every model of the server's repository with its state."""
        return list(self._transport.models(self._deadline(timeout)))

    def metadata(self, model: str | None = None,
                 timeout: float | EllipsisType | None = DEFAULT) -> dict[str, Any]:
        """The model's metadata (name, versions, inputs, outputs) as JSON."""
        return dict(self._transport.metadata(model or self.model, self._deadline(timeout)))

    def config(self, model: str | None = None,
               timeout: float | EllipsisType | None = DEFAULT) -> dict[str, Any]:
        """The model's configuration (Triton's ModelConfig) as JSON."""
        return dict(self._transport.config(model or self.model, self._deadline(timeout)))

    def load_model(self, name: str, timeout: float | EllipsisType | None = DEFAULT) -> None:
        """Load (or reload, picking up new versions) ``name`` from the server's repository.

        The server must run with ``--model-control-mode explicit``; otherwise a ClientError
        says so. Returns once Triton has loaded it (its old version, if any, then drains).
        """
        self._transport.control(name, "load", self._deadline(timeout))

    def unload_model(self, name: str, timeout: float | EllipsisType | None = DEFAULT) -> None:
        """Unload ``name``; requests in flight on it finish first (Triton's unload)."""
        self._transport.control(name, "unload", self._deadline(timeout))

    def _deadline(self, timeout: float | EllipsisType | None) -> float | None:
        resolved: float | None = resolve_timeout(timeout, self.timeout)
        return resolved

    def close(self) -> None:
        self._stopper.close()
        self._transport.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
