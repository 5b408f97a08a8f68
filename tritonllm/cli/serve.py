"""``tritonllm serve REPO``: run tritonserver on a model repository until SIGINT/SIGTERM.

The command is a thin layer over :mod:`tritonllm.server`; its option defaults are
:class:`~tritonllm.server.ServerOptions`' defaults, except ``--managed``, which is on here (the
library leaves it off for tests and benchmarks that talk to tritonserver directly). Managed, it
guards the HTTP port, reloads a model whose Python stub died, and drains before stopping
(docs/serving.md, "Shutdown and health").

It prints the endpoints once every model is READY and blocks. On SIGINT or SIGTERM it drains
(``--drain-timeout``; a second signal cuts the drain short), stops the server and exits 0 when
the stop was clean (:attr:`~tritonllm.server.StopReport.clean`: drained, nothing killed, and
tritonserver exited 0 or only idle client streams held it past its exit timeout). Otherwise,
and for errors
(a model's own load error, a busy port, a model that cannot be recovered), it prints one
``error:`` line and exits 1 (the group in :mod:`tritonllm.cli` prints them).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from tritonllm.cli._console import progress_line
from tritonllm.errors import ServingError
from tritonllm.security import (
    ADMIN_KEY_ENV,
    INFERENCE_KEY_ENV,
    AccessPolicy,
    TlsSettings,
    read_secret,
)
from tritonllm.server import (
    MODEL_CONTROL_MODES,
    ServerOptions,
    StopReport,
    TritonServer,
    describe_exit,
)

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ServerOptions)}
_PORT = click.IntRange(0, 65535)
LOOPBACK = "127.0.0.1"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _interrupt_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread while inside."""
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT,
                                                                       signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _hurry_on_signals(server: TritonServer) -> None:
    """While stopping, SIGINT or SIGTERM cut the drain short instead of interrupting."""
    def hurry(signum: int, frame: FrameType | None) -> None:
        click.echo(f"{signal.Signals(signum).name} again: cutting the drain short", err=True)
        server.hurry()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, hurry)


