"""The sans-IO half of ``embed()`` (tritonllm.client._embed): texts checked and named, requests
split at the model's max_batch_size and shaped by the contract, responses read, the server's
row indices mapped back to the caller's. No server (tests/integration/test_client_embed.py
drives the real one)."""

from __future__ import annotations

import numpy as np
import pytest

from tritonllm.client import Embeddings, InvalidRequest, ModelNotFound, ServerError, Unavailable
from tritonllm.client._embed import EmbedChunk, EmbedPlan, check_texts, max_rows, plan_embed
from tritonllm.client._logic import json_outputs
from tritonllm.contract import EMB_IN, EMB_OUT, EMBEDDING, EMBEDDING_CONTRACT


def plan(texts: object, truncate: bool = False, field: str = "texts") -> EmbedPlan:
    return plan_embed(30.0, texts, model=EMBEDDING, truncate=truncate, timeout=..., field=field)


@pytest.mark.parametrize("texts, message", [
    ([], "texts: empty"),
    ((), "texts: empty"),
    (["a", "b", "c", 4], "texts[3]: expected str, got int"),
    (["a", b"b"], "texts[1]: expected str, got bytes"),
    (["a", "b", ""], "texts[2]: empty text"),
    ("", "texts: empty text"),
    (["ok", "ab\ud800"], "texts[1]: not encodable as UTF-8 (a lone surrogate at character 2)"),
    (7, "texts: expected a str or a sequence of str, got int"),
    (b"abc", "texts: expected a str or a sequence of str, got bytes"),
    ({"a": 1}, "texts: expected a str or a sequence of str, got dict"),
])
def test_bad_texts_are_refused_naming_the_field(texts: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        plan(texts)
    assert str(e.value) == message


def test_the_field_name_is_the_callers() -> None:
    with pytest.raises(InvalidRequest, match=r"^input\[1\]: empty text$"):
        check_texts(["x", ""], field="input")
    with pytest.raises(InvalidRequest, match=r"^truncate: expected True or False"):
        plan(["x"], truncate="yes")  # type: ignore[arg-type]


def test_one_string_is_one_text_and_timeouts_resolve() -> None:
    assert plan("hello").texts == ("hello",)
    assert plan(["a", "b"]).timeout == 30.0  # ...: the client's default
    assert plan_embed(30.0, "a", model="m", truncate=False, timeout=None).timeout is None
    assert plan_embed(30.0, "a", model="m", truncate=False, timeout=2.5).timeout == 2.5


def test_max_rows_reads_both_config_shapes() -> None:
    assert max_rows({"config": {"name": "embedding", "max_batch_size": 4}}, EMBEDDING) == 4
    assert max_rows({"name": "embedding", "max_batch_size": "64"}, EMBEDDING) == 64  # HTTP
    with pytest.raises(InvalidRequest, match="does not batch"):
        max_rows({"config": {"name": "embedding"}}, EMBEDDING)  # protobuf JSON drops a 0


def test_chunks_keep_order_and_follow_the_contract() -> None:
    texts = [f"text {i} é" for i in range(10)]
    chunks = plan(texts).chunks(4)
    assert [(c.offset, c.rows) for c in chunks] == [(0, 4), (4, 4), (8, 2)]
    assert len({c.spec.request_id for c in chunks}) == 3
    text = EMBEDDING_CONTRACT.input(EMB_IN.text)
    for c in chunks:
        assert c.spec.model == EMBEDDING and not c.spec.stream
        (t,) = c.spec.inputs  # truncate is sent only when true
        assert (t.name, t.wire_dtype, t.value.shape) == (text.name, "BYTES", (c.rows, 1))
        assert [v.decode() for v in t.value[:, 0]] == texts[c.offset:c.offset + c.rows]
    cut = plan(texts, truncate=True).chunks(4)[2].spec
    flag = cut.inputs[1]
    assert (flag.name, flag.wire_dtype, flag.value.shape) == (EMB_IN.truncate, "BOOL", (2, 1))
    assert flag.value.all()
    with pytest.raises(ValueError):
        plan(texts).chunks(0)


def test_the_http_body_round_trips_through_json_outputs() -> None:
    spec = plan(["a", "b"], truncate=True).chunks(4)[0].spec
    body = spec.infer_body()
    assert body["id"] == spec.request_id
    assert body["inputs"] == [
        {"name": EMB_IN.text, "shape": [2, 1], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": EMB_IN.truncate, "shape": [2, 1], "datatype": "BOOL", "data": [True, True]}]
    back = json_outputs({"outputs": [
        {"name": EMB_OUT.embedding, "datatype": "FP32", "shape": [2, 3],
         "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
        {"name": EMB_OUT.num_tokens, "datatype": "INT32", "shape": [2, 1], "data": [3, 4]},
        {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["x"]}]})
    assert back[EMB_OUT.embedding].dtype == np.float32
    assert back[EMB_OUT.embedding].shape == (2, 3)
    assert back[EMB_OUT.num_tokens].tolist() == [[3], [4]]
    assert back["s"].tolist() == [b"x"]
    with pytest.raises(ValueError, match="datatype"):
        json_outputs({"outputs": [{"name": "x", "datatype": "FP8", "shape": [1], "data": [0]}]})


def outputs(rows: int, dim: int = 3, start: float = 0.0) -> dict[str, np.ndarray]:
    vec = (np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) + start) / 7
    return {EMB_OUT.embedding: vec,
            EMB_OUT.num_tokens: np.arange(1, rows + 1, dtype=np.int32).reshape(rows, 1)}


def test_parts_make_one_result_in_the_callers_order() -> None:
    p = plan([f"t{i}" for i in range(6)])
    chunks = p.chunks(4)
    parts = [p.read(c, outputs(c.rows, start=c.offset * 100)) for c in chunks]
    e = p.result(parts)
    assert isinstance(e, Embeddings)
    assert len(e) == 6 and e.dimension == 3 and e.model == EMBEDDING
    assert e.num_tokens == [1, 2, 3, 4, 1, 2] and e.prompt_tokens == 13
    want = np.concatenate([outputs(4)[EMB_OUT.embedding],
                           outputs(2, start=400)[EMB_OUT.embedding]])
    assert np.array_equal(e.numpy(), want)  # float32 -> Python float -> float32: exact
    assert e.numpy().dtype == np.float32
    assert e[4] == want[4].tolist() and list(e) == e.vectors and e[1:3] == e.vectors[1:3]
    assert all(type(x) is float for x in e[0])


@pytest.mark.parametrize("bad, message", [
    ({EMB_OUT.num_tokens: np.ones((2, 1), np.int32)}, "no embedding output"),
    ({EMB_OUT.embedding: np.ones((2, 3), np.float32)}, "no num_tokens output"),
    ({EMB_OUT.embedding: np.ones((3, 3), np.float32),
      EMB_OUT.num_tokens: np.ones((2, 1), np.int32)}, r"shape \[3, 3\], expected \[2, "),
    ({EMB_OUT.embedding: np.ones((2, 3), np.float32),
      EMB_OUT.num_tokens: np.ones((3, 1), np.int32)}, "3 values for 2 texts"),
])
def test_a_response_off_the_contract_is_a_server_error(bad: dict[str, np.ndarray],
                                                       message: str) -> None:
    p = plan(["a", "b"])
    with pytest.raises(ServerError, match=message):
        p.read(p.chunks(4)[0], bad)


def test_vectors_of_different_lengths_are_a_server_error() -> None:
    p = plan(["a", "b"])
    c0, c1 = p.chunks(1)
    with pytest.raises(ServerError, match="different lengths"):
        p.result([p.read(c0, outputs(1, dim=3)), p.read(c1, outputs(1, dim=4))])


def test_server_rows_become_the_callers_indices() -> None:
    p = plan([f"t{i}" for i in range(10)])
    chunk = p.chunks(4)[2]  # texts 8 and 9
    assert isinstance(chunk, EmbedChunk) and chunk.offset == 8
    server = InvalidRequest("text[1]: 402 tokens, more than the model's 256 (send "
                            "truncate=true to cut it to 256)", request_id="r", status=
                            "INVALID_ARGUMENT")
    mapped = p.error(chunk, server)
    assert type(mapped) is InvalidRequest
    assert str(mapped).startswith("texts[9]: 402 tokens, more than the model's 256")
    assert mapped.status == "INVALID_ARGUMENT" and mapped.__cause__ is server
    front = plan(["a", "b", "c", "d", "e"], field="input")
    assert str(front.error(front.chunks(2)[1], InvalidRequest("text[0]: empty text"))) == \
        "input[2]: empty text"
    # A row the chunk does not have, other fields, other errors: unchanged.
    for err in (InvalidRequest("text[7]: empty text"), InvalidRequest("truncate: one value"),
                InvalidRequest("context[0]: x"), ModelNotFound("unknown model: text[0]"),
                Unavailable("text[0]: down")):
        assert p.error(chunk, err) is err
