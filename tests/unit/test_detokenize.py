"""Incremental detokenizing: streamed deltas must concatenate to exactly the one-shot decode.

References: ``tokenizer.decode(all_ids)`` from HF transformers, on the tiny byte-level BPE
tokenizer (whose corpus has accents, CJK and emoji, so characters split across byte tokens) and
on a SentencePiece-style tokenizer (``▁`` pieces, byte fallback, leading space stripped) trained
here. Id sequences are random with fixed seeds, so a failure reproduces.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tritonllm.ensembles.detokenize import IncrementalDetokenizer, decode, decode_tokens_batch

TEXTS = [
    "Café crème brûlée, naïve façade.",
    "日本語 東京 学習 推論 中文 模型",
    "🙂 🚀 ✨ 🔥 — … « » € ½ π ∑ ≤ ≥",
    "Привет мир, 한국어 서버!",
    "hello world isn't it? I'm here , they 're there .",
]


@pytest.fixture(scope="module")
def hf(tiny_model: Path):
    return AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)


@pytest.fixture(scope="module")
def hf_cleanup(tiny_model: Path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)
    tok.clean_up_tokenization_spaces = True
    return tok


@pytest.fixture(scope="module")
def sentencepiece_like() -> PreTrainedTokenizerFast:
    """A Llama-2-style tokenizer: ▁ word pieces, byte fallback for anything non-ASCII."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=40,
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz▁"), show_progress=False,
    )
    corpus = ["the quick brown fox jumps over the lazy dog", "hello world, this is a test.",
              "model server request token stream batch engine"] * 50
    tok.train_from_iterator(corpus, trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]}
    fast = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=fast, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def _stream(tokenizer, ids: list[int], chunks: list[int], final: str, **options) -> list[str]:
    """Push ``ids`` in chunks of the given sizes; check every prefix property on the way."""
    detok = IncrementalDetokenizer(tokenizer, **options)
    deltas: list[str] = []
    pos = 0
    for size in chunks:
        deltas.append(detok.push(ids[pos : pos + size]))
        pos += size
        assert final.startswith("".join(deltas)), (ids, deltas)
    deltas.append(detok.push(ids[pos:]))
    deltas.append(detok.finish())
    assert "".join(deltas) == final, (ids, deltas, final)
    assert detok.text == final
    assert detok.ids == tuple(ids)
    return deltas


# Pieces that exercise the clean-up patterns (" .", " n't", " ' ", ...) more often than chance.
TRICKY = [" .", " ?", " !", " ,", " '", " ' ", "'", " n", "n't", " 's", "ve", "re", "m", " ", "  "]


def _random_case(
    rng: random.Random, vocab: int, n_special: int, tricky: list[int]
) -> tuple[list[int], list[int]]:
    n = rng.randint(0, 40)
    ids = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            ids.append(rng.randrange(n_special))
        elif r < 0.35:
            ids.append(rng.choice(tricky))
        else:
            ids.append(rng.randrange(n_special, vocab))
    chunks = [rng.choice([0, 1, 1, 1, 2, 3]) for _ in range(n)]
    return ids, chunks


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("name", ["hf", "hf_cleanup", "sentencepiece_like"])
def test_random_ids_stream_to_exact_decode(request, name: str, skip: bool) -> None:
    tokenizer = request.getfixturevalue(name)
    rng = random.Random(f"{name}-{skip}")
    tricky = [i for t in TRICKY for i in tokenizer.encode(t, add_special_tokens=False)]
    n_special = 3 if name == "sentencepiece_like" else 4
    for _ in range(400):
        ids, chunks = _random_case(rng, len(tokenizer), n_special, tricky)
        final = tokenizer.decode(ids, skip_special_tokens=skip)
        assert decode(tokenizer, ids, skip_special_tokens=skip) == final
        _stream(tokenizer, ids, chunks, final, skip_special_tokens=skip)


@pytest.mark.parametrize("name", ["hf", "hf_cleanup", "sentencepiece_like"])
def test_multibyte_text_streams_one_token_at_a_time(request, name: str) -> None:
    tokenizer = request.getfixturevalue(name)
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        final = tokenizer.decode(ids, skip_special_tokens=True)
        deltas = _stream(tokenizer, ids, [1] * len(ids), final)
        assert "\ufffd" not in "".join(deltas)  # split characters were held, never sent broken


def test_ascii_text_is_not_held_back(hf) -> None:
    ids = hf.encode("hello world model server", add_special_tokens=False)
    detok = IncrementalDetokenizer(hf)
    assert [detok.push([i]) for i in ids] == [hf.decode([i]) for i in ids]
    assert detok.finish() == ""


