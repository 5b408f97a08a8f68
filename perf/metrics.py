"""Per-request records and the summary statistics of one load point.

Definitions follow genai-perf 0.0.16 (``profile_data_parser/llm_profile_data_parser.py``), so a
run of ours and a genai-perf run of the same load are directly comparable:

- **TTFT** = time of the first response that carries text − time the request was sent.
- **e2e latency** (genai-perf: request latency) = time of the last response − time sent.
- **output tokens** = ``len(tokenizer.encode(full output text, add_special_tokens=False))`` –
  the output text re-tokenized, as genai-perf counts; the server-reported count (ids the
  engine generated) is kept next to it when the server sends it.
- **ITL** (inter-token latency) = (e2e − TTFT) / (output tokens − 1), per request, for
  requests with more than one response and more than one output token.
- **output tokens/s per user** = 1 / ITL.
- **duration** = last response of any successful request − first request sent.
- **output tokens/s** = Σ output tokens of successful requests / duration.
- **requests/s** = successful requests / duration.
- Percentiles interpolate linearly between closest ranks (numpy's default ``linear``).

Times in a :class:`RequestRecord` are seconds on one monotonic clock (``time.perf_counter``
for our generator, the tool's nanosecond clock for perf_analyzer exports); only differences
are meaningful. Standard library only: no numpy needed to summarise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "PERCENTILES",
    "RequestRecord",
    "Stats",
    "Summary",
    "percentile",
    "summarize",
]

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def percentile(data: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default method).

    Raises ValueError on empty ``data`` or ``q`` outside [0, 100].
    """
    if not data:
        raise ValueError("percentile of no data")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    xs = sorted(data)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    frac = pos - lo
    return xs[lo] + (xs[hi] - xs[lo]) * frac


@dataclass(frozen=True)
class Stats:
    """Distribution of one metric: count, mean, population std, min, max and percentiles."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    p1: float
    p5: float
    p10: float
    p25: float
    p50: float
    p75: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, data: Sequence[float]) -> Stats | None:
        """Stats of ``data``; None when it is empty."""
        if not data:
            return None
        n = len(data)
        mean = math.fsum(data) / n
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in data) / n)
        ps = {f"p{q}": percentile(data, q) for q in PERCENTILES}
        return cls(count=n, mean=mean, std=std, min=min(data), max=max(data), **ps)

    def get(self, stat: str) -> float:
        """``"p99"``, ``"mean"``, ``"max"``... → value; KeyError on an unknown name."""
        if stat not in {f.name for f in fields(self)}:
            raise KeyError(stat)
        return float(getattr(self, stat))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Stats | None:
        if d is None:
            return None
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass
class RequestRecord:
    """One sent request and what came back.

    Attributes:
        index: order in which the request was sent within its load point (0-based).
        point: the load point's label (``"concurrency=4"``).
        request_id: the id sent to the server.
        start: when the request was sent (seconds, monotonic clock).
        first_token: when the first response with text arrived (None: none did).
        end: when the last response arrived (None: none did).
        response_times: arrival time of every response with text.
        input_tokens: prompt tokens (the prompt re-tokenized, without special tokens).
        output_tokens: output text re-tokenized (None until counted, or on error).
        server_output_tokens: generated ids as reported by the server (None: not reported).
        requested_output_tokens: ``max_tokens`` sent.
        output_text: the concatenated output (dropped from CSV; used for counting).
        error_kind: None on success, else a short kind (``timeout``, ``unavailable``, ...).
        error: the error's message.
        finish_reason: as reported by the server, if it did.
    """

    index: int
    point: str
    request_id: str
    start: float
    first_token: float | None = None
    end: float | None = None
    response_times: list[float] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    server_output_tokens: int | None = None
    requested_output_tokens: int | None = None
    output_text: str = ""
    error_kind: str | None = None
    error: str | None = None
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.end is not None

    @property
    def ttft(self) -> float | None:
        """Seconds to the first response with text."""
        if not self.ok or self.first_token is None:
            return None
        return self.first_token - self.start

    @property
    def e2e(self) -> float | None:
        """Seconds to the last response."""
        if not self.ok or self.end is None:
            return None
        return self.end - self.start

    @property
    def itl(self) -> float | None:
        """genai-perf's inter-token latency in seconds: (e2e − TTFT) / (output tokens − 1)."""
        ttft, e2e, n = self.ttft, self.e2e, self.output_tokens
        if ttft is None or e2e is None or n is None or n < 2 or len(self.response_times) < 2:
            return None
        return (e2e - ttft) / (n - 1)

    def to_row(self) -> dict[str, Any]:
        """A flat CSV/JSON row (milliseconds for latencies, no text, no per-response times)."""

        def ms(x: float | None) -> float | None:
            return None if x is None else round(x * 1e3, 4)

        return {
            "point": self.point, "index": self.index, "request_id": self.request_id,
            "ok": self.ok, "start_s": round(self.start, 6), "ttft_ms": ms(self.ttft),
            "itl_ms": ms(self.itl), "e2e_ms": ms(self.e2e), "responses": len(self.response_times),
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "server_output_tokens": self.server_output_tokens,
            "requested_output_tokens": self.requested_output_tokens,
            "finish_reason": self.finish_reason, "error_kind": self.error_kind,
            "error": self.error,
        }


