"""The CPU ``tensorrt_llm`` model's logic: tensors in, engine requests, response tensors out.

The Python-backend adapter (``model_repository/tensorrt_llm/1/model.py``) hands each request's
input arrays and a :class:`ResponseSink` to :meth:`LLMService.submit` and returns at once; the
engine thread streams :class:`~tritonllm.ensembles.cpu_engine.TokenEvent` s back, which this
module turns into the official output tensors (``output_ids`` ``[1, 1, n]``,
``sequence_length`` ``[1, 1]``, …) plus ours (``finish_reason``, ``context_length``).

Streaming and text. A streamed response carries a *window* of ids and ``context_length``: the
first ``context_length`` ids were already turned into text by earlier responses and are there
only as decoding context (leading-space pieces, multi-byte characters). Postprocessing emits
``decode(window)[len(decode(window[:context_length])):]``. Windows are cut only where the text
is final (no trailing U+FFFD), so the deltas concatenate to the non-streamed text exactly.
Ids whose text is still incomplete are held until the next step or the end.

Stopping by id. A request whose ``stop`` input is true (the contract's way to end a request;
Triton's ensemble does not pass a client's cancel into the running LLM step) ends every live
request with the same request id; each then gets its final response with finish_reason
``cancelled``. A stop that arrives before its request (it can overtake a request still in
preprocessing) applies to it if it comes within ``EARLY_STOP_TTL_S``. Every response also
carries our ``request_key``, unique to its request: a ``stop`` whose request id is a key ends
that one request. Postprocessing sends it when the ensemble marks a step request cancelled
(a client cancel or an HTTP disconnect; see ``tritonllm.contract.REQUEST_KEY``).

Coalescing. Every response costs a round trip to the Triton core on the engine thread, a
postprocessing run, a gRPC message and a client parse; at 16 streams on 2 cores that was over
half of the CPU (``docs/serving.md``). So a stream's tokens after its first are sent at most once
per *interval*: ``live streams x measured send cost / SEND_SHARE``, capped at
``max_stream_interval_ms``. The send cost is one response's round trip to the Triton core (also
when a round's responses overlap); the same response costs about as much again in each of
tritonserver, postprocessing and the client, so the share is kept small. A few streams get a
response every few tokens; a saturated engine sends each stream a response per cap. The first
token and the final response are never held, and a response is skipped when the request's
token limit is nearer than the tokens it would carry: the final response comes about as soon
and carries them.

Sending. The responses of one engine round (a step) go out together after it, before the next
step: one alone on the engine thread, several over ``SEND_THREADS`` threads at once, so that
their round trips overlap (streams that started together reach their interval together, so a
round often has a response for every stream). The engine thread waits until all are out:
round trips left running during a step were measured to slow the step down more than they
save (``docs/serving.md``). A request never has two responses in one round, so its responses
stay in order.

Bad requests raise :class:`~tritonllm.ensembles.requests.RequestError` from ``submit`` naming
the field (the client-facing name where the ensemble renames it); the adapter turns that into
an INVALID_ARG response for that request alone. With ``max_queue_size`` set, a request that
would wait behind more than that many others for an engine slot raises :class:`QueueFull`
(UNAVAILABLE over the wire, Triton's code for a full queue), so clients can back off.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tritonllm.contract import (
    CONTEXT_LENGTH,
    FINISH_CANCELLED,
    FINISH_REASON,
    LLM,
    OPTIONAL_OUTPUTS,
    REQUEST_KEY,
    client_names,
    unsupported_inputs,
)
from tritonllm.contract import LLM_IN as IN
from tritonllm.contract import LLM_OUT as OUT
from tritonllm.ensembles import wire
from tritonllm.ensembles.cancellation import CancellationPoller
from tritonllm.ensembles.cpu_engine import (
    FINISH_ERROR,
    MAX_SEED,
    EventCallback,
    TokenEvent,
)
from tritonllm.ensembles.engine_stats import EngineStats, Rejections
from tritonllm.ensembles.requests import (
    RequestError,
    RequestLimits,
    check_request_id,
    parse_request,
    refuse_unsupported,
)
from tritonllm.ensembles.sampling import SamplingParams
from tritonllm.ensembles.senders import ResponseSink
from tritonllm.errors import TritonLLMError

log = logging.getLogger(__name__)

Decode = Callable[[Sequence[int]], str]
Outputs = dict[str, npt.NDArray[Any]]
EARLY_STOP_TTL_S = 10.0  # a stop that came before its request still applies this long
EARLY_STOP_MAX = 4096
SEND_SHARE = 0.02  # of the engine thread's time that response round trips may take
SEND_THREADS = 4  # responses of one engine round sent at once (see "Sending")
UNSUPPORTED = unsupported_inputs(LLM, "cpu")  # what the CPU engine cannot honour

# The name a client used for each LLM input, where the ensemble/BLS renames it.
CLIENT_NAMES = client_names(LLM)
(_INPUT_COUNT,) = OPTIONAL_OUTPUTS[IN.return_num_input_tokens]
(_OUTPUT_COUNT,) = OPTIONAL_OUTPUTS[IN.return_num_output_tokens]


def _label(name: str) -> str:
    client = CLIENT_NAMES.get(name)
    return f"{name} ({client})" if client else name


class QueueFull(TritonLLMError):
    """The engine's wait queue is at ``max_queue_size``: retry later."""


