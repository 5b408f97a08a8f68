"""Engine directory → Triton model repository, from the templates in ``model_repository/``.

``render_repository(engine_dir, out, settings)`` reads the engine's manifest (limits, ids),
renders every ``config.pbtxt.j2`` with jinja2 ``StrictUndefined`` from the tensor contract
(:mod:`tritonllm.contract`) and :class:`~tritonllm.settings.RepoSettings`, parses each result
into Triton's ``ModelConfig`` with protobuf ``text_format`` before writing it, copies the
Python models' code, the tokenizer and (unless told otherwise) the engine, and swaps the
finished repository into place, so a failed render never leaves half a repository behind.
The same engine and settings give byte-identical output.

Layout of a rendered repository (both targets)::

    OUT/
      ensemble/config.pbtxt, ensemble/1/                 (empty version dir, as Triton needs)
      preprocessing/config.pbtxt, preprocessing/1/*.py
      tensorrt_llm/config.pbtxt                          (gpu: backend tensorrtllm;
      tensorrt_llm/1/*.py                                 cpu: backend python + model code)
      tensorrt_llm/1/engine/                             the engine dir: manifest.json +
                                                          config.json, rank*.engine (gpu) or
                                                          openvino_*.xml/.bin (cpu)
      tensorrt_llm/1/tokenizer/                          HF tokenizer + generation_config.json
      postprocessing/config.pbtxt, postprocessing/1/*.py
      tensorrt_llm_bls/config.pbtxt, tensorrt_llm_bls/1/*.py
      .tritonllm-repo.json                               what was rendered (ignored by Triton)

Paths in parameters. The Python models get paths relative to the repository root
(``tokenizer_dir: tensorrt_llm/1/tokenizer``, cpu ``engine_dir: tensorrt_llm/1/engine``) and
resolve them against it (:func:`tritonllm.settings.resolve_path`), so the repository can be
moved or mounted anywhere. The tensorrtllm backend needs an absolute ``gpt_model_path``:
``<server_repo_path>/tensorrt_llm/1/engine``, where ``server_repo_path`` is where the server
sees the repository (e.g. ``/models`` in a container; default: OUT's absolute path).
``engine_path`` references an engine elsewhere (a mount) instead of copying it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tritonllm import contract as C
from tritonllm.builders.base import check_output_dir, staged
from tritonllm.builders.manifest import MANIFEST, Manifest, read_manifest
from tritonllm.errors import ConfigError, RepositoryError
from tritonllm.settings import (
    ENGINE_LAYOUTS,
    ENGINE_TARGETS,
    BLSParams,
    CpuLLMAPIParams,
    CpuLLMParams,
    LLMAPIParams,
    PostprocessingParams,
    PreprocessingParams,
    RepoSettings,
    format_value,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "model_repository"
MARKER = ".tritonllm-repo.json"


def engine_subdir(version: int = 1) -> str:
    """Where version ``version`` of the LLM model keeps its engine (repository-relative)."""
    return f"{C.LLM}/{version}/engine"


def tokenizer_subdir(version: int = 1) -> str:
    """Where version ``version`` keeps the tokenizer the Python models load."""
    return f"{C.LLM}/{version}/tokenizer"


ENGINE_SUBDIR = engine_subdir(1)
TOKENIZER_SUBDIR = tokenizer_subdir(1)
#: Per layout: served model -> the template folder in model_repository/ it is rendered from.
LAYOUT_TEMPLATES: dict[str, dict[str, str]] = {
    C.LAYOUT_CLASSIC: {name: name for name in C.LAYOUT_MODELS[C.LAYOUT_CLASSIC]},
    C.LAYOUT_LLMAPI: {C.ENSEMBLE: C.BLS, C.LLM: "tensorrt_llm_llmapi", C.BLS: C.BLS},
}
#: Template folders whose model is not a Python model on the GPU target.
_NOT_PYTHON_ON_GPU = frozenset({C.LLM, C.ENSEMBLE})

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RenderedModel:
    name: str
    template: str
    text: str


def pbtxt_string(value: object) -> str:
    """Escape a value for a double-quoted protobuf text-format string."""
    s = str(value)
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@functools.lru_cache(maxsize=2)
def _environment(templates: Path) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pbstr"] = pbtxt_string
    return env


def template_name(folder: str, target: str) -> str:
    """``<folder>/config.<target>.pbtxt.j2`` if it exists, else ``<folder>/config.pbtxt.j2``."""
    specific = f"{folder}/config.{target}.pbtxt.j2"
    return specific if (TEMPLATES / specific).is_file() else f"{folder}/config.pbtxt.j2"


def resolve_layout(manifest: Manifest, settings: RepoSettings) -> str:
    """The layout to render: the settings', else the engine's (:data:`ENGINE_LAYOUTS`). A
    ``trtllm`` deployment (the LLM API) has no token-level model: only the llmapi layout."""
    layout = settings.layout or ENGINE_LAYOUTS.get(manifest.engine, C.LAYOUT_CLASSIC)
    if manifest.engine == "trtllm" and layout != C.LAYOUT_LLMAPI:
        raise ConfigError(
            f"layout: {layout!r} needs a token-level tensorrt_llm (TensorRT engines: build with "
            "--legacy-engine); a trtllm (LLM API) deployment renders the llmapi layout")
    if manifest.engine == "trtllm-legacy" and layout != C.LAYOUT_CLASSIC:
        raise ConfigError(
            f"layout: {layout!r} needs the LLM API; a trtllm-legacy engine is served by the "
            "tensorrtllm backend (the classic layout)")
    return layout


def parse_config(text: str, where: str) -> Any:
    """Parse config.pbtxt text into Triton's ModelConfig; RepositoryError names the spot."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise RepositoryError(f"{where}: not a valid Triton ModelConfig: {e}") from e


