"""The ``llmapi`` model (NVIDIA's llmapi contract) on the real tritonserver, CPU target.

Requests are sent as NVIDIA's llmapi clients send them: unbatched tensors (``text_input``
``[1]``, each ``sampling_param_*`` ``[1]``), responses read as ``as_numpy("text_output")[0]``.
The reference for the text is HF transformers' greedy continuation of the tiny model.
"""

from __future__ import annotations

import itertools
import json
import queue
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from served import TIMEOUT, tensor, wait_engine_idle

from tritonllm.contract import LLMAPI, LLMAPI_DEFAULT_MAX_TOKENS, LLMAPI_NONE

pytestmark = pytest.mark.integration
PROMPT = "The quick brown fox"


def llmapi_inputs(prompt: str = PROMPT, **params: Any) -> list[Any]:
    """NVIDIA's llmapi request: every tensor unbatched, shaped [1] (the stop list [n])."""
    dtypes = {bool: "BOOL", int: "INT32", float: "FP32"}
    out = [tensor("text_input", np.array([prompt.encode()], dtype=object), "BYTES")]
    for name, value in params.items():
        if isinstance(value, list):
            out.append(tensor(name, np.array([v.encode() for v in value], dtype=object),
                              "BYTES"))
        elif name == "sampling_param_seed":
            out.append(tensor(name, np.array([value], np.uint64), "UINT64"))
        else:
            np_type = {bool: np.bool_, int: np.int32, float: np.float32}[type(value)]
            out.append(tensor(name, np.array([value], np_type), dtypes[type(value)]))
    return out


class Responses:
    """One gRPC stream collecting every response (or error) per request id."""

    def __init__(self, server: Any, model: str = LLMAPI) -> None:
        import tritonclient.grpc as grpcclient

        self.model = model
        self.client = grpcclient.InferenceServerClient(server.grpc_address)
        self.queues: dict[str, queue.Queue[Any]] = {}
        self.last = ""
        self.client.start_stream(callback=self._callback)

    def _callback(self, result: Any, error: Any) -> None:
        rid = result.get_response().id if result is not None else self.last
        self.queues.setdefault(rid, queue.Queue()).put((result, error))

    def send(self, rid: str, inputs: list[Any]) -> None:
        self.last = rid
        self.queues.setdefault(rid, queue.Queue())
        self.client.async_stream_infer(self.model, inputs, request_id=rid,
                                       enable_empty_final_response=True)

    def first(self, rid: str) -> Any:
        result, error = self.queues[rid].get(timeout=TIMEOUT)
        assert error is None, error
        return result

    def all(self, rid: str) -> tuple[list[Any], Any]:
        """Every response with outputs, and the error that ended the request (or None)."""
        got = []
        while True:
            result, error = self.queues[rid].get(timeout=TIMEOUT)
            if error is not None:
                return got, error
            if result.as_numpy("text_output") is not None:
                got.append(result)
            if result.get_response().parameters["triton_final_response"].bool_param:
                return got, None

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


@pytest.fixture(scope="module")
def llmapi_model() -> str:
    """The model speaking the llmapi contract: ``llmapi`` in the classic layout (a module
    serving the llmapi layout overrides it with ``tensorrt_llm``)."""
    return LLMAPI


@pytest.fixture
def responses(server: Any, llmapi_model: str) -> Iterator[Responses]:
    r = Responses(server, llmapi_model)
    yield r
    r.close()


def text(result: Any, name: str = "text_output") -> str:
    return str(result.as_numpy(name)[0].decode())


def test_the_model_declares_nvidias_llmapi_tensors(server: Any, llmapi_model: str) -> None:
    import tritonclient.grpc as grpcclient

    from tritonllm.contract import LLMAPI_CONTRACT

    meta = grpcclient.InferenceServerClient(server.grpc_address).get_model_metadata(
        llmapi_model, as_json=True)
    served = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]}
    assert served == {t.name: (t.dtype.replace("STRING", "BYTES"), list(t.dims))
                      for t in LLMAPI_CONTRACT.inputs}


def test_greedy_text_with_and_without_the_prompt(responses: Responses, hf_text: Any) -> None:
    responses.send("a", llmapi_inputs(sampling_param_max_tokens=12,
                                      sampling_param_exclude_input_from_output=True))
    (only,), err = responses.all("a")
    assert err is None and only.as_numpy("text_output").shape == (1,)
    assert text(only) == hf_text(PROMPT, 12)
    assert only.as_numpy("finish_reason") is None  # only with return_finish_reason
    responses.send("b", llmapi_inputs(sampling_param_max_tokens=12))  # NVIDIA's default
    (whole,), _ = responses.all("b")
    assert text(whole) == PROMPT + hf_text(PROMPT, 12)


