"""The client's logic, sans I/O: endpoints, requests, responses, streams, retries.

Both clients (:mod:`._sync`, :mod:`._async`) and every transport use this module; nothing here
touches a socket or imports tritonclient, so it is unit-tested without a server.

Requests. A generation request is a :class:`RequestSpec`: the model, the request id, whether
to stream, the contract it speaks and one :class:`TensorValue` per input. Names and dtypes
come from :mod:`tritonllm.contract`.

Contracts. A model speaks one of two request contracts:

* ``"classic"``: NVIDIA's ``ensemble`` / ``tensorrt_llm_bls`` contract (``text_input``,
  ``max_tokens``, ``stream``, the sampling inputs under their own names; the BLS contract for
  ``tensorrt_llm_bls``, the ensemble's for any other name). Those models batch, so every input
  is shaped ``[1, *dims]``; streamed ``text_output`` s are deltas.
* ``"llmapi"``: NVIDIA's llmapi model (:data:`tritonllm.contract.LLMAPI_CONTRACT`:
  ``sampling_param_*``, ``streaming``, ``return_*`` flags, ``stop``). Unbatched, so every input
  is shaped ``[*dims]`` (``text_input`` ``[1]``, the stop strings ``[n]``); the client sends
  ``sampling_param_exclude_input_from_output`` (the text is the generation only, as from the
  classic models) and ``return_finish_reason``; a streamed ``text_output`` is the whole text
  so far, which :class:`Assembly` turns into deltas. No token counts.

:func:`resolve_contract` picks it: ``"auto"`` reads the model's declared inputs (its metadata:
:data:`LLMAPI_MARK` declared → llmapi, else classic; by name where no metadata is readable);
a forced contract the metadata contradicts is refused with InvalidRequest.

Responses. :func:`parse_outputs` reads one response's outputs (numpy arrays from gRPC or JSON
values from HTTP) into a :class:`Piece`; :class:`Assembly` turns the pieces of one request
into :class:`~tritonllm.client.Delta` s and, at the end, a
:class:`~tritonllm.client.Completion`.

Retries. :func:`retry_delay` decides whether and after how long a failed attempt is sent
again (see :class:`~tritonllm.client.RetryPolicy`).

Stopping. Triton (2.51 and later) passes a cancelled ensemble request's cancellation only to
steps not yet started, never into the running LLM step; the contract's way to end that request
is a ``stop`` request with the same request id to the LLM model (tensorrtllm_backend documents
it; the ensemble gives its steps its own request id). :func:`stop_target` finds that model
from the ensemble's config and its steps' metadata; :func:`stop_request` is the request. An
llmapi model sees the cancel itself; it is also sent the llmapi ``stop`` (same request id, to
the model itself), which it answers with a CANCELLED error.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.client._errors import (
    Cancelled,
    ClientError,
    InvalidRequest,
    Overloaded,
    Timeout,
    Unavailable,
)
from tritonllm.client._types import Completion, Delta, RetryPolicy, Timings
from tritonllm.contract import (
    BLS,
    CONTRACT_AUTO,
    CONTRACT_CHOICES,
    CONTRACT_CLASSIC,
    CONTRACTS,
    ENSEMBLE,
    ENSEMBLE_IN,
    ENSEMBLE_OUT,
    FINISH_REASON,
    LLM,
    LLM_IN,
    LLMAPI,
    LLMAPI_FLAGGED_OUTPUTS,
    LLMAPI_IN,
    LLMAPI_NONE,
    LLMAPI_OUT,
    REQUEST_FIELDS,
    UNBATCHED_MODELS,
    ModelContract,
)

__all__ = [
    "AUTO",
    "CLASSIC",
    "CONTRACT_CHOICES",
    "COUNT_INPUTS",
    "DEFAULT_PORTS",
    "LLMAPI_MARK",
    "LLMAPI_SAMPLING_INPUTS",
    "SAMPLING_INPUTS",
    "Assembly",
    "Endpoint",
    "Exchange",
    "Piece",
    "RequestSpec",
    "TensorValue",
    "build_request",
    "check_contract",
    "check_sampling",
    "connection",
    "contract_for",
    "detect_contract",
    "json_outputs",
    "new_request_id",
    "parse_outputs",
    "parse_url",
    "resolve_contract",
    "retry_delay",
    "stop_request",
    "stop_target",
    "wire_dtype",
]

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}

#: Sampling keyword → the contract input it is sent as: the input's own name, but ``stop`` for
#: ``stop_words``.
SAMPLING_INPUTS: dict[str, str] = {
    **{name: name for name in (ENSEMBLE_IN.temperature, ENSEMBLE_IN.top_k, ENSEMBLE_IN.top_p,
                               ENSEMBLE_IN.seed)},
    "stop": ENSEMBLE_IN.stop_words,
    **{name: name for name in (
        ENSEMBLE_IN.bad_words, ENSEMBLE_IN.repetition_penalty, ENSEMBLE_IN.presence_penalty,
        ENSEMBLE_IN.frequency_penalty, ENSEMBLE_IN.length_penalty, ENSEMBLE_IN.end_id,
        ENSEMBLE_IN.pad_id, ENSEMBLE_IN.min_tokens, ENSEMBLE_IN.exclude_input_in_output,
        ENSEMBLE_IN.beam_width, ENSEMBLE_IN.num_return_sequences, ENSEMBLE_IN.return_log_probs)},
}
#: Asked for when the model declares them (metadata), so Completion carries token counts.
COUNT_INPUTS = (ENSEMBLE_IN.return_num_input_tokens, ENSEMBLE_IN.return_num_output_tokens)
LLMAPI_COUNT_INPUTS = (LLMAPI_IN.return_num_input_tokens, LLMAPI_IN.return_num_output_tokens)
TEXT_INPUT, MAX_TOKENS = ENSEMBLE_IN.text_input, ENSEMBLE_IN.max_tokens
STREAM, TEXT_OUTPUT = ENSEMBLE_IN.stream, ENSEMBLE_OUT.text_output

#: The contracts a client speaks (see "Contracts" above); ``AUTO`` picks one per model.
AUTO, CLASSIC = CONTRACT_AUTO, CONTRACT_CLASSIC
#: The input whose declaration marks a model as speaking the llmapi contract.
LLMAPI_MARK = LLMAPI_IN.sampling_param_max_tokens
_FIELD_OF_CLASSIC = {name: f for f, name in REQUEST_FIELDS[ENSEMBLE].items()}
#: Sampling keyword → the llmapi input it is sent as (the one carrying the same request field,
#: :data:`tritonllm.contract.REQUEST_FIELDS`); the other keywords have no llmapi input and are
#: refused for an llmapi model.
LLMAPI_SAMPLING_INPUTS: dict[str, str] = {
    key: REQUEST_FIELDS[LLMAPI][_FIELD_OF_CLASSIC[name]]
    for key, name in SAMPLING_INPUTS.items()
    if _FIELD_OF_CLASSIC.get(name) in REQUEST_FIELDS[LLMAPI]}
_LLMAPI = CONTRACTS[LLMAPI]
LLMAPI_EXCLUDE = LLMAPI_IN.sampling_param_exclude_input_from_output
#: The llmapi flag asking for ``finish_reason``.
LLMAPI_FINISH_FLAG = LLMAPI_FLAGGED_OUTPUTS[LLMAPI_OUT.finish_reason]

_NUMPY = {"BOOL": np.bool_, "INT32": np.int32, "INT64": np.int64, "UINT64": np.uint64,
          "FP32": np.float32, "FP64": np.float64, "STRING": np.object_}


def wire_dtype(dtype: str) -> str:
    """The dtype as Triton's client API spells it (contract ``STRING`` is ``BYTES``)."""
    return "BYTES" if dtype == "STRING" else dtype


