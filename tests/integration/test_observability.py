"""The LLM metrics on a real tritonserver, watched by a real Prometheus, against independent counts.

Real parts: tritonserver serving the tiny CPU repository, Debian's ``prometheus`` (on loopback,
temporary config and TSDB) loading the project's recording and alerting rules (rate window
10 s instead of 1 min, so the test's burst fits), the perf harness as the load, the official
tritonclient for single requests. The references are counted outside the server: requests
sent and tokens asked for by the test, prompt tokens by the HF tokenizer, the harness's own
client-side TTFT and tokens/s.
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonllm import contract as C
from tritonllm import metrics_catalog as MC
from tritonllm import metrics_rules as R

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="needs Debian's prometheus (scripts/setup.sh installs it)"),
]
CONCURRENCY = 16
DURATION_S = 12.0
OUTPUT_TOKENS = 48
INPUT_TOKENS = 48
WARMUP = 2
#: Harness tokens/s (the server-reported counts of the measured requests over their span) vs
#: Prometheus's increase() over the run (warm-up included, extrapolated to the window's
#: edges): within 15%. (The harness's headline tokens/s re-tokenizes the output text, as
#: genai-perf does; a random model's text re-tokenizes into more tokens than it generated.)
TOKENS_TOLERANCE = 0.15
#: Harness TTFT - Prometheus TTFT, on the same burst: at most this much at the mean and at
#: p99 (the request's path outside the LLM model, see test_prometheus_agrees_with_the_harness;
#: measured on a 2-core machine: 30-35 ms at the mean, 70-112 ms at p99) ...
TTFT_PATH_MS = {"mean": 100.0, "p99": 300.0}
#: ... and at least minus this much: a histogram's p99 is interpolated inside its bucket
#: (trtllm-serve's buckets around 20-100 ms are 20 ms wide).
TTFT_BUCKET_SLACK_MS = 20.0


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from served import served_repository

    with served_repository(cpu_engine, tmp_path_factory.mktemp("observed")) as srv:
        yield srv


@pytest.fixture(scope="module")
def prometheus(server: Any) -> Iterator[Any]:
    from tritonllm.perf.observe import LocalPrometheus

    target = server.url_metrics.split("://", 1)[1].split("/", 1)[0]
    with LocalPrometheus(target, scrape_s=1.0, window="10s") as prom:
        prom.wait_for(f'up{{job="{R.COMPOSE_JOB}"}}', lambda v: v == 1, 60)
        yield prom


def scrape(server: Any) -> dict[str, float]:
    """Every sample of the metrics page: ``'name{labels}' -> value``."""
    body = urllib.request.urlopen(server.url_metrics, timeout=10).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples.items()
               if k.split("{", 1)[0] == name and all(w in k for w in want))


@pytest.fixture(scope="module")
def observed(server: Any, prometheus: Any) -> dict[str, Any]:
    """One burst of streaming load, with the metrics page read right before and after."""
    from tritonllm.perf.observe import observed_run
    from tritonllm.perf.prompts import find_tokenizer

    tokenizer = find_tokenizer(None, server.repo)
    before = scrape(server)
    run = observed_run(prometheus, server.grpc_address, tokenizer, concurrency=CONCURRENCY,
                       duration_s=DURATION_S, input_tokens=INPUT_TOKENS,
                       output_tokens=OUTPUT_TOKENS, warmup=WARMUP)
    return {"run": run, "before": before, "after": scrape(server), "tokenizer": tokenizer}


def test_the_autoscaling_signal_rises_with_load_and_falls_back(observed: dict[str, Any]) -> None:
    run = observed["run"]
    assert run.summary["errors"] == {}
    assert run.idle_ratio == 0.0  # no request: no queue time
    # Under 16 streams the LLM model's requests wait in Triton's queue for its one instance.
    assert run.peak_ratio > run.idle_ratio + 0.05, run.series[R.QUEUE_COMPUTE_RATIO]
    assert run.ratio_after <= run.idle_ratio


def test_prometheus_agrees_with_the_harness(observed: dict[str, Any]) -> None:
    run = observed["run"]
    harness_tps = run.summary["server_output_tokens_per_s"]
    assert harness_tps is not None
    assert run.prom_tokens_per_s == pytest.approx(harness_tps, rel=TOKENS_TOLERANCE)
    client = run.summary["ttft_ms"]
    assert run.prom_ttft_mean_s is not None and run.prom_ttft_p99_s is not None
    # The server's TTFT starts when the LLM model takes the request and ends when its first
    # token is produced; the harness's adds the path outside the LLM model (preprocessing and
    # Triton's queues, postprocessing, two gRPC hops, the client's own event loop on this
    # machine's 2 cores). So the server's is never more, and the gap is that path's length.
    for name, ours, theirs in (("mean", run.prom_ttft_mean_s, client["mean"]),
                               ("p99", run.prom_ttft_p99_s, client["p99"])):
        gap_ms = theirs - ours * 1000
        assert -TTFT_BUCKET_SLACK_MS <= gap_ms <= TTFT_PATH_MS[name], (name, ours, client)


def test_counters_and_histograms_match_what_was_sent(observed: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    run, before, after = observed["run"], observed["before"], observed["after"]

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    sent = run.requests
    assert delta(MC.GENERATION_TOKENS) == sent * OUTPUT_TOKENS  # exact_output: min = max
    assert delta(MC.REQUEST_FINISHED, finished_reason="length") == sent
    assert delta(MC.REQUEST_FINISHED, finished_reason="stop") == 0
    assert delta(f"{MC.OUTPUT_TOKEN_LEN}_count") == sent
    assert delta(f"{MC.OUTPUT_TOKEN_LEN}_sum") == sent * OUTPUT_TOKENS
    assert delta(f"{MC.TTFT}_count") == sent and delta(f"{MC.TPOT}_count") == sent
    assert delta(f"{MC.E2E}_count") == sent
    # Prompt tokens as the HF tokenizer counts the harness's prompts (BOS included, as the
    # repository's preprocessing adds it).
    tok = AutoTokenizer.from_pretrained(observed["tokenizer"])
    harness_prompt = INPUT_TOKENS  # the harness makes prompts of exactly this many tokens
    per_request = len(tok("x").input_ids) - len(tok("x", add_special_tokens=False).input_ids)
    assert delta(MC.PROMPT_TOKENS) == sent * (harness_prompt + per_request)
    assert delta(f"{MC.INPUT_TOKEN_LEN}_sum") == delta(MC.PROMPT_TOKENS)
    # Token lengths land in NVIDIA's buckets: every 48-token output in (10, 50].
    assert delta(f"{MC.OUTPUT_TOKEN_LEN}_bucket", le="10") == 0
    assert delta(f"{MC.OUTPUT_TOKEN_LEN}_bucket", le="50") == sent
    # Idle again: nothing held, every KV block back.
    assert total(after, MC.REQUEST_METRICS, request_type="active") == 0
    assert total(after, MC.KV_CACHE_BLOCKS, kv_cache_block_type="used") == 0
    assert total(after, MC.KV_CACHE_BLOCKS, kv_cache_block_type="free") == total(
        after, MC.KV_CACHE_BLOCKS, kv_cache_block_type="max") > 0
    assert total(after, MC.GENERAL, general_type="iteration_counter") > total(
        before, MC.GENERAL, general_type="iteration_counter")


def _names(expr: str) -> set[str]:
    """Metric and recorded-series names in a PromQL expression."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\b\d+(\.\d+)?(e[-+]?\d+)?\b", " ", expr)  # numbers: 1e-9, 0.99
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    functions = {"sum", "max", "min", "avg", "rate", "increase", "irate", "histogram_quantile",
                 "clamp_min", "clamp_max", "unless", "and", "or", "absent", "count", "le",
                 "time", "vector", "scalar"}
    return {w for w in words if w not in functions and not w.replace("_", "").isdigit()}


