"""Stop strings on streamed text and stop id sequences.

The text matcher is checked against a brute-force oracle ("the first prefix of the text that ends
with a stop string; the longest such stop"), for every way of splitting the text into deltas.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from tritonllm.ensembles.detokenize import IncrementalDetokenizer
from tritonllm.ensembles.stops import StopIds, StopResult, StopStrings, truncate_at_stop
from tritonllm.ensembles.tokenization import Tokenization, pack_word_list


def oracle(text: str, stops: list[str], include_stop: bool = False) -> tuple[str, str | None]:
    for end in range(1, len(text) + 1):
        hits = [s for s in stops if text[:end].endswith(s)]
        if hits:
            stop = max(hits, key=len)
            return text[: end if include_stop else end - len(stop)], stop
    return text, None


def stream(text: str, stops: list[str], cuts: list[int], include_stop: bool = False):
    matcher = StopStrings(stops, include_stop=include_stop)
    out, pos, result = "", 0, StopResult("")
    for cut in [*cuts, len(text)]:
        result = matcher.push(text[pos:cut])
        pos = cut
        out += result.text
        if result.stopped:
            return out, result.stop
        # Nothing sent may later turn out to be part of a stop string.
        assert oracle(text, stops, include_stop)[0].startswith(out)
    return out + matcher.finish(), None


def test_random_texts_and_splits_match_the_oracle() -> None:
    rng = random.Random(2024)
    alphabet = "ab c\n日"
    for _ in range(3000):
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
                 for _ in range(rng.randint(1, 3))]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=rng.randint(0, len(text))))
        include = rng.random() < 0.3
        expected = oracle(text, stops, include)
        assert truncate_at_stop(text, stops, include_stop=include) == expected, (text, stops)
        assert stream(text, stops, cuts, include) == expected, (text, stops, cuts)


def test_self_overlapping_stops_match_the_oracle() -> None:
    """Stops like "aab" / "abab" make a matcher fall back to shorter prefixes (KMP failures)."""
    rng = random.Random(7)
    for _ in range(3000):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 9)))
                 for _ in range(rng.randint(1, 4))]
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 60)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=rng.randint(0, len(text))))
        include = rng.random() < 0.3
        expected = oracle(text, stops, include)
        assert stream(text, stops, cuts, include) == expected, (text, stops, cuts)


MB = 1 << 20


def _peak_mb(run: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


def test_a_1mb_stop_string_takes_memory_linear_in_its_size() -> None:
    """The old matcher kept every prefix of every stop string: 40,000 characters took 800 MB
    and 1 MB was beyond any machine. Now memory is a few times the text held back."""
    stop = "ab" * (MB // 2)  # every delta below keeps matching a prefix of it
    periodic = "x" * MB  # and one whose prefixes never match

    def near_misses() -> None:
        m = StopStrings([stop, periodic, "é" * MB])
        for _ in range(2000):
            assert not m.push("ab" * 5).stopped
        assert len(m.held) == 20_000
        assert m.finish() == "ab" * 10_000

    def the_whole_stop_streamed() -> None:
        m = StopStrings([stop, periodic])
        out = "prefix "
        for pos in range(0, MB, 100):
            result = m.push(stop[pos:pos + 100])
            out += result.text
        assert result.stopped and result.stop == stop and out == "prefix "

    def kmp_worst_case() -> None:  # "aaa…ab" against "aaa…ac": "c" falls back to every prefix
        m = StopStrings(["a" * (MB - 1) + "b"])
        out = "".join(m.push("a" * 1000).text for _ in range(256))
        assert len(m.held) == 256_000 - len(out)
        assert out + m.push("c").text == "a" * 256_000 + "c"

    assert _peak_mb(near_misses) < 2
    assert _peak_mb(the_whole_stop_streamed) < 8  # mostly the 10,486 held deltas
    assert _peak_mb(kmp_worst_case) < 6  # the failure table, 8 bytes per char matched


def test_suffix_that_may_become_a_stop_is_held_then_stops() -> None:
    m = StopStrings(["world"])
    assert m.push("Hello wo") == StopResult("Hello ")
    assert m.held == "wo"
    assert m.push("rld! more") == StopResult("", True, "world")
    assert m.stopped
    assert m.push("ignored") == StopResult("", True, "world")
    assert m.finish() == ""


def test_held_text_is_released_when_it_cannot_be_a_stop() -> None:
    m = StopStrings(["world"])
    assert m.push("wor") == StopResult("")
    assert m.push("m") == StopResult("worm")
    assert m.push(" w") == StopResult(" ")
    assert m.finish() == "w"  # the request ended: the held text is output after all


def test_include_stop_and_longest_of_stops_ending_together() -> None:
    assert truncate_at_stop("say abc now", ["bc", "abc"]) == ("say ", "abc")
    assert truncate_at_stop("say abc now", ["bc", "abc"], include_stop=True) == ("say abc", "abc")
    # The stop that completes first wins, even if a longer one started earlier.
    assert truncate_at_stop("xabcd", ["abcd", "b"]) == ("xa", "b")
    assert truncate_at_stop("no stop here", ["zz"]) == ("no stop here", None)


def test_no_stops_passes_everything_through() -> None:
    m = StopStrings([])
    assert m.push("anything") == StopResult("anything")
    assert m.finish() == ""


def test_empty_stop_string_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        StopStrings(["ok", ""])


@pytest.fixture(scope="module")
def hf(tiny_model: Path):
    return AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)


def test_multibyte_stop_through_the_detokenizer(hf) -> None:
    text = "hello 日本語 world 🙂 again"
    ids = hf.encode(text, add_special_tokens=False)
    for stops, expected in [(["本語"], "hello 日"), (["🙂"], "hello 日本語 world "),
                            (["zzz"], text)]:
        detok, matcher, out = IncrementalDetokenizer(hf), StopStrings(stops), ""
        for i in ids:
            result = matcher.push(detok.push([i]))
            out += result.text
            if result.stopped:
                break
        else:
            out += matcher.push(detok.finish()).text + matcher.finish()
        assert out == expected


def test_stop_ids_match_the_tail() -> None:
    stops = StopIds([[5, 6], [6], [7, 8, 9], []])
    assert len(stops) == 3
    assert stops.max_len == 3
    assert stops.match([1, 5, 6]) == (5, 6)  # the longest sequence that ends there
    assert stops.match([1, 4, 6]) == (6,)
    assert stops.match(np.array([7, 8, 9], dtype=np.int32)) == (7, 8, 9)
    assert stops.match([8, 9]) is None
    assert stops.match([9, 8]) is None
    assert stops.match([]) is None
    assert not StopIds([])


def test_stop_ids_from_the_preprocessing_tensor(tiny_model: Path) -> None:
    tok = Tokenization.from_dir(tiny_model)
    layout = tok.word_list_layout([[" world", "日本語"]])
    stops = StopIds.from_word_list(layout)
    assert stops.match(tok.encode("hello world")[1:]) == tuple(tok.encode_words([" world"])[0])
    assert stops.match(tok.encode("日本語")[1:]) == tuple(tok.encode_words(["日本語"])[0])
    # Ids match only the spelling they were encoded with: "world" alone is other tokens than
    # " world" after a word. This is why the BLS model also matches stop strings on text.
    assert StopIds(tok.encode_words(["world"])).match(tok.encode("hello world")[1:]) is None
    assert StopIds.from_word_list(layout[0]).sequences == stops.sequences  # [2, n] form
    assert not StopIds.from_word_list(np.empty((1, 2, 0), np.int32))
    with pytest.raises(ValueError, match="batch of 2"):
        StopIds.from_word_list(pack_word_list([[[1]], [[2]]]))
