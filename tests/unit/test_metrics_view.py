"""``tritonllm.metrics_view`` and ``tritonllm metrics``: pure, against hand-written pages.

Two snapshots of one server, 2 s apart, with known bucket counts; every expected number is
worked out by hand in the comments (Prometheus' ``histogram_quantile``: linear interpolation
inside the bucket that holds the rank). The CLI runs against a local http.server serving the
two pages on successive GETs.
"""

from __future__ import annotations

import http.server
import io
import itertools
import socket
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from click.testing import CliRunner

from tritonllm import metrics_catalog as MC
from tritonllm import metrics_view as mv
from tritonllm.cli import main
from tritonllm.errors import ScrapeError, TritonLLMError

L = 'model="tensorrt_llm",version="1"'


def _hist(name: str, buckets: dict[str, int], total: float, labels: str = L) -> str:
    lines = [f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{le="{le}",{labels}}} {n}' for le, n in buckets.items()]
    count = buckets["+Inf"]
    lines += [f"{name}_sum{{{labels}}} {total}", f"{name}_count{{{labels}}} {count}"]
    return "\n".join(lines)


def page(*, active: int, tokens: int, finished: dict[str, int], iterations: int,
         ttft: dict[str, int], itl: dict[str, int], e2e: dict[str, int] | None,
         failures: dict[str, int], rejected: int, extra: str = "") -> str:
    parts = [
        "# HELP nv_inference_pending_request_count Instantaneous number of pending requests",
        "# TYPE nv_inference_pending_request_count gauge",
        f'{MC.PENDING_REQUESTS}{{model="ensemble",version="1"}} 9',
        f"{MC.PENDING_REQUESTS}{{{L}}} 3",
        f'{MC.REQUEST_METRICS}{{{L},request_type="active"}} {active}',
        f'{MC.REQUEST_METRICS}{{{L},request_type="max"}} 64',
        f'{MC.REQUEST_METRICS}{{{L},request_type="scheduled"}} 4',
        f'{MC.REQUEST_METRICS}{{{L},request_type="context"}} 1',
        f'{MC.REQUEST_METRICS}{{{L},request_type="waiting"}} {max(active - 4, 0)}',
        f'{MC.KV_CACHE_BLOCKS}{{{L},kv_cache_block_type="max"}} 1000',
        f'{MC.KV_CACHE_BLOCKS}{{{L},kv_cache_block_type="used"}} 250',
        f'{MC.KV_CACHE_BLOCKS}{{{L},kv_cache_block_type="free"}} 750',
        f'{MC.KV_CACHE_BLOCKS}{{{L},kv_cache_block_type="fraction"}} 0.25',
        f'{MC.GENERAL}{{{L},general_type="iteration_counter"}} {iterations}',
        f'{MC.GENERAL}{{{L},general_type="timestamp"}} 1.7e15',
        f"{MC.GENERATION_TOKENS}{{{L}}} {tokens}",
        f"{MC.PROMPT_TOKENS}{{{L}}} 5000",
        *(f'{MC.REQUEST_FINISHED}{{{L},finished_reason="{r}"}} {n}' for r, n in finished.items()),
        f'{MC.REJECTED}{{{L},reason="queue_full"}} {rejected}',
        f'{MC.REJECTED}{{{L},reason="invalid_argument"}} 0',
        *(f'{MC.REQUEST_FAILURE}{{model="{m}",reason="BACKEND",version="1"}} {n}'
          for m, n in failures.items()),
        _hist(MC.TTFT, ttft, 1.0),
        _hist(MC.TPOT, itl, 0.1),
        # another model's histogram: never mixed in
        _hist(MC.TTFT, {"0.01": 0, "+Inf": 1000}, 1.0, 'model="other",version="1"'),
    ]
    if e2e is not None:
        parts.append(_hist(MC.E2E, e2e, 2.0))
    return "\n".join(parts) + "\n" + extra


