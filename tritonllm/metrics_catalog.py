"""Every metric a tritonllm dashboard, rule, alert or view reads: names, types, labels, targets.

One table, :data:`CATALOG`. The LLM models create the families they export from it
(:mod:`tritonllm.ensembles.llm_metrics`); the recording and alerting rules
(:mod:`tritonllm.metrics_rules`), the Grafana dashboard (:mod:`tritonllm.dashboard`), the
``tritonllm metrics`` view and ``docs/observability.md`` take their names from it, and a test
checks that every name they use is in a live scrape of the CPU target or marked here as one the
CPU target lacks.

Where the names come from, in this order of preference:

* Triton's own per-model metrics (``nv_inference_*``), every target.
* The metric families of TensorRT-LLM's C++ Triton backend (``nv_trt_llm_*``, ``nv_llm_*``),
  which existing dashboards and autoscalers read. Each family is one name with a label that
  picks the quantity (``nv_trt_llm_request_metrics{request_type="active"}``); the families,
  label keys and label values are those of ``custom_metrics_reporter.cc`` (:data:`TRTLLM_BACKEND`).
  Our CPU model and our GPU ``tensorrt_llm`` model (over the LLM API) export them wherever the
  engine has the quantity.
* For what that backend never exported (time to first token, time per output token, finish
  reasons, token counters), the names TensorRT-LLM's own server gives them (``trtllm_*``,
  :data:`TRTLLM_SERVE`), as histograms and counters with NVIDIA's label keys.
* ``tritonllm_*`` only for quantities NVIDIA has no name for.

NVIDIA's current ``llmapi`` model (``triton_backend/all_models/llmapi/tensorrt_llm/1/model.py``)
exports no metric of its own, only Triton's: a repository that runs NVIDIA's model unchanged
has the ``nv_inference_*`` rows of this table and nothing else. Ours (``tritonllm repo
--layout llmapi --target gpu``) exports the ``gpu`` rows.

Every family carries Triton's ``model`` and ``version`` labels besides its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tritonllm.contract import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP

__all__ = [
    "CATALOG",
    "CPU",
    "GPU",
    "GPU_LEGACY",
    "TARGETS",
    "TRITON",
    "TRTLLM_BACKEND",
    "TRTLLM_SERVE",
    "Family",
    "Kind",
    "Value",
    "family",
    "series",
]

Kind = Literal["gauge", "counter", "histogram"]
Target = Literal["cpu", "gpu", "gpu-legacy", "openai"]

#: Our CPU ``tensorrt_llm`` model (OpenVINO GenAI), either layout.
CPU: Target = "cpu"
#: Our GPU ``tensorrt_llm`` model over TensorRT-LLM's LLM API (``--layout llmapi``).
GPU: Target = "gpu"
#: NVIDIA's C++ ``tensorrtllm`` backend (legacy engines, NGC images up to 26.07).
GPU_LEGACY: Target = "gpu-legacy"
#: The OpenAI-compatible front (``tritonllm openai``, its own ``/metrics``): per API request,
#: labelled ``model`` = the served model name (no ``version``).
OPENAI: Target = "openai"
TARGETS: tuple[Target, ...] = (CPU, GPU, GPU_LEGACY)
_ALL = frozenset(TARGETS)
_OURS = frozenset((CPU, GPU))
_OURS_AND_FRONT = frozenset((CPU, GPU, OPENAI))
_FRONT = frozenset((OPENAI,))
_EVERY = frozenset((*TARGETS, OPENAI))  # a label value's default: wherever its family is
_GPU_ONLY = frozenset((GPU, GPU_LEGACY))

#: Sources of the names (the files that define them).
TRITON = ("Triton Inference Server docs/user_guide/metrics.md; the series of Triton 2.51 "
          "(nvidia-pytriton 0.7.0), scraped")
TRTLLM_BACKEND = ("tensorrtllm_backend inflight_batcher_llm/src/custom_metrics_reporter/"
                  "custom_metrics_reporter.cc @ 86542b6 (v0.18, the last release with the C++ "
                  "backend in that repository)")
TRTLLM_SERVE = "TensorRT-LLM tensorrt_llm/metrics/collector.py @ 050f80de (trtllm-serve)"
OURS = "tritonllm"

#: NVIDIA's token-length histogram buckets (custom_metrics_reporter.cc).
TOKEN_LEN_BUCKETS = (10.0, 50.0, 100.0, 500.0, 1000.0)
#: trtllm-serve's time-to-first-token buckets (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
#: trtllm-serve's time-per-output-token buckets start at 10 ms; a CPU engine or a small model
#: decodes faster than that, so finer buckets come first (a percentile inside one bucket is a
#: linear guess between its bounds).
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
#: trtllm-serve's end-to-end latency buckets, with finer ones below its first (0.3 s).
E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0,
               20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


@dataclass(frozen=True)
class Value:
    """One value of a family's own label: one series (per model and version)."""

    name: str
    meaning: str
    targets: frozenset[Target] = _EVERY