def resolve_target(manifest: Manifest, settings: RepoSettings) -> str:
    engine_target = ENGINE_TARGETS.get(manifest.engine)
    if engine_target is None:
        raise RepositoryError(f"engine {manifest.engine!r} has no repository target")
    if settings.target is not None and settings.target != engine_target:
        raise ConfigError(
            f"target: {settings.target!r} cannot serve a {manifest.engine!r} engine "
            f"(its target is {engine_target!r})"
        )
    return engine_target


def default_ids(manifest: Manifest) -> tuple[int | None, int | None]:
    """(end_id, pad_id) from the manifest: first eos id; pad id, else the end id."""
    lim = manifest.limits
    end_id = lim.eos_token_ids[0] if lim.eos_token_ids else None
    pad_id = lim.pad_token_id if lim.pad_token_id is not None else end_id
    return end_id, pad_id


def trtllm_parameters(settings: RepoSettings, gpt_model_path: str) -> dict[str, str]:
    """The GPU model's parameters: official keys only, in the official order; None left out."""
    s = settings
    values: dict[str, object | None] = {
        "max_beam_width": s.max_beam_width,
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "gpt_model_type": s.batching_strategy,
        "gpt_model_path": gpt_model_path,
        "max_tokens_in_paged_kv_cache": s.max_tokens_in_paged_kv_cache,
        "max_attention_window_size": s.max_attention_window_size,
        "sink_token_length": s.sink_token_length,
        "batch_scheduler_policy": s.batch_scheduler_policy,
        "kv_cache_free_gpu_mem_fraction": s.kv_cache_free_gpu_mem_fraction,
        "kv_cache_host_memory_bytes": s.kv_cache_host_memory_bytes,
        "kv_cache_onboard_blocks": s.kv_cache_onboard_blocks,
        "exclude_input_in_output": s.exclude_input_in_output,
        "cancellation_check_period_ms": s.cancellation_check_period_ms,
        "stats_check_period_ms": s.stats_check_period_ms,
        "iter_stats_max_iterations": s.iter_stats_max_iterations,
        "request_stats_max_iterations": s.request_stats_max_iterations,
        "enable_kv_cache_reuse": s.enable_kv_cache_reuse,
        "normalize_log_probs": s.normalize_log_probs,
        "enable_chunked_context": s.enable_chunked_context,
        "gpu_device_ids": s.gpu_device_ids,
        "decoding_mode": s.decoding_mode,
        "gpu_weights_percent": s.gpu_weights_percent,
        "enable_context_fmha_fp32_acc": s.enable_context_fmha_fp32_acc,
        "multi_block_mode": s.multi_block_mode,
        "cuda_graph_mode": s.cuda_graph_mode,
        "cuda_graph_cache_size": s.cuda_graph_cache_size,
    }
    for key, value in s.extra_llm_parameters.items():
        if key not in C.TRTLLM_PARAMETER_KEYS:
            raise ConfigError(
                f"extra_llm_parameters: {key!r} is not a parameter of the tensorrtllm backend"
            )
        if key == "gpt_model_path":
            raise ConfigError("extra_llm_parameters: set gpt_model_path with engine_path")
        if values.get(key) is not None:
            raise ConfigError(
                f"extra_llm_parameters: {key!r} has its own option; set that instead"
            )
        values[key] = value
    order = {k: i for i, k in enumerate(C.TRTLLM_PARAMETER_KEYS)}
    return {
        k: format_value(v)
        for k, v in sorted(values.items(), key=lambda kv: order[kv[0]])
        if v is not None
    }


