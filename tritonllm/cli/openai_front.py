"""``tritonllm openai``: the OpenAI-compatible API in front of a Triton server.

A separate process (FastAPI + uvicorn) that speaks gRPC to any tritonserver serving the
tensorrtllm_backend contract, so it scales apart from the GPU servers. API keys come from
``--api-key-file`` or the environment (:data:`tritonllm.openai.app.API_KEYS_ENV`), never from
argv. fastapi/uvicorn are imported inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from tritonllm.cli._console import positive
from tritonllm.contract import ENSEMBLE
from tritonllm.openai.server import FrontOptions

_D = FrontOptions()


@click.command("openai")
@click.option("--url", default=_D.url, show_default=True, help="Triton's gRPC address.")
@click.option("--model", default=_D.model, show_default=True,
              help=f"The Triton model requests go to ({ENSEMBLE}, tensorrt_llm_bls, or an "
                   "llmapi model).")
@click.option("--served-model-name", help="The model name clients send [default: --model].")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A tritonllm repository: its tokenizer (chat template, special tokens).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The model's tokenizer directory (instead of --repo).")
@click.option("--chat-template", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A Jinja chat template that replaces the tokenizer's.")
@click.option("--host", default=_D.host, show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=_D.port, show_default=True)
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Accepted API keys, one per line [default: $TRITONLLM_OPENAI_API_KEYS, "
                   "comma-separated; none: no key needed].")
@click.option("--timeout", type=float, default=_D.timeout, show_default=True,
              callback=positive, help="Seconds one Triton request may take.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info",
                                                "debug"]), default="warning",
              show_default=True)
def openai_cmd(url: str, model: str, served_model_name: str | None, repo: Path | None,
               tokenizer: Path | None, chat_template: Path | None, host: str, port: int,
               api_key_file: Path | None, timeout: float, log_level: str) -> None:
    """Serve the OpenAI API (chat, completions, models) for a Triton model.

    POST /v1/chat/completions and /v1/completions (streaming as server-sent events), GET
    /v1/models, GET /health (200 once the Triton model is ready; needs no key), GET /metrics.
    Unsupported parameters are a 400 naming them (docs/openai.md has the table).
    """
    from tritonllm.openai.app import API_KEYS_ENV, load_api_keys
    from tritonllm.openai.server import run

    if repo is not None and tokenizer is not None:
        raise click.UsageError("--repo and --tokenizer: give one")
    if repo is not None:
        from tritonllm.perf.prompts import find_tokenizer

        tokenizer = find_tokenizer(None, repo)
    keys = load_api_keys(api_key_file)
    options = FrontOptions(url=url, model=model, served_name=served_model_name,
                           tokenizer=tokenizer, chat_template=chat_template, api_keys=keys,
                           host=host, port=port, timeout=timeout)
    where = f"http://{host}:{port}/v1"
    auth = (f"{len(keys)} API key(s) ({'--api-key-file' if api_key_file else API_KEYS_ENV})"
            if keys else "no API key: every route is open")
    chat = "chat template of " + str(chat_template or tokenizer) if tokenizer else "no chat"
    click.echo(f"OpenAI API at {where} -> Triton {url} model {model}; {chat}; {auth}",
               err=True)
    run(options, log_level=log_level)
