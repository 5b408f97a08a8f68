"""The rendered CPU repository on the real tritonserver, driven by the official tritonclient.

One server for the module. References: HF transformers' greedy text for correctness; the
non-streamed response for streaming; the engine's metrics for cancellation.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from served import TIMEOUT, Stream
from served import inputs as _inputs
from served import metric as _metric
from served import stop_by_id as _stop_by_id
from served import wait_engine_idle as _wait_engine_idle

from tritonllm import metrics_catalog as MC

pytestmark = pytest.mark.integration


@pytest.fixture
def stream(server: Any) -> Iterator[Stream]:
    s = Stream(server)
    yield s
    s.close()


def test_all_models_ready(server: Any) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_address)
    for name in ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing",
                 "tensorrt_llm_bls"):
        assert client.is_model_ready(name), name


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_greedy_text_equals_transformers(stream: Stream, hf_text: Any, model: str) -> None:
    for i, prompt in enumerate(["The quick brown fox", "café 日本語 🙂 token stream"]):
        stream.send(f"g{i}", model, _inputs(prompt, 24))
        pieces, err = stream.collect(f"g{i}")
        assert err is None
        assert "".join(pieces) == hf_text(prompt, 24)


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_stream_concatenates_to_non_streamed_text(stream: Stream, model: str) -> None:
    prompts = ["日本語 🙂 émoji", "café naïve façade", "Привет мир 中文 模型"]
    multibyte = False
    for i, prompt in enumerate(prompts):
        stream.send(f"s{i}", model, _inputs(prompt, 48, stream=True))
        stream.send(f"n{i}", model, _inputs(prompt, 48, stream=False))
        streamed, e1 = stream.collect(f"s{i}")
        whole, e2 = stream.collect(f"n{i}")
        assert e1 is None and e2 is None
        assert "".join(streamed) == "".join(whole)
        assert len([p for p in streamed if p]) > 1
        multibyte |= any(ord(c) > 127 and c != "\ufffd" for c in "".join(whole))
    assert multibyte  # the check covered multi-byte characters split across tokens


def test_sixteen_concurrent_streams(stream: Stream, hf_text: Any) -> None:
    prompts = [f"request {i} model" for i in range(16)]
    for i, p in enumerate(prompts):
        stream.send(f"c{i}", "ensemble", _inputs(p, 16, stream=True))
    for i, p in enumerate(prompts):
        pieces, err = stream.collect(f"c{i}")
        assert err is None and "".join(pieces) == hf_text(p, 16)


def test_late_request_gets_first_token_while_long_ones_run(stream: Stream) -> None:
    long_ids = [f"long{i}" for i in range(8)]
    for rid in long_ids:
        stream.send(rid, "ensemble", _inputs("paged block", 900, stream=True))
    # Wait for the first piece of every long stream: they are all decoding now.
    for rid in long_ids:
        result, error = stream.results[rid].get(timeout=TIMEOUT)
        assert error is None
    stream.send("late", "ensemble", _inputs("hello", 4, stream=True))
    pieces, err = stream.collect("late")
    assert err is None and "".join(pieces)
    # None of the long streams had finished when the late one completed.
    for rid in long_ids:
        finals = []
        q = stream.results[rid]
        while not q.empty():
            result, _ = q.get()
            finals.append(result.get_response().parameters["triton_final_response"].bool_param)
        assert not any(finals), rid
    for rid in long_ids:
        stream.collect(rid)


@pytest.mark.parametrize("model", ["tensorrt_llm_bls", "ensemble"])
def test_cancelled_streams_free_the_engine(server: Any, model: str) -> None:
    """10 streams that would each generate LONG tokens (min_tokens) are cancelled after their
    first token: each of them ends cancelled in the engine's own count (not run out to
    ``length``), the engine reports no active or waiting sequence soon after, and the server
    serves on.

    Through the BLS model the gRPC cancel alone does it (the BLS model stops its LLM request).
    On the ensemble the client also sends the contract's ``stop`` with the request id (what
    tritonllm.client does when a stream to an ensemble is left early, for NVIDIA's GPU
    repository, where nothing else stops it): this checks that path; the stops go out first,
    on a stream opened beforehand, so they land while the requests decode. A plain cancel
    alone is checked in test_wire.py.
    """
    import tritonclient.grpc as grpcclient

    long = 1000
    _wait_engine_idle(server)
    before = _metric(server, MC.GENERATION_TOKENS)
    cancelled_before = _metric(server, MC.REQUEST_FINISHED, MC.FINISH_CANCELLED)
    ids = [f"cancel-{model}-{i}" for i in range(10)]
    stopper = Stream(server) if model == "ensemble" else None
    clients, started = [], []
    try:
        for rid in ids:
            got_one = threading.Event()
            c = grpcclient.InferenceServerClient(server.grpc_address)
            c.start_stream(callback=lambda result, error, ev=got_one: ev.set())
            c.async_stream_infer(model, _inputs("stream me", long, stream=True,
                                                min_tokens=(np.array([[long]], np.int32),
                                                            "INT32")),
                                 request_id=rid)
            clients.append(c)
            started.append(got_one)
        assert all(ev.wait(TIMEOUT) for ev in started)
        if stopper is not None:
            _stop_by_id(server, ids, stream=stopper)
        for c in clients:
            c.stop_stream(cancel_requests=True)
    finally:
        for c in clients:
            c.close()
        if stopper is not None:
            stopper.close()
    _wait_engine_idle(server, tokens_at_least=before + len(clients))  # their first tokens
    cancelled = _metric(server, MC.REQUEST_FINISHED, MC.FINISH_CANCELLED) - cancelled_before
    generated = _metric(server, MC.GENERATION_TOKENS) - before
    # Run out, each would make exactly `long` tokens and end as `length`.
    assert cancelled == len(clients), (cancelled, generated)
    assert generated < len(clients) * long, generated
    s = Stream(server)
    try:
        s.send("after", model, _inputs("still serving", 4))
        pieces, err = s.collect("after")
        assert err is None and "".join(pieces)
    finally:
        s.close()


def test_bls_returns_token_counts_and_the_whole_outputs_log_probs(server: Any,
                                                                  tiny_model: Path) -> None:
    """The BLS model streams from the LLM internally; its one final response must still carry
    the counts and every generated token's log prob (not the last chunk's)."""
    from transformers import AutoTokenizer

    n = 24
    s = Stream(server)
    try:
        s.send("bls-counts", "tensorrt_llm_bls", _inputs(
            "The quick brown fox", n,
            min_tokens=(np.array([[n]], np.int32), "INT32"),
            return_num_input_tokens=(np.array([[True]]), "BOOL"),
            return_num_output_tokens=(np.array([[True]]), "BOOL"),
            return_log_probs=(np.array([[True]]), "BOOL")))
        result, error = s.results["bls-counts"].get(timeout=TIMEOUT)
    finally:
        s.close()
    assert error is None, error
    prompt_ids = AutoTokenizer.from_pretrained(tiny_model)("The quick brown fox").input_ids
    assert int(result.as_numpy("num_input_tokens").item()) == len(prompt_ids)
    assert int(result.as_numpy("num_output_tokens").item()) == n
    lps = result.as_numpy("output_log_probs").reshape(-1)
    assert lps.shape == (n,) and (lps <= 0).all()
    assert float(result.as_numpy("cum_log_probs").item()) == pytest.approx(float(lps.sum()),
                                                                          rel=1e-5)


def test_http_generate_and_generate_stream(server: Any, hf_text: Any) -> None:
    body = json.dumps({"text_input": "The quick brown fox", "max_tokens": 12}).encode()
    url = server.url_http.rstrip("/") + "/v2/models/ensemble/generate"
    with urllib.request.urlopen(urllib.request.Request(url, body), timeout=60) as r:
        assert json.loads(r.read())["text_output"] == hf_text("The quick brown fox", 12)
    body = json.dumps({"text_input": "The quick brown fox", "max_tokens": 12,
                       "stream": True}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "_stream", body), timeout=60) as r:
        events = [json.loads(line[5:]) for line in r.read().decode().splitlines()
                  if line.startswith("data:")]
    assert len(events) > 1
    assert "".join(e["text_output"] for e in events) == hf_text("The quick brown fox", 12)


BAD = [
    ({"prompt": ""}, "text_input"),
    ({"prompt": b"\xff\xfe bad"}, "text_input"),
    ({"prompt": "token " * 1100}, "max_input_len"),
    ({"prompt": "token " * 500, "max_tokens": 900}, "max_seq_len"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 10_000_000}, "max_tokens"),
    ({"temperature": (np.array([[-1.0]], np.float32), "FP32")}, "temperature"),
    ({"top_p": (np.array([[1.5]], np.float32), "FP32")}, "top_p"),
    ({"top_p": (np.array([[0.0]], np.float32), "FP32")}, "top_p"),
    ({"top_k": (np.array([[-1]], np.int32), "INT32")}, "top_k"),
    ({"beam_width": (np.array([[2]], np.int32), "INT32")}, "beam_width"),
    ({"num_return_sequences": (np.array([[2]], np.int32), "INT32")}, "num_return_sequences"),
    ({"end_id": (np.array([[5000]], np.int32), "INT32")}, "end_id"),
    ({"stop_words": (np.array([[1, 2]], np.int32), "INT32")}, "stop_words"),
    ({"max_tokens_dtype": True}, "max_tokens"),
]


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
@pytest.mark.parametrize(("case", "field"), BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_is_invalid_arg_naming_the_field(server: Any, stream: Stream, model: str,
                                                   case: dict[str, Any], field: str) -> None:
    stream_server = [server]
    import tritonclient.grpc as grpcclient

    case = dict(case)
    prompt = case.pop("prompt", "hello")
    max_tokens = case.pop("max_tokens", 8)
    wrong_dtype = case.pop("max_tokens_dtype", False)
    inputs = _inputs(prompt, max_tokens, **case)
    if wrong_dtype:
        bad = grpcclient.InferInput("max_tokens", [1, 1], "FP32")
        bad.set_data_from_numpy(np.array([[8.0]], np.float32))
        inputs[1] = bad
    # A good request in flight alongside the bad one completes.
    stream.send("good", model, _inputs("fine", 8, stream=True))
    own = Stream(stream_server[0])
    try:
        own.send("bad", model, inputs)
        _, err = own.collect("bad")
    finally:
        own.close()
    assert err is not None and field in err, err
    pieces, good_err = stream.collect("good")
    assert good_err is None and "".join(pieces)


def test_wrong_batch_shape_is_refused(stream: Stream) -> None:
    import tritonclient.grpc as grpcclient

    x = grpcclient.InferInput("text_input", [1, 2], "BYTES")
    x.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=object))
    inputs = _inputs("x", 4)
    inputs[0] = x
    stream.last = "shape"
    stream.send("shape", "ensemble", inputs)
    _, err = stream.collect("shape")
    assert err is not None and "text_input" in err
