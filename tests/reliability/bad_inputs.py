"""The bad-input matrix of issue #14, generated from the request contract.

:func:`cases` derives every case of one model from :mod:`tritonllm.contract` (its inputs,
dtypes, dims, required and CPU-unsupported inputs); only the semantic ranges (:func:`ranges`)
name fields, and each of those must exist in the contract. A case is the request's tensors as
the official tritonclient sends them over gRPC (:class:`~harness.Wire`), from which the JSON body
of Triton's HTTP generate endpoints is derived where JSON can say the same thing (right dtype,
one value or one list per input, a declared name: the generate endpoint turns unknown keys into
request parameters and infers dtypes from the model), or an HTTP body of its own (the
``json-*`` categories, which only exist over HTTP).

Categories (``<category>/<what>``):

==============  =================================================================================
dtype           every input with the wrong dtype (Triton core refuses it, naming the input)
rank            every input with one dimension too many
batchless       every required input without its batch dimension
batch           the required inputs as a batch of 2 (one request, two values) and of 0
missing         each required input left out, and all of them
duplicate       each required input twice; the first optional input of each dtype twice
empty           an empty prompt, a prompt of shape [1, 0]
unknown         names the model does not declare: invented, wrong case, empty, 10 kB long, the
                inputs of the models behind it (``input_ids``, ``QUERY``), the other model's
unsupported     every input the CPU target cannot honour, with a value that asks for it
nonfinite       NaN, inf and -inf in every supported FP32 input
range           negative, zero and out-of-range values (:func:`ranges`)
utf8            invalid UTF-8 (stray byte, overlong encoding, cut sequence) in every STRING input
hostile         a 5 MB prompt, a 4 MB prompt of 4-byte characters, a 1 MB and 10,000 stop/bad
                words, a 1 MB request id: refused within :data:`HOSTILE_S`
json-type       (HTTP) a JSON value of the wrong kind for one input of each dtype
json-wrap       (HTTP) an integer that does not fit the input's dtype
json-body       (HTTP) a body that is not a JSON object, a lone surrogate, a number too large
==============  =================================================================================

A case passes when the request is refused with an error naming one of its ``fields`` (gRPC:
the stream's error message; HTTP: a 4xx status and the field in the body), within its bound,
while a good request on the same model completes and every process of the server survives
(see test_bad_input_matrix.py). Cases that fail today are listed in :data:`XFAILS`.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from harness import Wire, numpy_of, triton_wire_dtype

from tritonllm import contract as C
from tritonllm.tiny import SIZES

MODELS = (C.ENSEMBLE, C.BLS)
TRANSPORTS = ("grpc", "http", "sse")  # gRPC stream, POST generate, POST generate_stream
ANSWER_S = 10.0  # every refusal comes within this
HOSTILE_S = 2.0  # ... and one of a hostile size within this (measured: < 0.1 s)
BAD_MAX_TOKENS = 4  # the max_tokens of a bad request's base
PROMPT = b"The quick brown fox"
#: Values of the required inputs in a bad request's base, by dtype.
GOOD_VALUES: dict[str, Any] = {"STRING": PROMPT, "INT32": BAD_MAX_TOKENS}
#: The dtype sent instead of each declared one.
WRONG_DTYPE = {"STRING": "INT32", "INT32": "FP32", "FP32": "INT32", "BOOL": "INT32",
               "UINT64": "INT64", "INT64": "INT32", "FP16": "FP32", "UINT8": "INT8",
               "INT8": "UINT8"}
#: A JSON value of the wrong kind for each dtype (the generate endpoint parses by dtype).
WRONG_JSON = {"INT32": b'"4"', "FP32": b'"0.5"', "BOOL": b'"true"', "STRING": b"5",
              "UINT64": b"-1"}
BAD_UTF8 = {"stray-byte": b"caf\xff", "overlong": b"\xc0\xaf", "cut-sequence": b"caf\xc3"}


@dataclass(frozen=True)
class Limits:
    """What the served engine allows (the tiny model's; the fixture checks the engine's)."""

    vocab_size: int
    max_seq_len: int

    @classmethod
    def tiny(cls) -> Limits:
        spec = SIZES["tiny"]
        return cls(vocab_size=spec.vocab_size, max_seq_len=spec.max_position_embeddings)


LIMITS = Limits.tiny()


def ranges(limits: Limits = LIMITS) -> dict[str, list[Any]]:
    """Out-of-range values per input (the checks of ensembles/requests.py and the engine)."""
    return {
        "max_tokens": [0, -1, limits.max_seq_len + 1, 2**31 - 1],
        "min_tokens": [-1, BAD_MAX_TOKENS + 1],
        "top_k": [-1],
        "top_p": [0.0, -0.5, 1.5],
        "temperature": [-1.0],
        "repetition_penalty": [0.0, -1.0],
        "end_id": [-1, limits.vocab_size],
        "pad_id": [-1, limits.vocab_size],
        "seed": [2**32, 2**64 - 1],  # the CPU engine keeps 32 bits of a seed
        "beam_width": [0],
        "num_return_sequences": [0],
    }


@dataclass(frozen=True)
class Case:
    """One bad request. ``fields``: the error must name one of them (empty: any error)."""

    id: str
    fields: tuple[str, ...]
    wires: tuple[Wire, ...] | None = None  # gRPC (and HTTP when expressible)
    body: bytes | None = None  # HTTP only
    request_id: str = ""
    within_s: float = ANSWER_S

    @property
    def category(self) -> str:
        return self.id.split("/", 1)[0]


# --- building requests --------------------------------------------------------------------------

def _shape(t: C.Tensor, fill: int = 1) -> list[int]:
    return [1, *(fill if d == -1 else d for d in t.dims)]


def wire(model: str, name: str, value: Any, *, dtype: str | None = None,
         shape: Sequence[int] | None = None) -> Wire:
    """``value`` as input ``name`` of ``model``: its declared dtype and one request's shape
    unless given."""
    t = C.contract(model).input(name) if C.contract(model).has_input(name) else None
    if dtype is None:
        if t is None:
            raise KeyError(f"{model} has no input {name!r}: give a dtype")
        dtype = t.dtype
    if shape is None:
        shape = _shape(t) if t is not None else [1, 1]
    arr = np.array(value if isinstance(value, list) else [value], dtype=numpy_of(dtype))
    return Wire(name, arr.reshape(shape), triton_wire_dtype(dtype))


def base(model: str) -> tuple[Wire, ...]:
    """A good request: the required inputs (a short prompt, max_tokens 4)."""
    c = C.contract(model)
    out = []
    for name in c.required_inputs:
        dtype = c.input(name).dtype
        if dtype not in GOOD_VALUES:
            raise KeyError(f"no good value for required input {name} ({dtype}): extend "
                           "GOOD_VALUES")
        out.append(wire(model, name, GOOD_VALUES[dtype]))
    return tuple(out)


def _with(model: str, *wires: Wire, drop: Sequence[str] = ()) -> tuple[Wire, ...]:
    """The base request with ``wires`` replacing (or joining) its tensors of the same name."""
    names = {w.name for w in wires} | set(drop)
    return (*(w for w in base(model) if w.name not in names), *wires)


def _filled(model: str, name: str, dtype: str, shape: Sequence[int], value: Any = 1) -> Wire:
    count = int(np.prod(shape))
    return wire(model, name, [value] * count, dtype=dtype, shape=shape)


def _some_value(dtype: str) -> Any:
    return {"STRING": b"x", "BOOL": True}.get(dtype, 1)


def _non_neutral(neutral: object, dtype: str) -> Any:
    if neutral is None:
        return _some_value(dtype)
    if isinstance(neutral, bool):
        return not neutral
    if isinstance(neutral, int):
        return neutral + 1
    raise TypeError(f"unexpected neutral value {neutral!r}")


# --- JSON for the generate endpoints -------------------------------------------------------------

def _json_value(x: Any) -> bytes:
    if isinstance(x, bytes | np.bytes_):
        raw = bytes(x)
        try:
            return json.dumps(raw.decode("utf-8")).encode()
        except UnicodeDecodeError:  # sent as is: the endpoint passes the bytes on
            return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    if isinstance(x, bool | np.bool_):
        return b"true" if x else b"false"
    if isinstance(x, np.integer | int):
        return str(int(x)).encode()
    f = float(x)
    if math.isnan(f):
        return b"NaN"
    if math.isinf(f):
        return b"Infinity" if f > 0 else b"-Infinity"
    return repr(f).encode()


def json_pairs(pairs: Sequence[tuple[str, bytes]]) -> bytes:
    """A JSON object from (key, encoded value) pairs, duplicates kept."""
    return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in pairs) + b"}"


def json_body(model: str, wires: Sequence[Wire]) -> bytes | None:
    """The generate endpoint's body saying what ``wires`` say, or None when JSON cannot."""
    c = C.contract(model)
    pairs = []
    for w in wires:
        if not c.has_input(w.name):
            return None  # an unknown key is a request parameter there, not an input
        t = c.input(w.name)
        if triton_wire_dtype(t.dtype) != w.dtype or w.value.ndim != 2 or w.value.shape[0] != 1:
            return None
        if t.dims == (1,) and w.value.shape == (1, 1):
            pairs.append((w.name, _json_value(w.value[0, 0])))
        elif t.dims == (-1,) and w.value.shape[1] >= 1:
            pairs.append((w.name, b"[" + b",".join(_json_value(x) for x in w.value[0]) + b"]"))
        else:
            return None
    return json_pairs(pairs)


