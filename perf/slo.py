"""Service-level objectives: parse ``--slo`` and check summaries against them (a CI gate).

Grammar: comma-separated ``KEY=VALUE`` pairs, e.g.
``ttft_p99_ms=500,itl_p50_ms=40,error_rate=0.01,output_tps=200``.

======================================  ====================================  ===========
key                                     summary value                         passes when
======================================  ====================================  ===========
``{ttft,itl,e2e}_{stat}_ms``            that latency's ``stat`` in ms         value <= limit
``error_rate``                          failed / sent (0..1)                  value <= limit
``output_tps`` (``output_tokens_per_s``) output tokens per second              value >= limit
``rps`` (``requests_per_s``)            successful requests per second        value >= limit
======================================  ====================================  ===========

``stat`` is ``mean``, ``min``, ``max`` or ``p1``…``p99`` (those in
:data:`tritonllm.perf.metrics.PERCENTILES`). A latency with no data (every request failed,
or ITL of single-token outputs) is a violation: the gate cannot vouch for it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tritonllm.errors import ConfigError
from tritonllm.perf.metrics import PERCENTILES, Summary

__all__ = ["SLO", "SLOResult", "check", "parse_slos"]

_STATS = ("mean", "min", "max", *(f"p{q}" for q in PERCENTILES))
_LATENCY = re.compile(r"^(ttft|itl|e2e)_(" + "|".join(_STATS) + r")_ms$")
_THROUGHPUT = {"output_tps": "output_tokens_per_s", "output_tokens_per_s": "output_tokens_per_s",
               "rps": "requests_per_s", "requests_per_s": "requests_per_s"}


@dataclass(frozen=True)
class SLO:
    """One objective: ``key`` as written, its ``limit`` and direction (``"<="`` / ``">="``)."""

    key: str
    limit: float
    op: str

    def value(self, summary: Summary) -> float | None:
        """The summary's value for this objective (None: no data)."""
        m = _LATENCY.match(self.key)
        if m:
            stats = getattr(summary, f"{m.group(1)}_ms")
            return None if stats is None else stats.get(m.group(2))
        if self.key == "error_rate":
            return summary.error_rate if summary.requests else None
        return float(getattr(summary, _THROUGHPUT[self.key]))

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class SLOResult:
    """The check of one SLO at one load point."""

    slo: SLO
    point: str
    value: float | None

    @property
    def passed(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return False
        if self.slo.op == "<=":
            return self.value <= self.slo.limit
        return self.value >= self.slo.limit

    def describe(self) -> str:
        """``"ttft_p99_ms = 12.3 > 0.001 at concurrency=4"`` (or ``... <= ...`` when met)."""
        if self.value is None:
            return f"{self.slo.key}: no data at {self.point} (limit {self.slo.op} " \
                   f"{self.slo.limit:g})"
        rel = self.slo.op if self.passed else {"<=": ">", ">=": "<"}[self.slo.op]
        return f"{self.slo.key} = {self.value:.4g} {rel} {self.slo.limit:g} at {self.point}"


def parse_slos(text: str) -> tuple[SLO, ...]:
    """Parse the ``--slo`` string; ConfigError names the bad pair and lists valid keys."""
    slos: list[SLO] = []
    seen: set[str] = set()
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--slo: {pair!r} is not KEY=VALUE")
        try:
            limit = float(raw)
        except ValueError:
            raise ConfigError(f"--slo: {key}: {raw.strip()!r} is not a number") from None
        if math.isnan(limit) or limit < 0:
            raise ConfigError(f"--slo: {key}: limit must be a number >= 0, got {raw.strip()}")
        if _LATENCY.match(key) or key == "error_rate":
            op = "<="
        elif key in _THROUGHPUT:
            op = ">="
        else:
            raise ConfigError(
                f"--slo: unknown key {key!r}; expected {{ttft,itl,e2e}}_{{mean,max,p50,p90,p99,"
                f"...}}_ms, error_rate, output_tps or rps")
        if key == "error_rate" and limit > 1:
            raise ConfigError(f"--slo: error_rate is a fraction in [0, 1], got {limit:g}")
        if key in seen:
            raise ConfigError(f"--slo: {key} is given twice")
        seen.add(key)
        slos.append(SLO(key, limit, op))
    if not slos:
        raise ConfigError("--slo: no objectives given (e.g. ttft_p99_ms=500,error_rate=0.01)")
    return tuple(slos)


def check(slos: tuple[SLO, ...], points: dict[str, Summary]) -> list[SLOResult]:
    """Every SLO at every load point (``points``: label → summary), in order."""
    return [SLOResult(slo, label, slo.value(summary))
            for label, summary in points.items() for slo in slos]
