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
  that later turns out to belong to a stop string is ever sent;
* time and memory are linear in the stop strings' total size and the text (one KMP automaton per
  stop string; see :class:`StopStrings`), so a long stop string costs what it weighs.

Id stops (:class:`StopIds`): the engine-side check, whether the generated ids end with any of
several id sequences (the rows of a ``stop_words_list`` tensor, see
:func:`tritonllm.ensembles.tokenization.parse_word_list`).
"""

from __future__ import annotations

from array import array
from collections import deque
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


class _Prefixes:
    """One stop string and its KMP failure function, computed only as far as a match reached.

    ``fail(q)`` is the length of the longest proper prefix of ``stop[:q]`` that is also a suffix
    of it. Entries are computed on demand (each in amortised O(1)), so memory and time grow
    with how far the text matched, never with the square of the stop string's length.
    """

    __slots__ = ("_k", "_pi", "stop")

    def __init__(self, stop: str) -> None:
        self.stop = stop
        self._pi = array("l", [0])  # _pi[i]: the failure value of stop[: i + 1]
        self._k = 0

    def fail(self, q: int) -> int:
        s, pi = self.stop, self._pi
        k = self._k
        while len(pi) < q:
            i = len(pi)
            while k and s[i] != s[k]:
                k = pi[k - 1]
            if s[i] == s[k]:
                k += 1
            pi.append(k)
        self._k = k
        return pi[q - 1]

    def scan(self, q: int, text: str) -> tuple[int, int]:
        """Feed ``text`` from state ``q`` (chars of the stop matched so far); returns the new
        state and the index in ``text`` just past the first full match (-1: none)."""
        s, m, n = self.stop, len(self.stop), len(text)
        i = 0
        while i < n:
            if q == 0:
                i = text.find(s[0], i)  # nothing matched: jump to the next possible start
                if i < 0:
                    return 0, -1
            else:
                run = min(n - i, m - q)  # compare as much as the text has at once (C speed)
                if text.startswith(s[q:q + run], i):
                    q, i = q + run, i + run
                    if q == m:
                        return q, i
                    continue
                if s[q] != text[i]:
                    q = self.fail(q)
                    continue
            q, i = q + 1, i + 1
            if q == m:
                return q, i
        return q, -1


class StopStrings:
    """One request's stop-string matcher over streamed text deltas.

    ``push(delta)`` for each delta (e.g. from the incremental detokenizer), then ``finish()`` when
    the request ends without a stop, to get the text held back. After a stop, further pushes
    return empty results and ``finish()`` returns ``""``. Raises ValueError for an empty stop
    string. Not thread-safe.

    Cost: each stop string is matched by its own Knuth–Morris–Pratt automaton, so a push costs
    O(len(delta)) per stop string and memory stays O(total size of the stop strings + the held
    text); the held text is the longest suffix of the output that is a proper prefix of some
    stop string (the largest automaton state), found without listing any prefixes.
    """

    def __init__(self, stops: Iterable[str], *, include_stop: bool = False) -> None:
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(stops))
        if any(not s for s in self.stops):
            raise ValueError("a stop string must not be empty")
        self.include_stop = include_stop
        self._matchers = [_Prefixes(s) for s in self.stops]
        self._states = [0] * len(self.stops)
        # The held text: chunks (deltas) whose first one starts at _offset; _size chars in all.
        # Kept as chunks so a push costs the delta and the released text, never the held text.
        self._chunks: deque[str] = deque()
        self._offset = 0
        self._size = 0
        self._stop: str | None = None

    @property
    def stop_string(self) -> str | None:
        """The stop string that was found (None: none yet)."""
        return self._stop

    @property
    def stopped(self) -> bool:
        """Whether a stop string was found."""
        return self._stop is not None

    @property
    def held(self) -> str:
        """Text received but not yet released (a possible start of a stop string)."""
        return "".join(self._chunks)[self._offset:]

    def push(self, delta: str) -> StopResult:
        """Feed the next text delta; return what may be sent now and whether to stop."""
        if self._stop is not None:
            return StopResult("", True, self._stop)
        best: tuple[int, int, str] | None = None  # (end in delta, -length, stop)
        states = []
        for matcher, q in zip(self._matchers, self._states, strict=True):
            q, end = matcher.scan(q, delta)
            states.append(q)
            if end >= 0:
                key = (end, -len(matcher.stop), matcher.stop)
                if best is None or key < best:
                    best = key
        if delta:
            self._chunks.append(delta)
            self._size += len(delta)
        if best is not None:
            end, _, stop = best
            stop_end = self._size - len(delta) + end  # where the stop ends in the held text
            text = self._take(stop_end if self.include_stop else stop_end - len(stop))
            self._stop = stop
            self._clear()
            return StopResult(text, True, stop)
        self._states = states
        # Hold the longest suffix that is a proper prefix of a stop string: the largest state.
        return StopResult(self._take(self._size - max(states, default=0)))

    def finish(self) -> str:
        """The request ended without a stop string: release the held text."""
        held = self._take(self._size)
        self._clear()
        return held

    def _take(self, n: int) -> str:
        """Release the first ``n`` held characters."""
        parts = []
        self._size -= n
        while n:
            chunk, start = self._chunks[0], self._offset
            if len(chunk) - start <= n:
                parts.append(chunk[start:] if start else chunk)
                n -= len(chunk) - start
                self._chunks.popleft()
                self._offset = 0
            else:
                parts.append(chunk[start:start + n])
                self._offset += n
                n = 0
        return "".join(parts)

    def _clear(self) -> None:
        self._chunks.clear()
        self._offset = self._size = 0
        self._states = [0] * len(self.stops)


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
