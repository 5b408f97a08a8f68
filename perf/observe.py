"""A load run watched by a real Prometheus: what the dashboards and the autoscaler would see.

:class:`LocalPrometheus` runs the ``prometheus`` binary (Debian's package; ``scripts/setup.sh``
installs it) on loopback with a temporary config that scrapes one Triton metrics endpoint and
loads the project's rules (:func:`tritonllm.metrics_rules.rule_groups`, compose labels). Its
:meth:`~LocalPrometheus.query` / :meth:`~LocalPrometheus.query_range` speak the HTTP API.

:func:`observed_run` drives one burst of streaming load with the perf harness
(:func:`tritonllm.perf.run.run_ours`) between an idle stretch before and after, and returns the
harness's summary beside Prometheus's view of the same seconds: the autoscaling signal
(``triton:queue_compute:ratio``), tokens/s and TTFT percentiles. The integration test
(``tests/integration/test_observability.py``) asserts on it; ``python -m
tritonllm.perf.bench_observability`` writes it to JSON and a plot for ``docs/observability.md``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.errors import TritonLLMError
from tritonllm.metrics_rules import COMPOSE_JOB, rule_groups

__all__ = ["LocalPrometheus", "ObservedRun", "PrometheusError", "observed_run"]

#: Compose has no pods: recorded series are per scraped instance.
BY = ("job", "instance")


class PrometheusError(TritonLLMError):
    """Prometheus could not be started, or a query failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPrometheus:
    """``prometheus`` on 127.0.0.1 scraping ``target`` (``host:port`` of Triton's metrics)
    every ``scrape_s`` seconds, with the project's rules over a ``window`` rate window.
    A context manager; the TSDB lives in a temporary directory removed on exit."""

    def __init__(self, target: str, *, scrape_s: float = 1.0, window: str = "10s",
                 binary: str = "prometheus", startup_timeout: float = 60.0) -> None:
        self.target = target
        self.scrape_s = scrape_s
        self.window = window
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalPrometheus:
        exe = shutil.which(self.binary)
        if exe is None:
            raise PrometheusError(f"{self.binary} not found on PATH (Debian package "
                                  "'prometheus'; scripts/setup.sh installs it)")
        import yaml

        self._dir = Path(tempfile.mkdtemp(prefix="tritonllm-prometheus-"))
        rules = self._dir / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": rule_groups(by=BY, window=self.window)}))
        config = self._dir / "prometheus.yml"
        interval = f"{self.scrape_s:g}s"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": COMPOSE_JOB,
                                "static_configs": [{"targets": [self.target]}]}]}))
        self.port = _free_port()
        log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={self._dir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready():
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited ({self._proc.returncode}): "
                                      + self.log_tail())
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus not ready after {self.startup_timeout:g}s")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, n: int = 2000) -> str:
        if self._dir is None:
            return ""
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace")[-n:] if path.is_file() else ""

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # ---- the HTTP API ----------------------------------------------------------------------

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"{path}: HTTP {e.code}: {e.read()[:300]!r}") from e
        except OSError as e:
            raise PrometheusError(f"{path}: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('error', body)}")
        return body["data"]["result"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query: ``[(labels, value)]``."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        return [(r["metric"], float(r["value"][1])) for r in self._get("/api/v1/query",
                                                                       **params)]

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of an instant query (None when it has no sample)."""
        result = self.query(expr, at)
        if len(result) > 1:
            raise PrometheusError(f"{expr}: {len(result)} series, expected one")
        return result[0][1] if result else None

    def query_range(self, expr: str, start: float, end: float, step: float
                    ) -> list[tuple[float, float]]:
        """One series' samples between ``start`` and ``end`` (Unix seconds)."""
        result = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}",
                           end=f"{end:.3f}", step=f"{step:g}")
        if len(result) > 1:
            raise PrometheusError(f"{expr}: {len(result)} series, expected one")
        return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []

    def wait_for(self, expr: str, predicate: Any, timeout: float) -> float | None:
        """Poll ``expr`` every scrape interval until ``predicate(value)``; the value (or
        PrometheusError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if predicate(last):
                return last
            time.sleep(self.scrape_s / 2)
        raise PrometheusError(f"{expr}: still {last} after {timeout:g}s")


@dataclass
class ObservedRun:
    """One burst of load and what Prometheus saw of it (times are Unix seconds)."""

    start: float
    end: float
    summary: dict[str, Any]  # the harness's (tritonllm.perf.metrics.Summary.to_dict)
    requests: int  # sent, warm-up included
    idle_ratio: float
    peak_ratio: float
    ratio_after: float
    prom_tokens_per_s: float
    prom_ttft_p50_s: float | None
    prom_ttft_p99_s: float | None
    prom_ttft_mean_s: float | None
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def observed_run(prom: LocalPrometheus, grpc_address: str, tokenizer_dir: Path, *,
                 concurrency: int = 16, duration_s: float = 15.0, input_tokens: int = 64,
                 output_tokens: int = 64, warmup: int = 2) -> ObservedRun:
    """Idle, a burst of ``concurrency`` streams for ``duration_s``, idle again, watched by
    ``prom`` (which must scrape the server behind ``grpc_address``)."""
    from tritonllm import metrics_catalog as MC
    from tritonllm import metrics_rules as R
    from tritonllm.perf.prompts import Tokenizer
    from tritonllm.perf.run import run_ours
    from tritonllm.perf.scenario import LengthSpec, Scenario

    ratio = R.QUEUE_COMPUTE_RATIO
    # Idle: the signal exists (two scrapes in the window) and reads its idle value.
    idle = prom.wait_for(ratio, lambda v: v is not None, 60 + 10 * prom.scrape_s)
    assert idle is not None
    scenario = Scenario(url=grpc_address, concurrency=(concurrency,),
                        input_tokens=LengthSpec(input_tokens),
                        output_tokens=LengthSpec(output_tokens), duration=duration_s,
                        warmup=warmup, streaming=True, exact_output=True)
    start = time.time()
    run = run_ours(scenario, Tokenizer(tokenizer_dir))
    end = time.time()
    point = run.points[0]
    sent = len(point.records) + warmup
    # After the load: the window empties and the signal falls back.
    window_s = _seconds(prom.window)
    after = prom.wait_for(ratio, lambda v: v is not None and v <= idle + 1e-9,
                          window_s + 30 * prom.scrape_s)
    assert after is not None
    step = prom.scrape_s
    names = (ratio, R.TOKENS_PER_S, R.TTFT_P99, R.ITL_P99,
             MC.series(MC.REQUEST_METRICS, "active", model="tensorrt_llm"))
    # The ratio falls at once when the load's last increase leaves the rate window; poll until
    # the range query's step grid has a point past that fall, so the series shows it too.
    deadline = time.monotonic() + 10 * step
    while True:
        series = {name: prom.query_range(name, start - window_s, time.time(), step)
                  for name in names}
        last = series[ratio][-1][1] if series[ratio] else None
        if (last is not None and last <= idle + 1e-9) or time.monotonic() > deadline:
            break
        time.sleep(step / 2)
    peak = max((v for _, v in series[ratio]), default=0.0)
    span = f"{max(1, round(end - start))}s"
    llm = 'model="tensorrt_llm"'
    tokens = prom.value(f"increase({MC.GENERATION_TOKENS}{{{llm}}}[{span}])", at=end) or 0.0

    def ttft(q: float) -> float | None:
        v = prom.value(f"histogram_quantile({q}, sum by (le) "
                       f"(increase({MC.TTFT}_bucket{{{llm}}}[{span}])))", at=end)
        return v if v is not None and v == v else None  # NaN: nothing observed

    total = prom.value(f"increase({MC.TTFT}_sum{{{llm}}}[{span}])", at=end)
    count = prom.value(f"increase({MC.TTFT}_count{{{llm}}}[{span}])", at=end)
    return ObservedRun(
        start=start, end=end, summary=point.summary.to_dict(), requests=sent,
        idle_ratio=idle, peak_ratio=peak, ratio_after=after,
        prom_tokens_per_s=tokens / max(end - start, 1e-9),
        prom_ttft_p50_s=ttft(0.5), prom_ttft_p99_s=ttft(0.99),
        prom_ttft_mean_s=(total / count) if total is not None and count else None,
        series=series)


def _seconds(window: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(window[:-1]) * units[window[-1]]
