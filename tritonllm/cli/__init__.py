"""The ``tritonllm`` command line: the group, and one module per command or command family.

    tritonllm.cli            the group ``main`` (``-v``, ``--version``, one-line errors)
    ├── _console             progress on stderr, option validators (shared by the commands)
    ├── build                make-tiny-model, build
    ├── repo                 repo, validate
    ├── serve                serve
    ├── client               generate, health, models
    ├── perf                 perf (and perf compare)
    ├── metrics              metrics (a live view of one server's LLM metrics)
    ├── openai_front         openai (the OpenAI-compatible API)
    ├── deploy               launch (the containers' entrypoint), deploy k8s
    └── demo                 demo

The command modules import ``_console``, never this package, so there is no import cycle.
Heavy libraries (torch, transformers, openvino, tritonclient) are imported inside the commands
that need them, so ``tritonllm --help`` stays instant. Every user error is a TritonLLMError (or
a click usage error): one line on stderr and a non-zero exit; ``-v`` adds the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from tritonllm import __version__
from tritonllm.cli.build import build_cmd, make_tiny_model_cmd
from tritonllm.cli.client import generate_cmd, health_cmd, models_cmd
from tritonllm.cli.demo import demo_cmd
from tritonllm.cli.deploy import deploy_cmd, launch_cmd
from tritonllm.cli.metrics import metrics_cmd
from tritonllm.cli.openai_front import openai_cmd
from tritonllm.cli.perf import perf_cmd
from tritonllm.cli.repo import repo_cmd, validate_cmd
from tritonllm.cli.serve import serve_cmd
from tritonllm.errors import TritonLLMError

__all__ = ["main"]

COMMANDS: tuple[click.Command, ...] = (
    make_tiny_model_cmd, build_cmd, repo_cmd, validate_cmd, serve_cmd, generate_cmd, health_cmd,
    models_cmd, perf_cmd, metrics_cmd, openai_cmd, demo_cmd, launch_cmd, deploy_cmd,
)


class Context:
    def __init__(self, verbose: int) -> None:
        self.verbose = verbose


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


@click.group(cls=TritonLLMGroup, context_settings={"help_option_names": ["-h", "--help"]},
             commands=COMMANDS)
@click.version_option(__version__, prog_name="tritonllm")
@click.option("-v", "--verbose", count=True, help="Show details (tracebacks, tool output).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Build, serve and measure LLMs on NVIDIA Triton Inference Server."""
    ctx.obj = Context(verbose)