def contract_for(model: str) -> ModelContract:
    """The contract a request to ``model`` follows: BLS for ``tensorrt_llm_bls``, else ensemble."""
    return CONTRACTS[BLS] if model == BLS else CONTRACTS[ENSEMBLE]


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_contract(choice: str) -> str:
    """``choice`` if it is one of :data:`CONTRACT_CHOICES`; ValueError otherwise."""
    if choice not in CONTRACT_CHOICES:
        raise ValueError(f"contract must be one of {', '.join(map(repr, CONTRACT_CHOICES))}, "
                         f"got {choice!r}")
    return choice


def detect_contract(model: str, inputs: Iterable[str] | None) -> str:
    """The contract ``model`` speaks: llmapi where its declared ``inputs`` hold
    :data:`LLMAPI_MARK`, classic otherwise; without metadata (None), llmapi only for the model
    named ``llmapi``."""
    if inputs is None:
        return LLMAPI if model == LLMAPI else CLASSIC
    return LLMAPI if LLMAPI_MARK in frozenset(inputs) else CLASSIC


def resolve_contract(choice: str, model: str, inputs: Iterable[str] | None) -> str:
    """The contract to speak to ``model``: ``choice``, or the detected one for ``"auto"``.

    A forced contract that the model's declared ``inputs`` contradict is refused with
    InvalidRequest saying which contract the model speaks (without metadata it is trusted).
    """
    check_contract(choice)
    found = detect_contract(model, inputs)
    if choice == AUTO or inputs is None or found == choice:
        return found if choice == AUTO else choice
    if found == LLMAPI:
        raise InvalidRequest(f"model {model!r} speaks the llmapi contract (its metadata "
                             f"declares {LLMAPI_MARK}), not the classic one: use "
                             f"contract={LLMAPI!r} or {AUTO!r}")
    raise InvalidRequest(f"model {model!r} does not speak the llmapi contract (its metadata "
                         f"declares no {LLMAPI_MARK}): use contract={CLASSIC!r} or {AUTO!r}")


