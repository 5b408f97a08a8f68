"""What NVIDIA's tensorrtllm_backend clients do, against the served CPU repository.

The access patterns (not the code) of NVIDIA's client scripts
(``triton_backend/inflight_batcher_llm/client/end_to_end_grpc_client.py`` and
``tools/inflight_batcher_llm/end_to_end_streaming_client.py``): inputs shaped ``[[value]]``,
``as_numpy("text_output")[0].decode()``, ``batch_index`` / ``sequence_index`` read as ``[0][0]``
with 0 when absent, perf and count outputs read as ``[0][0]``, ``output_log_probs`` as
``[1, beams, n]``. One real tritonserver for the module, the official tritonclient, HF
transformers as the reference for the text.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from served import TIMEOUT

from tritonllm import metrics_catalog as MC

pytestmark = pytest.mark.integration

MODELS = ["ensemble", "tensorrt_llm_bls"]


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = tmp_path_factory.mktemp("wire") / "repo"
    render_repository(cpu_engine, repo, RepoSettings(
        preprocessing_instance_count=1, bls_instance_count=1, num_threads=1,
        max_stream_interval_ms=100))
    assert validate_repository(repo) == []
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300,
                                    log_file=repo.parent / "tritonserver.log")) as srv:
        yield srv


def _prepare(name: str, value: np.ndarray) -> Any:
    """The scripts' ``prepare_tensor``: shape and dtype from the numpy array."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    t = grpcclient.InferInput(name, value.shape, np_to_triton_dtype(value.dtype))
    t.set_data_from_numpy(value)
    return t


def _script_inputs(prompt: str, output_len: int, streaming: bool) -> dict[str, np.ndarray]:
    """What ``prepare_inputs`` of the end-to-end client builds for its default flags plus
    ``--return-log-probs`` and token counts."""
    return {
        "text_input": np.array([[prompt]]).astype(object),
        "max_tokens": np.ones_like([[prompt]]).astype(np.int32) * output_len,
        "stream": np.array([[streaming]], dtype=bool),
        "beam_width": np.array([[1]], dtype=np.int32),
        "num_return_sequences": np.array([[1]], dtype=np.int32),
        "exclude_input_in_output": np.array([[False]], dtype=bool),
        "return_log_probs": np.array([[True]], dtype=bool),
        "return_num_output_tokens": np.array([[True]], dtype=bool),
    }


