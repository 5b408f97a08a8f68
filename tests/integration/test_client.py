"""tritonllm.client and its CLI against the real tritonserver serving the tiny CPU repository.

One server for the module, rendered from the ``cpu_engine`` fixture with a small engine
(``max_batch_size=4``, ``max_queue_size=1``: four decode, one waits, the sixth concurrent
request is refused) and
inference restricted to callers sending an API key (gRPC ``--grpc-restricted-protocol``, HTTP
``--http-restricted-api``). References: the official tritonclient's non-streamed text for
correctness, the server's own queue bound for Overloaded and for freed engine slots.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonllm import metrics_catalog as MC
from tritonllm.client import (
    AsyncLLMClient,
    Cancelled,
    ClientError,
    InvalidRequest,
    LLMClient,
    ModelNotFound,
    Overloaded,
    RetryPolicy,
    Timeout,
    Unauthorized,
    Unavailable,
)

pytestmark = pytest.mark.integration

KEY, SECRET = "apikey", "s3cret"
GRPC_AUTH = {f"triton-grpc-protocol-{KEY}": SECRET}
HTTP_AUTH = {KEY: SECRET}
SLOTS, QUEUE = 4, 1  # engine slots (max_batch_size) and max_queue_size of the test repository
LONG_PROMPT, LONG = "paged block", 1000  # min_tokens=LONG: runs to max_tokens (~1 s)
MODELS = ["ensemble", "tensorrt_llm_bls"]
PROMPTS = ["The quick brown fox", "café 日本語 🙂 token stream"]
DEADLINE = 60.0


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tritonllm.builders.repository import render_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = tmp_path_factory.mktemp("client") / "repo"
    # One OpenVINO thread: the long streams must outlast this module's sequential round trips
    # (filling the engine, leaving streams, stops) by a wide margin. With both cores the tiny
    # model's 1000 tokens take well under a second, close to what those round trips can take
    # on a busy 2-core runner.
    render_repository(cpu_engine, repo, RepoSettings(
        max_batch_size=SLOTS, max_queue_size=QUEUE, preprocessing_instance_count=1,
        bls_instance_count=1, num_threads=1))
    # On CPU no Triton queue is bounded: the engine enforces max_queue_size itself (a Triton
    # bound in front of a decoupled Python model refused bursts while the engine had room).
    for name in ("preprocessing", "postprocessing", "tensorrt_llm", "tensorrt_llm_bls"):
        assert f"max_queue_size: {QUEUE}" not in (repo / name / "config.pbtxt").read_text()
    llm = (repo / "tensorrt_llm" / "config.pbtxt").read_text()
    assert 'key: "max_queue_size"\n  value { string_value: "1" }' in llm
    extra = (f"--grpc-restricted-protocol=inference:{KEY}={SECRET}",
             f"--http-restricted-api=inference:{KEY}={SECRET}")
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300, extra_args=extra,
                                    log_file=repo.parent / "tritonserver.log")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[LLMClient]:
    with LLMClient(server.grpc_address, headers=GRPC_AUTH, timeout=DEADLINE) as c:
        yield c


def raw_text(server: Any, model: str, prompt: str, max_tokens: int) -> str:
    """The non-streamed text from a hand-written tritonclient request (the reference)."""
    import tritonclient.grpc as grpcclient

    def tensor(name: str, value: Any, dtype: str) -> Any:
        x = grpcclient.InferInput(name, list(value.shape), dtype)
        x.set_data_from_numpy(value)
        return x

    results: queue.Queue[Any] = queue.Queue()
    c = grpcclient.InferenceServerClient(server.grpc_address)
    c.start_stream(callback=lambda result, error: results.put((result, error)),
                   headers=GRPC_AUTH)
    try:
        c.async_stream_infer(model, [
            tensor("text_input", np.array([[prompt.encode()]], dtype=object), "BYTES"),
            tensor("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
        ], request_id="raw", enable_empty_final_response=True)
        pieces = []
        while True:
            result, error = results.get(timeout=DEADLINE)
            assert error is None, error
            out = result.as_numpy("text_output")
            if out is not None and out.size:
                pieces.append(out.reshape(-1)[0].decode())
            if result.get_response().parameters["triton_final_response"].bool_param:
                return "".join(pieces)
    finally:
        c.stop_stream()
        c.close()


# --- generation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_generate_and_stream_equal_the_raw_tritonclient_text(server: Any, client: LLMClient,
                                                              model: str) -> None:
    for prompt in PROMPTS:
        reference = raw_text(server, model, prompt, 24)
        done = client.generate(prompt, 24, model=model)
        assert done.text == reference
        assert done.finish_reason in ("length", "stop")
        deltas = list(client.stream(prompt, 24, model=model))
        assert "".join(d.text for d in deltas) == reference
        assert len(deltas) > 1 and [d.index for d in deltas] == list(range(len(deltas)))
        assert all(a.time <= b.time for a, b in itertools.pairwise(deltas))
        assert deltas[-1].finish_reason == done.finish_reason
        streamed = client.generate(prompt, 24, model=model, stream=True)
        assert streamed.text == reference
        t = streamed.timings
        assert t.ttft is not None and 0 < t.ttft <= t.e2e
        assert len(t.itl) == len(t.token_times) - 1 and all(g >= 0 for g in t.itl)

        async def run_async(prompt: str) -> tuple[str, str]:
            async with AsyncLLMClient(server.grpc_address, model=model,
                                      headers=GRPC_AUTH) as ac:
                whole = await ac.generate(prompt, 24)
                parts = [d.text async for d in ac.stream(prompt, 24)]
                return whole.text, "".join(parts)

        assert asyncio.run(run_async(prompt)) == (reference, reference)


def test_token_counts_on_the_ensemble(client: LLMClient) -> None:
    done = client.generate(PROMPTS[0], 12)
    assert done.input_tokens is not None and done.input_tokens > 0
    assert done.output_tokens is not None and 0 < done.output_tokens <= 12
    last = list(client.stream(PROMPTS[0], 12))[-1]
    assert last.output_tokens == done.output_tokens


def test_http_protocol_matches_grpc(server: Any, client: LLMClient) -> None:
    reference = client.generate(PROMPTS[1], 20).text
    with LLMClient(server.url_http, headers=HTTP_AUTH) as h:
        assert h.endpoint.protocol == "http"
        assert h.generate(PROMPTS[1], 20).text == reference
        deltas = list(h.stream(PROMPTS[1], 20))
        assert len(deltas) > 1 and "".join(d.text for d in deltas) == reference
        assert h.health().ready and {m.name for m in h.models()} >= set(MODELS)
        with pytest.raises(InvalidRequest, match="text_input"):
            h.generate("", 8)

    async def run_async() -> str:
        async with AsyncLLMClient(server.url_http, headers=HTTP_AUTH) as ah:
            return "".join([d.text async for d in ah.stream(PROMPTS[1], 20)])

    assert asyncio.run(run_async()) == reference


def test_request_ids(client: LLMClient) -> None:
    assert client.generate("hi", 2, request_id="my-id-1").request_id == "my-id-1"
    s = client.stream("hi", 2, request_id="my-id-2")
    list(s)
    assert s.request_id == "my-id-2" and s.completion is not None
    assert s.completion.request_id == "my-id-2"
    ids = {client.generate("hi", 2).request_id for _ in range(3)}
    assert len(ids) == 3 and all(ids)


def test_health_models_metadata(client: LLMClient) -> None:
    h = client.health()
    assert h.live and h.ready
    states = {m.name: m.state for m in client.models()}
    assert states == {m: "READY" for m in
                      ["ensemble", "llmapi", "postprocessing", "preprocessing", "tensorrt_llm",
                       "tensorrt_llm_bls"]}
    meta = client.metadata()
    assert meta["name"] == "ensemble"
    assert {i["name"] for i in meta["inputs"]} >= {"text_input", "max_tokens", "stream"}
    assert client.metadata("tensorrt_llm_bls")["name"] == "tensorrt_llm_bls"
    with pytest.raises(ModelNotFound):
        client.metadata("no_such_model")


# --- errors from the real conditions ------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_invalid_request_names_the_field(client: LLMClient, model: str) -> None:
    with pytest.raises(InvalidRequest, match="top_p") as info:
        client.generate("hello", 8, model=model, top_p=1.5)
    assert info.value.attempts == 1 and info.value.request_id
    with pytest.raises(InvalidRequest, match="text_input"):
        list(client.stream("", 8, model=model))
    with pytest.raises(TypeError, match="top_q"):
        client.generate("hello", 8, model=model, top_q=0.5)
    assert client.generate("hello", 4, model=model).text  # the client carries on


def test_unknown_model(client: LLMClient) -> None:
    with pytest.raises(ModelNotFound, match="no_such_model"):
        client.generate("hello", 4, model="no_such_model")


def test_unauthorized_without_the_key(server: Any) -> None:
    with LLMClient(server.grpc_address) as c:
        assert c.health().ready  # health is not restricted
        with pytest.raises(Unauthorized, match=KEY) as info:
            c.generate("hello", 4)
        assert info.value.attempts == 1  # never retried
    with LLMClient(server.url_http) as h, pytest.raises(Unauthorized, match=KEY):
        h.generate("hello", 4)
    with LLMClient(server.grpc_address, headers={f"triton-grpc-protocol-{KEY}": "wrong"}) as c, \
            pytest.raises(Unauthorized):
        c.generate("hello", 4)


def test_deadline_is_timeout(client: LLMClient, server: Any) -> None:
    with pytest.raises(Timeout) as info:
        client.generate(LONG_PROMPT, LONG, min_tokens=LONG, timeout=0.05)
    assert info.value.request_id

    async def run_async() -> None:
        async with AsyncLLMClient(server.grpc_address, headers=GRPC_AUTH) as ac:
            with pytest.raises(Timeout):
                await ac.generate(LONG_PROMPT, LONG, min_tokens=LONG, timeout=0.05)
            with pytest.raises(Timeout):
                async for _ in ac.stream(LONG_PROMPT, LONG, min_tokens=LONG, timeout=0.05):
                    pass

    asyncio.run(run_async())
    wait_idle(server)  # the timed-out generations were cancelled on the server


def engine_load(server: Any) -> float:
    """Requests decoding or waiting in the CPU engine (its metrics, refreshed every 0.25 s)."""
    body = urllib.request.urlopen(server.url_metrics, timeout=10).read().decode()
    active = MC.series(MC.REQUEST_METRICS, "active").rstrip("}")  # held: running or waiting
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(MC.REQUEST_METRICS + "{") and active.split("{")[1] in line)


def generated_tokens(server: Any) -> float:
    body = urllib.request.urlopen(server.url_metrics, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(MC.GENERATION_TOKENS + "{"))


def wait_idle(server: Any, timeout: float = 30.0, tokens_at_least: float = 0) -> float:
    """Poll (bounded) until the engine holds no request; the seconds it took.

    The gauges are refreshed every 0.25 s and may still show the state from before a burst;
    ``tokens_at_least`` first waits for a refresh whose token counter has seen the burst
    (counter and gauges are set together).
    """
    start = time.monotonic()
    while generated_tokens(server) < tokens_at_least or engine_load(server) != 0:
        assert time.monotonic() - start < timeout, "the engine did not drain"
        time.sleep(0.05)  # polling a server-side gauge
    return time.monotonic() - start


def fill_engine(client: LLMClient, server: Any) -> list[Any]:
    """SLOTS + QUEUE long streams, each past its first delta: the engine's queue is full."""
    wait_idle(server)
    streams = [client.stream(LONG_PROMPT, LONG, min_tokens=LONG) for _ in range(SLOTS + QUEUE)]
    for s in streams:
        next(s)
    return streams


