"""perf_analyzer and genai-perf as a user runs them, against the real tritonserver serving the
tiny CPU model's ensemble (one server for the module).

A user runs the tools by name from a shell of their own: here a login shell (``bash -l``)
started with an empty environment but ``HOME`` and ``PATH``, with the venv's ``bin`` put first
as ``source .venv/bin/activate`` does. Nothing sets ``LD_LIBRARY_PATH``, so the installed
``perf_analyzer`` must find ``libcudart.so.12`` itself (``scripts/setup.sh`` gives it a RUNPATH),
and genai-perf must find ``perf_analyzer`` on ``PATH``. The reference for the text streamed to
the tools is the server's own non-streamed answer to the same prompt.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent  # the venv the tests run in: the tools' install
REQUESTS, CONCURRENCY, OUT_TOKENS = 16, 2, 8
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tritonllm.builders.repository import render_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = tmp_path_factory.mktemp("tools") / "repo"
    render_repository(cpu_engine, repo, RepoSettings())
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300,
                                    log_file=repo.parent / "tritonserver.log")) as srv:
        yield srv


def user_shell(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``command`` in a login shell whose environment is HOME and a system PATH, the venv's
    ``bin`` first (after /etc/profile, which sets PATH)."""
    script = f"export PATH={shlex.quote(str(VENV_BIN))}:\"$PATH\"\n{command}"
    env = {"HOME": str(Path.home()), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    return subprocess.run(["bash", "-lc", script], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def requests_of(export: Path) -> list[dict[str, Any]]:
    """The requests of the one experiment in a perf_analyzer profile export."""
    experiments = json.loads(export.read_text())["experiments"]
    assert len(experiments) == 1
    assert experiments[0]["experiment"] == {"mode": "concurrency", "value": CONCURRENCY}
    requests: list[dict[str, Any]] = experiments[0]["requests"]
    return requests


def assert_complete(request: dict[str, Any]) -> None:
    """Every request streamed its responses to the end: exactly OUT_TOKENS tokens, by the
    server's own count (asked for with ``return_num_output_tokens``), ending on length."""
    outputs = request["response_outputs"]
    assert len(outputs) == len(request["response_timestamps"]) >= 1
    assert max(int(o["num_output_tokens"]) for o in outputs) == OUT_TOKENS
    assert outputs[-1]["finish_reason"] == "length"


def test_tools_run_by_name_from_a_clean_login_shell(tmp_path: Path) -> None:
    p = user_shell("env; perf_analyzer --version && genai-perf --version "
                   "&& genai-perf profile --help", tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cuda_runtime" not in p.stdout  # nothing in the environment helped the loader
    assert "Perf Analyzer Version 2.51.0" in p.stdout + p.stderr
    assert "genai-perf 0.0.16" in p.stdout and "--endpoint-type" in p.stdout


def test_perf_analyzer_streams_the_ensemble(server: Any, tmp_path: Path) -> None:
    from tritonllm.client import LLMClient

    with LLMClient(server.grpc_address, timeout=60) as client:
        reference = client.generate(PROMPT, OUT_TOKENS, min_tokens=OUT_TOKENS).text
    (tmp_path / "inputs.json").write_text(json.dumps({"data": [{
        "text_input": [PROMPT], "max_tokens": [OUT_TOKENS], "min_tokens": [OUT_TOKENS],
        "stream": [True], "exclude_input_in_output": [True],
        "return_num_output_tokens": [True]}]}))
    p = user_shell(
        f"perf_analyzer -m ensemble -u {server.grpc_address} -i grpc --async --streaming "
        f"--input-data inputs.json --concurrency-range {CONCURRENCY} "
        f"--request-count {REQUESTS} --stability-percentage 999 "
        "--profile-export-file export.json", tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    requests = requests_of(tmp_path / "export.json")
    assert len(requests) == REQUESTS
    for request in requests:
        assert_complete(request)
        assert "".join(o["text_output"] for o in request["response_outputs"]) == reference


def test_genai_perf_profiles_the_ensemble(server: Any, tiny_model: Path, tmp_path: Path) -> None:
    p = user_shell(
        f"genai-perf profile -m ensemble --endpoint-type kserve --backend tensorrtllm "
        f"-u {server.grpc_address} --streaming --tokenizer {shlex.quote(str(tiny_model))} "
        "--synthetic-input-tokens-mean 16 --synthetic-input-tokens-stddev 0 "
        f"--output-tokens-mean {OUT_TOKENS} --output-tokens-stddev 0 "
        f"--extra-inputs min_tokens:{OUT_TOKENS} --extra-inputs return_num_output_tokens:true "
        f"--concurrency {CONCURRENCY} --request-count {REQUESTS} --random-seed 0 "
        "--artifact-dir art", tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (export,) = (tmp_path / "art").glob("*/profile_export.json")
    requests = requests_of(export)
    assert len(requests) == REQUESTS
    for request in requests:
        assert request["request_inputs"]["stream"] is True
        assert request["request_inputs"]["max_tokens"] == OUT_TOKENS
        assert_complete(request)
    summary = json.loads((export.parent / "profile_export_genai_perf.json").read_text())
    assert summary["request_count"]["avg"] == REQUESTS
    assert summary["input_sequence_length"]["avg"] == 16