# --- endpoints --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """Where the server is: ``protocol`` ("grpc"|"http"), ``address`` (host:port), TLS."""

    protocol: str
    address: str
    ssl: bool = False

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` (HTTP endpoints)."""
        return f"{'https' if self.ssl else 'http'}://{self.address}"


def parse_url(url: str, protocol: str | None = None, ssl: bool = False) -> Endpoint:
    """``http://h:p``, ``https://h:p`` → HTTP; ``grpc://h:p``, ``grpcs://h:p``, ``h:p`` → gRPC.

    ``protocol`` overrides the scheme; a missing port is the protocol's default (8001 gRPC,
    8000 HTTP). ValueError for an empty or malformed URL or an unknown protocol.
    """
    if protocol is not None and protocol not in DEFAULT_PORTS:
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    u = url.strip()
    scheme, sep, rest = u.partition("://")
    if not sep:
        scheme, rest = "", u
    scheme = scheme.lower()
    schemes = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False),
               "grpcs": ("grpc", True), "": ("grpc", False)}
    if scheme not in schemes:
        raise ValueError(f"unknown URL scheme {scheme!r} in {url!r}; use http://, https://, "
                         "grpc:// or host:port")
    proto, tls = schemes[scheme]
    proto = protocol or proto
    address = rest.split("/", 1)[0]
    if not address:
        raise ValueError(f"no host in URL {url!r}")
    host_part = address.rsplit("]", 1)[-1]  # [::1]:8001
    if ":" not in host_part:
        address = f"{address}:{DEFAULT_PORTS[proto]}"
    else:
        port = address.rsplit(":", 1)[1]
        if not port.isdigit():
            raise ValueError(f"bad port {port!r} in URL {url!r}")
    return Endpoint(proto, address, ssl or tls)


# --- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorValue:
    """One input: its contract name, dtype and dims, and the value: shaped ``[1, *dims]`` for a
    batching model, ``[*dims]`` for an unbatched one (-1: the number of values)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    value: npt.NDArray[Any]

    @property
    def wire_dtype(self) -> str:
        return wire_dtype(self.dtype)

    def flat_json(self) -> list[Any]:
        """Every value in row-major order as JSON takes it (strings decoded)."""
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v
                for v in self.value.reshape(-1)]

    def json_value(self) -> Any:
        """The value as the HTTP generate endpoint takes it: a list for ``[-1]`` dims."""
        flat = self.flat_json()
        return flat if self.dims == (-1,) else flat[0]


@dataclass(frozen=True)
class RequestSpec:
    """One generation request, ready for a transport."""

    model: str
    request_id: str
    stream: bool
    inputs: tuple[TensorValue, ...]
    contract: str = CLASSIC  # CLASSIC or LLMAPI: how the responses read (parse_outputs)

    def json_body(self) -> dict[str, Any]:
        """The body of Triton's ``/v2/models/{model}/generate[_stream]`` endpoints."""
        body: dict[str, Any] = {t.name: t.json_value() for t in self.inputs}
        body["id"] = self.request_id
        return body

    def infer_body(self) -> dict[str, Any]:
        """The body of Triton's ``/v2/models/{model}/infer`` (KServe v2 JSON, every shape)."""
        return {"id": self.request_id, "inputs": [
            {"name": t.name, "shape": list(t.value.shape), "datatype": t.wire_dtype,
             "data": t.flat_json()} for t in self.inputs]}


def json_outputs(body: Mapping[str, Any]) -> dict[str, npt.NDArray[Any]]:
    """The outputs of a KServe v2 JSON infer response as numpy arrays of their shapes
    (``BYTES`` as UTF-8 bytes, as tritonclient gives them); ValueError for a malformed one."""
    out: dict[str, npt.NDArray[Any]] = {}
    for o in body.get("outputs", []):
        dtype = "STRING" if o["datatype"] == "BYTES" else str(o["datatype"])
        if dtype not in _NUMPY:
            raise ValueError(f"output {o.get('name')!r}: datatype {o['datatype']!r} is not read")
        data = o.get("data", [])
        if dtype == "STRING":
            data = [v.encode() if isinstance(v, str) else v for v in data]
        out[str(o["name"])] = np.array(data, dtype=_NUMPY[dtype]).reshape(
            [int(d) for d in o["shape"]])
    return out


def check_sampling(options: Mapping[str, Any], where: str = "generate") -> None:
    """TypeError naming the first keyword that is not a sampling option."""
    for key in options:
        if key not in SAMPLING_INPUTS:
            known = ", ".join(sorted(SAMPLING_INPUTS))
            raise TypeError(f"{where}() got an unexpected keyword argument {key!r} "
                            f"(sampling options: {known})")


def _array(name: str, dtype: str, dims: tuple[int, ...], value: Any) -> npt.NDArray[Any]:
    """``value`` as the contract's dtype, shaped [1, *dims]; InvalidRequest names the field."""
    if dtype == "STRING":
        items = [value] if isinstance(value, (str, bytes)) else list(value)
        if not all(isinstance(v, (str, bytes)) for v in items):
            raise InvalidRequest(f"{name}: expected a string or a list of strings, got {value!r}")
        if dims != (-1,) and len(items) != 1:
            raise InvalidRequest(f"{name}: expected one string, got {len(items)}")
        return np.array([[v.encode() if isinstance(v, str) else v for v in items]],
                        dtype=np.object_)
    if dtype == "BOOL":
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidRequest(f"{name}: expected true or false, got {value!r}")
    elif dtype.startswith(("INT", "UINT")):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise InvalidRequest(f"{name}: expected an integer, got {value!r}")
        info = np.iinfo(_NUMPY[dtype])  # type: ignore[type-var]
        if not info.min <= int(value) <= info.max:
            raise InvalidRequest(f"{name}: {value} does not fit {dtype}")
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InvalidRequest(f"{name}: expected a number, got {value!r}")
    return np.array([[value]], dtype=_NUMPY[dtype])


def _tensor(c: ModelContract, name: str, value: Any) -> TensorValue:
    """``value`` as ``c``'s input ``name``, shaped for that model (batching or not)."""
    t = c.input(name)
    arr = _array(name, t.dtype, t.dims, value)
    return TensorValue(name, t.dtype, t.dims, arr[0] if c.name in UNBATCHED_MODELS else arr)


def _classic_values(prompt: str, max_tokens: int, stream: bool, sampling: Mapping[str, Any],
                    declared: frozenset[str] | None) -> list[tuple[str, Any]]:
    values: list[tuple[str, Any]] = [(TEXT_INPUT, prompt), (MAX_TOKENS, max_tokens),
                                     (STREAM, bool(stream))]
    values += [(SAMPLING_INPUTS[k], v) for k, v in sampling.items() if v is not None]
    if declared is not None:
        values += [(name, True) for name in COUNT_INPUTS if name in declared]
    return values


def _llmapi_values(model: str, prompt: str, max_tokens: int, stream: bool,
                   sampling: Mapping[str, Any],
                   declared: frozenset[str] | None) -> list[tuple[str, Any]]:
    # What this model takes: the llmapi inputs it declares (NVIDIA's model lacks our
    # sampling_param_* additions), all of them where its metadata is unknown.
    takes = {k: name for k, name in LLMAPI_SAMPLING_INPUTS.items()
             if declared is None or name in declared or not _LLMAPI.input(name).ours}
    refused = sorted(k for k, v in sampling.items() if v is not None and k not in takes)
    if refused:
        raise InvalidRequest(f"{', '.join(refused)}: model {model!r} speaks the llmapi "
                             "contract and declares no input for "
                             f"{'this option' if len(refused) == 1 else 'these options'} (it "
                             f"takes {', '.join(sorted(takes))})")
    options = {LLMAPI_SAMPLING_INPUTS[k]: v for k, v in sampling.items() if v is not None}
    # The generation only, as from the classic models, and its finish reason: asked for
    # where the model declares them (or its metadata is unknown).
    defaults = {LLMAPI_EXCLUDE: True, LLMAPI_FINISH_FLAG: True}
    for name, value in defaults.items():
        if declared is None or name in declared:
            options.setdefault(name, value)
    # Token counts from a model that declares the flags (ours; NVIDIA's has none to ask).
    if declared is not None:
        options.update({name: True for name in LLMAPI_COUNT_INPUTS if name in declared})
    return [(LLMAPI_IN.text_input, prompt), (LLMAPI_MARK, max_tokens),
            (LLMAPI_IN.streaming, bool(stream)), *options.items()]


def build_request(model: str, prompt: str, max_tokens: int, *, stream: bool,
                  sampling: Mapping[str, Any], request_id: str | None = None,
                  model_inputs: Iterable[str] | None = None,
                  contract: str = AUTO) -> RequestSpec:
    """The request for ``prompt``; ``sampling`` holds the keyword options (None values skipped).

    ``model_inputs`` is the model's declared input names (from its metadata), if known: it
    decides the contract for ``contract="auto"`` (:func:`resolve_contract`), the token-count
    flags are sent only when declared, and an option the model does not declare is refused
    here with InvalidRequest rather than by the server. For an llmapi model, a keyword with no
    llmapi input (``bad_words``, ``min_tokens``, ...) is refused with InvalidRequest naming it.
    """
    check_sampling(sampling)
    declared = None if model_inputs is None else frozenset(model_inputs)
    speaks = resolve_contract(contract, model, declared)
    if not isinstance(prompt, str):
        raise InvalidRequest(f"{TEXT_INPUT}: expected a string prompt, got {type(prompt).__name__}")
    if speaks == LLMAPI:
        c, stream_input = CONTRACTS[LLMAPI], LLMAPI_IN.streaming
        values = _llmapi_values(model, prompt, max_tokens, stream, sampling, declared)
    else:
        c, stream_input = contract_for(model), STREAM
        values = _classic_values(prompt, max_tokens, stream, sampling, declared)
    inputs = []
    for name, value in values:
        if declared is not None and name not in declared:
            if name == stream_input and not stream:
                continue  # a non-decoupled model without `stream`: not streaming is its default
            raise InvalidRequest(f"{name}: model {model!r} has no such input")
        inputs.append(_tensor(c, name, value))
    return RequestSpec(model, request_id or new_request_id(), stream, tuple(inputs), speaks)


STOP_INPUT = LLM_IN.stop


def model_input_names(metadata: Mapping[str, Any]) -> frozenset[str]:
    """A model's input names from its metadata (as JSON)."""
    return frozenset(str(i["name"]) for i in metadata.get("inputs", []))


def ensemble_steps(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The models an ensemble's config (as JSON) calls, in step order; () for other models."""
    cfg = config.get("config", config)
    if cfg.get("platform") != "ensemble":
        return ()
    steps = cfg.get("ensemble_scheduling", {}).get("step", [])
    return tuple(str(s["model_name"]) for s in steps if "model_name" in s)


def stop_target(steps: Iterable[tuple[str, Iterable[str] | None]]) -> str | None:
    """The first step model (name, its input names) that takes ``stop``; None if none does."""
    for name, inputs in steps:
        if inputs is not None and STOP_INPUT in inputs:
            return name
    return None


def stop_request(model: str, request_id: str, contract: str = CLASSIC) -> RequestSpec:
    """``stop`` for the request ``request_id`` of ``model``: an LLM model of the tensorrt_llm
    contract (classic: an ensemble's LLM step), or the llmapi model itself (``LLMAPI``).

    The inputs the model requires come along with placeholder values; the model reads only
    ``stop`` and the request id. (The llmapi model answers a stop with a CANCELLED error.)
    """
    if contract == LLMAPI:
        llmapi = CONTRACTS[LLMAPI]
        return RequestSpec(model, request_id, False, (
            _tensor(llmapi, LLMAPI_IN.text_input, ""), _tensor(llmapi, LLMAPI_IN.stop, True)),
            LLMAPI)
    c = CONTRACTS[LLM]
    values = {LLM_IN.input_ids: 1, LLM_IN.input_lengths: 1, LLM_IN.request_output_len: 1,
              STOP_INPUT: True}
    inputs = []
    for name, value in values.items():
        t = c.input(name)
        dims = t.dims if t.dims == (-1,) else (1,)
        inputs.append(TensorValue(name, t.dtype, dims, _array(name, t.dtype, dims, value)))
    return RequestSpec(model, request_id, False, tuple(inputs))


def resolve_timeout(timeout: float | EllipsisType | None, default: float | None) -> float | None:
    """A call's timeout: ``...`` (not given) means the client's default; None means none."""
    return default if isinstance(timeout, EllipsisType) else timeout


@dataclass(frozen=True)
class PlannedRequest:
    """What a client needs to start one request; ``build`` takes the model's input names."""

    model: str
    request_id: str
    timeout: float | None
    build: Callable[[frozenset[str] | None], RequestSpec]


def plan_request(default_model: str, default_timeout: float | None, prompt: str,
                 max_tokens: int, *, request_id: str | None,
                 timeout: float | EllipsisType | None, model: str | None, stream: bool,
                 sampling: Mapping[str, Any], where: str,
                 contract: str = AUTO) -> PlannedRequest:
    """The one place both clients turn a ``generate``/``stream`` call into a request."""
    check_sampling(sampling, where)
    name = model or default_model
    rid = request_id or new_request_id()

    def build(inputs: frozenset[str] | None) -> RequestSpec:
        return build_request(name, prompt, max_tokens, stream=stream, sampling=sampling,
                             request_id=rid, model_inputs=inputs, contract=contract)

    return PlannedRequest(name, rid, resolve_timeout(timeout, default_timeout), build)


# --- responses --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """What one response says: its text and, where reported, finish reason and counts.

    ``cumulative``: ``text`` is the whole text so far (llmapi), not the new text.
    """

    text: str
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cumulative: bool = False


def _first(value: Any) -> Any:
    """The first element of an array / list / scalar output (None for an empty one)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)
        return flat[0] if flat.size else None
    if isinstance(value, (list, tuple)):
        while isinstance(value, (list, tuple)):
            if not value:
                return None
            value = value[0]
    return value


def _text(value: Any) -> str:
    v = _first(value)
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


def _int(value: Any) -> int | None:
    v = _first(value)
    return None if v is None else int(v)


def parse_outputs(outputs: Mapping[str, Any], contract: str = CLASSIC) -> Piece:
    """One response's outputs (name → numpy array or JSON value) → :class:`Piece`.

    Outputs a model does not send are None; an empty ``finish_reason`` (a running stream) is
    None, and so is llmapi's ``"None"``. With several sequences (beams) only the first is
    read. An llmapi response's text is cumulative (where it carries ``text_output`` at all).
    """
    if contract == LLMAPI:
        whole = outputs.get(LLMAPI_OUT.text_output)
        said = _text(outputs.get(LLMAPI_OUT.finish_reason))
        return Piece(_text(whole), None if said in ("", LLMAPI_NONE) else said,
                     _int(outputs.get(LLMAPI_OUT.num_input_tokens)),
                     _int(outputs.get(LLMAPI_OUT.num_output_tokens)),
                     cumulative=whole is not None)
    reason = _text(outputs.get(FINISH_REASON)) or None
    return Piece(_text(outputs.get(TEXT_OUTPUT)), reason,
                 _int(outputs.get(ENSEMBLE_OUT.num_input_tokens)),
                 _int(outputs.get(ENSEMBLE_OUT.num_output_tokens)))


@dataclass
class Assembly:
    """Collects one request's pieces: deltas while it streams, the Completion at its end.

    A cumulative piece (the whole text so far) hands out what it adds to the previous one. The
    text only grows on our servers; should a server rewrite earlier text, the delta is what
    follows the common prefix and the Completion's text is the last whole text.
    """

    request_id: str
    start: float
    parts: list[str] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    deltas: int = 0
    whole: str | None = None  # the last cumulative text (None: no cumulative piece yet)

    def _new_text(self, piece: Piece) -> str:
        if not piece.cumulative:
            return piece.text
        before, self.whole = self.whole or "", piece.text
        if piece.text.startswith(before):
            return piece.text[len(before):]
        same = next((i for i, (a, b) in enumerate(zip(before, piece.text, strict=False))
                     if a != b), min(len(before), len(piece.text)))
        return piece.text[same:]

    def feed(self, piece: Piece, now: float) -> Delta | None:
        """Record ``piece`` received at ``now``; the Delta to hand out, or None (nothing new)."""
        if piece.finish_reason is not None:
            self.finish_reason = piece.finish_reason
        if piece.input_tokens is not None:
            self.input_tokens = piece.input_tokens
        if piece.output_tokens is not None:
            self.output_tokens = piece.output_tokens
        text = self._new_text(piece)
        if not text and piece.finish_reason is None:
            return None
        if text:
            self.parts.append(text)
            self.token_times.append(now)
        d = Delta(text, now, self.deltas, piece.finish_reason, piece.output_tokens)
        self.deltas += 1
        return d

    @property
    def delivered(self) -> bool:
        """Whether any text has been received (no retry may follow)."""
        return bool(self.parts)

    def completion(self, end: float, attempts: int = 1) -> Completion:
        timings = Timings(self.start, self.token_times[0] if self.token_times else None, end,
                          list(self.token_times))
        text = self.whole if self.whole is not None else "".join(self.parts)
        return Completion(text, self.finish_reason, self.input_tokens,
                          self.output_tokens, self.request_id, timings, attempts)


# --- retries ----------------------------------------------------------------------------------

def retry_delay(policy: RetryPolicy, error: ClientError, attempt: int, *, delivered: bool,
                remaining: float | None, rng: random.Random | None = None) -> float | None:
    """Seconds to wait before sending attempt ``attempt + 1``, or None: give up and raise.

    ``attempt`` is the 1-based number of the attempt that failed; ``delivered``: text already
    reached the caller (never retried); ``remaining``: seconds left before the deadline (None:
    no deadline) — a retry whose backoff would overrun it is not made.
    """
    if delivered or attempt >= policy.attempts:
        return None
    if isinstance(error, Overloaded):
        if not policy.retry_overloaded:
            return None
    elif not isinstance(error, Unavailable):
        return None
    base = min(policy.max_backoff, policy.initial_backoff * policy.multiplier ** (attempt - 1))
    spread = float((rng or random).uniform(1 - policy.jitter, 1 + policy.jitter))
    delay = max(0.0, float(base) * spread)
    if remaining is not None and delay >= remaining:
        return None
    return delay


# --- one request's life -----------------------------------------------------------------------

class Exchange:
    """The state of one request across its attempts, shared by the sync and async clients.

    The clients only do I/O: they call :meth:`begin_attempt` before sending, hand every
    response to :meth:`on_response` and every error to :meth:`on_error` (which returns the
    backoff to sleep before the next attempt, or raises the error annotated with the request
    id and attempt count), and ask :meth:`remaining` for the time left on the deadline.
    """

    def __init__(self, request_id: str, *, policy: RetryPolicy, timeout: float | None,
                 now: float, rng: random.Random | None = None) -> None:
        self.request_id = request_id
        self.policy = policy
        self.deadline = None if timeout is None else now + timeout
        self.timeout = timeout
        self.assembly = Assembly(request_id, now)
        self.attempts = 0
        self.done = False
        self.cancelled = False
        self.end: float | None = None
        self._rng = rng

    def remaining(self, now: float) -> float | None:
        """Seconds left (None: no deadline); raises Timeout once the deadline has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - now
        if left <= 0:
            self.finish(now)
            raise Timeout(f"request {self.request_id}: deadline of {self.timeout:g}s exceeded",
                          request_id=self.request_id, attempts=max(1, self.attempts),
                          status="DEADLINE_EXCEEDED")
        return left

    def begin_attempt(self, now: float) -> float | None:
        """Count an attempt; the seconds it may take (None: no deadline)."""
        left = self.remaining(now)
        self.attempts += 1
        return left

    def on_response(self, piece: Piece, final: bool, now: float) -> Delta | None:
        delta = self.assembly.feed(piece, now)
        if final:
            self.finish(now)
        return delta

    def on_error(self, error: ClientError, now: float) -> float:
        """The delay before the next attempt; raises ``error`` (annotated) when giving up."""
        error.request_id = self.request_id
        error.attempts = max(1, self.attempts)
        left = None if self.deadline is None else self.deadline - now
        delay = retry_delay(self.policy, error, self.attempts,
                            delivered=self.assembly.delivered, remaining=left, rng=self._rng)
        if delay is None:
            self.finish(now)
            raise error
        return delay

    def cancel(self, now: float) -> None:
        """The caller cancelled: if the request had not ended, reading on raises Cancelled."""
        if not self.done:
            self.cancelled = True
        self.finish(now)

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled(f"request {self.request_id} was cancelled",
                            request_id=self.request_id, attempts=self.attempts,
                            status="CANCELLED")

    def finish(self, now: float) -> None:
        if not self.done:
            self.done, self.end = True, now

    def completion(self) -> Completion:
        end = self.end if self.end is not None else self.assembly.start
        return self.assembly.completion(end, max(1, self.attempts))


@dataclass(frozen=True)
class Connection:
    """What both clients make of their connection arguments: the headers every call sends
    (the caller's plus the key headers, see :func:`tritonllm.security.auth_headers`) and the
    TLS files. Its ``repr`` names the keys' sources, never their values."""

    headers: Mapping[str, str]
    tls: Any  # tritonllm.client._transport.ClientTls
    keys: tuple[Any, ...] = ()  # the Secrets, for repr and masking

    def __repr__(self) -> str:
        return f"Connection(keys={list(self.keys)!r}, tls={self.tls!r})"


def connection(endpoint: Endpoint, headers: Mapping[str, str] | None, *,
               root_certificates: str | None, certificate_chain: str | None,
               private_key: str | None, inference_key: Any, admin_key: Any) -> Connection:
    """``inference_key`` / ``admin_key``: a :class:`tritonllm.security.Secret` or a string."""
    from tritonllm.client._transport import ClientTls
    from tritonllm.security import Secret, auth_headers

    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together (mutual TLS)")

    def secret(value: Any, what: str) -> Any:
        return value if value is None or isinstance(value, Secret) else Secret(str(value), what)

    inference = secret(inference_key, "inference_key argument")
    admin = secret(admin_key, "admin_key argument")
    merged = {**(headers or {}), **auth_headers(endpoint.protocol, admin=admin,
                                                inference=inference)}
    tls = ClientTls(root_certificates, certificate_chain, private_key)
    return Connection(merged, tls, tuple(k for k in (inference, admin) if k is not None))