def test_queue_full_is_overloaded_and_cancelling_frees_the_slots(client: LLMClient,
                                                                  server: Any) -> None:
    before = generated_tokens(server)
    streams = fill_engine(client, server)
    try:
        with pytest.raises(Overloaded, match="queue") as info:
            client.generate("hello", 4)
        assert info.value.attempts == 1  # not retried by default
        retrying = LLMClient(server.grpc_address, headers=GRPC_AUTH,
                             retry=RetryPolicy(attempts=2, initial_backoff=0.01,
                                               retry_overloaded=True))
        with retrying, pytest.raises(Overloaded) as info:
            retrying.generate("hello", 4)
        assert info.value.attempts == 2
        # The long streams are all still running: the refusals came from a full engine.
        assert all(s.completion is None for s in streams)
    finally:
        for s in streams:  # close(): cancel on the server
            s.close()
    # The stops for closed ensemble streams go out from the client's Stopper thread: the slots
    # are free once the engine's gauges (refreshed after the streams' first tokens) read 0.
    wait_idle(server, tokens_at_least=before + SLOTS + QUEUE)
    before = generated_tokens(server)
    for s in fill_engine(client, server):  # every slot is free again
        s.close()
    wait_idle(server, tokens_at_least=before + SLOTS + QUEUE)
    assert client.generate("still serving", 4).text


