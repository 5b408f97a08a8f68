"""``tritonllm repo`` (render a Triton model repository) and ``tritonllm validate`` (check one).

Option names are the fields of :class:`tritonllm.settings.RepoSettings` with dashes; an option
left out keeps that field's default, so defaults live in one place.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tritonllm.cli._console import non_negative, positive, progress_line
from tritonllm.contract import LAYOUTS
from tritonllm.settings import (
    BATCH_SCHEDULER_POLICIES,
    BATCHING_STRATEGIES,
    KV_CACHE_PRECISIONS,
    LOGITS_DATATYPES,
    TIMEOUT_ACTIONS,
    RepoSettings,
)

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RepoSettings)}
_NONE_MEANS = {"target": "from the engine", "layout": "from the engine",
               "max_batch_size": "the engine's",
               "default_priority_level": "the middle level", "engine_path": "copy the engine",
               "server_repo_path": "--out's absolute path",
               "postprocessing_instance_count": "1 on a streaming cpu repository, else 4"}
F = TypeVar("F", bound=Callable[..., Any])


def _setting(name: str, help: str, *decls: str, **kw: Any) -> Callable[[F], F]:
    """A click option for RepoSettings field ``name``; its help shows the field's default."""
    default = _DEFAULTS[name]
    if default is None:
        shown = _NONE_MEANS.get(name, "the backend's")
    else:
        shown = str(default).lower() if isinstance(default, bool) else str(default)
    flag = f"--{name.replace('_', '-')}"
    return click.option(*(decls or (flag,)), name, default=None,
                        help=f"{help} [default: {shown}]", **kw)


def _bool(name: str, help: str, on: str | None = None, off: str | None = None
          ) -> Callable[[F], F]:
    dashed = name.replace("_", "-")
    return _setting(name, help, f"{on or '--' + dashed}/{off or '--no-' + dashed}")


def _parse_kv(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
              ) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


@click.command("repo")
@click.argument("engine_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Repository to write (new, empty, or rendered before: replaced).")
@_setting("target", "gpu (tensorrtllm backend) or cpu (Python backend); must suit the engine.",
          type=click.Choice(["gpu", "cpu"]))
@_setting("layout", "classic (NVIDIA's inflight_batcher_llm models + an llmapi front) or llmapi "
          "(NVIDIA's current stack: tensorrt_llm speaks the llmapi contract, ensemble and "
          "tensorrt_llm_bls are classic fronts over it).", type=click.Choice(list(LAYOUTS)))
@_bool("streaming", "Decoupled LLM and BLS models: the ensemble streams tokens.")
@_setting("max_batch_size", "Triton max_batch_size of every model (<= the engine's).",
          type=int, callback=positive)
@_setting("max_queue_delay_microseconds", "Dynamic-batching delay of the LLM and BLS models.",
          "--max-queue-delay-us", type=int, callback=non_negative)
@_setting("preprocessing_max_queue_delay_microseconds", "Dynamic-batching delay, preprocessing.",
          "--preprocessing-queue-delay-us", type=int, callback=non_negative)
@_setting("postprocessing_max_queue_delay_microseconds", "Dynamic-batching delay, postprocessing.",
          "--postprocessing-queue-delay-us", type=int, callback=non_negative)
@_setting("max_queue_size", "Queue bound per model; 0 is unbounded.", type=int,
          callback=non_negative)
@_setting("queue_timeout_microseconds", "Drop requests queued longer; 0 is never.",
          "--queue-timeout-us", type=int, callback=non_negative)
@_setting("timeout_action", "What a queue timeout does.", type=click.Choice(TIMEOUT_ACTIONS))
@_setting("priority_levels", "Request priority levels; 0 is none.", type=int,
          callback=non_negative)
@_setting("default_priority_level", "Priority of requests that name none (middle level).",
          type=int, callback=positive)
@_setting("preprocessing_instance_count", "Preprocessing instances.",
          "--preprocessing-instances", type=int, callback=positive)
@_setting("postprocessing_instance_count", "Postprocessing instances.",
          "--postprocessing-instances", type=int, callback=positive)
@_setting("bls_instance_count", "BLS instances.", "--bls-instances", type=int,
          callback=positive)
@_setting("llm_instance_count", "LLM model instances.", "--llm-instances", type=int,
          callback=positive)
@_bool("exclude_input_in_output", "Return only generated text unless a request says otherwise.",
       off="--include-input-in-output")
@_bool("add_special_tokens", "Add special tokens when encoding prompts.")
@_bool("skip_special_tokens", "Drop special tokens when decoding.",
       off="--keep-special-tokens")
@_bool("accumulate_tokens", "BLS streams the whole text so far instead of deltas.")
@_setting("logits_datatype", "dtype of context/generation logits.",
          type=click.Choice(LOGITS_DATATYPES))
@_setting("batching_strategy", "TensorRT-LLM gpt_model_type.",
          type=click.Choice(BATCHING_STRATEGIES))
@_setting("max_beam_width", "TensorRT-LLM max_beam_width.", type=int, callback=positive)
@_setting("kv_cache_free_gpu_mem_fraction", "Share of free GPU memory for the KV cache.",
          type=float)
@_setting("max_tokens_in_paged_kv_cache", "KV cache size in tokens.", type=int,
          callback=positive)
@_setting("max_attention_window_size", "Sliding attention window in tokens.", type=int,
          callback=positive)
@_setting("batch_scheduler_policy", "TensorRT-LLM batch scheduler policy.",
          type=click.Choice(BATCH_SCHEDULER_POLICIES))
