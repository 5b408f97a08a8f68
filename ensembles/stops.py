"""Stop conditions: stop strings on streamed text (BLS) and stop id sequences (engine).

Text stops (:class:`StopStrings`). NVIDIA's BLS model does no text matching of its own: it passes
``stop_words`` through preprocessing as token ids, and the engine keeps the matched tokens in
``output_ids``. Ids cannot match a stop string the model spells with other tokens (``" ."`` vs
``"."``, or a word split differently than when encoded alone), so our BLS also matches on text,
with the semantics of OpenAI's ``stop`` and TensorRT-LLM's LLM API (``include_stop_str_in_output``
false by default):

* the output ends before the stop string, which is excluded (unless ``include_stop``);
* generation stops at the first point where the text contains a stop string: of the matches,
  the one that ends first wins, and of those ending at the same place the longest. The result
  does not depend on how the text was split into deltas, so streamed and non-streamed outputs
  agree;
* while streaming, a suffix that could still grow into a stop string is held back, so nothing
  that later turns out to belong to a stop string is ever sent.

Id stops (:class:`StopIds`): the engine-side check, whether the generated ids end with any of
several id sequences (the rows of a ``stop_words_list`` tensor, see
:func:`tritonllm.ensembles.tokenization.parse_word_list`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from tritonllm.ensembles.tokenization import parse_word_list

__all__ = ["StopIds", "StopResult", "StopStrings", "truncate_at_stop"]


@dataclass(frozen=True)
class StopResult:
    """What :meth:`StopStrings.push` found.

    ``text`` may be sent now. When ``stopped`` is true, ``text`` is the last text of the request
    (it ends where the stop string starts, or after it with ``include_stop``) and ``stop`` is the
    stop string that matched.
    """

    text: str
    stopped: bool = False
    stop: str | None = None


class StopStrings:
    """One request's stop-string matcher over streamed text deltas.

    ``push(delta)`` for each delta (e.g. from the incremental detokenizer), then ``finish()`` when
    the request ends without a stop, to get the text held back. After a stop, further pushes
    return empty results and ``finish()`` returns ``""``. Raises ValueError for an empty stop
    string. Not thread-safe.
    """

    def __init__(self, stops: Iterable[str], *, include_stop: bool = False) -> None:
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(stops))
        if any(not s for s in self.stops):
            raise ValueError("a stop string must not be empty")
        self.include_stop = include_stop
        self._prefixes = frozenset(s[:i] for s in self.stops for i in range(1, len(s)))
        self._max_hold = max((len(s) - 1 for s in self.stops), default=0)
        self._held = ""
        self._stop: str | None = None

    @property
    def stopped(self) -> bool:
        """Whether a stop string was found."""
        return self._stop is not None

    @property
    def held(self) -> str:
        """Text received but not yet released (a possible start of a stop string)."""
        return self._held

    def push(self, delta: str) -> StopResult:
        """Feed the next text delta; return what may be sent now and whether to stop."""
        if self._stop is not None:
            return StopResult("", True, self._stop)
        buf = self._held + delta
        found = _first_stop(buf, self.stops)
        if found is not None:
            start, stop = found
            self._stop, self._held = stop, ""
            end = start + len(stop) if self.include_stop else start
            return StopResult(buf[:end], True, stop)
        hold = self._hold_length(buf)
        self._held = buf[len(buf) - hold :]
        return StopResult(buf[: len(buf) - hold])

    def finish(self) -> str:
        """The request ended without a stop string: release the held text."""
        held, self._held = self._held, ""
        return held

    def _hold_length(self, buf: str) -> int:
        for k in range(min(self._max_hold, len(buf)), 0, -1):
            if buf[-k:] in self._prefixes:
                return k
        return 0


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """(start, stop) of the match that ends first, the longest of those; None without a match."""
    best: tuple[int, int, str] | None = None  # (end, -length, stop)
    for stop in stops:
        start = text.find(stop)
        if start < 0:
            continue
        # The first occurrence of a stop also ends first among its own occurrences.
        key = (start + len(stop), -len(stop), stop)
        if best is None or key < best:
            best = key
    if best is None:
        return None
    end, neg_len, stop = best
    return end + neg_len, stop


def truncate_at_stop(
    text: str, stops: Iterable[str], *, include_stop: bool = False
) -> tuple[str, str | None]:
    """The non-streamed form: ``(text cut at the first stop, that stop or None)``."""
    matcher = StopStrings(stops, include_stop=include_stop)
    result = matcher.push(text)
    if result.stopped:
        return result.text, result.stop
    return result.text + matcher.finish(), None


class StopIds:
    """Id sequences whose appearance at the end of the generated ids stops a request.

    Empty sequences are ignored. Immutable and thread-safe.
    """

    def __init__(self, sequences: Iterable[Sequence[int]]) -> None:
        unique = dict.fromkeys(tuple(int(i) for i in seq) for seq in sequences)
        self.sequences: tuple[tuple[int, ...], ...] = tuple(s for s in unique if s)
        by_last: dict[int, list[tuple[int, ...]]] = {}
        for seq in sorted(self.sequences, key=len, reverse=True):  # longest first
            by_last.setdefault(seq[-1], []).append(seq)
        self._by_last = by_last
        self.max_len = max((len(s) for s in self.sequences), default=0)

    @classmethod
    def from_word_list(cls, array: npt.NDArray[Any]) -> StopIds:
        """From one request's ``stop_words_list`` tensor, ``[1, 2, n]`` or ``[2, n]``.

        Raises ValueError for a malformed tensor or a batch of more than one request.
        """
        items = parse_word_list(array)
        if len(items) != 1:
            raise ValueError(f"expected the word list of one request, got a batch of {len(items)}")
        return cls(items[0])

    def __bool__(self) -> bool:
        return bool(self.sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def match(self, ids: Sequence[int]) -> tuple[int, ...] | None:
        """The longest sequence ``ids`` ends with, or None. Only the last ``max_len`` ids matter."""
        if len(ids) == 0:
            return None
        candidates = self._by_last.get(int(ids[-1]))
        if not candidates:
            return None
        n = len(ids)
        for seq in candidates:
            k = len(seq)
            if k <= n and all(int(ids[n - k + j]) == seq[j] for j in range(k - 1)):
                return seq
        return None
