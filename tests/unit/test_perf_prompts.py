"""Synthetic prompts have exactly the requested token counts (the real tiny tokenizer)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tritonllm.errors import ConfigError
from tritonllm.perf.prompts import (
    SyntheticPrompts,
    Tokenizer,
    find_tokenizer,
    load_dataset,
    make_prompts,
)


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Tokenizer:
    return Tokenizer(tiny_model)


def test_exact_token_counts(tok: Tokenizer) -> None:
    gen = SyntheticPrompts(tok)
    for n in [*range(1, 70), 128, 512, 1000]:
        for seed in range(3):
            text = gen.make(n, random.Random(seed))
            assert tok.count(text) == n, (n, text)
            assert text == text.strip()  # genai-perf strips prompts: keep counts stable there


def test_make_prompts_is_seeded_and_spread(tok: Tokenizer) -> None:
    a = make_prompts(tok, 50, 64, 16, seed=3)
    assert a == make_prompts(tok, 50, 64, 16, seed=3)
    assert a != make_prompts(tok, 50, 64, 16, seed=4)
    assert [tok.count(p.text) for p in a] == [p.input_tokens for p in a]
    lengths = [p.input_tokens for p in a]
    assert len(set(lengths)) > 10 and 50 < sum(lengths) / len(lengths) < 78
    assert len({p.text for p in a}) == 50


def test_count_many_equals_count(tok: Tokenizer) -> None:
    texts = ["hello world", "", "café 🙂 日本語", " x"]
    assert tok.count_many(texts) == [tok.count(t) for t in texts]


def test_dataset(tok: Tokenizer, tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join([json.dumps({"text": "hello world"}),
                            json.dumps({"text_input": ["the model"], "max_tokens": 7}), "",
                            json.dumps({"prompt": "stream", "output_tokens": 3})]))
    rows = load_dataset(f, tok)
    assert [(p.text, p.output_tokens) for p in rows] == [("hello world", None),
                                                         ("the model", 7), ("stream", 3)]
    assert rows[0].input_tokens == tok.count("hello world")
    for content, words in [("{", ":1: not JSON"), ("[1]", "JSON object"),
                           ('{"text": ""}', "no prompt"),
                           ('{"text": "a", "max_tokens": 0}', "positive integer"),
                           ("\n\n", "holds no prompts")]:
        f.write_text(content)
        with pytest.raises(ConfigError, match=words):
            load_dataset(f, tok)


def test_find_tokenizer(tmp_path: Path) -> None:
    assert find_tokenizer(tmp_path, None) == tmp_path
    (tmp_path / "tensorrt_llm/1/tokenizer").mkdir(parents=True)
    assert find_tokenizer(None, tmp_path) == tmp_path / "tensorrt_llm/1/tokenizer"
    with pytest.raises(ConfigError, match="--tokenizer DIR"):
        find_tokenizer(None, None)
    with pytest.raises(ConfigError, match="has no"):
        find_tokenizer(None, tmp_path / "tensorrt_llm")
    with pytest.raises(ConfigError, match="not a directory"):
        Tokenizer(tmp_path / "missing")
