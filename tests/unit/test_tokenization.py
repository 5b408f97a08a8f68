"""ensembles.tokenization against the real tiny tokenizer, with HF transformers as the reference."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from tritonllm.ensembles.tokenization import (
    SpecialIds,
    Tokenization,
    empty_word_list,
    load_tokenizer,
    max_token_bytes,
    pack_word_list,
    parse_word_list,
    read_special_ids,
)
from tritonllm.errors import CheckpointError

PROMPTS = ["hello world", "Café crème brûlée", "日本語 東京 推論", "🙂 🚀 ✨", "a", " lead"]


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Tokenization:
    return Tokenization.from_dir(tiny_model)


@pytest.fixture(scope="module")
def hf(tiny_model: Path):
    return AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)


def test_encode_batch_matches_transformers(tok: Tokenization, hf) -> None:
    assert tok.encode_batch(PROMPTS) == [hf.encode(p) for p in PROMPTS]
    for ids in tok.encode_batch(PROMPTS):
        assert ids[0] == hf.bos_token_id
        assert ids.count(hf.bos_token_id) == 1


def test_multibyte_prompts_round_trip(tok: Tokenization, hf) -> None:
    for prompt in PROMPTS:
        assert hf.decode(tok.encode(prompt), skip_special_tokens=True) == prompt


def test_no_double_bos_when_text_starts_with_bos(tok: Tokenization, hf) -> None:
    raw = hf.encode("<s>hello world")
    assert raw[:2] == [hf.bos_token_id, hf.bos_token_id]  # what the tokenizer alone does
    assert tok.encode("<s>hello world") == hf.encode("hello world")


def test_add_special_tokens_false_adds_no_bos(tiny_model: Path, hf) -> None:
    tok = Tokenization.from_dir(tiny_model, add_special_tokens=False)
    assert tok.encode("hello world") == hf.encode("hello world", add_special_tokens=False)
    # With BOS not added by us, a BOS written in the text is kept as written.
    assert tok.encode("<s>hi")[0] == hf.bos_token_id


def test_empty_batch_and_empty_text(tok: Tokenization, hf) -> None:
    assert tok.encode_batch([]) == []
    assert tok.encode("") == [hf.bos_token_id]


def test_special_ids_of_tiny_model(tok: Tokenization, hf) -> None:
    assert tok.special == SpecialIds(bos_id=hf.bos_token_id, end_ids=(hf.eos_token_id,),
                                     pad_id=hf.pad_token_id)
    assert tok.special.end_id == hf.eos_token_id
    assert tok.vocab_size == len(hf)


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", *names))
    return dst


def test_several_eos_ids_and_pad_fallback(tiny_model: Path, tmp_path: Path) -> None:
    d = _copy_without(tiny_model, tmp_path / "m")
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1,
                                                          "eos_token_id": [2, 7, 2, 9]}))
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("pad_token_id", None)
    (d / "config.json").write_text(json.dumps(cfg))
    ids = read_special_ids(d)  # no tokenizer: pad falls back to the first eos
    assert ids.end_ids == (2, 7, 9)
    assert ids.end_id == 2
    assert ids.pad_id == 2


def test_special_ids_fall_back_to_config_then_tokenizer(tiny_model: Path, tmp_path: Path) -> None:
    d = _copy_without(tiny_model, tmp_path / "m", "generation_config.json")
    cfg = json.loads((d / "config.json").read_text())
    cfg["eos_token_id"] = 5
    (d / "config.json").write_text(json.dumps(cfg))
    assert read_special_ids(d).end_ids == (5,)
    cfg.pop("eos_token_id")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="eos_token_id"):
        read_special_ids(d)
    tokenizer = load_tokenizer(d)
    assert read_special_ids(d, tokenizer).end_ids == (tokenizer.eos_token_id,)


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "empty")


def test_word_list_layout_matches_official_format(tok: Tokenization, hf) -> None:
    a = hf.encode("hello", add_special_tokens=False)
    b = hf.encode(" world", add_special_tokens=False)
    c = hf.encode("日本語", add_special_tokens=False)
    out = tok.word_list_layout([["hello", " world"], [b"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"]])
    width = max(len(a) + len(b), len(c))
    assert out.dtype == np.int32
    assert out.shape == (2, 2, width)
    row0_ids = a + b + [0] * (width - len(a) - len(b))
    row0_offs = [len(a), len(a) + len(b)] + [-1] * (width - 2)
    row1_ids = c + [0] * (width - len(c))
    row1_offs = [len(c)] + [-1] * (width - 1)
    assert out.tolist() == [[row0_ids, row0_offs], [row1_ids, row1_offs]]


def test_word_list_layout_edge_cases(tok: Tokenization) -> None:
    assert tok.word_list_layout(None).shape == (1, 2, 0)
    assert tok.word_list_layout(None, batch_size=3).shape == (3, 2, 0)
    # Words that encode to nothing are dropped; an all-empty batch still has width 1.
    assert tok.word_list_layout([[""]]).tolist() == [[[0], [-1]]]
    assert tok.word_list_layout([[]]).tolist() == [[[0], [-1]]]
    assert empty_word_list(2).dtype == np.int32
    with pytest.raises(UnicodeDecodeError):
        tok.word_list_layout([[b"\xff\xfe"]])


def test_word_ids_never_contain_bos(tok: Tokenization, hf) -> None:
    out = tok.word_list_layout([["hello", "<s>"]])
    words = parse_word_list(out)[0]
    assert words[0] == hf.encode("hello", add_special_tokens=False)
    assert words[1] == [hf.bos_token_id]  # only because the word itself is the BOS text


def test_parse_word_list_inverts_pack_on_random_lists() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        batch = [
            [[rng.randrange(1000) for _ in range(rng.randint(1, 5))]
             for _ in range(rng.randint(0, 4))]
            for _ in range(rng.randint(1, 4))
        ]
        packed = pack_word_list(batch)
        assert packed.shape[:2] == (len(batch), 2)
        assert parse_word_list(packed) == batch
        assert parse_word_list(packed[0]) == batch[:1]  # [2, n] form


def test_parse_word_list_accepts_empty_and_skips_repeated_offsets() -> None:
    assert parse_word_list(np.empty((1, 2, 0), np.int32)) == [[]]
    arr = np.array([[[5, 6, 7, 0], [1, 1, 3, -1]]], dtype=np.int32)
    assert parse_word_list(arr) == [[[5], [6, 7]]]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((1, 2, 3), np.float32), "integer"),
        (np.zeros((1, 3, 3), np.int32), "shape"),
        (np.zeros((4,), np.int32), "shape"),
        (np.array([[[5, 6], [2, 1]]], np.int32), "out of order"),
        (np.array([[[5, 6], [3, -1]]], np.int32), "past"),
    ],
)
def test_parse_word_list_rejects_bad_arrays(array, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_word_list(array)


# --- the prompt byte bound ---------------------------------------------------------------------

def test_max_token_bytes_bounds_every_prompt_of_the_tiny_tokenizer(tok: Tokenization) -> None:
    per_token = tok.max_token_bytes
    assert per_token is not None and 2 <= per_token <= 64
    rng = random.Random(3)
    pieces = [" smörgåsbord", " Привет", "日本語", "🙂", "\n", "  ", "xyzzy", "\x00", "<s>"]
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        ids = tok.encode_words([text])[0]
        assert len(text.encode()) <= per_token * len(ids), text


def _fast(normalizer=None, pre_tokenizer=None, **model: object):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "▁": 4, "abab": 5}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), ("ab", "ab")], **model))
    if normalizer is not None:
        backend.normalizer = normalizer
    if pre_tokenizer is not None:
        backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_max_token_bytes_follows_what_the_tokenizer_does_to_text() -> None:
    from tokenizers import normalizers as n
    from tokenizers import pre_tokenizers as p

    plain = max_token_bytes(_fast())
    assert plain == len("<unk>") + 1  # the longest token, +1 for a dropped word-start space
    # Llama 2 / Mistral style: spaces become "▁" (never shorter)
    spm = _fast(n.Sequence([n.Prepend("▁"), n.Replace(" ", "▁")]), p.Metaspace())
    assert max_token_bytes(spm) == plain
    assert max_token_bytes(_fast(n.NFC())) == 3 * plain  # composition: up to 3 bytes -> 1
    assert max_token_bytes(_fast(n.Sequence([n.NFKC(), n.Lowercase()]))) == 9 * plain
    # text that can vanish gives no bound
    assert max_token_bytes(_fast(n.StripAccents())) is None
    assert max_token_bytes(_fast(n.Replace("x", ""))) is None
    assert max_token_bytes(_fast(pre_tokenizer=p.Whitespace())) is None
    assert max_token_bytes(_fast(pre_tokenizer=p.Split("x", "removed"))) is None
    assert max_token_bytes(_fast(unk_token="<unk>", fuse_unk=True)) is None  # a run -> one <unk>
    assert max_token_bytes(_fast(unk_token="<unk>", fuse_unk=True, byte_fallback=True)) == plain
    assert max_token_bytes(object()) is None  # not a fast tokenizer  # type: ignore[arg-type]