def test_every_name_a_panel_rule_or_alert_reads_is_served_or_gpu_only(
        observed: dict[str, Any], prometheus: Any) -> None:
    from tritonllm.dashboard import panel_queries

    recorded = {r.record for r in R.RECORDS}
    raw = {k.split("{", 1)[0] for k in observed["after"]}

    def family_of(name: str) -> MC.Family:
        try:
            return MC.family(name)
        except KeyError:  # a histogram's series
            return MC.family(re.sub(r"_(bucket|sum|count)$", "", name))

    def served(f: MC.Family) -> bool:
        return f.name in raw if f.kind != "histogram" else f"{f.name}_count" in raw

    exprs = [e for _, e in panel_queries()] + [r.expr for r in R.RECORDS] + [
        a.expr for a in R.ALERTS]
    used = set().union(*(_names(e) for e in exprs)) - recorded - {"up"}
    missing = sorted(n for n in used
                     if not served(family_of(n)) and MC.CPU in family_of(n).targets)
    assert not missing, f"used by a panel/rule/alert, absent from the CPU target: {missing}"
    # ... and every family the catalog says the CPU target exports is there, with its values.
    for fam in MC.CATALOG:
        if MC.CPU not in fam.targets:
            continue
        assert served(fam), fam.name
        for value in fam.values_for(MC.CPU):
            key = f'{fam.label}="{value}"'
            assert any(k.startswith(fam.name) and key in k for k in observed["after"]), key
    # Every recorded series evaluates in Prometheus (the rules load and their inputs exist).
    for name in recorded:
        assert prometheus.query(name), name


def test_refusals_and_cancellations_are_counted(server: Any) -> None:
    from served import Stream, tensor

    before = scrape(server)
    s = Stream(server)
    try:
        # A token id outside the vocabulary: INVALID_ARG from the LLM model, counted once.
        s.send("bad", C.LLM, [tensor("input_ids", np.array([[10**6]], np.int32), "INT32"),
                              tensor("input_lengths", np.array([[1]], np.int32), "INT32"),
                              tensor("request_output_len", np.array([[4]], np.int32),
                                     "INT32")])
        _, err = s.collect("bad")
        assert err is not None and "input_ids" in str(err)
    finally:
        s.close()
    from tritonllm.client import LLMClient

    with LLMClient(server.grpc_address) as client:
        stream = client.stream("cancel me", 1000, min_tokens=1000)
        next(iter(stream))  # the first token: the request runs in the engine
        stream.cancel()

    def deltas() -> tuple[float, float]:
        after = scrape(server)
        return (total(after, MC.REJECTED, reason=MC.REJECT_INVALID)
                - total(before, MC.REJECTED, reason=MC.REJECT_INVALID),
                total(after, MC.REQUEST_FINISHED, finished_reason="cancelled")
                - total(before, MC.REQUEST_FINISHED, finished_reason="cancelled"))

    # The counters are refreshed every 0.25 s: poll (bounded) until they have moved.
    deadline = time.monotonic() + 30
    while deltas() != (1, 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert deltas() == (1, 1)  # one refusal, one cancellation: each counted once
