"""The request/response contract of a rendered model repository, declared once, as data.

Every tensor of every Triton model we render (name, dtype, dims, optional) and the wiring of
the ensemble live here. The ``config.pbtxt`` templates, the repository validator, the
Python-backend models and the client all read this module; nothing else spells a tensor.

Source. Names, dtypes, dims, ``optional``, ``reshape`` and ``allow_ragged_batch`` follow
NVIDIA's ``inflight_batcher_llm`` model repository, so its clients and genai-perf work
unchanged:

    NVIDIA/TensorRT-LLM  triton_backend/all_models/inflight_batcher_llm/
        ensemble/config.pbtxt          @ 2a9abd9536aa62ad3e4b9314be9286b1b1be523b
        tensorrt_llm/config.pbtxt      @ 2a9abd9536aa62ad3e4b9314be9286b1b1be523b
        preprocessing/config.pbtxt     @ 808059da341493bbf8deb9380aef745e4f546909
        postprocessing/config.pbtxt    @ 89fd9b74ab7ae753b4c6b3db25a400dca7ea54a0
        tensorrt_llm_bls/config.pbtxt  @ bff88ea886779f832686acb3f165e2b919c95b77
    (formerly all_models/inflight_batcher_llm in triton-inference-server/tensorrtllm_backend)

Where NVIDIA leaves a dtype to a placeholder we fix it: ``${logits_datatype}`` is
:data:`LOGITS_DTYPE` (FP32; the renderer may override it for :data:`LOGITS_TENSORS`),
``${prompt_embedding_table_data_type}`` and ``${encoder_input_features_data_type}`` are FP16.
Deliberate differences, each marked in the data below:

* the multimodal tensors of ``preprocessing`` (IMAGE_*, VIDEO_BYTES, PIXEL_VALUES, ...) are
  left out: no ensemble step maps them and we serve text models only. The BLS model keeps
  its multimodal inputs so such requests are refused with an error rather than as unknown.
* the ensemble's second ``kv_cache_alloc_total_blocks`` output (a duplicate upstream) is
  declared once.
* our additions carry ``ours=True``: ``finish_reason`` (``"stop"``, ``"length"``,
  ``"cancelled"``; empty while a stream is running) from the CPU LLM model and the BLS model.
  Outputs are always optional for a client: a model may leave any of them out of a response.

Shapes. Every model batches (``max_batch_size > 0``), so dims exclude the batch dimension and
one request is shaped ``[1, *dims]``: ``text_input`` arrives as ``[1, 1]``. Inputs with
``reshape=()`` (most scalars of the LLM model) reach the backend as shape ``[batch]``.

Shapes on the wire. What a response carries is what NVIDIA's models send, not what the configs
suggest (read in the sources above: ``postprocessing/1/model.py``,
``tensorrt_llm_bls/1/lib/triton_decoder.py`` and the C++ backend's
``inflight_batcher_llm/src/model_instance_state.cc``), because clients index it that way:

* ``text_output`` (and postprocessing's ``OUTPUT``) is 1-D, one string per sequence (beam), no
  batch dimension, although declared ``dims: [-1]`` with batching: ``[1]`` for one request, so
  clients read ``as_numpy("text_output")[0].decode()``. :attr:`Tensor.wire` marks it
  (:data:`PER_SEQUENCE`); our ``finish_reason`` follows it (as the vLLM and ``llmapi`` models
  send theirs).
* every other output keeps the batch dimension of one request: ``output_ids`` /
  ``output_log_probs`` ``[1, beams, n]``, ``sequence_length`` / ``cum_log_probs`` ``[1, beams]``,
  the scalars (``batch_index``, ``sequence_index``, token counts, perf metrics) ``[1, 1]``, read
  as ``[0][0]``.
* optional outputs are sent only when asked for: log probs with ``return_log_probs``, token
  counts with ``return_num_*_tokens``, ``batch_index`` only for a request of batch > 1 and
  ``sequence_index`` only with ``num_return_sequences`` > 1 (so a client reading
  ``as_numpy("batch_index")`` gets None and falls back to 0).

Targets. ``targets`` says where a tensor exists: ``"gpu"`` (TensorRT-LLM, ``tensorrtllm``
backend) and/or ``"cpu"`` (OpenVINO GenAI in a Python-backend model of the same name).
The CPU LLM model declares every GPU tensor, so clients see one contract. The inputs a model
cannot honour are declared once, in :data:`UNSUPPORTED_INPUTS` (per model and target), and every
model refuses them per request with INVALID_ARG naming the input (:func:`unsupported_inputs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

TARGETS = ("gpu", "cpu")
BOTH: frozenset[str] = frozenset(TARGETS)
CPU_ONLY: frozenset[str] = frozenset({"cpu"})

DTYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
          "FP16", "BF16", "FP32", "FP64", "STRING")
LOGITS_DTYPE = "FP32"
#: :attr:`Tensor.wire` of an output sent 1-D, one element per sequence, no batch dimension.
PER_SEQUENCE: tuple[int, ...] = (-1,)

ENSEMBLE = "ensemble"
PREPROCESSING = "preprocessing"
LLM = "tensorrt_llm"
POSTPROCESSING = "postprocessing"
BLS = "tensorrt_llm_bls"
#: NVIDIA's ``llmapi`` ``tensorrt_llm`` contract, served beside the classic models.
LLMAPI = "llmapi"
MODEL_NAMES = (ENSEMBLE, PREPROCESSING, LLM, POSTPROCESSING, BLS, LLMAPI)


def short_dtype(dtype: str) -> str:
    """``"TYPE_INT32"`` or ``"INT32"`` → ``"INT32"``; ValueError on anything else."""
    d = dtype.upper().removeprefix("TYPE_")
    if d not in DTYPES:
        raise ValueError(f"unknown Triton dtype {dtype!r}")
    return d


@dataclass(frozen=True)
class Tensor:
    """One input or output of a Triton model.

    Attributes:
        name: the tensor name on the wire.
        dtype: Triton dtype in short form (``"INT32"``); :attr:`triton_dtype` gives
            ``"TYPE_INT32"``. Either form is accepted on construction.
        dims: shape without the batch dimension; -1 is variable.
        optional: inputs only; the client may leave it out.
        reshape: the shape the backend sees (``()`` for a scalar per request), or None.
        ragged: ``allow_ragged_batch``.
        ours: our addition, not in NVIDIA's models.
        targets: the targets on which this tensor exists.
        wire: outputs only: the shape one request's response carries on the wire when it
            is not ``[1, *dims]`` (see "Shapes on the wire" in the module docstring);
            ``(-1,)`` is one element per sequence (beam) with no batch dimension.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False
    reshape: tuple[int, ...] | None = None
    ragged: bool = False
    ours: bool = False
    targets: frozenset[str] = BOTH
    wire: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", short_dtype(self.dtype))
        object.__setattr__(self, "dims", tuple(self.dims))
        if self.reshape is not None:
            object.__setattr__(self, "reshape", tuple(self.reshape))
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise ValueError(f"{self.name}: dims must be >= 1 or -1, got {self.dims}")

    @property
    def triton_dtype(self) -> str:
        return f"TYPE_{self.dtype}"

    @property
    def wire_shape(self) -> tuple[int, ...]:
        """The shape of this tensor in one request's response (-1: varies)."""
        return self.wire if self.wire is not None else (1, *self.dims)

    @property
    def batched_on_wire(self) -> bool:
        """Whether the response carries the batch dimension (False: NVIDIA's 1-D outputs)."""
        return self.wire is None

    def on(self, target: str) -> bool:
        return target in self.targets


