"""The OpenAI front's routes with the official SDK, over a scripted Triton client.

The Triton side is scripted here (``ScriptedClient`` stands in for AsyncLLMClient: a full
queue, a dead server, a passed deadline cannot be made on a real server on demand); the app,
its error mapping, SSE framing, body limits and the SDK are the real ones.
tests/integration/test_openai.py runs the front against the real tritonserver.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tritonllm.client import (
    Completion,
    Delta,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    ServerError,
    Timeout,
    Timings,
    Unavailable,
)
from tritonllm.openai.app import MAX_BODY_BYTES, create_app, load_api_keys
from tritonllm.openai.metrics import FrontMetrics
from tritonllm.openai.protocol import REFUSED
from tritonllm.openai.serving import OpenAIServing

MODEL = "ensemble"


class ScriptedStream:
    """Deltas of one scripted request (a stand-in for tritonllm.client.AsyncStream)."""

    def __init__(self, pieces: list[str], error: Exception | None, prompt_tokens: int,
                 reason: str, counts: bool = True) -> None:
        self.pieces, self.error = pieces, error
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.completion: Completion | None = None
        self._prompt, self._reason, self._counts = prompt_tokens, reason, counts
        self.closed = False

    async def __aenter__(self) -> ScriptedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Delta]:
        if self.error is not None:
            raise self.error
        self.input_tokens = self._prompt if self._counts else None
        for i, p in enumerate(self.pieces):
            self.output_tokens = i + 1 if self._counts else None
            yield Delta(p, 0.0, i, None, self.output_tokens)
        self.completion = Completion("".join(self.pieces), self._reason, self._prompt,
                                     len(self.pieces), "r", Timings(0.0, 0.0, 0.0))


class ScriptedClient:
    def __init__(self, pieces: list[str] | None = None, error: Exception | None = None,
                 reason: str = "length", counts: bool = True) -> None:
        self.pieces = pieces if pieces is not None else ["Hel", "lo", " wo", "rld"]
        self.error, self.reason, self.counts = error, reason, counts
        self.calls: list[tuple[str, int, dict[str, Any]]] = []
        self.streams: list[ScriptedStream] = []

    def stream(self, prompt: str, max_tokens: int, **options: Any) -> ScriptedStream:
        self.calls.append((prompt, max_tokens, options))
        s = ScriptedStream(self.pieces, self.error, len(prompt.split()), self.reason,
                           self.counts)
        self.streams.append(s)
        return s

    async def metadata(self, model: str, timeout: float | None = None) -> dict[str, Any]:
        """A Triton that serves no embedding model (/v1/models probes for one)."""
        raise ModelNotFound(f"Request for unknown model: '{model}' is not found")


def make(client: ScriptedClient, keys: tuple[bytes, ...] = (), count: Any = None) -> Any:
    import openai
    from starlette.testclient import TestClient

    serving = OpenAIServing(client, MODEL,  # type: ignore[arg-type]
                            render_chat=lambda msgs: " | ".join(m["content"] for m in msgs),
                            observe=FrontMetrics(MODEL), count_tokens=count)
    app = create_app(serving, api_keys=keys, metrics=serving.observe)
    http = TestClient(app)
    return openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http,
                         max_retries=0), http


def test_chat_maps_parameters_once_and_reports_usage() -> None:
    client = ScriptedClient()
    sdk, _ = make(client)
    r = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a b"}],
                                    max_completion_tokens=7, max_tokens=3, temperature=0.5,
                                    top_p=0.9, seed=5, n=2, presence_penalty=0.1,
                                    frequency_penalty=0.2, stop="x", user="u1")
    assert [c.message.content for c in r.choices] == ["Hello world"] * 2
    assert r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 8  # 2 choices x 4
    prompt, max_tokens, options = client.calls[0]
    assert prompt == "a b" and max_tokens == 7  # max_completion_tokens wins
    assert options == {"temperature": 0.5, "top_p": 0.9, "seed": 5, "stop": ["x"],
                       "presence_penalty": 0.1, "frequency_penalty": 0.2}
    assert client.calls[1][2]["seed"] == 6  # choice 1: seed + 1


def test_stop_strings_cut_the_text_and_end_the_request() -> None:
    client = ScriptedClient(["Hel", "lo", " wo", "rld"])
    sdk, _ = make(client)
    r = sdk.completions.create(model=MODEL, prompt="p", max_tokens=9, stop=["o w"])
    assert r.choices[0].text == "Hell" and r.choices[0].finish_reason == "stop"
    assert client.streams[0].closed  # left early: the server's request is cancelled
    chunks = list(sdk.completions.create(model=MODEL, prompt="p", max_tokens=9, stop="o w",
                                         stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "Hell"


@pytest.mark.parametrize("error, status, sdk_error", [
    (InvalidRequest("in ensemble 'ensemble', top_p: must be in (0, 1]"), 400,
     "BadRequestError"),
    (Overloaded("Exceeds maximum queue size"), 429, "RateLimitError"),
    (Unavailable("failed to connect"), 503, "InternalServerError"),
    (Timeout("deadline of 1s exceeded"), 504, "InternalServerError"),
    (ServerError("generation failed"), 500, "InternalServerError"),
])
def test_server_errors_keep_their_message_and_get_openai_codes(
        error: Exception, status: int, sdk_error: str) -> None:
    import openai

    sdk, http = make(ScriptedClient(error=error))
    for stream in (False, True):
        with pytest.raises(getattr(openai, sdk_error)) as e:
            sdk.chat.completions.create(model=MODEL, messages=[{"role": "user",
                                                                "content": "x"}],
                                        stream=stream)
        assert e.value.status_code == status
        assert str(error) in e.value.body["message"]
    if status == 400:
        assert e.value.body["param"] == "top_p"
    if status == 429:
        raw = http.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
        assert raw.headers["retry-after"] == "1"
    assert sdk.models.list().data[0].id == MODEL  # the front carries on


def test_every_refused_parameter_is_named() -> None:
    _, http = make(ScriptedClient())
    for name in REFUSED:
        r = http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "x"}], name: None})
        assert r.status_code == 400 and r.json()["error"]["param"] == name, name


def test_bad_bodies_are_400_or_413_and_never_crash() -> None:
    _, http = make(ScriptedClient())
    assert http.post("/v1/completions", content=b"{not json").status_code == 400
    assert http.post("/v1/completions", content=b"\xff\xfe").status_code == 400
    assert http.post("/v1/completions", json=[1, 2]).status_code == 400
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": "x", "n": 99})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages[0]")
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": "x",
                                           "stream_options": {"include_usage": True}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"
    big = b'{"model": "ensemble", "prompt": "' + b"a" * (MAX_BODY_BYTES + 1) + b'"}'
    assert http.post("/v1/completions", content=big).status_code == 413
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    assert http.post("/v1/completions", json={"model": MODEL, "prompt": "x"}).status_code == 200


def test_sse_framing_role_first_usage_last_done() -> None:
    _, http = make(ScriptedClient(["a", "b"], reason="stop"))
    with http.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(ln.removeprefix("data: ")) for ln in lines[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == ["a", "b"]
    assert events[3]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 2


def test_api_keys_from_a_file_or_the_environment(tmp_path: Any) -> None:
    from tritonllm.errors import ConfigError

    f = tmp_path / "keys"
    f.write_text("# ops keys\nkey-one\n\n  key-two  \n")
    assert load_api_keys(f, {}) == (b"key-one", b"key-two")
    assert load_api_keys(None, {"TRITONLLM_OPENAI_API_KEYS": "a, b,"}) == (b"a", b"b")
    assert load_api_keys(None, {}) == ()
    (tmp_path / "empty").write_text("# none\n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_api_keys(tmp_path / "empty", {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_api_keys(tmp_path / "missing", {})
    _, http = make(ScriptedClient(), keys=(b"key-one",))
    assert http.get("/health").status_code == 200
    assert http.get("/v1/models").status_code == 401
    assert http.get("/v1/models", headers={"Authorization": "Bearer key-one"}).status_code \
        == 200


def test_usage_falls_back_to_the_fronts_tokenizer_for_a_model_without_counts() -> None:
    """NVIDIA's models report no token counts: the front counts (here: characters)."""
    counted: list[tuple[str, bool]] = []

    def count(text: str, prompt: bool) -> int:
        counted.append((text, prompt))
        return len(text) + (1 if prompt else 0)

    sdk, _ = make(ScriptedClient(counts=False, reason="stop"), count=count)
    r = sdk.completions.create(model=MODEL, prompt="abc", max_tokens=9)
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == len("Hello world")
    assert counted == [("abc", True), ("Hello world", False)]
