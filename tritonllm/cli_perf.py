"""``tritonllm perf``: load generation, perf_analyzer / genai-perf drivers, reports, SLO gates."""

from __future__ import annotations

import click


@click.group("perf")
def perf_cmd() -> None:
    """Measure a served model: TTFT, inter-token latency, throughput."""