def test_split_character_is_held_until_complete(hf) -> None:
    # "日" is three UTF-8 bytes; fed as its three byte-level tokens, nothing shows until the last.
    singles = [hf.convert_tokens_to_ids(t) for t in _byte_tokens("日")]
    assert len(set(singles)) == 3 and hf.unk_token_id not in singles
    detok = IncrementalDetokenizer(hf)
    assert [detok.push([i]) for i in singles] == ["", "", "日"]
    assert detok.finish() == ""


def _byte_tokens(char: str) -> list[str]:
    """The byte-level token of each UTF-8 byte of ``char`` (GPT-2 byte-to-unicode map)."""
    mapping = _bytes_to_unicode()
    return [mapping[b] for b in char.encode("utf-8")]


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def test_incomplete_tail_is_flushed_as_replacement_char(hf) -> None:
    first_byte = hf.convert_tokens_to_ids(_byte_tokens("日")[0])
    a = hf.encode("a", add_special_tokens=False)
    detok = IncrementalDetokenizer(hf)
    assert detok.push(a) == "a"
    assert detok.push([first_byte]) == ""
    assert detok.finish() == "\ufffd"
    assert detok.text == hf.decode([*a, first_byte])


def test_leading_space_pieces(sentencepiece_like) -> None:
    tok = sentencepiece_like
    ids = tok.encode("hello world", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids)[0].startswith("▁")
    detok = IncrementalDetokenizer(tok)
    out = [detok.push([i]) for i in ids] + [detok.finish()]
    assert "".join(out) == tok.decode(ids) == "hello world"
    assert " world" in out or any(d.startswith(" ") for d in out[1:])


def test_special_tokens_skipped_or_kept(hf) -> None:
    ids = [hf.bos_token_id, *hf.encode("hi", add_special_tokens=False), hf.eos_token_id]
    for skip, expected in [(True, "hi"), (False, "<s>hi</s>")]:
        detok = IncrementalDetokenizer(hf, skip_special_tokens=skip)
        assert "".join(detok.push([i]) for i in ids) + detok.finish() == expected


def test_cleanup_holds_back_a_trailing_space(hf_cleanup) -> None:
    ids = hf_cleanup.encode("dog .", add_special_tokens=False)
    detok = IncrementalDetokenizer(hf_cleanup)
    deltas = [detok.push([i]) for i in ids] + [detok.finish()]
    assert "".join(deltas) == hf_cleanup.decode(ids) == "dog."
    plain = IncrementalDetokenizer(hf_cleanup, clean_up_tokenization_spaces=False)
    assert "".join(plain.push([i]) for i in ids) + plain.finish() == "dog ."


def test_push_after_finish_and_double_finish(hf) -> None:
    detok = IncrementalDetokenizer(hf)
    detok.push(np.array([[70, 68]], dtype=np.int32))  # any array shape is flattened
    assert detok.finish() == ""
    assert detok.finished
    assert detok.finish() == ""
    with pytest.raises(RuntimeError, match="finish"):
        detok.push([70])


def test_decode_tokens_batch_matches_per_beam_decode(hf) -> None:
    rng = np.random.default_rng(7)
    tokens = rng.integers(4, len(hf), size=(3, 2, 9), dtype=np.int32)
    lengths = rng.integers(0, 10, size=(3, 2), dtype=np.int32)
    out = decode_tokens_batch(hf, tokens, lengths)
    expected = [hf.decode(tokens[b, k, : lengths[b, k]].tolist(), skip_special_tokens=True)
                for b in range(3) for k in range(2)]
    assert out == expected


@pytest.mark.parametrize(
    ("tokens", "lengths", "message"),
    [
        (np.zeros((1, 5), np.int32), np.zeros((1, 1), np.int32), "expected"),
        (np.zeros((1, 1, 5), np.int32), np.zeros((2, 1), np.int32), "expected"),
        (np.zeros((1, 1, 5), np.int32), np.array([[6]], np.int32), "outside"),
        (np.zeros((1, 1, 5), np.int32), np.array([[-1]], np.int32), "outside"),
    ],
)
def test_decode_tokens_batch_rejects_bad_shapes(hf, tokens, lengths, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_tokens_batch(hf, tokens, lengths)


def test_byte_fallback_run_is_held_until_a_normal_token(sentencepiece_like) -> None:
    tok = sentencepiece_like
    newline = tok.convert_tokens_to_ids("<0x0A>")
    smile = [tok.convert_tokens_to_ids(f"<0x{b:02X}>") for b in "🙂".encode()]
    word = tok.encode("the", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok)
    # A valid byte run can still turn into U+FFFDs if a stray byte joins it, so it waits.
    assert detok.push([newline]) == ""
    assert [detok.push([i]) for i in smile] == ["", "", "", ""]
    assert detok.push(word) == tok.decode([newline, *smile, *word])
    stray = IncrementalDetokenizer(tok)
    assert stray.push([newline]) == ""
    assert stray.push([smile[1]]) == ""
    assert stray.finish() == tok.decode([newline, smile[1]]) == "\ufffd\ufffd"
