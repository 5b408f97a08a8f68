"""The front as ``tritonllm openai`` assembles and runs it: client, chat template, app, uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.contract import EMBEDDING
from tritonllm.errors import ConfigError
from tritonllm.security import Secret

__all__ = ["FrontOptions", "make_app", "run", "uvicorn_options"]


@dataclass(frozen=True)
class FrontOptions:
    """Everything ``tritonllm openai`` takes (the CLI's options; one place for their defaults).

    ``url``: Triton's gRPC address; ``model``: the Triton model requests go to (``ensemble``,
    ``tensorrt_llm_bls``, or an llmapi model); ``served_name``: the name clients use
    (default: ``model``); ``tokenizer``: the model's tokenizer directory (its chat template and
    special tokens); ``chat_template``: a Jinja file that replaces the tokenizer's;
    ``embedding_model``: the Triton model ``/v1/embeddings`` calls, which ``/health`` then
    waits for too (None: ``embedding``, served whenever Triton has it loaded);
    ``api_keys``: accepted keys (empty: no key needed; never in ``repr``); ``timeout``: seconds
    one Triton request may take.

    TLS of the front itself (HTTPS): ``tls_cert`` and ``tls_key`` (PEM, both or neither);
    ``tls_ca``: clients must then present a certificate this CA signed. Its connection to
    Triton: ``triton_inference_key`` (for a repository that restricts inference) and
    ``triton_ca`` (gRPC over TLS, the server's certificate checked against this CA).
    """

    url: str = "localhost:8001"
    model: str = "ensemble"
    served_name: str | None = None
    tokenizer: Path | None = None
    chat_template: Path | None = None
    embedding_model: str | None = None
    api_keys: tuple[bytes, ...] = field(default=(), repr=False)
    host: str = "127.0.0.1"
    port: int = 9000
    timeout: float = 600.0
    default_max_tokens: int = 16  # OpenAI's completions default when max_tokens is omitted
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    triton_inference_key: Secret | None = None
    triton_ca: Path | None = None

    def __post_init__(self) -> None:
        if self.embedding_model is not None and self.embedding_model in (
                "", self.served_name or self.model):
            raise ConfigError(f"--embedding-model: {self.embedding_model!r} must name the "
                              "embedding model, not be empty or the chat/completions model")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key: give both (the certificate and its "
                              "private key) or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-ca needs --tls-cert and --tls-key: client certificates "
                              "are checked over HTTPS only")

    @property
    def embedding(self) -> str:
        """The embedding model's name (Triton's, and the one clients send)."""
        return self.embedding_model or EMBEDDING

    @property
    def tls(self) -> bool:
        """Whether the front serves HTTPS."""
        return self.tls_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


def _tokenizer_parts(o: FrontOptions) -> tuple[
        Callable[[list[dict[str, Any]]], str] | None, Callable[[str, bool], int] | None]:
    """``(render_chat, count_tokens)`` from the model's tokenizer (None without one)."""
    if o.tokenizer is None:
        if o.chat_template is not None:
            raise ConfigError("--chat-template needs the model's tokenizer too (--tokenizer or "
                              "--repo): its special tokens fill the template")
        return None, None
    from tritonllm.ensembles.tokenization import load_tokenizer
    from tritonllm.openai.chat_template import ChatTemplate

    tokenizer = load_tokenizer(o.tokenizer)

    def count(text: str, prompt: bool) -> int:
        return len(tokenizer(text, add_special_tokens=prompt).input_ids)

    try:
        template = ChatTemplate.from_tokenizer_dir(o.tokenizer, override=o.chat_template,
                                                   tokenizer=tokenizer)
    except ConfigError:
        if o.chat_template is not None:
            raise
        return None, count  # a model without a chat template: completions only

    def render(messages: list[dict[str, Any]]) -> str:
        return template.strip_bos(template.render(messages, add_generation_prompt=True))

    return render, count


def make_app(o: FrontOptions) -> Any:
    """The ASGI app. Its client is made when the app starts (in uvicorn's event loop: a gRPC
    asyncio channel belongs to the loop it was made in) and closed when it stops."""
    from contextlib import asynccontextmanager

    from tritonllm.client import AsyncLLMClient, ClientError, RetryPolicy
    from tritonllm.openai.app import create_app
    from tritonllm.openai.metrics import FrontMetrics
    from tritonllm.openai.serving import OpenAIServing

    render, count = _tokenizer_parts(o)
    served = o.served_name or o.model
    metrics = FrontMetrics(served)
    serving = OpenAIServing(None, served, render_chat=render, count_tokens=count,
                            default_max_tokens=o.default_max_tokens, observe=metrics,
                            embedding_model=o.embedding)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        # One retry of a request refused before any text (a server restarting, a stub being
        # reloaded); the client never retries once text may have reached the caller.
        serving.client = AsyncLLMClient(
            o.url, model=o.model, timeout=o.timeout, retry=RetryPolicy(attempts=2),
            inference_key=o.triton_inference_key, ssl=o.triton_ca is not None,
            root_certificates=str(o.triton_ca) if o.triton_ca is not None else None)
        try:
            yield
        finally:
            await serving.client.close()

    async def ready() -> bool:
        if serving.client is None:
            return False
        # Health and model metadata: what an inference client may read (the repository
        # index is an admin endpoint on a secured server). Triton has metadata for a model
        # only while a version of it is loaded.
        try:
            health = await serving.client.health(timeout=5)
            await serving.client.metadata(o.model, timeout=5)
            if o.embedding_model is not None:  # named: the front serves it, so waits for it
                await serving.client.metadata(o.embedding_model, timeout=5)
        except ClientError:
            return False
        return health.ready

    return create_app(serving, api_keys=o.api_keys, ready=ready, metrics=metrics,
                      lifespan=lifespan)


def uvicorn_options(o: FrontOptions, log_level: str = "warning") -> dict[str, Any]:
    """``uvicorn.run`` / ``uvicorn.Config`` keywords for ``o``: its address and its TLS
    (``tls_ca``: a client certificate is required). ConfigError naming the option for a
    certificate, key or CA that does not load."""
    import importlib.util
    import ssl

    # httptools (uvicorn[standard]) parses HTTP in C; the event loop stays asyncio's (gRPC's
    # asyncio channel runs on it).
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    options: dict[str, Any] = {"host": o.host, "port": o.port, "log_level": log_level,
                               "access_log": False, "http": http, "loop": "asyncio"}
    if o.tls_cert is None:
        return options
    check = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # fail here, in one line
    try:
        check.load_cert_chain(o.tls_cert, o.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--tls-cert {o.tls_cert} / --tls-key {o.tls_key}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    options |= {"ssl_certfile": str(o.tls_cert), "ssl_keyfile": str(o.tls_key)}
    if o.tls_ca is not None:
        try:
            check.load_verify_locations(o.tls_ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"--tls-ca {o.tls_ca}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        options |= {"ssl_ca_certs": str(o.tls_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def run(o: FrontOptions, log_level: str = "warning") -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn's handling: in-flight requests finish)."""
    import uvicorn

    options = uvicorn_options(o, log_level)
    uvicorn.run(make_app(o), **options)
