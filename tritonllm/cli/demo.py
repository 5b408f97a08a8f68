"""``tritonllm demo``: the whole path on one machine, CPU only.

Makes the tiny model, builds the CPU engine (a cache hit the second time), renders and
validates the model repository, starts the real tritonserver, streams one generation through
the ``ensemble`` over gRPC to the terminal with :class:`tritonllm.client.LLMClient`, checks it
against the non-streamed text, and stops the server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tritonllm.cli._console import progress_line
from tritonllm.errors import RepositoryError, ServingError

if TYPE_CHECKING:
    from tritonllm.client import LLMClient

#: Seconds one generation may take.
TIMEOUT = 120.0


@contextmanager
def _errors_naming(model: str) -> Iterator[None]:
    """A client error inside becomes a ServingError naming the model called."""
    from tritonllm.client import ClientError

    try:
        yield
    except ClientError as e:
        raise ServingError(f"{model}: {e}") from e


def _stream(client: LLMClient, prompt: str, max_tokens: int
            ) -> tuple[list[str], float | None, float]:
    """Stream one generation to stdout: its pieces, time to first text and total, seconds."""
    pieces: list[str] = []
    with client.stream(prompt, max_tokens, request_id="demo") as s:
        for delta in s:
            pieces.append(delta.text)
            click.echo(delta.text, nl=False)
    completion = s.completion
    if completion is None:  # pragma: no cover - a stream that ran out always has its result
        raise ServingError(f"{client.model}: the stream ended without a result")
    return pieces, completion.timings.ttft, completion.timings.e2e


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo"), show_default=True,
              help="Where the model, engine and repository go (reused next time).")
@click.option("--prompt", default="The quick brown fox", show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 512), default=48, show_default=True)
@click.option("--model", type=click.Choice(["ensemble", "tensorrt_llm_bls"]), default="ensemble",
              show_default=True, help="Which served model to call.")
def demo_cmd(workdir: Path, prompt: str, max_tokens: int, model: str) -> None:
    """Build a tiny model, serve it with tritonserver, stream a generation."""
    from tritonllm.builders import BuildSettings, build
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository
    from tritonllm.client import LLMClient
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings
    from tritonllm.tiny import make_tiny_model

    checkpoint, engine, repo = workdir / "model", workdir / "engine", workdir / "repository"
    with progress_line() as say:
        if not (checkpoint / "config.json").is_file():
            make_tiny_model(checkpoint, progress=say)
        result = build(BuildSettings(checkpoint=checkpoint, engine="cpu", out=engine,
                                     max_batch_size=16), progress=say)
        say("engine up to date (cache hit)" if result.cached else "engine built")
        render_repository(engine, repo, RepoSettings(
            preprocessing_instance_count=1, postprocessing_instance_count=1,
            bls_instance_count=1), progress=say)
        problems = validate_repository(repo)
        if problems:
            raise RepositoryError(f"{repo}: {len(problems)} problem(s), first: {problems[0]}")
        say("starting tritonserver")
        server = TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0,
                                            metrics_port=0, startup_timeout=300))
        server.start()
        try:
            server.wait_ready(progress=say)
        except BaseException:
            server.stop()
            raise
    try:
        click.echo(f"tritonserver {server.version} ready: HTTP {server.url_http}, "
                   f"gRPC {server.url_grpc}, metrics {server.url_metrics}")
        click.echo(f"\n{model} <- {prompt!r} (max_tokens={max_tokens}, streaming)\n")
        click.secho(prompt, bold=True, nl=False)
        with _errors_naming(model), LLMClient(server.grpc_address, model,
                                              timeout=TIMEOUT) as client:
            pieces, ttft, total = _stream(client, prompt, max_tokens)
            click.echo("")
            whole = client.generate(prompt, max_tokens, request_id="demo").text
        same = "".join(pieces) == whole
        click.echo(f"\n{len([p for p in pieces if p])} streamed pieces, first after "
                   f"{(ttft or 0) * 1000:.0f} ms, done in {total * 1000:.0f} ms; "
                   f"streamed text {'==' if same else '!='} non-streamed text")
        if not same:
            raise ServingError("streamed text differs from the non-streamed text")
    finally:
        server.stop()
        click.echo("server stopped", err=True)
    sys.stdout.flush()
