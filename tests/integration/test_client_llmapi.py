"""tritonllm.client speaking the llmapi contract to the real tritonserver (tiny CPU repository).

The same repository serves the classic ``ensemble`` and the ``llmapi`` model over the same
engine, so for a greedy request both must give the same text; the references are the
ensemble's text through the client (itself checked against the raw tritonclient by
tests/integration/test_client.py) and HF transformers' greedy continuation of the tiny model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from served import wait_engine_idle

from tritonllm.client import AsyncLLMClient, InvalidRequest, LLMClient
from tritonllm.contract import ENSEMBLE, LLMAPI

pytestmark = pytest.mark.integration
PROMPTS = ["The quick brown fox", "café 日本語 🙂 token stream"]
N = 24
DEADLINE = 60.0


@pytest.fixture(scope="module")
def llmapi(server: Any) -> Iterator[LLMClient]:
    with LLMClient(server.grpc_address, LLMAPI, timeout=DEADLINE) as c:
        yield c


@pytest.fixture(scope="module")
def reference(server: Any) -> dict[str, tuple[str, str | None]]:
    """Per prompt: the ensemble's greedy text and finish reason for N tokens."""
    with LLMClient(server.grpc_address, ENSEMBLE, timeout=DEADLINE) as c:
        done = {p: c.generate(p, N) for p in PROMPTS}
    return {p: (d.text, d.finish_reason) for p, d in done.items()}


def test_auto_detects_each_models_contract(llmapi: LLMClient) -> None:
    assert llmapi.model_contract() == LLMAPI
    assert llmapi.model_contract(ENSEMBLE) == "classic"
    assert llmapi.model_contract("tensorrt_llm_bls") == "classic"


def test_generate_and_stream_equal_the_ensembles_text(
        llmapi: LLMClient, reference: dict[str, tuple[str, str | None]], hf_text: Any) -> None:
    assert reference[PROMPTS[0]][0] == hf_text(PROMPTS[0], N)
    for prompt in PROMPTS:
        text, reason = reference[prompt]
        done = llmapi.generate(prompt, N)
        assert (done.text, done.finish_reason) == (text, reason)
        assert reason in ("length", "stop")
        # Our llmapi model reports the counts (ours; NVIDIA's does not), and the client asks.
        assert done.input_tokens and done.output_tokens
        assert done.output_tokens == N if reason == "length" else done.output_tokens < N
        deltas = list(llmapi.stream(prompt, N))
        assert len(deltas) > 1 and "".join(d.text for d in deltas) == text  # deltas, not wholes
        assert [d.index for d in deltas] == list(range(len(deltas)))
        assert deltas[-1].finish_reason == reason
        assert all(d.finish_reason is None for d in deltas[:-1])
        streamed = llmapi.generate(prompt, N, stream=True)
        assert streamed.text == text and streamed.timings.ttft is not None


def test_the_classic_client_surface_works_on_any_model_of_the_server(
        server: Any, reference: dict[str, tuple[str, str | None]]) -> None:
    """One client, default model ensemble, ``model=`` per call: each request in its contract."""
    with LLMClient(server.grpc_address, timeout=DEADLINE) as c:
        for model in (LLMAPI, ENSEMBLE, LLMAPI):
            assert c.generate(PROMPTS[0], N, model=model).text == reference[PROMPTS[0]][0]


def test_async_and_http_give_the_same_text(server: Any,
                                           reference: dict[str, tuple[str, str | None]]) -> None:
    prompt = PROMPTS[1]
    text = reference[prompt][0]

    async def run(url: str) -> tuple[str, str]:
        async with AsyncLLMClient(url, LLMAPI, timeout=DEADLINE) as ac:
            whole = await ac.generate(prompt, N)
            parts = [d.text async for d in ac.stream(prompt, N)]
            return whole.text, "".join(parts)

    assert asyncio.run(run(server.grpc_address)) == (text, text)
    assert asyncio.run(run(server.url_http)) == (text, text)
    with LLMClient(server.url_http, LLMAPI, timeout=DEADLINE) as h:
        assert h.generate(prompt, N).text == text
        deltas = list(h.stream(prompt, N))
        assert len(deltas) > 1 and "".join(d.text for d in deltas) == text