@dataclass(frozen=True)
class ModelContract:
    """The inputs and outputs of one model, in declaration order."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def inputs_for(self, target: str) -> tuple[Tensor, ...]:
        return tuple(t for t in self.inputs if t.on(target))

    def outputs_for(self, target: str) -> tuple[Tensor, ...]:
        return tuple(t for t in self.outputs if t.on(target))

    def input(self, name: str) -> Tensor:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no input {name!r}")

    def output(self, name: str) -> Tensor:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no output {name!r}")

    def has_input(self, name: str) -> bool:
        return any(t.name == name for t in self.inputs)

    def has_output(self, name: str) -> bool:
        return any(t.name == name for t in self.outputs)

    @property
    def required_inputs(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs if not t.optional)


def _t(name: str, dtype: str, *dims: int, **kw: object) -> Tensor:
    return Tensor(name, dtype, tuple(dims), **kw)  # type: ignore[arg-type]


def _opt(name: str, dtype: str, *dims: int, **kw: object) -> Tensor:
    return Tensor(name, dtype, tuple(dims), optional=True, **kw)  # type: ignore[arg-type]


def _scalar(name: str, dtype: str, **kw: object) -> Tensor:
    """An optional per-request scalar of the LLM model: dims [1], reshape [] (as NVIDIA)."""
    return Tensor(name, dtype, (1,), optional=True, reshape=(), **kw)  # type: ignore[arg-type]


# --- tensors shared by several models --------------------------------------------------------

# Outputs of the LLM model that the ensemble and the BLS model pass through unchanged.
_PASSTHROUGH_OUTPUTS: tuple[Tensor, ...] = (
    _t("cum_log_probs", "FP32", -1),
    _t("output_log_probs", "FP32", -1, -1),
    _t("context_logits", LOGITS_DTYPE, -1, -1),
    _t("generation_logits", LOGITS_DTYPE, -1, -1, -1),
    _t("batch_index", "INT32", 1),
    _t("sequence_index", "INT32", 1),
    _t("kv_cache_alloc_new_blocks", "INT32", 1),
    _t("kv_cache_reused_blocks", "INT32", 1),
    _t("kv_cache_alloc_total_blocks", "INT32", 1),
    _t("arrival_time_ns", "INT64", 1),
    _t("first_scheduled_time_ns", "INT64", 1),
    _t("first_token_time_ns", "INT64", 1),
    _t("last_token_time_ns", "INT64", 1),
    _t("acceptance_rate", "FP32", 1),
    _t("total_accepted_draft_tokens", "INT32", 1),
    _t("total_draft_tokens", "INT32", 1),
    _t("num_input_tokens", "INT32", 1),
    _t("num_output_tokens", "INT32", 1),
)

FINISH_REASON = "finish_reason"
#: Ours (CPU): a streamed response's ``output_ids`` start with this many ids that earlier
#: responses already turned into text; postprocessing decodes them as context only, so the
#: streamed text deltas add up exactly to the non-streamed text (split UTF-8, leading spaces).
CONTEXT_LENGTH = "context_length"
POST_CONTEXT_LENGTH = "CONTEXT_LENGTH"
#: Ours (CPU): a key naming the LLM request that a response belongs to, passed to
#: postprocessing. Triton 2.51's ensemble never cancels its running LLM step when the client
#: cancels; it only marks the step requests it schedules afterwards as cancelled. So
#: postprocessing, seeing such a request, sends the LLM a ``stop`` with this key as the request
#: id (the client's own request id may be empty or shared), which frees the engine slot.
REQUEST_KEY = "request_key"
POST_REQUEST_KEY = "REQUEST_KEY"
FINISH_STOP = "stop"  # an end id or a stop word
FINISH_LENGTH = "length"  # max_tokens (or max_seq_len) reached
FINISH_CANCELLED = "cancelled"  # stopped by the client (cancel, stop, disconnect)
FINISH_REASONS = (FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED)

#: Tensors whose dtype NVIDIA leaves to ``${logits_datatype}``.
LOGITS_TENSORS = frozenset({"context_logits", "generation_logits", "draft_logits"})


# --- ensemble ---------------------------------------------------------------------------------

ENSEMBLE_CONTRACT = ModelContract(
    ENSEMBLE,
    inputs=(
        _t("text_input", "STRING", 1),
        _opt("decoder_text_input", "STRING", 1),
        _t("max_tokens", "INT32", 1),
        _opt("num_return_sequences", "INT32", 1),
        _opt("bad_words", "STRING", -1),
        _opt("stop_words", "STRING", -1),
        _opt("exclude_input_in_output", "BOOL", 1),
        _opt("end_id", "INT32", 1),
        _opt("pad_id", "INT32", 1),
        _opt("top_k", "INT32", 1),
        _opt("top_p", "FP32", 1),
        _opt("temperature", "FP32", 1),
        _opt("length_penalty", "FP32", 1),
        _opt("repetition_penalty", "FP32", 1),
        _opt("min_tokens", "INT32", 1),
        _opt("presence_penalty", "FP32", 1),
        _opt("frequency_penalty", "FP32", 1),
        _opt("seed", "UINT64", 1),
        _opt("return_log_probs", "BOOL", 1),
        _opt("return_context_logits", "BOOL", 1),
        _opt("return_generation_logits", "BOOL", 1),
        _opt("return_perf_metrics", "BOOL", 1),
        _opt("return_num_input_tokens", "BOOL", 1),
        _opt("return_num_output_tokens", "BOOL", 1),
        _opt("beam_width", "INT32", 1),
        _opt("stream", "BOOL", 1),
        _opt("prompt_embedding_table", "FP16", -1, -1),
        _opt("prompt_table_extra_id", "UINT64", 1),
        _opt("prompt_vocab_size", "INT32", 1),
        _opt("embedding_bias_words", "STRING", -1),
        _opt("embedding_bias_weights", "FP32", -1),
        _opt("lora_task_id", "UINT64", 1),
        _opt("lora_weights", "FP16", -1, -1, ragged=True),
        _opt("lora_config", "INT32", -1, 3, ragged=True),
        _opt("guided_decoding_guide_type", "STRING", 1, ragged=True),
        _opt("guided_decoding_guide", "STRING", 1, ragged=True),
    ),
    outputs=(
        _t("text_output", "STRING", -1, wire=PER_SEQUENCE),
        *_PASSTHROUGH_OUTPUTS,
        _t(FINISH_REASON, "STRING", 1, ours=True, targets=CPU_ONLY, wire=PER_SEQUENCE),
    ),
)


# --- preprocessing (Python) -------------------------------------------------------------------

PREPROCESSING_CONTRACT = ModelContract(
    PREPROCESSING,
    inputs=(
        _t("QUERY", "STRING", 1),
        _opt("DECODER_QUERY", "STRING", 1),
        _t("REQUEST_OUTPUT_LEN", "INT32", 1),
        _opt("BAD_WORDS_DICT", "STRING", -1),
        _opt("STOP_WORDS_DICT", "STRING", -1),
        _opt("EMBEDDING_BIAS_WORDS", "STRING", -1),
        _opt("EMBEDDING_BIAS_WEIGHTS", "FP32", -1),
        _opt("END_ID", "INT32", 1),
        _opt("PAD_ID", "INT32", 1),
        _opt("PROMPT_TABLE_EXTRA_ID", "UINT64", 1),
    ),
    outputs=(
        _t("INPUT_ID", "INT32", -1),
        _t("REQUEST_INPUT_LEN", "INT32", 1),
        _t("DECODER_INPUT_ID", "INT32", -1),
        _t("REQUEST_DECODER_INPUT_LEN", "INT32", 1),
        _t("BAD_WORDS_IDS", "INT32", 2, -1),
        _t("STOP_WORDS_IDS", "INT32", 2, -1),
        _t("EMBEDDING_BIAS", "FP32", -1),
        _t("REQUEST_OUTPUT_LEN", "INT32", -1),
        _t("OUT_END_ID", "INT32", 1),
        _t("OUT_PAD_ID", "INT32", 1),
        _t("OUT_PROMPT_TABLE_EXTRA_IDS", "UINT64", -1),
    ),
)


# --- the LLM model: tensorrt_llm (GPU: tensorrtllm backend; CPU: Python backend) --------------

LLM_CONTRACT = ModelContract(
    LLM,
    inputs=(
        _opt("input_ids", "INT32", -1, ragged=True),
        _opt("encoder_input_features", "FP16", -1, -1, ragged=True),
        _scalar("encoder_output_lengths", "INT32"),
        _t("input_lengths", "INT32", 1, reshape=()),
        _t("request_output_len", "INT32", 1, reshape=()),
        _scalar("num_return_sequences", "INT32"),
        _opt("draft_input_ids", "INT32", -1, ragged=True),
        _opt("decoder_input_ids", "INT32", -1, ragged=True),
        _scalar("decoder_input_lengths", "INT32"),
        _opt("draft_logits", LOGITS_DTYPE, -1, -1, ragged=True),
        _scalar("draft_acceptance_threshold", "FP32"),
        _scalar("end_id", "INT32"),
        _scalar("pad_id", "INT32"),
        _opt("stop_words_list", "INT32", 2, -1, ragged=True),
        _opt("bad_words_list", "INT32", 2, -1, ragged=True),
        _opt("embedding_bias", "FP32", -1, ragged=True),
        _scalar("beam_width", "INT32"),
        _scalar("temperature", "FP32"),
        _scalar("runtime_top_k", "INT32"),
        _scalar("runtime_top_p", "FP32"),
        _scalar("runtime_top_p_min", "FP32"),
        _scalar("runtime_top_p_decay", "FP32"),
        _scalar("runtime_top_p_reset_ids", "INT32"),
        _scalar("len_penalty", "FP32"),
        _scalar("early_stopping", "BOOL"),
        _scalar("repetition_penalty", "FP32"),
        _scalar("min_tokens", "INT32"),
        _scalar("beam_search_diversity_rate", "FP32"),
        _scalar("presence_penalty", "FP32"),
        _scalar("frequency_penalty", "FP32"),
        _scalar("seed", "UINT64"),
        _scalar("return_log_probs", "BOOL"),
        _scalar("return_context_logits", "BOOL"),
        _scalar("return_generation_logits", "BOOL"),
        _scalar("return_perf_metrics", "BOOL"),
        _scalar("return_num_input_tokens", "BOOL"),
        _scalar("return_num_output_tokens", "BOOL"),
        _scalar("exclude_input_in_output", "BOOL"),
        _scalar("stop", "BOOL"),
        _scalar("streaming", "BOOL"),
        _opt("prompt_embedding_table", "FP16", -1, -1, ragged=True),
        _opt("prompt_table_extra_ids", "UINT64", -1, ragged=True),
        _scalar("prompt_vocab_size", "INT32"),
        _opt("cross_attention_mask", "BOOL", -1, -1, ragged=True),
        _opt("mrope_rotary_cos_sin", "FP32", -1),
        _opt("mrope_position_deltas", "INT64", 1),
        _scalar("lora_task_id", "UINT64"),
        _opt("lora_weights", "FP16", -1, -1, ragged=True),
        _opt("lora_config", "INT32", -1, 3, ragged=True),
        _opt("context_phase_params", "UINT8", -1, ragged=True),
        _opt("skip_cross_attn_blocks", "BOOL", 1, ragged=True),
        _opt("retention_token_range_starts", "INT32", -1, ragged=True),
        _opt("retention_token_range_ends", "INT32", -1, ragged=True),
        _opt("retention_token_range_priorities", "INT32", -1, ragged=True),
        _opt("retention_token_range_durations_ms", "INT32", -1, ragged=True),
        _opt("retention_decode_priority", "INT32", 1, ragged=True),
        _opt("retention_decode_duration_ms", "INT32", 1, ragged=True),
        _opt("guided_decoding_guide_type", "STRING", 1, ragged=True),
        _opt("guided_decoding_guide", "STRING", 1, ragged=True),
        _opt("lookahead_window_size", "INT32", 1, ragged=True),
        _opt("lookahead_ngram_size", "INT32", 1, ragged=True),
        _opt("lookahead_verification_set_size", "INT32", 1, ragged=True),
    ),
    outputs=(
        _t("output_ids", "INT32", -1, -1),
        _t("sequence_length", "INT32", -1),
        *_PASSTHROUGH_OUTPUTS[:6],  # cum_log_probs .. sequence_index
        _t("context_phase_params", "UINT8", -1),
        *_PASSTHROUGH_OUTPUTS[6:],  # kv_cache_alloc_new_blocks .. num_output_tokens
        _t(FINISH_REASON, "STRING", 1, ours=True, targets=CPU_ONLY, wire=PER_SEQUENCE),
        _t(CONTEXT_LENGTH, "INT32", 1, ours=True, targets=CPU_ONLY),
        _t(REQUEST_KEY, "STRING", 1, ours=True, targets=CPU_ONLY),
    ),
)

# --- postprocessing (Python) ------------------------------------------------------------------

POSTPROCESSING_CONTRACT = ModelContract(
    POSTPROCESSING,
    inputs=(
        _t("TOKENS_BATCH", "INT32", -1, -1),
        _t("SEQUENCE_LENGTH", "INT32", -1),
        _opt(POST_CONTEXT_LENGTH, "INT32", 1, ours=True, targets=CPU_ONLY),
        _opt(POST_REQUEST_KEY, "STRING", 1, ours=True, targets=CPU_ONLY),
    ),
    outputs=(
        _t("OUTPUT", "STRING", -1, wire=PER_SEQUENCE),
    ),
)


# --- tensorrt_llm_bls (Python, BLS): the ensemble's contract, called directly ----------------

BLS_CONTRACT = ModelContract(
    BLS,
    inputs=(
        _t("text_input", "STRING", 1),
        _opt("decoder_text_input", "STRING", 1),
        _opt("image_input", "FP16", -1, 3, -1, -1),
        _opt("image_bytes_input", "UINT8", -1, -1, -1, -1),
        _opt("image_url_input", "STRING", 1),
        _opt("image_sizes_input", "INT64", -1, 2),
        _opt("video_bytes_input", "UINT8", -1, -1, -1, -1),
        _t("max_tokens", "INT32", 1),
        _opt("bad_words", "STRING", -1),
        _opt("stop_words", "STRING", -1),
        _opt("exclude_input_in_output", "BOOL", 1),
        _opt("end_id", "INT32", 1),
        _opt("pad_id", "INT32", 1),
        _opt("top_k", "INT32", 1),
        _opt("top_p", "FP32", 1),
        _opt("temperature", "FP32", 1),
        _opt("length_penalty", "FP32", 1),
        _opt("repetition_penalty", "FP32", 1),
        _opt("min_tokens", "INT32", 1),
        _opt("presence_penalty", "FP32", 1),
        _opt("frequency_penalty", "FP32", 1),
        _opt("seed", "UINT64", 1),
        _scalar("return_log_probs", "BOOL"),
        _scalar("return_context_logits", "BOOL"),
        _scalar("return_generation_logits", "BOOL"),
        _scalar("num_return_sequences", "INT32"),
        _opt("beam_width", "INT32", 1),
        _opt("stream", "BOOL", 1),
        _opt("prompt_embedding_table", "FP16", -1, -1),
        _opt("prompt_vocab_size", "INT32", 1),
        _opt("prompt_table_extra_id", "UINT64", 1),
        _opt("embedding_bias_words", "STRING", -1),
        _opt("embedding_bias_weights", "FP32", -1),
        _opt("num_draft_tokens", "INT32", 1),
        _scalar("use_draft_logits", "BOOL"),
        _scalar("lora_task_id", "UINT64"),
        _opt("lora_weights", "FP16", -1, -1, ragged=True),
        _opt("lora_config", "INT32", -1, 3, ragged=True),
        _scalar("return_perf_metrics", "BOOL"),
        _scalar("return_num_input_tokens", "BOOL"),
        _scalar("return_num_output_tokens", "BOOL"),
        _opt("guided_decoding_guide_type", "STRING", 1),
        _opt("guided_decoding_guide", "STRING", 1),
    ),
    outputs=(
        _t("text_output", "STRING", -1, wire=PER_SEQUENCE),
        *_PASSTHROUGH_OUTPUTS,
        _t(FINISH_REASON, "STRING", 1, ours=True, wire=PER_SEQUENCE),
    ),
)

# --- llmapi (Python): NVIDIA's current Triton contract, in front of our pipeline ----------------
#
# NVIDIA/TensorRT-LLM triton_backend/all_models/llmapi/tensorrt_llm/
#     config.pbtxt   @ c8c6df08bd0ead54cd47f7973e1e425c28a174cd
#     1/model.py     @ b35ac1b64368513d215c57d2ed01d62d910df8da (what goes on the wire)
#     1/helpers.py   @ fab2f90bc62bcf0ca72d7dffbf31c3ddee6f948e (defaults of the inputs)
# NVIDIA's model runs with max_batch_size 0 (model.yaml's triton_config), so dims are whole
# shapes: ``text_input`` is sent as ``[1]``, a scalar as ``[1]``. Every output is one element per
# sequence (``text_output`` ``[1]``, read as ``[0]``); ``finish_reason``, ``stop_reason`` and
# ``cumulative_logprob`` only when the request's ``return_*`` flag is set; while a stream runs
# its ``text_output`` is the whole text so far and its ``finish_reason`` the string "None" (the
# LLM API's CompletionOutput.text, str(None)). Perf-metric outputs are declared, not sent
# (``sampling_param_return_perf_metrics`` is refused). Newer NVIDIA releases add LoRA and
# ``image_url`` inputs; they are not declared here (not read at a pinned commit).

#: The file NVIDIA's llmapi model reads its configuration from (``LLM()`` arguments and
#: ``triton_config``), in the model's version folder.
LLMAPI_MODEL_YAML = "model.yaml"
#: The LLM API's ``SamplingParams.max_tokens`` default: a request without
#: ``sampling_param_max_tokens`` generates this many tokens at most.
LLMAPI_DEFAULT_MAX_TOKENS = 32
#: What NVIDIA's model sends as ``finish_reason`` / ``stop_reason`` while a stream runs.
LLMAPI_NONE = "None"
_ONE: tuple[int, ...] = (1,)

LLMAPI_CONTRACT = ModelContract(
    LLMAPI,
    inputs=(
        _t("text_input", "STRING", -1),
        _opt("streaming", "BOOL", 1),
        _opt("sampling_param_best_of", "INT32", 1),
        _opt("sampling_param_temperature", "FP32", 1),
        _opt("sampling_param_top_k", "INT32", 1),
        _opt("sampling_param_top_p", "FP32", 1),
        _opt("sampling_param_frequency_penalty", "FP32", 1),
        _opt("sampling_param_presence_penalty", "FP32", 1),
        _opt("sampling_param_max_tokens", "INT32", 1),
        _opt("sampling_param_stop", "STRING", -1),
        _opt("sampling_param_seed", "UINT64", 1),
        _opt("sampling_param_exclude_input_from_output", "BOOL", 1),
        _opt("sampling_param_return_perf_metrics", "BOOL", 1),
        _opt("return_finish_reason", "BOOL", 1),
        _opt("return_stop_reason", "BOOL", 1),
        _opt("return_cumulative_logprob", "BOOL", 1),
        _opt("stop", "BOOL", 1),
        # Ours: SamplingParams fields of the LLM API that NVIDIA's model does not read, named
        # as it names the others (sampling_param_<field>), so the classic front carries them.
        *(_opt(f"sampling_param_{name}", dtype, 1, ours=True) for name, dtype in (
            ("min_tokens", "INT32"), ("repetition_penalty", "FP32"),
            ("length_penalty", "FP32"), ("end_id", "INT32"), ("pad_id", "INT32"))),
        _opt("sampling_param_bad", "STRING", -1, ours=True),
        # Ours: token counts, named and asked for as in the classic contract.
        _opt("return_num_input_tokens", "BOOL", 1, ours=True),
        _opt("return_num_output_tokens", "BOOL", 1, ours=True),
    ),
    outputs=(
        _t("text_output", "STRING", -1, wire=PER_SEQUENCE),
        _t("finish_reason", "STRING", -1, wire=PER_SEQUENCE),
        _t("stop_reason", "STRING", -1, wire=PER_SEQUENCE),
        _t("cumulative_logprob", "FP32", -1, wire=PER_SEQUENCE),
        *(_t(name, "INT32", -1, wire=PER_SEQUENCE) for name in (
            "kv_cache_reused_block", "kv_cache_missed_block", "kv_cache_alloc_new_blocks",
            "kv_cache_alloc_total_blocks")),
        _t("kv_cache_hit_rate", "FP32", -1, wire=PER_SEQUENCE),
        *(_t(name, "INT64", 1, wire=_ONE) for name in (
            "arrival_time_ns", "first_scheduled_time_ns", "first_token_time_ns",
            "last_token_time_ns")),
        _t("acceptance_rate", "FP32", 1, wire=_ONE),
        _t("total_accepted_draft_tokens", "INT32", 1, wire=_ONE),
        _t("total_draft_tokens", "INT32", 1, wire=_ONE),
        _t("num_input_tokens", "INT32", 1, ours=True, wire=_ONE),
        _t("num_output_tokens", "INT32", 1, ours=True, wire=_ONE),
    ),
)
#: The request contracts a client can speak: NVIDIA's classic tensorrtllm_backend one (the
#: ensemble, the BLS model) and the llmapi one; "auto" picks one per model from its metadata.
CONTRACT_CLASSIC = "classic"
CONTRACT_AUTO = "auto"
CONTRACT_CHOICES = (CONTRACT_AUTO, CONTRACT_CLASSIC, LLMAPI)
#: Models served with max_batch_size 0 (their dims are whole shapes).
UNBATCHED_MODELS = frozenset({LLMAPI})
#: llmapi output -> the flag that asks for it (the others are sent always or never).
LLMAPI_FLAGGED_OUTPUTS: dict[str, str] = {
    "finish_reason": "return_finish_reason",
    "stop_reason": "return_stop_reason",
    "cumulative_logprob": "return_cumulative_logprob",
    "num_input_tokens": "return_num_input_tokens",
    "num_output_tokens": "return_num_output_tokens",
}

# --- layouts: which models a repository serves, and which contract each speaks ----------------
#
# ``classic``: NVIDIA's inflight_batcher_llm layout (token-level ``tensorrt_llm``, pre/post
# processing, the ensemble, the BLS model) plus our ``llmapi`` front model. ``llmapi``: the
# layout of NVIDIA's current stack, where ``tensorrt_llm`` itself speaks the llmapi contract
# (text in, text out) and the classic ``ensemble`` / ``tensorrt_llm_bls`` contract is served by
# Python models in front of it (there are no token-level steps to chain).
LAYOUT_CLASSIC = "classic"
LAYOUT_LLMAPI = "llmapi"
LAYOUTS = (LAYOUT_CLASSIC, LAYOUT_LLMAPI)
LAYOUT_MODELS: dict[str, tuple[str, ...]] = {
    LAYOUT_CLASSIC: MODEL_NAMES,
    LAYOUT_LLMAPI: (ENSEMBLE, LLM, BLS),
}
#: In the llmapi layout: the classic front models and the llmapi model they drive.
LLMAPI_FRONTS = (ENSEMBLE, BLS)


CONTRACTS: dict[str, ModelContract] = {
    c.name: c
    for c in (ENSEMBLE_CONTRACT, PREPROCESSING_CONTRACT, LLM_CONTRACT, POSTPROCESSING_CONTRACT,
              BLS_CONTRACT, LLMAPI_CONTRACT)
}




class TensorNames:
    """One model's tensor names as attributes: ``LLM_OUT.output_ids == "output_ids"``.

    Code outside this module spells a tensor through these (never as a string literal), so a
    name the contract does not declare fails where it is used, naming the model.
    """

    def __init__(self, model: str, tensors: Iterable[Tensor]) -> None:
        self._model = model
        self._names = frozenset(t.name for t in tensors)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"{self._model} declares no tensor {name!r}")
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))


ENSEMBLE_IN = TensorNames(ENSEMBLE, ENSEMBLE_CONTRACT.inputs)
ENSEMBLE_OUT = TensorNames(ENSEMBLE, ENSEMBLE_CONTRACT.outputs)
PRE_IN = TensorNames(PREPROCESSING, PREPROCESSING_CONTRACT.inputs)
PRE_OUT = TensorNames(PREPROCESSING, PREPROCESSING_CONTRACT.outputs)
LLM_IN = TensorNames(LLM, LLM_CONTRACT.inputs)
LLM_OUT = TensorNames(LLM, LLM_CONTRACT.outputs)
POST_IN = TensorNames(POSTPROCESSING, POSTPROCESSING_CONTRACT.inputs)
POST_OUT = TensorNames(POSTPROCESSING, POSTPROCESSING_CONTRACT.outputs)
BLS_IN = TensorNames(BLS, BLS_CONTRACT.inputs)
BLS_OUT = TensorNames(BLS, BLS_CONTRACT.outputs)
LLMAPI_IN = TensorNames(LLMAPI, LLMAPI_CONTRACT.inputs)
LLMAPI_OUT = TensorNames(LLMAPI, LLMAPI_CONTRACT.outputs)

# --- embeddings (ours: no NVIDIA contract to keep) --------------------------------------------
#
# ``embedding`` is what clients call on both targets: one text per batch row in, its vector
# out, dynamically batched (a client may also send several rows in one request). On CPU it
# is one Python model that tokenizes the batch, pads it to its longest text and runs the ONNX
# file with onnxruntime. On GPU it is an ensemble: ``embedding_tokenizer`` (Python) pads to
# the engine's max length (so Triton can batch the encoder's inputs) and
# ``embedding_encoder`` is the ONNX file on ``platform: "onnxruntime_onnx"`` with the
# TensorRT accelerator. Pooling and normalization are inside the ONNX graph (builders/onnx.py).
EMBEDDING = "embedding"
EMBEDDING_TOKENIZER = "embedding_tokenizer"
EMBEDDING_ENCODER = "embedding_encoder"
#: The ONNX graph's own tensor names (what the export writes and the encoder model declares).
ONNX_INPUT_IDS = "input_ids"
ONNX_ATTENTION_MASK = "attention_mask"
ONNX_EMBEDDING = "embedding"
#: The dtype of the graph's id/mask inputs (what torch exports, what ORT is fed).
ONNX_ID_DTYPE = "INT64"

EMBEDDING_CONTRACT = ModelContract(
    EMBEDDING,
    inputs=(
        _t("text", "STRING", 1),
        # Ours: cut a text longer than the engine's max length instead of refusing it.
        _opt("truncate", "BOOL", 1),
    ),
    outputs=(
        _t("embedding", "FP32", -1),
        _t("num_tokens", "INT32", 1),  # the text's tokens after truncation (usage)
    ),
)
EMBEDDING_TOKENIZER_CONTRACT = ModelContract(
    EMBEDDING_TOKENIZER,
    inputs=EMBEDDING_CONTRACT.inputs,
    outputs=(
        _t(ONNX_INPUT_IDS, ONNX_ID_DTYPE, -1),
        _t(ONNX_ATTENTION_MASK, ONNX_ID_DTYPE, -1),
        _t("num_tokens", "INT32", 1),
    ),
)
EMBEDDING_ENCODER_CONTRACT = ModelContract(
    EMBEDDING_ENCODER,
    inputs=(_t(ONNX_INPUT_IDS, ONNX_ID_DTYPE, -1), _t(ONNX_ATTENTION_MASK, ONNX_ID_DTYPE, -1)),
    outputs=(_t(ONNX_EMBEDDING, "FP32", -1),),
)
EMBEDDING_CONTRACTS: dict[str, ModelContract] = {
    c.name: c for c in (EMBEDDING_CONTRACT, EMBEDDING_TOKENIZER_CONTRACT,
                        EMBEDDING_ENCODER_CONTRACT)
}
#: The embedding models a repository serves, per target.
EMBEDDING_MODELS: dict[str, tuple[str, ...]] = {
    "cpu": (EMBEDDING,),
    "gpu": (EMBEDDING, EMBEDDING_TOKENIZER, EMBEDDING_ENCODER),
}
EMB_IN = TensorNames(EMBEDDING, EMBEDDING_CONTRACT.inputs)
EMB_OUT = TensorNames(EMBEDDING, EMBEDDING_CONTRACT.outputs)
#: GPU ensemble steps: (model, {step input: ensemble tensor}, {step output: ensemble tensor}).
EMBEDDING_STEPS: tuple[tuple[str, dict[str, str], dict[str, str]], ...] = (
    (EMBEDDING_TOKENIZER, {"text": "text", "truncate": "truncate"},
     {ONNX_INPUT_IDS: "_ids", ONNX_ATTENTION_MASK: "_mask", "num_tokens": "num_tokens"}),
    (EMBEDDING_ENCODER, {ONNX_INPUT_IDS: "_ids", ONNX_ATTENTION_MASK: "_mask"},
     {ONNX_EMBEDDING: "embedding"}),
)


# --- request fields: what tritonllm.ensembles.requests.parse_request reads, per model ---------

#: Per model: request field -> the tensor it is read from (sampling fields as
#: "sampling.<name>", the :class:`~tritonllm.ensembles.sampling.SamplingParams` field). One name
#: each, all declared by that model; inputs not listed are not read by the parser.
REQUEST_FIELDS: dict[str, dict[str, str]] = {}
_SAMPLING_SAME = {f"sampling.{n}": n for n in (
    "temperature", "repetition_penalty", "presence_penalty", "frequency_penalty", "min_tokens",
    "seed", "beam_width", "num_return_sequences")}
REQUEST_FIELDS[ENSEMBLE] = {
    "prompt": "text_input", "max_tokens": "max_tokens", "streaming": "stream",
    "end_id": "end_id", "pad_id": "pad_id", "stop_words": "stop_words", "bad_words": "bad_words",
    "exclude_input_in_output": "exclude_input_in_output",
    "return_log_probs": "return_log_probs",
    "sampling.top_k": "top_k", "sampling.top_p": "top_p",
    "sampling.length_penalty": "length_penalty", **_SAMPLING_SAME,
}
REQUEST_FIELDS[BLS] = REQUEST_FIELDS[ENSEMBLE]
REQUEST_FIELDS[PREPROCESSING] = {
    "prompt": "QUERY", "max_tokens": "REQUEST_OUTPUT_LEN", "stop_words": "STOP_WORDS_DICT",
    "bad_words": "BAD_WORDS_DICT", "end_id": "END_ID", "pad_id": "PAD_ID",
}
REQUEST_FIELDS[LLM] = {
    "prompt_ids": "input_ids", "input_lengths": "input_lengths",
    "max_tokens": "request_output_len", "streaming": "streaming",
    "end_id": "end_id", "pad_id": "pad_id",
    "stop_ids": "stop_words_list", "bad_ids": "bad_words_list",
    "exclude_input_in_output": "exclude_input_in_output",
    "return_log_probs": "return_log_probs",
    "sampling.top_k": "runtime_top_k", "sampling.top_p": "runtime_top_p",
    "sampling.length_penalty": "len_penalty", **_SAMPLING_SAME,
}
REQUEST_FIELDS[LLMAPI] = {
    "prompt": "text_input", "streaming": "streaming", "max_tokens": "sampling_param_max_tokens",
    "stop_words": "sampling_param_stop", "bad_words": "sampling_param_bad",
    "end_id": "sampling_param_end_id", "pad_id": "sampling_param_pad_id",
    "exclude_input_in_output": "sampling_param_exclude_input_from_output",
    **{f"sampling.{n}": f"sampling_param_{n}" for n in (
        "temperature", "top_k", "top_p", "frequency_penalty", "presence_penalty", "seed",
        "min_tokens", "repetition_penalty", "length_penalty")},
}
#: Classic (ensemble / BLS) input -> the llmapi input it is carried as: the request fields
#: both read, and the count flags (same names).
CLASSIC_TO_LLMAPI: dict[str, str] = {
    **{REQUEST_FIELDS[ENSEMBLE][f]: name for f, name in REQUEST_FIELDS[LLMAPI].items()},
    **{flag: flag for flag in ("return_num_input_tokens", "return_num_output_tokens")},
}
for _model, _fields in REQUEST_FIELDS.items():
    for _name in _fields.values():
        CONTRACTS[_model].input(_name)  # KeyError at import for a name the model lacks

# --- the ensemble wiring ----------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One ensemble step: ``input_map`` / ``output_map`` as (model tensor, ensemble tensor)."""

    model: str
    input_map: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[str, str], ...]

    def for_target(self, target: str) -> Step:
        """Drop the wires whose model tensor does not exist on ``target``."""
        c = CONTRACTS[self.model]
        ins = tuple((m, e) for m, e in self.input_map if c.input(m).on(target))
        outs = tuple((m, e) for m, e in self.output_map if c.output(m).on(target))
        return replace(self, input_map=ins, output_map=outs)


