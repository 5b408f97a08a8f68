"""Typed settings of a rendered model repository and of the models inside it.

:class:`RepoSettings` holds every option of ``tritonllm repo`` with its default; the CLI,
the renderer and the templates read it. The ``*Params`` classes are what each Python-backend
model reads back from the ``parameters`` of its ``config.pbtxt``: the renderer writes them with
:meth:`TritonParams.to_triton_parameters`, the model parses them once, at ``initialize``, with
:meth:`TritonParams.from_triton_parameters`::

    params = PreprocessingParams.from_triton_parameters(
        json.loads(args["model_config"])["parameters"], model_dir=Path(args["model_repository"])
    )

Rules of the parameter dialect (one for every model):

* values are strings (Triton's ``{"key": {"string_value": "..."}}``); an empty string means
  "not set" (the field's default applies);
* booleans are ``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case);
* a relative path is relative to the repository root (the parent of the model's directory);
* an unknown key, a leftover ``${placeholder}``, a missing required key or a bad value raises
  :class:`~tritonllm.errors.ConfigError` naming the model and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tritonllm.contract import LAYOUT_CLASSIC, LAYOUT_LLMAPI, LAYOUTS, TARGETS
from tritonllm.errors import ConfigError

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})

#: Keys that Triton or its Python backend reserve; accepted and ignored by every model.
RESERVED_KEYS = frozenset({"EXECUTION_ENV_PATH", "FORCE_CPU_ONLY_INPUT_TENSORS"})

ENGINE_TARGETS = {"trtllm": "gpu", "trtllm-legacy": "gpu", "cpu": "cpu"}  # manifest.engine
#: manifest.engine → the layout its repository is rendered in unless told otherwise.
ENGINE_LAYOUTS = {"trtllm": LAYOUT_LLMAPI, "trtllm-legacy": LAYOUT_CLASSIC, "cpu": LAYOUT_CLASSIC}
BATCHING_STRATEGIES = ("inflight_fused_batching", "inflight_batching")
BATCH_SCHEDULER_POLICIES = ("guaranteed_no_evict", "max_utilization")
LOGITS_DATATYPES = ("FP32", "FP16", "BF16")
KV_CACHE_PRECISIONS = ("f32", "f16", "bf16", "u8")
TIMEOUT_ACTIONS = ("REJECT", "DELAY")

# Request size bounds that are not options (docs/serving.md, "Request limits"); the options are
# RepoSettings.max_prompt_bytes, max_words and max_word_bytes.
#: The longest request id (UTF-8 bytes) the CPU LLM model accepts: it keeps ids to match ``stop``.
MAX_REQUEST_ID_BYTES = 256
#: The most ids in one ``stop_words_list`` / ``bad_words_list`` of the CPU LLM model.
MAX_WORD_LIST_IDS = 1 << 20
#: A word of n UTF-8 bytes encodes to at most 2n ids (one per byte, plus a word-start marker).
_IDS_PER_WORD_BYTE = 2


def parse_bool(key: str, value: str, model: str = "") -> bool:
    """The one boolean dialect: true/false, 1/0, yes/no, on/off (any case)."""
    v = value.strip().lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    where = f"{model}: " if model else ""
    raise ConfigError(f"{where}parameter {key!r}: expected true or false, got {value!r}")


def format_value(value: object) -> str:
    """How a parameter value is written into config.pbtxt."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def flatten_parameters(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Triton's ``{"k": {"string_value": "v"}}`` (or plain ``{"k": "v"}``) → ``{"k": "v"}``."""
    flat: dict[str, str] = {}
    for key, value in (params or {}).items():
        if isinstance(value, Mapping):
            value = value.get("string_value", "")
        flat[str(key)] = "" if value is None else str(value)
    return flat


def resolve_path(value: Path, model_dir: Path | None) -> Path:
    """A parameter path: absolute as is, relative to the repository root (model_dir's parent)."""
    if value.is_absolute() or model_dir is None:
        return value
    return (Path(model_dir).parent / value).resolve()


