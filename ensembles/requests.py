"""Validating one request's tensors into a typed :class:`GenerationRequest`, as pure functions.

The Python-backend models (preprocessing, the BLS model, the CPU LLM model) hand
:func:`parse_request` the tensors of one request, ``{name: numpy array}``, and get back either a
typed request or a :class:`RequestError` that names the bad tensor, which the adapter turns into
an error response for that request only (the rest of the batch carries on).

Which tensor each field is read from is declared per model in
:data:`tritonllm.contract.REQUEST_FIELDS` (NVIDIA's names: ``text_input``, ``max_tokens``,
``stream`` for the ensemble and the BLS model; ``QUERY``, ``REQUEST_OUTPUT_LEN`` for
preprocessing; ``input_ids``, ``request_output_len``, ``runtime_top_k`` for ``tensorrt_llm``).
Tensors not in the table are ignored here; refusing inputs an engine cannot honour is the
contract's business.

Sizes are bounded before any expensive work (:class:`RequestLimits`, documented in
``docs/serving.md``, "Request limits"): the prompt's UTF-8 bytes before it is decoded or
tokenized, the number of stop/bad words and each one's bytes before they are decoded, and id
tensors by their element count before they become Python lists.

Inputs a model cannot honour are refused by :func:`refuse_unsupported` from the one table in
:func:`tritonllm.contract.unsupported_inputs`.

Values arrive as numpy arrays with the batch dimension (``[1]`` or ``[1, 1]`` for a scalar; a
STRING is an object array of ``bytes``). Dtypes are checked by kind: integer fields take any
integer dtype (value range checked), float fields any float dtype, flags only BOOL, strings only
STRING. A tensor holding more than one request's values is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import LLM_IN, REQUEST_FIELDS, Unsupported
from tritonllm.ensembles.sampling import SamplingParams
from tritonllm.ensembles.tokenization import parse_word_list
from tritonllm.errors import ConfigError, TritonLLMError
from tritonllm.settings import MAX_REQUEST_ID_BYTES, MAX_WORD_LIST_IDS, RepoSettings

__all__ = [
    "MAX_TOKENS_CAP",
    "UNBOUNDED",
    "GenerationRequest",
    "RequestError",
    "RequestLimits",
    "parse_request",
    "read_words",
    "refuse_unsupported",
]

_INT32_MAX = 2**31 - 1
_UINT64_MAX = 2**64 - 1


class RequestError(TritonLLMError, ValueError):
    """One request is invalid; ``field`` is the tensor (or parameter) to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_request_id(request_id: str) -> None:
    """Refuse a request id over :data:`~tritonllm.settings.MAX_REQUEST_ID_BYTES` UTF-8 bytes.

    Every model of ours checks it first: Triton copies the id into each response and our
    models keep ids (to match a later ``stop``), so its size is bounded like any input's.
    """
    size = len(request_id.encode("utf-8", "surrogatepass"))
    if size > MAX_REQUEST_ID_BYTES:
        raise RequestError("request_id", f"{size} bytes, more than {MAX_REQUEST_ID_BYTES}")


#: A length that bounds nothing: what an engine limit that is not known (None) stands for.
UNBOUNDED = 1 << 30
#: The largest ``max_tokens`` when the engine's ``max_seq_len`` is not known.
MAX_TOKENS_CAP = 1 << 20