PREV = page(active=5, tokens=1000, finished={"stop": 10}, iterations=100,
            ttft={"0.01": 2, "0.05": 4, "0.1": 5, "+Inf": 5},
            itl={"0.001": 5, "0.002": 20, "0.005": 30, "+Inf": 30},
            e2e=None, failures={"ensemble": 1, "tensorrt_llm_bls": 0, "tensorrt_llm": 50},
            rejected=2)
CUR = page(active=7, tokens=1600, finished={"stop": 14, "length": 2}, iterations=180,
           ttft={"0.01": 2, "0.05": 10, "0.1": 13, "+Inf": 14},
           itl={"0.001": 15, "0.002": 110, "0.005": 130, "+Inf": 130},
           e2e={"0.5": 4, "1.0": 4, "+Inf": 4},
           failures={"ensemble": 4, "tensorrt_llm_bls": 1, "tensorrt_llm": 90}, rejected=3)


def snapshots(prev: str = PREV, cur: str = CUR) -> tuple[mv.Scrape, mv.Scrape]:
    return mv.Scrape.parse(prev, "http://t/metrics", at=10.0), \
        mv.Scrape.parse(cur, "http://t/metrics", at=12.0)


# ---- the interval ------------------------------------------------------------------------


def test_rates_over_the_interval() -> None:
    s = mv.summarize(*snapshots())
    assert s.interval_s == 2.0
    assert s.generation_tokens_per_s == pytest.approx(600 / 2)
    assert s.prompt_tokens_per_s == 0.0
    # stop 10 -> 14, length new (counts from 0): 4 + 2 finished
    assert s.finished_per_s == pytest.approx(6 / 2)
    assert s.steps_per_s == pytest.approx(80 / 2)
    assert s.rejected_per_s == pytest.approx(1 / 2)
    # entry models only: ensemble +3, BLS +1 (tensorrt_llm's +40 is the same requests again)
    assert s.errors_per_s == pytest.approx(4 / 2)


def test_gauges_are_the_current_values_of_the_model() -> None:
    s = mv.summarize(*snapshots())
    assert (s.requests_active, s.requests_scheduled, s.requests_waiting, s.requests_max) == \
        (7, 4, 3, 64)
    assert s.triton_pending == 3  # the ensemble's 9 is another model's
    assert (s.kv_blocks_used, s.kv_blocks_max, s.kv_used_fraction) == (250, 1000, 0.25)


def test_percentiles_interpolate_inside_the_bucket_of_the_rank() -> None:
    s = mv.summarize(*snapshots())
    # TTFT increases (cumulative): 0.01: 0, 0.05: 6, 0.1: 8, +Inf: 9 -> 9 observations.
    #   p50: rank 4.5 is in (0.01, 0.05], which holds 6: 0.01 + 0.04 * 4.5 / 6 = 0.04
    #   p99: rank 8.91 > 8: the +Inf bucket -> the largest finite bound, 0.1
    assert s.ttft_p50_s == pytest.approx(0.04)
    assert s.ttft_p99_s == pytest.approx(0.1)
    # ITL increases: 0.001: 10, 0.002: 90, 0.005: 100, +Inf: 100.
    #   p50: rank 50 in (0.001, 0.002]: 0.001 + 0.001 * (50 - 10) / 80 = 0.0015
    #   p99: rank 99 in (0.002, 0.005]: 0.002 + 0.003 * (99 - 90) / 10 = 0.0047
    assert s.itl_p50_s == pytest.approx(0.0015)
    assert s.itl_p99_s == pytest.approx(0.0047)
    # e2e is new in cur (counts from 0): 4 observations in (0, 0.5]:
    #   p50: 0.5 * 2 / 4 = 0.25;  p99: 0.5 * 3.96 / 4 = 0.495
    assert s.e2e_p50_s == pytest.approx(0.25)
    assert s.e2e_p99_s == pytest.approx(0.495)


