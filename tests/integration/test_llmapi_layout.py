"""The llmapi layout on the real tritonserver, CPU target: the wiring of NVIDIA's current stack.

``tensorrt_llm`` speaks NVIDIA's llmapi contract on the CPU engine itself; ``ensemble`` and
``tensorrt_llm_bls`` are classic fronts that call it, as the GPU target's do in front of NVIDIA's
llmapi model. Two sets of tests run against this one server:

* the llmapi-contract tests of ``test_llmapi`` (imported), pointed at ``tensorrt_llm``;
* the classic serving tests of ``test_serving`` (imported) through the fronts, plus the
  classic behaviours that take another route here (cancel, token counts, what the llmapi
  model cannot carry).

References: HF transformers' greedy text; the engine's own gauges for cancellation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from served import TIMEOUT, Stream, metric, wait_engine_idle
from served import inputs as _inputs
from test_llmapi import (  # noqa: F401  (imported tests and fixtures run here)
    responses,
    test_a_client_cancel_frees_the_engine,
    test_a_stop_string_ends_the_text_and_is_the_stop_reason,
    test_a_stream_sends_the_whole_text_so_far,
    test_bad_input_names_the_llmapi_input,
    test_greedy_text_with_and_without_the_prompt,
    test_http_generate,
    test_max_tokens_defaults_to_the_llm_apis,
    test_stop_by_request_id_ends_the_request,
    test_the_model_declares_nvidias_llmapi_tensors,
)
from test_serving import (  # noqa: F401
    stream,
    test_bad_input_is_invalid_arg_naming_the_field,
    test_greedy_text_equals_transformers,
    test_http_generate_and_generate_stream,
    test_late_request_gets_first_token_while_long_ones_run,
    test_sixteen_concurrent_streams,
    test_stream_concatenates_to_non_streamed_text,
    test_wrong_batch_shape_is_refused,
)

from tritonllm import metrics_catalog as MC
from tritonllm.contract import BLS, ENSEMBLE, LAYOUT_LLMAPI, LLM

pytestmark = pytest.mark.integration
FRONTS = [ENSEMBLE, BLS]


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The tiny CPU engine's llmapi-layout repository, validated, on free ports."""
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = tmp_path_factory.mktemp("llmapi-layout") / "repo"
    render_repository(cpu_engine, repo, RepoSettings(layout=LAYOUT_LLMAPI, bls_instance_count=1))
    assert validate_repository(repo) == []
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300,
                                    log_file=repo.parent / "tritonserver.log")) as srv:
        yield srv


@pytest.fixture(scope="module")
def llmapi_model() -> str:
    return LLM


def test_the_layout_serves_three_models(server: Any) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_address)
    index = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
    assert index == {ENSEMBLE: "READY", LLM: "READY", BLS: "READY"}


@pytest.mark.parametrize("model", FRONTS)
def test_a_cancel_alone_frees_the_engine(server: Any, model: str) -> None:
    """Streams that would each run LONG tokens, cancelled after their first: the front stops
    its llmapi request (no ``stop`` from the client is needed, on either front), so the engine
    is idle soon after and made far fewer tokens than running them out would."""
    import tritonclient.grpc as grpcclient

    long = 1000
    wait_engine_idle(server)
    before = metric(server, MC.GENERATION_TOKENS)
    clients, started = [], []
    # 12 streams: the tiny model runs 1000 tokens in about a second alone; sharing the batch
    # they take long enough that the cancels' path (Triton -> the front's poller -> the engine)
    # is a small share of it also on a loaded 2-core CI machine.
    for i in range(12):
        got_one = threading.Event()
        c = grpcclient.InferenceServerClient(server.grpc_address)
        c.start_stream(callback=lambda result, error, ev=got_one: ev.set())
        c.async_stream_infer(model, _inputs("stream me", long, stream=True,
                                            min_tokens=(np.array([[long]], np.int32), "INT32")),
                             request_id=f"cancel-{model}-{i}")
        clients.append(c)
        started.append(got_one)
    assert all(ev.wait(TIMEOUT) for ev in started)
    for c in clients:
        c.stop_stream(cancel_requests=True)
        c.close()
    wait_engine_idle(server, tokens_at_least=before + len(clients))
    generated = metric(server, MC.GENERATION_TOKENS) - before
    assert generated < len(clients) * long * 0.8, generated