_P = TypeVar("_P", bound="TritonParams")


def _field_kind(tp: Any) -> tuple[type, bool]:
    """(base type, optional) of a field annotation such as ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported parameter type {tp!r}")
        return args[0], True
    return tp, False


class TritonParams:
    """Mixin for dataclasses parsed from / written to a model's ``parameters``.

    Field names are the parameter keys. Supported field types: str, int, float, bool, Path,
    and ``X | None`` of those (None: not written, and not set when parsed).
    """

    MODEL: ClassVar[str] = ""
    #: fields holding filesystem paths, resolved against the repository root when parsing
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_triton_parameters(
        cls: type[_P], params: Mapping[str, Any] | None, *, model_dir: Path | None = None
    ) -> _P:
        """Parse Triton's ``model_config["parameters"]``; ConfigError names the bad key."""
        flat = flatten_parameters(params)
        hints = typing.get_type_hints(cls)
        known = set(cls.keys())
        unknown = sorted(k for k in flat if k not in known and k not in RESERVED_KEYS)
        if unknown:
            raise ConfigError(
                f"{cls.MODEL}: unknown parameter {unknown[0]!r}"
                + (f" (and {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
                + f"; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            raw = flat.get(f.name, "").strip()
            if "${" in raw:
                raise ConfigError(
                    f"{cls.MODEL}: parameter {f.name!r} holds an unfilled placeholder {raw!r}"
                )
            has_default = (f.default is not dataclasses.MISSING
                           or f.default_factory is not dataclasses.MISSING)
            if raw == "":
                if not has_default:
                    raise ConfigError(f"{cls.MODEL}: parameter {f.name!r} is required")
                continue
            base, _ = _field_kind(hints[f.name])
            values[f.name] = cls._convert(f.name, base, raw)
            if f.name in cls.PATH_FIELDS:
                values[f.name] = resolve_path(values[f.name], model_dir)
        try:
            return cls(**values)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{cls.MODEL}: {e}") from e

    @classmethod
    def _convert(cls, key: str, base: type, raw: str) -> Any:
        if base is bool:
            return parse_bool(key, raw, cls.MODEL)
        if base is Path:
            return Path(raw)
        if base is str:
            return raw
        try:
            return base(raw)
        except ValueError:
            raise ConfigError(
                f"{cls.MODEL}: parameter {key!r}: expected {base.__name__}, got {raw!r}"
            ) from None

    def to_triton_parameters(self) -> dict[str, str]:
        """Key → string value, in field order; None values are left out."""
        return {
            f.name: format_value(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) is not None
        }

    def _check_min(self, key: str, minimum: float) -> None:
        value = getattr(self, key)
        if value is not None and value < minimum:
            raise ConfigError(f"{self.MODEL}: parameter {key!r} must be >= {minimum}, got {value}")

    def _check_choice(self, key: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, key)
        if value is not None and value not in choices:
            raise ConfigError(
                f"{self.MODEL}: parameter {key!r} must be one of {', '.join(choices)}, "
                f"got {value!r}"
            )


# --- repository settings ----------------------------------------------------------------------

@dataclass(frozen=True)
class RepoSettings:
    """Every option of ``tritonllm repo``, with its default. Limits default to the engine's.

    Serving:
        target: ``gpu`` (tensorrtllm backend) or ``cpu`` (Python backend, OpenVINO GenAI);
            None: from the engine (trtllm → gpu, cpu → cpu).
        layout: ``classic`` (NVIDIA's inflight_batcher_llm models, a token-level
            ``tensorrt_llm``, plus our ``llmapi`` front model) or ``llmapi`` (NVIDIA's current
            stack: ``tensorrt_llm`` speaks the llmapi contract; ``ensemble`` and
            ``tensorrt_llm_bls`` are classic fronts in front of it); None: from the engine.
        streaming: the LLM and BLS models are decoupled, so the ensemble streams.
        max_batch_size: Triton max_batch_size of every model; None: the engine's.
        max_queue_delay_microseconds: dynamic-batching delay of the LLM and BLS models.
        preprocessing_max_queue_delay_microseconds / postprocessing_...: same, pre/post.
        max_queue_size: per-model queue bound (0: unbounded); requests beyond it are rejected
            with UNAVAILABLE. On CPU it also bounds the requests waiting for an engine slot.
        queue_timeout_microseconds: drop a request queued longer than this (0: never).
        priority_levels: request priority levels (0: none); default_priority_level: for
            requests without one (None: the middle level).
        *_instance_count: Python-backend instances (pre, post, BLS) and LLM instances.
            postprocessing: None is 1 on a streaming CPU repository, where it must be 1 (it runs
            without dynamic batching there, so that it sees cancelled streams, see
            tritonllm.contract.REQUEST_KEY; one instance keeps their responses in order), else 4.
        exclude_input_in_output: default when a request does not say.
        add_special_tokens / skip_special_tokens: tokenizer options of pre/post/BLS.
        accumulate_tokens: BLS streams the whole text so far instead of deltas.
    Request size bounds (checked before any tokenizing; see docs/serving.md "Request limits"):
        max_prompt_bytes: the longest ``text_input`` in UTF-8 bytes. None: derived from the
            tokenizer at load, max_input_len × the most bytes one token can stand for.
        max_words: the most entries in ``stop_words``, and in ``bad_words``, of one request.
        max_word_bytes: the longest stop or bad word, in UTF-8 bytes.
        logits_datatype: dtype of context/generation logits outputs.
    TensorRT-LLM runtime (GPU; official parameter keys, None: the backend's default):
        batching_strategy (``gpt_model_type``), max_beam_width, kv_cache_free_gpu_mem_fraction,
        max_tokens_in_paged_kv_cache, max_attention_window_size, sink_token_length,
        batch_scheduler_policy, enable_kv_cache_reuse, enable_chunked_context,
        normalize_log_probs, cancellation_check_period_ms, stats_check_period_ms,
        iter_stats_max_iterations, request_stats_max_iterations, kv_cache_host_memory_bytes,
        kv_cache_onboard_blocks, gpu_device_ids, decoding_mode, gpu_weights_percent,
        enable_context_fmha_fp32_acc, multi_block_mode, cuda_graph_mode, cuda_graph_cache_size;
        extra_llm_parameters: any other official key (lora_cache_*, medusa_choices, ...).
    CPU engine (OpenVINO GenAI): kv_cache_precision, cache_size_gb, num_threads,
        max_stream_interval_ms (coalesce streamed tokens under load; 0: never);
        enable_kv_cache_reuse → prefix caching; enable_chunked_context → dynamic split-fuse.
    Paths:
        engine_path: reference the engine at this path (e.g. a container mount) instead of
            copying it into the repository.
        server_repo_path: where tritonserver will see the repository (e.g. ``/models``);
            the GPU ``gpt_model_path`` must be absolute. None: the output's absolute path.
    """

    target: str | None = None
    layout: str | None = None
    streaming: bool = True
    max_batch_size: int | None = None
    max_queue_delay_microseconds: int = 0
    preprocessing_max_queue_delay_microseconds: int = 100
    postprocessing_max_queue_delay_microseconds: int = 100
    max_queue_size: int = 0
    queue_timeout_microseconds: int = 0
    timeout_action: str = "REJECT"
    priority_levels: int = 0
    default_priority_level: int | None = None
    preprocessing_instance_count: int = 2
    postprocessing_instance_count: int | None = None
    bls_instance_count: int = 4
    llm_instance_count: int = 1
    exclude_input_in_output: bool = True
    add_special_tokens: bool = True
    skip_special_tokens: bool = True
    accumulate_tokens: bool = False
    logits_datatype: str = "FP32"
    # request size bounds
    max_prompt_bytes: int | None = None
    max_words: int = 64
    max_word_bytes: int = 1024
    # TensorRT-LLM runtime (GPU)
    batching_strategy: str = "inflight_fused_batching"
    max_beam_width: int = 1
    kv_cache_free_gpu_mem_fraction: float | None = 0.9
    max_tokens_in_paged_kv_cache: int | None = None
    max_attention_window_size: int | None = None
    sink_token_length: int | None = None
    batch_scheduler_policy: str = "guaranteed_no_evict"
    enable_kv_cache_reuse: bool = False
    enable_chunked_context: bool | None = None
    normalize_log_probs: bool = True
    cancellation_check_period_ms: int = 100
    stats_check_period_ms: int = 100
    iter_stats_max_iterations: int | None = None
    request_stats_max_iterations: int | None = None
    kv_cache_host_memory_bytes: int | None = None
    kv_cache_onboard_blocks: bool | None = None
    gpu_device_ids: str | None = None
    decoding_mode: str | None = None
    gpu_weights_percent: float | None = None
    enable_context_fmha_fp32_acc: bool | None = None
    multi_block_mode: bool | None = None
    cuda_graph_mode: bool | None = None
    cuda_graph_cache_size: int | None = None
    extra_llm_parameters: Mapping[str, str] = field(default_factory=dict)
    # CPU engine
    kv_cache_precision: str = "f32"
    cache_size_gb: float = 1.0
    num_threads: int | None = None
    max_stream_interval_ms: int = 250
    # embedding models (an onnx engine; see tritonllm.ensembles.embedding)
    embedding_instance_count: int = 1
    embedding_max_queue_delay_microseconds: int = 500
    embedding_max_batch_size: int | None = None
    embedding_max_text_bytes: int = 1 << 20
    embedding_num_threads: int | None = None
    # paths
    engine_path: str | None = None
    server_repo_path: str | None = None

    def __post_init__(self) -> None:
        def choice(name: str, choices: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")

        def at_least(name: str, minimum: float) -> None:
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ConfigError(f"{name}: must be at least {minimum}, got {value}")

        choice("target", TARGETS)
        choice("layout", LAYOUTS)
        choice("batching_strategy", BATCHING_STRATEGIES)
        choice("batch_scheduler_policy", BATCH_SCHEDULER_POLICIES)
        choice("logits_datatype", LOGITS_DATATYPES)
        choice("kv_cache_precision", KV_CACHE_PRECISIONS)
        choice("timeout_action", TIMEOUT_ACTIONS)
        for name in ("max_batch_size", "preprocessing_instance_count",
                     "postprocessing_instance_count", "bls_instance_count", "llm_instance_count",
                     "max_beam_width", "default_priority_level", "max_tokens_in_paged_kv_cache",
                     "max_attention_window_size", "cancellation_check_period_ms",
                     "stats_check_period_ms", "num_threads", "max_prompt_bytes", "max_words",
                     "max_word_bytes", "embedding_instance_count", "embedding_max_batch_size",
                     "embedding_max_text_bytes", "embedding_num_threads"):
            at_least(name, 1)
        most = MAX_WORD_LIST_IDS // (2 * _IDS_PER_WORD_BYTE)  # room for the tokenizer's EOS ids
        if self.max_words * self.max_word_bytes > most:
            raise ConfigError(
                f"max_words × max_word_bytes: {self.max_words} × {self.max_word_bytes} must be at "
                f"most {most} (their ids must fit the LLM's {MAX_WORD_LIST_IDS} per word list)")
        for name in ("max_queue_delay_microseconds", "preprocessing_max_queue_delay_microseconds",
                     "postprocessing_max_queue_delay_microseconds", "max_queue_size",
                     "queue_timeout_microseconds", "priority_levels", "sink_token_length",
                     "kv_cache_host_memory_bytes", "cuda_graph_cache_size",
                     "max_stream_interval_ms", "embedding_max_queue_delay_microseconds"):
            at_least(name, 0)
        frac = self.kv_cache_free_gpu_mem_fraction
        if frac is not None and not 0 < frac <= 1:
            raise ConfigError(f"kv_cache_free_gpu_mem_fraction: must be in (0, 1], got {frac}")
        pct = self.gpu_weights_percent
        if pct is not None and not 0 <= pct <= 1:
            raise ConfigError(f"gpu_weights_percent: must be in [0, 1], got {pct}")
        if self.cache_size_gb <= 0:
            raise ConfigError(f"cache_size_gb: must be positive, got {self.cache_size_gb}")
        if self.default_priority_level is not None:
            if self.priority_levels == 0:
                raise ConfigError("default_priority_level: needs priority_levels > 0")
            if self.default_priority_level > self.priority_levels:
                raise ConfigError(
                    f"default_priority_level: must be <= priority_levels "
                    f"({self.priority_levels}), got {self.default_priority_level}"
                )
        if self.server_repo_path is not None and not self.server_repo_path.startswith("/"):
            raise ConfigError(
                f"server_repo_path: must be absolute (as the server sees it), "
                f"got {self.server_repo_path!r}"
            )
        for key, value in self.extra_llm_parameters.items():
            if not key or not isinstance(value, str):
                raise ConfigError(f"extra_llm_parameters: bad entry {key!r}={value!r}")

    def postprocessing_sees_cancels(self, target: str) -> bool:
        """Whether postprocessing runs without dynamic batching to see cancelled streams:
        on the CPU target when streaming (see tritonllm.contract.REQUEST_KEY)."""
        return target == "cpu" and self.streaming

    def postprocessing_instances(self, target: str) -> int:
        """postprocessing's instance count on ``target`` (see the class docstring)."""
        n = self.postprocessing_instance_count
        if self.postprocessing_sees_cancels(target):
            if n not in (None, 1):
                raise ConfigError(
                    f"postprocessing_instance_count: must be 1 on the streaming CPU target, "
                    f"got {n} (it runs without dynamic batching to see cancelled streams; several "
                    "instances would reorder a stream's responses)")
            return 1
        return 4 if n is None else n

    @property
    def resolved_default_priority_level(self) -> int | None:
        if self.priority_levels == 0:
            return None
        return self.default_priority_level or (self.priority_levels + 1) // 2


# --- parameters of the Python-backend models --------------------------------------------------

@dataclass(frozen=True)
class PreprocessingParams(TritonParams):
    """``preprocessing``: text → token ids.

    tokenizer_dir: HF tokenizer folder. add_special_tokens: when encoding prompts.
    end_id / pad_id: used when a request sends no END_ID / PAD_ID (None: the tokenizer's).
    max_input_len / max_seq_len: the engine's limits; longer prompts, or prompt + max_tokens
    beyond max_seq_len, are refused with an error naming the field (None: not checked).
    max_prompt_bytes / max_words / max_word_bytes: request size bounds, see RepoSettings.
    """

    MODEL: ClassVar[str] = "preprocessing"
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"tokenizer_dir"})

    tokenizer_dir: Path
    add_special_tokens: bool = RepoSettings.add_special_tokens
    end_id: int | None = None
    pad_id: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_prompt_bytes: int | None = RepoSettings.max_prompt_bytes
    max_words: int = RepoSettings.max_words
    max_word_bytes: int = RepoSettings.max_word_bytes

    def __post_init__(self) -> None:
        for key in ("end_id", "pad_id"):
            self._check_min(key, 0)
        for key in ("max_input_len", "max_seq_len", "max_prompt_bytes", "max_words",
                    "max_word_bytes"):
            self._check_min(key, 1)


@dataclass(frozen=True)
class PostprocessingParams(TritonParams):
    """``postprocessing``: token ids → text. skip_special_tokens: when decoding."""

    MODEL: ClassVar[str] = "postprocessing"
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"tokenizer_dir"})

    tokenizer_dir: Path
    skip_special_tokens: bool = RepoSettings.skip_special_tokens


