"""Turning generated ids into text: once (postprocessing) or incrementally (streaming).

Contract of :class:`IncrementalDetokenizer`: for any id sequence split into any chunks, the
strings returned by ``push(chunk)`` for each chunk, followed by ``finish()``, concatenate to
exactly ``decode(tokenizer, all_ids)``, which is ``tokenizer.decode(all_ids, ...)`` with the same
options. Every partial concatenation is a prefix of that final text, so nothing sent to a client
ever has to be taken back.

How: each push re-decodes a short window of ids (the tokens since the last emitted boundary plus
the ones before it, so tokenizers that strip a leading space from the first piece, like
SentencePiece's ``▁``, see the same context as a full decode) and emits the new text only when it
does not end in U+FFFD, i.e. when no multi-byte UTF-8 character is still split across byte-level
tokens. Byte-fallback tokens (``<0xE6>``) are decoded run by run, and a run that is valid UTF-8
now turns into U+FFFDs if an invalid byte joins it, so a trailing run of them is held until a
non-byte token ends it (one token of latency for a ``<0x0A>`` newline). If the tokenizer cleans
up tokenization spaces (``" ."`` -> ``"."``, ``" n't"`` -> ``"n't"``, ...), text is cleaned up to
the last character that no such pattern contains, and a trailing space that a pattern could still
delete is held back until the next push. ``finish()`` flushes whatever was held back, U+FFFD
included when the ids really end mid-character.

A detokenizer holds one request's state; it is not thread-safe (one request, one owner).
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["IncrementalDetokenizer", "decode", "decode_tokens_batch"]

REPLACEMENT = "\ufffd"

# The patterns PreTrainedTokenizerBase.clean_up_tokenization rewrites (each one only deletes
# spaces). A character outside all of them is a barrier: no match can cross it.
_CLEANUP_PATTERNS = (" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're")
_PATTERN_CHARS = frozenset("".join(_CLEANUP_PATTERNS))


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_byte_ids_cache: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def _byte_fallback_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Ids of the ``<0xNN>`` byte-fallback tokens (none in byte-level BPE), cached per tokenizer."""
    try:
        return _byte_ids_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    ids = frozenset(i for tok, i in tokenizer.get_vocab().items() if _BYTE_TOKEN.fullmatch(tok))
    with contextlib.suppress(TypeError):  # not weak-referenceable: recomputed next time
        _byte_ids_cache[tokenizer] = ids
    return ids


def _cleans_up(tokenizer: PreTrainedTokenizerBase, override: bool | None) -> bool:
    if override is not None:
        return override
    return bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))


def _raw_decode(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], skip_special_tokens: bool
) -> str:
    text = tokenizer.decode(
        list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
    )
    if not isinstance(text, str):  # only a batch of sequences decodes to a list
        raise TypeError("expected one sequence of ids")
    return text


def decode(
    tokenizer: PreTrainedTokenizerBase,
    ids: Sequence[int],
    *,
    skip_special_tokens: bool = True,
    clean_up_tokenization_spaces: bool | None = None,
) -> str:
    """The text of ``ids``: ``tokenizer.decode`` with the tokenizer's own clean-up setting."""
    text = _raw_decode(tokenizer, ids, skip_special_tokens)
    if _cleans_up(tokenizer, clean_up_tokenization_spaces):
        text = tokenizer.clean_up_tokenization(text)
    return text


def decode_tokens_batch(
    tokenizer: PreTrainedTokenizerBase,
    tokens_batch: npt.NDArray[Any],
    sequence_length: npt.NDArray[Any],
    *,
    skip_special_tokens: bool = True,
) -> list[str]:
    """Decode the postprocessing model's inputs: one string per (batch item, beam), in that order.

    ``tokens_batch`` is ``[batch, beam, len]`` (``TOKENS_BATCH``) and ``sequence_length`` is
    ``[batch, beam]`` (``SEQUENCE_LENGTH``); each beam is cut to its length before decoding.
    Raises ValueError when the shapes disagree or a length is negative or too long.
    """
    tokens = np.asarray(tokens_batch)
    lengths = np.asarray(sequence_length)
    if tokens.ndim != 3 or lengths.shape != tokens.shape[:2]:
        raise ValueError(
            f"TOKENS_BATCH {list(tokens.shape)} and SEQUENCE_LENGTH {list(lengths.shape)}: "
            "expected [batch, beam, len] and [batch, beam]"
        )
    out: list[str] = []
    for item_tokens, item_lengths in zip(tokens, lengths, strict=True):
        for beam_tokens, length in zip(item_tokens, item_lengths, strict=True):
            n = int(length)
            if n < 0 or n > beam_tokens.shape[0]:
                raise ValueError(f"SEQUENCE_LENGTH {n} outside 0..{beam_tokens.shape[0]}")
            out.append(decode(tokenizer, beam_tokens[:n].tolist(),
                              skip_special_tokens=skip_special_tokens))
    return out