def _run_like_the_script(server: Any, model: str, prompt: str, output_len: int,
                         streaming: bool) -> tuple[str, list[tuple[int, ...]], int]:
    """Send one request on a stream and read every response as the script does; returns the
    text, each response's ``output_log_probs`` shape and the last ``num_output_tokens``."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    completed: queue.Queue[Any] = queue.Queue()

    def callback(user_data: queue.Queue[Any], result: Any, error: Any) -> None:
        user_data.put(error if error else result)

    outputs = [grpcclient.InferRequestedOutput(n) for n in (
        "text_output", "cum_log_probs", "output_log_probs", "num_output_tokens")]
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.start_stream(callback=partial(callback, completed))
    inputs = [_prepare(k, v) for k, v in _script_inputs(prompt, output_len, streaming).items()]
    client.async_stream_infer(model, inputs, outputs=outputs, request_id="1")
    client.stop_stream()  # waits for the server to end the stream, as the script does
    client.close()

    batch_output_text = [[""]]
    shapes: list[tuple[int, ...]] = []
    count = -1
    while not completed.empty():
        result = completed.get(block=False)
        assert not isinstance(result, InferenceServerException), result
        output = result.as_numpy("text_output")
        batch_index = result.as_numpy("batch_index")
        batch_index = 0 if batch_index is None else batch_index[0][0]
        seq_index = result.as_numpy("sequence_index")
        seq_index = 0 if seq_index is None else seq_index[0][0]
        if streaming:
            batch_output_text[batch_index][seq_index] += output[0].decode("utf-8")
        else:
            batch_output_text[batch_index][seq_index] = output[0].decode("utf-8")
        log_probs = result.as_numpy("output_log_probs")
        if log_probs is not None:
            shapes.append(log_probs.shape)
            cum = result.as_numpy("cum_log_probs")
            assert cum.shape == (1, 1) and cum[0][0] <= 0
        tokens = result.as_numpy("num_output_tokens")
        if tokens is not None:
            count = int(tokens[0][0])
    return batch_output_text[0][0], shapes, count


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_nvidia_client_access_pattern(server: Any, hf_text: Any, model: str,
                                      streaming: bool) -> None:
    """``output[0].decode()`` works on every response and the text is HF's greedy text: the
    prompt included when not streaming (the script sends ``exclude_input_in_output=False``),
    the new text only when streaming (as the C++ backend streams)."""
    prompt, n = "The quick brown fox", 20
    text, shapes, count = _run_like_the_script(server, model, prompt, n, streaming)
    assert text == hf_text(prompt, n, with_prompt=not streaming)
    assert shapes and all(len(s) == 3 and s[:2] == (1, 1) for s in shapes), shapes
    assert sum(s[2] for s in shapes) == count == n  # every token's log prob, once


@pytest.mark.parametrize("model", MODELS)
def test_outputs_have_the_shapes_nvidias_models_send(server: Any, model: str) -> None:
    """The shapes themselves, as NVIDIA's postprocessing / BLS / C++ backend send them:
    ``text_output`` and our ``finish_reason`` ``[1]``, ``output_log_probs`` ``[1, 1, n]``,
    ``cum_log_probs`` and the counts ``[1, 1]``; no ``batch_index`` or ``sequence_index`` for a
    request of batch 1 with one sequence."""
    import tritonclient.grpc as grpcclient

    inputs = _script_inputs("hello there", 8, streaming=False)
    g = grpcclient.InferenceServerClient(server.grpc_address)
    results: queue.Queue[Any] = queue.Queue()
    g.start_stream(callback=lambda result, error: results.put((result, error)))
    g.async_stream_infer(model, [_prepare(k, v) for k, v in inputs.items()])
    result, error = results.get(timeout=TIMEOUT)
    g.stop_stream()
    g.close()
    assert error is None, error
    shapes = {o.name: tuple(o.shape) for o in result.get_response().outputs}
    assert shapes["text_output"] == (1,)
    assert shapes["finish_reason"] == (1,)
    assert shapes["output_log_probs"] == (1, 1, 8)
    assert shapes["cum_log_probs"] == shapes["num_output_tokens"] == (1, 1)
    assert "batch_index" not in shapes and "sequence_index" not in shapes


# --- cancellation from any client ---------------------------------------------------------------

LONG = 1000  # min_tokens = max_tokens: each stream would make exactly this many tokens


def _long_request(stream: bool = True) -> dict[str, np.ndarray]:
    return {"text_input": np.array([[b"stream me"]], dtype=object),
            "max_tokens": np.array([[LONG]], np.int32), "min_tokens": np.array([[LONG]], np.int32),
            "stream": np.array([[stream]], dtype=bool)}


def _cancelled_after_first_token(server: Any, n: int, start: Any) -> float:
    """Start ``n`` long streams with ``start(i, on_first) -> cancel``; cancel each one as soon
    as its first token arrives. Returns the tokens the engine generated meanwhile, counted by
    the engine itself once it reports idle again (no active, no waiting request)."""
    from served import metric, wait_engine_idle

    wait_engine_idle(server)
    before = metric(server, MC.GENERATION_TOKENS)
    first: queue.Queue[int] = queue.Queue()
    cancels = [start(i, partial(first.put, i)) for i in range(n)]
    for _ in range(n):
        cancels[first.get(timeout=TIMEOUT)]()
    wait_engine_idle(server, tokens_at_least=before + n)  # a refresh that saw the first tokens
    return metric(server, MC.GENERATION_TOKENS) - before


def _grpc_stream(server: Any, model: str, i: int, on_first: Any) -> Any:
    """A plain tritonclient stream; its cancel is ``stop_stream(cancel_requests=True)``."""
    import tritonclient.grpc as grpcclient

    seen = [False]

    def callback(result: Any, error: Any) -> None:
        if not seen[0]:
            seen[0] = True
            on_first()

    c = grpcclient.InferenceServerClient(server.grpc_address)
    c.start_stream(callback=callback)
    c.async_stream_infer(model, [_prepare(k, v) for k, v in _long_request().items()])

    def cancel() -> None:
        c.stop_stream(cancel_requests=True)
        c.close()

    return cancel


def _http_stream(server: Any, model: str, i: int, on_first: Any) -> Any:
    """``generate_stream`` over a plain HTTP connection, closed after the first event."""
    import http.client
    import json
    import threading
    from urllib.parse import urlsplit

    u = urlsplit(server.url_http if "://" in server.url_http else f"http://{server.url_http}")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
    body = json.dumps({"text_input": "stream me", "max_tokens": LONG, "min_tokens": LONG,
                       "stream": True})
    conn.request("POST", f"/v2/models/{model}/generate_stream", body,
                 {"Content-Type": "application/json"})

    def read_first() -> None:
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        while not resp.fp.readline().startswith(b"data:"):
            pass
        on_first()

    reader = threading.Thread(target=read_first, daemon=True)
    reader.start()

    def cancel() -> None:
        reader.join(TIMEOUT)
        conn.sock.shutdown(2)  # the client goes away mid-stream
        conn.close()

    return cancel


@pytest.mark.parametrize(("transport", "n"), [("grpc", 50), ("http", 40)])
@pytest.mark.parametrize("model", MODELS)
def test_any_client_cancel_frees_the_engine(server: Any, model: str, transport: str,
                                            n: int) -> None:
    """Plain tritonclient ``stop_stream(cancel_requests=True)`` and a closed HTTP
    ``generate_stream`` stop the generation, through the ensemble and the BLS model: the engine
    reports idle and made far fewer tokens than running the streams out (``n * LONG``)."""
    opener = _grpc_stream if transport == "grpc" else _http_stream
    generated = _cancelled_after_first_token(
        server, n, lambda i, on_first: opener(server, model, i, on_first))
    print(f"{model} {transport}: {generated:.0f} of {n * LONG} tokens")
    assert generated < n * LONG * 0.35, generated
    text, _, _ = _run_like_the_script(server, model, "still serving", 4, streaming=False)
    assert text.startswith("still serving")