@dataclass(frozen=True)
class Family:
    """One metric family: a name, a kind, and (for NVIDIA's grouped families) the label whose
    values pick the quantity."""

    name: str
    kind: Kind
    help: str
    unit: str
    source: str
    targets: frozenset[Target]
    label: str | None = None
    values: tuple[Value, ...] = ()
    buckets: tuple[float, ...] = ()
    meaning: str = ""

    def values_for(self, target: Target) -> tuple[str, ...]:
        return tuple(v.name for v in self.values if target in v.targets & self.targets)

    def value(self, name: str) -> Value:
        for v in self.values:
            if v.name == name:
                return v
        raise KeyError(f"{self.name} has no {self.label}={name!r}")


def _v(name: str, meaning: str, targets: frozenset[Target] = _EVERY) -> Value:
    return Value(name, meaning, targets)


# ---- names (constants, so a typo is an import error, not an empty panel) ---------------------
# Triton's
REQUEST_SUCCESS = "nv_inference_request_success"
REQUEST_FAILURE = "nv_inference_request_failure"
INFERENCE_COUNT = "nv_inference_count"
REQUEST_DURATION = "nv_inference_request_duration_us"
QUEUE_DURATION = "nv_inference_queue_duration_us"
COMPUTE_DURATION = "nv_inference_compute_infer_duration_us"
PENDING_REQUESTS = "nv_inference_pending_request_count"
# TensorRT-LLM's C++ backend
REQUEST_METRICS = "nv_trt_llm_request_metrics"
KV_CACHE_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
INFLIGHT_BATCHER = "nv_trt_llm_inflight_batcher_metrics"
GENERAL = "nv_trt_llm_general_metrics"
RUNTIME_MEMORY = "nv_trt_llm_runtime_memory_metrics"
INPUT_TOKEN_LEN = "nv_llm_input_token_len"
OUTPUT_TOKEN_LEN = "nv_llm_output_token_len"
# trtllm-serve's
TTFT = "trtllm_time_to_first_token_seconds"
TPOT = "trtllm_time_per_output_token_seconds"
E2E = "trtllm_e2e_request_latency_seconds"
REQUEST_FINISHED = "trtllm_request_success_total"
PROMPT_TOKENS = "trtllm_prompt_tokens_total"
GENERATION_TOKENS = "trtllm_generation_tokens_total"
REQUEST_ERRORS = "trtllm_request_error_total"
# ours
OPENAI_REQUESTS = "tritonllm_openai_requests_total"
REJECTED = "tritonllm_requests_rejected_total"
STEP_MAX_MS = "tritonllm_step_max_ms"
SEND_MAX_MS = "tritonllm_send_max_ms"
EXECUTE_MAX_MS = "tritonllm_execute_max_ms"

#: The label values that pick a quantity in NVIDIA's grouped families.
REQUEST_TYPE = "request_type"
KV_BLOCK_TYPE = "kv_cache_block_type"
IFB_METRIC = "inflight_batcher_specific_metric"
GENERAL_TYPE = "general_type"
FINISHED_REASON = "finished_reason"
REJECT_REASON = "reason"
REJECT_INVALID = "invalid_argument"
REJECT_QUEUE_FULL = "queue_full"