def transports(model: str, case: Case) -> list[str]:
    """Where ``case`` can be sent for ``model``."""
    out = []
    if case.wires is not None:
        out.append("grpc")
    http = case.body is not None or (case.wires is not None and not case.request_id
                                      and json_body(model, case.wires) is not None)
    if http:
        out += ["http", "sse"]
    return out


def http_body(model: str, case: Case) -> bytes:
    if case.body is not None:
        return case.body
    assert case.wires is not None
    body = json_body(model, case.wires)
    assert body is not None, case.id
    return body


# --- the generators -----------------------------------------------------------------------------

def _dtype(model: str) -> Iterator[Case]:
    for t in C.contract(model).inputs:
        wrong = WRONG_DTYPE[t.dtype]
        value = _some_value(wrong)
        yield Case(f"dtype/{t.name}", (t.name,),
                   _with(model, _filled(model, t.name, wrong, _shape(t), value)))


def _rank(model: str) -> Iterator[Case]:
    for t in C.contract(model).inputs:
        value = GOOD_VALUES.get(t.dtype, _some_value(t.dtype)) if not t.optional \
            else _some_value(t.dtype)
        yield Case(f"rank/{t.name}", (t.name,),
                   _with(model, _filled(model, t.name, t.dtype, [*_shape(t), 1], value)))