def llmapi_model_yaml(engine_dir: Path, plan: RenderPlan, settings: RepoSettings) -> str:
    """``tensorrt_llm/1/model.yaml`` of a GPU llmapi repository: the build's ``LLM()``
    arguments (``model``: the checkpoint where the server sees it), the repository's runtime
    settings that are LLM() arguments, ``--trtllm-param`` entries (values read as YAML), and
    ``triton_config``; every key checked against the pinned TensorRT-LLM release."""
    import yaml

    from tritonllm.builders.trtllm_llmapi import CHECKPOINT_DIR, read_llm_args
    from tritonllm.trtllm_release import TRITON_CONFIG, check_llm_args

    s = settings
    args = read_llm_args(engine_dir)
    args["model"] = f"{plan.engine_ref.rstrip('/')}/{CHECKPOINT_DIR}"
    kv: dict[str, object] = {}
    if s.kv_cache_free_gpu_mem_fraction is not None:
        kv["free_gpu_memory_fraction"] = s.kv_cache_free_gpu_mem_fraction
    kv["enable_block_reuse"] = s.enable_kv_cache_reuse
    if s.max_tokens_in_paged_kv_cache is not None:
        kv["max_tokens"] = s.max_tokens_in_paged_kv_cache
    args["kv_cache_config"] = kv
    if s.enable_chunked_context is not None:
        args["enable_chunked_prefill"] = s.enable_chunked_context
    args["max_beam_width"] = s.max_beam_width
    args["max_batch_size"] = plan.max_batch_size
    for key in ("iter_stats_max_iterations", "request_stats_max_iterations"):
        if getattr(s, key) is not None:
            args[key] = getattr(s, key)
    for key, raw in s.extra_llm_parameters.items():
        if key in args:
            raise ConfigError(f"extra_llm_parameters: {key!r} is set by the build or its own "
                              "option; set that instead")
        args[key] = yaml.safe_load(raw)
    # Iteration stats (LLM.get_stats()) feed our model's nv_trt_llm_* metrics
    # (tritonllm.ensembles.llmapi_trtllm); --trtllm-param enable_iter_perf_stats=false turns
    # them off.
    args.setdefault("enable_iter_perf_stats", True)
    args[TRITON_CONFIG] = {"max_batch_size": 0, "decoupled": s.streaming,
                           "cancellation_check_period_ms": s.cancellation_check_period_ms}
    check_llm_args(args, "extra_llm_parameters (model.yaml)")
    head = ("# Rendered by `tritonllm repo`: TensorRT-LLM LLM() arguments (checked against the "
            "pinned release)\n# + triton_config, as NVIDIA's llmapi model reads them.\n")
    return head + str(yaml.safe_dump(args, sort_keys=False))