def _leave_by_break(client: LLMClient) -> None:
    for _ in range(SLOTS + QUEUE):
        for _d in client.stream(LONG_PROMPT, LONG, min_tokens=LONG):
            break  # the stream is garbage now: its finaliser cancels the request


def _leave_by_context(client: LLMClient) -> None:
    for _ in range(SLOTS + QUEUE):
        with client.stream(LONG_PROMPT, LONG, min_tokens=LONG) as s:
            next(s)


def _leave_async(server: Any, how: str) -> None:
    async def run() -> None:
        async with AsyncLLMClient(server.grpc_address, headers=GRPC_AUTH) as ac:
            started = [asyncio.Event() for _ in range(SLOTS + QUEUE)]

            async def consume(ev: asyncio.Event) -> None:
                async for _ in ac.stream(LONG_PROMPT, LONG, min_tokens=LONG):
                    ev.set()
                    if how == "break":
                        break

            tasks = [asyncio.create_task(consume(ev)) for ev in started]
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), DEADLINE)
            if how == "cancel":
                for t in tasks:
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


@pytest.mark.parametrize("how", ["break", "with", "async-break", "async-task-cancel"])
def test_leaving_a_stream_early_cancels_it_on_the_server(client: LLMClient, server: Any,
                                                         how: str) -> None:
    wait_idle(server)
    before = generated_tokens(server)
    if how == "break":
        _leave_by_break(client)
    elif how == "with":
        _leave_by_context(client)
    else:
        _leave_async(server, "break" if how == "async-break" else "cancel")
    # The engine's gauges are back to 0, in a refresh that counted the streams' first tokens.
    wait_idle(server, tokens_at_least=before + SLOTS + QUEUE)
    # Left running, the streams would generate LONG tokens each (min_tokens=LONG).
    generated = generated_tokens(server) - before
    assert generated < (SLOTS + QUEUE) * LONG / 2, generated
    assert client.generate("still serving", 4).text