def _batch(model: str) -> Iterator[Case]:
    c = C.contract(model)
    required = c.required_inputs
    for name in required:
        t = c.input(name)
        yield Case(f"batchless/{name}", (name,),
                   _with(model, _filled(model, name, t.dtype, _shape(t)[1:],
                                        GOOD_VALUES[t.dtype])))
    two = [_filled(model, n, c.input(n).dtype, [2, *_shape(c.input(n))[1:]],
                   GOOD_VALUES[c.input(n).dtype]) for n in required]
    yield Case("batch/2", required, tuple(two))
    zero = [wire(model, n, [], shape=[0, *_shape(c.input(n))[1:]]) for n in required]
    yield Case("batch/0", required, tuple(zero))


def _missing(model: str) -> Iterator[Case]:
    required = C.contract(model).required_inputs
    for name in required:
        yield Case(f"missing/{name}", (name,), _with(model, drop=[name]))
    yield Case("missing/all", required, ())


def _duplicate(model: str) -> Iterator[Case]:
    c = C.contract(model)
    unsupported = C.unsupported_inputs(model, "cpu")
    for w in base(model):
        yield Case(f"duplicate/{w.name}", (w.name,), (*base(model), w))
    seen: set[str] = set()
    for t in c.inputs:
        if t.optional and t.name not in unsupported and t.dtype not in seen:
            seen.add(t.dtype)
            w = wire(model, t.name, _some_value(t.dtype) if t.dtype != "STRING" else b"\n")
            yield Case(f"duplicate/{t.name}", (t.name,), (*_with(model, w), w))


