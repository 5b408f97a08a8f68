"""The OpenAI front (``tritonllm openai``, a real process) in front of the real tritonserver
serving the tiny CPU repository, driven by the official ``openai`` SDK (sync and async).

References: HF transformers' ``apply_chat_template`` + greedy ``generate`` on the tiny model for
text and token counts; the server's own metrics for freed engine slots. Where a server state
cannot be made here on demand (a full queue, a deadline), tests/unit/test_openai_front.py drives
the same app with a scripted client.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonllm import metrics_catalog as MC

pytestmark = pytest.mark.integration
KEY = "sk-test-0123456789abcdef"  # a test key, not a secret
MODEL = "ensemble"


@pytest.fixture(scope="module")
def server(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from served import served_repository

    with served_repository(cpu_engine, tmp_path_factory.mktemp("openai")) as srv:
        yield srv


class Front:
    """``tritonllm openai`` as a user runs it: its own process, its own port."""

    def __init__(self, grpc_address: str, repo: Path, log: Path,
                 env: dict[str, str] | None = None, *extra: str) -> None:
        from tritonllm.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "tritonllm", "openai", "--url", grpc_address,
               "--model", MODEL, "--repo", str(repo), "--port", str(self.port), *extra]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the front exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"the front is not ready: {self.log.read_text()}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def front(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    f = Front(server.grpc_address, server.repo, tmp_path_factory.mktemp("front") / "front.log")
    try:
        f.wait_ready()
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def client(front: Front) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> Any:
    """HF transformers: the chat template's ids and greedy continuations of the tiny model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()

    class HF:
        tokenizer = tok

        @staticmethod
        def chat_ids(messages: list[dict[str, str]]) -> list[int]:
            out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = out["input_ids"] if hasattr(out, "keys") else out
            return [int(i) for i in ids]

        @staticmethod
        def greedy(ids: list[int], n: int) -> tuple[str, int]:
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
            new = out[0, len(ids):].tolist()
            return str(tok.decode(new, skip_special_tokens=True)), len(new)

    return HF


MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Grüße aus Köln — 你好, wie geht's? 🚀"}]


def test_chat_greedy_equals_hf_with_its_usage(client: Any, hf: Any) -> None:
    ids = hf.chat_ids(MESSAGES)
    text, n = hf.greedy(ids, 24)
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24,
                                       temperature=0)
    assert r.choices[0].message.content == text
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == n
    assert r.usage.total_tokens == len(ids) + n
    assert r.choices[0].finish_reason == ("length" if n == 24 else "stop")
    assert r.model == MODEL and r.object == "chat.completion"


def test_streamed_chat_deltas_concatenate_to_the_whole_text(client: Any) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40,
                                           temperature=0).choices[0].message.content
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=40, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] in ("stop", "length") and not any(reasons[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_completions_greedy_equals_hf_and_echo(client: Any, hf: Any) -> None:
    prompt = "Once upon a time in Zürich,"
    ids = hf.tokenizer(prompt).input_ids  # as the server's preprocessing encodes it (BOS)
    text, n = hf.greedy(ids, 16)
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, temperature=0)
    assert r.choices[0].text == text
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == n
    echoed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16,
                                       temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + text


def test_n_choices_and_stops(client: Any) -> None:
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, n=3,
                                       temperature=1.0, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40,
                                           temperature=0).choices[0].message.content
    assert len(whole) > 6
    stop = whole[3:6]  # a piece in the middle of the greedy text
    cut = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40,
                                         temperature=0, stop=[stop, "never-there"])
    assert cut.choices[0].message.content == whole[:whole.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40,
                                              temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == \
        whole[:whole.index(stop)]


def test_the_async_sdk_streams_and_completes(front: Front) -> None:
    import openai

    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=f"{front.url}/v1", api_key="x",
                                      max_retries=0) as ac:
            whole = await ac.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                     max_tokens=20, temperature=0)
            parts = []
            async for c in await ac.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=20, temperature=0,
                    stream=True):
                parts.append(c.choices[0].delta.content or "")
            return whole.choices[0].message.content or "", "".join(parts)

    whole, streamed = asyncio.run(run())
    assert whole == streamed and whole


