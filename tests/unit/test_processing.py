"""Preprocessing and the CPU LLM's request parsing, without a server (real tiny tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonllm.ensembles.llm_service import to_llm_request
from tritonllm.ensembles.processing import Preprocessor
from tritonllm.ensembles.requests import RequestError, RequestLimits
from tritonllm.ensembles.tokenization import SpecialIds, Tokenization, parse_word_list
from tritonllm.settings import PreprocessingParams


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Tokenization:
    return Tokenization.from_dir(tiny_model)


def _pre(tok: Tokenization, end_ids: tuple[int, ...] = (2,), end_id: int | None = None,
         max_input_len: int | None = 64, max_seq_len: int | None = 128) -> Preprocessor:
    special = SpecialIds(bos_id=tok.special.bos_id, end_ids=end_ids, pad_id=3)
    return Preprocessor(tok, special, _params(max_input_len, max_seq_len, end_id=end_id))


def _params(max_input_len: int | None, max_seq_len: int | None,
            **bounds: Any) -> PreprocessingParams:
    return PreprocessingParams(tokenizer_dir=Path("tokenizer"), max_input_len=max_input_len,
                               max_seq_len=max_seq_len, **bounds)


def _q(text: str | bytes, max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    raw = text.encode() if isinstance(text, str) else text
    return {"QUERY": np.array([[raw]], dtype=object),
            "REQUEST_OUTPUT_LEN": np.array([[max_tokens]], dtype=np.int32), **extra}


def test_encodes_like_the_tokenizer_and_defaults_the_ids(tok: Tokenization) -> None:
    out = _pre(tok).run(_q("héllo wörld"))
    assert out["INPUT_ID"].tolist() == [tok.encode("héllo wörld")]
    assert out["REQUEST_INPUT_LEN"].tolist() == [[len(tok.encode("héllo wörld"))]]
    assert out["REQUEST_OUTPUT_LEN"].tolist() == [[8]]
    assert out["OUT_END_ID"].tolist() == [[2]] and out["OUT_PAD_ID"].tolist() == [[3]]
    assert parse_word_list(out["STOP_WORDS_IDS"]) == [[]]


def test_extra_eos_ids_become_one_token_stop_words(tok: Tokenization) -> None:
    stop = np.array([[b"the"]], dtype=object)
    out = _pre(tok, end_ids=(2, 7, 9)).run(_q("hi", STOP_WORDS_DICT=stop))
    assert out["OUT_END_ID"].tolist() == [[2]]
    assert parse_word_list(out["STOP_WORDS_IDS"]) == [[tok.encode_words(["the"])[0], [7], [9]]]


def test_a_client_end_id_replaces_the_eos_ids(tok: Tokenization) -> None:
    out = _pre(tok, end_ids=(2, 7)).run(_q("hi", END_ID=np.array([[11]], np.int32)))
    assert out["OUT_END_ID"].tolist() == [[11]]
    assert parse_word_list(out["STOP_WORDS_IDS"]) == [[]]


def test_a_configured_end_id_replaces_the_eos_ids(tok: Tokenization) -> None:
    out = _pre(tok, end_ids=(2, 7), end_id=5).run(_q("hi"))
    assert out["OUT_END_ID"].tolist() == [[5]]
    assert parse_word_list(out["STOP_WORDS_IDS"]) == [[]]


@pytest.mark.parametrize(("inputs", "field", "words"), [
    (_q(""), "text_input", "empty"),
    (_q(b"\xff\xfe"), "text_input", "UTF-8"),
    (_q("word " * 200), "text_input", "max_input_len"),
    (_q("hello", max_tokens=127), "max_tokens", "max_seq_len"),
    (_q("hello", max_tokens=0), "max_tokens", "1..128"),
    (_q("hello", STOP_WORDS_DICT=np.array([[1, 2]], np.int32)), "stop_words", "STRING"),
    (_q("hello", END_ID=np.array([[100_000]], np.int32)), "end_id", "outside"),
    ({"REQUEST_OUTPUT_LEN": np.array([[4]], np.int32)}, "text_input", "required"),
    ({"QUERY": np.array([[b"x"]], dtype=object),
      "REQUEST_OUTPUT_LEN": np.array([[4.0]], np.float32)}, "max_tokens", "integer"),
])
def test_bad_requests_name_the_client_field(tok: Tokenization, inputs: dict[str, Any],
                                            field: str, words: str) -> None:
    with pytest.raises(RequestError) as exc:
        _pre(tok).run(inputs)
    assert exc.value.field == field
    assert words in str(exc.value)


# --- the CPU LLM model's request parsing -------------------------------------------------------

LIMITS = RequestLimits(max_input_len=32, max_seq_len=64, vocab_size=1000, end_id=2, pad_id=3,
                       extra_end_ids=(7,))


def _llm(**extra: Any) -> dict[str, Any]:
    return {"input_ids": np.array([[1, 50, 60]], np.int32),
            "input_lengths": np.array([[3]], np.int32),
            "request_output_len": np.array([[8]], np.int32), **extra}


def test_llm_request_uses_every_eos_id_unless_the_request_names_one() -> None:
    req = to_llm_request(_llm(), LIMITS, default_exclude_input=True, default_streaming=False)
    assert req.prompt == [1, 50, 60]
    assert req.params.end_ids == (2, 7) and req.params.max_tokens == 8
    assert req.streaming is False and req.exclude_input_in_output is True
    named = to_llm_request(_llm(end_id=np.array([[9]], np.int32)), LIMITS, True, False)
    assert named.params.end_ids == (9,)
    default = to_llm_request(_llm(end_id=np.array([[2]], np.int32)), LIMITS, True, False)
    assert default.params.end_ids == (2, 7)


def test_llm_request_sampling_and_stops() -> None:
    stop = np.array([[[5, 6, 8], [2, 3, -1]]], np.int32)
    req = to_llm_request(_llm(
        runtime_top_k=np.array([[4]], np.int32), runtime_top_p=np.array([[0.5]], np.float32),
        temperature=np.array([[0.7]], np.float32), seed=np.array([[42]], np.uint64),
        min_tokens=np.array([[2]], np.int32), streaming=np.array([[True]]),
        stop_words_list=stop), LIMITS, True, False)
    p = req.params
    assert (p.top_k, p.top_p, p.seed, p.min_tokens) == (4, 0.5, 42, 2)
    assert p.temperature == pytest.approx(0.7)
    assert p.stop_ids == ((5, 6), (8,))
    assert p.do_sample and req.streaming


@pytest.mark.parametrize(("extra", "field"), [
    ({"input_ids": np.array([[1, 5000]], np.int32)}, "input_ids (text_input)"),
    ({"request_output_len": np.array([[0]], np.int32)}, "request_output_len (max_tokens)"),
    ({"request_output_len": np.array([[62]], np.int32)}, "request_output_len (max_tokens)"),
    ({"runtime_top_p": np.array([[0.0]], np.float32)}, "runtime_top_p (top_p)"),
    ({"bad_words_list": np.array([[[5], [1]]], np.int32)}, "bad_words_list (bad_words)"),
    ({"beam_width": np.array([[2]], np.int32)}, "beam_width"),
])
def test_llm_bad_requests_name_both_fields(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as exc:
        to_llm_request(_llm(**extra), LIMITS, True, False)
    assert exc.value.field == field


def test_llm_stop_input_only_stops() -> None:
    req = to_llm_request({"stop": np.array([[True]])}, LIMITS, True, False)
    assert req.stop_only


def test_postprocessing_output_is_1d_one_string_per_sequence(tiny_model: Path) -> None:
    """As NVIDIA's postprocessing: OUTPUT has no batch dimension ([batch * beams]), so a client
    reads ``as_numpy("text_output")[0].decode()``; checked against the HF tokenizer's decode."""
    from transformers import AutoTokenizer

    from tritonllm.ensembles.processing import Postprocessor
    from tritonllm.ensembles.tokenization import load_tokenizer

    hf = AutoTokenizer.from_pretrained(tiny_model)
    ids = hf.encode("café 日本語 tokens", add_special_tokens=False)
    post = Postprocessor(load_tokenizer(tiny_model))
    one = post.run({"TOKENS_BATCH": np.array([[ids]], np.int32),
                    "SEQUENCE_LENGTH": np.array([[len(ids)]], np.int32)})["OUTPUT"]
    assert one.shape == (1,)
    assert one[0].decode() == hf.decode(ids, skip_special_tokens=True)
    two = post.run({"TOKENS_BATCH": np.array([[ids], [ids[:3] + [0] * (len(ids) - 3)]], np.int32),
                    "SEQUENCE_LENGTH": np.array([[len(ids)], [3]], np.int32)})["OUTPUT"]
    assert [t.decode() for t in two] == [hf.decode(ids, skip_special_tokens=True),
                                        hf.decode(ids[:3], skip_special_tokens=True)]


