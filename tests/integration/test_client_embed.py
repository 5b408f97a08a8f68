"""``embed()`` of both clients against the real tritonserver serving all-MiniLM-L6-v2 (the onnx
engine) with ``max_batch_size`` 4, checked against the server's raw answer through the official
tritonclient: the same vectors and counts, the caller's order across requests, errors naming
the caller's text. One server for the module."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonllm.contract import EMB_IN, EMB_OUT, EMBEDDING

pytestmark = pytest.mark.integration
ROWS = 4  # the rendered max_batch_size: 10 texts are three requests
TEXTS = ["The cat sat on the mat.", "Grüße aus Köln — 你好 🚀", "a",
         "Embeddings map text to vectors so that similar texts land close together.",
         "Triton batches requests.", "Il pleut sur la ville.", "42", "quantum chromodynamics",
         "The dog chased the ball across the park.", "last one"]


@pytest.fixture(scope="module")
def server(onnx_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from served import served_repository

    from tritonllm.settings import RepoSettings

    with served_repository(onnx_engine, tmp_path_factory.mktemp("embed"),
                           RepoSettings(embedding_max_batch_size=ROWS)) as srv:
        yield srv


def raw(server: Any, texts: list[str], truncate: bool | None = None
        ) -> tuple[np.ndarray, list[int]]:
    """The server's answer to one request of ``texts``, through tritonclient itself."""
    import tritonclient.grpc as grpcclient
    from served import tensor

    inputs = [tensor(EMB_IN.text, np.array([[t.encode()] for t in texts], dtype=object),
                     "BYTES")]
    if truncate is not None:
        inputs.append(tensor(EMB_IN.truncate, np.full((len(texts), 1), truncate), "BOOL"))
    with grpcclient.InferenceServerClient(server.grpc_address) as c:
        r = c.infer(EMBEDDING, inputs)
    return r.as_numpy(EMB_OUT.embedding), r.as_numpy(EMB_OUT.num_tokens).reshape(-1).tolist()


@pytest.fixture(scope="module")
def reference(server: Any) -> tuple[np.ndarray, list[int]]:
    """The raw answers to the requests the client makes of TEXTS: the same chunks of 4."""
    parts = [raw(server, TEXTS[i:i + ROWS]) for i in range(0, len(TEXTS), ROWS)]
    return np.concatenate([v for v, _ in parts]), [n for _, ns in parts for n in ns]


def test_sync_embed_equals_the_raw_answer_across_requests(server: Any,
                                                          reference: Any) -> None:
    from tritonllm.client import LLMClient

    want, counts = reference
    for url in (server.grpc_address, server.url_http):  # gRPC, and HTTP's infer JSON
        with LLMClient(url) as c:
            e = c.embed(TEXTS)
        assert e.model == EMBEDDING and e.dimension == 384 and len(e) == len(TEXTS)
        assert np.array_equal(e.numpy(), want)  # sequential: the same batches, bit for bit
        assert e.num_tokens == counts and e.prompt_tokens == sum(counts)
        assert c._rows == {EMBEDDING: ROWS}  # read from the model's config


def test_order_is_the_callers_and_async_gives_the_same_vectors(server: Any,
                                                               reference: Any) -> None:
    from tritonllm.client import AsyncLLMClient, LLMClient

    async def run() -> Any:
        async with AsyncLLMClient(server.grpc_address) as c:
            return await c.embed(TEXTS)

    got = asyncio.run(run())
    # Concurrent requests may share a server batch (other padding): equal to float precision.
    assert np.allclose(got.numpy(), reference[0], atol=1e-6, rtol=0)
    assert got.num_tokens == reference[1]
    # Each text alone is the same vector, and the nearest of all to its own row: the order
    # is the caller's, not the chunks' or the server's.
    alone = np.concatenate([raw(server, [t])[0] for t in TEXTS])
    assert np.allclose(got.numpy(), alone, atol=1e-5, rtol=0)
    similarity = got.numpy() @ alone.T
    assert (similarity.argmax(axis=1) == np.arange(len(TEXTS))).all()
    with LLMClient(server.grpc_address) as c:
        one = c.embed(TEXTS[3])  # a str is one text
    assert np.allclose(one.numpy(), alone[3:4], atol=1e-6, rtol=0)


def test_errors_name_the_callers_text(server: Any) -> None:
    from tritonllm.client import AsyncLLMClient, InvalidRequest, LLMClient, ModelNotFound

    long = "word " * 300  # 302 tokens, over the model's 256
    texts = [*TEXTS[:6], long]  # the second request's row 2 is the caller's text 6
    with LLMClient(server.grpc_address) as c:
        with pytest.raises(InvalidRequest) as e:
            c.embed(texts)
        assert str(e.value).startswith("texts[6]: 302 tokens, more than the model's 256")
        assert e.value.status == "INVALID_ARGUMENT"
        cut = c.embed(texts, truncate=True)  # cut to 256, as the server's own answer
        want, counts = raw(server, texts[4:], truncate=True)
        assert np.array_equal(cut.numpy()[4:], want) and cut.num_tokens[4:] == counts
        assert cut.num_tokens[6] == 256
        with pytest.raises(InvalidRequest, match=r"^texts\[2\]: empty text$"):
            c.embed(["a", "b", ""])  # refused before anything is sent
        with pytest.raises(ModelNotFound):
            c.embed("x", model="no_such_model")

    async def run() -> None:
        async with AsyncLLMClient(server.grpc_address) as c:
            with pytest.raises(InvalidRequest) as e:
                await c.embed(texts)
            assert str(e.value).startswith("texts[6]: 302 tokens")
            with pytest.raises(InvalidRequest, match=r"^texts\[1\]: expected str, got int$"):
                await c.embed(["a", 1])  # type: ignore[list-item]

    asyncio.run(run())
