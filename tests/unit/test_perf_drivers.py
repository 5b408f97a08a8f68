"""perf_analyzer / genai-perf drivers: command lines, and parsing exports the real tools wrote.

The exports in data/perf/ come from real runs against the served tiny model (see its
README). Our summary of genai-perf's own profile export must equal genai-perf's numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tritonllm.perf import drivers
from tritonllm.perf.metrics import summarize
from tritonllm.perf.prompts import Prompt, Tokenizer
from tritonllm.perf.run import RequestPlan
from tritonllm.perf.scenario import LengthSpec, LoadPoint, Scenario

DATA = Path(__file__).parent / "data" / "perf"
FIXTURE_TOKENIZER_SHA = "d552444ffe47eb28ae9586d1cb853afbbec5f4661199717f3f2f107c4eb9998c"


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Tokenizer:
    sha = hashlib.sha256((tiny_model / "tokenizer.json").read_bytes()).hexdigest()
    assert sha == FIXTURE_TOKENIZER_SHA, "the tiny tokenizer changed: regenerate data/perf"
    return Tokenizer(tiny_model)


def _plan(n: int = 2) -> RequestPlan:
    return RequestPlan([Prompt(f"p{k}", 3) for k in range(n)], [8] * n, exact_output=True)


def test_perf_analyzer_command() -> None:
    sc = Scenario(url="grpc://h:9", requests=50, warmup=2, headers={"k": "v"})
    cmd = drivers.perf_analyzer_command("pa", sc, LoadPoint("concurrency", 8), Path("in.json"),
                                        Path("x.json"), Path("x.csv"), ["--shape", "stream:1"])
    line = " ".join(cmd)
    assert line.startswith("pa -m ensemble -u h:9 -i grpc --async --streaming --input-data "
                           "in.json --shape stream:1 --concurrency-range 8 ")
    assert "--request-count 50 " in line and "--stability-percentage 999" in line
    assert "--warmup-request-count 8 " in line  # raised to the concurrency (PA 2.51 hang)
    assert "--profile-export-file x.json -f x.csv" in line and "-H k:v" in line
    rate = drivers.perf_analyzer_command("pa", sc, LoadPoint("request_rate", 2.5),
                                         Path("i"), Path("x"), Path("c"), [])
    assert "--request-rate-range 2.5 --request-distribution poisson" in " ".join(rate)
    assert "--warmup-request-count 2 " in " ".join(rate)


def test_genai_perf_command_and_quirks() -> None:
    sc = Scenario(url="h:9", requests=40, warmup=0, output_tokens=LengthSpec(16),
                  sampling={"temperature": 0.5, "top_k": 1})
    cmd = drivers.genai_perf_command("gp", sc, LoadPoint("concurrency", 4), Path("p.jsonl"),
                                     Path("art"), Path("tok"), ["--shape", "stream:1"])
    line = " ".join(cmd)
    assert line.startswith("gp profile -m ensemble --endpoint-type kserve --backend tensorrtllm "
                           "-u h:9 --tokenizer tok --input-file p.jsonl --output-tokens-mean 16 ")
    assert "--concurrency 4 --request-count 40 --warmup-request-count 0 " in line
    assert "--streaming" in cmd and "--output-tokens-mean-deterministic" not in cmd
    extras = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--extra-inputs"]
    assert extras == ["max_tokens:16", "min_tokens:16", "temperature:0.5", "top_k:1"]
    assert cmd[cmd.index("--"):] == ["--", "--shape", "stream:1"]
    rate = drivers.genai_perf_command("gp", sc.replace(streaming=False, exact_output=False),
                                      LoadPoint("request_rate", 3), Path("p"), Path("a"),
                                      Path("t"), [])
    assert "--request-rate" in rate and "--streaming" not in rate
    assert rate[rate.index("--"):] == ["--", "--request-distribution", "poisson"]
    assert "min_tokens:16" not in rate


def test_shape_args_only_for_variable_dims() -> None:
    dims = {"text_input": [1], "stream": [-1], "min_tokens": [-1], "bad_words": [-1]}
    names = ["text_input", "stream", "min_tokens", "max_tokens"]
    assert drivers.shape_args(dims, names) == ["--shape", "stream:1", "--shape", "min_tokens:1"]
    assert drivers.shape_args(dims, names, skip=["stream"]) == ["--shape", "min_tokens:1"]


def test_input_data_per_prompt() -> None:
    sc = Scenario(sampling={"temperature": 0.0})
    data = drivers.input_data(sc, _plan())
    assert data["data"][1] == {"text_input": ["p1"], "max_tokens": [8], "min_tokens": [8],
                               "stream": [True], "exclude_input_in_output": [True],
                               "temperature": [0.0]}


def test_tool_environment(tmp_path: Path) -> None:
    import sys

    env = drivers.tool_environment({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/x"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    lib = drivers._cuda_runtime_lib()
    if lib is not None:
        assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [str(lib), "/x"]
    with pytest.raises(drivers.ToolError, match="not found on PATH"):
        drivers.find_tool("no-such-tool-xyz", {"PATH": str(tmp_path)})


def test_duration_is_refused_by_drivers() -> None:
    from tritonllm.errors import ConfigError

    with pytest.raises(ConfigError, match="--requests instead of --duration"):
        drivers._check(Scenario(duration=5, tool="genai-perf"))


def test_our_summary_of_a_genai_perf_export_equals_genai_perf(tok: Tokenizer) -> None:
    export = json.loads((DATA / "genai_perf/profile_export.json").read_text())
    theirs = drivers.read_genai_perf_summary(DATA / "genai_perf/profile_export_genai_perf.json")
    ((point, records),) = drivers.records_from_profile_export(export, tok.count_many)
    assert point == LoadPoint("concurrency", 2)
    s = summarize(records)
    assert s.requests == s.completed == theirs["request_count"]["avg"] == 8
    assert s.requests_per_s == pytest.approx(theirs["request_throughput"]["avg"], rel=1e-9)
    assert s.output_tokens_per_s == pytest.approx(theirs["output_token_throughput"]["avg"],
                                                  rel=1e-9)
    for ours, key in [(s.ttft_ms, "time_to_first_token"), (s.e2e_ms, "request_latency"),
                      (s.itl_ms, "inter_token_latency"), (s.output_tokens,
                                                          "output_sequence_length"),
                      (s.input_tokens, "input_sequence_length")]:
        assert ours is not None
        for stat in ("mean", "p50", "p90", "p99", "min", "max"):
            ref = theirs[key]["avg" if stat == "mean" else stat]
            # genai-perf rounds each ITL to whole nanoseconds
            assert ours.get(stat) == pytest.approx(ref, rel=1e-6, abs=1e-6), (key, stat)
    assert s.input_tokens is not None and s.input_tokens.mean == 16  # exact synthetic prompts


def test_perf_analyzer_export_and_csv(tok: Tokenizer) -> None:
    export = json.loads((DATA / "perf_analyzer/profile_export.json").read_text())
    ((point, records),) = drivers.records_from_profile_export(export, tok.count_many)
    assert point.label == "concurrency=2" and len(records) == 8
    assert all(r.ok and r.requested_output_tokens == 8 for r in records)
    assert all(r.input_tokens == 16 for r in records)
    row = drivers.read_perf_analyzer_csv(DATA / "perf_analyzer/perf_analyzer.csv")
    assert row["Concurrency"] == 2 and row["p99 latency"] > 0
    without = drivers.records_from_profile_export(export)
    assert without[0][1][0].output_tokens is None


def test_export_of_other_service_kind_is_refused() -> None:
    with pytest.raises(drivers.ToolError, match="service kind 'openai'"):
        drivers.records_from_profile_export({"service_kind": "openai", "experiments": []})


def test_server_token_counts_only_when_asked_for() -> None:
    """perf_analyzer writes every output of the model into its export, with garbage for those
    a response did not carry: the server's count is read only from requests that asked."""

    def request(asked: bool, counts: list[int]) -> dict[str, Any]:
        inputs: dict[str, Any] = {"text_input": "p", "max_tokens": 8}
        if asked:
            inputs["return_num_output_tokens"] = True
        return {"timestamp": 1_000, "request_inputs": inputs,
                "response_timestamps": [2_000 + i for i in range(len(counts))],
                "response_outputs": [{"text_output": "a", "num_output_tokens": n}
                                     for n in counts]}

    export = {"experiments": [{"experiment": {"mode": "concurrency", "value": 1},
                               "requests": [request(True, [1, 5, 8]),
                                            request(False, [2052691449])]}]}
    ((_, (asked, not_asked)),) = drivers.records_from_profile_export(export)
    assert asked.server_output_tokens == 8
    assert not_asked.server_output_tokens is None