@dataclass(frozen=True)
class CpuLLMParams(TritonParams):
    """``tensorrt_llm`` on the CPU target: OpenVINO GenAI's continuous-batching pipeline.

    engine_dir: the engine folder (openvino_model.xml, openvino_tokenizer.xml, ...).
    max_num_seqs: most sequences decoded together (the engine's max_batch_size).
    max_num_batched_tokens: most tokens in one engine step (the engine's max_num_tokens).
    max_input_len / max_seq_len: requests beyond them are refused.
    kv_cache_precision: f32 (exact), f16, bf16 or u8 (OpenVINO's CPU default).
    cache_size_gb: KV cache size. enable_prefix_caching: reuse KV blocks of shared prefixes.
    dynamic_split_fuse: chunk long prompts into steps shared with running decodes (at most
    max_num_batched_tokens a step); off, each prompt is scheduled whole, in prompt-only steps.
    The repository's ``enable_chunked_context`` (``--enable/--disable-chunked-context``; unset:
    on) writes it. Off needs max_input_len (or max_seq_len) and max_num_seqs at most
    max_num_batched_tokens (a longer prompt would fail the whole engine step).
    end_id / pad_id: used when a request sends none (None: the engine's generation config).
    streaming: the model is decoupled (must match model_transaction_policy).
    exclude_input_in_output: default when a request does not say.
    cancellation_check_period_ms: how often running requests are checked for cancellation.
    num_threads: OpenVINO inference threads (None: all cores). device: the OpenVINO device the
    pipeline runs on (no CLI option writes it; only ``CPU`` is tested).
    max_stream_interval_ms: the longest a streamed token may be held so that several go out
    in one response when many streams share the engine (0: every token as it is made; see
    tritonllm.ensembles.llm_service).
    max_queue_size: requests allowed to wait for a free engine slot (beyond max_num_seqs
    decoding); more are refused with UNAVAILABLE, as Triton's own queue does (0: unbounded).
    """

    MODEL: ClassVar[str] = "tensorrt_llm"
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"engine_dir"})

    engine_dir: Path
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192
    max_input_len: int | None = None
    max_seq_len: int | None = None
    kv_cache_precision: str = RepoSettings.kv_cache_precision
    cache_size_gb: float = RepoSettings.cache_size_gb
    enable_prefix_caching: bool = RepoSettings.enable_kv_cache_reuse
    dynamic_split_fuse: bool = True
    end_id: int | None = None
    pad_id: int | None = None
    streaming: bool = RepoSettings.streaming
    exclude_input_in_output: bool = RepoSettings.exclude_input_in_output
    cancellation_check_period_ms: int = RepoSettings.cancellation_check_period_ms
    num_threads: int | None = None
    device: str = "CPU"
    max_stream_interval_ms: int = RepoSettings.max_stream_interval_ms
    max_queue_size: int = RepoSettings.max_queue_size

    def __post_init__(self) -> None:
        for key in ("max_num_seqs", "max_num_batched_tokens", "max_input_len", "max_seq_len",
                    "cancellation_check_period_ms", "num_threads"):
            self._check_min(key, 1)
        for key in ("end_id", "pad_id", "max_queue_size", "max_stream_interval_ms"):
            self._check_min(key, 0)
        self._check_choice("kv_cache_precision", KV_CACHE_PRECISIONS)
        if self.cache_size_gb <= 0:
            raise ConfigError(f"{self.MODEL}: parameter 'cache_size_gb' must be positive, "
                              f"got {self.cache_size_gb}")
        if not self.dynamic_split_fuse:
            self._check_whole_prompts()

    def _check_whole_prompts(self) -> None:
        """Without split-fuse OpenVINO GenAI schedules a prompt whole or fails the step (every
        request in it), and needs max_num_seqs <= max_num_batched_tokens at every step."""
        budget = self.max_num_batched_tokens
        longest = self.max_input_len or self.max_seq_len  # RequestLimits.for_engine's bound
        if longest is None or longest > budget:
            raise ConfigError(
                f"{self.MODEL}: parameter 'dynamic_split_fuse' false schedules each prompt whole, "
                f"so 'max_input_len' ({longest if longest is not None else 'unset'}) must be set "
                f"and at most 'max_num_batched_tokens' ({budget})")
        if self.max_num_seqs > budget:
            raise ConfigError(
                f"{self.MODEL}: parameter 'dynamic_split_fuse' false needs 'max_num_seqs' "
                f"({self.max_num_seqs}) at most 'max_num_batched_tokens' ({budget})")


