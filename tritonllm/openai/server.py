"""The front as ``tritonllm openai`` assembles and runs it: client, chat template, app, uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FrontOptions", "make_app", "run"]


@dataclass(frozen=True)
class FrontOptions:
    """Everything ``tritonllm openai`` takes (the CLI's options; one place for their defaults).

    ``url``: Triton's gRPC address; ``model``: the Triton model requests go to (``ensemble``,
    ``tensorrt_llm_bls``, or an llmapi model); ``served_name``: the name clients use
    (default: ``model``); ``tokenizer``: the model's tokenizer directory (its chat template and
    special tokens); ``chat_template``: a Jinja file that replaces the tokenizer's;
    ``api_keys``: accepted keys (empty: no key needed); ``timeout``: seconds one Triton request
    may take.
    """

    url: str = "localhost:8001"
    model: str = "ensemble"
    served_name: str | None = None
    tokenizer: Path | None = None
    chat_template: Path | None = None
    api_keys: tuple[bytes, ...] = ()
    host: str = "127.0.0.1"
    port: int = 9000
    timeout: float = 600.0
    default_max_tokens: int = 16  # OpenAI's completions default when max_tokens is omitted


def _tokenizer_parts(o: FrontOptions) -> tuple[
        Callable[[list[dict[str, Any]]], str] | None, Callable[[str, bool], int] | None]:
    """``(render_chat, count_tokens)`` from the model's tokenizer (None without one)."""
    from tritonllm.errors import ConfigError

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
                            default_max_tokens=o.default_max_tokens, observe=metrics)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        # One retry of a request refused before any text (a server restarting, a stub being
        # reloaded); the client never retries once text may have reached the caller.
        serving.client = AsyncLLMClient(o.url, model=o.model, timeout=o.timeout,
                                        retry=RetryPolicy(attempts=2))
        try:
            yield
        finally:
            await serving.client.close()

    async def ready() -> bool:
        if serving.client is None:
            return False
        try:
            statuses = await serving.client.models(timeout=5)
        except ClientError:
            return False
        return any(s.name == o.model and s.state == "READY" for s in statuses)

    return create_app(serving, api_keys=o.api_keys, ready=ready, metrics=metrics,
                      lifespan=lifespan)


def run(o: FrontOptions, log_level: str = "warning") -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn's handling: in-flight requests finish)."""
    import importlib.util

    import uvicorn

    app = make_app(o)
    # httptools (uvicorn[standard]) parses HTTP in C; the event loop stays asyncio's (gRPC's
    # asyncio channel runs on it).
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    uvicorn.run(app, host=o.host, port=o.port, log_level=log_level, access_log=False,
                http=http, loop="asyncio")