@runtime_checkable
class Engine(Protocol):
    """What :class:`LLMService` needs of an engine (:class:`~tritonllm.ensembles.cpu_engine.
    CpuEngine`; tests script one). ``on_event`` and ``after_events`` run on the engine's
    thread, with the threading contract of :mod:`tritonllm.ensembles.cpu_engine`."""

    after_events: Callable[[], None] | None

    @property
    def max_num_seqs(self) -> int:
        """Requests decoded at once; more wait in the engine's queue."""
        ...

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams,
               on_event: EventCallback, stream: bool = True) -> int: ...

    def cancel(self, request_id: int) -> None: ...

    def stats(self) -> EngineStats: ...

    def close(self, timeout: float = 10.0) -> None: ...


@dataclass(frozen=True)
class LLMRequest:
    prompt: list[int]
    params: SamplingParams
    streaming: bool
    exclude_input_in_output: bool
    stop_only: bool = False  # the official `stop` input: cancel the request with this id
    want_counts: tuple[bool, bool] = (False, False)


def _scalar(inputs: Mapping[str, npt.NDArray[Any]], name: str) -> Any:
    if name not in inputs:
        return None
    arr = np.asarray(inputs[name])
    if arr.size != 1:
        raise RequestError(_label(name),
                           f"expected one value per request, got shape {list(arr.shape)}")
    return arr.reshape(-1)[0].item()


def to_llm_request(inputs: Mapping[str, npt.NDArray[Any]], limits: RequestLimits,
                   default_exclude_input: bool, default_streaming: bool) -> LLMRequest:
    """Validate one request's LLM tensors; RequestError names the first bad field.

    The tensors are read by :func:`tritonllm.ensembles.requests.parse_request` (the one parser
    of every model); this adds what only the CPU engine decides: inputs it cannot honour, the
    official ``stop`` input and the seed range
    (:data:`~tritonllm.ensembles.cpu_engine.MAX_SEED`).
    """
    refuse_unsupported(inputs, UNSUPPORTED, _label)
    if _scalar(inputs, IN.stop):
        return LLMRequest([], SamplingParams(max_tokens=1), False, True, stop_only=True)
    try:
        req = parse_request(inputs, limits, model="tensorrt_llm")
    except RequestError as e:
        raise RequestError(_label(e.field), e.message) from None
    if req.bad_ids:
        raise RequestError(_label(IN.bad_words_list), "is not supported by the CPU engine")
    s = req.sampling
    if s.seed is not None and s.seed > MAX_SEED:
        raise RequestError(_label(req.source("sampling.seed")),
                           f"{s.seed} is outside 0..{MAX_SEED}: the CPU engine (OpenVINO GenAI) "
                           "keeps only a seed's low 32 bits, so a larger seed would silently "
                           "sample as a smaller one does")
    return LLMRequest(
        list(req.prompt_ids or ()), s,  # required by the tensorrt_llm table
        streaming=req.streaming if IN.streaming in req.sources.values() else default_streaming,
        exclude_input_in_output=(default_exclude_input if req.exclude_input_in_output is None
                                 else req.exclude_input_in_output),
        want_counts=(bool(_scalar(inputs, IN.return_num_input_tokens)),
                     bool(_scalar(inputs, IN.return_num_output_tokens))),
    )


