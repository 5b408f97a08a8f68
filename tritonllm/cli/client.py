"""``tritonllm generate``, ``health``, ``models``: the client library on the command line.

Readable output by default, one JSON object with ``--json``. tritonclient is imported inside
the commands (through :mod:`tritonllm.client`'s clients), so ``tritonllm --help`` stays
instant. Client errors are TritonLLMErrors: one line on stderr, exit code 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from tritonllm.cli._console import positive
from tritonllm.contract import CONTRACT_AUTO, CONTRACT_CHOICES

DEFAULT_URL = "localhost:8001"


def _headers(ctx: click.Context, param: click.Parameter,
             values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--url, --protocol, --header, --ssl, --root-certificates, --timeout."""
    options = [
        click.option("--url", default=DEFAULT_URL, show_default=True, envvar="TRITONLLM_URL",
                     help="host:port or grpc://host:port (gRPC), http(s)://host:port (HTTP) "
                          "[env TRITONLLM_URL]."),
        click.option("--protocol", type=click.Choice(["grpc", "http"]),
                     help="Override the URL's scheme."),
        click.option("--header", "headers", multiple=True, callback=_headers,
                     metavar="KEY=VALUE",
                     help="Header sent with every call (repeatable), e.g. "
                          "triton-grpc-protocol-apikey=SECRET for a restricted endpoint."),
        click.option("--ssl", is_flag=True, help="Use TLS."),
        click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle for --ssl."),
        click.option("--timeout", type=float, default=60.0, show_default=True,
                     callback=positive, help="Deadline of the call, seconds."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _client(url: str, model: str, protocol: str | None, headers: dict[str, str], ssl: bool,
            root_certificates: str | None, timeout: float,
            contract: str = CONTRACT_AUTO) -> Any:
    from tritonllm.client import LLMClient

    return LLMClient(url, model, protocol=protocol, headers=headers or None, ssl=ssl,
                     root_certificates=root_certificates, timeout=timeout, contract=contract)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


def completion_json(c: Any) -> dict[str, Any]:
    """A Completion as the JSON object ``generate --json`` prints (seconds for times)."""
    t = c.timings
    return {
        "request_id": c.request_id,
        "text": c.text,
        "finish_reason": c.finish_reason,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "attempts": c.attempts,
        "timings": {"ttft_s": t.ttft, "e2e_s": t.e2e, "itl_s": t.itl,
                    "responses": len(t.token_times)},
    }


@click.command("generate")
@click.argument("prompt")
@connection_options
@click.option("-m", "--model", default="ensemble", show_default=True,
              help="ensemble, tensorrt_llm_bls, llmapi, or any model with their contract.")
@click.option("--contract", type=click.Choice(CONTRACT_CHOICES), default=CONTRACT_AUTO,
              show_default=True,
              help="The model's request contract: classic (tensorrtllm_backend's ensemble) "
                   "or llmapi; auto reads it from the model's metadata.")
@click.option("--stream/--no-stream", default=False, show_default=True,
              help="Print the text as it arrives.")
@click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=float)
@click.option("--top-k", type=int)
@click.option("--top-p", type=float)
@click.option("--seed", type=click.IntRange(min=0))
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--bad-word", "bad_words", multiple=True, help="Banned string (repeatable).")
@click.option("--repetition-penalty", type=float)
@click.option("--presence-penalty", type=float)
@click.option("--frequency-penalty", type=float)
@click.option("--min-tokens", type=click.IntRange(min=0))
@click.option("--end-id", type=int)
@click.option("--include-input", is_flag=True,
              help="Return the prompt too (exclude_input_in_output=false).")
@click.option("--request-id", help="Request id [default: a random one].")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: text, finish reason, token counts, timings.")
def generate_cmd(prompt: str, url: str, protocol: str | None, headers: dict[str, str],
                 ssl: bool, root_certificates: str | None, timeout: float, model: str,
                 contract: str, stream: bool, max_tokens: int, as_json: bool,
                 request_id: str | None,
                 stop: tuple[str, ...], bad_words: tuple[str, ...], include_input: bool,
                 **sampling: Any) -> None:
    """Generate text for PROMPT on a running server."""
    options = {k: v for k, v in sampling.items() if v is not None}
    if stop:
        options["stop"] = list(stop)
    if bad_words:
        options["bad_words"] = list(bad_words)
    if include_input:
        options["exclude_input_in_output"] = False
    with _client(url, model, protocol, headers, ssl, root_certificates, timeout,
                 contract) as client:
        if not stream or as_json:
            completion = client.generate(prompt, max_tokens, request_id=request_id,
                                         stream=stream, **options)
            if as_json:
                _echo_json(completion_json(completion))
            else:
                click.echo(completion.text)
            return
        s = client.stream(prompt, max_tokens, request_id=request_id, **options)
        with s:
            for delta in s:
                sys.stdout.write(delta.text)
                sys.stdout.flush()
        sys.stdout.write("\n")
        c = s.completion
        if c is not None:
            ttft = f"{c.timings.ttft * 1000:.0f} ms" if c.timings.ttft is not None else "-"
            click.echo(f"[{c.finish_reason or 'end'}; {c.output_tokens or '?'} tokens; "
                       f"first token {ttft}; total {c.timings.e2e * 1000:.0f} ms]", err=True)


@click.command("health")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def health_cmd(url: str, protocol: str | None, headers: dict[str, str], ssl: bool,
               root_certificates: str | None, timeout: float, as_json: bool) -> None:
    """Is the server live and ready? Exit code 0 only when it is ready."""
    with _client(url, "ensemble", protocol, headers, ssl, root_certificates, timeout) as client:
        h = client.health()
    if as_json:
        _echo_json({"url": url, "live": h.live, "ready": h.ready})
    else:
        click.echo(f"{url}: {'live' if h.live else 'not live'}, "
                   f"{'ready' if h.ready else 'not ready'}")
    if not h.ready:
        sys.exit(1)


def _list_models(client: Any, as_json: bool) -> None:
    rows = client.models()
    if as_json:
        _echo_json({"models": [{"name": m.name, "version": m.version, "state": m.state,
                                "reason": m.reason} for m in rows]})
        return
    width = max([len(m.name) for m in rows] + [5])
    click.echo(f"{'MODEL':<{width}}  VERSION  STATE")
    for m in rows:
        reason = f"  ({m.reason})" if m.reason else ""
        click.echo(f"{m.name:<{width}}  {m.version or '-':<7}  {m.state or '-'}{reason}")


@click.group("models", invoke_without_command=True)
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def models_cmd(ctx: click.Context, url: str, protocol: str | None, headers: dict[str, str],
               ssl: bool, root_certificates: str | None, timeout: float, as_json: bool) -> None:
    """List the server's models and their states; `load` / `unload` them."""
    if ctx.invoked_subcommand is None:
        with _client(url, "ensemble", protocol, headers, ssl, root_certificates,
                     timeout) as client:
            _list_models(client, as_json)


@models_cmd.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def models_list_cmd(url: str, protocol: str | None, headers: dict[str, str], ssl: bool,
                    root_certificates: str | None, timeout: float, as_json: bool) -> None:
    """List the server's models, their versions and states."""
    with _client(url, "ensemble", protocol, headers, ssl, root_certificates, timeout) as client:
        _list_models(client, as_json)


def _ready_versions(rows: list[Any], name: str) -> str:
    ready = sorted({m.version for m in rows if m.name == name and m.state == "READY"
                    and m.version}, key=lambda v: int(v) if v.isdigit() else 0)
    return ", ".join(ready) or "none"


def _control(action: str, models: tuple[str, ...], url: str, protocol: str | None,
             headers: dict[str, str], ssl: bool, root_certificates: str | None,
             timeout: float) -> None:
    from tritonllm.client import ClientError
    from tritonllm.client._control import LoadStep, load_plan

    with _client(url, "ensemble", protocol, headers, ssl, root_certificates, timeout) as client:
        names = list(dict.fromkeys(models)) or sorted({m.name for m in client.models()})
        if not names:
            raise ClientError(f"load: the repository of {url} has no models")
        plan = load_plan({n: client.config(n) for n in names}) if len(names) > 1 \
            else [LoadStep(names[0])]
        if action == "unload":  # callers first, so none is left calling an unloaded model
            plan = [LoadStep(n) for s in reversed(plan) for n in (s.model, *s.with_steps[::-1])]
        for step in plan:  # with ensemble steps: callees first, then the ensemble once
            t0 = time.perf_counter()
            getattr(client, f"{action}_model")(step.model)
            took = time.perf_counter() - t0
            rows = client.models()
            for name in (*step.with_steps, step.model):
                how = f" (with {step.model})" if name != step.model else ""
                click.echo(f"{action}ed {name}{how} in {took:.1f}s; READY versions: "
                           f"{_ready_versions(rows, name)}")


@models_cmd.command("load")
@click.argument("models", nargs=-1)
@connection_options
def models_load_cmd(models: tuple[str, ...], **conn: Any) -> None:
    """Load (or reload: a new version replaces the served one) MODELS; none: all of them.

    The server must run with --model-control-mode explicit. Models are loaded after the
    models they call, so a version swap keeps every request answered.
    """
    _control("load", models, **conn)


@models_cmd.command("unload")
@click.argument("models", nargs=-1, required=True)
@connection_options
def models_unload_cmd(models: tuple[str, ...], **conn: Any) -> None:
    """Unload MODELS (their requests in flight finish first)."""
    _control("unload", models, **conn)
