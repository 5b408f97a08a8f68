"""bench_embeddings' pure parts: the text set, the per-point arithmetic, the medians of the
rounds' own ratios, the targets, the report and its plot. The benchmark itself (a real
tritonserver and ONNX Runtime) is run by hand: ``python -m tritonllm.perf.bench_embeddings``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tritonllm.perf import bench_embeddings as B


def test_the_text_set_is_fixed() -> None:
    texts = B.make_texts()
    assert texts == B.make_texts(256, seed=0)
    # Pinned: every run (and every docs number) measures the same texts; change it knowingly.
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    assert digest == "9967ca6b180af7e3ba99884961a7c32c8b67a7ad9530bceae8679fbe286d325e"
    assert B.make_texts(256, seed=1) != texts
    assert B.make_texts(10) == texts[:10]


def test_the_texts_vary() -> None:
    texts = B.make_texts()
    words = [len(t.split()) for t in texts]
    assert min(words) >= 5 and max(words) <= 60
    assert max(words) - min(words) > 40  # short and long ones
    multibyte = [t for t in texts if len(t.encode("utf-8")) > len(t)]
    assert 0.2 * len(texts) < len(multibyte) < len(texts)  # some, not all
    assert len(set(texts)) == len(texts)
    with pytest.raises(ValueError):
        B.make_texts(0)
    with pytest.raises(ValueError):
        B.make_texts(5, min_words=10, max_words=5)


def test_point_arithmetic() -> None:
    p = B.Point.of(4, [0.010, 0.020, 0.030, 0.040, 0.100], 0.5, inferences=5, executions=2)
    assert p.requests == 5 and p.texts_per_s == pytest.approx(10.0)
    assert p.mean_batch == pytest.approx(2.5)
    assert p.p50_ms == pytest.approx(30.0)
    assert p.p99_ms == pytest.approx(40 + 0.96 * 60)  # linear interpolation
    assert p.mean_ms == pytest.approx(40.0)
    assert B.Point.of(1, [0.01], 1.0, 0, 0).mean_batch == 0.0  # no statistics: no batch
    with pytest.raises(ValueError):
        B.Point.of(1, [], 1.0, 0, 0)
    assert B.InProcess(32, 320, 4.0).texts_per_s == pytest.approx(80.0)


def point(clients: int, tps: float, batch: float = 1.0, p50: float = 10.0) -> B.Point:
    requests = 100
    return B.Point(clients, requests, requests / tps, p50, 2 * p50, p50,
                   int(batch * 100), 100)


def numbers(rounds: list[tuple[float, float, float, float]],
            sweep: tuple[tuple[int, float], ...] = ()) -> B.Numbers:
    """Rounds as (1-client texts/s, 32-client texts/s, in-process b32, in-process b1)."""
    n = B.Numbers(32, 100, 256, 2, {"embedding_instance_count": 2}, machine="x86_64",
                  command="python -m tritonllm.perf.bench_embeddings --requests 100")
    n.rounds = [B.Round(B.InProcess(32, 100, 100 / b32), B.InProcess(1, 100, 100 / b1),
                        point(1, one), point(32, many, batch=12.5, p50=300.0))
                for one, many, b32, b1 in rounds]
    n.sweep = [point(c, tps, batch=c / 2) for c, tps in sweep]
    return n


def test_ratios_are_medians_of_the_rounds_own_ratios() -> None:
    # drift between rounds: the ratio of the medians is not the median of the ratios
    n = numbers([(100, 500, 600, 100), (50, 150, 200, 40), (100, 380, 400, 90)])
    v = n.values()
    assert v["concurrent_over_single"] == pytest.approx(3.8)  # of 5.0, 3.0, 3.8
    assert v["served_over_inprocess"] == pytest.approx(0.833, abs=1e-3)  # of .833, .75, .95
    assert v["inprocess_batch_gain"] == pytest.approx(5.0)  # of 6, 5, 4.44
    assert n.missed() == ["concurrent_over_single"]


@pytest.mark.parametrize("name, value, ok", [
    ("concurrent_over_single", 4.0, True), ("concurrent_over_single", 3.99, False),
    ("served_over_inprocess", 0.7, True), ("served_over_inprocess", 0.69, False),
])
def test_targets(name: str, value: float, ok: bool) -> None:
    assert B.meets(name, value) is ok
    assert B.missed({name: value}) == ([] if ok else [name])
    assert B.missed({"inprocess_batch_gain": 0.1}) == []  # not a target


def test_table_report_and_json_say_the_same() -> None:
    good = numbers([(20, 100, 120, 30)], sweep=((8, 60), (4, 40), (32, 1.0)))
    assert [c for c, _, _ in good.by_clients()] == [1, 4, 8, 32]  # sorted; C from the rounds
    assert good.by_clients()[-1][1:] == pytest.approx((100.0, 12.5))
    text = B.table(good)
    assert text.count("| PASS |") == 2 and "FAIL" not in text
    assert "| 32 clients | 100.0 | 12.50 | 300.0 | 600.0 |" in text
    assert "| 1 client | 20.0 | 1.00 |" in text
    bad = numbers([(50, 100, 200, 100)])
    assert bad.missed() == ["concurrent_over_single", "served_over_inprocess"]
    assert B.table(bad).count("| FAIL |") == 2
    doc = json.loads(json.dumps(bad.to_dict()))
    assert doc["missed"] == bad.missed()
    assert doc["targets"]["concurrent_over_single"] == {"op": ">=", "bound": 4.0}
    assert doc["rounds"][0]["many"]["mean_batch"] == pytest.approx(12.5)
    assert doc["rounds"][0]["inprocess"]["texts_per_s"] == pytest.approx(200.0)
    md = B.report(bad)
    assert "`python -m tritonllm.perf.bench_embeddings --requests 100`" in md
    assert "embedding_instance_count=2" in md and B.table(bad) in md


def test_plot_is_written(tmp_path: Path) -> None:
    out = B.render_plot(numbers([(20, 100, 120, 30)], sweep=((8, 60),)), tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arguments() -> None:
    args = B.parser().parse_args(["--sweep", "4, 8", "--instances", "2"])
    assert args.sweep == [4, 8] and args.instances == 2 and args.clients == 32
    assert B.parser().parse_args(["--sweep", ""]).sweep == []
    for bad in (["--sweep", "x"], ["--sweep", "0"]):
        with pytest.raises(SystemExit):
            B.parser().parse_args(bad)
    with pytest.raises(SystemExit) as e:
        B.main(["--clients", "1"])
    assert e.value.code == 2
