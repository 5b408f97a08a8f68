"""``tritonllm openai``: the OpenAI-compatible API in front of a Triton server.

A separate process (FastAPI + uvicorn) that speaks gRPC to any tritonserver serving the
tensorrtllm_backend contract, so it scales apart from the GPU servers. API keys come from
``--api-key-file`` or the environment (:data:`tritonllm.openai.app.API_KEYS_ENV`), never from
argv; so does the front's own key to a secured Triton (``--triton-inference-key-file`` or
``$TRITONLLM_INFERENCE_KEY``). ``--tls-cert``/``--tls-key`` serve HTTPS (``--tls-ca``: client
certificates required); ``--triton-ca`` speaks TLS to Triton. fastapi/uvicorn are imported
inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from tritonllm.cli._console import positive
from tritonllm.cli.client import tls_pair
from tritonllm.contract import EMBEDDING, ENSEMBLE
from tritonllm.openai.server import FrontOptions

_D = FrontOptions()


@click.command("openai")
@click.option("--url", default=_D.url, show_default=True, help="Triton's gRPC address.")
@click.option("--model", default=_D.model, show_default=True,
              help=f"The Triton model requests go to ({ENSEMBLE}, tensorrt_llm_bls, or an "
                   "llmapi model).")
@click.option("--served-model-name", help="The model name clients send [default: --model].")
@click.option("--embedding-model", metavar="NAME",
              help=f"The Triton embedding model POST /v1/embeddings calls; /health then waits "
                   f"for it too [default: {EMBEDDING}, served while Triton has it loaded].")
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
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve HTTPS with this certificate (PEM; with --tls-key).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The private key of --tls-cert (PEM).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require client certificates signed by this CA (mutual TLS; needs "
                   "--tls-cert).")
@click.option("--triton-inference-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding Triton's inference key, for a repository that restricts "
                   "inference [default: $TRITONLLM_INFERENCE_KEY].")
@click.option("--triton-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Speak TLS to Triton's gRPC, its certificate checked against this CA.")
@click.option("--timeout", type=float, default=_D.timeout, show_default=True,
              callback=positive, help="Seconds one Triton request may take.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info",
                                                "debug"]), default="warning",
              show_default=True)
def openai_cmd(url: str, model: str, served_model_name: str | None,
               embedding_model: str | None, repo: Path | None,
               tokenizer: Path | None, chat_template: Path | None, host: str, port: int,
               api_key_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
               tls_ca: Path | None, triton_inference_key_file: Path | None,
               triton_ca: Path | None, timeout: float, log_level: str) -> None:
    """Serve the OpenAI API (chat, completions, embeddings, models) for a Triton model.

    POST /v1/chat/completions and /v1/completions (streaming as server-sent events), POST
    /v1/embeddings (the embedding model), GET /v1/models, GET /health (200 once the Triton
    model is ready; needs no key), GET /metrics.
    Unsupported parameters are a 400 naming them (docs/openai.md has the table).
    """
    from tritonllm.openai.app import API_KEYS_ENV, load_api_keys
    from tritonllm.openai.server import run
    from tritonllm.security import INFERENCE_KEY_ENV, read_secret

    if repo is not None and tokenizer is not None:
        raise click.UsageError("--repo and --tokenizer: give one")
    tls_pair(tls_cert, tls_key)
    if tls_ca is not None and tls_cert is None:
        raise click.UsageError("--tls-ca needs --tls-cert and --tls-key: client certificates "
                               "are checked over HTTPS only")
    if repo is not None:
        from tritonllm.perf.prompts import find_tokenizer

        tokenizer = find_tokenizer(None, repo)
    keys = load_api_keys(api_key_file)
    triton_key = read_secret(triton_inference_key_file, INFERENCE_KEY_ENV,
                             "--triton-inference-key-file")
    options = FrontOptions(url=url, model=model, served_name=served_model_name,
                           embedding_model=embedding_model, tokenizer=tokenizer,
                           chat_template=chat_template, api_keys=keys,
                           host=host, port=port, timeout=timeout, tls_cert=tls_cert,
                           tls_key=tls_key, tls_ca=tls_ca, triton_inference_key=triton_key,
                           triton_ca=triton_ca)
    where = f"{options.scheme}://{host}:{port}/v1"
    if tls_ca is not None:
        where += " (client certificates required)"
    auth = (f"{len(keys)} API key(s) ({'--api-key-file' if api_key_file else API_KEYS_ENV})"
            if keys else "no API key: every route is open")
    triton = (url + (" over TLS" if triton_ca else "")
              + (f" with the inference key ({triton_key.source})" if triton_key else ""))
    chat = "chat template of " + str(chat_template or tokenizer) if tokenizer else "no chat"
    embeddings = (f"embeddings: {embedding_model}" if embedding_model else
                  f"embeddings: {EMBEDDING} when Triton has it")
    click.echo(f"OpenAI API at {where} -> Triton {triton} model {model}; {chat}; "
               f"{embeddings}; {auth}", err=True)
    run(options, log_level=log_level)
