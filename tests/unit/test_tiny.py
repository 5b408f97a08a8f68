"""The tiny-model kit: loadable by transformers, deterministic per seed, sane special tokens."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tritonllm.errors import ConfigError
from tritonllm.tiny import make_tiny_model


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_loads_with_auto_classes(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.architectures == ["LlamaForCausalLM"]
    assert model.config.vocab_size == len(tok)
    ids = tok("café 日本語 🙂").input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "café 日本語 🙂"
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    gen = json.loads((tiny_model / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tok.eos_token_id]
    assert gen["bos_token_id"] == tok.bos_token_id


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model: Path, tmp_path: Path) -> None:
    again = make_tiny_model(tmp_path / "again", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again / name) == _digest(tiny_model / name), name
    assert _digest(other / "model.safetensors") != _digest(tiny_model / "model.safetensors")


def test_tokenizer_splits_multibyte_characters(tiny_model: Path) -> None:
    # The detokenizer tests rely on byte pieces that are not valid UTF-8 on their own.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    pieces = [tok.decode([i]) for i in range(len(tok))]
    assert any("\ufffd" in p for p in pieces)


def test_unknown_size_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size: unknown size 'huge'"):
        make_tiny_model(tmp_path / "m", size="huge")
