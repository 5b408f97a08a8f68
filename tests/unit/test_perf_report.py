"""Artifact directories: files, consistent counts, plots that render, read-back, compare; the
CLI's compare, SLO exit code and one-line errors (runs built from records, no server)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm.cli import main
from tritonllm.perf.metrics import RequestRecord, summarize
from tritonllm.perf.report import compare, format_compare, load_run, markdown_table, write_run
from tritonllm.perf.run import PointResult, RunResult
from tritonllm.perf.scenario import LoadPoint, Scenario
from tritonllm.perf.slo import check, parse_slos


def _run(scale: float = 1.0, failures: int = 1, levels: tuple[int, ...] = (1, 4)) -> RunResult:
    rng = random.Random(int(scale * 10))
    points = []
    for c in levels:
        point = LoadPoint("concurrency", c)
        recs = []
        for i in range(30):
            start = i * 0.01
            if i < failures:
                recs.append(RequestRecord(i, point.label, f"r{i}", start, error_kind="timeout"))
                continue
            ttft = scale * c * rng.uniform(0.01, 0.03)
            times = [start + ttft + k * 0.002 * scale for k in range(8)]
            recs.append(RequestRecord(i, point.label, f"r{i}", start, first_token=times[0],
                                      end=times[-1], response_times=times, input_tokens=16,
                                      output_tokens=8, requested_output_tokens=8))
        points.append(PointResult(point, summarize(recs), recs))
    return RunResult(Scenario(concurrency=levels), points, {"tool": "ours", "started": "t"})


def test_write_run_files_counts_and_plots(tmp_path: Path) -> None:
    run = _run()
    slo = check(parse_slos("ttft_p99_ms=1000,error_rate=0"),
                {p.point.label: p.summary for p in run.points})
    files = write_run(run, tmp_path / "a", slo)
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in files)
    assert names == ["plots/latency_distributions.png", "plots/throughput_vs_ttft.png",
                     "records.csv", "report.md", "run.json", "summary.csv"]
    with (tmp_path / "a/records.csv").open() as f:
        rows = list(csv.DictReader(f))
    data = json.loads((tmp_path / "a/run.json").read_text())
    for p in data["points"]:  # requests sent = records = summary count
        label = p["load"]["label"]
        mine = [r for r in rows if r["point"] == label]
        assert len(mine) == p["summary"]["requests"] == 30
        assert sum(r["ok"] == "False" for r in mine) == sum(p["summary"]["errors"].values()) == 1
    assert [(s["key"], s["passed"]) for s in data["slo"]] == [
        ("ttft_p99_ms", True), ("error_rate", False)] * 2
    with (tmp_path / "a/summary.csv").open() as f:
        summary_rows = list(csv.DictReader(f))
    assert [r["point"] for r in summary_rows] == ["concurrency=1", "concurrency=4"]
    for png in (tmp_path / "a/plots").iterdir():
        blob = png.read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 15_000, png
    md = (tmp_path / "a/report.md").read_text()
    assert "| concurrency=4 | 30 | 1 |" in md and "FAIL" in md
    assert "![throughput_vs_ttft](plots/throughput_vs_ttft.png)" in md


def test_load_run_round_trip_and_errors(tmp_path: Path) -> None:
    run = _run()
    write_run(run, tmp_path, plots=False)
    again = load_run(tmp_path)
    assert [p.summary for p in again.points] == [p.summary for p in run.points]
    assert again.scenario == run.scenario and load_run(tmp_path / "run.json").tool == "ours"
    from tritonllm.errors import ConfigError

    with pytest.raises(ConfigError, match="not a perf run"):
        load_run(tmp_path / "plots-missing")
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ConfigError, match="not a tritonllm perf run"):
        load_run(tmp_path / "x.json")


def test_compare_deltas() -> None:
    a, b = _run(1.0), _run(2.0, levels=(4, 16))
    deltas = compare(a, b)
    assert {d.point for d in deltas} == {"concurrency=4"}
    ttft = next(d for d in deltas if d.metric == "ttft_p50_ms")
    assert ttft.b > ttft.a and ttft.better is False  # type: ignore[operator]
    assert ttft.relative == pytest.approx((ttft.b - ttft.a) / ttft.a)  # type: ignore[operator]
    text = format_compare(a, b, deltas)
    assert "only in A: ['concurrency=1']" in text and "ttft_p99_ms" in text


def test_markdown_table_has_a_row_per_point() -> None:
    lines = markdown_table(_run()).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| concurrency=1 | 30 | 1 |")


def test_cli_compare(tmp_path: Path) -> None:
    write_run(_run(1.0), tmp_path / "a", plots=False)
    write_run(_run(2.0), tmp_path / "b", plots=False)
    r = CliRunner().invoke(main, ["perf", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "concurrency=4" in r.output and "%" in r.output
    write_run(_run(1.0, levels=(2,)), tmp_path / "c", plots=False)
    r = CliRunner().invoke(main, ["perf", "compare", str(tmp_path / "a"), str(tmp_path / "c")])
    assert r.exit_code == 1 and "share no load point" in r.output


def test_cli_one_line_errors(tmp_path: Path) -> None:
    for args, words in [(["--concurrency", "0"], "at least 1"),
                        (["--slo", "speed=3", "--tokenizer", str(tmp_path)], "unknown key"),
                        (["--input-tokens", "x"], "--input-tokens"),
                        (["--concurrency", "2"], "--tokenizer DIR")]:
        r = CliRunner().invoke(main, ["perf", "--url", "localhost:1", *args])
        assert r.exit_code == 1, (args, r.output)
        assert r.output.strip().splitlines()[-1].startswith("error: ") and words in r.output
    r = CliRunner().invoke(main, ["perf", "--sampling", "novalue"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output


def test_perf_help_lists_commands() -> None:
    r = CliRunner().invoke(main, ["perf", "--help"])
    assert r.exit_code == 0 and "compare" in r.output and "--slo" in r.output
