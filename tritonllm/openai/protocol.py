"""The OpenAI API's wire types, as the front accepts and returns them (pydantic v2).

One request model per route (:class:`ChatCompletionRequest`, :class:`CompletionRequest`,
:class:`EmbeddingRequest`), parsed once from the JSON body and converted by
:meth:`_GenerationRequest.sampling` into the keyword options of
:meth:`tritonllm.client.AsyncLLMClient.stream` — the one place where an OpenAI parameter
becomes a request input (an embedding request's ``input`` goes to
:meth:`~tritonllm.client.AsyncLLMClient.embed` as it is, which checks the texts). The
parameters are data: :data:`SUPPORTED` (mapped), :data:`ACCEPTED` (taken with no effect on
generation, and why), :data:`REFUSED` (known but not supported: a 400 naming it), and
:data:`EMBEDDING_PARAMETERS` for embeddings; anything else in the body is an unknown
parameter, also a 400 naming it. Nothing is ignored silently.

Errors keep OpenAI's JSON shape, ``{"error": {"message", "type", "param", "code"}}``
(:class:`OpenAIError`), so the official SDK raises its own exception types.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tritonllm.errors import TritonLLMError

__all__ = [
    "ACCEPTED",
    "EMBEDDING_PARAMETERS",
    "MAX_N",
    "MAX_STOPS",
    "REFUSED",
    "SUPPORTED",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "EmbeddingRequest",
    "OpenAIError",
    "Usage",
    "encode_embedding",
    "error_body",
    "parse_request",
]

MAX_N = 16  # choices per request (each is a Triton request of its own)
MAX_STOPS = 16
MAX_STOP_CHARS = 1024

#: OpenAI parameter -> what it becomes (docs/openai.md's table is this table).
SUPPORTED: dict[str, str] = {
    "model": "must name the served model (GET /v1/models)",
    "messages": "rendered with the tokenizer's chat template (chat)",
    "prompt": "a string or a list of strings, one choice set each (completions)",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens (chat; wins over max_tokens)",
    "temperature": "temperature (0 is greedy); omitted: the server's default",
    "top_p": "top_p",
    "seed": "seed (choice i of n uses seed + i)",
    "stop": "stop strings: the server's stop_words, and matched on the text here (OpenAI's "
            "semantics: the output ends before the stop string)",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "n": f"n choices, each its own Triton request (1..{MAX_N})",
    "stream": "server-sent events ending in data: [DONE]",
    "stream_options": "include_usage: a last chunk with usage",
    "echo": "the prompt is prepended to the text (completions)",
    "logprobs": "false / null only: the Triton contract's text outputs carry no per-token "
                "log probabilities (chat: logprobs=true is refused; completions: any number)",
    "top_logprobs": "0 / null only (see logprobs)",
}
#: Taken and passed on nowhere: they do not change what is generated.
ACCEPTED: dict[str, str] = {
    "user": "an end-user id for the caller's own abuse tracking; not used",
}
#: Known OpenAI parameters this front does not support.
REFUSED: dict[str, str] = {
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "parallel_tool_calls": "tool calling is not supported",
    "response_format": "structured outputs are not supported",
    "logit_bias": "logit_bias is not supported",
    "best_of": "best_of is not supported (use n)",
    "suffix": "suffix (insertion) is not supported",
    "audio": "audio output is not supported",
    "modalities": "only text is supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "reasoning models are not supported",
    "service_tier": "service tiers are not supported",
    "store": "stored completions are not supported",
    "metadata": "stored completions are not supported",
    "web_search_options": "web search is not supported",
}


#: The most texts one embeddings request may carry (OpenAI's own limit).
MAX_EMBEDDING_INPUTS = 2048
#: ``POST /v1/embeddings``: parameter -> what it becomes (docs/openai.md's table is this table).
EMBEDDING_PARAMETERS: dict[str, str] = {
    "model": "must name the served embedding model (GET /v1/models lists it)",
    "input": f"a string or a list of strings (at most {MAX_EMBEDDING_INPUTS}), one vector "
             "each, in order; token arrays and empty texts are a 400, and so is a text over "
             "the model's max length unless `truncate` is true",
    "encoding_format": '"float" (default) or "base64" (the little-endian float32 bytes)',
    "dimensions": "only the model's own dimension (vectors are not shortened): any other "
                  "is a 400",
    "user": "accepted, no effect: an end-user id for the caller's own abuse tracking",
    "truncate": "ours (not OpenAI's; default false): true cuts a text over the model's max "
                "length to it, as sentence-transformers does, instead of a 400; "
                "`usage` counts the tokens embedded",
}


class OpenAIError(TritonLLMError):
    """An error the front answers with: HTTP ``status`` and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Request(_Strict):
    """A route's request: parsed by :func:`parse_request`, then its cross-field :meth:`check`."""

    def check(self) -> None:
        """Cross-field rules (OpenAIError naming the parameter); none by default."""


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message. ``content`` is a string or text parts (joined); other part types (images,
    audio) are refused by their ``type``. Extra keys (``name``, ...) go to the template, which
    may use them."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _only_text(cls, v: Any) -> Any:
        if isinstance(v, list):
            for i, part in enumerate(v):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(f"content[{i}].type {kind!r} is not supported: only "
                                     "'text' parts")
        return v

    def for_template(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            out["content"] = "".join(p.text for p in self.content)
        return out


class _GenerationRequest(_Request):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**64)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        for s in stops:
            if not s:
                raise ValueError("a stop string must not be empty")
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(f"a stop string may have at most {MAX_STOP_CHARS} characters")
        return v

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def token_limit(self) -> int | None:
        return self.max_tokens

    def sampling(self, choice: int = 0) -> dict[str, Any]:
        """The client's keyword options for choice ``choice`` (None: not sent)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": None if self.seed is None else (self.seed + choice) % 2**64,
            "stop": self.stops or None,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }

    def check(self) -> None:
        """Cross-field rules (OpenAIError naming the parameter)."""
        if self.stream_options is not None and not self.stream:
            raise OpenAIError(400, "stream_options is only allowed with stream=true",
                              param="stream_options")


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def check(self) -> None:
        super().check()
        if self.logprobs:
            raise OpenAIError(400, "logprobs: not supported: the Triton contract's text "
                                   "outputs carry no per-token log probabilities",
                              param="logprobs")
        if self.top_logprobs:
            raise OpenAIError(400, "top_logprobs: not supported (see logprobs)",
                              param="top_logprobs")


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
        return v

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def check(self) -> None:
        super().check()
        if self.logprobs is not None:
            raise OpenAIError(400, "logprobs: not supported: the Triton contract's text "
                                   "outputs carry no per-token log probabilities",
                              param="logprobs")
        if len(self.prompts) * self.n > MAX_N:
            raise OpenAIError(400, f"n: prompts x n may be at most {MAX_N}, got "
                                   f"{len(self.prompts)} x {self.n}", param="n")


class EmbeddingRequest(_Request):
    """``POST /v1/embeddings`` (see :data:`EMBEDDING_PARAMETERS`). Token arrays are refused
    here; the texts themselves (none empty, every item a string) are checked once, by
    :meth:`tritonllm.client.AsyncLLMClient.embed`, whose errors name ``input[i]``."""

    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
    truncate: bool = False

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_arrays(cls, v: Any) -> Any:
        if isinstance(v, list) and v and all(
                isinstance(x, int) or (isinstance(x, list) and all(isinstance(y, int)
                                                                   for y in x)) for x in v):
            raise ValueError("token arrays are not supported: send the text")
        if isinstance(v, list) and len(v) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} texts, got {len(v)}")
        return v


def encode_embedding(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    """A vector as the response carries it: the floats, or ``"base64"``: its little-endian
    float32 bytes in base64 (what the official SDK decodes)."""
    if encoding_format == "base64":
        import numpy as np

        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return list(vector)


def parse_request(cls: type[_Request], body: Any) -> Any:
    """The request of ``cls`` in ``body``, or OpenAIError(400) naming the first bad parameter."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    for key in body:
        if key in REFUSED:
            raise OpenAIError(400, f"{key}: {REFUSED[key]}", param=key,
                              code="unsupported_parameter")
    try:
        req = cls.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"]]
        # A union's branch names (str, list[...]) are pydantic's, not the caller's.
        loc = [p for p in loc if not (p in ("str", "list[str]", "list[TextPart]")
                                      or p.startswith(("list[", "function-")))]
        param = loc[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:]) \
            if loc else None
        if err["type"] == "extra_forbidden":
            raise OpenAIError(400, f"{param}: unknown parameter", param=param,
                              code="unknown_parameter") from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise OpenAIError(400, f"{param}: {msg}" if param else msg, param=param) from None
    req.check()
    return req


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