@dataclass
class StreamWindows:
    """Cuts one request's generated ids into windows whose new text is final.

    ``push(ids)`` returns ``(window, context_length)`` to send now, or None to hold;
    ``finish()`` returns the last window (possibly with no new ids).
    """

    decode: Decode
    ids: list[int] = field(default_factory=list)
    prefix: int = 0
    read: int = 0

    def push(self, new: Sequence[int]) -> tuple[list[int], int] | None:
        self.ids.extend(new)
        window = self.ids[self.prefix:]
        ctx = self.read - self.prefix
        text = self.decode(window)
        before = self.decode(window[:ctx])
        if len(text) <= len(before) or text.endswith("\ufffd") or not text.startswith(before):
            return None
        self.prefix, self.read = self.read, len(self.ids)
        return window, ctx

    def finish(self) -> tuple[list[int], int]:
        window, ctx = self.ids[self.prefix:], self.read - self.prefix
        self.prefix = self.read = len(self.ids)
        return window, ctx


@dataclass
class _Held:
    """What one streamed request has generated but not sent yet."""

    windows: StreamWindows
    log_probs: list[float] = field(default_factory=list)
    cum_log_prob: float = 0.0  # of every token sent so far (``cum_log_probs`` is cumulative)
    last_sent: float | None = None


def _i32(values: Sequence[int] | int, shape: tuple[int, ...]) -> npt.NDArray[np.int32]:
    return np.asarray(values, dtype=np.int32).reshape(shape)


def _reason(value: str) -> npt.NDArray[np.object_]:
    return wire.strings(LLM, FINISH_REASON, [value])


