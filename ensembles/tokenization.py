"""Prompt tokenizing, end/pad ids and the stop/bad word-list tensor layout.

This is the logic of the ``preprocessing`` model (and of the BLS model's preprocessing step),
without any Triton import, so it is unit-tested against the real tokenizer.

Contracts, matching NVIDIA's ``inflight_batcher_llm/preprocessing`` model:

* Prompts are encoded with the tokenizer's own special-token rules (``add_special_tokens=True``
  by default, as the official ``add_special_tokens`` parameter defaults to true), so BOS is added
  exactly when the tokenizer config says so. A prompt whose text already starts with the BOS
  token (a rendered chat template, for instance) does not get a second one.
* ``END_ID`` / ``PAD_ID`` defaults come from ``generation_config.json`` (then ``config.json``, then
  the tokenizer). ``eos_token_id`` may be a list (Llama 3): the first is the end id, all of them are
  kept in :attr:`SpecialIds.end_ids`. The pad id falls back to the first end id.
* :attr:`Tokenization.max_token_bytes` bounds how many UTF-8 bytes of prompt text one token can
  stand for, so the preprocessing refuses a prompt too long for ``max_input_len`` tokens from its
  byte count alone, before tokenizing it (see :func:`max_token_bytes`).
* Stop and bad words use the ``[batch, 2, max_len]`` INT32 layout: row 0 holds every word's ids
  flattened, row 1 the cumulative end offset of each word; row 0 is padded with 0 and row 1 with
  -1, both to the longest flattened length in the batch (at least 1). Each word is encoded on its
  own, without special tokens; a word that encodes to nothing is dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tritonllm.errors import CheckpointError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "SpecialIds",
    "Tokenization",
    "empty_word_list",
    "load_tokenizer",
    "max_token_bytes",
    "pack_word_list",
    "parse_word_list",
    "read_special_ids",
]

WordIds = list[list[int]]  # the words of one request, each a list of token ids


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the Hugging Face tokenizer saved in directory ``path``.

    Local files only and no remote code: a tokenizer that needs either is refused.
    Raises CheckpointError when the directory holds no loadable tokenizer.
    """
    from transformers import AutoTokenizer

    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: tokenizer directory does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(root), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{root}: cannot load tokenizer: {exc}") from exc
    return tokenizer


@dataclass(frozen=True)
class SpecialIds:
    """The ids a request defaults to when it names none.

    ``end_ids`` is never empty; ``end_id`` is its first element (the one ``END_ID`` carries);
    the others are further end-of-sequence ids an engine should also stop on.
    """

    bos_id: int | None
    end_ids: tuple[int, ...]
    pad_id: int

    def __post_init__(self) -> None:
        if not self.end_ids:
            raise CheckpointError("no end-of-sequence id: set eos_token_id in "
                                  "generation_config.json")

    @property
    def end_id(self) -> int:
        """The default ``END_ID``."""
        return self.end_ids[0]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _ids(value: object) -> tuple[int, ...]:
    """An id field as a tuple: int -> (int,), list of ints -> tuple, anything else -> ()."""
    if isinstance(value, bool):
        return ()
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))
    return ()


def read_special_ids(
    path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
) -> SpecialIds:
    """Default BOS / end / pad ids of the checkpoint (or tokenizer) directory ``path``.

    Each id is looked up in ``generation_config.json``, then ``config.json``, then the tokenizer
    (when given). Raises CheckpointError when no end id is found anywhere.
    """
    root = Path(path)
    sources: list[dict[str, Any]] = [
        _read_json(root / "generation_config.json"),
        _read_json(root / "config.json"),
    ]
    if tokenizer is not None:
        sources.append(
            {
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            }
        )

    def first(key: str) -> tuple[int, ...]:
        for source in sources:
            found = _ids(source.get(key))
            if found:
                return found
        return ()

    bos = first("bos_token_id")
    end_ids = tuple(dict.fromkeys(first("eos_token_id")))  # de-duplicated, order kept
    if not end_ids:
        raise CheckpointError(f"{root}: no eos_token_id in generation_config.json, config.json "
                              "or the tokenizer")
    pad = first("pad_token_id")
    return SpecialIds(bos_id=bos[0] if bos else None, end_ids=end_ids,
                      pad_id=pad[0] if pad else end_ids[0])


