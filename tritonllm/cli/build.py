"""``tritonllm make-tiny-model`` (a random test checkpoint) and ``tritonllm build`` (an engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tritonllm.cli._console import positive, progress_line
from tritonllm.trtllm_release import LEGACY_LAST_IMAGE

#: --engine choices, and the registered engine each one builds (--legacy-engine: the other).
ENGINE_CHOICES = ("cpu", "trtllm", "onnx")
LEGACY_ENGINE = "trtllm-legacy"
ENGINE_NAMES = (*ENGINE_CHOICES, LEGACY_ENGINE)  # = the builder registry (a unit test checks)


@click.command("make-tiny-model")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=click.Choice(["tiny", "small"]), default="tiny", show_default=True,
              help="tiny: ~0.2M params (tests); small: ~20M params (benchmarks).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
def make_tiny_model_cmd(out: Path, size: str, seed: int) -> None:
    """Write a random Llama checkpoint + byte-level BPE tokenizer to OUT."""
    from tritonllm.tiny import make_tiny_model

    with progress_line() as say:
        make_tiny_model(out, size=size, seed=seed, progress=say)
    click.echo(f"wrote {size} Llama checkpoint to {out}")


@click.command("build")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), required=True,
              help="cpu: OpenVINO (any host); trtllm: TensorRT-LLM (NVIDIA GPU), a deployment "
                   "for its LLM API (PyTorch backend); onnx: a sentence-embedding encoder "
                   "(sentence-transformers checkpoint).")
@click.option("--legacy-engine", is_flag=True,
              help="trtllm: build TensorRT engines with trtllm-build instead, for the "
                   f"tensorrtllm backend of pinned images (up to {LEGACY_LAST_IMAGE}).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Engine directory.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
              default="auto", show_default=True)
@click.option("--quantization",
              type=click.Choice(["int8", "int4", "int8_wo", "int4_wo", "int4_awq", "fp8",
                                 "nvfp4", "w4a8_awq", "smoothquant"]),
              help="cpu: int8|int4 weight compression; onnx: int8 (dynamic); trtllm: "
                   "ModelOpt fp8|nvfp4|int4_awq|w4a8_awq; --legacy-engine: "
                   "int8_wo|int4_wo|int4_awq|fp8|smoothquant.")
@click.option("--group-size", type=int, callback=positive, help="int4 group size (cpu).")
@click.option("--tp", type=int, default=1, show_default=True, callback=positive,
              help="Tensor parallel size (trtllm).")
@click.option("--pp", type=int, default=1, show_default=True, callback=positive,
              help="Pipeline parallel size (trtllm).")
@click.option("--ep", type=int, default=1, show_default=True, callback=positive,
              help="MoE expert parallel size (trtllm, LLM API).")
@click.option("--max-batch-size", type=int, default=64, show_default=True, callback=positive)
@click.option("--max-input-len", type=int, callback=positive,
              help="Longest prompt [default: min(1024, max-seq-len - 1)].")
@click.option("--max-seq-len", type=int, callback=positive,
              help="Longest prompt + output [default: the model's max_position_embeddings].")
@click.option("--max-num-tokens", type=int, default=8192, show_default=True, callback=positive,
              help="Most tokens in one engine step.")
@click.option("--trust-remote-code", is_flag=True, help="Allow checkpoint-provided code.")
@click.option("--force", is_flag=True, help="Rebuild even if the engine is up to date.")
def build_cmd(checkpoint: Path, engine: str, out: Path, legacy_engine: bool,
              **options: Any) -> None:
    """Compile CHECKPOINT (a Hugging Face folder, safetensors) into an engine in OUT."""
    from tritonllm.builders import BuildSettings, build

    if legacy_engine:
        if engine != "trtllm":
            raise click.UsageError("--legacy-engine: only with --engine trtllm")
        engine = LEGACY_ENGINE
    settings = BuildSettings(checkpoint=checkpoint, engine=engine, out=out, **options)
    with progress_line() as say:
        result = build(settings, progress=say)
    m = result.manifest
    if result.cached:
        click.echo(f"up to date: {out} ({engine}, cache hit in {result.seconds:.2f}s; "
                   "--force rebuilds)")
    else:
        click.echo(f"built {engine} engine in {out} in {result.seconds:.1f}s")
    lim = m.limits
    if m.engine == "onnx":
        c = m.checks
        click.echo(f"  limits: batch {lim.max_batch_size}, max length {lim.max_input_len} "
                   f"tokens; {c.get('format')} graph vs PyTorch: max |diff| "
                   f"{c.get('max_abs_diff', 0):.2e}, min cosine {c.get('min_cosine', 0):.6f}")
        return
    click.echo(f"  limits: batch {lim.max_batch_size}, input {lim.max_input_len}, "
               f"sequence {lim.max_seq_len}, vocab {lim.vocab_size}, eos {list(lim.eos_token_ids)}")