def _empty(model: str) -> Iterator[Case]:
    c = C.contract(model)
    prompt = next(n for n in c.required_inputs if c.input(n).dtype == "STRING")
    yield Case(f"empty/{prompt}", (prompt,), _with(model, wire(model, prompt, b"")))
    yield Case(f"empty/{prompt}[1,0]", (prompt,),
               _with(model, wire(model, prompt, [], shape=[1, 0])))


def _unknown(model: str) -> Iterator[Case]:
    c = C.contract(model)
    prompt = c.required_inputs[0]
    names = ["not_an_input", prompt.upper(), "", "x" * 10_000]
    for other in (C.LLM, C.PREPROCESSING):  # the models behind it
        names.append(C.contract(other).required_inputs[0])
    for other in MODELS:  # the other model's own inputs
        names += [t.name for t in C.contract(other).inputs if not c.has_input(t.name)][:1]
    for name in dict.fromkeys(names):
        label = name if len(name) < 40 else f"{name[:8]}...({len(name)} chars)"
        yield Case(f"unknown/{label!r}", (f"'{name}'",),
                   _with(model, wire(model, name, 1, dtype="INT32", shape=[1, 1])))


def _unsupported(model: str) -> Iterator[Case]:
    c = C.contract(model)
    for name, u in sorted(C.unsupported_inputs(model, "cpu").items()):
        t = c.input(name)
        value = _non_neutral(u.neutral, t.dtype)
        yield Case(f"unsupported/{name}", (name,),
                   _with(model, _filled(model, name, t.dtype, _shape(t), value)))


def _supported(model: str) -> list[C.Tensor]:
    unsupported = C.unsupported_inputs(model, "cpu")
    return [t for t in C.contract(model).inputs if t.name not in unsupported]


def _nonfinite(model: str) -> Iterator[Case]:
    for t in _supported(model):
        if t.dtype == "FP32" and t.dims == (1,):
            for label, x in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)):
                yield Case(f"nonfinite/{t.name}={label}", (t.name,),
                           _with(model, wire(model, t.name, x)))


def _range(model: str) -> Iterator[Case]:
    c = C.contract(model)
    for name, values in ranges().items():
        if not c.has_input(name):
            continue
        for x in values:
            yield Case(f"range/{name}={x}", (name,), _with(model, wire(model, name, x)))


def _utf8(model: str) -> Iterator[Case]:
    for t in _supported(model):
        if t.dtype == "STRING":
            for label, raw in BAD_UTF8.items():
                yield Case(f"utf8/{t.name}:{label}", (t.name,),
                           _with(model, wire(model, t.name, raw)))


def _hostile(model: str) -> Iterator[Case]:
    for t in _supported(model):
        if t.dtype != "STRING":
            continue
        if t.dims == (1,):  # the prompt
            yield Case(f"hostile/{t.name}:5MB", (t.name,),
                       _with(model, wire(model, t.name, b"a " * (5 << 19))), within_s=HOSTILE_S)
            yield Case(f"hostile/{t.name}:4MB-of-4-byte-chars", (t.name,),
                       _with(model, wire(model, t.name, "🙂".encode() * (1 << 20))),
                       within_s=HOSTILE_S)
        else:  # stop / bad words
            yield Case(f"hostile/{t.name}:one-1MB-word", (t.name,),
                       _with(model, wire(model, t.name, b"ab" * (1 << 19))), within_s=HOSTILE_S)
            words = [f"w{i}".encode() for i in range(10_000)]
            yield Case(f"hostile/{t.name}:10000-words", (t.name,),
                       _with(model, wire(model, t.name, words, shape=[1, len(words)])),
                       within_s=HOSTILE_S)
    yield Case("hostile/request-id:1MB", ("request_id", "request id"), base(model),
               request_id="r" * (1 << 20), within_s=HOSTILE_S)


