"""The observability benchmark's figure, table and command line, on a fabricated run (the real
run needs tritonserver and prometheus: ``python -m tritonllm.perf.bench_observability``, and
tests/integration/test_observability.py for the same run asserted on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonllm import metrics_rules as R
from tritonllm.perf import bench_observability as B
from tritonllm.perf.observe import ObservedRun

START = 1_781_000_000.0


def fabricated() -> ObservedRun:
    """A FABRICATED run: 6 s of load, samples every second from 10 s before to 12 s after;
    TTFT p99 NaN while idle, as Prometheus's histogram_quantile returns over an empty window."""
    ts = [START + t for t in range(-10, 13)]

    def series(load: float, idle: float = 0.0) -> list[tuple[float, float]]:
        return [(t, load if START <= t <= START + 6 else idle) for t in ts]

    return ObservedRun(
        start=START, end=START + 6, requests=40, idle_ratio=0.0, peak_ratio=0.8, ratio_after=0.0,
        summary={"server_output_tokens_per_s": 500.0, "ttft_ms": {"mean": 60.0, "p99": 140.0},
                 "errors": {}, "completed": 38},
        prom_tokens_per_s=480.0, prom_ttft_p50_s=0.04, prom_ttft_p99_s=0.12,
        prom_ttft_mean_s=0.05,
        series={R.QUEUE_COMPUTE_RATIO: series(0.8), R.TOKENS_PER_S: series(480.0),
                R.TTFT_P99: series(0.12, float("nan")), R.ITL_P99: series(0.02, float("nan")),
                B.ACTIVE: series(16.0)})


def test_the_plot_is_written(tmp_path: Path) -> None:
    png = B.plot(fabricated(), tmp_path / "sub" / "observability.png", "a title")
    assert png == tmp_path / "sub" / "observability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_run_without_samples_still_plots(tmp_path: Path) -> None:
    run = fabricated()
    run.series = {}
    run.summary = {}
    assert B.plot(run, tmp_path / "empty.png").stat().st_size > 0


def test_table_and_json_record(tmp_path: Path) -> None:
    run = fabricated()
    text = B.table(run)
    assert "| generated tokens/s (server-counted tokens) | 500 | 480 |" in text
    assert "| TTFT mean, ms | 60.0 | 50.0 |" in text
    assert "| TTFT p99, ms | 140.0 | 120.0 |" in text
    assert f"| `{R.QUEUE_COMPUTE_RATIO}` | 0.000 | 0.800 | 0.000 |" in text
    args = B.parser().parse_args(["--concurrency", "4", "--out", str(tmp_path)])
    doc = B.record(run, args, ["--concurrency", "4"])
    text = json.dumps(doc, allow_nan=False)  # NaN samples become null: strict JSON
    back = json.loads(text)
    assert back["series"][R.TTFT_P99][0][1] is None
    assert back["settings"]["concurrency"] == 4 and back["machine"]["cpu_count"] >= 1
    assert back["command"] == f"{B.PROG} --concurrency 4"


@pytest.mark.parametrize("argv", [["--concurrency", "0"], ["--duration", "-1"],
                                  ["--window", "10"], ["--input-tokens", "x"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        B.main(argv)
    assert e.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_defaults() -> None:
    args = B.parser().parse_args([])
    assert (args.concurrency, args.duration, args.input_tokens, args.output_tokens,
            args.window, args.repo, args.docs) == (16, 20.0, 64, 64, "10s", None, False)


def test_window_seconds() -> None:
    assert [B.window_seconds(w) for w in ("10s", "1m", "1.5h")] == [10.0, 60.0, 5400.0]
