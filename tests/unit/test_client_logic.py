"""tritonllm.client's sans-IO layers: URLs, requests from the contract, responses, errors,
retries. No server, no tritonclient."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from tritonllm.client import (
    Cancelled,
    ClientError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RetryPolicy,
    ServerError,
    Timeout,
    Timings,
    Unauthorized,
    Unavailable,
)
from tritonllm.client._errors import ErrorInfo, classify
from tritonllm.client._logic import (
    SAMPLING_INPUTS,
    Assembly,
    Exchange,
    Piece,
    build_request,
    parse_outputs,
    parse_url,
    retry_delay,
)
from tritonllm.contract import BLS_CONTRACT, ENSEMBLE_CONTRACT
from tritonllm.errors import TritonLLMError


def test_importing_the_client_does_not_import_tritonclient() -> None:
    code = "import sys, tritonllm.client; print('tritonclient' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("url", "protocol", "expected"), [
    ("localhost:8001", None, ("grpc", "localhost:8001", False)),
    ("localhost", None, ("grpc", "localhost:8001", False)),
    ("grpc://h:9", None, ("grpc", "h:9", False)),
    ("grpcs://h:9", None, ("grpc", "h:9", True)),
    ("http://h:9/", None, ("http", "h:9", False)),
    ("https://h", None, ("http", "h:8000", True)),
    ("http://h:9", "grpc", ("grpc", "h:9", False)),
    ("[::1]:5", None, ("grpc", "[::1]:5", False)),
])
def test_parse_url(url: str, protocol: str | None, expected: tuple[str, str, bool]) -> None:
    e = parse_url(url, protocol)
    assert (e.protocol, e.address, e.ssl) == expected


@pytest.mark.parametrize("url", ["", "ftp://h:1", "h:port"])
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_every_sampling_option_is_a_contract_input_of_both_models() -> None:
    for tensor in SAMPLING_INPUTS.values():
        assert ENSEMBLE_CONTRACT.has_input(tensor) and BLS_CONTRACT.has_input(tensor), tensor


def test_request_tensors_follow_the_contract() -> None:
    spec = build_request("ensemble", "héllo", 16, stream=True, request_id="r1",
                         sampling={"temperature": 0.5, "top_k": 3, "seed": 7, "stop": ["a", "b"],
                                   "exclude_input_in_output": True, "top_p": None})
    by_name = {t.name: t for t in spec.inputs}
    assert spec.request_id == "r1" and spec.stream
    assert set(by_name) == {"text_input", "max_tokens", "stream", "temperature", "top_k", "seed",
                            "stop_words", "exclude_input_in_output"}
    for t in spec.inputs:  # dtype and [1, *dims] shape straight from the contract
        c = ENSEMBLE_CONTRACT.input(t.name)
        assert t.dtype == c.dtype
        assert t.value.shape[0] == 1 and t.value.ndim == 2
    assert by_name["text_input"].value[0, 0] == "héllo".encode()
    assert by_name["text_input"].wire_dtype == "BYTES"
    assert by_name["seed"].value.dtype == np.uint64
    assert by_name["max_tokens"].value.dtype == np.int32
    assert by_name["stop_words"].value.tolist() == [[b"a", b"b"]]
    body = spec.json_body()
    assert body["stop_words"] == ["a", "b"] and body["text_input"] == "héllo"
    assert body["max_tokens"] == 16 and body["id"] == "r1" and body["stream"] is True


def test_token_counts_are_asked_only_when_the_model_declares_them() -> None:
    declared = {t.name for t in ENSEMBLE_CONTRACT.inputs}
    spec = build_request("ensemble", "x", 4, stream=False, sampling={}, model_inputs=declared)
    assert {"return_num_input_tokens", "return_num_output_tokens"} <= {t.name for t in spec.inputs}
    bare = {"text_input", "max_tokens", "stream"}
    spec = build_request("ensemble", "x", 4, stream=False, sampling={}, model_inputs=bare)
    assert {t.name for t in spec.inputs} == bare
    spec = build_request("ensemble", "x", 4, stream=False, sampling={}, model_inputs=None)
    assert "return_num_input_tokens" not in {t.name for t in spec.inputs}


def test_an_option_the_model_lacks_is_refused_locally_naming_it() -> None:
    with pytest.raises(InvalidRequest, match="top_k"):
        build_request("m", "x", 4, stream=False, sampling={"top_k": 2},
                      model_inputs={"text_input", "max_tokens"})


def test_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'topk'"):
        build_request("ensemble", "x", 4, stream=False, sampling={"topk": 2})


@pytest.mark.parametrize(("option", "value", "field"), [
    ("top_k", 1.5, "top_k"), ("top_k", True, "top_k"), ("temperature", "hot", "temperature"),
    ("exclude_input_in_output", 1, "exclude_input_in_output"), ("seed", -1, "seed"),
    ("stop", [1, 2], "stop_words"),
])
def test_wrong_python_types_name_the_field(option: str, value: object, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        build_request("ensemble", "x", 4, stream=False, sampling={option: value})


def test_parse_outputs_from_grpc_arrays_and_http_json() -> None:
    grpc = parse_outputs({"text_output": np.array([["añ".encode()]], dtype=object),
                          "finish_reason": np.array([[b"length"]], dtype=object),
                          "num_input_tokens": np.array([[3]], np.int32),
                          "num_output_tokens": np.array([[9]], np.int32)})
    assert grpc == Piece("añ", "length", 3, 9)
    http = parse_outputs({"text_output": "añ", "finish_reason": "", "num_output_tokens": 2})
    assert http == Piece("añ", None, None, 2)
    assert parse_outputs({}) == Piece("")


def test_assembly_deltas_and_completion_timings() -> None:
    a = Assembly("r", start=10.0)
    assert a.feed(Piece("", None, 3, 0), 10.1) is None  # nothing to hand out
    d0 = a.feed(Piece("ab", None, 3, 2), 10.2)
    d1 = a.feed(Piece("c", None, None, 3), 10.5)
    d2 = a.feed(Piece("", "stop", None, 3), 10.6)
    assert [d.index for d in (d0, d1, d2)] == [0, 1, 2]  # type: ignore[union-attr]
    assert d2 is not None and d2.finish_reason == "stop" and d2.text == ""
    c = a.completion(11.0)
    assert (c.text, c.finish_reason, c.input_tokens, c.output_tokens) == ("abc", "stop", 3, 3)
    assert c.timings.ttft == pytest.approx(0.2)
    assert c.timings.e2e == pytest.approx(1.0)
    assert c.timings.itl == pytest.approx([0.3])


def test_timings_without_text() -> None:
    t = Timings(1.0, None, 2.0, [])
    assert t.ttft is None and t.itl == [] and t.e2e == 1.0


# --- error classification (messages as the real server sends them) --------------------------

@pytest.mark.parametrize(("info", "cls"), [
    # in-stream error responses: message only
    (ErrorInfo("in ensemble 'ensemble', runtime_top_p (top_p): must be in (0, 1], got 1.5"),
     InvalidRequest),
    (ErrorInfo("text_input: must not be empty"), InvalidRequest),
    (ErrorInfo("unexpected inference input 'nonexistent' for model 'ensemble'"), InvalidRequest),
    (ErrorInfo("[request id: r1] inference input 'max_tokens' data-type is 'FP32', but model "
               "'ensemble' expects 'INT32'"), InvalidRequest),
    (ErrorInfo("[request id: r1] expected number of inputs between 2 and 36 but got 1 inputs "
               "for model 'ensemble'."), InvalidRequest),
    (ErrorInfo("Request for unknown model: 'nomodel' is not found"), ModelNotFound),
    (ErrorInfo("in ensemble 'ensemble', Exceeds maximum queue size: 1 requests already wait "
               "for the CPU engine's 2 slots (max_queue_size 1); retry later"), Overloaded),
    (ErrorInfo("Request timeout expired"), Timeout),
    (ErrorInfo("generation failed: engine crashed"), ServerError),
    (ErrorInfo("tensorrt_llm_bls: boom"), ServerError),
    # gRPC statuses
    (ErrorInfo("failed to connect to all addresses; Connection refused",
               "StatusCode.UNAVAILABLE"), Unavailable),
    (ErrorInfo("This protocol is restricted, expecting header 'triton-grpc-protocol-k'",
               "StatusCode.UNAVAILABLE"), Unauthorized),
    (ErrorInfo("Stream removed (Deadline Exceeded)", "StatusCode.DEADLINE_EXCEEDED"), Timeout),
    (ErrorInfo("Locally cancelled by application!", "StatusCode.CANCELLED"), Cancelled),
    (ErrorInfo("bad", "StatusCode.INVALID_ARGUMENT"), InvalidRequest),
    (ErrorInfo("Request for unknown model", "StatusCode.INVALID_ARGUMENT"), ModelNotFound),
    (ErrorInfo("oops", "StatusCode.INTERNAL"), ServerError),
    (ErrorInfo("queue full: max_queue_size", "StatusCode.UNAVAILABLE"), Overloaded),
    # HTTP statuses
    (ErrorInfo("in ensemble 'ensemble', text_input: must not be empty", http_status=400),
     InvalidRequest),
    (ErrorInfo("Request for unknown model: 'x' is not found", http_status=404), ModelNotFound),
    (ErrorInfo("This API is restricted, expecting header 'apikey'", http_status=403),
     Unauthorized),
    (ErrorInfo("Exceeds maximum queue size", http_status=503), Overloaded),
    # Triton's HTTP code for a CANCELLED error is 400 (the llmapi model's answer to `stop`)
    (ErrorInfo("Request cancelled by client", http_status=400), Cancelled),
    (ErrorInfo("top_p: cancelled is not a number", http_status=400), InvalidRequest),
    (ErrorInfo("down", http_status=503), Unavailable),
    (ErrorInfo("boom", http_status=500), ServerError),
])
def test_classify(info: ErrorInfo, cls: type[ClientError]) -> None:
    assert classify(info) is cls


def test_error_tree() -> None:
    assert issubclass(ClientError, TritonLLMError)
    assert issubclass(Overloaded, Unavailable) and issubclass(ModelNotFound, InvalidRequest)
    for cls in (InvalidRequest, Unauthorized, Unavailable, Timeout, Cancelled, ServerError):
        assert cls.__bases__ == (ClientError,)


# --- retries ----------------------------------------------------------------------------------

def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    p = RetryPolicy(attempts=10, initial_backoff=0.1, max_backoff=1.0, jitter=0.2)
    rng = random.Random(0)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        d = retry_delay(p, Unavailable("x"), attempt, delivered=False, remaining=None, rng=rng)
        assert d is not None and base * 0.8 <= d <= base * 1.2


@pytest.mark.parametrize("error", [InvalidRequest("x"), Timeout("x"), Cancelled("x"),
                                   ServerError("x"), Unauthorized("x"), Overloaded("x")])
def test_only_unavailable_is_retried_by_default(error: ClientError) -> None:
    assert retry_delay(RetryPolicy(), error, 1, delivered=False, remaining=None) is None


def test_never_retry_after_text_was_delivered_or_past_the_budget() -> None:
    p = RetryPolicy(attempts=3, initial_backoff=0.5, jitter=0)
    assert retry_delay(p, Unavailable("x"), 1, delivered=True, remaining=None) is None
    assert retry_delay(p, Unavailable("x"), 3, delivered=False, remaining=None) is None
    assert retry_delay(p, Unavailable("x"), 1, delivered=False, remaining=0.4) is None
    assert retry_delay(p, Unavailable("x"), 1, delivered=False, remaining=0.6) == 0.5
    on = RetryPolicy(retry_overloaded=True, jitter=0)
    assert retry_delay(on, Overloaded("x"), 1, delivered=False, remaining=None) == 0.1


def test_exchange_counts_attempts_and_annotates_the_error() -> None:
    ex = Exchange("rid", policy=RetryPolicy(attempts=2, jitter=0), timeout=None, now=0.0)
    ex.begin_attempt(0.0)
    assert ex.on_error(Unavailable("down"), 0.1) == pytest.approx(0.1)
    ex.begin_attempt(0.2)
    with pytest.raises(Unavailable) as info:
        ex.on_error(Unavailable("down"), 0.3)
    assert info.value.attempts == 2 and info.value.request_id == "rid" and ex.done


def test_exchange_deadline() -> None:
    ex = Exchange("rid", policy=RetryPolicy(), timeout=1.0, now=0.0)
    assert ex.begin_attempt(0.25) == pytest.approx(0.75)
    with pytest.raises(Timeout, match="deadline"):
        ex.remaining(1.5)


def test_exchange_no_retry_once_text_arrived() -> None:
    ex = Exchange("rid", policy=RetryPolicy(), timeout=None, now=0.0)
    ex.begin_attempt(0.0)
    assert ex.on_response(Piece("hi"), False, 0.1) is not None
    with pytest.raises(Unavailable):
        ex.on_error(Unavailable("connection reset"), 0.2)
    c = ex.completion()
    assert c.text == "hi" and c.attempts == 1


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)
