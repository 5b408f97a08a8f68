"""``tritonllm generate``, ``health``, ``models``: the client library on the command line.

Readable output by default, one JSON object with ``--json``. tritonclient is imported inside
the commands (through :mod:`tritonllm.client`'s clients), so ``tritonllm --help`` stays
instant. Client errors are TritonLLMErrors: one line on stderr, exit code 1.

Every command takes :func:`connection_options` and gets them as one :class:`Connection`. Keys
come from files or the environment (:func:`tritonllm.security.read_secret`), never from argv:
the inference key (generation, metadata) and the admin key (the model list, load, unload).
No message, ``-v`` traceback included, holds a key: :meth:`Connection.errors` masks them.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tritonllm.cli._console import positive
from tritonllm.contract import CONTRACT_AUTO, CONTRACT_CHOICES
from tritonllm.errors import ConfigError, TritonLLMError
from tritonllm.security import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    INFERENCE_HEADER,
    INFERENCE_KEY_ENV,
    Secret,
    mask,
    read_secret,
)

DEFAULT_URL = "localhost:8001"
_MIN_MASKED = 8


def _headers(ctx: click.Context, param: click.Parameter,
             values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def tls_pair(cert: Path | None, key: Path | None, cert_option: str = "--tls-cert",
             key_option: str = "--tls-key") -> None:
    """A certificate and its private key come together: a usage error naming both otherwise."""
    if (cert is None) != (key is None):
        given, missing = (cert_option, key_option) if cert is not None else (key_option,
                                                                              cert_option)
        raise click.UsageError(f"{given} needs {missing}: a certificate and its private key "
                               "go together")


#: The key each header of :mod:`tritonllm.security` is read from, for the hint of an
#: Unauthorized error.
_KEY_OPTIONS = {ADMIN_HEADER: f"--admin-key-file FILE or ${ADMIN_KEY_ENV}",
                INFERENCE_HEADER: f"--inference-key-file FILE or ${INFERENCE_KEY_ENV}"}


@dataclass(frozen=True)
class Connection:
    """Where and how a command reaches Triton: what :func:`connection_options` collects into
    the ``conn`` parameter. Keys are :class:`~tritonllm.security.Secret` s (repr: their
    source); ``--tls-cert`` or ``--root-certificates`` turn TLS on."""

    url: str = DEFAULT_URL
    protocol: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    ssl: bool = False
    root_certificates: str | None = None
    certificate_chain: str | None = None
    private_key: str | None = None
    inference_key: Secret | None = None
    admin_key: Secret | None = None
    timeout: float = 60.0

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """The keys and the values of ``--header`` (all masked in messages)."""
        keys = [k for k in (self.inference_key, self.admin_key) if k is not None]
        # a header value short enough to be a word (x-debug=1) is no key, and masking it
        # would garble messages
        return (*keys, *(Secret(v, "--header") for v in self.headers.values()
                         if len(v) >= _MIN_MASKED))

    def client(self, model: str = "ensemble", contract: str = CONTRACT_AUTO) -> Any:
        """An :class:`~tritonllm.client.LLMClient` on this connection."""
        from tritonllm.client import LLMClient

        try:
            return LLMClient(self.url, model, protocol=self.protocol,
                             headers=dict(self.headers) or None, ssl=self.ssl,
                             root_certificates=self.root_certificates,
                             certificate_chain=self.certificate_chain,
                             private_key=self.private_key, inference_key=self.inference_key,
                             admin_key=self.admin_key, timeout=self.timeout, contract=contract)
        except ValueError as e:  # parse_url's: a malformed --url or --protocol
            raise ConfigError(f"--url: {e}") from None

    @contextmanager
    def errors(self, need: str = INFERENCE_HEADER) -> Iterator[None]:
        """Client errors leave with every secret masked out of their messages (and of the
        exceptions they were raised from, which ``-v`` prints); an Unauthorized one says which
        option gives the key the server asked for (``need``: the header the call needs, where
        the server's message names none)."""
        from tritonllm.client import Unauthorized

        try:
            yield
        except TritonLLMError as e:
            if isinstance(e, Unauthorized):
                header = next((h for h in _KEY_OPTIONS if h in str(e)), need)
                given = self.admin_key if header == ADMIN_HEADER else self.inference_key
                what = "admin" if header == ADMIN_HEADER else "inference"
                how = (f"the {what} key given ({given.source}) was refused" if given is not None
                       else f"the {what} key comes from {_KEY_OPTIONS[header]}")
                lines = str(e).splitlines() or ["unauthorized"]
                _set_message(e, "\n".join([f"{lines[0]} ({how})", *lines[1:]]))
            _mask_chain(e, self.secrets)
            raise


def _set_message(e: BaseException, message: str) -> None:
    e.args = (message, *e.args[1:])
    if isinstance(getattr(e, "message", None), str):
        e.message = message  # type: ignore[attr-defined]


def _mask_chain(e: BaseException | None, known: tuple[Secret, ...]) -> None:
    """Mask ``known`` in ``e`` and the exceptions it came from (their string arguments and
    tritonclient's ``_msg``)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.args = tuple(mask(a, known) if isinstance(a, str) else a for a in e.args)
        for attr in ("message", "_msg"):
            value = getattr(e, attr, None)
            if isinstance(value, str):
                with suppress(AttributeError, TypeError):
                    setattr(e, attr, mask(value, known))
        e = e.__cause__ or e.__context__


def _connection(params: dict[str, Any]) -> Connection:
    cert, key = params.pop("tls_cert"), params.pop("tls_key")
    tls_pair(cert, key)
    inference = read_secret(params.pop("inference_key_file"), INFERENCE_KEY_ENV,
                            "--inference-key-file")
    admin = read_secret(params.pop("admin_key_file"), ADMIN_KEY_ENV, "--admin-key-file")
    if inference is not None and admin is not None and inference == admin:
        raise ConfigError("--inference-key-file and --admin-key-file: the admin and the "
                          "inference key must differ")
    root = params.pop("root_certificates")
    return Connection(
        url=params.pop("url"), protocol=params.pop("protocol"), headers=params.pop("headers"),
        ssl=params.pop("ssl") or cert is not None or root is not None,
        root_certificates=str(root) if root is not None else None,
        certificate_chain=str(cert) if cert is not None else None,
        private_key=str(key) if key is not None else None,
        inference_key=inference, admin_key=admin, timeout=params.pop("timeout"))


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The connection options (--url, --protocol, --header, --ssl, --root-certificates,
    --tls-cert/--tls-key, --inference-key-file, --admin-key-file, --timeout), passed to the
    command as one :class:`Connection`, its ``conn`` parameter."""
    file = click.Path(dir_okay=False, path_type=Path)
    existing = click.Path(exists=True, dir_okay=False, path_type=Path)
    options = [
        click.option("--url", default=DEFAULT_URL, show_default=True, envvar="TRITONLLM_URL",
                     help="host:port or grpc://host:port (gRPC), http(s)://host:port (HTTP) "
                          "[env TRITONLLM_URL]."),
        click.option("--protocol", type=click.Choice(["grpc", "http"]),
                     help="Override the URL's scheme."),
        click.option("--inference-key-file", type=file,
                     help=f"File holding the inference key (its first line) [default: "
                          f"${INFERENCE_KEY_ENV}]."),
        click.option("--admin-key-file", type=file,
                     help=f"File holding the admin key, for model control and the model list "
                          f"[default: ${ADMIN_KEY_ENV}]."),
        click.option("--header", "headers", multiple=True, callback=_headers,
                     metavar="KEY=VALUE",
                     help="Extra header sent with every call (repeatable). Not for keys: a "
                          "command line is visible to every user of the machine; use "
                          "--inference-key-file / --admin-key-file."),
        click.option("--ssl", is_flag=True,
                     help="Use TLS (on by itself with --root-certificates or --tls-cert)."),
        click.option("--root-certificates", type=existing,
                     help="CA bundle the server's certificate is checked against."),
        click.option("--tls-cert", type=existing,
                     help="Client certificate (PEM), for a server that requires one (mutual "
                          "TLS); with --tls-key."),
        click.option("--tls-key", type=existing, help="The private key of --tls-cert (PEM)."),
        click.option("--timeout", type=float, default=60.0, show_default=True,
                     callback=positive, help="Deadline of the call, seconds."),
    ]

    @functools.wraps(f)
    def command(*args: Any, **params: Any) -> Any:
        conn = _connection(params)
        return f(*args, conn=conn, **params)

    for option in reversed(options):
        command = option(command)
    return command


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
def generate_cmd(prompt: str, conn: Connection, model: str, contract: str, stream: bool,
                 max_tokens: int, as_json: bool, request_id: str | None,
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
    with conn.errors(), conn.client(model, contract) as client:
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
def health_cmd(conn: Connection, as_json: bool) -> None:
    """Is the server live and ready? Exit code 0 only when it is ready."""
    with conn.errors(), conn.client() as client:
        h = client.health()
    if as_json:
        _echo_json({"url": conn.url, "live": h.live, "ready": h.ready})
    else:
        click.echo(f"{conn.url}: {'live' if h.live else 'not live'}, "
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
def models_cmd(ctx: click.Context, conn: Connection, as_json: bool) -> None:
    """List the server's models and their states; `load` / `unload` them.

    The model list and model control are admin endpoints on a secured server: they need the
    admin key (--admin-key-file or $TRITONLLM_ADMIN_KEY).
    """
    if ctx.invoked_subcommand is None:
        with conn.errors(ADMIN_HEADER), conn.client() as client:
            _list_models(client, as_json)


@models_cmd.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def models_list_cmd(conn: Connection, as_json: bool) -> None:
    """List the server's models, their versions and states (needs the admin key on a secured
    server)."""
    with conn.errors(ADMIN_HEADER), conn.client() as client:
        _list_models(client, as_json)


def _ready_versions(rows: list[Any], name: str) -> str:
    ready = sorted({m.version for m in rows if m.name == name and m.state == "READY"
                    and m.version}, key=lambda v: int(v) if v.isdigit() else 0)
    return ", ".join(ready) or "none"


def _control(action: str, models: tuple[str, ...], conn: Connection) -> None:
    from tritonllm.client import ClientError
    from tritonllm.client._control import LoadStep, load_plan

    with conn.errors(ADMIN_HEADER), conn.client() as client:
        names = list(dict.fromkeys(models)) or sorted({m.name for m in client.models()})
        if not names:
            raise ClientError(f"load: the repository of {conn.url} has no models")
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
def models_load_cmd(models: tuple[str, ...], conn: Connection) -> None:
    """Load (or reload: a new version replaces the served one) MODELS; none: all of them.

    The server must run with --model-control-mode explicit, and on a secured server the call
    needs the admin key (--admin-key-file or $TRITONLLM_ADMIN_KEY). Models are loaded after
    the models they call, so a version swap keeps every request answered.
    """
    _control("load", models, conn)


@models_cmd.command("unload")
@click.argument("models", nargs=-1, required=True)
@connection_options
def models_unload_cmd(models: tuple[str, ...], conn: Connection) -> None:
    """Unload MODELS (their requests in flight finish first; needs the admin key on a secured
    server)."""
    _control("unload", models, conn)