def _same(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple((n, n) for n in names)


_PASSTHROUGH_NAMES = tuple(t.name for t in _PASSTHROUGH_OUTPUTS)

ENSEMBLE_STEPS: tuple[Step, ...] = (
    Step(
        PREPROCESSING,
        input_map=(
            ("QUERY", "text_input"),
            ("DECODER_QUERY", "decoder_text_input"),
            ("REQUEST_OUTPUT_LEN", "max_tokens"),
            ("BAD_WORDS_DICT", "bad_words"),
            ("STOP_WORDS_DICT", "stop_words"),
            ("EMBEDDING_BIAS_WORDS", "embedding_bias_words"),
            ("EMBEDDING_BIAS_WEIGHTS", "embedding_bias_weights"),
            ("END_ID", "end_id"),
            ("PAD_ID", "pad_id"),
            ("PROMPT_TABLE_EXTRA_ID", "prompt_table_extra_id"),
        ),
        output_map=(
            ("REQUEST_INPUT_LEN", "_REQUEST_INPUT_LEN"),
            ("INPUT_ID", "_INPUT_ID"),
            ("REQUEST_DECODER_INPUT_LEN", "_REQUEST_DECODER_INPUT_LEN"),
            ("DECODER_INPUT_ID", "_DECODER_INPUT_ID"),
            ("REQUEST_OUTPUT_LEN", "_REQUEST_OUTPUT_LEN"),
            ("STOP_WORDS_IDS", "_STOP_WORDS_IDS"),
            ("BAD_WORDS_IDS", "_BAD_WORDS_IDS"),
            ("EMBEDDING_BIAS", "_EMBEDDING_BIAS"),
            ("OUT_END_ID", "_PREPROCESSOR_END_ID"),
            ("OUT_PAD_ID", "_PREPROCESSOR_PAD_ID"),
            ("OUT_PROMPT_TABLE_EXTRA_IDS", "_OUT_PROMPT_TABLE_EXTRA_IDS"),
        ),
    ),
    Step(
        LLM,
        input_map=(
            ("input_ids", "_INPUT_ID"),
            ("decoder_input_ids", "_DECODER_INPUT_ID"),
            ("input_lengths", "_REQUEST_INPUT_LEN"),
            ("decoder_input_lengths", "_REQUEST_DECODER_INPUT_LEN"),
            ("exclude_input_in_output", "exclude_input_in_output"),
            ("request_output_len", "_REQUEST_OUTPUT_LEN"),
            ("end_id", "_PREPROCESSOR_END_ID"),
            ("pad_id", "_PREPROCESSOR_PAD_ID"),
            ("embedding_bias", "_EMBEDDING_BIAS"),
            ("runtime_top_k", "top_k"),
            ("runtime_top_p", "top_p"),
            ("temperature", "temperature"),
            ("len_penalty", "length_penalty"),
            ("repetition_penalty", "repetition_penalty"),
            ("min_tokens", "min_tokens"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
            ("seed", "seed"),
            ("return_log_probs", "return_log_probs"),
            ("return_context_logits", "return_context_logits"),
            ("return_generation_logits", "return_generation_logits"),
            ("return_perf_metrics", "return_perf_metrics"),
            ("return_num_input_tokens", "return_num_input_tokens"),
            ("return_num_output_tokens", "return_num_output_tokens"),
            ("num_return_sequences", "num_return_sequences"),
            ("beam_width", "beam_width"),
            ("streaming", "stream"),
            ("prompt_embedding_table", "prompt_embedding_table"),
            ("prompt_vocab_size", "prompt_vocab_size"),
            ("stop_words_list", "_STOP_WORDS_IDS"),
            ("bad_words_list", "_BAD_WORDS_IDS"),
            ("prompt_table_extra_ids", "_OUT_PROMPT_TABLE_EXTRA_IDS"),
            ("lora_task_id", "lora_task_id"),
            ("lora_weights", "lora_weights"),
            ("lora_config", "lora_config"),
            ("guided_decoding_guide_type", "guided_decoding_guide_type"),
            ("guided_decoding_guide", "guided_decoding_guide"),
        ),
        output_map=(
            ("output_ids", "_TOKENS_BATCH"),
            ("sequence_length", "_SEQUENCE_LENGTH"),
            *_same(*_PASSTHROUGH_NAMES),
            (FINISH_REASON, FINISH_REASON),
            (CONTEXT_LENGTH, "_CONTEXT_LENGTH"),
            (REQUEST_KEY, "_REQUEST_KEY"),
        ),
    ),
    Step(
        POSTPROCESSING,
        input_map=(
            ("TOKENS_BATCH", "_TOKENS_BATCH"),
            ("SEQUENCE_LENGTH", "_SEQUENCE_LENGTH"),
            (POST_CONTEXT_LENGTH, "_CONTEXT_LENGTH"),
            (POST_REQUEST_KEY, "_REQUEST_KEY"),
        ),
        output_map=(
            ("OUTPUT", "text_output"),
        ),
    ),
)


def ensemble_steps(target: str) -> tuple[Step, ...]:
    """The ensemble's steps on ``target`` (wires to tensors absent there are dropped)."""
    _check_target(target)
    return tuple(s.for_target(target) for s in ENSEMBLE_STEPS)


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")


# --- inputs a target cannot honour ---------------------------------------------------------

@dataclass(frozen=True)
class Unsupported:
    """An input of ``model`` that it cannot honour on ``targets``.

    A request carrying it is refused (INVALID_ARG, naming the input) unless its one value is
    ``neutral`` (None: every value is refused); the error says "not supported by {why}".
    """

    model: str
    name: str
    neutral: object = None
    targets: frozenset[str] = BOTH
    why: str = ""


_CPU_ENGINE = "the CPU engine"
#: LLM inputs the CPU engine cannot honour, with their neutral values.
_CPU_LLM: dict[str, object] = {
    "encoder_input_features": None,
    "encoder_output_lengths": None,
    "num_return_sequences": 1,
    "draft_input_ids": None,
    "decoder_input_ids": None,
    "decoder_input_lengths": None,
    "draft_logits": None,
    "draft_acceptance_threshold": None,
    "embedding_bias": None,
    "beam_width": 1,
    "runtime_top_p_min": None,
    "runtime_top_p_decay": None,
    "runtime_top_p_reset_ids": None,
    "len_penalty": None,
    "early_stopping": None,
    "beam_search_diversity_rate": None,
    "return_context_logits": False,
    "return_generation_logits": False,
    "return_perf_metrics": False,
    "prompt_embedding_table": None,
    "prompt_table_extra_ids": None,
    "prompt_vocab_size": None,
    "cross_attention_mask": None,
    "mrope_rotary_cos_sin": None,
    "mrope_position_deltas": None,
    "lora_task_id": None,
    "lora_weights": None,
    "lora_config": None,
    "context_phase_params": None,
    "skip_cross_attn_blocks": None,
    "retention_token_range_starts": None,
    "retention_token_range_ends": None,
    "retention_token_range_priorities": None,
    "retention_token_range_durations_ms": None,
    "retention_decode_priority": None,
    "retention_decode_duration_ms": None,
    "guided_decoding_guide_type": None,
    "guided_decoding_guide": None,
    "lookahead_window_size": None,
    "lookahead_ngram_size": None,
    "lookahead_verification_set_size": None,
}

#: Every input some model cannot honour, declared once. Each model refuses what
#: :func:`unsupported_inputs` derives from it: its own entries plus, for the ensemble and the BLS
#: model, the inputs they pass on to a refused input of a model they call, under their own
#: names. The CPU LLM model refuses per its target; the preprocessing and the BLS model do not
#: know the target and refuse what no target honours (the BLS passes the rest on to the LLM,
#: which refuses what its target cannot honour, so every path gives the same error).
UNSUPPORTED_INPUTS: tuple[Unsupported, ...] = (
    Unsupported(PREPROCESSING, "DECODER_QUERY",
                why="this repository (no encoder-decoder models)"),
    *(Unsupported(PREPROCESSING, name, why="preprocessing (no embedding bias)")
      for name in ("EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS")),
    Unsupported(PREPROCESSING, "PROMPT_TABLE_EXTRA_ID",
                why="preprocessing (no prompt-table ids)"),
    *(Unsupported(LLM, name, neutral, CPU_ONLY, _CPU_ENGINE)
      for name, neutral in _CPU_LLM.items()),
    *(Unsupported(BLS, name, why="the BLS model (text only)")
      for name in ("image_input", "image_bytes_input", "image_url_input", "image_sizes_input",
                   "video_bytes_input")),
    Unsupported(BLS, "num_draft_tokens", 0,
                why="the BLS model (no speculative decoding)"),
    Unsupported(BLS, "use_draft_logits", False,
                why="the BLS model (no speculative decoding)"),
    *(Unsupported(BLS, name, False, why="the BLS model (it does not return these outputs)")
      for name in ("return_context_logits", "return_generation_logits", "return_perf_metrics")),
    Unsupported(LLMAPI, "sampling_param_best_of", 1,
                why="the llmapi model (one sequence per request)"),
    Unsupported(LLMAPI, "sampling_param_return_perf_metrics", False,
                why="the llmapi model (it does not return perf metrics)"),
)

#: How the BLS model passes its inputs on: its input -> (model called, that model's input).
#: Every other BLS input it reads itself (:data:`BLS_OWN_INPUTS`) or refuses.
BLS_FORWARDS: dict[str, tuple[str, str]] = {
    "text_input": (PREPROCESSING, "QUERY"),
    "decoder_text_input": (PREPROCESSING, "DECODER_QUERY"),
    "max_tokens": (PREPROCESSING, "REQUEST_OUTPUT_LEN"),
    "bad_words": (PREPROCESSING, "BAD_WORDS_DICT"),
    "end_id": (PREPROCESSING, "END_ID"),
    "pad_id": (PREPROCESSING, "PAD_ID"),
    "embedding_bias_words": (PREPROCESSING, "EMBEDDING_BIAS_WORDS"),
    "embedding_bias_weights": (PREPROCESSING, "EMBEDDING_BIAS_WEIGHTS"),
    "prompt_table_extra_id": (PREPROCESSING, "PROMPT_TABLE_EXTRA_ID"),
    **{name: (LLM, llm) for name, llm in (
        ("top_k", "runtime_top_k"), ("top_p", "runtime_top_p"), ("temperature", "temperature"),
        ("length_penalty", "len_penalty"), ("repetition_penalty", "repetition_penalty"),
        ("min_tokens", "min_tokens"), ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"), ("seed", "seed"),
        ("beam_width", "beam_width"), ("num_return_sequences", "num_return_sequences"),
        ("return_log_probs", "return_log_probs"),
        ("return_num_input_tokens", "return_num_input_tokens"),
        ("return_num_output_tokens", "return_num_output_tokens"),
        ("prompt_embedding_table", "prompt_embedding_table"),
        ("prompt_vocab_size", "prompt_vocab_size"), ("lora_task_id", "lora_task_id"),
        ("lora_weights", "lora_weights"), ("lora_config", "lora_config"),
        ("guided_decoding_guide_type", "guided_decoding_guide_type"),
        ("guided_decoding_guide", "guided_decoding_guide"),
    )},
}
#: BLS inputs the BLS model reads itself (stop strings on text, streaming, the prompt prefix).
BLS_OWN_INPUTS = frozenset({"stop_words", "stream", "exclude_input_in_output"})

#: The preprocessing outputs our preprocessing model sends (the others it declares, as NVIDIA's
#: does, for encoder-decoder and embedding-bias requests, which it refuses).
PREPROCESSING_SENDS: tuple[str, ...] = (
    "INPUT_ID", "REQUEST_INPUT_LEN", "REQUEST_OUTPUT_LEN", "STOP_WORDS_IDS", "BAD_WORDS_IDS",
    "OUT_END_ID", "OUT_PAD_ID",
)
#: What preprocessing computes each output from (output -> input), for :func:`client_names`.
PREPROCESSING_DERIVES: dict[str, str] = {
    "INPUT_ID": "QUERY", "REQUEST_OUTPUT_LEN": "REQUEST_OUTPUT_LEN",
    "STOP_WORDS_IDS": "STOP_WORDS_DICT", "BAD_WORDS_IDS": "BAD_WORDS_DICT",
    "OUT_END_ID": "END_ID", "OUT_PAD_ID": "PAD_ID",
}


#: LLM input flag -> the optional LLM outputs a response carries only when it is set.
OPTIONAL_OUTPUTS: dict[str, tuple[str, ...]] = {
    "return_num_input_tokens": ("num_input_tokens",),
    "return_num_output_tokens": ("num_output_tokens",),
    "return_log_probs": ("output_log_probs", "cum_log_probs"),
}


def step_links(source: str, target: str) -> dict[str, str]:
    """Output of ``source`` -> the input of ``target`` that the ensemble feeds it to."""
    steps = {s.model: s for s in ENSEMBLE_STEPS}
    made = {outer: inner for inner, outer in steps[source].output_map}
    return {made[outer]: inner for inner, outer in steps[target].input_map if outer in made}


def client_names(model: str) -> dict[str, str]:
    """Input of ``model`` -> the ensemble input a client sets for it, where the names differ.

    Read off the ensemble's wiring (through preprocessing, :data:`PREPROCESSING_DERIVES`), so
    an error about an inner model's input can name what the client sent:
    ``request_output_len (max_tokens)``.
    """
    steps = {s.model: s for s in ENSEMBLE_STEPS}
    pre = steps[PREPROCESSING]
    outer_of_pre = {inner: outer for inner, outer in pre.input_map}
    produced = {outer: inner for inner, outer in pre.output_map}
    out: dict[str, str] = {}
    for inner, outer in steps[model].input_map if model in steps else ():
        if model == LLM and outer in produced:  # a preprocessing output
            source = PREPROCESSING_DERIVES.get(produced[outer])
            outer = outer_of_pre.get(source, "_") if source else "_"
        if not outer.startswith("_") and outer != inner:
            out[inner] = outer
    return out


def unsupported_inputs(model: str, target: str | None = None) -> dict[str, Unsupported]:
    """The inputs of ``model`` refused on ``target`` (None: those no target honours), by name.

    For the ensemble and the BLS model this includes each input they pass on (the ensemble's
    steps, :data:`BLS_FORWARDS`) to a refused input of the model they call, named as the
    client sends it.
    """
    if target is not None:
        _check_target(target)
    wanted = BOTH if target is None else frozenset({target})
    table = {(u.model, u.name): u for u in UNSUPPORTED_INPUTS if u.targets >= wanted}
    refused = {name: u for (m, name), u in table.items() if m == model}
    if model == ENSEMBLE:
        for step in ENSEMBLE_STEPS:
            for inner, outer in step.input_map:
                if (step.model, inner) in table and not outer.startswith("_"):
                    refused[outer] = replace(table[step.model, inner], model=model, name=outer)
    elif model == BLS:
        for outer, key in BLS_FORWARDS.items():
            if key in table:
                refused[outer] = replace(table[key], model=model, name=outer)
    return refused


#: The CPU LLM model's refusals: input -> neutral value (None: any value is refused).
CPU_UNSUPPORTED_INPUTS: dict[str, object] = {
    name: u.neutral for name, u in unsupported_inputs(LLM, "cpu").items()}
#: What the BLS model refuses on every target.
BLS_UNSUPPORTED_INPUTS = frozenset(unsupported_inputs(BLS))

#: Classic inputs the llmapi model cannot carry, at the values that ask for nothing: the
#: classic front lets these through (any other value of an input it cannot carry is refused).
_FRONT_NEUTRAL: dict[str, object] = {
    "beam_width": 1, "num_return_sequences": 1, "num_draft_tokens": 0,
    **{name: False for name in ("return_log_probs", "return_context_logits",
                                "return_generation_logits", "return_perf_metrics",
                                "use_draft_logits")},
}


def llmapi_front_unsupported(model: str) -> dict[str, Unsupported]:
    """What a classic front model (:data:`LLMAPI_FRONTS`) of the llmapi layout refuses: each of
    its inputs that no llmapi input carries (:data:`CLASSIC_TO_LLMAPI`)."""
    if model not in LLMAPI_FRONTS:
        raise ValueError(f"{model!r} is not a classic front of the llmapi layout")
    return {t.name: Unsupported(model, t.name, _FRONT_NEUTRAL.get(t.name),
                                why="the llmapi engine behind this model (llmapi layout)")
            for t in CONTRACTS[model].inputs if t.name not in CLASSIC_TO_LLMAPI}


# --- parameter keys of NVIDIA's models (same source files) -----------------------------------

#: Every ``parameters`` key of the official ``tensorrt_llm/config.pbtxt`` (tensorrtllm backend),
#: in its order. The GPU template writes only these keys.
TRTLLM_PARAMETER_KEYS: tuple[str, ...] = (
    "max_beam_width", "FORCE_CPU_ONLY_INPUT_TENSORS", "gpt_model_type", "gpt_model_path",
    "encoder_model_path", "max_tokens_in_paged_kv_cache", "max_attention_window_size",
    "sink_token_length", "batch_scheduler_policy", "kv_cache_free_gpu_mem_fraction",
    "cross_kv_cache_fraction", "kv_cache_host_memory_bytes", "kv_cache_onboard_blocks",
    "exclude_input_in_output", "cancellation_check_period_ms", "stats_check_period_ms",
    "iter_stats_max_iterations", "request_stats_max_iterations", "enable_kv_cache_reuse",
    "normalize_log_probs", "enable_chunked_context", "gpu_device_ids", "participant_ids",
    "num_nodes", "lora_cache_optimal_adapter_size", "lora_cache_max_adapter_size",
    "lora_cache_gpu_memory_fraction", "lora_cache_host_memory_bytes", "lora_prefetch_dir",
    "decoding_mode", "executor_worker_path", "lookahead_window_size", "lookahead_ngram_size",
    "lookahead_verification_set_size", "medusa_choices", "eagle_choices", "gpu_weights_percent",
    "enable_context_fmha_fp32_acc", "multi_block_mode", "cuda_graph_mode",
    "cuda_graph_cache_size", "speculative_decoding_fast_logits", "tokenizer_dir",
    "guided_decoding_backend", "xgrammar_tokenizer_info_path",
)

#: Official keys of the Python models; ours extend them (see tritonllm.settings).
OFFICIAL_PYTHON_PARAMETER_KEYS: dict[str, tuple[str, ...]] = {
    PREPROCESSING: ("tokenizer_dir", "add_special_tokens", "multimodal_model_path",
                    "gpt_model_path", "max_num_images"),
    POSTPROCESSING: ("tokenizer_dir", "skip_special_tokens"),
    BLS: ("accumulate_tokens", "tensorrt_llm_model_name", "tensorrt_llm_draft_model_name",
          "multimodal_encoders_name"),
}


# --- lookups ----------------------------------------------------------------------------------

def contract(model: str) -> ModelContract:
    """The contract of ``model`` (one of :data:`MODEL_NAMES`)."""
    try:
        return CONTRACTS[model]
    except KeyError:
        raise KeyError(f"no contract for model {model!r}; known: {', '.join(CONTRACTS)}") from None


def get_input(model: str, name: str) -> Tensor:
    return contract(model).input(name)


def get_output(model: str, name: str) -> Tensor:
    return contract(model).output(name)


def find_tensor(
    name: str, models: Iterable[str] = MODEL_NAMES
) -> Iterator[tuple[str, str, Tensor]]:
    """Every (model, "input"|"output", tensor) named ``name``."""
    for m in models:
        c = CONTRACTS[m]
        for t in c.inputs:
            if t.name == name:
                yield m, "input", t
        for t in c.outputs:
            if t.name == name:
                yield m, "output", t


def with_logits_dtype(tensors: Iterable[Tensor], dtype: str) -> tuple[Tensor, ...]:
    """``tensors`` with the dtype of :data:`LOGITS_TENSORS` set to ``dtype``."""
    d = short_dtype(dtype)
    return tuple(replace(t, dtype=d) if t.name in LOGITS_TENSORS else t for t in tensors)


def _shape(dims: Iterable[int]) -> str:
    return "[" + ", ".join("n" if d == -1 else str(d) for d in dims) + "]"


def wire_shapes(target: str, models: Iterable[str] = (ENSEMBLE, BLS)) -> list[tuple[str, ...]]:
    """(model, output, dtype, declared dims, shape in one request's response) per output.

    What ``tritonllm validate --wire`` prints: the shapes clients index, next to the config's.
    """
    _check_target(target)
    return [(m, t.name, t.dtype, _shape(t.dims), _shape(t.wire_shape))
            for m in models for t in CONTRACTS[m].outputs_for(target)]


@dataclass(frozen=True)
class TargetModels:
    """All five contracts resolved for one target and logits dtype (what templates render)."""

    target: str
    logits_dtype: str = LOGITS_DTYPE
    layout: str = LAYOUT_CLASSIC
    models: dict[str, ModelContract] = field(init=False)

    def __post_init__(self) -> None:
        _check_target(self.target)
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {LAYOUTS}")
        resolved = {
            name: ModelContract(
                name,
                with_logits_dtype(c.inputs_for(self.target), self.logits_dtype),
                with_logits_dtype(c.outputs_for(self.target), self.logits_dtype),
            )
            for name, c in layout_contracts(self.layout, self.target).items()
        }
        object.__setattr__(self, "models", resolved)

    def __getitem__(self, model: str) -> ModelContract:
        return self.models[model]

    @property
    def names(self) -> tuple[str, ...]:
        return LAYOUT_MODELS[self.layout]

    @property
    def steps(self) -> tuple[Step, ...]:
        return ensemble_steps(self.target) if self.layout == LAYOUT_CLASSIC else ()


def layout_contracts(layout: str, target: str) -> dict[str, ModelContract]:
    """The contract of each model a ``layout`` repository serves on ``target``, by name.

    In the llmapi layout ``tensorrt_llm`` has the llmapi tensors, and the ensemble is a Python
    front that sends every output itself (``finish_reason`` on both targets)."""
    if layout == LAYOUT_CLASSIC:
        return {name: CONTRACTS[name] for name in LAYOUT_MODELS[layout]}
    ens = CONTRACTS[ENSEMBLE]
    return {
        ENSEMBLE: replace(ens, outputs=tuple(replace(t, targets=BOTH) for t in ens.outputs)),
        LLM: replace(LLMAPI_CONTRACT, name=LLM),
        BLS: CONTRACTS[BLS],
    }


__all__ = [
    "BLS",
    "BLS_CONTRACT",
    "BLS_FORWARDS",
    "BLS_IN",
    "BLS_OUT",
    "BLS_OWN_INPUTS",
    "BLS_UNSUPPORTED_INPUTS",
    "CLASSIC_TO_LLMAPI",
    "CONTRACTS",
    "CONTRACT_AUTO",
    "CONTRACT_CHOICES",
    "CONTRACT_CLASSIC",
    "CPU_UNSUPPORTED_INPUTS",
    "EMBEDDING",
    "EMBEDDING_CONTRACT",
    "EMBEDDING_CONTRACTS",
    "EMBEDDING_ENCODER",
    "EMBEDDING_ENCODER_CONTRACT",
    "EMBEDDING_MODELS",
    "EMBEDDING_STEPS",
    "EMBEDDING_TOKENIZER",
    "EMBEDDING_TOKENIZER_CONTRACT",
    "EMB_IN",
    "EMB_OUT",
    "ENSEMBLE",
    "ENSEMBLE_CONTRACT",
    "ENSEMBLE_IN",
    "ENSEMBLE_OUT",
    "ENSEMBLE_STEPS",
    "FINISH_CANCELLED",
    "FINISH_LENGTH",
    "FINISH_REASON",
    "FINISH_REASONS",
    "FINISH_STOP",
    "LAYOUTS",
    "LAYOUT_CLASSIC",
    "LAYOUT_LLMAPI",
    "LAYOUT_MODELS",
    "LLM",
    "LLMAPI",
    "LLMAPI_CONTRACT",
    "LLMAPI_DEFAULT_MAX_TOKENS",
    "LLMAPI_FLAGGED_OUTPUTS",
    "LLMAPI_FRONTS",
    "LLMAPI_IN",
    "LLMAPI_MODEL_YAML",
    "LLMAPI_NONE",
    "LLMAPI_OUT",
    "LLM_CONTRACT",
    "LLM_IN",
    "LLM_OUT",
    "LOGITS_DTYPE",
    "LOGITS_TENSORS",
    "MODEL_NAMES",
    "OFFICIAL_PYTHON_PARAMETER_KEYS",
    "ONNX_ATTENTION_MASK",
    "ONNX_EMBEDDING",
    "ONNX_ID_DTYPE",
    "ONNX_INPUT_IDS",
    "OPTIONAL_OUTPUTS",
    "PER_SEQUENCE",
    "POSTPROCESSING",
    "POSTPROCESSING_CONTRACT",
    "POST_IN",
    "POST_OUT",
    "POST_REQUEST_KEY",
    "PREPROCESSING",
    "PREPROCESSING_CONTRACT",
    "PREPROCESSING_DERIVES",
    "PREPROCESSING_SENDS",
    "PRE_IN",
    "PRE_OUT",
    "REQUEST_FIELDS",
    "REQUEST_KEY",
    "TARGETS",
    "TRTLLM_PARAMETER_KEYS",
    "UNBATCHED_MODELS",
    "UNSUPPORTED_INPUTS",
    "ModelContract",
    "Step",
    "TargetModels",
    "Tensor",
    "TensorNames",
    "Unsupported",
    "client_names",
    "contract",
    "ensemble_steps",
    "find_tensor",
    "get_input",
    "get_output",
    "layout_contracts",
    "llmapi_front_unsupported",
    "short_dtype",
    "step_links",
    "unsupported_inputs",
    "wire_shapes",
    "with_logits_dtype",
]
