"""The embedding model's request logic (tritonllm.ensembles.embedding) without a server:
field errors, and the length grouping of a batch checked against one text at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonllm.contract import EMB_IN
from tritonllm.ensembles.embedding import MAX_PADDING, Rows, length_groups, read_rows
from tritonllm.ensembles.requests import RequestError


def texts(*items: Any) -> dict[str, Any]:
    return {EMB_IN.text: np.array(items, dtype=np.object_).reshape(-1, 1)}


@pytest.mark.parametrize(("inputs", "field", "says"), [
    ({}, "text", "missing"),
    (texts(b"ok", b""), "text[1]", "empty text"),
    (texts(b"ok", "not bytes"), "text[1]", "expected bytes"),
    (texts(b"\xe2\x82"), "text[0]", "not valid UTF-8 (byte 0)"),
    (texts(b"x" * 11), "text[0]", "11 bytes, more than 10"),
    ({EMB_IN.text: np.zeros((2, 1), np.int32)}, "text", "expected STRING"),
    ({EMB_IN.text: np.array([b"a", b"b"], dtype=np.object_)}, "text", "shape [rows, 1]"),
    ({**texts(b"a", b"b"), EMB_IN.truncate: np.array([[True], [False]])}, "truncate",
     "the same for every text"),
    ({**texts(b"a"), EMB_IN.truncate: np.array([[1]], np.int32)}, "truncate", "expected BOOL"),
])
def test_read_rows_names_the_bad_field(inputs: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(RequestError) as e:
        read_rows(inputs, max_text_bytes=10)
    assert str(e.value).startswith(f"{field}: ") and says in str(e.value), str(e.value)


def test_read_rows_reads_texts_and_truncate() -> None:
    rows = read_rows({**texts("café".encode(), b"b"), EMB_IN.truncate: np.array([[True]] * 2)},
                     max_text_bytes=10)
    assert rows == Rows(["café", "b"], True)
    assert read_rows(texts(b"a"), 10).truncate is False


@pytest.mark.parametrize("lengths", [
    [5], [7, 7, 7], [3, 40, 4, 41, 200, 5, 39, 198, 6], list(range(1, 80)), [256] * 5 + [2] * 5,
])
def test_length_groups_cover_every_text_once_with_bounded_padding(lengths: list[int]) -> None:
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        longest, real = max(lengths[i] for i in g), sum(lengths[i] for i in g)
        assert len(g) == 1 or len(g) * longest <= MAX_PADDING * real
    assert len(groups) <= len(set(lengths))  # texts of one length always share a call


def test_encode_in_groups_equals_one_text_at_a_time(onnx_engine: Path) -> None:
    """The real MiniLM ONNX file: a mixed batch encoded in length groups gives each text the
    vector it gets alone (so grouping changes the cost, not the answer)."""
    from tritonllm.builders.onnx import ONNX_FILE
    from tritonllm.ensembles.embedding import EmbeddingEncoder, EmbeddingTokenizer, encode

    tok = EmbeddingTokenizer(onnx_engine / "tokenizer", 256, 0)
    enc = EmbeddingEncoder(onnx_engine / ONNX_FILE)
    batch = ["a", "a much longer text about the river that runs through the old city " * 4,
             "two words", "Москва 東京 🙂", "a", "medium sized sentence of some words"]
    ids = tok.ids(Rows(batch, False))
    assert len(length_groups([len(x) for x in ids])) > 1
    alone = np.concatenate([enc.run(*tok.pad([x])) for x in ids])
    np.testing.assert_allclose(encode(tok, enc, ids), alone, atol=1e-5)
    # One group, its texts not in length order: still the batch's order out.
    close = tok.ids(Rows(["three short words", "two words", "four words in here"], False))
    assert len(length_groups([len(x) for x in close])) == 1
    np.testing.assert_allclose(encode(tok, enc, close),
                               np.concatenate([enc.run(*tok.pad([x])) for x in close]),
                               atol=1e-5)