@_bool("enable_kv_cache_reuse", "Reuse KV blocks of shared prefixes (cpu: prefix caching).",
       off="--disable-kv-cache-reuse")
@_bool("enable_chunked_context", "Chunk long prompts (cpu: dynamic split-fuse).",
       off="--disable-chunked-context")
@_setting("cancellation_check_period_ms", "How often cancelled requests are noticed.",
          type=int, callback=positive)
@_setting("gpu_device_ids", "Comma-separated GPU ids for the TensorRT-LLM backend.")
@_setting("decoding_mode", "TensorRT-LLM decoding_mode (top_k, top_p, beam_search, ...).")
@click.option("--trtllm-param", "extra_llm_parameters", multiple=True, callback=_parse_kv,
              metavar="KEY=VALUE", help="Any other tensorrtllm backend parameter (official keys).")
@_setting("kv_cache_precision", "CPU KV cache precision.", type=click.Choice(KV_CACHE_PRECISIONS))
@_setting("cache_size_gb", "CPU KV cache size in GB.", type=float)
@_setting("num_threads", "CPU inference threads.", type=int, callback=positive)
@_setting("max_stream_interval_ms", "CPU: longest a streamed token waits so that busy streams "
          "get several tokens per response (0: every token at once).", type=int)
@_setting("engine_path", "Reference the engine at this path (e.g. a container mount) instead "
          "of copying it.")
@_setting("server_repo_path", "Where tritonserver sees this repository, e.g. /models "
          "(GPU gpt_model_path is absolute).")
@click.option("--embedding", "embedding", type=click.Path(file_okay=False, path_type=Path),
              help="An onnx engine dir (tritonllm build --engine onnx): render its embedding "
                   "models beside the LLM's. An onnx ENGINE_DIR alone renders them only.")
@_setting("embedding_instance_count", "Instances of the embedding model (CPU) or its "
          "tokenizer and encoder (GPU).", type=click.IntRange(min=1))
@_setting("embedding_max_queue_delay_microseconds", "Dynamic-batching delay of the embedding "
          "models.", type=click.IntRange(min=0))
@_setting("embedding_max_batch_size", "max_batch_size of the embedding models [default: the "
          "onnx engine's].", type=click.IntRange(min=1))
@_setting("embedding_num_threads", "ONNX Runtime intra-op threads of the CPU embedding model "
          "[default: one per core].", type=click.IntRange(min=1))
@click.option("--version", "version", type=click.IntRange(min=1),
              help="Add version N of every model beside the versions in --out (a repository "
                   "rendered earlier; N above them) instead of replacing it; then "
                   "`tritonllm models load` swaps the served version.")
def repo_cmd(engine_dir: Path, out: Path, version: int | None, embedding: Path | None,
             **options: Any) -> None:
    """Render a Triton model repository for the engine in ENGINE_DIR into --out."""
    from tritonllm.builders.repository import render_repository
    from tritonllm.builders.validate import validate_repository

    chosen = {k: v for k, v in options.items() if v is not None}
    if not chosen.get("extra_llm_parameters"):
        chosen.pop("extra_llm_parameters", None)
    settings = RepoSettings(**chosen)
    with progress_line() as say:
        render_repository(engine_dir, out, settings, progress=say, version=version,
                          embedding=embedding)
    marker = json.loads((out / ".tritonllm-repo.json").read_text(encoding="utf-8"))
    emb = marker.get("embedding")
    if version is not None:
        click.echo(f"added version {version} to {out} (versions: "
                   f"{', '.join(sorted(marker['versions'], key=int))}); load it: tritonllm "
                   "models load --url URL (the server needs --model-control-mode explicit)")
    if marker["layout"] is None:
        click.echo(f"rendered {marker['target']} embedding repository in {out} "
                   f"(models: {', '.join(emb['models'])})")
    else:
        where = "copied" if marker["engine_copied"] else "at " + marker["engine_ref"]
        extra = "; embedding models: " + ", ".join(emb["models"]) if emb else ""
        click.echo(f"rendered {marker['target']} {marker['layout']}-layout repository in {out} "
                   f"(engine {where}{extra})")
    problems = validate_repository(out)
    for p in problems:
        click.secho(f"warning: {p}", err=True, fg="yellow")
    if problems:
        click.echo(f"  {len(problems)} problem(s): see `tritonllm validate {out}`", err=True)
    click.echo(f"  serve: tritonserver --model-repository {out.resolve()}")


@click.command("validate")
@click.argument("repo", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list.")
@click.option("--wire", is_flag=True,
              help="Also print the shape each client-facing output has on the wire.")
def validate_cmd(repo: Path, as_json: bool, wire: bool) -> None:
    """Check the model repository REPO; print every problem, exit 1 if there is any."""
    from tritonllm.builders.validate import repository_target, validate_repository

    problems = validate_repository(repo)
    if wire and not as_json:
        from tritonllm.contract import wire_shapes

        target = repository_target(repo)
        click.echo(f"outputs on the wire ({target} target; one request of batch 1, n: varies):")
        for model, name, dtype, dims, shape in wire_shapes(target):
            note = "  (no batch dimension, as NVIDIA sends it)" if shape == "[n]" else ""
            click.echo(f"  {model:<17} {name:<28} {dtype:<6} dims {dims:<10} "
                       f"wire {shape}{note}")
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in problems], indent=2))
    else:
        for p in problems:
            click.echo(str(p))
        if problems:
            click.secho(f"{repo}: {len(problems)} problem(s)", err=True, fg="red")
        else:
            click.echo(f"{repo}: ok")
    if problems:
        raise SystemExit(1)