CATALOG: tuple[Family, ...] = (
    # ---- Triton core: every model, every target ----
    Family(REQUEST_SUCCESS, "counter", "Requests that succeeded", "requests", TRITON, _ALL,
           meaning="Per model: requests (not responses) that completed without error."),
    Family(REQUEST_FAILURE, "counter", "Requests that failed", "requests", TRITON, _ALL,
           label="reason", values=(
               _v("REJECTED", "refused before execution (queue full, bad shape)"),
               _v("CANCELED", "cancelled by the client"),
               _v("BACKEND", "the model returned an error (our INVALID_ARG refusals)"),
               _v("OTHER", "anything else"))),
    Family(INFERENCE_COUNT, "counter", "Inferences performed (a batch of n counts n)",
           "inferences", TRITON, _ALL),
    Family(REQUEST_DURATION, "counter", "Cumulative request duration (us)", "us", TRITON, _ALL,
           meaning="For a decoupled model, the time until execute() returned, not until the "
                   "last response."),
    Family(QUEUE_DURATION, "counter", "Cumulative time requests waited in Triton's queue (us)",
           "us", TRITON, _ALL),
    Family(COMPUTE_DURATION, "counter", "Cumulative compute time (us)", "us", TRITON, _ALL,
           meaning="For a decoupled model, the time in execute(): handing the request to the "
                   "engine, not generating."),
    Family(PENDING_REQUESTS, "gauge", "Requests in Triton's queue or executing", "requests",
           TRITON, _ALL),
    # ---- TensorRT-LLM's C++ backend families ----
    Family(REQUEST_METRICS, "gauge", "TRT LLM request metrics", "requests", TRTLLM_BACKEND, _ALL,
           label=REQUEST_TYPE, values=(
               _v("active", "requests the engine holds (scheduled or waiting for a slot)"),
               _v("max", "requests the engine can hold at once (max_batch_size / max_num_seqs)"),
               _v("scheduled", "requests scheduled in the last iteration"),
               _v("context", "scheduled requests in their prompt (context, prefill) phase"),
               _v("waiting", "active - scheduled: requests held but not run in the last "
                             "iteration"))),
    Family(KV_CACHE_BLOCKS, "gauge", "TRT LLM KV cache block metrics", "blocks", TRTLLM_BACKEND,
           _ALL, label=KV_BLOCK_TYPE, values=(
               _v("max", "KV cache blocks in the pool"),
               _v("free", "blocks not in use"),
               _v("used", "blocks in use"),
               _v("tokens_per", "tokens one block holds"),
               _v("fraction", "used / max (0..1)"),
               _v("reused", "blocks reused from earlier requests (prefix reuse)", _GPU_ONLY))),
    Family(INFLIGHT_BATCHER, "gauge", "TRT LLM inflight_batcher-specific metrics", "requests",
           TRTLLM_BACKEND, _ALL, label=IFB_METRIC, values=(
               _v("generation_requests", "scheduled requests in their decode phase"),
               _v("total_context_tokens", "prompt tokens scheduled in the last iteration",
                  _GPU_ONLY),
               _v("micro_batch_id", "pipeline-parallel micro batch of the last iteration",
                  _GPU_ONLY),
               _v("paused_requests", "requests paused for lack of KV cache", _GPU_ONLY))),
    Family(GENERAL, "gauge", "General TRT LLM metrics", "", TRTLLM_BACKEND, _ALL,
           label=GENERAL_TYPE, values=(
               _v("iteration_counter", "engine iterations (steps) so far"),
               _v("timestamp", "when the last iteration ran (microseconds since the epoch)"))),
    Family(RUNTIME_MEMORY, "gauge", "TRT LLM runtime memory metrics", "bytes", TRTLLM_BACKEND,
           _GPU_ONLY, label="memory_type", values=(
               _v("cpu", "runtime host memory", _GPU_ONLY),
               _v("gpu", "runtime GPU memory", _GPU_ONLY),
               _v("pinned", "runtime pinned host memory", _GPU_ONLY))),
    Family(INPUT_TOKEN_LEN, "histogram", "TRT LLM response metrics", "tokens", TRTLLM_BACKEND,
           _ALL, label="response_metric_type",
           values=(_v("total_input_tokens", "prompt tokens of each finished request"),),
           buckets=TOKEN_LEN_BUCKETS),
    Family(OUTPUT_TOKEN_LEN, "histogram", "TRT LLM response metrics", "tokens", TRTLLM_BACKEND,
           _ALL, label="response_metric_type",
           values=(_v("total_output_tokens", "generated tokens of each finished request"),),
           buckets=TOKEN_LEN_BUCKETS),
    # ---- trtllm-serve's names, for what the C++ backend never exported ----
    Family(TTFT, "histogram", "Histogram of time to first token in seconds.", "s", TRTLLM_SERVE,
           _OURS_AND_FRONT, buckets=TTFT_BUCKETS,
           meaning="From the request reaching the LLM model to its first generated token (the "
                   "OpenAI front: from the API request to its first text)."),
    Family(TPOT, "histogram", "Histogram of time per output token in seconds.", "s",
           TRTLLM_SERVE, _OURS_AND_FRONT, buckets=TPOT_BUCKETS,
           meaning="Per request: (last token - first token) / (output tokens - 1), the "
                   "inter-token latency genai-perf reports; requests of one token have none."),
    Family(E2E, "histogram", "Histogram of end to end request latency in seconds.", "s",
           TRTLLM_SERVE, _OURS_AND_FRONT, buckets=E2E_BUCKETS,
           meaning="From the request reaching the LLM model to its last token."),
    Family(REQUEST_FINISHED, "counter", "Count of successfully processed requests.", "requests",
           TRTLLM_SERVE, _OURS_AND_FRONT, label=FINISHED_REASON, values=(
               _v(FINISH_STOP, "ended on an end id or a stop sequence"),
               _v(FINISH_LENGTH, "reached max_tokens"),
               _v(FINISH_CANCELLED, "cancelled or stopped by the client"))),
    Family(PROMPT_TOKENS, "counter", "Cumulative number of prompt (input) tokens processed.",
           "tokens", TRTLLM_SERVE, _OURS_AND_FRONT),
    Family(GENERATION_TOKENS, "counter",
           "Cumulative number of generation (output) tokens produced.", "tokens", TRTLLM_SERVE,
           _OURS_AND_FRONT, meaning="Counted as the engine produces them, so rate() is the model's "
                          "output tokens/s also while requests are still running."),
    Family(REQUEST_ERRORS, "counter", "Total request errors, labeled by HTTP status code.",
           "requests", TRTLLM_SERVE, _FRONT, label="http_code", values=tuple(
               _v(str(code), meaning, _FRONT) for code, meaning in (
                   ("400", "a bad parameter (named in the error)"),
                   ("401", "a missing or wrong API key"),
                   ("404", "an unknown model or route"),
                   ("413", "a request body over the size limit"),
                   ("429", "the server's queue is full (Retry-After)"),
                   ("500", "the server failed the request"),
                   ("503", "the server or model is unavailable"),
                   ("504", "the request's deadline passed")))),
    # ---- ours ----
    Family(OPENAI_REQUESTS, "counter", "API requests answered by the OpenAI front", "requests",
           OURS, _FRONT, label="route", values=tuple(
               _v(r, f"requests to {r}", _FRONT) for r in (
                   "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                   "/v1/models", "/health", "/metrics"))),
    Family(REJECTED, "counter", "Requests the LLM model refused", "requests", OURS, _OURS,
           label=REJECT_REASON, values=(
               _v(REJECT_INVALID, "a bad input (INVALID_ARG, the field named)"),
               _v(REJECT_QUEUE_FULL, "the engine's wait queue was full (UNAVAILABLE)"))),
    Family(STEP_MAX_MS, "gauge", "Longest engine step, last period", "ms", OURS,
           frozenset((CPU,))),
    Family(SEND_MAX_MS, "gauge", "Longest round of sends, last period", "ms", OURS,
           frozenset((CPU,))),
    Family(EXECUTE_MAX_MS, "gauge", "Longest execute(), last period", "ms", OURS,
           frozenset((CPU,))),
)

_BY_NAME = {f.name: f for f in CATALOG}


def family(name: str) -> Family:
    """The catalog entry of ``name`` (KeyError names it)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not in tritonllm.metrics_catalog") from None


def series(name: str, value: str | None = None, **labels: str) -> str:
    """A PromQL selector for one family (and one value of its own label), checked against the
    catalog: ``series(REQUEST_METRICS, "active", model="tensorrt_llm")``."""
    f = family(name)
    sel = dict(labels)
    if value is not None:
        if f.label is None:
            raise KeyError(f"{name} has no label of its own")
        f.value(value)
        sel = {f.label: value, **sel}
    inner = ",".join(f'{k}="{v}"' for k, v in sel.items())
    return f"{name}{{{inner}}}" if inner else name