@pytest.mark.parametrize("model", FRONTS)
def test_the_fronts_return_the_llmapi_models_token_counts(server: Any, tiny_model: Path,
                                                          model: str) -> None:
    from transformers import AutoTokenizer

    n = 20
    s = Stream(server)
    try:
        s.send("counts", model, _inputs(
            "The quick brown fox", n, min_tokens=(np.array([[n]], np.int32), "INT32"),
            return_num_input_tokens=(np.array([[True]]), "BOOL"),
            return_num_output_tokens=(np.array([[True]]), "BOOL")))
        result, error = s.results["counts"].get(timeout=TIMEOUT)
    finally:
        s.close()
    assert error is None, error
    prompt_ids = AutoTokenizer.from_pretrained(tiny_model)("The quick brown fox").input_ids
    assert result.as_numpy("num_input_tokens").tolist() == [[len(prompt_ids)]]
    assert result.as_numpy("num_output_tokens").tolist() == [[n]]
    assert result.as_numpy("finish_reason").tolist() == [b"length"]


@pytest.mark.parametrize("model", FRONTS)
def test_stop_words_reach_the_llmapi_model(server: Any, hf_text: Any, model: str) -> None:
    reference = hf_text("The quick brown fox", 24)
    stop = reference.split()[3]
    s = Stream(server)
    try:
        s.send("sw", model, _inputs("The quick brown fox", 24, stream=True, stop_words=(
            np.array([[stop.encode()]], dtype=object), "BYTES")))
        pieces, err = s.collect("sw")
    finally:
        s.close()
    assert err is None and "".join(pieces) == reference[:reference.index(stop)]


@pytest.mark.parametrize("model", FRONTS)
def test_what_the_llmapi_model_cannot_carry_is_refused_by_name(server: Any, model: str) -> None:
    """Per-token log probs have no llmapi output: asking for them is INVALID_ARG naming the
    input; asking for nothing (false) is fine."""
    s = Stream(server)
    try:
        s.send("no", model, _inputs("hi", 4, return_log_probs=(np.array([[False]]), "BOOL")))
        pieces, err = s.collect("no")
        assert err is None and "".join(pieces)
        s.send("lp", model, _inputs("hi", 4, return_log_probs=(np.array([[True]]), "BOOL")))
        _, err = s.collect("lp")
    finally:
        s.close()
    assert err is not None and "return_log_probs" in err and "llmapi" in err, err


def test_our_client_speaks_each_models_contract(server: Any, hf_text: Any) -> None:
    """contract="auto": the fronts get the classic request, tensorrt_llm the llmapi one (read
    from their metadata); both give HF's greedy text."""
    from tritonllm.client import LLMClient

    for model, contract in ((ENSEMBLE, "classic"), (BLS, "classic"), (LLM, "llmapi")):
        with LLMClient(server.grpc_address, model=model) as client:
            assert client.model_contract() == contract
            done = client.generate("The quick brown fox", 12)
            assert done.text == hf_text("The quick brown fox", 12), model
            assert done.finish_reason == "length"
            assert "".join(d.text for d in client.stream("The quick brown fox", 12)) == done.text


def test_genai_perf_drives_the_front_as_it_drives_nvidias_ensemble(server: Any,
                                                                   tmp_path: Path) -> None:
    """genai-perf --backend tensorrtllm (through ``tritonllm perf --tool genai-perf``) against
    the llmapi layout's ensemble: every request completes, with the requested output length."""
    import json

    from click.testing import CliRunner

    from tritonllm.cli import main

    args = ["perf", "--url", server.grpc_address, "--repo", str(server.options.repo),
            "--out", str(tmp_path / "genai"), "-q",
            "--tool", "genai-perf", "--concurrency", "2", "--requests", "8", "--warmup", "1",
            "--input-tokens", "16", "--output-tokens", "16", "--num-prompts", "8",
            "--no-plots"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "genai" / "run.json").read_text())
    summary = data["points"][0]["summary"]
    assert summary["requests"] == summary["completed"] == 8
    assert summary["output_tokens_per_s"] > 0