def test_histogram_quantile_edges() -> None:
    q = mv.histogram_quantile
    assert q(0.5, [(0.1, 0), (float("inf"), 0)]) is None  # nothing observed
    assert q(0.5, [(0.1, 3)]) is None  # no +Inf bucket
    assert q(0.5, [(-1.0, 4), (float("inf"), 4)]) == -1.0  # first bound <= 0: that bound
    assert q(0.0, [(1.0, 2), (2.0, 4), (float("inf"), 4)]) == 0.0
    assert q(1.0, [(1.0, 2), (2.0, 4), (float("inf"), 4)]) == 2.0
    with pytest.raises(ValueError):
        q(1.5, [(float("inf"), 1)])


def test_no_request_in_the_interval_gives_no_percentile() -> None:
    s = mv.summarize(*snapshots(CUR, CUR))
    assert s.ttft_p50_s is None and s.itl_p99_s is None and s.e2e_p50_s is None
    assert s.generation_tokens_per_s == 0.0 and s.errors_per_s == 0.0


def test_counter_reset_counts_the_current_value() -> None:
    # the server restarted between the scrapes: every counter and histogram starts again
    restarted = page(active=1, tokens=300, finished={"stop": 3}, iterations=20,
                     ttft={"0.01": 1, "0.05": 2, "0.1": 2, "+Inf": 2},
                     itl={"0.001": 0, "0.002": 4, "0.005": 4, "+Inf": 4},
                     e2e=None, failures={"ensemble": 0}, rejected=0)
    s = mv.summarize(*snapshots(CUR, restarted))
    assert s.generation_tokens_per_s == pytest.approx(300 / 2)
    assert s.finished_per_s == pytest.approx(3 / 2)
    assert s.steps_per_s == pytest.approx(20 / 2)
    assert s.rejected_per_s == 0.0 and s.errors_per_s == 0.0
    # TTFT: the current buckets themselves, 0.01: 1, 0.05: 2 -> p50 rank 1 -> 0.01
    assert s.ttft_p50_s == pytest.approx(0.01)
    # ITL: 4 in (0.001, 0.002] -> p50: 0.001 + 0.001 * 2 / 4
    assert s.itl_p50_s == pytest.approx(0.0015)
    assert all(v is None or v >= 0 for v in vars(s).values() if isinstance(v, float))


def test_missing_series_are_none() -> None:
    # NVIDIA's llmapi model: only Triton's own metrics
    triton_only = f'{MC.PENDING_REQUESTS}{{{L}}} 2\n{MC.INFERENCE_COUNT}{{{L}}} 10\n'
    s = mv.summarize(*snapshots(triton_only, triton_only))
    assert s.triton_pending == 2
    missing = {k: v for k, v in vars(s).items() if k not in ("url", "model", "interval_s",
                                                             "triton_pending")}
    assert missing and all(v is None for v in missing.values()), missing
    text = mv.plain(s)
    assert "generation_tokens_per_s" in text and f"ttft_p99_ms{' ' * 14}{mv.MISSING}" in text


def test_another_model_is_read_only_when_named() -> None:
    s = mv.summarize(*snapshots(), model="other")
    assert s.ttft_p50_s is None  # no increase in "other"'s TTFT
    assert s.requests_active is None and s.generation_tokens_per_s is None


def test_summarize_needs_a_later_scrape() -> None:
    prev, cur = snapshots()
    with pytest.raises(ValueError, match="after"):
        mv.summarize(cur, prev)


# ---- the page ----------------------------------------------------------------------------


def test_parser_reads_the_text_format() -> None:
    text = (
        "# HELP x A help line with \"quotes\"\n# TYPE x gauge\n\n"
        'x{a="1",b="q\\"uo\\\\te\\n"} 1.5 1700000000000\n'
        "bare 3\n"
        'trailing{a="x",} -Inf\n'
        'nan{ a = "y" } NaN\n'
        "x{} +Inf\n"
    )
    samples = mv.parse_text(text)
    assert samples["x"][(("a", "1"), ("b", 'q"uo\\te\n'))] == 1.5
    assert samples["x"][()] == float("inf")
    assert samples["bare"][()] == 3.0
    assert samples["trailing"][(("a", "x"),)] == float("-inf")
    assert samples["nan"][(("a", "y"),)] != samples["nan"][(("a", "y"),)]