@dataclass(frozen=True)
class RenderPlan:
    """Everything decided before any file is written."""

    target: str
    layout: str
    max_batch_size: int
    end_id: int | None
    pad_id: int | None
    engine_ref: str  # what the LLM model's config names as its engine
    copy_engine: bool
    version: int = 1  # the version folder every model's files go in


def plan_render(manifest: Manifest, out: Path, settings: RepoSettings,
                version: int = 1) -> RenderPlan:
    target = resolve_target(manifest, settings)
    lim = manifest.limits
    mbs = settings.max_batch_size or lim.max_batch_size
    if mbs > lim.max_batch_size:
        raise ConfigError(
            f"max_batch_size: {mbs} exceeds the engine's max_batch_size {lim.max_batch_size}"
        )
    end_id, pad_id = default_ids(manifest)
    copy_engine = settings.engine_path is None
    if settings.engine_path is not None:
        engine_ref = settings.engine_path
        if target == "gpu" and not engine_ref.startswith("/"):
            raise ConfigError(
                f"engine_path: the tensorrtllm backend needs an absolute path, got {engine_ref!r}"
            )
    elif target == "gpu":
        root = settings.server_repo_path or Path(out).resolve().as_posix()
        engine_ref = f"{root.rstrip('/')}/{engine_subdir(version)}"
    else:
        engine_ref = engine_subdir(version)
    return RenderPlan(target, resolve_layout(manifest, settings), mbs, end_id, pad_id,
                      engine_ref, copy_engine, version)


def _batching(settings: RepoSettings, delay: int, preserve_ordering: bool = False,
              client_facing: bool = True, queue_bound: bool = True) -> dict[str, object]:
    """Dynamic batching of one model. Only client-facing models (the LLM, BLS) get the queue
    bound and timeout: pre/postprocessing run inside the ensemble, where a refused step would
    stall a stream that was already admitted. ``queue_bound=False``: ``max_queue_size`` is
    enforced elsewhere (the CPU engine's own wait queue), not by Triton's queue."""
    # Triton refuses priority levels together with preserve_ordering.
    priorities = 0 if preserve_ordering else settings.priority_levels
    if not client_facing:
        settings = dataclasses.replace(settings, max_queue_size=0, queue_timeout_microseconds=0)
    elif not queue_bound:
        settings = dataclasses.replace(settings, max_queue_size=0)
    return {
        "max_queue_delay_microseconds": delay,
        "preserve_ordering": preserve_ordering,
        "priority_levels": priorities,
        "default_priority_level": settings.resolved_default_priority_level,
        "max_queue_size": settings.max_queue_size,
        "timeout_microseconds": settings.queue_timeout_microseconds,
        "timeout_action": settings.timeout_action,
    }


