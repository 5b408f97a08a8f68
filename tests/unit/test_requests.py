"""Request validation: typed requests from Triton-shaped numpy tensors; every bad value is named."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from tritonllm.contract import REQUEST_FIELDS
from tritonllm.ensembles.requests import (
    GenerationRequest,
    RequestError,
    RequestLimits,
    parse_request,
)
from tritonllm.ensembles.sampling import SamplingParams
from tritonllm.ensembles.tokenization import Tokenization, pack_word_list
from tritonllm.errors import ConfigError, TritonLLMError

LIMITS = RequestLimits(max_input_len=16, max_seq_len=40, vocab_size=1000, end_id=2, pad_id=3)


# Tensors as Triton hands them to a model with max_batch_size > 0: one request is [1, 1].
def s(*texts: str | bytes) -> np.ndarray:
    return np.array([[t.encode() if isinstance(t, str) else t for t in texts]], dtype=object)


def i32(v: int) -> np.ndarray:
    return np.array([[v]], dtype=np.int32)


def f32(v: float) -> np.ndarray:
    return np.array([[v]], dtype=np.float32)


def flag(v: bool) -> np.ndarray:
    return np.array([[v]], dtype=bool)


def ensemble(**overrides) -> dict[str, np.ndarray]:
    tensors = {"text_input": s("hello world"), "max_tokens": i32(8)}
    tensors.update(overrides)
    return {k: v for k, v in tensors.items() if v is not None}


def llm(**overrides) -> dict[str, np.ndarray]:
    # The LLM model's scalars have reshape: [] in config.pbtxt, so they arrive as [batch] = [1].
    tensors = {"input_ids": np.array([[1, 75, 501, 515]], dtype=np.int32),
               "input_lengths": np.array([4], dtype=np.int32),
               "request_output_len": np.array([8], dtype=np.int32)}
    tensors.update(overrides)
    return {k: v for k, v in tensors.items() if v is not None}


def test_full_ensemble_request() -> None:
    req = parse_request(ensemble(
        stream=flag(True), exclude_input_in_output=flag(True), end_id=i32(5), pad_id=i32(6),
        top_k=i32(40), top_p=f32(0.5), temperature=f32(0.7), repetition_penalty=f32(1.1),
        presence_penalty=f32(-0.5), frequency_penalty=f32(0.25), length_penalty=f32(1.0),
        min_tokens=i32(2), seed=np.array([[2**63 + 5]], dtype=np.uint64), beam_width=i32(1),
        num_return_sequences=i32(1), stop_words=s("\n\n", "", "日本"), bad_words=s("bad"),
        return_log_probs=flag(True),
    ), LIMITS)
    assert req == GenerationRequest(
        end_id=5, pad_id=6, prompt="hello world", streaming=True,
        sampling=SamplingParams(max_tokens=8, top_k=40, top_p=0.5,
                                temperature=pytest.approx(0.7),
                                repetition_penalty=pytest.approx(1.1), presence_penalty=-0.5,
                                frequency_penalty=0.25, length_penalty=1.0, min_tokens=2,
                                seed=2**63 + 5, end_ids=(5,), return_log_probs=True),
        stop_words=("\n\n", "日本"), bad_words=("bad",), exclude_input_in_output=True,
    )
    assert req.source("sampling.top_k") == "top_k"


def test_defaults_and_rank_one_shapes() -> None:
    req = parse_request({"text_input": np.array([b"hi"], dtype=object),
                         "max_tokens": np.array([3], dtype=np.int32)}, LIMITS)
    assert (req.end_id, req.pad_id, req.streaming, req.stop_words) == (2, 3, False, ())
    assert req.sampling == SamplingParams(max_tokens=3, end_ids=(2,))
    assert req.prompt_ids is None and req.exclude_input_in_output is None


def test_encode_checks_lengths_with_the_real_tokenizer(tiny_model: Path) -> None:
    tok = Tokenization.from_dir(tiny_model)
    hf = AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)
    limits = RequestLimits(16, 40, tok.vocab_size, tok.special.end_id, tok.special.pad_id)
    req = parse_request(ensemble(text_input=s("Café 日本語 🙂")), limits, encode=tok.encode)
    assert req.prompt_ids == tuple(hf.encode("Café 日本語 🙂"))
    long_text = " ".join(["model"] * 40)
    with pytest.raises(RequestError, match="max_input_len") as err:
        parse_request(ensemble(text_input=s(long_text)), limits, encode=tok.encode)
    assert err.value.field == "text_input"
    unencoded = parse_request(ensemble(text_input=s(long_text)), limits)  # checked later:
    with pytest.raises(RequestError) as err:
        unencoded.with_prompt_ids(tok.encode(long_text), limits)
    assert err.value.field == "text_input"


def test_prompt_plus_max_tokens_beyond_max_seq_len_names_max_tokens() -> None:
    req = parse_request(ensemble(max_tokens=i32(30)), LIMITS)
    assert req.with_prompt_ids(range(10), LIMITS).prompt_ids == tuple(range(10))
    with pytest.raises(RequestError, match="exceeds max_seq_len") as err:
        req.with_prompt_ids(range(11), LIMITS)
    assert err.value.field == "max_tokens"


def test_preprocessing_names() -> None:
    req = parse_request({"QUERY": s("hi"), "REQUEST_OUTPUT_LEN": i32(4),
                         "STOP_WORDS_DICT": s("x", "y"), "BAD_WORDS_DICT": s("z"),
                         "END_ID": i32(9), "PAD_ID": i32(8)}, LIMITS, model="preprocessing")
    assert (req.prompt, req.max_tokens, req.stop_words, req.bad_words) == ("hi", 4, ("x", "y"),
                                                                            ("z",))
    assert (req.end_id, req.pad_id) == (9, 8)
    with pytest.raises(RequestError) as err:
        parse_request({"QUERY": s(""), "REQUEST_OUTPUT_LEN": i32(4)}, LIMITS,
                      model="preprocessing")
    assert err.value.field == "QUERY"


def test_llm_request_with_word_lists() -> None:
    req = parse_request(llm(
        input_ids=np.array([[1, 75, 501, 515, 0, 0]], dtype=np.int32),
        streaming=np.array([True]), runtime_top_k=np.array([5], np.int32),
        runtime_top_p=np.array([0.9], np.float32), seed=np.array([7], np.uint64),
        min_tokens=np.array([3], np.int32),
        stop_words_list=pack_word_list([[[10, 11], [12]]]),
        bad_words_list=pack_word_list([[[13]]])[0],
    ), LIMITS, model="tensorrt_llm")
    assert req.prompt_ids == (1, 75, 501, 515)  # cut to input_lengths
    assert req.prompt is None and req.streaming
    assert (req.sampling.top_k, req.sampling.seed, req.sampling.min_tokens) == (5, 7, 3)
    assert req.sampling.top_p == pytest.approx(0.9)
    assert req.sampling.stop_ids == ((10, 11), (12,)) and req.bad_ids == ((13,),)
    assert req.source("sampling.seed") == "seed"
    # Without input_lengths the whole row is the prompt.
    assert parse_request(llm(input_lengths=None), LIMITS, model="tensorrt_llm").prompt_ids == (
        1, 75, 501, 515)


def test_llm_prompt_lengths_are_checked_without_a_tokenizer() -> None:
    with pytest.raises(RequestError) as err:
        parse_request(llm(input_ids=np.ones((1, 17), np.int32), input_lengths=None), LIMITS,
                      model="tensorrt_llm")
    assert err.value.field == "input_ids"
    with pytest.raises(RequestError) as err:
        parse_request(llm(request_output_len=np.array([37], np.int32)), LIMITS,
                      model="tensorrt_llm")
    assert err.value.field == "request_output_len"


BAD_ENSEMBLE = [
    ({"text_input": None}, "text_input", "required"),
    ({"text_input": s("")}, "text_input", "empty"),
    ({"text_input": s(b"\xff\xfeabc")}, "text_input", "UTF-8"),
    ({"text_input": i32(5)}, "text_input", "STRING"),
    ({"text_input": np.array([[b"a"], [b"b"]], dtype=object)}, "text_input", "one value"),
    ({"text_input": np.array([[7]], dtype=object)}, "text_input", "strings"),
    ({"max_tokens": None}, "max_tokens", "required"),
    ({"max_tokens": i32(0)}, "max_tokens", "1..40"),
    ({"max_tokens": i32(-3)}, "max_tokens", "1..40"),
    ({"max_tokens": i32(1_000_000)}, "max_tokens", "1..40"),
    ({"max_tokens": np.array([[2**40]], np.int64)}, "max_tokens", "outside"),
    ({"max_tokens": f32(8.0)}, "max_tokens", "integer"),
    ({"max_tokens": np.array([[8], [8]], np.int32)}, "max_tokens", "one value"),
    ({"max_tokens": np.array([[]], np.int32)}, "max_tokens", "one value"),
    ({"temperature": f32(-0.5)}, "temperature", ">= 0"),
    ({"temperature": f32(float("nan"))}, "temperature", "finite"),
    ({"temperature": i32(1)}, "temperature", "floating-point"),
    ({"top_p": f32(0.0)}, "top_p", "(0, 1]"),
    ({"top_p": f32(1.5)}, "top_p", "(0, 1]"),
    ({"top_k": i32(-1)}, "top_k", ">= 0"),
    ({"repetition_penalty": f32(0.0)}, "repetition_penalty", "> 0"),
    ({"presence_penalty": f32(float("inf"))}, "presence_penalty", "finite"),
    ({"beam_width": i32(2)}, "beam_width", "not supported"),
    ({"beam_width": i32(0)}, "beam_width", ">= 1"),
    ({"num_return_sequences": i32(2)}, "num_return_sequences", "not supported"),
    ({"min_tokens": i32(9)}, "min_tokens", "max_tokens"),
    ({"min_tokens": i32(-1)}, "min_tokens", ">= 0"),
    ({"seed": np.array([[-1]], np.int64)}, "seed", "outside"),
    ({"seed": f32(1.0)}, "seed", "integer"),
    ({"end_id": i32(1000)}, "end_id", "outside"),
    ({"end_id": i32(-1)}, "end_id", "outside"),
    ({"pad_id": i32(5000)}, "pad_id", "outside"),
    ({"stream": i32(1)}, "stream", "BOOL"),
    ({"exclude_input_in_output": np.array([[1.0]])}, "exclude_input_in_output", "BOOL"),
    ({"stop_words": np.array([[1, 2]], np.int32)}, "stop_words", "STRING"),
    ({"stop_words": np.array([[b"ok", 3]], dtype=object)}, "stop_words", "strings"),
    ({"stop_words": s(b"\xc3")}, "stop_words", "UTF-8"),
    ({"stop_words": np.array([[b"a"], [b"b"]], dtype=object)}, "stop_words", "one request"),
    ({"bad_words": np.array([[0.5]], np.float32)}, "bad_words", "STRING"),
]


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_ENSEMBLE)
def test_bad_ensemble_values_name_the_field(overrides, field: str, message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)) as err:
        parse_request(ensemble(**overrides), LIMITS)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


BAD_LLM = [
    ({"input_ids": None}, "input_ids", "required"),
    ({"input_ids": np.zeros((1, 0), np.int32)}, "input_ids", "empty"),
    ({"input_ids": np.array([[1, 1000]], np.int32)}, "input_ids", "vocabulary"),
    ({"input_ids": np.array([[1, -4]], np.int32)}, "input_ids", "vocabulary"),
    ({"input_ids": np.array([[1.0, 2.0]], np.float32)}, "input_ids", "integer"),
    ({"input_ids": np.ones((2, 3), np.int32)}, "input_ids", "one request"),
    ({"input_lengths": np.array([0], np.int32)}, "input_lengths", "outside"),
    ({"input_lengths": np.array([5], np.int32)}, "input_lengths", "outside"),
    ({"request_output_len": None}, "request_output_len", "required"),
    ({"runtime_top_p": np.array([2.0], np.float32)}, "runtime_top_p", "(0, 1]"),
    ({"runtime_top_k": np.array([-2], np.int32)}, "runtime_top_k", ">= 0"),
    ({"seed": np.array([-1], np.int64)}, "seed", "outside"),
    ({"min_tokens": np.array([99], np.int32)}, "min_tokens", "max_tokens"),
    ({"beam_width": np.array([4], np.int32)}, "beam_width", "not supported"),
    ({"stop_words_list": np.array([[[5, 6], [3, -1]]], np.int32)}, "stop_words_list", "past"),
    ({"stop_words_list": pack_word_list([[[1000]]])}, "stop_words_list", "vocabulary"),
    ({"stop_words_list": pack_word_list([[[1]], [[2]]])}, "stop_words_list", "one request"),
    ({"bad_words_list": np.zeros((1, 2, 1), np.float32)}, "bad_words_list", "integer"),
]


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_LLM)
def test_bad_llm_values_name_the_field(overrides, field: str, message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)) as err:
        parse_request(llm(**overrides), LIMITS, model="tensorrt_llm")
    assert err.value.field == field


def test_error_types_and_unknown_model() -> None:
    err = RequestError("top_p", "must be in (0, 1]")
    assert isinstance(err, TritonLLMError) and isinstance(err, ValueError)
    assert (err.field, err.message, str(err)) == ("top_p", "must be in (0, 1]",
                                                  "top_p: must be in (0, 1]")
    with pytest.raises(KeyError):
        parse_request(ensemble(), LIMITS, model="nope")
    assert REQUEST_FIELDS["tensorrt_llm_bls"] is REQUEST_FIELDS["ensemble"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_input_len": 50}, "max_input_len"),
        ({"max_input_len": 0}, "max_input_len"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"end_id": 1000}, "end_id"),
        ({"pad_id": -1}, "pad_id"),
    ],
)
def test_inconsistent_limits_are_config_errors(kwargs, message: str) -> None:
    base = {"max_input_len": 16, "max_seq_len": 40, "vocab_size": 1000, "end_id": 2, "pad_id": 3}
    with pytest.raises(ConfigError, match=message):
        RequestLimits(**{**base, **kwargs})


def test_max_tokens_cap() -> None:
    limits = RequestLimits(16, 40, 1000, 2, 3, max_tokens_cap=10)
    assert parse_request(ensemble(max_tokens=i32(10)), limits).max_tokens == 10
    with pytest.raises(RequestError, match=r"1\.\.10") as err:
        parse_request(ensemble(max_tokens=i32(11)), limits)
    assert err.value.field == "max_tokens"


# --- size bounds: checked before anything is decoded, tokenized or turned into Python lists ----

SMALL = RequestLimits(max_input_len=16, max_seq_len=40, vocab_size=1000, end_id=2, pad_id=3,
                      max_prompt_bytes=64, max_words=3, max_word_bytes=8, max_word_ids=10)


class Exploding(bytes):
    """A tensor element that must not be decoded (the size check comes first)."""

    def decode(self, *args: object, **kwargs: object) -> str:
        raise AssertionError("decoded before its size was checked")

    def __bytes__(self) -> bytes:
        raise AssertionError("decoded before its size was checked")


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"text_input": np.array([[Exploding(b"x" * 65)]], dtype=object)}, "text_input",
     "65 bytes, more than max_prompt_bytes (64)"),
    ({"text_input": s("é" * 33)}, "text_input", "66 bytes"),  # UTF-8 bytes, not characters
    ({"stop_words": s("a", "b", "c", "d")}, "stop_words", "4 words, more than max_words (3)"),
    ({"bad_words": s("", "", "", "")}, "bad_words", "max_words"),  # empty entries count too
    ({"stop_words": np.array([[b"ok", Exploding(b"123456789")]], dtype=object)}, "stop_words",
     "word 1 is 9 bytes, more than max_word_bytes (8)"),
    ({"bad_words": s("日本語")}, "bad_words", "9 bytes"),
])
def test_sizes_are_bounded_before_decoding(overrides, field: str, message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)) as err:
        parse_request(ensemble(**overrides), SMALL)
    assert err.value.field == field


def test_a_prompt_of_the_most_bytes_and_words_is_accepted() -> None:
    req = parse_request(ensemble(text_input=s("x" * 64), stop_words=s("12345678", "a", ""),
                                 bad_words=s("é" * 4)), SMALL)
    assert req.prompt == "x" * 64 and req.stop_words == ("12345678", "a")
    assert req.bad_words == ("éééé",)


def test_unbounded_prompt_bytes_by_default() -> None:
    assert parse_request(ensemble(text_input=s("x" * 100_000)), LIMITS).prompt == "x" * 100_000


def test_llm_id_tensors_are_bounded_by_their_size() -> None:
    long = np.ones((1, 17), np.int32)
    with pytest.raises(RequestError, match="17 tokens, more than max_input_len") as err:
        parse_request(llm(input_ids=long, input_lengths=None), SMALL, model="tensorrt_llm")
    assert err.value.field == "input_ids"
    # input_lengths takes a prefix: only what is used counts
    req = parse_request(llm(input_ids=long, input_lengths=np.array([16], np.int32)), SMALL,
                        model="tensorrt_llm")
    assert req.prompt_ids == (1,) * 16
    words = pack_word_list([[[5] * 6, [6] * 5]])  # 11 ids
    with pytest.raises(RequestError, match="11 ids, more than the 10") as err:
        parse_request(llm(stop_words_list=words), SMALL, model="tensorrt_llm")
    assert err.value.field == "stop_words_list"


def test_size_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_words"):
        RequestLimits(max_input_len=4, max_seq_len=8, vocab_size=10, end_id=2, pad_id=3,
                      max_words=0)


def test_refuse_unsupported_accepts_neutral_values_only() -> None:
    from tritonllm.contract import Unsupported
    from tritonllm.ensembles.requests import refuse_unsupported

    table = {"beam_width": Unsupported("m", "beam_width", 1, why="the engine"),
             "lora_task_id": Unsupported("m", "lora_task_id", why="m (no LoRA)")}
    refuse_unsupported({"beam_width": i32(1), "lora_task_id": np.zeros((1, 0), np.uint64),
                        "other": i32(5)}, table)
    with pytest.raises(RequestError, match="values other than 1 are not supported by the engine"):
        refuse_unsupported({"beam_width": i32(2)}, table)
    with pytest.raises(RequestError, match="values other than 1") as err:
        refuse_unsupported({"beam_width": np.array([[1, 1]], np.int32)}, table,
                           lambda n: f"{n} (client)")
    assert err.value.field == "beam_width (client)"
    with pytest.raises(RequestError,
                       match=re.escape("lora_task_id: is not supported by m (no LoRA)")):
        refuse_unsupported({"lora_task_id": np.array([0], np.uint64)}, table)