@dataclass(frozen=True)
class CpuLLMAPIParams(CpuLLMParams):
    """The llmapi layout's CPU ``tensorrt_llm``: NVIDIA's llmapi contract on the engine itself
    (see tritonllm.ensembles.llmapi_local). The engine's parameters (:class:`CpuLLMParams`; the
    tokenizer is the engine dir's), plus what its in-process preprocessing and llmapi front read:
    add_special_tokens / skip_special_tokens, and the request bounds max_prompt_bytes,
    max_words, max_word_bytes (see RepoSettings).
    """

    add_special_tokens: bool = RepoSettings.add_special_tokens
    skip_special_tokens: bool = RepoSettings.skip_special_tokens
    max_prompt_bytes: int | None = RepoSettings.max_prompt_bytes
    max_words: int = RepoSettings.max_words
    max_word_bytes: int = RepoSettings.max_word_bytes

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("max_prompt_bytes", "max_words", "max_word_bytes"):
            self._check_min(key, 1)


@dataclass(frozen=True)
class BLSParams(TritonParams):
    """``tensorrt_llm_bls``: the ensemble's contract in one Python model calling the others.

    *_model_name: the models it calls (official key ``tensorrt_llm_model_name``; a draft model
    name enables speculative decoding, unsupported on CPU). accumulate_tokens: stream the
    whole text so far instead of deltas. tokenizer_dir / skip_special_tokens: for stop strings
    and incremental detokenizing. streaming: the model is decoupled.
    max_words / max_word_bytes: request size bounds of ``stop_words`` and ``bad_words``, see
    RepoSettings. llm_contract: what ``tensorrt_llm`` speaks: ``classic`` (None: token ids,
    called after preprocessing) or ``llmapi`` (the llmapi layout: this model is a classic front over
    it, for the ``ensemble`` too); max_seq_len: the engine's, bounding ``max_tokens`` there.
    """

    MODEL: ClassVar[str] = "tensorrt_llm_bls"
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"tokenizer_dir"})

    tokenizer_dir: Path
    preprocessing_model_name: str = "preprocessing"
    tensorrt_llm_model_name: str = "tensorrt_llm"
    postprocessing_model_name: str = "postprocessing"
    tensorrt_llm_draft_model_name: str | None = None
    accumulate_tokens: bool = RepoSettings.accumulate_tokens
    skip_special_tokens: bool = RepoSettings.skip_special_tokens
    streaming: bool = RepoSettings.streaming
    max_words: int = RepoSettings.max_words
    max_word_bytes: int = RepoSettings.max_word_bytes
    llm_contract: str | None = None
    max_seq_len: int | None = None

    def __post_init__(self) -> None:
        for key in ("max_words", "max_word_bytes", "max_seq_len"):
            self._check_min(key, 1)
        self._check_choice("llm_contract", LAYOUTS)


