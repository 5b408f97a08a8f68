"""``tritonllm serve REPO``: run tritonserver on a model repository until SIGINT/SIGTERM.

The command is a thin layer over :mod:`tritonllm.server`; its option defaults are
:class:`~tritonllm.server.ServerOptions`' defaults. It prints the endpoints once every model is
READY, blocks, and on SIGINT or SIGTERM stops the server and exits 0. Errors are one line and
exit 1 (the group in :mod:`tritonllm.cli` prints them): a model's own load error, a busy port.
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

from tritonllm.errors import ServerError
from tritonllm.server import MODEL_CONTROL_MODES, ServerOptions, TritonServer, describe_exit

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ServerOptions)}
_PORT = click.IntRange(0, 65535)


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


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("repo", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("tritonserver_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS]...")
@click.option("--http-port", type=_PORT, default=_DEFAULTS["http_port"], show_default=True,
              help="0 picks a free port.")
@click.option("--grpc-port", type=_PORT, default=_DEFAULTS["grpc_port"], show_default=True,
              help="0 picks a free port.")
@click.option("--metrics-port", type=_PORT, default=_DEFAULTS["metrics_port"],
              show_default=True, help="0 picks a free port.")
@click.option("--host", default=_DEFAULTS["host"], show_default=True,
              help="Address the endpoints listen on.")
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
def serve_cmd(repo: Path, tritonserver_args: tuple[str, ...], **options: Any) -> None:
    """Serve the Triton model repository REPO until Ctrl-C (SIGINT) or SIGTERM.

    Uses $TRITONSERVER, else tritonserver on PATH, else the one in the nvidia-pytriton wheel.
    Arguments after `--` go to tritonserver unchanged.
    """
    from tritonllm.cli import progress_line

    settings = ServerOptions(repo=repo, extra_args=tritonserver_args, **options)
    server = TritonServer(settings)
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
            raise ServerError(f"tritonserver {describe_exit(code)} while serving; "
                              f"log: {server.log_path}")
        except KeyboardInterrupt:
            click.echo("stopping tritonserver", err=True)
            server.stop()
            click.echo("tritonserver stopped", err=True)
            if not ready:
                sys.exit(130)
        finally:
            server.stop()


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
    click.echo("Ctrl-C (SIGINT) or SIGTERM stops it.")
