"""bench_openai's pure parts: the medians of per-round ratios, the target checks, the table,
the command lines it builds and its argument errors. The benchmark itself (a real tritonserver,
the front, genai-perf) is run by hand: ``python -m tritonllm.perf.bench_openai``."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tritonllm.perf import bench_openai as B
from tritonllm.perf.metrics import RequestRecord, summarize


def m(tps: float, ttft: float, retok: float | None = None) -> B.Measured:
    return B.Measured(tps, retok if retok is not None else tps * 1.5, ttft, 0.5, 64.0)


def numbers(busy: list[tuple[float, float, float, float]],
            idle: list[tuple[float, float, float, float]] = ((100, 5.0, 90, 7.0),),
            genai: dict[str, Any] | None = None) -> B.Numbers:
    """Rounds as (gRPC tok/s, gRPC TTFT, front tok/s, front TTFT)."""
    n = B.Numbers(16, 64, 64, 512, 64, 2, genai_perf=genai)
    n.busy = [B.Round(16, "grpc", m(a, b), m(c, d)) for a, b, c, d in busy]
    n.idle = [B.Round(1, "grpc", m(a, b), m(c, d)) for a, b, c, d in idle]
    return n


def test_headline_numbers_are_medians_of_the_rounds_own_ratios() -> None:
    # drift between rounds: the ratio of the medians (950/1000) is not the median ratio
    n = numbers([(1000, 30, 950, 32), (2000, 30, 1000, 40), (900, 30, 880, 31)])
    v = n.values()
    assert v["front_over_grpc_tps"] == pytest.approx(950 / 1000)  # of 0.95, 0.5, 0.978
    assert v["added_ttft_p50_ms"] == pytest.approx(2.0)  # of 2, 10, 1
    assert v["added_ttft_p50_idle_ms"] == pytest.approx(2.0)
    assert "genai_perf_over_ours_tps" not in v


def test_genai_perf_is_compared_with_our_retokenized_count_through_the_front() -> None:
    n = numbers([(1000, 30, 900, 32)], genai={"output_tokens_per_s": 1620.0,
                                              "ttft_p50_ms": 16.0})
    v = n.values()
    assert v["genai_perf_over_ours_tps"] == pytest.approx(1620 / (900 * 1.5))
    assert v["genai_perf_over_ours_ttft"] == pytest.approx(0.5)


@pytest.mark.parametrize("name, value, ok", [
    ("front_over_grpc_tps", 0.9, True), ("front_over_grpc_tps", 0.89, False),
    ("added_ttft_p50_ms", 3.0, True), ("added_ttft_p50_ms", 3.1, False),
    ("added_ttft_p50_idle_ms", -1.0, True),
    ("genai_perf_over_ours_tps", 0.86, True), ("genai_perf_over_ours_tps", 1.15, True),
    ("genai_perf_over_ours_tps", 0.84, False), ("genai_perf_over_ours_tps", 1.2, False),
])
def test_targets(name: str, value: float, ok: bool) -> None:
    assert B.meets(name, value) is ok
    assert B.missed({name: value}) == ([] if ok else [name])


def test_missed_and_the_table_say_the_same() -> None:
    good = numbers([(1000, 30, 950, 31)], idle=[(100, 5, 95, 6)])
    assert good.missed() == []
    text = B.table(good)
    assert "MISSED" not in text and text.count("| met |") == 3
    bad = numbers([(1000, 30, 800, 40)], idle=[(100, 5, 95, 6)])
    assert bad.missed() == ["front_over_grpc_tps", "added_ttft_p50_ms"]
    assert B.table(bad).count("MISSED") == 2
    failed = numbers([(1000, 30, 950, 31)], idle=[(100, 5, 95, 6)])
    failed.genai_perf_error = "genai-perf exited with 1"
    assert failed.missed() == ["genai_perf_over_ours_tps"]
    assert "genai-perf failed: genai-perf exited with 1" in B.table(failed)
    doc = json.loads(json.dumps(bad.to_dict()))
    assert doc["missed"] == bad.missed() and doc["targets"]["added_ttft_p50_ms"] == {
        "op": "<=", "bound": 3.0}


def _record(i: int, server_tokens: int | None, error: str | None = None) -> RequestRecord:
    r = RequestRecord(i, "concurrency=1", f"r{i}", start=float(i), first_token=i + 0.01,
                      end=i + 0.1, response_times=[i + 0.01, i + 0.1], output_tokens=4,
                      server_output_tokens=server_tokens)
    if error:
        r.error_kind, r.end = error, None
    return r


def test_a_run_counts_only_when_every_request_succeeded_with_server_counts() -> None:
    ok = B.Measured.of(summarize([_record(0, 4), _record(1, 4)]))
    assert ok.tps == pytest.approx(8 / 1.1) and ok.ttft_p50_ms == pytest.approx(10.0)
    assert ok.output_tokens_mean == 4
    with pytest.raises(RuntimeError, match=r"failed.*overloaded"):
        B.Measured.of(summarize([_record(0, 4), _record(1, 4, "overloaded")]))
    with pytest.raises(RuntimeError, match="token counts"):
        B.Measured.of(summarize([_record(0, None)]))


def test_genai_perf_command_targets_the_front_chat_endpoint(tmp_path: Path) -> None:
    args = B.parser().parse_args(["--concurrency", "8", "--requests", "40",
                                  "--output-tokens", "32"])
    cmd = B.genai_perf_command("genai-perf", "http://127.0.0.1:9000", args,
                               tmp_path / "p.jsonl", tmp_path / "tok", tmp_path / "art")
    assert cmd[:2] == ["genai-perf", "profile"] and "--streaming" in cmd
    assert cmd[cmd.index("--endpoint-type") + 1] == "chat"
    assert cmd[cmd.index("-u") + 1] == "127.0.0.1:9000"  # no scheme: genai-perf adds it
    assert cmd[cmd.index("--concurrency") + 1] == "8"
    assert cmd[cmd.index("--request-count") + 1] == "40"
    assert cmd[cmd.index("--output-tokens-mean") + 1] == "32"
    assert cmd[cmd.index("-m") + 1] == "ensemble"
    assert cmd[cmd.index("--input-file") + 1] == str(tmp_path / "p.jsonl")


@pytest.mark.parametrize("argv, words", [
    (["--concurrency", "0"], ["--concurrency", "at least 1"]),
    (["--requests", "many"], ["--requests", "not an integer"]),
    (["--rounds", "-1"], ["--rounds", "at least 1"]),
    (["--model", "gpt"], ["--model", "invalid choice"]),
    (["--nope"], ["unrecognized arguments"]),
])
def test_argument_errors_name_the_option(argv: list[str], words: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        B.parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_defaults() -> None:
    args = B.parser().parse_args([])
    assert (args.concurrency, args.input_tokens, args.output_tokens, args.rounds) == (
        16, 64, 64, 3)
    assert not args.genai_perf and not args.check and args.repo is None


def test_main_writes_json_and_check_exits_1_on_a_miss(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    result = numbers([(1000, 30, 800, 40)])
    monkeypatch.setattr(B, "measure", lambda args, repo, out, say: result)
    out = tmp_path / "out"
    argv = ["--repo", str(tmp_path), "--out", str(out)]
    assert B.main(argv) == 0  # without --check a miss is reported, not an exit code
    assert B.main([*argv, "--check"]) == 1
    doc = json.loads((out / "openai.json").read_text())
    assert doc["missed"] == ["front_over_grpc_tps", "added_ttft_p50_ms"]
    assert doc["command"].endswith("--check") and (out / "table.md").is_file()
    assert "MISSED" in capsys.readouterr().out
    result.busy = numbers([(1000, 30, 990, 31)]).busy
    assert B.main([*argv, "--check"]) == 0


def test_wait_healthy() -> None:
    with pytest.raises(RuntimeError, match="exited"):
        B.wait_healthy("http://127.0.0.1:1/health", 5, lambda: False)
    with pytest.raises(RuntimeError, match="did not answer 200"):
        B.wait_healthy("http://127.0.0.1:1/health", 0.3, lambda: True, poll_s=0.05)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Health)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        B.wait_healthy(f"http://127.0.0.1:{srv.server_port}/health", 10, lambda: True)
    finally:
        srv.shutdown()
        srv.server_close()