class LLMService:
    """Runs requests on an :class:`Engine`; see the module docstring for the protocol."""

    def __init__(self, engine: Engine, limits: RequestLimits, decode: Decode, *,
                 default_exclude_input: bool = True, default_streaming: bool = True,
                 cancellation_check_period_s: float = 0.1, max_queue_size: int = 0,
                 max_stream_interval_s: float = 0.25) -> None:
        self.engine = engine
        self.max_stream_interval_s = max_stream_interval_s
        self._send_cost_s = 0.0  # moving average of one response's round trip
        self._outbox: list[tuple[ResponseSink, Outputs, bool]] = []  # this round's responses
        self._senders = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="tritonllm-send")
        engine.after_events = self._send_round
        self.max_queue_size = max_queue_size
        self.limits = limits
        self.decode = decode
        self.default_exclude_input = default_exclude_input
        self.default_streaming = default_streaming
        self._lock = threading.Lock()
        self._live: dict[int, tuple[ResponseSink, str]] = {}
        self._send_ms = 0.0
        self._cancellations = CancellationPoller(cancellation_check_period_s)
        # request id -> when: ``stop`` for requests not (yet) here. Through an ensemble the stop
        # can overtake its own request (which is still in preprocessing).
        self._early_stops: OrderedDict[str, float] = OrderedDict()
        # ``request_key`` of a request: this prefix + its engine id (unique across instances).
        self._key_prefix = f"tritonllm-{uuid.uuid4().hex[:12]}-"
        #: Requests refused, counted by the model adapter (which sees every refusal once, also
        #: those of a front that validates before this service; see Rejections).
        self.rejections = Rejections()

    def submit(self, inputs: Mapping[str, npt.NDArray[Any]], sink: ResponseSink,
               request_id: str = "") -> None:
        """Validate and enqueue one request (raises RequestError); responses go to ``sink``.

        ``request_id`` (kept to match a later ``stop``) may have at most
        :data:`~tritonllm.settings.MAX_REQUEST_ID_BYTES` UTF-8 bytes.
        """
        check_request_id(request_id)
        req = to_llm_request(inputs, self.limits, self.default_exclude_input,
                             self.default_streaming)
        if req.stop_only:
            self._stop_by_id(request_id)
        if req.stop_only or (request_id and self._stopped_early(request_id)):
            sink.send({OUT.output_ids: _i32([], (1, 1, 0)), OUT.sequence_length: _i32(0, (1, 1)),
                       FINISH_REASON: _reason(FINISH_CANCELLED)}, final=True)
            return
        held = _Held(StreamWindows(self.decode)) if req.streaming else None
        prompt_prefix = [] if (req.streaming or req.exclude_input_in_output) else req.prompt

        key: list[npt.NDArray[np.object_]] = []  # set below, before the first event

        def on_event(ev: TokenEvent) -> None:
            self._on_event(ev, req, sink, held, prompt_prefix, key[0])

        # One critical section: the queue check and the registration cannot be split by
        # another submit, and the request's own finish (on the engine thread, which takes
        # this lock; the engine never calls back under its own lock) cannot come first.
        with self._lock:
            self._check_queue()
            rid = self.engine.submit(req.prompt, req.params, on_event, stream=req.streaming)
            key.append(np.array([[f"{self._key_prefix}{rid}".encode()]], dtype=np.object_))
            self._live[rid] = (sink, request_id)
            self._cancellations.watch(rid, sink.is_cancelled, lambda: self.engine.cancel(rid))

    def _check_queue(self) -> None:
        if not self.max_queue_size:
            return
        slots = self.engine.max_num_seqs
        waiting = len(self._live) - slots
        if waiting >= self.max_queue_size:
            raise QueueFull(f"Exceeds maximum queue size: {waiting} requests already wait for "
                            f"the CPU engine's {slots} slots (max_queue_size "
                            f"{self.max_queue_size}); retry later")

    def stream_interval_s(self) -> float:
        """How long a stream's tokens may wait now (see "Coalescing" in the module docstring)."""
        if not self.max_stream_interval_s:
            return 0.0
        return min(self.max_stream_interval_s,
                   len(self._live) * self._send_cost_s / SEND_SHARE)

    def _on_event(self, ev: TokenEvent, req: LLMRequest, sink: ResponseSink,
                  held: _Held | None, prompt_prefix: list[int],
                  key: npt.NDArray[np.object_]) -> None:
        if ev.finished:
            with self._lock:
                self._live.pop(ev.request_id, None)
                self._cancellations.unwatch(ev.request_id)
        if ev.error is not None and ev.finish_reason == FINISH_ERROR:
            sink.error(f"generation failed: {ev.error}")
            return
        log_probs = ev.log_probs
        if held is not None:
            held.log_probs.extend(ev.log_probs)
            if ev.finished:
                held.windows.ids.extend(ev.token_ids)
                ids, ctx = held.windows.finish()
            else:
                now = time.perf_counter()
                interval = self.stream_interval_s()  # 0: every token goes out
                if held.last_sent is not None and interval and (
                        now - held.last_sent < interval or self._final_is_near(req, ev, held)):
                    held.windows.ids.extend(ev.token_ids)  # coalesced into a later response
                    return
                cut = held.windows.push(ev.token_ids)
                if cut is None:
                    return  # the new ids end inside a character: wait for more
                ids, ctx = cut
                held.last_sent = now
            log_probs, held.log_probs = held.log_probs, []
        else:
            ids, ctx = prompt_prefix + ev.token_ids, 0
        out: dict[str, npt.NDArray[Any]] = {
            OUT.output_ids: _i32(ids, (1, 1, len(ids))),
            OUT.sequence_length: _i32(len(ids), (1, 1)),
            CONTEXT_LENGTH: _i32(ctx, (1, 1)),
            REQUEST_KEY: key,
            FINISH_REASON: _reason((ev.finish_reason or "") if ev.finished else ""),
        }
        if req.want_counts[0]:
            out[_INPUT_COUNT] = _i32(len(req.prompt), (1, 1))
        if req.want_counts[1]:
            out[_OUTPUT_COUNT] = _i32(ev.output_tokens, (1, 1))
        if req.params.return_log_probs:  # [1, beams, n] and [1, beams], as NVIDIA's backend
            lps = np.asarray(log_probs, dtype=np.float32)
            cum = float(lps.sum(dtype=np.float64))
            if held is not None:
                held.cum_log_prob += cum
                cum = held.cum_log_prob
            out[OUT.output_log_probs] = lps.reshape(1, 1, -1)
            out[OUT.cum_log_probs] = np.asarray([[cum]], dtype=np.float32)
        self._outbox.append((sink, out, ev.finished))

    def _send_round(self) -> None:
        """Send this round's responses (engine thread; see "Sending" in the module docstring)."""
        box, self._outbox = self._outbox, []
        if not box:
            return
        t0 = time.perf_counter()
        if len(box) == 1:
            _send(box[0])
        else:
            for _ in self._senders.map(_send, box):
                pass
        wall = time.perf_counter() - t0
        self._send_ms = max(self._send_ms, wall * 1000)
        # One round trip's time (each send thread made len/SEND_THREADS of them in a row):
        # what a response costs downstream is the same whether it went out alone or not.
        round_trip = wall / -(-len(box) // SEND_THREADS)
        for _ in box:
            self._send_cost_s += (round_trip - self._send_cost_s) * 0.05

    @staticmethod
    def _final_is_near(req: LLMRequest, ev: TokenEvent, held: _Held) -> bool:
        """Whether the request reaches its token limit within as many tokens as this
        response would carry (those of one interval): the final response then comes about
        as soon as the next one would, and carries them."""
        unsent = len(held.windows.ids) - held.windows.read + len(ev.token_ids)
        return bool(req.params.max_tokens - ev.output_tokens <= unsent)

    def engine_stats(self) -> EngineStats:
        return self.engine.stats()

    def take_rejections(self) -> dict[str, int]:
        """Requests refused since the previous call, by reason."""
        return self.rejections.take()

    def take_max_send_ms(self) -> float:
        """The longest round of response sends since the previous call, in ms."""
        worst, self._send_ms = self._send_ms, 0.0
        return worst

    def stop(self, request_id: str) -> None:
        """End the live requests with this request id (or the one request of this
        ``request_key``), as a ``stop`` request does; a later request of an id stopped while
        none was live is stopped when it comes (within ``EARLY_STOP_TTL_S``)."""
        self._stop_by_id(request_id)

    def _stop_by_id(self, request_id: str) -> None:
        if not request_id:
            raise RequestError(IN.stop, "needs the request id of the request to stop")
        with self._lock:
            rids = [rid for rid, (_, tid) in self._live.items() if tid == request_id]
            if request_id.startswith(self._key_prefix):  # a request_key: one request, or gone
                own = request_id.removeprefix(self._key_prefix)
                rids = [int(own)] if own.isdigit() and int(own) in self._live else []
            elif not rids:
                self._early_stops[request_id] = time.monotonic()
                while len(self._early_stops) > EARLY_STOP_MAX:
                    self._early_stops.popitem(last=False)
        for rid in rids:
            self.engine.cancel(rid)

    def _stopped_early(self, request_id: str) -> bool:
        """Whether a ``stop`` for ``request_id`` came (recently) before the request; once."""
        with self._lock:
            when = self._early_stops.pop(request_id, None)
        return when is not None and time.monotonic() - when < EARLY_STOP_TTL_S

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        """Finish everything in flight (final responses included), then stop the threads."""
        self._cancellations.close()
        self.engine.close()
        self._senders.shutdown()


def _send(item: tuple[ResponseSink, Outputs, bool]) -> None:
    sink, outputs, final = item
    try:
        sink.send(outputs, final)
    except Exception:  # one failed send (e.g. its client went away) must not stop the others
        log.exception("sending a response failed")