@dataclass(frozen=True)
class LLMAPIParams(TritonParams):
    """``llmapi``: NVIDIA's LLM API request contract (``text_input``, ``sampling_param_*``,
    ``return_*``, ``stop``) in one Python model that drives the same preprocessing and
    ``tensorrt_llm`` models as the BLS model (see tritonllm.ensembles.llmapi).

    *_model_name: the models it calls. tokenizer_dir / skip_special_tokens: for stop strings and
    detokenizing. streaming: the model is decoupled (``streaming`` requests need it).
    max_seq_len: the engine's, bounding ``sampling_param_max_tokens`` before any model is called
    (None: preprocessing alone checks it). max_words / max_word_bytes: bounds of
    ``sampling_param_stop``, see RepoSettings.
    """

    MODEL: ClassVar[str] = "llmapi"
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"tokenizer_dir"})

    tokenizer_dir: Path
    preprocessing_model_name: str = "preprocessing"
    tensorrt_llm_model_name: str = "tensorrt_llm"
    skip_special_tokens: bool = RepoSettings.skip_special_tokens
    streaming: bool = RepoSettings.streaming
    max_seq_len: int | None = None
    max_words: int = RepoSettings.max_words
    max_word_bytes: int = RepoSettings.max_word_bytes

    def __post_init__(self) -> None:
        for key in ("max_seq_len", "max_words", "max_word_bytes"):
            self._check_min(key, 1)