class Tokenization:
    """A loaded tokenizer with the encoding rules of the preprocessing model.

    Thread-safe for concurrent ``encode*`` calls (the Rust tokenizer is). Build it with
    :meth:`from_dir`, or from an already loaded tokenizer and its :class:`SpecialIds`.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        special: SpecialIds,
        *,
        add_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.special = special
        self.add_special_tokens = add_special_tokens
        # Whether encoding adds a leading BOS: ask the tokenizer instead of guessing from config.
        probe = self._encode_raw([""], add_special_tokens)[0]
        self._adds_bos = bool(probe) and special.bos_id is not None and probe[0] == special.bos_id

    @classmethod
    def from_dir(cls, path: str | Path, *, add_special_tokens: bool = True) -> Tokenization:
        """Load the tokenizer and the default ids from checkpoint directory ``path``."""
        tokenizer = load_tokenizer(path)
        return cls(tokenizer, read_special_ids(path, tokenizer),
                   add_special_tokens=add_special_tokens)

    @cached_property
    def max_token_bytes(self) -> int | None:
        """The most prompt bytes one token can stand for (None: no bound); see
        :func:`max_token_bytes`. Computed on first use (once per model load)."""
        return max_token_bytes(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce, added tokens included."""
        return len(self.tokenizer)

    def _encode_raw(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=add_special_tokens)
        return [list(map(int, ids)) for ids in encoded["input_ids"]]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, with BOS added as the tokenizer config says, never twice."""
        out = self._encode_raw(texts, self.add_special_tokens)
        if self._adds_bos:
            bos = self.special.bos_id
            for ids in out:
                if len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
                    del ids[0]
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of one prompt (see :meth:`encode_batch`)."""
        return self.encode_batch([text])[0]

    def encode_words(self, words: Sequence[str | bytes]) -> WordIds:
        """Ids of each stop/bad word, encoded alone without special tokens; empty ones dropped.

        Raises UnicodeDecodeError for a ``bytes`` word that is not UTF-8.
        """
        texts = [w.decode("utf-8") if isinstance(w, bytes) else w for w in words]
        return [ids for ids in self._encode_raw(texts, False) if ids]

    def word_list_layout(
        self, words_per_request: Sequence[Sequence[str | bytes]] | None, batch_size: int = 1
    ) -> npt.NDArray[np.int32]:
        """The ``[batch, 2, max_len]`` INT32 stop/bad words tensor for these words.

        ``None`` (the optional input is absent) gives ``[batch_size, 2, 0]``, as the official
        preprocessing does; otherwise ``batch_size`` is ignored and the batch is
        ``len(words_per_request)``.
        """
        if words_per_request is None:
            return empty_word_list(batch_size)
        return pack_word_list([self.encode_words(words) for words in words_per_request])


# How much a normalizer can shrink text (input bytes per output byte), by its type. NFC/NFKC and
# lowercasing map at most 3 UTF-8 bytes to 1 (three Hangul jamo to a syllable; the Kelvin sign or
# a fullwidth letter to ASCII). A type not listed (StripAccents, Strip, BertNormalizer,
# Precompiled, ...) may delete characters: no bound.
_NORMALIZER_SHRINK = {"NFC": 3.0, "NFD": 3.0, "NFKC": 3.0, "NFKD": 3.0, "Lowercase": 3.0,
                      "Prepend": 1.0}
# Pre-tokenizers that keep every character (Whitespace, WhitespaceSplit, BertPreTokenizer and
# CharDelimiterSplit drop separators); Split and Punctuation keep them unless "Removed".
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Digits", "UnicodeScripts", "Split",
                           "Punctuation", "Sequence"}


def _normalizer_shrink(spec: Mapping[str, Any] | None) -> float | None:
    if spec is None:
        return 1.0
    kind = spec.get("type")
    if kind == "Sequence":
        total = 1.0
        for part in spec.get("normalizers", []):
            factor = _normalizer_shrink(part)
            if factor is None:
                return None
            total *= factor
        return total
    if kind == "Replace":
        pattern, content = spec.get("pattern", {}), str(spec.get("content", ""))
        if "String" in pattern and content:  # a fixed string for a non-empty one
            return max(1.0, len(str(pattern["String"]).encode()) / len(content.encode()))
        return None  # a regex, or a deletion
    return _NORMALIZER_SHRINK.get(str(kind))


def _pre_tokenizer_keeps_text(spec: Mapping[str, Any] | None) -> bool:
    if spec is None:
        return True
    kind = spec.get("type")
    if kind not in _KEEPING_PRE_TOKENIZERS or spec.get("behavior") == "Removed":
        return False
    return all(_pre_tokenizer_keeps_text(p) for p in spec.get("pretokenizers", []))