def test_errors_reach_the_sdk_as_its_own_types(client: Any) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                       extra_body={"top_k_typo": 3})
    assert e.value.body["param"] == "top_k_typo" and "unknown parameter" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[
            {"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert e.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True)
    assert e.value.body["param"] == "logprobs"
    with pytest.raises(openai.BadRequestError) as e:  # the server's own check, its message kept
        client.completions.create(model=MODEL, prompt="x", max_tokens=10**6)
    assert e.value.body["param"] == "max_tokens" and "max_tokens" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "wizard",
                                                               "content": "x"}])
    assert e.value.body["param"].startswith("messages")
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    assert [m.id for m in client.models.list()] == [MODEL]
    # ... and the front still serves
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2,
                                          temperature=0).choices


def test_a_front_without_its_server_is_unavailable(tmp_path: Path, server: Any) -> None:
    import openai

    from tritonllm.server import free_port

    f = Front(f"127.0.0.1:{free_port()}", server.repo, tmp_path / "front.log")
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:  # the process is up once /health answers at all
            try:
                urllib.request.urlopen(f"{f.url}/health", timeout=2)
            except urllib.error.HTTPError as e:
                status = e.code
                break
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        assert status == 503  # not ready: its Triton model is not there
        c = openai.OpenAI(base_url=f"{f.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        assert e.value.status_code == 503
    finally:
        f.close()


def _engine_active(server: Any) -> float:
    body = urllib.request.urlopen(server.url_metrics, timeout=10).read().decode()
    active = MC.series(MC.REQUEST_METRICS, "active").split("{")[1].rstrip("}")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(MC.REQUEST_METRICS + "{") and active in line)


def test_a_client_that_disconnects_mid_stream_frees_the_engine_slot(front: Front,
                                                                   server: Any) -> None:
    import http.client
    import json

    body = json.dumps({"model": MODEL, "prompt": "The long road", "max_tokens": 1000,
                       "temperature": 1.0, "seed": 1, "stream": True})
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.readline()
    assert first.startswith(b"data: ")
    deadline = time.monotonic() + 30
    while _engine_active(server) == 0 and time.monotonic() < deadline:  # the request runs
        time.sleep(0.05)
    import socket

    conn.sock.shutdown(socket.SHUT_RDWR)  # the HTTP client goes away mid-stream
    resp.close()
    conn.close()
    deadline = time.monotonic() + 30
    while _engine_active(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _engine_active(server) == 0


def test_api_keys_on_every_route(server: Any, tmp_path: Path) -> None:
    import openai

    f = Front(server.grpc_address, server.repo, tmp_path / "front.log",
              {"TRITONLLM_OPENAI_API_KEYS": f"other-key,{KEY}"})
    try:
        f.wait_ready()  # /health needs no key
        routes = [("GET", "/v1/models", None), ("GET", f"/v1/models/{MODEL}", None),
                  ("GET", "/metrics", None),
                  ("POST", "/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 1}),
                  ("POST", "/v1/chat/completions",
                   {"model": MODEL, "messages": MESSAGES, "max_tokens": 1})]
        for method, path, payload in routes:
            for auth, expected in ((None, 401), ("Bearer wrong", 401), ("Basic " + KEY, 401),
                                   (f"Bearer {KEY}", 200)):
                assert _status(f.url + path, method, payload, auth) == expected, (path, auth)
        bad = openai.OpenAI(base_url=f"{f.url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=f"{f.url}/v1", api_key=KEY, max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2,
                                            temperature=0).choices
        assert KEY not in f.log.read_text()  # never logged
    finally:
        f.close()


def _status(url: str, method: str, payload: Any, auth: str | None) -> int:
    import json

    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": auth} if auth else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_front_exports_its_metrics(front: Front, client: Any) -> None:
    def scrape() -> str:
        return urllib.request.urlopen(f"{front.url}/metrics", timeout=10).read().decode()

    def value(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and f'model="{MODEL}"' in line)

    before = scrape()
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, n=2,
                                       temperature=0)
    after = scrape()
    assert value(after, f"{MC.TTFT}_count") - value(before, f"{MC.TTFT}_count") == 2
    assert (value(after, MC.GENERATION_TOKENS) - value(before, MC.GENERATION_TOKENS)
            == r.usage.completion_tokens)
    assert value(after, MC.OPENAI_REQUESTS) > value(before, MC.OPENAI_REQUESTS)