@pytest.mark.parametrize("text", [
    "<html><body>Not Found</body></html>",
    '{"error": "no"}',
    'x{a="1" 2',
    "x 1 2 3",
    "x one",
])
def test_not_prometheus_text_is_a_scrape_error(text: str) -> None:
    with pytest.raises(ScrapeError, match=r"^http://h:1/metrics: not Prometheus text \(line 1"):
        mv.Scrape.parse(text, "http://h:1/metrics")


def test_helpers_read_by_catalog_value() -> None:
    _, cur = snapshots()
    assert cur.gauge(MC.REQUEST_METRICS, "active") == 7
    assert cur.counter(MC.REQUEST_FINISHED) == 16
    assert cur.counter(MC.REQUEST_FINISHED, "length") == 2
    assert cur.counter(MC.REQUEST_FAILURE, model=("ensemble", "tensorrt_llm_bls")) == 5
    assert cur.buckets(MC.E2E) == [(0.5, 4), (1.0, 4), (float("inf"), 4)]
    assert cur.gauge(MC.STEP_MAX_MS) is None and cur.buckets(MC.INPUT_TOKEN_LEN) is None
    with pytest.raises(KeyError, match="activ"):
        cur.gauge(MC.REQUEST_METRICS, "activ")  # a typo is an error, not an empty panel


@pytest.mark.parametrize(("url", "full"), [
    ("localhost:8002", "http://localhost:8002/metrics"),
    ("  10.0.0.5:8002 ", "http://10.0.0.5:8002/metrics"),
    ("http://h:8002", "http://h:8002/metrics"),
    ("http://h:8002/", "http://h:8002/metrics"),
    ("https://h/triton/metrics", "https://h/triton/metrics"),
    ("http://h:8002/metrics?name=x", "http://h:8002/metrics?name=x"),
    ("[::1]:8002", "http://[::1]:8002/metrics"),
])
def test_metrics_url(url: str, full: str) -> None:
    assert mv.metrics_url(url) == full


@pytest.mark.parametrize("url", ["grpc://h:8001", "", "http://", "h:port", "h:99999"])
def test_bad_metrics_url(url: str) -> None:
    with pytest.raises(ScrapeError):
        mv.metrics_url(url)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_closed_port_is_a_clear_error() -> None:
    port = _closed_port()
    with pytest.raises(ScrapeError) as info:
        mv.scrape(f"127.0.0.1:{port}", timeout=2)
    msg = str(info.value)
    assert msg.startswith(f"http://127.0.0.1:{port}/metrics: connection refused")
    assert isinstance(info.value, TritonLLMError)


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ScrapeError, match=rf"^http://127.0.0.1:{port}/metrics: no answer "
                                              r"within 0.2 s$"):
            mv.scrape(f"127.0.0.1:{port}", timeout=0.2)


# ---- a server ----------------------------------------------------------------------------


