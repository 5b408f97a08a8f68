"""``POST /v1/embeddings`` of the OpenAI front (``tritonllm openai``, a real process) in front of
the real tritonserver serving the tiny LLM with all-MiniLM-L6-v2 beside it (``max_batch_size``
4), driven by the official ``openai`` SDK. Reference: the server's raw answer through the
official tritonclient."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonllm.contract import EMB_IN, EMB_OUT, EMBEDDING

pytestmark = pytest.mark.integration
ROWS = 4
FEW = ["The cat sat on the mat.", "Grüße aus Köln — 你好 🚀", "a"]  # one Triton request
MANY = [*FEW, "Embeddings map similar texts to nearby vectors.", "Triton batches requests.",
        "Il pleut sur la ville.", "42", "quantum chromodynamics", "the dog and the ball",
        "last one"]  # three requests of at most 4


@pytest.fixture(scope="module")
def server(cpu_engine: Path, onnx_engine: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from served import served_repository

    from tritonllm.settings import RepoSettings

    with served_repository(cpu_engine, tmp_path_factory.mktemp("openai-emb"),
                           RepoSettings(embedding_max_batch_size=ROWS),
                           embedding=onnx_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def sdk(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import openai
    from test_openai import Front  # the front as a user runs it: its own process and port

    front = Front(server.grpc_address, server.repo,
                  tmp_path_factory.mktemp("front") / "front.log")
    try:
        front.wait_ready()
        yield openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
    finally:
        front.close()


def raw(server: Any, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    """The server's answer to one request of ``texts``, through tritonclient itself."""
    import tritonclient.grpc as grpcclient
    from served import tensor

    text = tensor(EMB_IN.text, np.array([[t.encode()] for t in texts], dtype=object), "BYTES")
    with grpcclient.InferenceServerClient(server.grpc_address) as c:
        r = c.infer(EMBEDDING, [text])
    return r.as_numpy(EMB_OUT.embedding), r.as_numpy(EMB_OUT.num_tokens).reshape(-1).tolist()


def vectors(response: Any) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_float_and_base64_are_the_raw_vectors_with_their_usage(sdk: Any, server: Any) -> None:
    want, counts = raw(server, FEW)
    as_float = sdk.embeddings.create(model=EMBEDDING, input=FEW, encoding_format="float")
    assert np.array_equal(vectors(as_float), want)  # one request each: the same batch
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == sum(counts)
    assert as_float.model == EMBEDDING and as_float.object == "list"
    assert {d.object for d in as_float.data} == {"embedding"}
    # Not given: the SDK asks for base64 and decodes it itself.
    assert np.array_equal(vectors(sdk.embeddings.create(model=EMBEDDING, input=FEW)), want)
    b64 = sdk.embeddings.create(model=EMBEDDING, input=FEW[0], encoding_format="base64")
    (item,) = b64.data
    assert isinstance(item.embedding, str)
    alone, _ = raw(server, FEW[:1])  # padded to its own length, not FEW's longest
    assert np.array_equal(np.frombuffer(base64.b64decode(item.embedding), dtype="<f4"),
                          alone[0])
    same = sdk.embeddings.create(model=EMBEDDING, input=FEW, dimensions=384)
    assert np.array_equal(vectors(same), want)
    assert EMBEDDING in [m.id for m in sdk.models.list().data]
    assert sdk.models.retrieve(EMBEDDING).id == EMBEDDING


def test_a_list_keeps_its_order_across_triton_requests(sdk: Any, server: Any) -> None:
    got = vectors(sdk.embeddings.create(model=EMBEDDING, input=MANY))
    chunked = [raw(server, MANY[i:i + ROWS]) for i in range(0, len(MANY), ROWS)]
    want = np.concatenate([v for v, _ in chunked])
    # Concurrent requests may share a server batch (other padding): equal to float precision.
    assert np.allclose(got, want, atol=1e-6, rtol=0)
    assert (np.argmax(got @ want.T, axis=1) == np.arange(len(MANY))).all()
    usage = sdk.embeddings.create(model=EMBEDDING, input=MANY).usage
    assert usage.prompt_tokens == sum(n for _, ns in chunked for n in ns)


def test_bad_input_is_a_400_naming_it(sdk: Any) -> None:
    import openai

    for body, param, message in (
            ({"input": []}, "input", "input: empty"),
            ({"input": ["a", ""]}, "input", "input[1]: empty text"),
            ({"input": [*MANY[:5], "word " * 300]}, "input",
             "input[5]: 302 tokens, more than the model's 256"),
            ({"input": [[101, 102]]}, "input", "input: token arrays are not supported"),
            ({"input": "x", "dimensions": 128}, "dimensions",
             "dimensions: 128 is not supported: 'embedding' makes vectors of 384")):
        with pytest.raises(openai.BadRequestError) as e:
            sdk.embeddings.create(model=EMBEDDING, encoding_format="float", **body)
        assert e.value.body["param"] == param
        assert e.value.body["message"].startswith(message)
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="ensemble", input="x")


def test_truncate_extension_cuts_an_over_length_text(sdk: Any, server: Any) -> None:
    """Ours, not OpenAI's (sent with the SDK's extra_body): the text cut to the max length,
    the same vector Triton gives it with truncate=true, usage counting 256 tokens."""
    import tritonclient.grpc as grpcclient
    from served import tensor

    long = "word " * 300
    r = sdk.embeddings.create(model=EMBEDDING, input=[long, "a"], encoding_format="float",
                              extra_body={"truncate": True})
    assert r.usage.prompt_tokens == 256 + 3  # [CLS] a [SEP]
    text = tensor(EMB_IN.text, np.array([[long.encode()]], dtype=object), "BYTES")
    cut = tensor(EMB_IN.truncate, np.array([[True]]), "BOOL")
    with grpcclient.InferenceServerClient(server.grpc_address) as c:
        want = c.infer(EMBEDDING, [text, cut]).as_numpy(EMB_OUT.embedding)[0]
    assert np.allclose(vectors(r)[0], want, atol=1e-6, rtol=0)
