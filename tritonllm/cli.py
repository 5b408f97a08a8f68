"""The ``tritonllm`` command line.

Heavy libraries (torch, transformers, openvino, tritonclient) are imported inside the commands
that need them, so ``tritonllm --help`` stays instant. Every user error is a TritonLLMError (or
a click usage error): one line on stderr and a non-zero exit; ``-v`` adds the traceback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from tritonllm import __version__
from tritonllm.errors import TritonLLMError

ENGINE_NAMES = ("cpu", "trtllm")  # kept in sync with the builder registry by a unit test


class Context:
    def __init__(self, verbose: int) -> None:
        self.verbose = verbose


@contextmanager
def progress_line(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr showing the current stage and elapsed time; plain lines if not a tty."""
    from rich.console import Console

    console = Console(stderr=True)
    t0 = time.perf_counter()
    if not enabled or not console.is_terminal:
        def plain(msg: str) -> None:
            if enabled:
                click.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)
        yield plain
        return
    with console.status("starting") as status:
        def update(msg: str) -> None:
            console.log(msg)
            status.update(msg)
        yield update


class TritonLLMGroup(click.Group):
    """Turns TritonLLMError into one clean line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TritonLLMError as e:
            verbose = bool(ctx.obj and ctx.obj.verbose)
            if verbose:
                import traceback

                traceback.print_exc()
            msg = str(e) if verbose else str(e).splitlines()[0]
            click.secho(f"error: {msg}", err=True, fg="red")
            sys.exit(1)


@click.group(cls=TritonLLMGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tritonllm")
@click.option("-v", "--verbose", count=True, help="Show details (tracebacks, tool output).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Build, serve and measure LLMs on NVIDIA Triton Inference Server."""
    ctx.obj = Context(verbose)


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


@main.command("make-tiny-model")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=click.Choice(["tiny", "small"]), default="tiny", show_default=True,
              help="tiny: ~0.2M params (tests); small: ~20M params (benchmarks).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
def make_tiny_model_cmd(out: Path, size: str, seed: int) -> None:
    """Write a random Llama checkpoint + byte-level BPE tokenizer to OUT."""
    from tritonllm.tiny import make_tiny_model

    with progress_line() as say:
        make_tiny_model(out, size=size, seed=seed, progress=say)
    click.echo(f"wrote {size} Llama checkpoint to {out}")


@main.command("build")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(ENGINE_NAMES), required=True,
              help="cpu: OpenVINO (any host); trtllm: TensorRT-LLM (NVIDIA GPU).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Engine directory.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
              default="auto", show_default=True)
@click.option("--quantization",
              type=click.Choice(["int8", "int4", "int8_wo", "int4_wo", "int4_awq", "fp8",
                                 "smoothquant"]),
              help="cpu: int8|int4 weight compression; trtllm: int8_wo|int4_wo|int4_awq|fp8|"
                   "smoothquant.")
@click.option("--group-size", type=int, callback=_positive, help="int4 group size (cpu).")
@click.option("--tp", type=int, default=1, show_default=True, callback=_positive,
              help="Tensor parallel size (trtllm).")
@click.option("--pp", type=int, default=1, show_default=True, callback=_positive,
              help="Pipeline parallel size (trtllm).")
@click.option("--max-batch-size", type=int, default=64, show_default=True, callback=_positive)
@click.option("--max-input-len", type=int, callback=_positive,
              help="Longest prompt [default: min(1024, max-seq-len - 1)].")
@click.option("--max-seq-len", type=int, callback=_positive,
              help="Longest prompt + output [default: the model's max_position_embeddings].")
@click.option("--max-num-tokens", type=int, default=8192, show_default=True, callback=_positive,
              help="Most tokens in one engine step.")
@click.option("--trust-remote-code", is_flag=True, help="Allow checkpoint-provided code.")
@click.option("--force", is_flag=True, help="Rebuild even if the engine is up to date.")
def build_cmd(checkpoint: Path, engine: str, out: Path, **options: Any) -> None:
    """Compile CHECKPOINT (a Hugging Face folder, safetensors) into an engine in OUT."""
    from tritonllm.builders import BuildSettings, build

    settings = BuildSettings(checkpoint=checkpoint, engine=engine, out=out, **options)
    with progress_line() as say:
        result = build(settings, progress=say)
    m = result.manifest
    if result.cached:
        click.echo(f"up to date: {out} ({engine}, cache hit in {result.seconds:.2f}s; "
                   "--force rebuilds)")
    else:
        click.echo(f"built {engine} engine in {out} in {result.seconds:.1f}s")
    lim = m.limits
    click.echo(f"  limits: batch {lim.max_batch_size}, input {lim.max_input_len}, "
               f"sequence {lim.max_seq_len}, vocab {lim.vocab_size}, eos {list(lim.eos_token_ids)}")


from tritonllm.cli_serve import serve_cmd  # noqa: E402  (registered last: no import cycle)

main.add_command(serve_cmd)
from tritonllm.cli_repo import repo_cmd, validate_cmd  # noqa: E402

main.add_command(repo_cmd)
main.add_command(validate_cmd)
from tritonllm.cli_demo import demo_cmd  # noqa: E402

main.add_command(demo_cmd)
from tritonllm.cli_client import client_commands  # noqa: E402

for _cmd in client_commands:
    main.add_command(_cmd)
from tritonllm.cli_perf import perf_cmd  # noqa: E402

main.add_command(perf_cmd)
