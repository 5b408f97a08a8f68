"""``tritonllm demo``: the whole path on one machine, CPU only.

Makes the tiny model, builds the CPU engine (a cache hit the second time), renders and
validates the model repository, starts the real tritonserver, streams one generation through
the ``ensemble`` over gRPC to the terminal, checks it against the non-streamed text, and stops
the server.
"""

from __future__ import annotations

import queue
import sys
import time
from pathlib import Path
from typing import Any

import click

from tritonllm.errors import ServerError


def _stream(address: str, model: str, prompt: str, max_tokens: int,
            stream: bool) -> tuple[list[str], float | None, float]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    def tensor(name: str, value: Any, dtype: str) -> Any:
        t = grpcclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        return t

    inputs = [tensor("text_input", np.array([[prompt.encode()]], dtype=object), "BYTES"),
              tensor("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
              tensor("stream", np.array([[stream]], dtype=bool), "BOOL")]
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(address)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    t0 = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    try:
        client.async_stream_infer(model, inputs, request_id="demo",
                                  enable_empty_final_response=True)
        while True:
            result, error = results.get(timeout=120)
            if error is not None:
                raise ServerError(f"{model}: {error}")
            response = result.get_response()
            out = result.as_numpy("text_output")
            if out is not None and out.size:
                piece = out.reshape(-1)[0].decode()
                if piece and first is None:
                    first = time.perf_counter() - t0
                pieces.append(piece)
                if stream:
                    click.echo(piece, nl=False)
            if response.parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    return pieces, first, time.perf_counter() - t0


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
    from tritonllm.cli import progress_line
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
            raise ServerError(f"{repo}: {len(problems)} problem(s), first: {problems[0]}")
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
        pieces, ttft, total = _stream(server.grpc_address, model, prompt, max_tokens, True)
        click.echo("")
        whole, _, _ = _stream(server.grpc_address, model, prompt, max_tokens, False)
        same = "".join(pieces) == "".join(whole)
        click.echo(f"\n{len([p for p in pieces if p])} streamed pieces, first after "
                   f"{(ttft or 0) * 1000:.0f} ms, done in {total * 1000:.0f} ms; "
                   f"streamed text {'==' if same else '!='} non-streamed text")
        if not same:
            raise ServerError("streamed text differs from the non-streamed text")
    finally:
        server.stop()
        click.echo("server stopped", err=True)
    sys.stdout.flush()