class IncrementalDetokenizer:
    """Streaming text of one request's generated ids (see the module docstring for the contract).

    ``push(ids)`` returns the text that became final with these ids (maybe ``""``);
    ``finish()`` returns the rest. ``text`` is everything returned so far.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._cleanup = _cleans_up(tokenizer, clean_up_tokenization_spaces)
        self._byte_ids = _byte_fallback_ids(tokenizer)
        # Skipped special tokens do not end a byte-fallback run; kept ones do.
        self._transparent = frozenset(tokenizer.all_special_ids if skip_special_tokens else ())
        self._ids: list[int] = []
        # ids[_prefix:_read] decode to text already emitted: the context of the next window.
        self._prefix = 0
        self._read = 0
        self._cleaner = _SpaceCleaner(tokenizer.clean_up_tokenization) if self._cleanup else None
        self._emitted: list[str] = []
        self._finished = False

    @property
    def ids(self) -> tuple[int, ...]:
        """Every id pushed so far."""
        return tuple(self._ids)

    @property
    def text(self) -> str:
        """Everything returned by ``push``/``finish`` so far, concatenated."""
        return "".join(self._emitted)

    @property
    def finished(self) -> bool:
        """Whether ``finish()`` was called."""
        return self._finished

    def _window(self, end: int) -> tuple[str, str]:
        ids = self._ids
        before = _raw_decode(self._tokenizer, ids[self._prefix : self._read], self._skip)
        after = _raw_decode(self._tokenizer, ids[self._prefix : end], self._skip)
        return before, after

    def _stable_end(self) -> int:
        """End of the ids whose text cannot change: before a trailing byte-fallback run."""
        if not self._byte_ids:
            return len(self._ids)
        end = len(self._ids)
        in_run = False
        while end > self._read:
            tok = self._ids[end - 1]
            if tok in self._byte_ids:
                in_run = True
            elif tok not in self._transparent:
                break
            end -= 1
        return end if in_run else len(self._ids)

    def push(self, ids: Sequence[int] | npt.NDArray[Any]) -> str:
        """Add generated ids; return the text they complete.

        Raises RuntimeError after ``finish()``.
        """
        if self._finished:
            raise RuntimeError("push() after finish()")
        new = [int(i) for i in np.asarray(ids).reshape(-1)]
        if not new:
            return ""
        self._ids.extend(new)
        end = self._stable_end()
        if end <= self._read:
            return ""
        before, after = self._window(end)
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""  # nothing new yet, or a character is still incomplete
        self._prefix, self._read = self._read, end
        return self._emit(after[len(before) :], final=False)

    def finish(self) -> str:
        """Return the text still held back (an incomplete character becomes U+FFFD).

        Calling it again returns ``""``.
        """
        if self._finished:
            return ""
        self._finished = True
        before, after = self._window(len(self._ids))
        self._prefix = self._read = len(self._ids)
        return self._emit(after[len(before) :], final=True)

    def _emit(self, raw: str, *, final: bool) -> str:
        if self._cleaner is not None:
            raw = self._cleaner.feed(raw)
            if final:
                raw += self._cleaner.flush()
        if raw:
            self._emitted.append(raw)
        return raw


class _SpaceCleaner:
    """``clean_up_tokenization`` applied to a stream of raw text, exactly.

    Text up to the last barrier character (one in no clean-up pattern) is final: no pattern can
    match across a barrier, so ``clean(a + barrier + b) == clean(a + barrier) + clean(b)``. After
    the last barrier only pattern characters remain; the part before their first space cannot
    change either (patterns start with a space and delete only spaces). The rest is held.
    """

    def __init__(self, clean: Callable[[str], str]) -> None:
        self._clean = clean
        self._pending = ""  # raw text after the last barrier: pattern characters only
        self._sent = 0  # characters of _pending already returned (all before its first space)

    def feed(self, raw: str) -> str:
        pending = self._pending + raw
        out = ""
        cut = len(pending)
        while cut > 0 and pending[cut - 1] in _PATTERN_CHARS:
            cut -= 1
        if cut > 0:  # pending[cut - 1] is the last barrier
            out = self._clean(pending[:cut])[self._sent :]
            pending, self._sent = pending[cut:], 0
        space = pending.find(" ")
        head = pending if space < 0 else pending[:space]
        out += head[self._sent :]
        self._pending, self._sent = pending, len(head)
        return out

    def flush(self) -> str:
        out = self._clean(self._pending)[self._sent :]
        self._pending, self._sent = "", 0
        return out
