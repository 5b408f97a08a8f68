"""What the CPU ``tensorrt_llm`` model serves, built from its typed parameters.

``model_repository/tensorrt_llm/1/model.py`` parses its Triton ``parameters`` into
:class:`~tritonllm.settings.CpuLLMParams`, loads the tokenizer, and calls :func:`build_service`;
everything from there to the :class:`~tritonllm.ensembles.llm_service.LLMService` (the engine's
configuration, the request limits) is here, where it is tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tritonllm.ensembles.cpu_engine import CpuEngine, EngineConfig
from tritonllm.ensembles.detokenize import decode
from tritonllm.ensembles.llm_service import Engine, LLMService
from tritonllm.ensembles.requests import RequestLimits
from tritonllm.ensembles.tokenization import SpecialIds
from tritonllm.settings import CpuLLMParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["build_service", "engine_config", "request_limits"]


def engine_config(p: CpuLLMParams) -> EngineConfig:
    """The engine's configuration: every engine setting of ``p`` (``num_threads`` None: 0,
    OpenVINO's default)."""
    return EngineConfig(
        p.engine_dir, max_num_seqs=p.max_num_seqs,
        max_num_batched_tokens=p.max_num_batched_tokens, cache_size_gb=p.cache_size_gb,
        kv_cache_precision=p.kv_cache_precision, enable_prefix_caching=p.enable_prefix_caching,
        dynamic_split_fuse=p.dynamic_split_fuse, device=p.device,
        num_threads=p.num_threads or 0)


def request_limits(p: CpuLLMParams, vocab_size: int, special: SpecialIds) -> RequestLimits:
    """The limits requests are checked against. ``p.end_id`` / ``p.pad_id``, when set, replace
    the checkpoint's (``special``) end ids and pad id (default: the end id)."""
    end_ids = (p.end_id,) if p.end_id is not None else special.end_ids
    return RequestLimits.for_engine(
        p.max_input_len, p.max_seq_len, vocab_size, end_ids[0],
        p.pad_id if p.pad_id is not None else end_ids[0], extra_end_ids=end_ids[1:])


def build_service(
    p: CpuLLMParams, tokenizer: PreTrainedTokenizerBase, special: SpecialIds, *,
    make_engine: Callable[[EngineConfig], Engine] = CpuEngine,
) -> LLMService:
    """The engine (``make_engine(engine_config(p))``; tests pass a scripted one) behind an
    LLMService with ``p``'s limits and defaults. The service is not streaming by default: a
    request that sends no ``streaming`` input gets one response."""
    engine = make_engine(engine_config(p))

    def detokenize(ids: Sequence[int]) -> str:
        return decode(tokenizer, ids)

    return LLMService(
        engine, request_limits(p, len(tokenizer), special), detokenize,
        default_exclude_input=p.exclude_input_in_output, default_streaming=False,
        cancellation_check_period_s=p.cancellation_check_period_ms / 1000,
        max_queue_size=p.max_queue_size,
        max_stream_interval_s=p.max_stream_interval_ms / 1000)
