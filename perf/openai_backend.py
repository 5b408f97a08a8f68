"""The load generator's backend over the OpenAI API: :class:`OpenAIBackend`, on the official SDK.

``tritonllm perf --endpoint openai --url http://HOST:PORT/v1`` sends the load through an
OpenAI-compatible server (``tritonllm openai`` in front of Triton, or any other) instead of
straight over Triton's gRPC. The backend has the :class:`~tritonllm.perf.loadgen.Backend` shape
:func:`~tritonllm.perf.loadgen.run_point` drives, with the client's own result types
(:class:`tritonllm.client.Delta`, :class:`~tritonllm.client.Completion`).

Requests. ``POST /v1/completions`` with the prompt text as the gRPC path sends it (no chat
template: the same tokens reach the engine, so the token counts of both paths compare),
``model`` = the scenario's model, ``max_tokens``; streamed with
``stream_options.include_usage`` so the last chunk carries the server's token counts (a
:class:`~tritonllm.client.Delta` with ``output_tokens``). Times are ``time.perf_counter()``
when a chunk was parsed, as the gRPC client stamps its responses. The SDK retries nothing
(errors are data) and never reads ``OPENAI_API_KEY``: the key is the one given, or a
placeholder that a server with no keys accepts.

Request options (the harness's ``sampling``, :func:`request_body`):

* ``exclude_input_in_output=True`` is dropped: an OpenAI completion is the generation only
  (``echo`` false); ``False`` is refused (``echo`` would stream the prompt as the first text);
* ``min_tokens`` is refused: the OpenAI API has none, so output lengths cannot be forced
  (:class:`~tritonllm.perf.scenario.Scenario` refuses ``exact_output`` with this endpoint);
* every other option goes into the request body as is; the server refuses what it does not
  know (``tritonllm openai``: a 400 naming the parameter).

Errors. The SDK's exceptions become :mod:`tritonllm.client`'s (``raise ... from``), so
:func:`tritonllm.perf.loadgen.error_kind` files them as it files the gRPC client's: by HTTP
status (:data:`BY_STATUS`: 429 Overloaded, 503 Unavailable, 504 Timeout, ...), an error event
inside a stream by its OpenAI ``code`` (:data:`BY_CODE`, the codes ``tritonllm openai``
answers with), a connection failure as Unavailable, the SDK's timeout as Timeout; anything
else is ServerError.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from tritonllm.client import (
    ClientError,
    Completion,
    Delta,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    ServerError,
    Timeout,
    Timings,
    Unauthorized,
    Unavailable,
)
from tritonllm.contract import ENSEMBLE_IN
from tritonllm.errors import ConfigError

__all__ = ["BY_CODE", "BY_STATUS", "OpenAIBackend", "OpenAIStream", "client_error",
           "request_body"]

#: Sent as the key when none is given (a server with no keys takes any bearer token).
NO_KEY = "none"

#: HTTP status of an error answer -> the client error it is.
BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Unauthorized, 404: ModelNotFound,
    408: Timeout, 413: InvalidRequest, 422: InvalidRequest, 429: Overloaded,
    502: Unavailable, 503: Unavailable, 504: Timeout,
}
#: OpenAI error ``code`` of an error event inside a stream (no status there) -> client error.
BY_CODE: dict[str, type[ClientError]] = {
    "overloaded": Overloaded, "unavailable": Unavailable, "timeout": Timeout,
    "model_not_found": ModelNotFound, "invalid_api_key": Unauthorized,
}


def client_error(e: Exception) -> ClientError:
    """The :mod:`tritonllm.client` error for an exception of the ``openai`` SDK."""
    import openai

    message = str(getattr(e, "message", None) or e)
    if isinstance(e, openai.APITimeoutError):  # before APIConnectionError, its base
        return Timeout(message)
    if isinstance(e, openai.APIConnectionError):
        return Unavailable(message)
    if isinstance(e, openai.APIStatusError):
        status = e.status_code
        cls = BY_STATUS.get(status, InvalidRequest if 400 <= status < 500 else ServerError)
        return cls(f"HTTP {status}: {message}")
    if isinstance(e, openai.APIError):  # an error event in the stream: only its body
        by_type = InvalidRequest if e.type == "invalid_request_error" else ServerError
        return BY_CODE.get(e.code or "", by_type)(message)
    return ServerError(message)


def request_body(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """The harness's request options as extra body fields of a completion (see the module
    docstring); ConfigError for the ones the OpenAI API cannot express."""
    body = dict(sampling)
    exclude = ENSEMBLE_IN.exclude_input_in_output
    if body.pop(exclude, True) is not True:
        raise ConfigError(f"{exclude}=false: not sent over the OpenAI API (its echo would "
                          "stream the prompt as the first text)")
    if ENSEMBLE_IN.min_tokens in body:
        raise ConfigError(f"{ENSEMBLE_IN.min_tokens}: the OpenAI API has no minimum output "
                          "length, so output lengths cannot be forced over --endpoint openai "
                          "(use --no-exact-output)")
    return body


class OpenAIStream:
    """One streamed completion: ``async for delta in stream``; ``completion`` once it ended.

    Deltas: one per chunk with text, one (no text) with the ``finish_reason``, one (no text)
    with the server's ``output_tokens`` from the usage chunk.
    """

    def __init__(self, backend: OpenAIBackend, prompt: str, max_tokens: int,
                 request_id: str | None, body: dict[str, Any]) -> None:
        self._backend, self._prompt, self._max_tokens = backend, prompt, max_tokens
        self._body = body
        self.request_id = request_id
        self.completion: Completion | None = None
        self._iter: AsyncGenerator[Delta, None] | None = None

    def __aiter__(self) -> OpenAIStream:
        return self

    async def __anext__(self) -> Delta:
        if self._iter is None:
            self._iter = self._deltas()
        return await anext(self._iter)

    async def aclose(self) -> None:
        """Leave the stream early: its HTTP response is closed (the server cancels)."""
        if self._iter is not None:
            await self._iter.aclose()

    async def _deltas(self) -> AsyncGenerator[Delta, None]:
        import openai

        start = time.perf_counter()
        first: float | None = None
        times: list[float] = []
        pieces: list[str] = []
        reason: str | None = None
        prompt_tokens = output_tokens = None
        index = 0
        last = start
        try:
            chunks = await self._backend.sdk.completions.create(
                model=self._backend.model, prompt=self._prompt, max_tokens=self._max_tokens,
                stream=True, stream_options={"include_usage": True},
                extra_body=self._body or None)
            async with chunks:
                async for chunk in chunks:
                    now = last = time.perf_counter()
                    if self.request_id is None:
                        self.request_id = chunk.id
                    for choice in chunk.choices:
                        if choice.text:
                            first = now if first is None else first
                            times.append(now)
                            pieces.append(choice.text)
                            yield Delta(choice.text, now, index, choice.finish_reason)
                            index += 1
                        elif choice.finish_reason:
                            yield Delta("", now, index, choice.finish_reason)
                            index += 1
                        reason = choice.finish_reason or reason
                    if chunk.usage is not None:
                        prompt_tokens = chunk.usage.prompt_tokens
                        output_tokens = chunk.usage.completion_tokens
                        yield Delta("", now, index, None, output_tokens)
                        index += 1
        except openai.OpenAIError as e:
            raise client_error(e) from e
        self.completion = Completion("".join(pieces), reason, prompt_tokens, output_tokens,
                                     self.request_id or "", Timings(start, first, last, times))


class OpenAIBackend:
    """The :class:`~tritonllm.perf.loadgen.Backend` over an OpenAI-compatible server.

    ``base_url``: the API's base (``http://HOST:PORT/v1``); ``model``: the model name sent;
    ``api_key``: the bearer token (None: :data:`NO_KEY`); ``headers``: sent with every
    request; ``timeout``: seconds one request may take; ``http_client``: an ``httpx``
    AsyncClient for the SDK (tests pass one over an in-process ASGI app). An async context
    manager: leaving it closes the connections.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float = 120.0,
                 http_client: Any = None) -> None:
        import openai

        self.model = model
        self.sdk = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or NO_KEY,
                                      timeout=timeout, max_retries=0,
                                      default_headers=dict(headers or {}) or None,
                                      http_client=http_client)

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.sdk.close()

    def stream(self, prompt: str, *, max_tokens: int, request_id: str | None = None,
               **sampling: Any) -> OpenAIStream:
        """Stream a completion of ``prompt`` (see :class:`OpenAIStream`)."""
        return OpenAIStream(self, prompt, max_tokens, request_id, request_body(sampling))

    async def generate(self, prompt: str, *, max_tokens: int, request_id: str | None = None,
                       **sampling: Any) -> Completion:
        """A whole completion, not streamed: its timings have no first token."""
        import openai

        body = request_body(sampling)
        start = time.perf_counter()
        try:
            r = await self.sdk.completions.create(model=self.model, prompt=prompt,
                                                  max_tokens=max_tokens,
                                                  extra_body=body or None)
        except openai.OpenAIError as e:
            raise client_error(e) from e
        end = time.perf_counter()
        choice = r.choices[0]
        usage = r.usage
        return Completion(choice.text, choice.finish_reason,
                          usage.prompt_tokens if usage else None,
                          usage.completion_tokens if usage else None,
                          request_id or r.id, Timings(start, None, end))
