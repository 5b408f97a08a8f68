"""The real all-MiniLM-L6-v2, built by the onnx engine, served beside the tiny LLM from one
repository on the real tritonserver, driven by the official tritonclient.

Reference: HF transformers in this process with the model's published recipe (sentence-
transformers' modules: mean pooling over the attention mask, then L2 normalization, texts cut
at its max_seq_length of 256 tokens). Over-length texts are refused by default and cut only when
the request sends ``truncate``: both are tested.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from served import Stream, served_repository
from served import inputs as llm_inputs

from tritonllm.contract import EMB_IN, EMB_OUT, EMBEDDING, ENSEMBLE

pytestmark = pytest.mark.integration

MAX_TOKENS = 256  # the checkpoint's sentence_bert_config.json max_seq_length
COSINE = 0.9999


@pytest.fixture(scope="module")
def server(cpu_engine: Path, onnx_engine: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Any]:
    """The tiny LLM's repository with the embedding model beside it, validated and served."""
    from tritonllm.builders.validate import validate_repository
    from tritonllm.settings import RepoSettings

    where = tmp_path_factory.mktemp("embeddings")
    settings = RepoSettings(preprocessing_instance_count=1, bls_instance_count=1)
    with served_repository(cpu_engine, where, settings, embedding=onnx_engine) as srv:
        assert validate_repository(srv.repo) == []
        yield srv


@pytest.fixture(scope="module")
def reference(minilm: Path) -> Any:
    """``reference(texts)``: HF transformers' sentence vectors (mean pool + normalize)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm, dtype=torch.float32).eval()

    def run(texts: Sequence[str]) -> np.ndarray:
        batch = tok(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                    return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()

    return run


@pytest.fixture(scope="module")
def tokens(minilm: Path) -> Any:
    """``tokens(text)``: the checkpoint tokenizer's id count, special tokens included."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return lambda text: len(tok.encode(text).ids)


def words_of_tokens(tokens: Any, n: int) -> str:
    """A text of exactly ``n`` tokens ([CLS] and [SEP] included), varied words."""
    vocab = ["river", "mountain", "city", "winter", "morning", "garden", "kitchen", "library",
             "market", "station", "island", "forest", "model", "server", "request", "batch",
             "vector", "search", "query", "document"]
    words: list[str] = []
    while tokens(" ".join(words)) < n:
        words.append(vocab[len(words) % len(vocab)])
    text = " ".join(words)
    assert tokens(text) == n, "every vocabulary word above is one token"
    return text


def sentences(tokens: Any) -> list[str]:
    """100 varied texts: the benchmark's seeded sentences plus the edges."""
    from tritonllm.perf.bench_embeddings import make_texts

    edges = [
        "word",
        "日本語の文章をベクトルに変換する。",
        "Москва — столица России, а данные — это модель.",
        "café naïve façade Zürich Straße, crème brûlée 🙂☕ €20 µs",
        "e\u0301 combining accents a\u0308 and a zero\u200bwidth space",
        "  leading and trailing spaces  ",
        "UPPER lower MiXeD 12345 3.14159 #hashtag @mention https://example.com/a?b=c",
        "tabs\tand\nnew lines\r\nin one text",
        words_of_tokens(tokens, MAX_TOKENS),
        words_of_tokens(tokens, MAX_TOKENS - 1),
    ]
    texts = make_texts(100 - len(edges), seed=21) + edges
    assert len(texts) == 100 and max(tokens(t) for t in texts) == MAX_TOKENS
    return texts


def request(texts: Sequence[str | bytes], truncate: bool | None = None,
            text_dtype: str = "BYTES") -> list[Any]:
    import tritonclient.grpc as grpcclient

    raw = [t.encode() if isinstance(t, str) else t for t in texts]
    if text_dtype == "BYTES":
        value = np.array(raw, dtype=np.object_).reshape(-1, 1)
    else:
        value = np.arange(len(raw), dtype=np.int32).reshape(-1, 1)
    text = grpcclient.InferInput(EMB_IN.text, list(value.shape), text_dtype)
    text.set_data_from_numpy(value)
    out = [text]
    if truncate is not None:
        flag = grpcclient.InferInput(EMB_IN.truncate, [len(raw), 1], "BOOL")
        flag.set_data_from_numpy(np.full((len(raw), 1), truncate))
        out.append(flag)
    return out


