"""The TensorRT-LLM release our GPU target pins, and the ``LLM()`` arguments it takes.

NVIDIA's llmapi Triton model passes every top-level key of its ``model.yaml`` except
``triton_config`` to ``tensorrt_llm.LLM(**args)``; an unknown key fails only when the server
loads the model, on a GPU. So every key we write is checked here, at build and render time,
against the argument names of the pinned release.

Pinned: TensorRT-LLM **1.2.1** (PyPI ``tensorrt-llm==1.2.1``, tag ``v1.2.1``), the release in
NGC's ``nvcr.io/nvidia/tritonserver:26.04``–``26.07-trtllm-python-py3`` images (Triton's
compatibility matrix, ``docs/introduction/compatibility.md`` @ server
e1db8a603d863b1317ee859bdeea2be19959462e). Sources of the names (read with the project's
search tools; ``llm_args.py`` itself is not stored at the v1.2.1 commit):

* ``tests/unittest/api_stability/references_committed/llm.yaml`` @
  029c15cbff10692cf7e9df552d92450dd92a3125: the committed, stable ``LLM.__init__`` arguments;
* the ``TorchLlmArgs`` / ``KvCacheConfig`` API reference pages of the 1.x docs, for the
  PyTorch-backend arguments not in that file (``backend``, ``enable_attention_dp``,
  ``cuda_graph_config``, ``gpus_per_node``, ``moe_cluster_parallel_size``);
* ``triton_backend/all_models/llmapi/tensorrt_llm/1/model.yaml`` @
  0ebb1536ac12bbe27201185de960df3ab00bcecc: ``triton_config`` with ``max_batch_size`` (0) and
  ``decoupled``, and the optional ``cancellation_check_period_ms`` its model.py reads.

The TensorRT engine path (``trtllm-build``, the C++ ``tensorrtllm`` backend) was removed from
TensorRT-LLM's main branch after 1.2.1 (PRs #15907, #15918, #16369, July 2026); 26.07 is the
last NGC image known to carry it (inferred from the versions; not checked inside the image).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tritonllm.errors import ConfigError

TRTLLM_RELEASE = "1.2.1"
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
#: The newest NGC image known to ship trtllm-build and the C++ tensorrtllm backend.
LEGACY_LAST_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"

#: ``LLM()`` argument names of the pinned release (``TorchLlmArgs``).
LLM_ARGS: frozenset[str] = frozenset({
    "model", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
    "tensor_parallel_size", "dtype", "revision", "tokenizer_revision",
    "pipeline_parallel_size", "context_parallel_size", "gpus_per_node",
    "moe_cluster_parallel_size", "moe_tensor_parallel_size", "moe_expert_parallel_size",
    "enable_attention_dp", "cp_config", "load_format", "enable_lora", "lora_config",
    "kv_cache_config", "enable_chunked_prefill", "guided_decoding_backend",
    "batched_logits_processor", "speculative_config", "max_batch_size", "max_input_len",
    "max_seq_len", "max_beam_width", "max_num_tokens", "stream_interval",
    "iter_stats_max_iterations", "request_stats_max_iterations", "backend",
    "cuda_graph_config", "disable_overlap_scheduler", "moe_config", "attn_backend",
    "torch_compile_config", "scheduler_config", "peft_cache_config",
    "cache_transceiver_config", "num_postprocess_workers", "postprocess_tokenizer_dir",
    "reasoning_parser", "print_iter_log", "enable_iter_perf_stats", "allreduce_strategy",
    "enable_autotuner", "checkpoint_format",
})
#: ``KvCacheConfig`` field names of the pinned release (``kv_cache_config`` in model.yaml).
KV_CACHE_CONFIG_FIELDS: frozenset[str] = frozenset({
    "enable_block_reuse", "max_tokens", "max_attention_window", "sink_token_length",
    "free_gpu_memory_fraction", "host_cache_size", "cross_kv_cache_fraction",
    "secondary_offload_min_priority", "event_buffer_max_size", "enable_partial_reuse",
    "copy_on_partial_reuse", "use_uvm", "dtype", "tokens_per_block",
})
#: ``triton_config`` keys NVIDIA's llmapi model reads.
TRITON_CONFIG_KEYS: frozenset[str] = frozenset({
    "max_batch_size", "decoupled", "cancellation_check_period_ms"})
TRITON_CONFIG = "triton_config"
#: The backend NVIDIA's llmapi model runs (the only one left after the TensorRT removal).
BACKEND = "pytorch"


def check_llm_args(args: Mapping[str, Any], where: str) -> None:
    """ConfigError naming the first key of ``args`` (model.yaml's content, ``triton_config``
    included) that the pinned release does not take."""
    for key, value in args.items():
        if key == TRITON_CONFIG:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {TRITON_CONFIG} must be a mapping, got {value!r}")
            for sub in value:
                if sub not in TRITON_CONFIG_KEYS:
                    known = ", ".join(sorted(TRITON_CONFIG_KEYS))
                    raise ConfigError(f"{where}: {TRITON_CONFIG}.{sub} is not read by NVIDIA's "
                                      f"llmapi model (it reads {known})")
            continue
        if key not in LLM_ARGS:
            raise ConfigError(f"{where}: {key!r} is not an argument of TensorRT-LLM "
                              f"{TRTLLM_RELEASE}'s LLM()")
        if key == "kv_cache_config":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: kv_cache_config must be a mapping, got {value!r}")
            for sub in value:
                if sub not in KV_CACHE_CONFIG_FIELDS:
                    raise ConfigError(f"{where}: kv_cache_config.{sub} is not a field of "
                                      f"TensorRT-LLM {TRTLLM_RELEASE}'s KvCacheConfig")


def check_installed_release() -> str:
    """The installed ``tensorrt_llm`` version; ConfigError unless it is the pinned release.

    docker/Dockerfile runs this at image build, so an image on another NGC tag fails there,
    not on the GPU at model load.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("tensorrt_llm")
    except PackageNotFoundError:
        raise ConfigError(f"tensorrt_llm is not installed: the GPU target needs TensorRT-LLM "
                          f"{TRTLLM_RELEASE} (image {NGC_IMAGE})") from None
    if found.split("+")[0] != TRTLLM_RELEASE:
        raise ConfigError(f"tensorrt_llm {found} is installed; tritonllm's GPU target is pinned "
                          f"to {TRTLLM_RELEASE} (image {NGC_IMAGE})")
    return found


def load_model_yaml(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(LLM() arguments, triton_config)`` from a llmapi ``model.yaml``."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the llmapi model.yaml: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of LLM() arguments and triton_config")
    check_llm_args(data, str(path))
    triton = dict(data.pop(TRITON_CONFIG, None) or {})
    return data, triton


__all__ = [
    "BACKEND",
    "KV_CACHE_CONFIG_FIELDS",
    "LEGACY_LAST_IMAGE",
    "LLM_ARGS",
    "NGC_IMAGE",
    "TRITON_CONFIG",
    "TRITON_CONFIG_KEYS",
    "TRTLLM_RELEASE",
    "check_installed_release",
    "check_llm_args",
    "load_model_yaml",
]
