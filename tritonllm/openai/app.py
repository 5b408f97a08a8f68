"""The OpenAI-compatible HTTP front: FastAPI routes over :class:`~tritonllm.openai.serving.
OpenAIServing`.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``,
``GET /v1/models`` (the served model, and the embedding model while Triton has it loaded),
``GET /v1/models/{id}``, ``GET /health`` (200 only while the Triton model is ready; open),
``GET /metrics`` (:mod:`tritonllm.openai.metrics`).

API keys: when keys are configured (:func:`load_api_keys`: a file, or the environment; never
argv), every route but ``/health`` needs ``Authorization: Bearer <key>``; the key is compared
in constant time against each configured key and never logged. Errors are OpenAI's JSON shape
with the status the SDK maps onto its exception types (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, 5xx APIStatusError).

Bodies: at most :data:`MAX_BODY_BYTES` (413 beyond), JSON objects only (400 otherwise).

FastAPI is imported at module level (it reads the routes' annotations from this module's
globals); the CLI imports this module only inside its command.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from tritonllm.errors import ConfigError
from tritonllm.openai.metrics import CONTENT_TYPE
from tritonllm.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIError,
    error_body,
    now,
    parse_request,
)

__all__ = ["API_KEYS_ENV", "MAX_BODY_BYTES", "create_app", "load_api_keys"]

#: Environment variable with the API keys (comma-separated), when no --api-key-file is given.
API_KEYS_ENV = "TRITONLLM_OPENAI_API_KEYS"
MAX_BODY_BYTES = 16 * 2**20
OPEN_ROUTES = frozenset({"/health"})


def load_api_keys(key_file: Path | None, environ: Mapping[str, str] = os.environ
                  ) -> tuple[bytes, ...]:
    """The configured API keys: one per line of ``key_file`` (blank lines and ``#`` comments
    skipped), else :data:`API_KEYS_ENV` split on commas; empty: no key needed."""
    if key_file is not None:
        try:
            lines = key_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"--api-key-file: cannot read {key_file}: {e.strerror}") from None
        keys = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not keys:
            raise ConfigError(f"--api-key-file: {key_file} holds no key")
    else:
        keys = [k.strip() for k in environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    return tuple(k.encode() for k in keys)


def _authorized(header: str | None, keys: Iterable[bytes]) -> bool:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.strip().encode()
    ok = False
    for key in keys:  # every key is compared: the time does not say which one matched
        ok |= hmac.compare_digest(given, key)
    return ok


def create_app(serving: Any, *, api_keys: tuple[bytes, ...] = (), ready: Any = None,
               metrics: Any = None, lifespan: Any = None) -> Any:
    """The ASGI app. ``serving``: an :class:`~tritonllm.openai.serving.OpenAIServing`;
    ``ready``: ``async () -> bool`` (the Triton model is ready); ``metrics``: a
    :class:`~tritonllm.openai.metrics.FrontMetrics`; ``lifespan``: FastAPI's (the server's
    startup/shutdown)."""
    app = FastAPI(title="tritonllm OpenAI-compatible API", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)

    def error(e: OpenAIError) -> Any:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    unauthorized = error(OpenAIError(
        401, "Incorrect or missing API key: send Authorization: Bearer <key>",
        code="invalid_api_key"))

    class Guard:
        """API keys and per-route counts, as plain ASGI (Starlette's BaseHTTPMiddleware costs
        a task and a stream copy per request)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            path = scope["path"]
            status = 500

            async def counted(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                if api_keys and path not in OPEN_ROUTES:
                    header = next((v.decode("latin-1") for k, v in scope["headers"]
                                   if k == b"authorization"), None)
                    if not _authorized(header, api_keys):
                        await unauthorized(scope, receive, counted)
                        return
                await self.inner(scope, receive, counted)
            finally:
                if metrics is not None:
                    metrics.request(path, status)

    @app.exception_handler(OpenAIError)
    async def openai_error(_request: Request, e: OpenAIError) -> Any:
        return error(e)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> Any:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code)

    async def body(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise OpenAIError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY_BYTES:
                raise OpenAIError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise OpenAIError(400, f"the request body is not valid JSON: {e}") from None

    async def generate(request: Request, chat: bool) -> Any:
        if chat:
            req = parse_request(ChatCompletionRequest, await body(request))
            prep = serving.prepare_chat(req)
            echo = False
        else:
            req = parse_request(CompletionRequest, await body(request))
            prep = serving.prepare_completion(req)
            echo = req.echo
        if not req.stream:
            return JSONResponse(await serving.run(prep, chat=chat, echo=echo))
        events = await serving.stream(prep, chat=chat, echo=echo,
                                      include_usage=req.include_usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(request, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        req = parse_request(EmbeddingRequest, await body(request))
        return JSONResponse(await serving.embeddings(req))

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": now(), "owned_by": "tritonllm"}

    @app.get("/v1/models")
    async def models() -> Any:
        cards = [model_card(serving.served_name)]
        if serving.embedding_model != serving.served_name and await serving.embedding_ready():
            cards.append(model_card(serving.embedding_model))
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Any:
        if model_id == serving.embedding_model and await serving.embedding_ready():
            return model_card(model_id)
        serving.check_model(model_id)
        return model_card(model_id)

    @app.get("/health")
    async def health() -> Any:
        ok = await ready() if ready is not None else True
        return JSONResponse({"status": "ok" if ok else "unavailable"},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Any:
        data = metrics.exposition() if metrics is not None else b""
        return Response(data, media_type=CONTENT_TYPE)

    app.add_middleware(_Outermost, guard=Guard)
    return app


class _Outermost:
    """Puts ``guard`` outside every other middleware (Starlette builds the stack lazily)."""

    def __init__(self, app: Any, guard: Any) -> None:
        self.app = guard(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