# --- size bounds and refusals, before any tokenizing ---------------------------------------------

class NoEncode(Tokenization):
    """The tiny tokenizer, failing the test if a refused request gets tokenized."""

    def encode(self, text: str) -> list[int]:
        raise AssertionError("tokenized before the size check")

    def encode_words(self, words: Any) -> Any:
        raise AssertionError("tokenized before the size check")


def _no_encode(tok: Tokenization, **limits: Any) -> Preprocessor:
    guarded = NoEncode(tok.tokenizer, tok.special)
    return Preprocessor(guarded, tok.special, _params(64, 128, **limits))


def test_prompt_bytes_are_bounded_by_max_input_len_before_tokenizing(tok: Tokenization) -> None:
    per_token = tok.max_token_bytes
    assert per_token is not None
    pre = _no_encode(tok)
    assert pre.max_prompt_bytes == 64 * per_token
    with pytest.raises(RequestError) as exc:
        pre.run(_q("x" * (64 * per_token + 1)))
    assert exc.value.field == "text_input"
    assert f"{64 * per_token + 1} bytes, more than {64 * per_token}, the most that " \
           f"max_input_len (64) tokens can stand for" in str(exc.value)
    # at the bound it is tokenized, and then refused by its token count
    with pytest.raises(RequestError, match="more than max_input_len"):
        _pre(tok).run(_q("x" * (64 * per_token)))


