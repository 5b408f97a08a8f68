"""The perf harness over the OpenAI API (``tritonllm perf --endpoint openai``): the backend on
the official SDK against the real front app, in process.

The Triton side is scripted (``ScriptedClient`` stands in for AsyncLLMClient, as in
test_openai_front.py: a full queue or a dead server cannot be made on demand); the front's app,
its SSE framing and error mapping, the SDK and the load generator are the real ones, joined by
httpx2's ASGI transport (the SDK's HTTP client). tests/integration runs the front for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tritonllm.cli import main
from tritonllm.client import (
    Completion,
    Delta,
    InvalidRequest,
    Overloaded,
    ServerError,
    Timeout,
    Timings,
    Unavailable,
)
from tritonllm.errors import ConfigError
from tritonllm.openai.app import create_app
from tritonllm.openai.serving import OpenAIServing
from tritonllm.perf.loadgen import RequestSpec, error_kind, run_point
from tritonllm.perf.metrics import summarize
from tritonllm.perf.openai_backend import OpenAIBackend, client_error, request_body
from tritonllm.perf.run import DEFAULT_SAMPLING
from tritonllm.perf.scenario import LoadPoint, Scenario

MODEL = "ensemble"
PIECES = ["Hel", "lo", " wo", "rld"]


class ScriptedStream:
    """One scripted Triton request: ``pieces``, then ``error`` (before the first piece when
    ``fail_at`` is 0, else after that many)."""

    def __init__(self, pieces: list[str], error: Exception | None, fail_at: int,
                 prompt_tokens: int) -> None:
        self.pieces, self.error, self.fail_at = pieces, error, fail_at
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.completion: Completion | None = None
        self._prompt = prompt_tokens

    async def __aenter__(self) -> ScriptedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Delta]:
        self.input_tokens = self._prompt
        for i, p in enumerate(self.pieces):
            if self.error is not None and i == self.fail_at:
                raise self.error
            self.output_tokens = i + 1
            yield Delta(p, 0.0, i, None, i + 1)
        self.completion = Completion("".join(self.pieces), "length", self._prompt,
                                     len(self.pieces), "r", Timings(0.0, 0.0, 0.0))


class ScriptedClient:
    def __init__(self, error: Exception | None = None, fail_at: int = 0) -> None:
        self.error, self.fail_at = error, fail_at
        self.calls: list[tuple[str, int, dict[str, Any]]] = []

    def stream(self, prompt: str, max_tokens: int, **options: Any) -> ScriptedStream:
        self.calls.append((prompt, max_tokens, options))
        return ScriptedStream(PIECES, self.error, self.fail_at, len(prompt.split()))


def backend(client: ScriptedClient, keys: tuple[bytes, ...] = (),
            api_key: str | None = None) -> OpenAIBackend:
    """The backend over the real front app (no chat template) serving ``client``."""
    import httpx2

    serving = OpenAIServing(client, MODEL, render_chat=None)  # type: ignore[arg-type]
    app = create_app(serving, api_keys=keys)
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                              base_url="http://testserver/v1")
    return OpenAIBackend("http://testserver/v1", MODEL, api_key=api_key, http_client=http)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def one(b: OpenAIBackend, spec: RequestSpec, **sampling: Any) -> Any:
    """The record of one request sent by the load generator through ``b`` (closed after)."""
    async def go() -> Any:
        async with b:
            [rec] = await run_point(b, LoadPoint("concurrency", 1), lambda i: spec,
                                    requests=1, sampling=sampling)
            return rec

    return run(go())


def test_stream_yields_text_times_finish_and_server_counts() -> None:
    client = ScriptedClient()

    async def go() -> tuple[list[Delta], Any]:
        async with backend(client) as b:
            s = b.stream("one two three", max_tokens=7, request_id="r1",
                         **DEFAULT_SAMPLING)
            return [d async for d in s], s.completion

    deltas, completion = run(go())
    assert "".join(d.text for d in deltas) == "Hello world"
    times = [d.time for d in deltas]
    assert times == sorted(times)
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
    assert deltas[-1].output_tokens == 4  # the usage chunk: the server's count
    assert completion.text == "Hello world" and completion.finish_reason == "length"
    assert (completion.input_tokens, completion.output_tokens) == (3, 4)
    t = completion.timings
    assert t.start <= t.first_token <= t.end and len(t.token_times) == 4
    prompt, max_tokens, options = client.calls[0]
    assert (prompt, max_tokens) == ("one two three", 7)  # the prompt as is: no template
    # exclude_input_in_output=True is what the API does anyway: not sent (the front refuses
    # unknown parameters); nothing else was asked for
    assert {k: v for k, v in options.items() if v is not None} == {}


def test_run_point_records_through_the_front() -> None:
    client = ScriptedClient()

    async def go() -> list[Any]:
        async with backend(client) as b:
            return await run_point(b, LoadPoint("concurrency", 2),
                                   lambda i: RequestSpec(f"prompt {i}", 2, 5),
                                   requests=4, warmup=1, sampling=dict(DEFAULT_SAMPLING))

    records = run(go())
    assert len(records) == 4 and all(r.ok for r in records)
    assert {r.output_text for r in records} == {"Hello world"}
    assert {r.server_output_tokens for r in records} == {4}
    assert {r.finish_reason for r in records} == {"length"}
    assert all(r.end >= r.first_token >= r.start for r in records)
    s = summarize(records)
    assert s.completed == 4 and s.server_output_tokens_per_s is not None
    assert len(client.calls) == 5  # + the warm-up request


def test_generate_not_streamed() -> None:
    async def go() -> Completion:
        async with backend(ScriptedClient()) as b:
            return await b.generate("a b", max_tokens=4, temperature=0.5)

    c = run(go())
    assert c.text == "Hello world" and c.output_tokens == 4 and c.input_tokens == 2
    assert c.timings.first_token is None and c.timings.end >= c.timings.start


def test_sampling_goes_in_the_body_and_the_front_names_what_it_does_not_know() -> None:
    client = ScriptedClient()
    ok = one(backend(client), RequestSpec("p", 1, 3), temperature=0.5, seed=3)
    assert ok.ok and client.calls[-1][2]["temperature"] == 0.5 and client.calls[-1][2]["seed"] == 3
    bad = one(backend(client), RequestSpec("p", 1, 3), top_k=5)
    assert bad.error_kind == "invalid_request" and "top_k" in (bad.error or "")


def test_options_the_api_cannot_express_are_refused() -> None:
    assert request_body({**DEFAULT_SAMPLING, "temperature": 0}) == {"temperature": 0}
    with pytest.raises(ConfigError, match="min_tokens"):
        request_body({"min_tokens": 8})
    with pytest.raises(ConfigError, match="echo"):
        request_body({"exclude_input_in_output": False})
    # the harness with exact output sends min_tokens: that request is an error, named
    rec = one(backend(ScriptedClient()), RequestSpec("p", 1, 3, 3))
    assert not rec.ok and "min_tokens" in (rec.error or "")


@pytest.mark.parametrize("error, kind", [
    (Overloaded("Exceeds maximum queue size"), "overloaded"),  # HTTP 429
    (Unavailable("failed to connect"), "unavailable"),  # 503
    (Timeout("deadline of 1s exceeded"), "timeout"),  # 504
    (InvalidRequest("in ensemble 'ensemble', top_p: must be in (0, 1]"), "invalid_request"),
    (ServerError("generation failed"), "server_error"),  # 500
])
@pytest.mark.parametrize("fail_at", [0, 2], ids=["status", "in-stream"])
def test_errors_map_to_the_harness_kinds(error: Exception, kind: str, fail_at: int) -> None:
    """Before any text the front answers with an HTTP status; after some, with an error
    event inside the stream (OpenAI's code, no status): both give the gRPC path's kind."""
    rec = one(backend(ScriptedClient(error, fail_at)), RequestSpec("p", 1, 4))
    assert rec.error_kind == kind and not rec.ok
    assert str(error) in (rec.error or "")


def test_unknown_model_and_wrong_key() -> None:
    wrong = backend(ScriptedClient(), keys=(b"sk-right",), api_key="sk-wrong")
    assert one(wrong, RequestSpec("p", 1, 2)).error_kind == "unauthorized"
    right = backend(ScriptedClient(), keys=(b"sk-right",), api_key="sk-right")
    assert one(right, RequestSpec("p", 1, 2)).ok
    unknown = backend(ScriptedClient(), keys=(b"sk-right",), api_key="sk-right")
    unknown.model = "nope"
    assert one(unknown, RequestSpec("p", 1, 2)).error_kind == "model_not_found"


def test_connection_failure_is_unavailable() -> None:
    import openai

    async def go() -> Exception:
        b = OpenAIBackend("http://127.0.0.1:1/v1", MODEL, timeout=5)
        try:
            async for _ in b.stream("p", max_tokens=2):
                pass
        except Exception as e:
            return e
        finally:
            await b.close()
        raise AssertionError("no error")

    e = run(go())
    assert error_kind(e) == "unavailable" and isinstance(e.__cause__, openai.APIConnectionError)
    assert error_kind(client_error(openai.APITimeoutError(request=e.__cause__.request))) \
        == "timeout"


def test_scenario_refuses_what_the_openai_endpoint_cannot_do() -> None:
    url = "http://localhost:9000/v1"
    Scenario(url=url, endpoint="openai", exact_output=False)
    with pytest.raises(ConfigError, match="exact-output"):
        Scenario(url=url, endpoint="openai")
    with pytest.raises(ConfigError, match=r"--url.*http://HOST:PORT/v1"):
        Scenario(url="localhost:9000", endpoint="openai", exact_output=False)
    with pytest.raises(ConfigError, match=r"--endpoint openai and --tool genai-perf"):
        Scenario(url=url, endpoint="openai", exact_output=False, tool="genai-perf")
    with pytest.raises(ConfigError, match="--endpoint"):
        Scenario(endpoint="http")
    old = Scenario().to_dict()
    del old["endpoint"]  # a run recorded before endpoints: gRPC
    assert Scenario.from_dict(old).endpoint == "grpc"


@pytest.mark.parametrize("args, words", [
    (["--endpoint", "openai", "--tool", "genai-perf"], ["--endpoint openai", "genai-perf"]),
    (["--endpoint", "openai", "--tool", "perf_analyzer"], ["--endpoint openai",
                                                            "perf_analyzer"]),
    (["--endpoint", "openai", "--exact-output"], ["--endpoint openai", "--exact-output"]),
    (["--api-key-file", "KEYFILE"], ["--api-key-file", "--endpoint grpc"]),
])
def test_cli_usage_errors_name_both_options(tmp_path: Path, args: list[str],
                                            words: list[str]) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("sk-x\n")
    args = [str(key_file) if a == "KEYFILE" else a for a in args]
    r = CliRunner().invoke(main, ["perf", *args])
    assert r.exit_code == 2, r.output
    assert all(w in r.output for w in words), r.output


def test_cli_key_from_file_or_environment_never_recorded(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from tritonllm.perf import run as run_mod

    seen: list[tuple[Any, str | None]] = []

    def fake_run_ours(scenario: Any, tokenizer: Any, progress: Any = None, *,
                      api_key: str | None = None) -> Any:
        seen.append((scenario, api_key))
        raise ConfigError("stop here")

    monkeypatch.setattr(run_mod, "run_ours", fake_run_ours)
    monkeypatch.setattr("tritonllm.perf.prompts.Tokenizer", lambda path: type(
        "T", (), {"path": path})())
    key_file = tmp_path / "keys"
    key_file.write_text("# ours\nsk-first\nsk-second\n")
    tok = tmp_path / "tok"
    tok.mkdir()
    base = ["perf", "--endpoint", "openai", "--tokenizer", str(tok), "--out",
            str(tmp_path / "out"), "-q"]
    r = CliRunner().invoke(main, [*base, "--api-key-file", str(key_file)])
    assert r.exit_code == 1 and "stop here" in r.output
    scenario, key = seen[-1]
    assert key == "sk-first" and "sk-first" not in str(scenario.to_dict())
    assert scenario.url == "http://localhost:9000/v1" and scenario.exact_output is False
    monkeypatch.setenv("TRITONLLM_OPENAI_API_KEYS", "sk-env, sk-other")
    CliRunner().invoke(main, base)
    assert seen[-1][1] == "sk-env"
    monkeypatch.delenv("TRITONLLM_OPENAI_API_KEYS")
    CliRunner().invoke(main, base)
    assert seen[-1][1] is None
