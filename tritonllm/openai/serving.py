"""What the OpenAI routes do: parsed requests in, Triton requests out, OpenAI responses back.

Every choice is its own Triton request, streamed (also for a non-streamed API call, so that
a stop string found in the text ends the request on the server at once) through the one
client, :class:`tritonllm.client.AsyncLLMClient`. A choice:

* sends the prompt text (chat: the chat template's rendering, see
  :mod:`tritonllm.openai.chat_template`) with ``max_tokens`` and the sampling options of
  :meth:`~tritonllm.openai.protocol._GenerationRequest.sampling`;
* matches the stop strings on the text with OpenAI's semantics
  (:class:`tritonllm.ensembles.stops.StopStrings`: the output ends before the stop string,
  nothing that may turn out to be one is streamed); the server's own ``stop_words`` match ids,
  which catch the stop strings the model spells as they tokenize alone;
* reports ``usage`` from the server's token counts (``return_num_input_tokens`` /
  ``_output_tokens``; from the front's tokenizer where a model reports none), and its
  ``finish_reason``: the server's ``stop`` / ``length``, or ``stop``
  when a stop string ended it here.

Embeddings (``POST /v1/embeddings``) are one :meth:`tritonllm.client.AsyncLLMClient.embed`
call to the embedding model (``embedding`` unless ``tritonllm openai --embedding-model`` names
another): the texts in the client's requests of at most its ``max_batch_size``, the vectors
back in order, ``usage`` from the model's ``num_tokens``. The texts' errors name ``input[i]``.

Leaving a stream (the HTTP client went away: Starlette cancels the response's task) leaves every
choice's ``async with`` block, which cancels its request on the server and frees its engine
slot. Errors are :class:`tritonllm.client.ClientError` s, mapped onto OpenAI's status codes by
:func:`api_error`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tritonllm.client import (
    AsyncLLMClient,
    ClientError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from tritonllm.contract import EMBEDDING, ENSEMBLE_IN, FINISH_LENGTH, FINISH_STOP
from tritonllm.ensembles.stops import StopStrings
from tritonllm.errors import TritonLLMError
from tritonllm.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIError,
    encode_embedding,
    new_id,
    now,
)

__all__ = ["EMBEDDING_INPUT", "ChoiceResult", "OpenAIServing", "api_error"]

#: A tensor name in a server message -> the OpenAI parameter it came from.
_PARAMS = {
    ENSEMBLE_IN.max_tokens: "max_tokens", ENSEMBLE_IN.temperature: "temperature",
    ENSEMBLE_IN.top_p: "top_p", ENSEMBLE_IN.seed: "seed", ENSEMBLE_IN.stop_words: "stop",
    ENSEMBLE_IN.presence_penalty: "presence_penalty",
    ENSEMBLE_IN.frequency_penalty: "frequency_penalty", ENSEMBLE_IN.text_input: "prompt",
}
RETRY_AFTER_S = 1
#: The embedding request's parameter the texts' errors name (``input[2]: empty text``).
EMBEDDING_INPUT = "input"
PROBE_TIMEOUT_S = 5.0  # a metadata probe: is the embedding model loaded?


def api_error(e: ClientError, *, chat: bool = False, embedding: bool = False) -> OpenAIError:
    """The OpenAI error for a client error; the server's message is kept. ``embedding``: of
    an embeddings request (the bad parameter is ``input``)."""
    message = str(e)
    if isinstance(e, ModelNotFound):
        return OpenAIError(404, message, type="not_found_error", code="model_not_found")
    if isinstance(e, InvalidRequest) and embedding:
        # On GPU Triton prefixes a step's error with "in ensemble 'embedding', ".
        named = message.startswith(f"{EMBEDDING_INPUT}:") or f"{EMBEDDING_INPUT}[" in message
        return OpenAIError(400, message, param=EMBEDDING_INPUT if named else None)
    if isinstance(e, InvalidRequest):
        param = next((p for t, p in _PARAMS.items() if f"{t}:" in message or f"{t} " in
                      message), None)
        if chat and param == "prompt":
            param = "messages"
        return OpenAIError(400, message, param=param)
    if isinstance(e, Overloaded):
        return OpenAIError(429, message, type="rate_limit_error", code="overloaded",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(e, Unavailable):
        return OpenAIError(503, message, type="service_unavailable", code="unavailable")
    if isinstance(e, Timeout):
        return OpenAIError(504, message, type="timeout", code="timeout")
    return OpenAIError(500, message, type="server_error")


@dataclass
class ChoiceResult:
    index: int
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None  # perf_counter
    token_times: list[float] = field(default_factory=list)


Event = tuple[str, int, Any]  # ("text", choice, str) | ("done", choice, ChoiceResult)


@dataclass(frozen=True)
class Prepared:
    """One API request made into choices: (prompt text, sampling) per choice."""

    prompts: list[tuple[str, str]]  # (prompt as sent, the prompt as the caller wrote it)
    max_tokens: int | None
    stops: list[str]
    sampling: Callable[[int], dict[str, Any]]
    n: int


class OpenAIServing:
    """The routes' logic over one client and one served model."""

    def __init__(self, client: AsyncLLMClient | None, served_name: str, *,
                 render_chat: Callable[[list[dict[str, Any]]], str] | None,
                 default_max_tokens: int = 16, observe: Any = None,
                 count_tokens: Callable[[str, bool], int] | None = None,
                 embedding_model: str = EMBEDDING) -> None:
        self.client = client
        self.embedding_model = embedding_model
        self.embedding_dimension: int | None = None  # learnt from the first answer
        self.count_tokens = count_tokens
        self.served_name = served_name
        self.render_chat = render_chat
        self.default_max_tokens = default_max_tokens
        self.observe = observe  # tritonllm.openai.metrics.FrontMetrics (or None)

    def _count(self, reported: int | None, text: str, prompt: bool) -> int:
        """The server's token count; where it reports none (NVIDIA's models), the front's
        tokenizer's: the prompt as preprocessing encodes it, the completion re-tokenized."""
        if reported is not None:
            return reported
        return self.count_tokens(text, prompt) if self.count_tokens is not None else 0

    def check_model(self, model: str) -> None:
        if model != self.served_name:
            raise OpenAIError(404, f"The model '{model}' does not exist: this server serves "
                                   f"'{self.served_name}' (GET /v1/models)",
                              type="not_found_error", param="model", code="model_not_found")

    async def embedding_ready(self) -> bool:
        """Whether Triton has the embedding model loaded (its metadata is readable)."""
        if self.client is None:
            return False
        try:
            await self.client.metadata(self.embedding_model, timeout=PROBE_TIMEOUT_S)
        except ClientError:
            return False
        return True

    async def embeddings(self, req: EmbeddingRequest) -> dict[str, Any]:
        """The response body of ``POST /v1/embeddings``."""
        name = self.embedding_model
        if req.model != name:
            what = "is the chat/completions model" if req.model == self.served_name \
                else "does not exist"
            raise OpenAIError(404, f"The model '{req.model}' {what}: this server embeds with "
                                   f"'{name}' (GET /v1/models)", type="not_found_error",
                              param="model", code="model_not_found")
        self._check_dimensions(req.dimensions)
        if self.client is None:
            raise OpenAIError(503, "the front is starting: no Triton client yet",
                              type="service_unavailable")
        try:
            e = await self.client.embed(req.input, model=name, truncate=req.truncate,
                                        field=EMBEDDING_INPUT)
        except ClientError as err:
            raise api_error(err, embedding=True) from err
        self.embedding_dimension = e.dimension
        self._check_dimensions(req.dimensions)
        data = [{"object": "embedding", "index": i,
                 "embedding": encode_embedding(v, req.encoding_format)}
                for i, v in enumerate(e)]
        return {"object": "list", "data": data, "model": name,
                "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens}}

    def _check_dimensions(self, dimensions: int | None) -> None:
        """``dimensions`` must be the model's own (once known): vectors are not shortened."""
        native = self.embedding_dimension
        if dimensions is not None and native is not None and dimensions != native:
            raise OpenAIError(400, f"dimensions: {dimensions} is not supported: "
                                   f"'{self.embedding_model}' makes vectors of {native} "
                                   "(leave dimensions out, or send that)",
                              param="dimensions")

    # ---- one choice ---------------------------------------------------------------------

    async def _choice(self, index: int, prompt: str, max_tokens: int | None,
                      sampling: dict[str, Any], stops: list[str],
                      emit: Callable[[Event], None]) -> ChoiceResult:
        result = ChoiceResult(index)
        matcher = StopStrings(stops) if stops else None
        limit = max_tokens if max_tokens is not None else self.default_max_tokens
        options = {k: v for k, v in sampling.items() if v is not None}
        if self.client is None:
            raise OpenAIError(503, "the front is starting: no Triton client yet",
                              type="service_unavailable")
        stream = self.client.stream(prompt, limit, **options)
        async with stream:
            async for delta in stream:
                text = delta.text
                if matcher is not None:
                    found = matcher.push(text)
                    text = found.text
                    if found.stopped:
                        result.finish_reason = FINISH_STOP
                if text:
                    now_s = time.perf_counter()
                    if result.first_token_s is None:
                        result.first_token_s = now_s
                    result.token_times.append(now_s)
                    result.text += text
                    emit(("text", index, text))
                if result.finish_reason is not None:
                    break  # a stop string: leaving the block cancels the server's request
            else:
                if matcher is not None:
                    rest = matcher.finish()
                    if rest:
                        result.text += rest
                        emit(("text", index, rest))
            done = stream.completion
            result.prompt_tokens = self._count(stream.input_tokens, prompt, True)
            result.completion_tokens = self._count(stream.output_tokens, result.text, False)
        if result.finish_reason is None:
            reason = done.finish_reason if done is not None else None
            if reason in (FINISH_STOP, FINISH_LENGTH):
                result.finish_reason = reason
            else:  # the model does not say: infer from the count
                result.finish_reason = (FINISH_LENGTH if result.completion_tokens >= limit
                                        else FINISH_STOP)
        emit(("done", index, result))
        return result

    async def _events(self, prep: Prepared) -> AsyncGenerator[Event, None]:
        """Every choice's events as they come; leaving early cancels every choice."""
        queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        tasks = []
        for i in range(prep.n * len(prep.prompts)):
            prompt = prep.prompts[i // prep.n][0]
            tasks.append(asyncio.create_task(self._choice(
                i, prompt, prep.max_tokens, prep.sampling(i % prep.n), prep.stops,
                queue.put_nowait)))
            tasks[-1].add_done_callback(lambda t: _put_failure(t, queue))
        left = len(tasks)
        try:
            while left:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item[0] == "done":
                    left -= 1
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the routes ---------------------------------------------------------------------

    def prepare_chat(self, req: ChatCompletionRequest) -> Prepared:
        self.check_model(req.model)
        if self.render_chat is None:
            raise OpenAIError(400, "this server has no chat template: start it with "
                                   "--tokenizer/--repo of a chat model or --chat-template",
                              param="messages")
        try:
            prompt = self.render_chat([m.for_template() for m in req.messages])
        except TritonLLMError as e:  # the template refused this conversation
            raise OpenAIError(400, f"messages: {e}", param="messages") from None
        return Prepared([(prompt, prompt)], req.token_limit(), req.stops, req.sampling, req.n)

    def prepare_completion(self, req: CompletionRequest) -> Prepared:
        self.check_model(req.model)
        return Prepared([(p, p) for p in req.prompts], req.token_limit(), req.stops,
                        req.sampling, req.n)

    async def run(self, prep: Prepared, *, chat: bool, echo: bool = False) -> dict[str, Any]:
        """A whole (non-streamed) response body."""
        results: dict[int, ChoiceResult] = {}
        started = time.perf_counter()
        try:
            async for kind, index, value in self._events(prep):
                if kind == "done":
                    results[index] = value
        except ClientError as e:
            raise api_error(e, chat=chat) from e
        choices = []
        for i in sorted(results):
            r = results[i]
            self._observe(r, started)
            text = (prep.prompts[i // prep.n][1] + r.text) if echo else r.text
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "logprobs": None, "finish_reason": r.finish_reason})
            else:
                choices.append({"index": i, "text": text, "logprobs": None,
                                "finish_reason": r.finish_reason})
        return {"id": new_id("chatcmpl" if chat else "cmpl"),
                "object": "chat.completion" if chat else "text_completion",
                "created": now(), "model": self.served_name, "choices": choices,
                "usage": _usage(results.values(), prep.n),
                "system_fingerprint": None}

    async def stream(self, prep: Prepared, *, chat: bool, echo: bool = False,
                     include_usage: bool = False) -> AsyncIterator[str]:
        """Server-sent events. The first event is awaited before this returns, so an error
        that comes at once (a bad input the server names, a full queue) is still an HTTP
        status; a later one is an ``error`` event before ``[DONE]``."""
        rid, created = new_id("chatcmpl" if chat else "cmpl"), now()
        obj = "chat.completion.chunk" if chat else "text_completion"
        events = self._events(prep)
        started = time.perf_counter()
        try:
            first = await anext(events)
        except StopAsyncIteration:  # pragma: no cover - n >= 1: a choice always ends
            first = None
        except ClientError as e:
            await events.aclose()
            raise api_error(e, chat=chat) from e

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> str:
            body: dict[str, Any] = {"id": rid, "object": obj, "created": created,
                                    "model": self.served_name, "choices": choices}
            if include_usage:
                body["usage"] = usage
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        def piece(index: int, text: str | None, reason: str | None) -> dict[str, Any]:
            if chat:
                return {"index": index, "delta": {} if text is None else {"content": text},
                        "logprobs": None, "finish_reason": reason}
            return {"index": index, "text": text or "", "logprobs": None,
                    "finish_reason": reason}

        async def body() -> AsyncIterator[str]:
            done: dict[int, ChoiceResult] = {}
            try:
                total = prep.n * len(prep.prompts)
                if chat:  # the role first, as OpenAI sends it
                    for i in range(total):
                        yield chunk([{"index": i, "delta": {"role": "assistant",
                                                            "content": ""},
                                      "logprobs": None, "finish_reason": None}])
                elif echo:
                    for i in range(total):
                        yield chunk([piece(i, prep.prompts[i // prep.n][1], None)])
                item = first
                while item is not None:
                    kind, index, value = item
                    if kind == "text":
                        yield chunk([piece(index, value, None)])
                    else:
                        done[index] = value
                        self._observe(value, started)
                        yield chunk([piece(index, None, value.finish_reason)])
                    item = await anext(events, None)
                if include_usage:
                    yield chunk([], _usage(done.values(), prep.n))
            except ClientError as e:
                err = api_error(e, chat=chat)
                yield f"data: {json.dumps(err.body())}\n\n"
            finally:
                await events.aclose()
            yield "data: [DONE]\n\n"

        return body()

    def _observe(self, r: ChoiceResult, started: float) -> None:
        if self.observe is not None:
            self.observe.choice(r, started)


def _put_failure(task: asyncio.Task[Any], queue: asyncio.Queue[Any]) -> None:
    """A choice's task failed: its error goes to the reader (which then cancels the rest)."""
    if not task.cancelled() and task.exception() is not None:
        queue.put_nowait(task.exception())


def _usage(results: Any, n: int) -> dict[str, int]:
    """OpenAI's usage: the prompt counted once per prompt (not per choice), every choice's
    completion tokens."""
    rs = sorted(results, key=lambda r: r.index)
    prompt = sum(r.prompt_tokens for r in rs if r.index % n == 0)
    completion = sum(r.completion_tokens for r in rs)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