def model_parameters(
    manifest: Manifest, plan: RenderPlan, settings: RepoSettings
) -> dict[str, dict[str, str]]:
    """The ``parameters`` of each model, as the templates write them."""
    s, lim = settings, manifest.limits
    tok = Path(tokenizer_subdir(plan.version))
    params: dict[str, dict[str, str]] = {
        C.ENSEMBLE: {},
        C.PREPROCESSING: PreprocessingParams(
            tokenizer_dir=tok, add_special_tokens=s.add_special_tokens, end_id=plan.end_id,
            pad_id=plan.pad_id, max_input_len=lim.max_input_len, max_seq_len=lim.max_seq_len,
            max_prompt_bytes=s.max_prompt_bytes, max_words=s.max_words,
            max_word_bytes=s.max_word_bytes,
        ).to_triton_parameters(),
        C.POSTPROCESSING: PostprocessingParams(
            tokenizer_dir=tok, skip_special_tokens=s.skip_special_tokens,
        ).to_triton_parameters(),
        C.BLS: BLSParams(
            tokenizer_dir=tok, accumulate_tokens=s.accumulate_tokens,
            skip_special_tokens=s.skip_special_tokens, streaming=s.streaming,
            max_words=s.max_words, max_word_bytes=s.max_word_bytes,
        ).to_triton_parameters(),
        C.LLMAPI: LLMAPIParams(
            tokenizer_dir=tok, skip_special_tokens=s.skip_special_tokens, streaming=s.streaming,
            max_seq_len=lim.max_seq_len, max_words=s.max_words, max_word_bytes=s.max_word_bytes,
        ).to_triton_parameters(),
    }
    if plan.layout == C.LAYOUT_LLMAPI:
        front = BLSParams(
            tokenizer_dir=tok, accumulate_tokens=s.accumulate_tokens,
            skip_special_tokens=s.skip_special_tokens, streaming=s.streaming,
            max_words=s.max_words, max_word_bytes=s.max_word_bytes,
            llm_contract=C.LAYOUT_LLMAPI, max_seq_len=lim.max_seq_len,
        ).to_triton_parameters()
        for name in ("preprocessing_model_name", "postprocessing_model_name"):
            del front[name]  # not in this layout
        params = {C.ENSEMBLE: front, C.BLS: front}
    if plan.target == "gpu" and plan.layout == C.LAYOUT_LLMAPI:
        params[C.LLM] = {}  # NVIDIA's llmapi model reads model.yaml (llmapi_model_yaml)
    elif plan.target == "gpu":
        params[C.LLM] = trtllm_parameters(s, plan.engine_ref)
    elif s.extra_llm_parameters:
        raise ConfigError("extra_llm_parameters: only the gpu target (TensorRT-LLM) takes them")
    else:
        cpu_llm = CpuLLMAPIParams if plan.layout == C.LAYOUT_LLMAPI else CpuLLMParams
        extra: dict[str, Any] = {} if plan.layout != C.LAYOUT_LLMAPI else {
            "add_special_tokens": s.add_special_tokens,
            "skip_special_tokens": s.skip_special_tokens,
            "max_prompt_bytes": s.max_prompt_bytes, "max_words": s.max_words,
            "max_word_bytes": s.max_word_bytes}
        params[C.LLM] = cpu_llm(
            **extra,
            engine_dir=Path(plan.engine_ref),
            max_num_seqs=plan.max_batch_size,
            max_num_batched_tokens=lim.max_num_tokens,
            max_input_len=lim.max_input_len,
            max_seq_len=lim.max_seq_len,
            kv_cache_precision=s.kv_cache_precision,
            cache_size_gb=s.cache_size_gb,
            enable_prefix_caching=s.enable_kv_cache_reuse,
            dynamic_split_fuse=True if s.enable_chunked_context is None
            else s.enable_chunked_context,
            end_id=plan.end_id,
            pad_id=plan.pad_id,
            streaming=s.streaming,
            exclude_input_in_output=s.exclude_input_in_output,
            cancellation_check_period_ms=s.cancellation_check_period_ms,
            num_threads=s.num_threads,
            max_stream_interval_ms=s.max_stream_interval_ms,
            max_queue_size=s.max_queue_size,
        ).to_triton_parameters()
    return params


