"""Prompts for a benchmark: synthetic ones with exact token counts, or a JSONL dataset.

Token counts are those of the model's own tokenizer without special tokens
(``encode(text, add_special_tokens=False)``), as genai-perf counts input and output lengths.

:class:`Tokenizer` loads a local Hugging Face tokenizer directory (no hub access). For a
repository rendered by ``tritonllm repo`` it is ``REPO/tensorrt_llm/1/tokenizer``
(:func:`find_tokenizer`).

:class:`SyntheticPrompts` makes prompts of *exactly* the requested number of tokens: it
strings together words of a fixed vocabulary whose token counts it knows, closes the gap with
a word of the right length, and re-tokenizes the result to verify; a tokenizer where words do
not tokenize independently falls back to adjusting word by word, still verified.

Dataset files (``--dataset``) are JSONL: one object per line with the prompt in ``text``
(genai-perf's key), ``text_input`` or ``prompt``, and optionally the output length in
``output_tokens`` or ``max_tokens``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonllm.errors import ConfigError

__all__ = [
    "Prompt",
    "SyntheticPrompts",
    "Tokenizer",
    "find_tokenizer",
    "load_dataset",
    "make_prompts",
]

#: Where ``tritonllm repo`` puts the tokenizer inside a repository.
REPO_TOKENIZER = Path("tensorrt_llm/1/tokenizer")

_WORDS = (  # noqa: SIM905 (a word list reads better as prose)
    """
the of and to in is was for on with as by at from that this it be are or not have model
server request token stream batch engine cache queue latency throughput prompt output input
sequence decode encode block memory compute kernel thread process cluster node network
time first last next every each many more most some other such only also very well just
people water world house city river mountain night morning light music story letter number
question answer reason result system program problem market family school country company
quick brown fox jumps over lazy dog red green blue small large long short early late open
read write send receive measure report gate release size scale run wait start stop keep
"""
).split()


class Tokenizer:
    """A local Hugging Face tokenizer, counting tokens as genai-perf does.

    ``path`` is a directory ``AutoTokenizer.from_pretrained`` can read offline.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"--tokenizer: {path} is not a directory")
        try:
            from transformers import AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise ConfigError(f"--tokenizer needs transformers installed: {e}") from e
        hf_logging.set_verbosity_error()
        try:
            self._tok: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--tokenizer: cannot load a tokenizer from {path}: "
                              f"{str(e).splitlines()[0]}") from e
        self.path = path

    def encode(self, text: str) -> list[int]:
        """Token ids without special tokens."""
        return list(self._tok.encode(text, add_special_tokens=False))

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Token counts of many texts in one batched call."""
        if not texts:
            return []
        ids = self._tok(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))


def find_tokenizer(tokenizer: Path | None, repo: Path | None) -> Path:
    """``tokenizer`` if given, else the one inside the tritonllm repository ``repo``."""
    if tokenizer is not None:
        return tokenizer
    if repo is not None:
        from tritonllm.builders.repository import tokenizer_subdir, version_dirs

        # the version Triton serves (the highest)
        newest = max(version_dirs(Path(repo), REPO_TOKENIZER.parts[0]), default=1)
        path = Path(repo) / tokenizer_subdir(newest)
        if not path.is_dir():
            raise ConfigError(f"--repo: {repo} has no {REPO_TOKENIZER} (not rendered by "
                              "tritonllm repo?); pass --tokenizer DIR")
        return path
    raise ConfigError("token counts need the model's tokenizer: pass --tokenizer DIR (or --repo "
                      f"REPO for a tritonllm repository, whose tokenizer is {REPO_TOKENIZER})")


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text, its token count and the output length to ask for (None: the
    scenario's)."""

    text: str
    input_tokens: int
    output_tokens: int | None = None