def _say(message: str) -> None:
    click.echo(f"tritonllm: {message}", err=True)


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("repo", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("tritonserver_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS]...")
@click.option("--http-port", type=_PORT, default=_DEFAULTS["http_port"], show_default=True,
              help="0 picks a free port.")
@click.option("--grpc-port", type=_PORT, default=_DEFAULTS["grpc_port"], show_default=True,
              help="0 picks a free port.")
@click.option("--metrics-port", type=_PORT, default=_DEFAULTS["metrics_port"],
              show_default=True, help="0 picks a free port.")
@click.option("--host", default=LOOPBACK, show_default=True,
              help="Address the endpoints listen on (0.0.0.0: every interface; the container "
                   "entrypoint says so).")
@click.option("--admin-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The key of the admin endpoints (model control, shared memory, statistics, "
                   f"trace, logging) [default: ${ADMIN_KEY_ENV}; none: they stay closed].")
@click.option("--inference-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A key for inference and metadata too [default: ${INFERENCE_KEY_ENV}; "
                   "none: open].")
@click.option("--no-auth", is_flag=True,
              help="Open every endpoint (no key anywhere).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="gRPC TLS: the server's certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="gRPC TLS: the server's private key (PEM).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="gRPC mutual TLS: clients must present a certificate this CA signed.")
@click.option("--timeout", "startup_timeout", type=click.FloatRange(min=0, min_open=True),
              default=_DEFAULTS["startup_timeout"], show_default=True,
              help="Seconds until every model must be READY.")
@click.option("--log-verbose", type=click.IntRange(min=0), default=_DEFAULTS["log_verbose"],
              show_default=True, help="tritonserver --log-verbose level.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Server log [default: a temporary file, kept if the server fails].")
@click.option("--model-control-mode", type=click.Choice(MODEL_CONTROL_MODES),
              default=_DEFAULTS["model_control_mode"], show_default=True)
@click.option("--backend-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Backend directory to use as is [default: prepared from nvidia-pytriton].")
@click.option("--managed/--unmanaged", default=True, show_default=True,
              help="Guard the HTTP port, reload a model whose Python stub died, drain on "
                   "stop (runs tritonserver with explicit model control).")
@click.option("--drain-timeout", type=click.FloatRange(min=0),
              default=_DEFAULTS["drain_timeout"], show_default=True,
              help="Managed: seconds a stop waits for requests in flight (0: no drain).")
@click.option("--http-form-limit", type=click.IntRange(min=1),
              default=_DEFAULTS["http_form_limit"], show_default=True,
              help="Managed: form-encoded HTTP bodies of this many bytes or more get 413 "
                   "(Triton 2.51 crashes on them from 4 MiB).")
def serve_cmd(repo: Path, tritonserver_args: tuple[str, ...], admin_key_file: Path | None,
              inference_key_file: Path | None, no_auth: bool, tls_cert: Path | None,
              tls_key: Path | None, tls_ca: Path | None, **options: Any) -> None:
    """Serve the Triton model repository REPO until Ctrl-C (SIGINT) or SIGTERM.

    Secure by default: it listens on 127.0.0.1, and the admin endpoints need a key (with none
    given, only this launcher holds one); --inference-key-file closes inference too; --no-auth
    opens everything. Keys come from files or the environment, never the command line.

    Uses $TRITONSERVER, else tritonserver on PATH, else the one in the nvidia-pytriton wheel.
    Arguments after `--` go to tritonserver unchanged.
    """
    access = access_policy(admin_key_file, inference_key_file, no_auth)
    tls = tls_settings(tls_cert, tls_key, tls_ca)
    settings = ServerOptions(repo=repo, extra_args=tritonserver_args, access=access, tls=tls,
                             **options)
    server = TritonServer(settings, say=_say)
    t0 = time.perf_counter()
    ready = False
    with _interrupt_on_signals():
        try:
            with progress_line() as say:
                say(f"starting tritonserver on {repo}")
                server.start()
                say(f"tritonserver pid {server.pid}, log {server.log_path}")
                server.wait_ready(progress=say)
            ready = True
            _print_endpoints(server, time.perf_counter() - t0)
            code = server.wait()
            raise ServingError(f"tritonserver {describe_exit(code)} while serving; "
                              f"log: {server.log_path}")
        except KeyboardInterrupt:
            click.echo("stopping tritonserver", err=True)
            _hurry_on_signals(server)
            server.stop()
            if not ready:
                sys.exit(130)
            _report_stop(server.stop_report)
        finally:
            _hurry_on_signals(server)
            server.stop()


def access_policy(admin_key_file: Path | None, inference_key_file: Path | None,
                  no_auth: bool) -> AccessPolicy:
    """The policy of the options (keys from the files, else the environment)."""
    if no_auth:
        if admin_key_file or inference_key_file:
            raise click.UsageError("--no-auth opens every endpoint: it cannot go with "
                                   "--admin-key-file / --inference-key-file")
        return AccessPolicy(no_auth=True)
    return AccessPolicy(
        admin_key=read_secret(admin_key_file, ADMIN_KEY_ENV, "--admin-key-file"),
        inference_key=read_secret(inference_key_file, INFERENCE_KEY_ENV,
                                  "--inference-key-file"))


def tls_settings(cert: Path | None, key: Path | None, ca: Path | None) -> TlsSettings | None:
    if cert is None and key is None:
        if ca is not None:
            raise click.UsageError("--tls-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise click.UsageError("--tls-cert and --tls-key go together")
    return TlsSettings(cert, key, ca)


def _report_stop(report: StopReport | None) -> None:
    """One line on how the stop went; a stop that was not clean is an error (exit 1)."""
    if report is None or report.clean:
        click.echo("tritonserver stopped" + (f": {report.describe()}" if report else ""),
                   err=True)
        return
    raise ServingError(f"tritonserver stopped uncleanly: {report.describe()}")


def _print_endpoints(server: TritonServer, seconds: float) -> None:
    names = ", ".join(m.name for m in server.models if m.state == "READY") or "none"
    version = f" {server.version}" if server.version else ""
    metrics = server.url_metrics if server.options.metrics_enabled else "disabled"
    click.echo(f"tritonserver{version} ready in {seconds:.1f}s, models: {names}")
    click.echo(f"  HTTP     {server.url_http}")
    click.echo(f"  gRPC     {server.url_grpc}")
    click.echo(f"  metrics  {metrics}")
    click.echo(f"  log      {server.log_path}")
    click.echo(f"  pid      {server.pid}")
    o = server.options
    if o.access is not None:
        click.echo(f"  {o.access.describe()}")
    if o.tls is not None:
        click.echo(f"  gRPC TLS {'mutual (clients need a certificate)' if o.tls.mutual else 'on'};"
                   " HTTP is plain: put a TLS proxy in front of it (docs/security.md)")
    if o.host == LOOPBACK:
        click.echo("  listening on loopback only (--host 0.0.0.0 for every interface)")
    click.echo("Ctrl-C (SIGINT) or SIGTERM stops it.")