def infer(server: Any, texts: Sequence[str | bytes], **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """(embedding [rows, dim], num_tokens [rows]) of one request; raises its error."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        result = client.infer(EMBEDDING, request(texts, **kw), client_timeout=120)
    return result.as_numpy(EMB_OUT.embedding), result.as_numpy(EMB_OUT.num_tokens).reshape(-1)


def error_of(server: Any, texts: Sequence[str | bytes], **kw: Any) -> Any:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as e:
        infer(server, texts, **kw)
    return e.value


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(1))


def model_counts(server: Any) -> tuple[int, int]:
    """The embedding model's (inference_count, execution_count), from Triton's statistics."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        stats = client.get_inference_statistics(model_name=EMBEDDING).model_stats
    return sum(s.inference_count for s in stats), sum(s.execution_count for s in stats)


def test_served_vectors_equal_transformers(server: Any, reference: Any, tokens: Any) -> None:
    texts = sentences(tokens)
    want = reference(texts)
    # Single-text requests from 8 clients at once (dynamically batched by Triton), then the
    # same texts as multi-row requests of 8.
    with ThreadPoolExecutor(8) as pool:
        single = list(pool.map(lambda t: infer(server, [t]), texts))
    got = np.concatenate([v for v, _ in single])
    counts = np.concatenate([n for _, n in single])
    rows = [infer(server, texts[i:i + 8]) for i in range(0, len(texts), 8)]
    got_rows = np.concatenate([v for v, _ in rows])

    assert got.shape == want.shape == (100, 384) and got.dtype == np.float32
    worst = cosines(got, want)
    assert worst.min() >= COSINE, (worst.min(), texts[int(worst.argmin())])
    assert cosines(got_rows, want).min() >= COSINE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert counts.tolist() == [tokens(t) for t in texts]
    assert np.concatenate([n for _, n in rows]).tolist() == counts.tolist()


def test_over_length_is_an_error_unless_truncate(server: Any, reference: Any,
                                                 tokens: Any) -> None:
    from tritonclient.utils import InferenceServerException

    long = words_of_tokens(tokens, 300)
    err = error_of(server, ["short one", long])
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "text[1]: 300 tokens, more than the model's 256" in err.message()
    assert "truncate=true" in err.message()
    with pytest.raises(InferenceServerException, match="text\\[0\\]: 300 tokens"):
        infer(server, [long], truncate=False)

    vectors, counts = infer(server, [long, "short one"], truncate=True)
    assert counts.tolist() == [MAX_TOKENS, tokens("short one")]
    assert cosines(vectors, reference([long, "short one"])).min() >= COSINE


@pytest.mark.parametrize(("texts", "kw", "field", "says"), [
    ([""], {}, "text[0]", "empty text"),
    (["fine", "also fine", ""], {}, "text[2]", "empty text"),
    ([b"\xff\xfe not utf-8"], {}, "text[0]", "not valid UTF-8"),
    ([b"x" * (1024 * 1024 + 1)], {}, "text[0]", "1048577 bytes, more than 1048576"),
    (["a", "b"], {"text_dtype": "INT32"}, "text", "data-type"),
], ids=["empty-string", "one-bad-row", "bad-utf8", "too-many-bytes", "wrong-dtype"])
def test_bad_input_is_invalid_arg_naming_the_field(server: Any, texts: list[Any],
                                                   kw: dict[str, Any], field: str,
                                                   says: str) -> None:
    err = error_of(server, texts, **kw)
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert field in err.message() and says in err.message(), err.message()


def test_empty_request_is_refused(server: Any) -> None:
    import tritonclient.grpc as grpcclient

    text = grpcclient.InferInput(EMB_IN.text, [0, 1], "BYTES")
    text.set_data_from_numpy(np.zeros((0, 1), dtype=np.object_))
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(server.grpc_address) as client, \
            pytest.raises(InferenceServerException) as e:
        client.infer(EMBEDDING, [text], client_timeout=60)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'text'" in e.value.message(), e.value.message()


def test_bad_requests_in_a_burst_leave_the_others_answered(server: Any, reference: Any) -> None:
    """Bad requests among good ones sent at once: the good ones (batched with them by Triton)
    get their right vectors, each bad one its own error, and the server carries on."""
    from tritonclient.utils import InferenceServerException

    good = [f"sentence number {i} about a river and a city" for i in range(24)]
    bad: list[str | bytes] = ["", b"\xc3", "", b"\x80"]
    jobs: list[tuple[str, str | bytes]] = [("good", t) for t in good]
    for k, b in enumerate(bad):
        jobs.insert(5 * k + 2, ("bad", b))
    before = model_counts(server)

    def one(job: tuple[str, str | bytes]) -> Any:
        try:
            return infer(server, [job[1]])[0][0]
        except InferenceServerException as e:
            return e

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    answered = np.stack([r for (kind, _), r in zip(jobs, results, strict=True)
                         if kind == "good"])
    errors = [r for (kind, _), r in zip(jobs, results, strict=True) if kind == "bad"]
    assert all(isinstance(e, InferenceServerException) for e in errors), errors
    assert all("text[0]" in e.message() for e in errors)
    assert cosines(answered, reference(good)).min() >= COSINE
    # Every request reached the model (Triton counts the failed ones too): none was lost or
    # refused before it.
    assert model_counts(server)[0] - before[0] == len(jobs)
    assert infer(server, ["still serving"])[0].shape == (1, 384)


def test_llm_and_embedding_both_answer_under_load(server: Any, reference: Any) -> None:
    """Streaming LLM generations and embedding requests at the same time, from one repository:
    every one of both completes, the vectors right."""
    texts = [f"query {i}: where is the nearest library station" for i in range(48)]
    want = reference(texts)
    stream = Stream(server)
    vectors: list[np.ndarray] = []
    failures: list[BaseException] = []
    try:
        ids = [f"load{i}" for i in range(6)]
        embedded_at: list[float] = []

        def embed_all() -> None:
            try:
                with ThreadPoolExecutor(6) as pool:
                    vectors.extend(pool.map(lambda t: infer(server, [t])[0][0], texts))
                embedded_at.append(time.monotonic())
            except BaseException as e:  # the assertion below reports it
                failures.append(e)

        worker = threading.Thread(target=embed_all)
        worker.start()
        for rid in ids:
            stream.send(rid, ENSEMBLE, llm_inputs("The river runs", 64, stream=True))
        sent_at = time.monotonic()
        results = [stream.collect(rid) for rid in ids]
        worker.join(120)
        assert not worker.is_alive()
    finally:
        stream.close()
    assert not failures, failures
    assert sent_at < embedded_at[0], "the generations started while embeddings were running"
    for pieces, err in results:
        assert err is None and len(pieces) >= 1 and "".join(pieces)
    assert cosines(np.stack(vectors), want).min() >= COSINE


@pytest.mark.parametrize("option", [{"dtype": "float16"}, {"quantization": "int8"}],
                         ids=["float16", "int8"])
def test_reduced_precision_builds_are_checked_and_recorded(
        minilm: Path, reference: Any, tmp_path: Path, option: dict[str, str]) -> None:
    """float16 and int8 engines: the build records ONNX Runtime vs PyTorch in the manifest,
    and the ONNX file, run as the served model runs it, is that close to HF transformers."""
    from tritonllm.builders import BuildSettings, build
    from tritonllm.builders.onnx import ONNX_FILE, TOLERANCE, read_embedding_info
    from tritonllm.ensembles.embedding import EmbeddingEncoder, EmbeddingTokenizer, Rows

    fmt = next(iter(option.values()))
    result = build(BuildSettings(checkpoint=minilm, engine="onnx", out=tmp_path / fmt,
                                 **option))
    checks = result.manifest.checks
    abs_tol, cos_tol = TOLERANCE[fmt]
    assert checks["format"] == fmt == read_embedding_info(result.engine_dir)["format"]
    assert checks["max_abs_diff"] <= abs_tol and checks["min_cosine"] >= cos_tol

    texts = ["word", "Москва — столица России", "a longer sentence about rivers and cities"]
    tok = EmbeddingTokenizer(result.engine_dir / "tokenizer", MAX_TOKENS, 0)
    got = EmbeddingEncoder(result.engine_dir / ONNX_FILE).run(*tok.pad(tok.ids(Rows(texts, False))))
    assert got.dtype == np.float32
    assert cosines(got, reference(texts)).min() >= cos_tol