def render_configs(
    manifest: Manifest, plan: RenderPlan, settings: RepoSettings
) -> list[RenderedModel]:
    """Render and parse every model's config.pbtxt (nothing is written)."""
    models = C.TargetModels(plan.target, settings.logits_datatype, plan.layout)
    params = model_parameters(manifest, plan, settings)
    s = settings
    # On CPU the decoupled Python models return from execute() at once, so Triton's queue in
    # front of them only ever holds a burst that arrived during one execute(); a bound there
    # refused requests (and `stop`s) while the engine had room. The CPU engine enforces
    # max_queue_size on its own wait queue instead; the BLS model passes its refusals on.
    engine_bound = plan.target != "cpu"
    common = {
        "max_batch_size": plan.max_batch_size,
        "streaming": s.streaming,
        "llm_name": C.LLM,
    }
    per_model: dict[str, dict[str, object]] = {
        C.ENSEMBLE: {"steps": models.steps},
        C.PREPROCESSING: {
            "batching": _batching(s, s.preprocessing_max_queue_delay_microseconds,
                                  client_facing=False),
            "instance_count": s.preprocessing_instance_count,
        },
        C.LLM: {
            "batching": _batching(s, s.max_queue_delay_microseconds, queue_bound=engine_bound),
            "instance_count": s.llm_instance_count,
        },
        C.POSTPROCESSING: {
            # Streamed responses of one request pass through postprocessing one by one; with
            # several instances they would overtake each other without preserve_ordering. On
            # CPU it sees cancelled streams instead (no dynamic batching, one instance).
            "batching": None if s.postprocessing_sees_cancels(plan.target) else _batching(
                s, s.postprocessing_max_queue_delay_microseconds, preserve_ordering=True,
                client_facing=False),
            "instance_count": s.postprocessing_instances(plan.target),
        },
        C.BLS: {
            "batching": _batching(s, s.max_queue_delay_microseconds, queue_bound=engine_bound),
            "instance_count": s.bls_instance_count,
        },
        # NVIDIA's llmapi model runs unbatched (max_batch_size 0, no dynamic batching).
        C.LLMAPI: {"instance_count": s.bls_instance_count},
    }
    if plan.layout == C.LAYOUT_LLMAPI:
        # The classic fronts are BLS models; the llmapi LLM runs unbatched, one instance (it
        # holds the engine), as NVIDIA's.
        per_model[C.ENSEMBLE] = per_model[C.BLS]
        per_model[C.LLM] = {"instance_count": s.llm_instance_count}
    return [render_model(name, LAYOUT_TEMPLATES[plan.layout][name], plan.target, models[name],
                         {"params": params[name], **common, **per_model[name]})
            for name in models.names]


def render_model(name: str, folder: str, target: str, model: Any,
                 context: dict[str, Any]) -> RenderedModel:
    """Render ``model_repository/<folder>``'s template for ``target`` and parse the result."""
    import jinja2

    tname = template_name(folder, target)
    try:
        text = _environment(TEMPLATES).get_template(tname).render(
            template=tname, name=name, model=model, target=target, **context)
    except jinja2.TemplateError as e:
        raise RepositoryError(f"model_repository/{tname}: {e}") from e
    config = parse_config(text, f"{name}/config.pbtxt (from model_repository/{tname})")
    if config.name != name:
        raise RepositoryError(f"model_repository/{tname}: renders name {config.name!r}")
    return RenderedModel(name, tname, text)