class _Pages(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[list[tuple[int, str]]] = []  # (status, body) of GET 1, 2, ... (then the last)
    served: ClassVar[Iterator[int]] = itertools.count()

    def do_GET(self) -> None:
        n = next(self.served)
        status, body = self.pages[min(n, len(self.pages) - 1)]
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[http.server.ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []

    def start(*pages: tuple[int, str]) -> str:
        handler = type("Pages", (_Pages,), {"pages": list(pages), "served": itertools.count()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        threads.append(thread)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in zip(servers, threads, strict=True):
        server.shutdown()
        server.server_close()
        thread.join()


def test_scrape_reads_a_page(serve) -> None:
    where = serve((200, CUR))
    s = mv.scrape(where)
    assert s.url == f"http://{where}/metrics" and s.gauge(MC.REQUEST_METRICS, "active") == 7


def test_http_error_and_non_prometheus_page(serve) -> None:
    where = serve((404, "not found"), (200, "<html>hello</html>"))
    with pytest.raises(ScrapeError, match=r"/metrics: HTTP 404 .*port 8002"):
        mv.scrape(where)
    with pytest.raises(ScrapeError, match=rf"^http://{where}/metrics: not Prometheus text"):
        mv.scrape(where)


def test_once_prints_the_summary(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    where = serve((200, PREV), (200, CUR))
    clock = iter((100.0, 102.0))  # the two scrapes, 2 s apart (the real wait is 10 ms)
    monkeypatch.setattr(mv, "_clock", lambda: next(clock))
    r = CliRunner().invoke(main, ["metrics", where, "--once", "--interval", "0.01"])
    assert r.exit_code == 0, r.output
    got = dict(line.split(None, 1) for line in r.output.strip().splitlines())
    assert got["url"] == f"http://{where}/metrics" and got["model"] == "tensorrt_llm"
    assert got["interval_s"] == "2.000"
    assert got["requests_active"] == "7" and got["requests_waiting"] == "3"
    assert got["generation_tokens_per_s"] == "300.0"
    assert got["finished_per_s"] == "3.00" and got["errors_per_s"] == "2.00"
    assert got["ttft_p50_ms"] == "40.00" and got["ttft_p99_ms"] == "100.00"
    assert got["itl_p50_ms"] == "1.500" and got["itl_p99_ms"] == "4.700"
    assert got["kv_used_percent"] == "25.0" and got["kv_blocks_max"] == "1000"
    assert set(got) == {"url", "model", "interval_s", *(k for _, k, *_ in
                                                        mv.rows(mv.summarize(*snapshots())))}


def test_count_prints_one_block_per_interval_when_not_a_terminal(serve) -> None:
    where = serve((200, PREV), (200, CUR), (200, CUR))
    r = CliRunner().invoke(main, ["metrics", where, "--count", "2", "--interval", "0.01"])
    assert r.exit_code == 0, r.output
    blocks = r.output.strip().split("\n\n")
    assert len(blocks) == 2 and all(b.startswith("url ") for b in blocks)


def test_unreachable_server_exits_1_with_one_line() -> None:
    port = _closed_port()
    r = CliRunner().invoke(main, ["metrics", f"127.0.0.1:{port}", "--once",
                                  "--interval", "0.01"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert lines == [f"error: http://127.0.0.1:{port}/metrics: connection refused "
                     "(Triton serves metrics on port 8002 by default)"]


def test_bad_url_exits_1_with_one_line() -> None:
    r = CliRunner().invoke(main, ["metrics", "grpc://localhost:8001", "--once"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert r.output.startswith("error: grpc://localhost:8001: not an http(s) URL")


@pytest.mark.parametrize("args", [["--interval", "0"], ["--interval", "-1"], ["--count", "0"],
                                  ["--timeout", "0"]])
def test_bad_options_are_usage_errors(args: list[str]) -> None:
    r = CliRunner().invoke(main, ["metrics", "localhost:8002", *args])
    assert r.exit_code == 2 and args[0] in r.output


def test_listed_in_the_cli() -> None:
    assert "metrics" in CliRunner().invoke(main, ["--help"]).output


# ---- showing it --------------------------------------------------------------------------


def test_render_is_a_table_with_every_row() -> None:
    from rich.console import Console

    s = mv.summarize(*snapshots())
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(mv.render(s))
    text = out.getvalue()
    assert "tensorrt_llm @ http://t/metrics" in text
    for _, _, label, value, _ in mv.rows(s, thousands=True):
        assert label in text and value in text
    assert "40.00" in text and "300.0" in text and "25.0" in text


def test_render_shows_missing_as_a_dash() -> None:
    from rich.console import Console

    empty = mv.Scrape.parse("", "u", at=0.0), mv.Scrape.parse("", "u", at=1.0)
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(mv.render(mv.summarize(*empty)))
    assert out.getvalue().count(mv.MISSING) >= len(mv.rows(mv.summarize(*empty)))