@dataclass(frozen=True)
class EmbeddingParams(TritonParams):
    """``embedding`` (CPU) and ``embedding_tokenizer`` (GPU): texts → vectors / token ids.

    tokenizer_dir: the encoder's HF tokenizer (tokenizer.json). engine_dir: the onnx engine
    (CPU: the model runs its model.onnx; GPU: unused). max_length: the engine's max tokens per
    text. pad_id: the tokenizer's. max_text_bytes: a text's UTF-8 size bound, checked before
    decoding. num_threads: ONNX Runtime's intra-op threads (None: its default, one per core).
    pad_to_max_length: pad every text to max_length (GPU: the encoder's inputs batch).
    """

    MODEL: ClassVar[str] = "embedding"
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"tokenizer_dir", "engine_dir"})

    tokenizer_dir: Path
    max_length: int
    engine_dir: Path | None = None
    pad_id: int = 0
    max_text_bytes: int = RepoSettings.embedding_max_text_bytes
    num_threads: int | None = None
    pad_to_max_length: bool = False

    def __post_init__(self) -> None:
        for key in ("max_length", "max_text_bytes", "num_threads"):
            self._check_min(key, 1)
        self._check_min("pad_id", 0)


PARAMS_BY_MODEL: dict[str, type[TritonParams]] = {
    "preprocessing": PreprocessingParams,
    "postprocessing": PostprocessingParams,
    "tensorrt_llm": CpuLLMParams,  # CPU target only; the GPU model is the tensorrtllm backend
    "tensorrt_llm_bls": BLSParams,
    "llmapi": LLMAPIParams,
    "embedding": EmbeddingParams,
    "embedding_tokenizer": EmbeddingParams,
}
#: The same, for the llmapi layout (tritonllm.contract.LAYOUTS) on CPU: the classic fronts take
#: the BLS model's parameters and ``tensorrt_llm`` is the llmapi model on the engine.
LLMAPI_LAYOUT_PARAMS: dict[str, type[TritonParams]] = {
    "ensemble": BLSParams,
    "tensorrt_llm": CpuLLMAPIParams,
    "tensorrt_llm_bls": BLSParams,
}

__all__ = [
    "ENGINE_LAYOUTS",
    "LLMAPI_LAYOUT_PARAMS",
    "MAX_REQUEST_ID_BYTES",
    "MAX_WORD_LIST_IDS",
    "PARAMS_BY_MODEL",
    "BLSParams",
    "CpuLLMAPIParams",
    "CpuLLMParams",
    "EmbeddingParams",
    "LLMAPIParams",
    "PostprocessingParams",
    "PreprocessingParams",
    "RepoSettings",
    "TritonParams",
    "flatten_parameters",
    "format_value",
    "parse_bool",
    "resolve_path",
]