#: Metric name → (record attribute in seconds or tokens, unit). SLOs and reports use these.
LATENCY_METRICS = {"ttft": "ttft_ms", "itl": "itl_ms", "e2e": "e2e_ms"}


@dataclass(frozen=True)
class Summary:
    """Aggregates of one load point (see the module docstring for the definitions).

    ``requests`` = every measured request sent = ``completed`` + Σ ``errors``.
    """

    requests: int
    completed: int
    errors: dict[str, int]
    duration_s: float
    requests_per_s: float
    output_tokens_per_s: float
    server_output_tokens_per_s: float | None
    ttft_ms: Stats | None
    itl_ms: Stats | None
    e2e_ms: Stats | None
    tps_per_user: Stats | None
    input_tokens: Stats | None
    output_tokens: Stats | None
    server_output_tokens: Stats | None

    @property
    def error_rate(self) -> float:
        return (self.requests - self.completed) / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Stats) else v
        out["error_rate"] = self.error_rate
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            v = d.get(f.name)
            kw[f.name] = Stats.from_dict(v) if isinstance(v, dict) and "p50" in v else v
        kw["errors"] = dict(d.get("errors") or {})
        return cls(**kw)

    def flat(self) -> dict[str, float | int | None]:
        """One level of keys for CSV: ``ttft_ms_p99``, ``output_tokens_per_s``, ..."""
        out: dict[str, float | int | None] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Stats):
                for stat in ("mean", "p50", "p90", "p99", "min", "max"):
                    out[f"{f.name}_{stat}"] = v.get(stat)
            elif f.name == "errors":
                out["errors"] = sum(v.values())
            elif f.name in ("ttft_ms", "itl_ms", "e2e_ms", "tps_per_user", "input_tokens",
                            "output_tokens", "server_output_tokens"):
                continue  # None stats: nothing to flatten
            else:
                out[f.name] = v
        out["error_rate"] = self.error_rate
        return out


def summarize(records: Iterable[RequestRecord]) -> Summary:
    """Aggregate the records of one load point (call after output tokens are counted)."""
    recs = list(records)
    ok = [r for r in recs if r.ok]
    errors = Counter(r.error_kind or "no_response" for r in recs if not r.ok)
    if ok:
        first_sent = min(r.start for r in ok)
        last_end = max(r.end for r in ok if r.end is not None)
        duration = max(last_end - first_sent, 1e-9)
    else:
        duration = 0.0

    def ms(values: Iterable[float | None]) -> list[float]:
        return [v * 1e3 for v in values if v is not None]

    out_tokens = [r.output_tokens for r in ok if r.output_tokens is not None]
    server_tokens = [r.server_output_tokens for r in ok if r.server_output_tokens is not None]
    itls = [r.itl for r in ok]
    return Summary(
        requests=len(recs),
        completed=len(ok),
        errors=dict(sorted(errors.items())),
        duration_s=duration,
        requests_per_s=len(ok) / duration if duration else 0.0,
        output_tokens_per_s=sum(out_tokens) / duration if duration else 0.0,
        server_output_tokens_per_s=(sum(server_tokens) / duration
                                    if duration and len(server_tokens) == len(ok) else None),
        ttft_ms=Stats.of(ms(r.ttft for r in ok)),
        itl_ms=Stats.of(ms(itls)),
        e2e_ms=Stats.of(ms(r.e2e for r in ok)),
        tps_per_user=Stats.of([1.0 / x for x in itls if x is not None and x > 0]),
        input_tokens=Stats.of([float(r.input_tokens) for r in ok if r.input_tokens is not None]),
        output_tokens=Stats.of([float(n) for n in out_tokens]),
        server_output_tokens=Stats.of([float(n) for n in server_tokens]),
    )