def _json(model: str) -> Iterator[Case]:
    c = C.contract(model)
    good = [(w.name, _json_value(w.value[0, 0])) for w in base(model)]
    seen: set[str] = set()
    for t in _supported(model):
        if t.dtype in WRONG_JSON and t.dtype not in seen and t.dims == (1,):
            seen.add(t.dtype)
            pairs = [p for p in good if p[0] != t.name] + [(t.name, WRONG_JSON[t.dtype])]
            yield Case(f"json-type/{t.name}:{t.dtype}", (t.name,), body=json_pairs(pairs))
    for name in c.required_inputs:
        if c.input(name).dtype == "INT32":
            pairs = [p for p in good if p[0] != name] + [(name, str(2**32 + 4).encode())]
            yield Case(f"json-wrap/{name}=2**32+4", (name,), body=json_pairs(pairs))
    prompt = c.required_inputs[0]
    floats = [t.name for t in _supported(model) if t.dtype == "FP32"]
    yield Case("json-body/truncated", (), body=json_pairs(good)[:-1] + b",")
    yield Case("json-body/not-an-object", (), body=b"[1, 2]")
    yield Case("json-body/empty", (), body=b"")
    yield Case(f"json-body/{prompt}:lone-surrogate", (prompt,),
               body=json_pairs([p for p in good if p[0] != prompt] + [(prompt, b'"\\ud800"')]))
    yield Case(f"json-body/{floats[0]}=1e999", (floats[0],),
               body=json_pairs([*good, (floats[0], b"1e999")]))


GENERATORS = (_dtype, _rank, _batch, _missing, _duplicate, _empty, _unknown, _unsupported,
              _nonfinite, _range, _utf8, _hostile, _json)


def cases(model: str) -> list[Case]:
    """Every case of ``model``, in generator order; ids are unique per model."""
    out = [case for generate in GENERATORS for case in generate(model)]
    ids = [case.id for case in out]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ValueError(f"duplicate case ids for {model}: {sorted(dupes)}")
    return out


# --- what fails today ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Xfail:
    """Cases (fnmatch on the id) that fail today, for these models and transports."""

    pattern: str
    reason: str
    models: tuple[str, ...] = MODELS
    transports: tuple[str, ...] = TRANSPORTS

    def matches(self, model: str, transport: str, case: Case) -> bool:
        return (model in self.models and transport in self.transports
                and fnmatch.fnmatchcase(case.id, self.pattern))


_TRITON_JSON = ("Triton 2.51 core, HTTP generate endpoint (not fixable in the models): ")
XFAILS: tuple[Xfail, ...] = (
    Xfail("json-type/*", _TRITON_JSON + "a JSON value of the wrong kind is a 500 'Unable to "
          "parse data' that does not name the input", transports=("http", "sse")),
    Xfail("json-wrap/*", _TRITON_JSON + "an integer is truncated to the input's dtype "
          "(2**32+4 becomes 4) and the request is served", transports=("http", "sse")),
    Xfail("json-body/*", _TRITON_JSON + "a body that does not parse is a 500, and the parser's "
          "message names an offset, not the input", transports=("http", "sse")),
)


def xfail_reason(model: str, transport: str, case: Case) -> str | None:
    for x in XFAILS:
        if x.matches(model, transport, case):
            return x.reason
    return None


def matrix() -> list[tuple[str, str, Case]]:
    """(model, transport, case) for every model, case and transport it can be sent over."""
    return [(model, transport, case) for model in MODELS for case in cases(model)
            for transport in transports(model, case)]


def summary() -> dict[str, dict[str, int]]:
    """Per category: the number of cases (distinct ids over both models) and of test runs."""
    ids: dict[str, set[str]] = {}
    runs: dict[str, int] = {}
    for _model, _transport, case in matrix():
        ids.setdefault(case.category, set()).add(case.id)
        runs[case.category] = runs.get(case.category, 0) + 1
    return {cat: {"cases": len(ids[cat]), "runs": runs[cat]} for cat in ids}


def describe(case: Case) -> str:
    if case.body is not None:
        return f"body {case.body[:120]!r}"
    assert case.wires is not None
    return ", ".join(repr(w) for w in case.wires) + (
        f", request id of {len(case.request_id)} chars" if case.request_id else "")


__all__ = ["ANSWER_S", "HOSTILE_S", "LIMITS", "MODELS", "Case", "Limits", "cases",
           "describe", "http_body", "matrix", "summary", "transports",
           "xfail_reason"]