def test_stop_strings_end_the_text(llmapi: LLMClient,
                                   reference: dict[str, tuple[str, str | None]]) -> None:
    text = reference[PROMPTS[0]][0]
    stop = text.split()[3]  # a word well inside the text
    cut = text[:text.index(stop)]
    done = llmapi.generate(PROMPTS[0], N, stop=[stop])
    assert (done.text, done.finish_reason) == (cut, "stop")
    deltas = list(llmapi.stream(PROMPTS[0], N, stop=["no such words", stop]))
    assert "".join(d.text for d in deltas) == cut and deltas[-1].finish_reason == "stop"


def test_the_prompt_comes_first_when_asked_for(llmapi: LLMClient,
                                               reference: dict[str, tuple[str, str | None]],
                                               hf_text: Any) -> None:
    prompt = PROMPTS[0]
    done = llmapi.generate(prompt, N, exclude_input_in_output=False)
    assert done.text == prompt + reference[prompt][0]
    parts = [d.text for d in llmapi.stream(prompt, N, exclude_input_in_output=False)]
    assert "".join(parts) == done.text


def test_a_wrongly_forced_contract_is_a_clear_error(server: Any) -> None:
    with LLMClient(server.grpc_address, LLMAPI, contract="classic") as c, \
            pytest.raises(InvalidRequest, match="'llmapi' speaks the llmapi contract"):
        c.generate("hello", 4)
    with LLMClient(server.grpc_address, ENSEMBLE, contract="llmapi") as c:
        with pytest.raises(InvalidRequest, match="'ensemble' does not speak the llmapi"):
            c.generate("hello", 4)
        with pytest.raises(InvalidRequest, match="does not speak the llmapi"):
            list(c.stream("hello", 4))
    with LLMClient(server.grpc_address, LLMAPI, contract="llmapi") as c:
        assert c.generate("hello", 4).text  # forced rightly: served


def test_what_the_llmapi_contract_cannot_carry_or_refuses_names_the_option(
        llmapi: LLMClient) -> None:
    with pytest.raises(InvalidRequest, match=r"^beam_width: model 'llmapi' speaks the llmapi"):
        llmapi.generate("hello", 4, beam_width=2)
    # Ours declares sampling_param_min_tokens (NVIDIA's does not): carried, and honoured.
    done = llmapi.generate("hello", 6, min_tokens=6)
    assert done.output_tokens == 6 and done.finish_reason == "length"
    with pytest.raises(InvalidRequest, match="sampling_param_top_p"):  # the server's check
        llmapi.generate("hello", 4, top_p=1.5)
    with pytest.raises(InvalidRequest, match="text_input"):
        list(llmapi.stream("", 4))
    assert llmapi.generate("hello", 4).text  # the client carries on


def test_the_llmapi_stop_ends_a_running_request(server: Any) -> None:
    """What the client sends when a stream is left (the Stopper's llmapi ``stop`` with the
    request's id), alone, without cancelling the call: the request ends as stopped."""
    with LLMClient(server.grpc_address, LLMAPI, timeout=DEADLINE) as c:
        s = c.stream("paged block", 1000, request_id="to-stop")
        assert next(s).text
        c._stopper.stop(LLMAPI, "to-stop", LLMAPI)
        rest = list(s)
        assert rest and rest[-1].finish_reason == "cancelled"
        assert s.completion is not None and s.completion.finish_reason == "cancelled"
    wait_engine_idle(server)


@pytest.mark.parametrize("url", ["grpc_address", "url_http"])
def test_leaving_a_stream_ends_the_request_on_the_server(
        server: Any, url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The call is cancelled (HTTP: its connection closed) and the llmapi ``stop`` sent with
    its id; the server answers the stop with CANCELLED, which the client takes as done."""
    address = getattr(server, url)
    with caplog.at_level(logging.WARNING, "tritonllm.client"):
        with LLMClient(address, LLMAPI, timeout=DEADLINE) as c:
            for _ in range(3):
                with c.stream("paged block", 1000) as s:
                    assert next(s).text
            for _d in c.stream("paged block", 1000):
                break  # the stream is garbage now: its finaliser cancels it
        wait_engine_idle(server)  # closing the client sent the stops still queued

        async def run() -> None:
            async with AsyncLLMClient(address, LLMAPI) as ac:
                async for _ in ac.stream("paged block", 1000):
                    break

        asyncio.run(run())
        wait_engine_idle(server)
    assert "could not stop" not in caplog.text