@dataclass(frozen=True)
class RequestLimits:
    """What the served model allows and what a request defaults to: the one limits type of
    every model of ours (the engine's build limits are recorded in
    :class:`tritonllm.builders.manifest.EngineLimits` and reach the models as parameters).

    ``end_id`` is the default end id; ``extra_end_ids`` are the tokenizer's other EOS ids
    (Llama 3 has several), which stop generation too unless a request names its own end id.
    ``max_tokens_cap`` bounds ``max_tokens`` before the prompt is known (default
    ``max_seq_len``). Size bounds, checked before decoding or tokenizing: ``max_prompt_bytes``
    (a text prompt's UTF-8 bytes; None: unbounded; ``prompt_bytes_why``, when set, says in the
    error where the number comes from), ``max_words`` / ``max_word_bytes`` (entries of
    ``stop_words`` and of ``bad_words``, and each one's bytes), ``max_word_ids`` (ids in a
    ``stop_words_list`` or ``bad_words_list``). Raises ConfigError for inconsistent limits.
    """

    max_input_len: int
    max_seq_len: int
    vocab_size: int
    end_id: int
    pad_id: int
    max_tokens_cap: int | None = None
    max_prompt_bytes: int | None = None
    prompt_bytes_why: str = ""
    max_words: int = RepoSettings.max_words
    max_word_bytes: int = RepoSettings.max_word_bytes
    max_word_ids: int = MAX_WORD_LIST_IDS
    extra_end_ids: tuple[int, ...] = ()
    #: ``max_tokens`` of a request that sends none (None: it is required).
    default_max_tokens: int | None = None

    @classmethod
    def for_engine(cls, max_input_len: int | None, max_seq_len: int | None, vocab_size: int,
                   end_id: int, pad_id: int, **bounds: Any) -> RequestLimits:
        """Limits for an engine whose lengths may not be known (None): a missing
        ``max_input_len`` is ``max_seq_len``; a missing ``max_seq_len`` bounds nothing
        (:data:`UNBOUNDED`) and caps ``max_tokens`` at :data:`MAX_TOKENS_CAP`. ``bounds``: the
        other fields."""
        max_input_len = max_input_len or max_seq_len
        return cls(max_input_len=max_input_len or UNBOUNDED, max_seq_len=max_seq_len or UNBOUNDED,
                   vocab_size=vocab_size, end_id=end_id, pad_id=pad_id,
                   max_tokens_cap=None if max_seq_len else MAX_TOKENS_CAP, **bounds)

    def __post_init__(self) -> None:
        if not 0 < self.max_input_len <= self.max_seq_len:
            raise ConfigError(f"max_input_len: {self.max_input_len} must be in 1..max_seq_len "
                              f"({self.max_seq_len})")
        if self.vocab_size <= 0:
            raise ConfigError(f"vocab_size: {self.vocab_size} must be positive")
        for name, value in (("end_id", self.end_id), ("pad_id", self.pad_id),
                            *(("extra_end_ids", i) for i in self.extra_end_ids)):
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name}: {value} is outside the vocabulary "
                                  f"0..{self.vocab_size - 1}")
        for name in ("max_prompt_bytes", "max_words", "max_word_bytes", "max_word_ids"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: must be at least 1, got {value}")

    @property
    def output_cap(self) -> int:
        """The largest ``max_tokens`` accepted for any prompt."""
        return self.max_tokens_cap if self.max_tokens_cap is not None else self.max_seq_len

    @property
    def end_ids(self) -> tuple[int, ...]:
        """Every id that ends a request that names no end id of its own."""
        return (self.end_id, *(i for i in self.extra_end_ids if i != self.end_id))


@dataclass(frozen=True)
class GenerationRequest:
    """One validated request.

    A text request (ensemble, BLS, preprocessing) has ``prompt`` and, once encoded (see
    :meth:`with_prompt_ids`), ``prompt_ids``; an LLM-model request has ``prompt_ids`` only.
    ``sampling`` holds how it is to be generated, ``max_tokens``, stop ids (from
    ``stop_words_list``) and end ids included; stop and bad words given as text are
    ``stop_words`` / ``bad_words`` (empty strings dropped). ``sources`` maps each field to the
    tensor it came from, for errors raised after parsing (sampling fields as
    ``sampling.<name>``).
    """

    sampling: SamplingParams
    end_id: int
    pad_id: int
    prompt: str | None = None
    prompt_ids: tuple[int, ...] | None = None
    streaming: bool = False
    stop_words: tuple[str, ...] = ()
    bad_words: tuple[str, ...] = ()
    bad_ids: tuple[tuple[int, ...], ...] = ()
    exclude_input_in_output: bool | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_tokens(self) -> int:
        return self.sampling.max_tokens

    def source(self, attr: str) -> str:
        """The tensor name a field came from (the field name itself if it was defaulted)."""
        return self.sources.get(attr, attr)

    def with_prompt_ids(self, ids: Sequence[int], limits: RequestLimits) -> GenerationRequest:
        """This request with its prompt encoded; checks the prompt and total lengths."""
        prompt_ids = tuple(int(i) for i in ids)
        _check_lengths(prompt_ids, self.max_tokens, limits,
                       self.source("prompt_ids") if self.prompt is None else self.source("prompt"),
                       self.source("max_tokens"))
        return replace(self, prompt_ids=prompt_ids)


_REQUIRED = ("prompt", "prompt_ids", "max_tokens")


# --- readers: one array -> one typed value, or RequestError(name) -----------------------------

def _one(name: str, arr: npt.NDArray[Any]) -> Any:
    if arr.size != 1:
        raise RequestError(name, f"expected one value for this request, "
                                 f"got shape {list(arr.shape)}")
    return arr.reshape(-1)[0]


def _int(name: str, arr: npt.NDArray[Any], lo: int = -_INT32_MAX - 1, hi: int = _INT32_MAX) -> int:
    if arr.dtype.kind not in "iu":
        raise RequestError(name, f"expected an integer tensor, got {arr.dtype}")
    value = int(_one(name, arr))
    if not lo <= value <= hi:
        raise RequestError(name, f"{value} is outside {lo}..{hi}")
    return value


def _float(name: str, arr: npt.NDArray[Any]) -> float:
    if arr.dtype.kind != "f":
        raise RequestError(name, f"expected a floating-point tensor, got {arr.dtype}")
    value = float(_one(name, arr))
    if not math.isfinite(value):
        raise RequestError(name, f"must be finite, got {value}")
    return value


def _bool(name: str, arr: npt.NDArray[Any]) -> bool:
    if arr.dtype.kind != "b":
        raise RequestError(name, f"expected a BOOL tensor, got {arr.dtype}")
    return bool(_one(name, arr))


def _str(name: str, item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes | np.bytes_):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(name, f"is not valid UTF-8 (byte {exc.start})") from None
    raise RequestError(name, f"expected strings, got {type(item).__name__}")


def _utf8_size(item: object) -> int:
    """UTF-8 bytes of a tensor element without decoding it (a str only comes from tests)."""
    if isinstance(item, bytes | np.bytes_):
        return len(item)
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    return 0  # not a string: _str refuses it


def read_words(name: str, arr: npt.NDArray[Any], max_words: int,
               max_word_bytes: int) -> tuple[str, ...]:
    """One request's stop or bad words (empty ones dropped); RequestError names ``name`` for a
    bad tensor, more than ``max_words`` entries or a word over ``max_word_bytes`` (both checked
    before anything is decoded)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "OSU":
        raise RequestError(name, f"expected a STRING tensor, got {arr.dtype}")
    if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[0] != 1):
        raise RequestError(name, f"expected one request's strings, got shape {list(arr.shape)}")
    if arr.size > max_words:
        raise RequestError(name, f"{arr.size} words, more than max_words ({max_words})")
    items = arr.reshape(-1).tolist()
    for i, item in enumerate(items):
        size = _utf8_size(item)
        if size > max_word_bytes:
            raise RequestError(name, f"word {i} is {size} bytes, more than max_word_bytes "
                                     f"({max_word_bytes})")
    return tuple(w for w in (_str(name, item) for item in items) if w)


def _text(name: str, arr: npt.NDArray[Any], max_bytes: int | None = None, why: str = "") -> str:
    if arr.dtype.kind not in "OSU":
        raise RequestError(name, f"expected a STRING tensor, got {arr.dtype}")
    item = _one(name, arr)
    if max_bytes is not None and (size := _utf8_size(item)) > max_bytes:
        raise RequestError(name, f"{size} bytes, more than "
                                 f"{why or f'max_prompt_bytes ({max_bytes})'}")
    text = _str(name, item)
    if not text:
        raise RequestError(name, "must not be empty")
    return text


def _ids(name: str, arr: npt.NDArray[Any], vocab_size: int, max_len: int,
         length: int | None = None) -> tuple[int, ...]:
    if arr.dtype.kind not in "iu":
        raise RequestError(name, f"expected an integer tensor, got {arr.dtype}")
    if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[0] != 1):
        raise RequestError(name, f"expected one request's ids, got shape {list(arr.shape)}")
    flat = arr.reshape(-1)
    if not flat.size:
        raise RequestError(name, "must not be empty")
    used = length if length is not None and 1 <= length <= flat.size else flat.size
    if used > max_len:  # before the ids become Python ints
        raise RequestError(name, f"prompt has {used} tokens, more than max_input_len "
                                 f"({max_len})")
    outside = (flat < 0) | (flat >= vocab_size)
    if outside.any():
        raise RequestError(name, f"id {int(flat[outside.argmax()])} is outside the vocabulary "
                                 f"0..{vocab_size - 1}")
    if length is not None and not 1 <= length <= flat.size:
        raise RequestError(LLM_IN.input_lengths, f"{length} is outside 1..{flat.size}")
    return tuple(flat[:used].tolist())


def _word_ids(name: str, arr: npt.NDArray[Any], vocab_size: int,
              max_ids: int) -> tuple[tuple[int, ...], ...]:
    if arr.ndim == 3 and arr.shape[0] != 1:
        raise RequestError(name, f"expected one request's word list, got shape {list(arr.shape)}")
    if arr.shape and arr.shape[-1] > max_ids:  # before the ids become Python lists
        raise RequestError(name, f"{arr.shape[-1]} ids, more than the {max_ids} a word list "
                                 "may hold")
    try:
        words = parse_word_list(arr)[0]
    except ValueError as exc:
        raise RequestError(name, str(exc)) from None
    out = tuple(tuple(w) for w in words)
    _check_vocab(name, [i for w in out for i in w], vocab_size)
    return out


def _check_vocab(name: str, ids: Sequence[int], vocab_size: int) -> None:
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise RequestError(name, f"id {bad[0]} is outside the vocabulary 0..{vocab_size - 1}")


def _check_lengths(prompt_ids: Sequence[int], max_tokens: int, limits: RequestLimits,
                   prompt_field: str, max_tokens_field: str) -> None:
    n = len(prompt_ids)
    if n == 0:
        raise RequestError(prompt_field, "encodes to no tokens")
    if n > limits.max_input_len:
        raise RequestError(prompt_field, f"prompt has {n} tokens, more than max_input_len "
                                         f"({limits.max_input_len})")
    if n + max_tokens > limits.max_seq_len:
        raise RequestError(max_tokens_field, f"prompt ({n} tokens) + max_tokens ({max_tokens}) "
                                             f"exceeds max_seq_len ({limits.max_seq_len})")


def refuse_unsupported(inputs: Mapping[str, Any], unsupported: Mapping[str, Unsupported],
                       label: Callable[[str], str] = str) -> None:
    """Raise RequestError for the first input of ``unsupported`` (see
    :func:`tritonllm.contract.unsupported_inputs`) that ``inputs`` carries with a value other
    than its neutral one; ``label`` names it as the client knows it."""
    for name, u in unsupported.items():
        value = inputs.get(name)
        if value is None or np.asarray(value).size == 0:
            continue
        arr = np.asarray(value)
        if u.neutral is not None and arr.size == 1:
            one = arr.reshape(-1)[0]
            if (one.item() if isinstance(one, np.generic) else one) == u.neutral:
                continue
        what = "is" if u.neutral is None else f"values other than {u.neutral!r} are"
        raise RequestError(label(name), f"{what} not supported by {u.why}")


# --- parse ---------------------------------------------------------------------------------------

def parse_request(
    tensors: Mapping[str, npt.NDArray[Any]],
    limits: RequestLimits,
    *,
    model: str = "ensemble",
    encode: Callable[[str], Sequence[int]] | None = None,
) -> GenerationRequest:
    """Validate one request of ``model`` (a key of :data:`tritonllm.contract.REQUEST_FIELDS`).

    With ``encode`` a text prompt is tokenized and the prompt and total lengths are checked now;
    without it, call :meth:`GenerationRequest.with_prompt_ids` later. Raises RequestError naming
    the first bad tensor; raises KeyError for an unknown ``model``.
    """
    table = REQUEST_FIELDS[model]
    raw: dict[str, tuple[str, npt.NDArray[Any]]] = {
        attr: (name, np.asarray(tensors[name])) for attr, name in table.items()
        if tensors.get(name) is not None}
    for attr in _REQUIRED:
        if attr in table and attr not in raw and attr != "max_tokens":
            raise RequestError(table[attr], "is required")
    sources = {attr: name for attr, (name, _) in raw.items()}

    def get(attr: str, read: Callable[[str, npt.NDArray[Any]], Any]) -> Any:
        return read(*raw[attr]) if attr in raw else None

    v = limits.vocab_size
    if "max_tokens" in raw:
        max_tokens = _int(*raw["max_tokens"])
    elif limits.default_max_tokens is not None:
        max_tokens = limits.default_max_tokens
    else:
        raise RequestError(table["max_tokens"], "is required")
    if not 1 <= max_tokens <= limits.output_cap:
        raise RequestError(table["max_tokens"],
                           f"must be in 1..{limits.output_cap}, got {max_tokens}")
    end_id = get("end_id", lambda n, a: _int(n, a, 0, v - 1))
    pad_id = get("pad_id", lambda n, a: _int(n, a, 0, v - 1))
    values = _parse_sampling(raw, max_tokens)

    def words(name: str, arr: npt.NDArray[Any]) -> tuple[str, ...]:
        return read_words(name, arr, limits.max_words, limits.max_word_bytes)

    def word_ids(name: str, arr: npt.NDArray[Any]) -> tuple[tuple[int, ...], ...]:
        return _word_ids(name, arr, v, limits.max_word_ids)

    prompt = get("prompt", lambda n, a: _text(n, a, limits.max_prompt_bytes,
                                              limits.prompt_bytes_why))
    length = get("input_lengths", lambda n, a: _int(n, a, 1))
    prompt_ids = get("prompt_ids", lambda n, a: _ids(n, a, v, limits.max_input_len, length))
    # A request's own end id replaces the default ones; the default one named again does not.
    end_ids = limits.end_ids if end_id is None or end_id == limits.end_id else (end_id,)
    sampling = SamplingParams(
        max_tokens=max_tokens, end_ids=end_ids, stop_ids=get("stop_ids", word_ids) or (),
        return_log_probs=bool(get("return_log_probs", _bool)), **values)
    request = GenerationRequest(
        sampling=sampling,
        end_id=limits.end_id if end_id is None else end_id,
        pad_id=limits.pad_id if pad_id is None else pad_id,
        prompt=prompt,
        streaming=bool(get("streaming", _bool)),
        stop_words=get("stop_words", words) or (),
        bad_words=get("bad_words", words) or (),
        bad_ids=get("bad_ids", word_ids) or (),
        exclude_input_in_output=get("exclude_input_in_output", _bool),
        sources=sources,
    )
    if prompt_ids is not None:
        return request.with_prompt_ids(prompt_ids, limits)
    if encode is not None and prompt is not None:
        return request.with_prompt_ids(encode(prompt), limits)
    return request


def _parse_sampling(
    raw: Mapping[str, tuple[str, npt.NDArray[Any]]], max_tokens: int
) -> dict[str, Any]:
    """The sampling knobs the request sets, by :class:`SamplingParams` field."""
    values: dict[str, Any] = {}
    for attr, (name, arr) in raw.items():
        if attr.startswith("sampling."):
            key = attr.removeprefix("sampling.")
            kind, check = _SAMPLING_RULES[key]
            value = (_float(name, arr) if kind == "float"
                     else _int(name, arr, 0, _UINT64_MAX) if kind == "uint64"
                     else _int(name, arr))
            problem = check(value, max_tokens)
            if problem:
                raise RequestError(name, f"{problem}, got {value}")
            values[key] = value
    return values


def _only_one(what: str) -> Callable[[Any, int], str | None]:
    def check(value: Any, _max_tokens: int) -> str | None:
        if value < 1:
            return "must be >= 1"
        return f"{what} is not supported" if value > 1 else None
    return check


def _no_check(_value: Any, _max_tokens: int) -> None:
    return None


#: sampling field -> (value kind, check(value, max_tokens) -> problem or None)
_SAMPLING_RULES: dict[str, tuple[str, Callable[[Any, int], str | None]]] = {
    "top_k": ("int", lambda x, _: "must be >= 0" if x < 0 else None),
    "top_p": ("float", lambda x, _: "must be in (0, 1]" if not 0 < x <= 1 else None),
    "temperature": ("float", lambda x, _: "must be >= 0" if x < 0 else None),
    "repetition_penalty": ("float", lambda x, _: "must be > 0" if x <= 0 else None),
    "presence_penalty": ("float", _no_check),
    "frequency_penalty": ("float", _no_check),
    "length_penalty": ("float", _no_check),
    "min_tokens": ("int", lambda x, m: "must be >= 0" if x < 0
                   else f"must not exceed max_tokens ({m})" if x > m else None),
    "seed": ("uint64", _no_check),
    "beam_width": ("int", _only_one("beam search (beam_width > 1)")),
    "num_return_sequences": ("int", _only_one("more than one sequence per request")),
}
