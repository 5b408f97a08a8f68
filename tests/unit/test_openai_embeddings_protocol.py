"""``POST /v1/embeddings`` without a server: the request model's validation, base64 as the SDK
decodes it, and the app's 400 / 404 answers that come before anything reaches Triton (the real
AsyncLLMClient, pointed at a port nobody listens on: its own checks refuse the texts first).
tests/integration/test_openai_embeddings.py runs the route against the real tritonserver."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from tritonllm.openai.protocol import (
    EMBEDDING_PARAMETERS,
    MAX_EMBEDDING_INPUTS,
    EmbeddingRequest,
    OpenAIError,
    encode_embedding,
    parse_request,
)

MODEL = "embedding"


def parse(**body: Any) -> EmbeddingRequest:
    req: EmbeddingRequest = parse_request(EmbeddingRequest, {"model": MODEL, **body})
    return req


@pytest.mark.parametrize("body, param, message", [
    ({"input": [1, 2, 3]}, "input", "input: token arrays are not supported: send the text"),
    ({"input": [[1, 2], [3]]}, "input", "input: token arrays are not supported"),
    ({"input": {"a": 1}}, "input", "input: "),
    ({"input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)}, "input",
     f"input: at most {MAX_EMBEDDING_INPUTS} texts, got {MAX_EMBEDDING_INPUTS + 1}"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", "encoding_format: "),
    ({"input": "x", "dimensions": 0}, "dimensions", "dimensions: "),
    ({"input": "x", "truncate": [1]}, "truncate", "truncate: "),
    ({"input": "x", "truncate_prompt_tokens": 8}, "truncate_prompt_tokens",
     "truncate_prompt_tokens: unknown parameter"),
    ({}, "input", "input: Field required"),
])
def test_bad_bodies_are_400s_naming_the_parameter(body: dict[str, Any], param: str,
                                                  message: str) -> None:
    with pytest.raises(OpenAIError) as e:
        parse(**body)
    assert e.value.status == 400 and e.value.param == param
    assert e.value.message.startswith(message)


def test_good_bodies_parse_as_sent() -> None:
    r = parse(input="hello", user="u1")
    assert (r.input, r.encoding_format, r.dimensions) == ("hello", "float", None)
    r = parse(input=["a", "b"], encoding_format="base64", dimensions=384)
    assert r.input == ["a", "b"] and r.encoding_format == "base64" and r.dimensions == 384
    assert list(EMBEDDING_PARAMETERS) == ["model", "input", "encoding_format", "dimensions",
                                          "user", "truncate"]
    assert parse(input="x").truncate is False and parse(input="x", truncate=True).truncate


def test_base64_is_what_the_sdk_decodes() -> None:
    vector = np.array([0.1, -2.5, 3e-8, 1.0], dtype=np.float32).tolist()
    text = encode_embedding(vector, "base64")
    assert isinstance(text, str)
    # openai/lib/_parsing/_embeddings.py: np.frombuffer(base64.b64decode(data), "float32")
    back = np.frombuffer(base64.b64decode(text), dtype="float32").tolist()
    assert back == vector
    assert np.frombuffer(base64.b64decode(text), dtype="<f4").tolist() == vector
    assert encode_embedding(vector, "float") == vector


def make() -> Any:
    import openai
    from starlette.testclient import TestClient

    from tritonllm.client import AsyncLLMClient
    from tritonllm.openai.app import create_app
    from tritonllm.openai.metrics import FrontMetrics
    from tritonllm.openai.serving import OpenAIServing
    from tritonllm.server import free_port

    client = AsyncLLMClient(f"http://127.0.0.1:{free_port()}", timeout=5)  # nothing there
    metrics = FrontMetrics("ensemble")
    serving = OpenAIServing(client, "ensemble", render_chat=None, observe=metrics)
    http = TestClient(create_app(serving, metrics=metrics))
    return openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http,
                         max_retries=0), http


@pytest.mark.parametrize("texts, message", [
    ([], "input: empty"),
    ("", "input: empty text"),
    (["a", "b", ""], "input[2]: empty text"),
    (["a", 3, "c"], "input[1]: expected str, got int"),
])
def test_texts_are_refused_before_triton_naming_input(texts: Any, message: str) -> None:
    import openai

    sdk, _ = make()
    with pytest.raises(openai.BadRequestError) as e:
        sdk.embeddings.create(model=MODEL, input=texts,  # type: ignore[arg-type]
                              encoding_format="float")
    assert e.value.status_code == 400
    assert e.value.body["message"] == message and e.value.body["param"] == "input"


def test_other_models_are_404s_and_requests_are_counted() -> None:
    import openai

    sdk, http = make()
    for model, says in (("ensemble", "is the chat/completions model"),
                        ("nope", "does not exist")):
        with pytest.raises(openai.NotFoundError) as e:
            sdk.embeddings.create(model=model, input="x")
        assert says in e.value.body["message"] and e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=MODEL, input=[1, 2])
    scrape = http.get("/metrics").text
    assert ('tritonllm_openai_requests_total{model="ensemble",route="/v1/embeddings"} 3.0'
            in scrape)
    assert 'trtllm_request_error_total{http_code="404",model="ensemble"} 2.0' in scrape
    # Nothing listens: the embedding model is not loaded, so /v1/models lists the LLM only.
    assert [m.id for m in sdk.models.list().data] == ["ensemble"]
