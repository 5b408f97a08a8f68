"""The BLS pipeline's request checks without a server: a scripted preprocessing and LLM.

What is checked: inputs no target honours are refused before any model is called; inputs only
some targets honour are passed on to the LLM (whose refusal the model relays), shaped as the
LLM's contract wants them; stop and bad words are bounded before anything is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonllm import contract as C
from tritonllm.ensembles.bls import BLSPipeline
from tritonllm.ensembles.requests import RequestError
from tritonllm.ensembles.tokenization import load_tokenizer


class Stream:
    def __init__(self, outputs: list[dict[str, Any]]) -> None:
        self.outputs = outputs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.outputs)

    def cancel(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], bool]] = []

    def send(self, outputs: dict[str, Any], final: bool) -> None:
        self.sent.append((outputs, final))

    def is_cancelled(self) -> bool:
        return False


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    return load_tokenizer(tiny_model)


class Calls:
    def __init__(self, tokenizer: Any, text: str = " hello world") -> None:
        self.pre: list[dict[str, Any]] = []
        self.llm: list[dict[str, Any]] = []
        self.ids = tokenizer.encode(text, add_special_tokens=False)

    def call_pre(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.pre.append(inputs)
        return {"INPUT_ID": np.array([[1, 5]], np.int32),
                "REQUEST_INPUT_LEN": np.array([[2]], np.int32),
                "REQUEST_OUTPUT_LEN": np.array([[8]], np.int32),
                "OUT_END_ID": np.array([[2]], np.int32), "OUT_PAD_ID": np.array([[3]], np.int32),
                "BAD_WORDS_IDS": np.array([[[0], [-1]]], np.int32)}

    def call_llm(self, inputs: dict[str, Any], outputs: list[str]) -> Stream:
        self.llm.append(inputs)
        n = len(self.ids)
        return Stream([{"output_ids": np.array([[self.ids]], np.int32),
                        "sequence_length": np.array([[n]], np.int32),
                        C.FINISH_REASON: np.array([b"length"], dtype=object)}])


def _pipeline(tokenizer: Any, calls: Calls, **kw: Any) -> BLSPipeline:
    return BLSPipeline(tokenizer, calls.call_pre, calls.call_llm, **kw)


def _request(**extra: Any) -> dict[str, Any]:
    return {"text_input": np.array([[b"hi"]], dtype=object),
            "max_tokens": np.array([[8]], np.int32), **extra}


def _value(name: str, model: str = C.BLS) -> np.ndarray:
    """A non-neutral value of the right dtype and shape for ``name`` (a BLS input)."""
    t = C.contract(model).input(name)
    shape = [1, *(2 if d == -1 else d for d in t.dims)] if t.reshape != () else [1]
    if t.dtype == "STRING":
        return np.full(shape, b"x", dtype=object)
    if t.dtype == "BOOL":
        return np.ones(shape, dtype=bool)
    dtype = {"FP16": np.float16, "FP32": np.float32, "INT32": np.int32, "INT64": np.int64,
             "UINT8": np.uint8, "UINT64": np.uint64}[t.dtype]
    return np.full(shape, 7, dtype=dtype)


@pytest.mark.parametrize("name", sorted(C.unsupported_inputs(C.BLS)))
def test_inputs_no_target_honours_are_refused_before_any_call(tokenizer: Any,
                                                              name: str) -> None:
    calls = Calls(tokenizer)
    with pytest.raises(RequestError, match="not supported") as exc:
        _pipeline(tokenizer, calls).run(_request(**{name: _value(name)}), Sink())
    assert exc.value.field == name
    assert calls.pre == [] and calls.llm == []


def test_neutral_values_are_accepted(tokenizer: Any) -> None:
    calls = Calls(tokenizer)
    neutral = {"return_context_logits": np.array([False]), "num_draft_tokens":
               np.array([[0]], np.int32), "use_draft_logits": np.array([False])}
    sink = Sink()
    _pipeline(tokenizer, calls).run(_request(**neutral), sink)
    assert sink.sent[-1][0]["text_output"][0].decode() == " hello world"


def test_inputs_some_targets_honour_go_on_to_the_llm_shaped_as_it_wants(tokenizer: Any) -> None:
    """On GPU TensorRT-LLM honours these; on CPU the LLM model refuses them (and the BLS model
    relays that refusal): either way the BLS model itself never drops them."""
    calls = Calls(tokenizer)
    extra = {name: _value(name) for name, (model, _) in C.BLS_FORWARDS.items()
             if model == C.LLM and name in ("lora_task_id", "lora_weights", "lora_config",
                                            "guided_decoding_guide_type",
                                            "guided_decoding_guide", "prompt_embedding_table",
                                            "prompt_vocab_size", "length_penalty")}
    assert len(extra) == 8
    _pipeline(tokenizer, calls).run(_request(**extra), Sink())
    sent = calls.llm[0]
    for name in extra:
        inner = C.BLS_FORWARDS[name][1]
        t = C.LLM_CONTRACT.input(inner)
        assert sent[inner].shape[0] == 1 and sent[inner].ndim == 1 + len(t.dims), name
        assert sent[inner].dtype == extra[name].dtype


def test_stop_and_bad_words_are_bounded_before_any_call(tokenizer: Any) -> None:
    calls = Calls(tokenizer)
    bls = _pipeline(tokenizer, calls, max_words=2, max_word_bytes=5)
    for extra, field, words in [
        ({"stop_words": np.array([[b"a", b"b", b"c"]], dtype=object)}, "stop_words",
         "3 words, more than max_words (2)"),
        ({"stop_words": np.array([[b"x" * (1 << 20)]], dtype=object)}, "stop_words",
         "word 0 is 1048576 bytes, more than max_word_bytes (5)"),
        ({"bad_words": np.array([[b"abcdef"]], dtype=object)}, "bad_words",
         "6 bytes, more than max_word_bytes (5)"),
    ]:
        with pytest.raises(RequestError) as exc:
            bls.run(_request(**extra), Sink())
        assert exc.value.field == field and words in str(exc.value)
    assert calls.pre == [] and calls.llm == []


def test_stop_strings_within_bounds_cut_the_text(tokenizer: Any) -> None:
    calls = Calls(tokenizer)
    sink = Sink()
    _pipeline(tokenizer, calls, max_words=2, max_word_bytes=6).run(
        _request(stop_words=np.array([[b" world", b""]], dtype=object)), sink)
    out, final = sink.sent[-1]
    assert final and out["text_output"][0].decode() == " hello"
    assert out[C.FINISH_REASON][0].decode() == "stop"


def test_an_oversized_request_id_is_refused_before_any_call(tokenizer: Any) -> None:
    calls = Calls(tokenizer)
    with pytest.raises(RequestError, match="more than 256") as exc:
        _pipeline(tokenizer, calls).run(_request(), Sink(), request_id="r" * (1 << 20))
    assert exc.value.field == "request_id"
    assert calls.pre == [] and calls.llm == []
    sink = Sink()
    _pipeline(tokenizer, calls).run(_request(), sink, request_id="r" * 256)
    assert sink.sent[-1][1]
