"""``tritonllm metrics URL``: a live terminal view of one Triton server's LLM metrics.

Scrapes the metrics endpoint every ``--interval`` seconds and shows what the LLM model did in
between (:mod:`tritonllm.metrics_view`): a rich table redrawn in place on a terminal, one block
of ``key value`` lines per interval otherwise; ``--once`` prints one block and exits.

Exit codes: 0 (also on Ctrl-C); 1 a scrape failed (one line, from :mod:`tritonllm.cli`);
2 a usage error. rich is imported inside the command (and :mod:`tritonllm.metrics_view`
imports it and urllib's client inside its functions), so ``--help`` stays instant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import click

from tritonllm.cli._console import positive
from tritonllm.contract import LLM
from tritonllm.metrics_view import (
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    Summary,
    metrics_url,
    plain,
    render,
    scrape,
    summarize,
)


def _summaries(url: str, model: str, interval: float, timeout: float,
               count: int | None) -> Iterator[Summary]:
    """A summary every ``interval`` seconds, ``count`` of them (None: until interrupted)."""
    prev = scrape(url, timeout)
    done = 0
    while count is None or done < count:
        time.sleep(interval)
        cur = scrape(url, timeout)
        yield summarize(prev, cur, model)
        prev, done = cur, done + 1


@click.command("metrics")
@click.argument("url")
@click.option("-m", "--model", default=LLM, show_default=True,
              help="The LLM model whose metrics to show.")
@click.option("--interval", type=float, default=DEFAULT_INTERVAL, show_default=True,
              callback=positive, help="Seconds between scrapes (the window of rates and "
                                      "percentiles).")
@click.option("--once", is_flag=True,
              help="Scrape twice, --interval apart, print the summary as key value lines, exit.")
@click.option("--count", type=click.IntRange(min=1),
              help="Stop after N refreshes [default: until Ctrl-C].")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True,
              callback=positive, help="Deadline of one scrape, seconds.")
def metrics_cmd(url: str, model: str, interval: float, once: bool, count: int | None,
                timeout: float) -> None:
    """Watch the LLM metrics of the Triton server whose metrics endpoint is URL.

    URL is host:port (http:// and /metrics are added; Triton serves metrics on port 8002) or a
    full URL. Every --interval seconds: requests active, waiting and pending, tokens/s,
    finished requests/s, TTFT, inter-token and request latency p50/p99 over the interval, KV
    cache use, rejected and failed requests/s. A value the server does not export shows as —.
    """
    from rich.console import Console

    target = metrics_url(url)
    console = Console()
    try:
        if once or not console.is_terminal:
            for i, summary in enumerate(_summaries(target, model, interval, timeout,
                                                   1 if once else count)):
                click.echo(("\n" if i else "") + plain(summary))
            return
        from rich.live import Live
        from rich.text import Text

        waiting = Text(f"scraping {target} every {interval:g} s ... (Ctrl-C to stop)")
        with Live(waiting, console=console, auto_refresh=False) as live:
            for summary in _summaries(target, model, interval, timeout, count):
                live.update(render(summary), refresh=True)
    except KeyboardInterrupt:
        return