def _model_covers_bytes(spec: Mapping[str, Any]) -> bool:
    """Whether every token of the model stands for its own text: no token swallows an unknown
    stretch of any length (a fused ``<unk>`` run, a WordPiece or WordLevel unknown word)."""
    kind = spec.get("type")
    if kind == "BPE":
        return bool(spec.get("byte_fallback")) or not (spec.get("unk_token")
                                                         and spec.get("fuse_unk"))
    if kind == "Unigram":
        return bool(spec.get("byte_fallback")) or spec.get("unk_id") is None
    return False


def max_token_bytes(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The most UTF-8 bytes of prompt text that one token of ``tokenizer`` can stand for.

    A prompt of more than ``max_input_len`` × this many bytes cannot encode to ``max_input_len``
    tokens or fewer, so it can be refused without tokenizing it. The bound is the longest token
    of the vocabulary, each decoded alone (+1 for a word-start space a decoder drops), times how
    much the tokenizer's normalizer can shrink text (3 for Unicode normalization or lowercasing).
    It holds for byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece BPE (Llama 2, Mistral):
    every input byte is covered by some token. None when no bound follows from the tokenizer:
    one that is not a fast (Rust) tokenizer, a normalizer or pre-tokenizer that can delete text
    (stripping accents, control characters or whitespace), or a model whose unknown-token can
    stand for a stretch of any length.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    shrink = _normalizer_shrink(spec.get("normalizer"))
    if (shrink is None or not _pre_tokenizer_keeps_text(spec.get("pre_tokenizer"))
            or not _model_covers_bytes(spec.get("model", {}))):
        return None
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))],
                                   skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    longest = max((len(t.encode("utf-8", "surrogatepass")) for t in texts), default=0) + 1
    return math.ceil(longest * shrink)


def empty_word_list(batch_size: int = 1) -> npt.NDArray[np.int32]:
    """The word-list tensor of requests without stop/bad words: ``[batch_size, 2, 0]``."""
    return np.empty((batch_size, 2, 0), dtype=np.int32)


def pack_word_list(ids_per_request: Sequence[Sequence[Sequence[int]]]) -> npt.NDArray[np.int32]:
    """Pack already-encoded words into the ``[batch, 2, max_len]`` INT32 layout.

    Row 0: the words' ids flattened, padded with 0. Row 1: cumulative end offsets, padded with
    -1. Both rows are padded to the longest flattened length in the batch, at least 1. Empty words
    are dropped (they would make an offset repeat).
    """
    flat: list[list[int]] = []
    offsets: list[list[int]] = []
    for words in ids_per_request:
        item_ids: list[int] = []
        item_offsets: list[int] = []
        for word in words:
            if len(word) == 0:
                continue
            item_ids.extend(int(i) for i in word)
            item_offsets.append(len(item_ids))
        flat.append(item_ids)
        offsets.append(item_offsets)
    width = max([1, *(len(ids) for ids in flat)])
    out = np.zeros((len(flat), 2, width), dtype=np.int32)
    out[:, 1, :] = -1
    for row, (ids, offs) in enumerate(zip(flat, offsets, strict=True)):
        out[row, 0, : len(ids)] = ids
        out[row, 1, : len(offs)] = offs
    return out


def parse_word_list(array: npt.NDArray[Any]) -> list[WordIds]:
    """Inverse of :func:`pack_word_list`: the words (lists of ids) of each batch item.

    Accepts ``[batch, 2, n]`` or a single item's ``[2, n]`` (then the batch is 1); ``n`` may be 0.
    Offsets are read up to the first negative one; a repeated offset (an empty word) is skipped.
    Raises ValueError for a non-integer array, a wrong shape, or offsets that decrease or point
    past the ids.
    """
    arr = np.asarray(array)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"expected an integer array, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.shape[1] != 2:
        raise ValueError(f"expected shape [batch, 2, n], got {list(np.asarray(array).shape)}")
    result: list[WordIds] = []
    for item in arr:
        ids, offs = item[0].tolist(), item[1].tolist()
        words: WordIds = []
        start = 0
        for end in offs:
            if end < 0:
                break
            if end < start or end > len(ids):
                raise ValueError(f"offset {end} out of order or past the {len(ids)} ids")
            if end > start:
                words.append(ids[start:end])
            start = end
        result.append(words)
    return result
