"""The numbers ``tritonllm metrics`` shows: one Triton server's LLM metrics over an interval.

    scrape(url)              -> Scrape     one read of the metrics page (samples + monotonic time)
    summarize(prev, cur)     -> Summary    what happened between two scrapes
    render(summary)          -> a rich Table (the live view);  plain(summary) -> str (scripts)

Every name comes from :mod:`tritonllm.metrics_catalog`. What the interval means follows
Prometheus, so the view agrees with the recorded series of :mod:`tritonllm.metrics_rules`:

* a counter's increase is computed per series and summed; a series whose value went down was
  reset (the server restarted) and counts its whole current value, as ``rate()`` does; a series
  that is new in ``cur`` counts from 0;
* a percentile is ``histogram_quantile`` over the interval's bucket increases (summed by
  ``le``): linear interpolation inside the bucket that holds the rank, 0 as the lower bound of
  the first bucket, the largest finite bound when the rank falls in ``+Inf``; ``None`` when no
  request was observed in the interval;
* a quantity whose series the server does not export is ``None`` (NVIDIA's own ``llmapi`` model
  exports only Triton's ``nv_inference_*``; the view shows :data:`MISSING`).

The page is parsed here (the text exposition format, version 0.0.4, which Triton serves) with
the standard library only. Library code, no click; cheap to import (the CLI reads its defaults):
urllib's client is imported by :func:`scrape`, rich by :func:`render`.
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from tritonllm import contract as C
from tritonllm import metrics_catalog as MC
from tritonllm.errors import ScrapeError
from tritonllm.metrics_rules import ENTRY_MODELS

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MISSING",
    "Labels",
    "Scrape",
    "Summary",
    "histogram_quantile",
    "metrics_url",
    "parse_text",
    "plain",
    "render",
    "rows",
    "scrape",
    "summarize",
]

#: Seconds between the two scrapes of a summary (``tritonllm metrics --interval``).
DEFAULT_INTERVAL = 2.0
#: Deadline of one scrape, seconds.
DEFAULT_TIMEOUT = 5.0
#: How a quantity the server does not export (or that had no observation) is shown.
MISSING = "—"
#: Triton's metrics path.
METRICS_PATH = "/metrics"
_PORT_HINT = "Triton serves metrics on port 8002 by default"
#: A series' labels, sorted by name (hashable: the key of a series within its name).
Labels = tuple[tuple[str, str], ...]

#: The scrape clock (monotonic seconds); tests replace it to fix the interval.
_clock: Callable[[], float] = time.monotonic

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*')
_UNESCAPE = re.compile(r"\\(.)")


# ---- reading the page --------------------------------------------------------------------


def metrics_url(url: str) -> str:
    """``host:port`` -> ``http://host:port/metrics``; a full URL keeps its path (``/metrics`` is
    added only when it has none). ScrapeError for what is not an http(s) URL."""
    raw = url.strip()
    full = raw if "://" in raw else f"http://{raw}"
    try:
        parts = urllib.parse.urlsplit(full)
        _ = parts.port  # ValueError for a port that is not a number in range
    except ValueError as e:
        raise ScrapeError(f"{url}: not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScrapeError(f"{url}: not an http(s) URL of a metrics endpoint "
                          "(expected host:port or http://host:port/metrics)")
    path = parts.path if parts.path not in ("", "/") else METRICS_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], value)


def _parse_line(line: str) -> tuple[str, Labels, float]:
    m = _NAME.match(line)
    if m is None:
        raise ValueError("no metric name")
    name, pos = m[0], m.end()
    labels: dict[str, str] = {}
    if line.startswith("{", pos):
        pos += 1
        while True:
            if line.startswith("}", pos):
                pos += 1
                break
            lm = _LABEL.match(line, pos)
            if lm is None:
                raise ValueError("bad label")
            labels[lm[1]] = _unescape(lm[2])
            pos = lm.end()
            if line.startswith(",", pos):
                pos += 1
            elif not line.startswith("}", pos):
                raise ValueError("bad label list")
    rest = line[pos:]
    if rest[:1] not in (" ", "\t"):
        raise ValueError("no value")
    tokens = rest.split()
    if not 1 <= len(tokens) <= 2:
        raise ValueError("expected a value and an optional timestamp")
    if len(tokens) == 2:
        int(tokens[1])  # the timestamp (milliseconds): checked, not kept
    value = float(tokens[0])  # "NaN", "+Inf", "-Inf" included
    return name, tuple(sorted(labels.items())), value


def parse_text(text: str) -> dict[str, dict[Labels, float]]:
    """The samples of a Prometheus text page: name -> {labels: value} (a repeated series: the
    last value). ValueError naming the line for what is not that format."""
    out: dict[str, dict[Labels, float]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            name, labels, value = _parse_line(line)
        except ValueError as e:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise ValueError(f"line {number}: {shown!r}: {e}") from None
        out.setdefault(name, {})[labels] = value
    return out


@dataclass(frozen=True)
class Scrape:
    """One read of a metrics page: every sample, and when it was taken (monotonic seconds)."""

    url: str
    time: float
    samples: Mapping[str, Mapping[Labels, float]]

    @classmethod
    def parse(cls, text: str, url: str = "", at: float | None = None) -> Scrape:
        """ScrapeError (naming ``url`` and the line) for what is not Prometheus text."""
        try:
            samples = parse_text(text)
        except ValueError as e:
            raise ScrapeError(f"{url or 'metrics page'}: not Prometheus text ({e})") from None
        return cls(url, _clock() if at is None else at, samples)

    def series(self, name: str, model: str | Iterable[str] = C.LLM,
               **labels: str) -> dict[Labels, float]:
        """The series of ``name`` of ``model`` (one name or several) that carry ``labels``."""
        models = {model} if isinstance(model, str) else set(model)
        return {key: v for key, v in self.samples.get(name, {}).items()
                if (d := dict(key)).get("model") in models
                and all(d.get(k) == want for k, want in labels.items())}

    def select(self, name: str, value: str | None = None,
               model: str | Iterable[str] = C.LLM) -> dict[Labels, float]:
        """The series of a catalog family of ``model`` whose own label (the catalog's, e.g.
        ``request_type``) is ``value``, or all of them; KeyError for a value the catalog lacks."""
        if value is None:
            return self.series(name, model)
        f = MC.family(name)
        f.value(value)
        if f.label is None:
            raise KeyError(f"{name} has no label of its own")
        return self.series(name, model, **{f.label: value})

    def gauge(self, name: str, value: str | None = None, model: str = C.LLM) -> float | None:
        """A gauge (summed over versions): ``gauge(REQUEST_METRICS, "active")``; None if the
        server does not export it."""
        found = self.select(name, value, model)
        return math.fsum(found.values()) if found else None

    def counter(self, name: str, value: str | None = None,
                model: str | Iterable[str] = C.LLM) -> float | None:
        """A counter's total over its series (every value of its own label unless ``value``
        names one, every model in ``model``); None if the server does not export it."""
        found = self.select(name, value, model)
        return math.fsum(found.values()) if found else None

    def buckets(self, name: str, model: str = C.LLM) -> list[tuple[float, float]] | None:
        """A histogram's cumulative buckets summed over its series: [(le, count)], by le
        (``+Inf`` last); None if the server does not export it."""
        per = _bucket_series(self.series(f"{name}_bucket", model))
        if not per:
            return None
        return _sum_by_le(per.values())


def scrape(url: str, timeout: float = DEFAULT_TIMEOUT) -> Scrape:
    """Read one metrics page (``host:port`` or a URL, see :func:`metrics_url`).

    ScrapeError, naming the URL and the cause, when the connection fails (refused, unknown
    host, timed out), the server answers an HTTP error, or the page is not Prometheus text.
    """
    import http.client
    import urllib.error
    import urllib.request

    full = metrics_url(url)
    request = urllib.request.Request(full, headers={"Accept": "text/plain"})
    at = _clock()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as e:
        hint = f" ({_PORT_HINT})" if e.code == 404 else ""
        raise ScrapeError(f"{full}: HTTP {e.code} {e.reason}{hint}") from e
    except urllib.error.URLError as e:
        raise ScrapeError(f"{full}: {_cause(e.reason, timeout)}") from e
    except (OSError, http.client.HTTPException) as e:
        raise ScrapeError(f"{full}: {_cause(e, timeout)}") from e
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeError(f"{full}: not Prometheus text (not UTF-8)") from None
    return Scrape.parse(text, full, at)


def _cause(reason: object, timeout: float) -> str:
    import http.client
    import socket

    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused ({_PORT_HINT})"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror or reason})"
    if isinstance(reason, http.client.HTTPException | ConnectionResetError):
        return f"not an HTTP metrics endpoint ({type(reason).__name__}; {_PORT_HINT})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


# ---- intervals ---------------------------------------------------------------------------


def _increase(prev: Mapping[Labels, float], cur: Mapping[Labels, float]) -> float | None:
    """The summed per-series increase of a counter; a series that went down was reset."""
    if not cur:
        return None
    total = 0.0
    for key, value in cur.items():
        before = prev.get(key)
        total += value if before is None or value < before else value - before
    return total


def _bucket_series(samples: Mapping[Labels, float]) -> dict[Labels, dict[float, float]]:
    """``name_bucket`` samples -> {series labels without le: {le: cumulative count}}."""
    out: dict[Labels, dict[float, float]] = {}
    for key, count in samples.items():
        d = dict(key)
        le = d.pop("le", None)
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        out.setdefault(tuple(sorted(d.items())), {})[bound] = count
    return out


def _sum_by_le(series: Iterable[Mapping[float, float]]) -> list[tuple[float, float]]:
    total: dict[float, float] = {}
    for buckets in series:
        for le, count in buckets.items():
            total[le] = total.get(le, 0.0) + count
    return sorted(total.items())


def _bucket_increase(prev: Scrape, cur: Scrape, name: str,
                     model: str) -> list[tuple[float, float]] | None:
    before = _bucket_series(prev.series(f"{name}_bucket", model))
    now = _bucket_series(cur.series(f"{name}_bucket", model))
    if not now:
        return None
    deltas: list[dict[float, float]] = []
    for key, buckets in now.items():
        old = before.get(key, {})
        reset = any(count < old.get(le, 0.0) for le, count in buckets.items())
        deltas.append({le: count - (0.0 if reset else old.get(le, 0.0))
                       for le, count in buckets.items()})
    return _sum_by_le(deltas)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``[(le, count)]`` sorted by le.

    None (Prometheus: NaN) without a ``+Inf`` bucket or without observations.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    counts: list[float] = []
    for _, count in buckets:  # force monotonic counts, as Prometheus does
        counts.append(max(count, counts[-1]) if counts else count)
    observations = counts[-1]
    if observations <= 0:
        return None
    rank = q * observations
    b = next((i for i in range(len(buckets) - 1) if counts[i] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    end = buckets[b][0]
    if b == 0 and end <= 0:
        return end
    start, below = (0.0, 0.0) if b == 0 else (buckets[b - 1][0], counts[b - 1])
    in_bucket = counts[b] - below
    if in_bucket <= 0:
        return end
    return start + (end - start) * ((rank - below) / in_bucket)


@dataclass(frozen=True)
class Summary:
    """One server's LLM model over one interval. None: not exported (or, for a percentile, no
    request observed in the interval). Times in seconds, rates per second."""

    url: str
    model: str
    interval_s: float
    requests_active: float | None = None
    requests_scheduled: float | None = None
    requests_waiting: float | None = None
    requests_max: float | None = None
    triton_pending: float | None = None
    generation_tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    finished_per_s: float | None = None
    steps_per_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    e2e_p50_s: float | None = None
    e2e_p99_s: float | None = None
    kv_blocks_used: float | None = None
    kv_blocks_max: float | None = None
    kv_used_fraction: float | None = None
    rejected_per_s: float | None = None
    errors_per_s: float | None = None


def summarize(prev: Scrape, cur: Scrape, model: str = C.LLM) -> Summary:
    """What ``model`` did between ``prev`` and ``cur`` (gauges: their value in ``cur``).

    Errors are the failed requests (``nv_inference_request_failure``, any reason) of the
    models clients call (:data:`tritonllm.metrics_rules.ENTRY_MODELS`), counted there once each.
    """
    dt = cur.time - prev.time
    if dt <= 0:
        raise ValueError(f"cur must be scraped after prev (interval {dt} s)")

    def rate(name: str, value: str | None = None,
             models: str | tuple[str, ...] = model) -> float | None:
        if value is None:
            before, now = prev.series(name, models), cur.series(name, models)
        else:
            before = prev.select(name, value, models)
            now = cur.select(name, value, models)
        inc = _increase(before, now)
        return None if inc is None else inc / dt

    def quantiles(name: str) -> tuple[float | None, float | None]:
        buckets = _bucket_increase(prev, cur, name, model)
        if buckets is None:
            return None, None
        return histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)

    def request(value: str) -> float | None:
        return cur.gauge(MC.REQUEST_METRICS, value, model)

    def kv(value: str) -> float | None:
        return cur.gauge(MC.KV_CACHE_BLOCKS, value, model)

    used, most = kv("used"), kv("max")
    fractions = cur.select(MC.KV_CACHE_BLOCKS, "fraction", model)
    fraction = (max(fractions.values()) if fractions
                else used / most if used is not None and most else None)
    ttft, itl, e2e = quantiles(MC.TTFT), quantiles(MC.TPOT), quantiles(MC.E2E)
    return Summary(
        url=cur.url, model=model, interval_s=dt,
        requests_active=request("active"), requests_scheduled=request("scheduled"),
        requests_waiting=request("waiting"), requests_max=request("max"),
        triton_pending=cur.gauge(MC.PENDING_REQUESTS, model=model),
        generation_tokens_per_s=rate(MC.GENERATION_TOKENS),
        prompt_tokens_per_s=rate(MC.PROMPT_TOKENS),
        finished_per_s=rate(MC.REQUEST_FINISHED),
        steps_per_s=rate(MC.GENERAL, "iteration_counter"),
        ttft_p50_s=ttft[0], ttft_p99_s=ttft[1], itl_p50_s=itl[0], itl_p99_s=itl[1],
        e2e_p50_s=e2e[0], e2e_p99_s=e2e[1],
        kv_blocks_used=used, kv_blocks_max=most, kv_used_fraction=fraction,
        rejected_per_s=rate(MC.REJECTED),
        errors_per_s=rate(MC.REQUEST_FAILURE, models=ENTRY_MODELS),
    )


# ---- showing it --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    section: str
    key: str  # plain()'s name: snake case, with the unit
    label: str  # render()'s
    unit: str
    scale: float  # shown = value * scale
    digits: int


_ROWS: dict[str, _Row] = {r.key: r for r in (
    _Row("requests", "requests_active", "active (in the engine)", "", 1, 0),
    _Row("requests", "requests_scheduled", "scheduled (last step)", "", 1, 0),
    _Row("requests", "requests_waiting", "waiting for a slot", "", 1, 0),
    _Row("requests", "requests_max", "max (engine's batch)", "", 1, 0),
    _Row("requests", "triton_pending", "pending in Triton", "", 1, 0),
    _Row("throughput", "generation_tokens_per_s", "output tokens", "/s", 1, 1),
    _Row("throughput", "prompt_tokens_per_s", "prompt tokens", "/s", 1, 1),
    _Row("throughput", "finished_per_s", "finished requests", "/s", 1, 2),
    _Row("throughput", "steps_per_s", "engine steps", "/s", 1, 1),
    _Row("latency", "ttft_p50_ms", "time to first token p50", "ms", 1e3, 2),
    _Row("latency", "ttft_p99_ms", "time to first token p99", "ms", 1e3, 2),
    _Row("latency", "itl_p50_ms", "inter-token latency p50", "ms", 1e3, 3),
    _Row("latency", "itl_p99_ms", "inter-token latency p99", "ms", 1e3, 3),
    _Row("latency", "e2e_p50_ms", "request latency p50", "ms", 1e3, 2),
    _Row("latency", "e2e_p99_ms", "request latency p99", "ms", 1e3, 2),
    _Row("kv cache", "kv_blocks_used", "blocks used", "", 1, 0),
    _Row("kv cache", "kv_blocks_max", "blocks in the pool", "", 1, 0),
    _Row("kv cache", "kv_used_percent", "used", "%", 100, 1),
    _Row("errors", "rejected_per_s", "rejected by the model", "/s", 1, 2),
    _Row("errors", "errors_per_s", "failed requests (entry models)", "/s", 1, 2),
)}
#: Summary field -> row key (the fields whose unit changes on the way out).
_RENAMED = {"ttft_p50_s": "ttft_p50_ms", "ttft_p99_s": "ttft_p99_ms", "itl_p50_s": "itl_p50_ms",
            "itl_p99_s": "itl_p99_ms", "e2e_p50_s": "e2e_p50_ms", "e2e_p99_s": "e2e_p99_ms",
            "kv_used_fraction": "kv_used_percent"}
_HEADER = ("url", "model", "interval_s")


def _format(value: float | None, row: _Row, thousands: bool) -> str:
    if value is None or math.isnan(value):
        return MISSING
    return f"{value * row.scale:{',' if thousands else ''}.{row.digits}f}"


def rows(summary: Summary, thousands: bool = False) -> list[tuple[str, str, str, str, str]]:
    """(section, key, label, value, unit) for every quantity, in display order; value is
    formatted (``thousands``: with separators), :data:`MISSING` for None."""
    values: dict[str, float | None] = {}
    for f in fields(summary):
        if f.name not in _HEADER:
            values[_RENAMED.get(f.name, f.name)] = getattr(summary, f.name)
    if set(values) != set(_ROWS):
        raise RuntimeError(f"Summary and the rows disagree: {sorted(set(values) ^ set(_ROWS))}")
    return [(r.section, r.key, r.label, _format(values[r.key], r, thousands), r.unit)
            for r in _ROWS.values()]


def plain(summary: Summary) -> str:
    """One ``key value`` line per quantity (keys carry the unit: ``ttft_p50_ms``), after the
    ``url``, ``model`` and ``interval_s`` lines; :data:`MISSING` for None. Numbers have no
    thousands separators, so ``float(value)`` reads them."""
    lines = [("url", summary.url), ("model", summary.model),
             ("interval_s", f"{summary.interval_s:.3f}")]
    lines += [(key, value) for _, key, _, value, _ in rows(summary)]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def render(summary: Summary) -> Table:
    """The live view: a rich Table, one section per group of quantities."""
    from rich.table import Table

    table = Table(title=f"{summary.model} @ {summary.url}", title_justify="left",
                  caption=f"last {summary.interval_s:.1f} s; {MISSING} = not exported or no data",
                  caption_justify="left",
                  show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan")
    table.add_column()
    table.add_column(justify="right", style="bold")
    table.add_column(style="dim")
    section = ""
    for group, _, label, value, unit in rows(summary, thousands=True):
        if group != section and section:
            table.add_section()
        table.add_row(group if group != section else "", label, value,
                      unit if value != MISSING else "")
        section = group
    return table