def copy_model_code(folder: str, model: str, dest: Path, version: int = 1) -> list[str]:
    """Copy ``model_repository/<folder>/1/**/*.py`` into ``dest/<model>/<version>/``."""
    src = TEMPLATES / folder / "1"
    copied = []
    if src.is_dir():
        for f in sorted(src.rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            rel = f.relative_to(src)
            target = dest / model / str(version) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
            copied.append(f"{model}/{version}/{rel.as_posix()}")
    return copied


def _copy_engine(engine_dir: Path, manifest: Manifest, dest: Path) -> None:
    """The engine files listed in the manifest (minus its tokenizer) + the manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    tok_prefix = manifest.tokenizer_dir.rstrip("/") + "/"
    for rel in sorted(manifest.engine_files):
        if rel.startswith(tok_prefix):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(engine_dir / rel, target)
    shutil.copy2(engine_dir / MANIFEST, dest / MANIFEST)


def _copy_tokenizer(engine_dir: Path, manifest: Manifest, dest: Path) -> None:
    src = engine_dir / manifest.tokenizer_dir
    if not src.is_dir() or not any(src.iterdir()):
        raise RepositoryError(f"{src}: no tokenizer in the engine dir; rebuild with --force")
    shutil.copytree(src, dest)


def version_dirs(repo: Path, model: str) -> list[int]:
    """The numeric version folders of ``repo/model`` (Triton's versions), sorted."""
    d = Path(repo) / model
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) \
        if d.is_dir() else []


def _check_add_version(out: Path, plan: RenderPlan, rendered: list[RenderedModel]
                       ) -> dict[str, Any]:
    """Rules for adding version N to the repository in ``out``; returns its marker."""
    n = plan.version
    if not (out / MARKER).is_file():
        raise ConfigError(f"version: {out} is not a repository rendered by tritonllm repo "
                          f"(no {MARKER}); render version 1 first")
    marker: dict[str, Any] = json.loads((out / MARKER).read_text(encoding="utf-8"))
    for key in ("target", "layout"):
        if marker.get(key) != getattr(plan, key):
            raise ConfigError(f"version: {out} is a {marker.get(key)} {key} repository, this "
                              f"render is {getattr(plan, key)}; a new version keeps the {key}")
    names = sorted(r.name for r in rendered)
    present = sorted(p.parent.name for p in out.glob("*/config.pbtxt"))
    if present != names:
        raise ConfigError(f"version: {out} serves models {present}, this render has {names}")
    newest = max((v for m in names for v in version_dirs(out, m)), default=0)
    if n <= newest:
        raise ConfigError(f"version: {n} must be greater than {newest}, the newest version in "
                          f"{out} (Triton serves the highest version)")
    return marker


def render_repository(
    engine_dir: Path,
    out: Path,
    settings: RepoSettings | None = None,
    progress: Progress | None = None,
    version: int | None = None,
    embedding: Path | None = None,
) -> Path:
    """Render the model repository for the engine in ``engine_dir`` into ``out``.

    ``version`` None: ``out`` must be new, empty, or a repository rendered earlier (which is
    replaced), and every model gets version 1. ``version`` N: ``out`` is a repository
    rendered earlier; version N of every model is added beside the versions there (N above
    all of them), and the configs are replaced to describe it. Triton's default version
    policy serves the highest version only, and an old version's loaded instances keep the
    files they loaded until their requests finish (docs/deploy.md, "Zero-loss model updates").
    ``embedding``: an onnx engine dir whose embedding models are rendered beside the LLM's
    (:mod:`tritonllm.builders.embedding_repository`); an onnx ``engine_dir`` alone renders a
    repository of the embedding models only.
    Raises ConfigError (bad settings for this engine) or RepositoryError.
    """
    say = progress or (lambda _m: None)
    settings = settings or RepoSettings()
    engine_dir, out = Path(engine_dir), Path(out)
    if version is not None and (isinstance(version, bool) or version < 1):
        raise ConfigError(f"version: must be 1 or more, got {version!r}")
    manifest = _checked_manifest(engine_dir)
    if manifest.engine == "onnx":
        if embedding is not None:
            raise ConfigError("embedding: the engine is already an onnx (embedding) engine; "
                              "pass the LLM's engine first")
        if version is not None:
            raise ConfigError("version: new versions are for LLM repositories; re-render the "
                              "embedding repository instead")
        return _render_embedding_only(engine_dir, manifest, out, settings, say)
    emb = None
    if embedding is not None:
        if version is not None:
            raise ConfigError("embedding: not with --version (re-render the repository to "
                              "change its embedding model)")
        emb = (Path(embedding), _checked_manifest(Path(embedding)))
    adding = version is not None
    if not adding:
        check_output_dir(out, MARKER, "a rendered repository")
    n = version or 1
    plan = plan_render(manifest, out, settings, n)
    say(f"rendering {plan.target} repository" + (f", version {n}" if adding else ""))
    rendered = render_configs(manifest, plan, settings)
    old_marker = _check_add_version(out, plan, rendered) if adding else None

    with staged(out, "rendering", replace=not adding) as work:
        code: list[str] = []
        vdir = str(n)
        for r in rendered:
            (work / r.name / vdir).mkdir(parents=True, exist_ok=True)
            (work / r.name / "config.pbtxt").write_text(r.text, encoding="utf-8")
            folder = LAYOUT_TEMPLATES[plan.layout][r.name]
            if plan.target == "cpu" or folder not in _NOT_PYTHON_ON_GPU:
                code += copy_model_code(folder, r.name, work, n)
        emb_marker = None
        if emb is not None:
            from tritonllm.builders import embedding_repository as E

            eplan = E.plan_embedding(emb[1], emb[0], plan.target, settings)
            say("rendering embedding models")
            erendered = E.render_embedding_configs(eplan, settings)
            code += E.write_embedding(work, emb[0], emb[1], eplan, erendered)
            emb_marker = {"engine_cache_key": emb[1].cache_key,
                          "models": [r.name for r in erendered]}
        if plan.target == "gpu" and plan.layout == C.LAYOUT_LLMAPI:
            (work / C.LLM / vdir / C.LLMAPI_MODEL_YAML).write_text(
                llmapi_model_yaml(engine_dir, plan, settings), encoding="utf-8")
        say("copying tokenizer")
        _copy_tokenizer(engine_dir, manifest, work / tokenizer_subdir(n))
        if plan.copy_engine:
            say("copying engine")
            _copy_engine(engine_dir, manifest, work / engine_subdir(n))
        versions = dict(old_marker.get("versions", {"1": old_marker.get("engine_cache_key")})
                        if old_marker else {})
        versions[vdir] = manifest.cache_key
        marker = {
            "target": plan.target,
            "layout": plan.layout,
            "engine": manifest.engine,
            "engine_cache_key": manifest.cache_key,
            "engine_ref": plan.engine_ref,
            "engine_copied": plan.copy_engine,
            "model_code": code,
            "version": n,
            "versions": versions,
            "settings": _marker_settings(settings),
        }
        if emb_marker is not None:
            marker["embedding"] = emb_marker
        (work / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
        if adding:
            _add_version(work, out, [r.name for r in rendered], vdir)
    say(f"wrote {out}" + (f" (version {n} added)" if adding else ""))
    return out


def _checked_manifest(engine_dir: Path) -> Manifest:
    manifest = read_manifest(engine_dir)
    missing = manifest.missing_files(engine_dir)
    if missing:
        raise RepositoryError(
            f"{engine_dir}: engine files missing or changed since the build: "
            f"{', '.join(missing[:5])}; rebuild with --force"
        )
    return manifest


def _marker_settings(settings: RepoSettings) -> dict[str, Any]:
    return ({k: v for k, v in asdict(settings).items() if k != "extra_llm_parameters"}
            | {"extra_llm_parameters": dict(settings.extra_llm_parameters)})


def _render_embedding_only(engine_dir: Path, manifest: Manifest, out: Path,
                           settings: RepoSettings, say: Progress) -> Path:
    """A repository of the embedding models alone (an onnx engine); target: the settings',
    else cpu."""
    from tritonllm.builders import embedding_repository as E

    check_output_dir(out, MARKER, "a rendered repository")
    target = settings.target or "cpu"
    plan = E.plan_embedding(manifest, engine_dir, target, settings)
    say(f"rendering {target} embedding repository")
    rendered = E.render_embedding_configs(plan, settings)
    with staged(out, "rendering") as work:
        code = E.write_embedding(work, engine_dir, manifest, plan, rendered)
        marker = {"target": target, "layout": None, "engine": manifest.engine,
                  "engine_cache_key": manifest.cache_key, "model_code": code, "version": 1,
                  "embedding": {"engine_cache_key": manifest.cache_key,
                                "models": [r.name for r in rendered]},
                  "settings": _marker_settings(settings)}
        (work / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
    say(f"wrote {out}")
    return out


def _add_version(work: Path, out: Path, models: list[str], vdir: str) -> None:
    """Move version ``vdir`` of every model into ``out``, then swap each config and the marker.

    The version folders go first (in explicit model control Triton ignores a version until a
    load asks for it); each config.pbtxt and the marker are replaced by rename, so a reader
    sees the old file or the new one, never half of either. A failure on the way puts the
    configs replaced so far back and takes the moved folders out, leaving ``out`` as it was.
    """
    moved: list[Path] = []
    swapped: list[str] = []
    try:
        for m in models:
            target = out / m / vdir
            (work / m / vdir).rename(target)
            moved.append(target)
        for m in models:
            shutil.copy2(out / m / "config.pbtxt", work / m / "config.pbtxt.old")
            os.replace(work / m / "config.pbtxt", out / m / "config.pbtxt")
            swapped.append(m)
        os.replace(work / MARKER, out / MARKER)
    except BaseException:
        for m in swapped:
            os.replace(work / m / "config.pbtxt.old", out / m / "config.pbtxt")
        for t in moved:
            shutil.rmtree(t, ignore_errors=True)
        raise
