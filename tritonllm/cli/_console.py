"""What the commands share on the console: progress on stderr and option validators.

Progress goes to stderr, so a command's stdout carries only its result: a rich spinner or
progress bars on a terminal, plain ``[  12.3s] ...`` lines otherwise (logs, CI, pipes).
Validators are click option callbacks: a bad value is a usage error (exit 2) naming the option.
rich is imported only when progress starts, so ``tritonllm --help`` stays instant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

__all__ = ["non_negative", "positive", "progress_line", "request_progress"]

N = TypeVar("N", int, float)


def _plain(t0: float, msg: str) -> None:
    click.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)


@contextmanager
def progress_line(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr showing the current stage and elapsed time; plain lines if not a tty."""
    from rich.console import Console

    console = Console(stderr=True)
    t0 = time.perf_counter()
    if not enabled or not console.is_terminal:
        def plain(msg: str) -> None:
            if enabled:
                _plain(t0, msg)
        yield plain
        return
    with console.status("starting") as status:
        def update(msg: str) -> None:
            console.log(msg)
            status.update(msg)
        yield update


@contextmanager
def request_progress(enabled: bool = True
                     ) -> Iterator[Callable[[str, int, int | None, int], None]]:
    """A rich progress bar on stderr per load point; plain lines when not a terminal.

    Yields ``update(label, done, total, errors)`` (requests done and failed of ``total``, None
    for a duration-bound point), the ``progress`` callback of :mod:`tritonllm.perf.loadgen`.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not enabled:
        yield lambda label, done, total, errors: None
        return
    if not console.is_terminal:
        t0 = time.perf_counter()
        last: dict[str, int] = {}

        def plain(label: str, done: int, total: int | None, errors: int) -> None:
            step = max(1, (total or 100) // 10)
            if done == total or done - last.get(label, 0) >= step:
                last[label] = done
                of = f"/{total}" if total else ""
                _plain(t0, f"{label}: {done}{of} requests, {errors} errors")
        yield plain
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, Any] = {}

        def update(label: str, done: int, total: int | None, errors: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total, errors=0)
            bar.update(tasks[label], completed=done, errors=errors)
        yield update


def positive(ctx: click.Context, param: click.Parameter, value: N | None) -> N | None:
    """Option callback: a given value must be above 0 (an int: at least 1)."""
    if value is not None and value <= 0:
        bound = "at least 1" if isinstance(value, int) else "> 0"
        raise click.BadParameter(f"must be {bound}, got {value}")
    return value


def non_negative(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Option callback: a given value must be at least 0."""
    if value is not None and value < 0:
        raise click.BadParameter(f"must be at least 0, got {value}")
    return value
