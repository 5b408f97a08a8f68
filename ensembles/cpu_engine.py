"""The CPU in-flight batching engine: OpenVINO GenAI's ContinuousBatchingPipeline on one thread.

One engine thread owns the pipeline. Callers (Triton's ``execute()``) only hand requests and
cancellations over through a locked inbox and return; the engine thread adds them to the
running batch between steps, so a request joins while others decode (iteration-level
batching, paged KV cache). After each ``step()`` the thread reads what every request
produced and calls that request's ``on_event`` with the new token ids.

Threading contract:
  * ``submit`` / ``cancel`` / ``stats`` may be called from any thread; they never block on
    a step (they take a lock that the engine thread holds only to swap lists).
  * ``on_event`` callbacks run on the engine thread, in order, exactly one of them with
    ``finished=True`` per request; they must be quick (send a response, put on a queue).
    ``after_events``, when set, runs on the engine thread after each round of callbacks (a
    step's, or a round of cancellations) and before the next step, so a consumer can hand
    over everything one round produced at once.
  * ``step()`` may hold the GIL while it runs, so other Python threads of the
    process wait up to one step; ``stats().max_step_ms`` reports the worst step since the
    previous ``stats()`` call. (OpenVINO GenAI 2026.4 releases the GIL for much of a step.)
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.contract import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP
from tritonllm.ensembles.engine_stats import EngineStats, KvBlocks, RequestLedger
from tritonllm.ensembles.sampling import SamplingParams

log = logging.getLogger(__name__)

FINISH_ERROR = "error"  # the engine's own: a failed request gets an error, not a finish_reason
#: The largest seed the engine tells apart. OpenVINO GenAI's GenerationConfig.rng_seed holds 64
#: bits, but its sampler seeds a std::mt19937 with it, which keeps the low 32 bits only: seeds
#: 2**32 and 2**63 sample exactly as seed 0 does (measured with 2026.4). Larger seeds are refused
#: (see tritonllm.ensembles.llm_service) rather than silently folded onto smaller ones.
MAX_SEED = 2**32 - 1


#: Tokens per KV cache block of OpenVINO GenAI's paged cache on CPU (2026.4; the GPU plugin's
#: are 16). Measured (tests/integration/test_engine_stats.py): with 1 GiB of f32 cache for the
#: tiny test model the pool is 65,536 blocks, and live sequences use the sum of
#: ceil((prompt + generated - 1) / 32) blocks (the newest token is not cached yet).
CPU_BLOCK_TOKENS = 32
#: Bytes per cached value, per KV precision whose blocks hold nothing but values (u8 and u4
#: blocks also hold per-group scales: their block size is not reported).
_KV_VALUE_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


@dataclass(frozen=True)
class EngineConfig:
    """How the pipeline is created. Defaults favour exactness (f32 KV cache) over memory.

    ``dynamic_split_fuse``: a long prompt is split over steps that it shares with running
    decodes (at most ``max_num_batched_tokens`` a step); off, a prompt is scheduled whole, in
    prompt-only steps (vLLM's policy; a prompt longer than ``max_num_batched_tokens`` then fails
    the step, see tritonllm.settings.CpuLLMParams). ``device``: the OpenVINO device.
    """

    engine_dir: Path
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192
    cache_size_gb: float = 1.0
    kv_cache_precision: str = "f32"
    inference_precision: str = "f32"
    enable_prefix_caching: bool = False
    dynamic_split_fuse: bool = True
    device: str = "CPU"
    num_threads: int = 0  # 0: OpenVINO's default (all cores)


@dataclass
class TokenEvent:
    """New output of one request. ``token_ids`` are the ids since the previous event."""

    request_id: int
    token_ids: list[int]
    finished: bool
    finish_reason: str | None = None
    log_probs: list[float] = field(default_factory=list)
    error: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0  # total so far


EventCallback = Callable[[TokenEvent], None]


@dataclass
class _Request:
    rid: int
    prompt: list[int]
    params: SamplingParams
    on_event: EventCallback
    stream: bool
    submitted: float
    handle: Any = None
    generated: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # not yet delivered (non-streaming)
    pending_lp: list[float] = field(default_factory=list)
    done: bool = False


class CpuEngine:
    """In-flight batched generation over an OpenVINO GenAI continuous-batching pipeline."""

    def __init__(self, config: EngineConfig, pipeline: Any | None = None) -> None:
        self.config = config
        self._pipe = pipeline if pipeline is not None else self.make_pipeline(config)
        self._ids = itertools.count(1)
        self._cv = threading.Condition()
        self._inbox: list[_Request] = []
        self._cancels: set[int] = set()
        self._active: dict[int, _Request] = {}
        self._closing = False
        self._flush = False
        self._kv_usage = 0.0
        self._kv_bytes = 0
        self._pipeline_requests = 0
        self._requests_total = 0
        self._steps = 0
        self._max_step_ms = 0.0
        self._scheduled = 0
        self._last_step_unix_s = 0.0
        self._ledger = RequestLedger()
        self._block_bytes = kv_block_bytes(config)
        import openvino_genai as ovg

        self._enums = (ovg.GenerationStatus.RUNNING, ovg.GenerationStatus.IGNORED,
                       ovg.GenerationStatus.CANCEL, ovg.GenerationFinishReason.NONE,
                       ovg.GenerationFinishReason.LENGTH)
        self.after_events: Callable[[], None] | None = None  # see the module docstring
        self._thread = threading.Thread(target=self._run, name="tritonllm-cpu-engine", daemon=True)
        self._thread.start()

    @staticmethod
    def pipeline_args(config: EngineConfig) -> tuple[Any, str, dict[str, Any]]:
        """``(SchedulerConfig, device, properties)``: what the pipeline is created with."""
        import openvino as ov
        import openvino_genai as ovg

        sched = ovg.SchedulerConfig()
        sched.max_num_seqs = config.max_num_seqs
        sched.max_num_batched_tokens = config.max_num_batched_tokens
        sched.cache_size = max(1, round(config.cache_size_gb))
        sched.enable_prefix_caching = config.enable_prefix_caching
        sched.dynamic_split_fuse = config.dynamic_split_fuse
        props: dict[str, Any] = {
            "KV_CACHE_PRECISION": getattr(ov.Type, config.kv_cache_precision),
            "INFERENCE_PRECISION_HINT": getattr(ov.Type, config.inference_precision),
        }
        if config.num_threads:
            props["INFERENCE_NUM_THREADS"] = config.num_threads
        return sched, config.device, props

    @staticmethod
    def make_pipeline(config: EngineConfig) -> Any:
        """The OpenVINO GenAI pipeline as the engine creates it (benchmarks compare against it)."""
        import openvino_genai as ovg

        sched, device, props = CpuEngine.pipeline_args(config)
        return ovg.ContinuousBatchingPipeline(str(config.engine_dir), sched, device, props)

    # ---- caller side (any thread) -------------------------------------------------------

    @property
    def max_num_seqs(self) -> int:
        return self.config.max_num_seqs

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, on_event: EventCallback,
               stream: bool = True) -> int:
        """Queue a request; returns its id. Events arrive on the engine thread."""
        req = _Request(next(self._ids), list(prompt_ids), params, on_event, stream,
                       time.perf_counter())
        with self._cv:
            if self._closing:
                raise RuntimeError("engine is shut down")
            self._ledger.started(req.rid, len(req.prompt))
            self._inbox.append(req)
            self._cv.notify()
        return req.rid

    def cancel(self, request_id: int) -> None:
        """Abort a request; its KV blocks are freed at the next step. Unknown ids are ignored."""
        with self._cv:
            self._cancels.add(request_id)
            self._cv.notify()

    def stats(self) -> EngineStats:
        with self._cv:
            waiting = len(self._inbox)
            worst, self._max_step_ms = self._max_step_ms, 0.0
            active = list(self._active.values())
        scheduled = min(self._scheduled, len(active))
        prompting = sum(1 for r in active if not r.generated)
        ledger = self._ledger
        return EngineStats(
            len(active), waiting, self._requests_total, ledger.generated_tokens_total,
            self._steps, worst, self._kv_usage, self._pipeline_requests,
            scheduled=scheduled, context=min(prompting, scheduled),
            max_requests=self.config.max_num_seqs, last_step_unix_s=self._last_step_unix_s,
            prompt_tokens_total=ledger.prompt_tokens_total, kv_blocks=self._kv_blocks(),
            finished=ledger.take_finished())

    def _kv_blocks(self) -> KvBlocks | None:
        """The KV cache in blocks: OpenVINO GenAI reports only the fraction in use, so the
        pool's size comes from the cache size over one block's bytes (None where a block's
        size is not known: quantized KV precisions carry scales of their own)."""
        if self._block_bytes is None:
            return None
        total = (self._kv_bytes or cache_bytes(self.config)) // self._block_bytes
        return KvBlocks(total, round(self._kv_usage * total), CPU_BLOCK_TOKENS)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything in flight, let the pipeline release it, stop the thread, and
        release the pipeline.

        The pipeline (OpenVINO's plugin, its thread pools and KV cache) is freed here, at a
        known point with the interpreter whole, rather than whenever the last reference goes
        (in a Triton stub: during interpreter teardown, after the stub's own state is gone).
        ``after_events`` is dropped too: it usually points back at the engine's owner (a
        reference cycle only the garbage collector would break).
        """
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck in a step: the pipeline is still in use
            log.warning("engine thread did not stop within %.1fs", timeout)
            return
        self.after_events = None
        self._pipe = None
        self._active.clear()

    # ---- engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._inbox or self._cancels or self._active or self._closing
                           or self._flush):
                    self._cv.wait()
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, set()
                closing = self._closing
            for req in inbox:
                self._add(req)
            if closing:
                cancels |= set(self._active)
            for rid in cancels:
                self._cancel(rid)
            if self._active or self._flush:
                flush, self._flush = self._flush, False
                self._step()
                if flush and not self._active:
                    # A cancelled or stopped sequence keeps its KV blocks until the next step,
                    # and the pipeline's metrics lag one more: step the idle pipeline once so
                    # both read empty.
                    self._step()
            if self.after_events is not None:
                try:
                    self.after_events()
                except Exception:  # a failing consumer must not take the engine down
                    log.exception("after_events callback failed")
            if closing:
                return

    def _add(self, req: _Request) -> None:
        import numpy as np
        import openvino as ov

        try:
            handle = self._pipe.add_request(
                req.rid, ov.Tensor(np.asarray([req.prompt], dtype=np.int64)),
                self._generation_config(req.params))
        except Exception as e:  # a request the pipeline refuses fails alone
            self._emit(req, TokenEvent(req.rid, [], True, FINISH_ERROR, error=str(e),
                                       prompt_tokens=len(req.prompt)))
            return
        req.handle = handle
        self._active[req.rid] = req
        self._requests_total += 1

    def _cancel(self, rid: int) -> None:
        req = self._active.pop(rid, None)
        if req is None:
            with self._cv:  # cancelled before it was added: drop it from the inbox
                queued = next((q for q in self._inbox if q.rid == rid), None)
                if queued is not None:
                    self._inbox.remove(queued)
            if queued is not None:  # callbacks never run under the lock
                self._emit(queued, TokenEvent(rid, [], True, FINISH_CANCELLED))
            return
        req.handle.cancel()
        self._flush = True
        self._finish(req, FINISH_CANCELLED)

    def _step(self) -> None:
        t0 = time.perf_counter()
        try:
            self._pipe.step()
        except Exception as e:
            log.exception("engine step failed")
            for req in list(self._active.values()):
                self._active.pop(req.rid)
                self._finish(req, FINISH_ERROR, error=f"engine step failed: {e}")
            return
        now = time.perf_counter()
        self._steps += 1
        self._max_step_ms = max(self._max_step_ms, (now - t0) * 1000)
        metrics = self._pipe.get_metrics()  # of this step: read before requests are collected
        self._scheduled = int(metrics.scheduled_requests)
        for req in list(self._active.values()):
            self._collect(req, now)
        self._kv_usage = float(metrics.cache_usage) / 100  # OpenVINO reports a percentage
        self._kv_bytes = int(metrics.kv_cache_size_in_bytes)
        self._pipeline_requests = int(metrics.requests)
        self._last_step_unix_s = time.time()

    def _collect(self, req: _Request, now: float) -> None:
        # Runs for every live request after every step: kept lean (enum members are looked up
        # once, in _enums; generated ids come as Python ints already).
        running, ignored, cancelled, none, length = self._enums
        handle = req.handle
        status = handle.get_status()
        new: list[int] = []
        lps: list[float] = []
        reason: str | None = None
        if handle.can_read():
            for out in handle.read().values():
                new += out.generated_ids
                if req.params.return_log_probs:
                    lps += out.generated_log_probs
                fr = out.finish_reason
                if fr != none:
                    reason = FINISH_LENGTH if fr == length else FINISH_STOP
        if new:
            cut = self._stop_sequence_end(req, new) if req.params.stop_ids else None
            if cut is not None:
                new, lps = new[:cut], lps[:cut]
                req.handle.stop()
                self._flush = True
                reason = FINISH_STOP
            req.generated += new
            self._ledger.tokens(req.rid, len(req.generated))
        finished = reason is not None or status != running
        if finished and reason is None:
            reason = (FINISH_ERROR if status == ignored
                      else FINISH_CANCELLED if status == cancelled
                      else FINISH_STOP)
        if req.stream:
            if new or finished:
                self._emit(req, TokenEvent(req.rid, new, finished, reason, lps,
                                           prompt_tokens=len(req.prompt),
                                           output_tokens=len(req.generated)))
        else:
            req.pending += new
            req.pending_lp += lps
            if finished:
                self._emit(req, TokenEvent(req.rid, req.pending, True, reason, req.pending_lp,
                                           prompt_tokens=len(req.prompt),
                                           output_tokens=len(req.generated)))
        if finished:
            req.done = True
            self._flush = True
            self._active.pop(req.rid, None)
            if status == ignored:
                log.warning("request %d was dropped by the pipeline (KV cache too small?)",
                            req.rid)

    @staticmethod
    def _stop_sequence_end(req: _Request, new: list[int]) -> int | None:
        """Index into ``new`` just past the first completed stop sequence, if any."""
        history = req.generated
        for i in range(len(new)):
            tail = history + new[: i + 1]
            for seq in req.params.stop_ids:
                if len(seq) <= len(tail) and tuple(tail[-len(seq):]) == seq:
                    return i + 1
        return None

    def _finish(self, req: _Request, reason: str, error: str | None = None) -> None:
        if req.done:
            return
        req.done = True
        tokens = [] if req.stream else req.pending
        self._emit(req, TokenEvent(req.rid, tokens, True, reason, error=error,
                                   prompt_tokens=len(req.prompt),
                                   output_tokens=len(req.generated)))

    def _emit(self, req: _Request, event: TokenEvent) -> None:
        if event.finished:
            self._ledger.finished(req.rid, event.finish_reason or FINISH_ERROR)
        try:
            req.on_event(event)
        except Exception:  # a failing consumer must not take the engine down
            log.exception("on_event callback for request %d failed", req.rid)

    @staticmethod
    def _generation_config(p: SamplingParams) -> Any:
        import openvino_genai as ovg

        cfg = ovg.GenerationConfig()
        cfg.max_new_tokens = p.max_tokens
        cfg.min_new_tokens = p.min_tokens
        if p.end_ids:
            cfg.eos_token_id = p.end_ids[0]
            cfg.stop_token_ids = set(p.end_ids)
        else:
            cfg.ignore_eos = True
        if p.do_sample:
            cfg.do_sample = True
            cfg.temperature = p.temperature if p.temperature is not None else 1.0
            if p.top_k:
                cfg.top_k = p.top_k
            cfg.top_p = p.top_p if p.top_p is not None else 1.0
        else:
            cfg.do_sample = False
        if p.do_sample:
            if p.seed is not None and not 0 <= p.seed <= MAX_SEED:
                raise ValueError(f"seed {p.seed} is outside 0..{MAX_SEED}")
            cfg.rng_seed = p.seed if p.seed is not None else secrets.randbits(32)
        if p.repetition_penalty is not None:
            cfg.repetition_penalty = p.repetition_penalty
        if p.presence_penalty is not None:
            cfg.presence_penalty = p.presence_penalty
        if p.frequency_penalty is not None:
            cfg.frequency_penalty = p.frequency_penalty
        if p.return_log_probs:
            cfg.logprobs = 1
        return cfg


def cache_bytes(config: EngineConfig) -> int:
    """The KV cache's size as the pipeline is configured with it (whole GiB, see
    :meth:`CpuEngine.pipeline_args`)."""
    return max(1, round(config.cache_size_gb)) * 2**30


def kv_block_bytes(config: EngineConfig) -> int | None:
    """Bytes of one KV cache block: layers x (K, V) x KV heads x head size x tokens per block
    x value bytes, from the exported model's ``config.json``; None where unknown."""
    import json

    value_bytes = _KV_VALUE_BYTES.get(config.kv_cache_precision)
    try:
        cfg = json.loads((Path(config.engine_dir) / "config.json").read_text())
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
        layers = int(cfg["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if value_bytes is None:
        return None
    return layers * 2 * kv_heads * head_dim * CPU_BLOCK_TOKENS * value_bytes