def test_cancel_from_another_thread_raises_cancelled(client: LLMClient, server: Any) -> None:
    s = client.stream(LONG_PROMPT, LONG, min_tokens=LONG)
    next(s)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in s:
                pass
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    worker = threading.Thread(target=consume)
    worker.start()
    s.cancel()
    worker.join(DEADLINE)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
    wait_idle(server)


def test_async_cancel_from_another_task_raises_cancelled(server: Any) -> None:
    async def run() -> BaseException | None:
        async with AsyncLLMClient(server.grpc_address, headers=GRPC_AUTH) as ac:
            s = ac.stream(LONG_PROMPT, LONG, min_tokens=LONG)
            await s.__anext__()
            asyncio.get_running_loop().call_soon(s.cancel)
            try:
                async for _ in s:
                    pass
            except Cancelled as e:
                return e
            return None

    assert isinstance(asyncio.run(run()), Cancelled)


# --- CLI ----------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tritonllm", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_generate_health_models(server: Any, client: LLMClient) -> None:
    url = server.grpc_address
    header = f"triton-grpc-protocol-{KEY}={SECRET}"
    reference = client.generate(PROMPTS[0], 16).text
    r = cli("generate", PROMPTS[0], "--url", url, "--header", header, "-n", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout == reference + "\n"
    r = cli("generate", PROMPTS[0], "--url", url, "--header", header, "-n", "16", "--stream")
    assert r.returncode == 0 and r.stdout == reference + "\n", r.stderr
    r = cli("generate", PROMPTS[0], "--url", url, "--header", header, "-n", "16", "--json",
            "--request-id", "cli-1")
    out = json.loads(r.stdout)
    assert out["text"] == reference and out["request_id"] == "cli-1"
    assert out["output_tokens"] and out["timings"]["e2e_s"] > 0
    r = cli("generate", "hello", "--url", url, "--header", header, "--top-p", "1.5")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "top_p" in r.stderr
    r = cli("generate", "hello", "--url", url)
    assert r.returncode == 1 and "restricted" in r.stderr
    r = cli("health", "--url", url, "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"url": url, "live": True,
                                                           "ready": True}
    r = cli("models", "--url", server.url_http)
    assert r.returncode == 0 and "tensorrt_llm_bls" in r.stdout and "READY" in r.stdout
    r = cli("models", "--url", server.grpc_address, "--json")
    assert {m["name"] for m in json.loads(r.stdout)["models"]} >= set(MODELS)


def test_model_control_needs_explicit_mode(server: Any) -> None:
    """This server runs with model control mode none: load / unload are refused, clearly."""
    for url in (server.grpc_address, server.url_http):
        with LLMClient(url) as c:
            for action in ("load", "unload"):
                with pytest.raises(ClientError, match=rf"{action} ensemble: .*"
                                   r"--model-control-mode explicit"):
                    getattr(c, f"{action}_model")("ensemble")
            assert {m.state for m in c.models() if m.name == "ensemble"} == {"READY"}

    async def run() -> None:
        async with AsyncLLMClient(server.grpc_address) as c:
            with pytest.raises(ClientError, match="--model-control-mode explicit"):
                await c.load_model("ensemble")

    asyncio.run(run())
    r = cli("models", "load", "ensemble", "--url", server.grpc_address)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: load ensemble: ") and "explicit" in r.stderr
    r = cli("models", "list", "--url", server.grpc_address)
    assert r.returncode == 0 and "tensorrt_llm_bls" in r.stdout


# --- last: stop the module's server -------------------------------------------------------------

def test_stopped_server_is_unavailable_after_retries(server: Any) -> None:
    policy = RetryPolicy(attempts=3, initial_backoff=0.05, max_backoff=0.1)
    with LLMClient(server.grpc_address, headers=GRPC_AUTH, retry=policy, timeout=30) as c:
        assert c.generate("hello", 4).text
        server.stop()
        with pytest.raises(Unavailable) as info:
            c.generate("hello", 4)
        assert info.value.attempts == 3 and not isinstance(info.value, Overloaded)
        with pytest.raises(Unavailable):
            c.health()

    async def run_async() -> None:
        async with AsyncLLMClient(server.grpc_address, retry=policy) as ac:
            with pytest.raises(Unavailable) as info:
                await ac.generate("hello", 4)
            assert info.value.attempts == 3

    asyncio.run(run_async())