def test_configured_bounds_replace_the_derived_ones(tok: Tokenization) -> None:
    pre = _no_encode(tok, max_prompt_bytes=10, max_words=2, max_word_bytes=4)
    for inputs, field, words in [
        (_q("12345678901"), "text_input", "11 bytes, more than max_prompt_bytes (10)"),
        (_q("hi", STOP_WORDS_DICT=np.array([[b"a", b"b", b"c"]], dtype=object)), "stop_words",
         "3 words, more than max_words (2)"),
        (_q("hi", BAD_WORDS_DICT=np.array([[b"abcde"]], dtype=object)), "bad_words",
         "word 0 is 5 bytes, more than max_word_bytes (4)"),
    ]:
        with pytest.raises(RequestError) as exc:
            pre.run(inputs)
        assert exc.value.field == field and words in str(exc.value)
    ok = Preprocessor(tok, tok.special, _params(64, 128, max_prompt_bytes=10, max_words=2,
                                                max_word_bytes=4))
    out = ok.run(_q("1234567890", STOP_WORDS_DICT=np.array([[b"abcd", b""]], dtype=object)))
    assert parse_word_list(out["STOP_WORDS_IDS"])[0][0] == tok.encode_words(["abcd"])[0]


@pytest.mark.parametrize(("tensor", "field"), [
    ("DECODER_QUERY", "decoder_text_input"),
    ("EMBEDDING_BIAS_WORDS", "embedding_bias_words"),
    ("PROMPT_TABLE_EXTRA_ID", "prompt_table_extra_id"),
])
def test_inputs_no_target_honours_are_refused_first(tok: Tokenization, tensor: str,
                                                     field: str) -> None:
    value = np.array([[b"x"]], dtype=object) if tensor != "PROMPT_TABLE_EXTRA_ID" \
        else np.array([[1]], np.uint64)
    with pytest.raises(RequestError, match="is not supported") as exc:
        _no_encode(tok).run(_q("x" * 100_000, **{tensor: value}))
    assert exc.value.field == field


def test_llm_seed_beyond_what_the_engine_tells_apart_is_refused() -> None:
    from tritonllm.ensembles.cpu_engine import MAX_SEED

    req = to_llm_request(_llm(seed=np.array([[MAX_SEED]], np.uint64)), LIMITS, True, False)
    assert req.params.seed == MAX_SEED
    for name, seed in [("seed", MAX_SEED + 1), ("seed", 2**63), ("seed", 2**32)]:
        with pytest.raises(RequestError, match="low 32 bits") as exc:
            to_llm_request(_llm(**{name: np.array([[seed]], np.uint64)}), LIMITS, True, False)
        assert exc.value.field == name


@pytest.mark.parametrize("name", ["lora_task_id", "guided_decoding_guide",
                                  "prompt_embedding_table", "return_context_logits"])
def test_llm_refuses_what_the_cpu_engine_cannot_honour(name: str) -> None:
    value = {"lora_task_id": np.array([[3]], np.uint64),
             "guided_decoding_guide": np.array([[b"{}"]], dtype=object),
             "prompt_embedding_table": np.ones((1, 2, 4), np.float16),
             "return_context_logits": np.array([[True]])}[name]
    with pytest.raises(RequestError, match="not supported by the CPU engine") as exc:
        to_llm_request(_llm(**{name: value}), LIMITS, True, False)
    assert exc.value.field == name
    if name == "return_context_logits":  # the neutral value asks for nothing
        to_llm_request(_llm(return_context_logits=np.array([[False]])), LIMITS, True, False)