def test_max_tokens_defaults_to_the_llm_apis(responses: Responses, hf_text: Any) -> None:
    responses.send("d", llmapi_inputs(sampling_param_exclude_input_from_output=True,
                                      return_finish_reason=True))
    (only,), _ = responses.all("d")
    assert text(only) == hf_text(PROMPT, LLMAPI_DEFAULT_MAX_TOKENS)
    assert text(only, "finish_reason") in ("length", "stop")


def test_a_stream_sends_the_whole_text_so_far(responses: Responses, hf_text: Any) -> None:
    responses.send("s", llmapi_inputs(streaming=True, sampling_param_max_tokens=16,
                                      sampling_param_exclude_input_from_output=True,
                                      return_finish_reason=True, return_stop_reason=True))
    got, err = responses.all("s")
    assert err is None and len(got) > 2
    texts = [text(r) for r in got]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert texts[-1] == hf_text(PROMPT, 16)
    assert [text(r, "finish_reason") for r in got[:-1]] == [LLMAPI_NONE] * (len(got) - 1)
    assert (text(got[-1], "finish_reason"), text(got[-1], "stop_reason")) == ("length",
                                                                            LLMAPI_NONE)


def test_a_stop_string_ends_the_text_and_is_the_stop_reason(responses: Responses,
                                                            hf_text: Any) -> None:
    reference = hf_text(PROMPT, 24)
    stop = reference.split()[3]  # a word well inside the text
    responses.send("x", llmapi_inputs(sampling_param_max_tokens=24, sampling_param_stop=[stop],
                                      sampling_param_exclude_input_from_output=True,
                                      return_finish_reason=True, return_stop_reason=True))
    (only,), _ = responses.all("x")
    assert text(only) == reference[:reference.index(stop)]
    assert (text(only, "finish_reason"), text(only, "stop_reason")) == ("stop", stop)


def test_stop_by_request_id_ends_the_request(server: Any, responses: Responses,
                                             llmapi_model: str) -> None:
    responses.send("long", llmapi_inputs(streaming=True, sampling_param_max_tokens=1000,
                                         return_finish_reason=True))
    responses.first("long")
    stopper = Responses(server, llmapi_model)
    try:
        stopper.send("long", [tensor("text_input", np.array([b""], dtype=object), "BYTES"),
                              tensor("stop", np.array([True]), "BOOL")])
        _, stop_err = stopper.all("long")
    finally:
        stopper.close()
    assert stop_err is not None and "Request cancelled by client" in str(stop_err)
    got, err = responses.all("long")
    assert err is None and text(got[-1], "finish_reason") == "cancelled"
    wait_engine_idle(server)


def test_a_client_cancel_frees_the_engine(server: Any, llmapi_model: str) -> None:
    r = Responses(server, llmapi_model)
    r.send("c", llmapi_inputs(streaming=True, sampling_param_max_tokens=1000))
    r.first("c")
    r.close(cancel=True)
    wait_engine_idle(server)


BAD = [
    ({"sampling_param_max_tokens": 0}, "sampling_param_max_tokens"),
    ({"sampling_param_top_p": 1.5}, "sampling_param_top_p"),
    ({"sampling_param_temperature": -1.0}, "sampling_param_temperature"),
    ({"sampling_param_best_of": 2}, "sampling_param_best_of"),
    ({"sampling_param_return_perf_metrics": True}, "sampling_param_return_perf_metrics"),
    ({"sampling_param_max_tokens": 1000, "prompt": "token " * 500}, "sampling_param_max_tokens"),
    ({"prompt": ""}, "text_input"),
]


@pytest.mark.parametrize(("case", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_input_names_the_llmapi_input(server: Any, llmapi_model: str, case: dict[str, Any],
                                          field: str) -> None:
    """Over gRPC the message names the input; over HTTP it is a 400 (INVALID_ARG) too."""
    case = dict(case)
    prompt = case.pop("prompt", PROMPT)
    r = Responses(server, llmapi_model)
    try:
        r.send("bad", llmapi_inputs(prompt, **case))
        _, err = r.all("bad")
    finally:
        r.close()
    assert err is not None and err.message().startswith(f"{field}: "), err
    body = json.dumps({"text_input": prompt, **case}).encode()
    url = server.url_http.rstrip("/") + f"/v2/models/{llmapi_model}/generate"
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(urllib.request.Request(
            url, body, headers={"Content-Type": "application/json"}), timeout=60)
    assert http.value.code == 400
    assert json.loads(http.value.read())["error"].startswith(f"{field}: ")


def test_http_generate(server: Any, hf_text: Any, llmapi_model: str) -> None:
    body = json.dumps({"text_input": PROMPT, "sampling_param_max_tokens": 12,
                       "sampling_param_exclude_input_from_output": True}).encode()
    url = server.url_http.rstrip("/") + f"/v2/models/{llmapi_model}/generate"
    with urllib.request.urlopen(urllib.request.Request(url, body), timeout=60) as resp:
        assert json.loads(resp.read())["text_output"] == hf_text(PROMPT, 12)