class SyntheticPrompts:
    """Prompts of exactly N tokens of ``tokenizer``, deterministic for a seed.

    A prompt is a first word without a leading space (genai-perf strips prompts, so ours
    tokenize the same there) followed by space-prefixed words.
    """

    def __init__(self, tokenizer: Tokenizer, words: Sequence[str] = _WORDS) -> None:
        self.tok = tokenizer
        unique = list(dict.fromkeys(words))
        self._first = self._table(unique)
        self._words = self._table([" " + w for w in unique])
        if not self._words or not self._first:
            raise ConfigError("the tokenizer encodes none of the prompt words")
        self._by_count: dict[int, list[str]] = {}
        for p, c in self._words:
            self._by_count.setdefault(c, []).append(p)
        if 1 not in self._by_count:  # single-token fillers: characters the tokenizer has
            ones = [p for p in (" " + ch for ch in "abcdefghijklmnopqrstuvwxyz0123456789")
                    if tokenizer.count(p) == 1]
            if ones:
                self._by_count[1] = ones

    def _table(self, pieces: list[str]) -> list[tuple[str, int]]:
        counts = self.tok.count_many(pieces)
        return [(p, c) for p, c in zip(pieces, counts, strict=True) if c > 0]

    def make(self, n: int, rng: random.Random) -> str:
        """A prompt of exactly ``n`` tokens (n >= 1); ConfigError if the tokenizer won't allow."""
        if n < 1:
            raise ConfigError(f"a prompt needs at least 1 token, got {n}")
        fits_first = [w for w in self._first if w[1] <= n] or [min(self._first, key=lambda w: w[1])]
        first, total = rng.choice(fits_first)
        words = [first]
        while total < n:
            piece, c = rng.choice(self._words)
            if total + c > n:
                need = n - total
                fits = self._by_count.get(need)
                if fits:
                    piece, c = rng.choice(fits), need
                else:  # no word of that size: fill with single tokens
                    ones = self._by_count.get(1)
                    if not ones:
                        break
                    piece, c = rng.choice(ones), 1
            words.append(piece)
            total += c
        text = "".join(words)
        if self.tok.count(text) == n:
            return text
        return self._adjust(words, n, rng)

    def _adjust(self, words: list[str], n: int, rng: random.Random) -> str:
        """Tokenizers where words interact: add or drop words until the count is exact."""
        ones = self._by_count.get(1) or [p for p, _ in self._words]
        for _ in range(4 * n + 16):
            text = "".join(words)
            c = self.tok.count(text)
            if c == n:
                return text
            if c > n and len(words) > 1:
                words.pop()
            else:
                words.append(rng.choice(ones))
        raise ConfigError(f"cannot make a prompt of exactly {n} tokens with the tokenizer at "
                          f"{self.tok.path}")


def _draw(rng: random.Random, mean: int, std: float) -> int:
    if std == 0:
        return mean
    return max(1, round(rng.gauss(mean, std)))


def make_prompts(tokenizer: Tokenizer, count: int, mean: int, std: float = 0.0,
                 seed: int = 0) -> list[Prompt]:
    """``count`` synthetic prompts; lengths drawn from N(mean, std), rounded, at least 1."""
    rng = random.Random(seed)
    gen = SyntheticPrompts(tokenizer)
    prompts = []
    for _ in range(count):
        n = _draw(rng, mean, std)
        prompts.append(Prompt(gen.make(n, rng), n))
    return prompts


def draw_lengths(count: int, mean: int, std: float, seed: int) -> list[int]:
    """``count`` output lengths from N(mean, std), rounded, at least 1 (seeded)."""
    rng = random.Random(seed ^ 0x5EED)
    return [_draw(rng, mean, std) for _ in range(count)]


_TEXT_KEYS = ("text", "text_input", "prompt")
_OUT_KEYS = ("output_tokens", "max_tokens")


def load_dataset(path: Path, tokenizer: Tokenizer) -> list[Prompt]:
    """Prompts from a JSONL file (see the module docstring); ConfigError names file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"--dataset: cannot read {path}: {e.strerror}") from e
    rows: list[tuple[str, int | None]] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--dataset: {path}:{no}: not JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise ConfigError(f"--dataset: {path}:{no}: expected a JSON object")
        text = next((obj[k] for k in _TEXT_KEYS if k in obj), None)
        if isinstance(text, list) and len(text) == 1:
            text = text[0]
        if not isinstance(text, str) or not text:
            raise ConfigError(f"--dataset: {path}:{no}: no prompt (a non-empty string in "
                              f"{', '.join(_TEXT_KEYS)})")
        out = next((obj[k] for k in _OUT_KEYS if k in obj), None)
        if out is not None and (not isinstance(out, int) or isinstance(out, bool) or out < 1):
            raise ConfigError(f"--dataset: {path}:{no}: output_tokens must be a positive "
                              f"integer, got {out!r}")
        rows.append((text, out))
    if not rows:
        raise ConfigError(f"--dataset: {path} holds no prompts")
    counts = tokenizer.count_many([t for t, _ in rows])
    return [Prompt(t, c, o) for (t, o), c in zip(rows, counts, strict=True)]
