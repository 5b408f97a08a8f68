"""Refusals and request size bounds on a served CPU repository (one real tritonserver, the
official tritonclient), for the ensemble and the BLS model.

* Every input the contract declares unsupported on CPU (tritonllm.contract.unsupported_inputs) is
  refused with INVALID_ARG naming it, by both models (HTTP 400 where the generate endpoint can
  carry the value), while a good stream on another connection completes.
* Sizes are refused before expensive work, naming the field: a 5 MB prompt (two at once beside a
  good request), too many or too long stop/bad words (a 1 MB stop string too), a long request id,
  too many prompt ids; a stop string at the bound still cuts the text (BLS, on text).
* Seeds through the served models: the same seed samples the same text, distinct seeds distinct
  texts, no seed a fresh sample; a seed the engine cannot tell apart (>= 2**32) is refused.
* Afterwards the server still serves, the engine is idle and greedy text equals transformers'.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from served import Stream, tensor
from served import inputs as _inputs
from served import wait_engine_idle as _wait_engine_idle

from tritonllm import contract as C

pytestmark = pytest.mark.integration

MODELS = ["ensemble", "tensorrt_llm_bls"]
MAX_WORDS, MAX_WORD_BYTES = 8, 256
BIG = 5 << 20  # the 5 MB prompt of issue #14


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = tmp_path_factory.mktemp("limits") / "repo"
    render_repository(cpu_engine, repo, RepoSettings(
        preprocessing_instance_count=1, bls_instance_count=1, num_threads=1,
        max_words=MAX_WORDS, max_word_bytes=MAX_WORD_BYTES))
    assert validate_repository(repo) == []
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300,
                                    log_file=repo.parent / "tritonserver.log")) as srv:
        yield srv


@pytest.fixture
def stream(server: Any) -> Iterator[Stream]:
    s = Stream(server)
    yield s
    s.close()


def _triton_dtype(dtype: str) -> str:
    return "BYTES" if dtype == "STRING" else dtype


def _non_neutral(model: str, name: str) -> tuple[np.ndarray, str]:
    """A value of ``name`` (an input of ``model``) that asks for something: one request's
    shape ([1, *dims], -1 as 2), ones / True / b"x"."""
    t = C.contract(model).input(name)
    shape = [1, *(2 if d == -1 else d for d in t.dims)]
    if t.dtype == "STRING":
        return np.full(shape, b"x", dtype=object), "BYTES"
    if t.dtype == "BOOL":
        return np.ones(shape, dtype=bool), "BOOL"
    numpy = {"FP16": np.float16, "FP32": np.float32, "INT32": np.int32, "INT64": np.int64,
             "UINT8": np.uint8, "UINT64": np.uint64}[t.dtype]
    value = 2 if name in ("beam_width", "num_return_sequences") else 1
    return np.full(shape, value, dtype=numpy), t.dtype


def _refused(server: Any, stream: Stream, model: str, inputs: list[Any],
             request_id: str = "bad") -> str:
    """Send ``inputs`` on a stream of its own while a good stream is in flight on ``stream``;
    returns the error (the good one must complete)."""
    good_model = "ensemble" if model == "tensorrt_llm" else model
    stream.send("good", good_model, _inputs("The quick brown fox", 16, stream=True))
    own = Stream(server)
    try:
        own.send(request_id, model, inputs)
        pieces, err = own.collect(request_id)
    finally:
        own.close()
    assert err is not None, f"not refused: {pieces}"
    good, good_err = stream.collect("good")
    assert good_err is None and "".join(good)
    return err


def _http(server: Any, model: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{server.url_http}/v2/models/{model}/generate", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


UNSUPPORTED = [(model, name) for model in MODELS
               for name in sorted(C.unsupported_inputs(model, "cpu"))]


@pytest.mark.parametrize(("model", "name"), UNSUPPORTED, ids=[f"{m}-{n}" for m, n in UNSUPPORTED])
def test_unsupported_inputs_are_invalid_arg_naming_them(server: Any, stream: Stream, model: str,
                                                        name: str) -> None:
    value, dtype = _non_neutral(model, name)
    err = _refused(server, stream, model, [*_inputs("hello", 8), tensor(name, value, dtype)])
    assert f"{name}" in err and "not supported" in err, err
    t = C.contract(model).input(name)
    if t.dims in ((1,), (-1,)) and t.dtype not in ("FP16", "UINT8"):  # what generate carries
        item = value.reshape(-1)[0]
        json_value = item.decode() if isinstance(item, bytes) else item.item()
        status, body = _http(server, model, {"text_input": "hello", "max_tokens": 8,
                                             name: [json_value] if t.dims == (-1,) else json_value})
        assert status == 400 and name in body, (status, body)  # 400: INVALID_ARG


@pytest.mark.parametrize("model", MODELS)
def test_neutral_values_are_served(stream: Stream, model: str) -> None:
    neutral = [tensor("beam_width", np.array([[1]], np.int32), "INT32"),
               tensor("num_return_sequences", np.array([[1]], np.int32), "INT32"),
               tensor("return_context_logits", np.array([[False]]), "BOOL"),
               tensor("return_generation_logits", np.array([[False]]), "BOOL")]
    stream.send("neutral", model, [*_inputs("hello", 8), *neutral])
    pieces, err = stream.collect("neutral")
    assert err is None and "".join(pieces)


# --- sizes ---------------------------------------------------------------------------------------

def _words(name: str, *words: bytes) -> Any:
    return tensor(name, np.array([list(words)], dtype=object), "BYTES")


SIZES = [
    (lambda: _inputs(b"x" * BIG, 8), "text_input", "bytes, more than"),
    (lambda: [*_inputs("hi", 8), _words("stop_words", *[b"w"] * (MAX_WORDS + 1))],
     "stop_words", f"more than max_words ({MAX_WORDS})"),
    (lambda: [*_inputs("hi", 8), _words("stop_words", b"x" * (MAX_WORD_BYTES + 1))],
     "stop_words", f"more than max_word_bytes ({MAX_WORD_BYTES})"),
    (lambda: [*_inputs("hi", 8), _words("stop_words", b"ab" * (1 << 19))],  # 1 MB
     "stop_words", "1048576 bytes, more than max_word_bytes"),
    (lambda: [*_inputs("hi", 8), _words("bad_words", *[b"w"] * (MAX_WORDS + 1))],
     "bad_words", "max_words"),
    (lambda: [*_inputs("hi", 8), _words("bad_words", "é".encode() * MAX_WORD_BYTES)],
     "bad_words", f"{2 * MAX_WORD_BYTES} bytes, more than max_word_bytes"),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("make", "field", "words"), SIZES,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(SIZES)])
def test_oversized_requests_are_refused_naming_the_field(server: Any, stream: Stream, model: str,
                                                         make: Any, field: str,
                                                         words: str) -> None:
    err = _refused(server, stream, model, make())
    assert err.split("'ensemble', ")[-1].startswith(f"{field}: ") and words in err, err


@pytest.mark.parametrize("model", MODELS)
def test_two_huge_prompts_at_once_do_not_stall_a_good_request(server: Any, stream: Stream,
                                                              model: str) -> None:
    """Issue #14: two 5 MB prompts, tokenized in full, stalled a good request for 3.9 s."""
    others = [Stream(server), Stream(server)]
    try:
        for i, s in enumerate(others):
            s.send(f"huge{i}", model, _inputs(b"word " * (BIG // 5), 8))
        stream.send("good", model, _inputs("The quick brown fox", 16))
        good, err = stream.collect("good")
        assert err is None and "".join(good)
        for i, s in enumerate(others):
            _, huge_err = s.collect(f"huge{i}")
            assert huge_err is not None and "text_input" in huge_err
    finally:
        for s in others:
            s.close()


def test_a_stop_string_at_the_bound_still_cuts_the_text(stream: Stream, hf_text: Any) -> None:
    """The BLS model matches stop strings on text (tritonllm.ensembles.stops)."""
    prompt = "The quick brown fox"
    full = hf_text(prompt, 24)
    stop = full[len(full) // 2:len(full) // 2 + 4]
    assert stop.strip() and len(stop.encode()) <= MAX_WORD_BYTES
    stops = [b"z" * MAX_WORD_BYTES, *[b"\x01"] * (MAX_WORDS - 2), stop.encode()]
    stream.send("cut", "tensorrt_llm_bls", [*_inputs(prompt, 24), _words("stop_words", *stops)])
    pieces, err = stream.collect("cut")
    assert err is None and "".join(pieces) == full[:full.index(stop)]


def _llm_inputs(ids: list[int]) -> list[Any]:
    return [tensor("input_ids", np.array([ids], np.int32), "INT32"),
            tensor("input_lengths", np.array([[len(ids)]], np.int32), "INT32"),
            tensor("request_output_len", np.array([[4]], np.int32), "INT32")]


def test_llm_request_id_and_prompt_ids_are_bounded(server: Any, stream: Stream) -> None:
    from tritonllm.settings import MAX_REQUEST_ID_BYTES

    long_id = "r" * (MAX_REQUEST_ID_BYTES + 1)
    err = _refused(server, stream, "tensorrt_llm", _llm_inputs([1, 50, 60]), request_id=long_id)
    assert err.startswith("request_id: ") and f"more than {MAX_REQUEST_ID_BYTES}" in err, err
    err = _refused(server, stream, "tensorrt_llm", _llm_inputs([5] * 1024))
    assert "input_ids" in err and "more than max_input_len (1023)" in err, err
    ok = Stream(server)
    try:  # the longest id is accepted
        ok.send("r" * MAX_REQUEST_ID_BYTES, "tensorrt_llm", _llm_inputs([1, 50, 60]))
        _, ok_err = ok.collect("r" * MAX_REQUEST_ID_BYTES)
        assert ok_err is None
    finally:
        ok.close()


def test_the_ensemble_refuses_a_long_request_id_in_its_llm_step(server: Any,
                                                                stream: Stream) -> None:
    """Triton passes the ensemble's request id on to its steps; the CPU LLM keeps it."""
    from tritonllm.settings import MAX_REQUEST_ID_BYTES

    err = _refused(server, stream, "ensemble", _inputs("hello", 4),
                   request_id="e" * (MAX_REQUEST_ID_BYTES + 1))
    assert "request_id: " in err, err


# --- seeds ---------------------------------------------------------------------------------------

def _sample(stream: Stream, model: str, rid: str, seed: int | None) -> str:
    extra = {"temperature": (np.array([[1.0]], np.float32), "FP32")}
    if seed is not None:
        extra["seed"] = (np.array([[seed]], np.uint64), "UINT64")
    stream.send(rid, model, _inputs("The quick brown fox", 16, **extra))
    pieces, err = stream.collect(rid)
    assert err is None, err
    return "".join(pieces)


@pytest.mark.parametrize("model", MODELS)
def test_seeds(server: Any, stream: Stream, model: str) -> None:
    seeds = [0, 1, 2**31, 2**32 - 1]
    texts = [_sample(stream, model, f"seed{i}", seed) for i, seed in enumerate(seeds)]
    assert len(set(texts)) == len(seeds), texts
    assert _sample(stream, model, "again", 2**31) == texts[2]
    fresh = [_sample(stream, model, f"fresh{i}", None) for i in range(3)]
    assert len(set(fresh)) == 3 and texts[0] not in fresh, fresh
    for seed in (2**32, 2**63, 2**64 - 1):
        err = _refused(server, stream, model, _inputs("hi", 8, seed=(
            np.array([[seed]], np.uint64), "UINT64"), temperature=(
            np.array([[1.0]], np.float32), "FP32")))
        assert "seed: " in err and "low 32 bits" in err, err


# --- afterwards ----------------------------------------------------------------------------------

def test_the_server_serves_on(server: Any, stream: Stream, hf_text: Any) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_address)
    for name in C.MODEL_NAMES:
        assert client.is_model_ready(name), name
    _wait_engine_idle(server)
    for model in MODELS:
        stream.send(model, model, _inputs("The quick brown fox", 24))
        pieces, err = stream.collect(model)
        assert err is None and "".join(pieces) == hf_text("The quick brown fox", 24)
