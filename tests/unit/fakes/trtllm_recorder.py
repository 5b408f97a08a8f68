"""RECORDING FAKE of TensorRT-LLM's tools: ``trtllm-build`` and the TensorRT-LLM Python.

This is the one fake the project allows: there is no GPU and no tensorrt_llm on development
or CI machines, so the trtllm builder's unit tests put executables named ``python`` and
``trtllm-build`` first on PATH (``TRITONLLM_TRTLLM_PYTHON`` points at the fake ``python``).
Each call appends ``{"tool", "argv", "env"}`` to the JSON-lines file ``$FAKE_TRTLLM_RECORD``
and then writes what the real tool would have written, so the builder's own checks run:

- ``python -c CODE`` (the builder's availability / version probe): prints the JSON the probe
  prints, ``{"importable": ..., "versions": {...}}``;
- ``python SCRIPT --output-dir D --tp T --pp P ...`` (the checkpoint conversion): checks that
  SCRIPT exists, writes ``D/config.json`` (architecture, dtype, mapping, quantization) and
  ``D/rank<N>.safetensors`` for N < T*P;
- ``trtllm-build --checkpoint_dir C --output_dir O ...``: reads ``C/config.json`` as the real
  one does, writes ``O/config.json`` (pretrained + build config) and ``O/rank<N>.engine``;
- ``python trtllm_quantize.py --output-dir D --qformat Q ...`` (ModelOpt, for the LLM API
  deployment): writes what ModelOpt's Hugging Face export writes, ``D/config.json`` with its
  ``quantization_config``, ``D/hf_quant_config.json`` and ``D/model.safetensors``.

Knobs (environment): ``FAKE_TRTLLM_VERSION`` (tensorrt_llm version reported, default
``0.17.0``), ``FAKE_TRTLLM_IMPORTABLE=0`` (the probe says tensorrt_llm is missing),
``FAKE_TRTLLM_FAIL=python|trtllm-build`` (that tool prints an error and exits 1),
``FAKE_TRTLLM_SKIP_RANK=N`` (the conversion "forgets" rank N's weights),
``FAKE_MODELOPT=0`` (the probe says nvidia-modelopt is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

RECORDED_ENV = ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")
QUANT_ALGOS = {"int8_wo": "W8A16", "int4_wo": "W4A16", "int4_awq": "W4A16_AWQ", "fp8": "FP8",
               "smoothquant": "W8A8_SQ_PER_CHANNEL"}


def _record(tool: str, argv: list[str]) -> None:
    entry = {"tool": tool, "argv": argv, "env": {k: os.environ.get(k) for k in RECORDED_ENV}}
    with open(os.environ["FAKE_TRTLLM_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _fail_if_asked(tool: str) -> None:
    if os.environ.get("FAKE_TRTLLM_FAIL") == tool:
        print(f"[fake {tool}] RuntimeError: simulated failure", file=sys.stderr)
        raise SystemExit(1)


def _probe() -> int:
    importable = os.environ.get("FAKE_TRTLLM_IMPORTABLE", "1") != "0"
    version = os.environ.get("FAKE_TRTLLM_VERSION", "0.17.0")
    print(json.dumps({
        "importable": importable,
        "versions": {"tensorrt_llm": version if importable else "absent",
                     "tensorrt": "10.8.0",
                     "nvidia-modelopt": "absent" if os.environ.get("FAKE_MODELOPT") == "0"
                     else "0.47.0",
                     "transformers": "4.48.0", "torch": "2.6.0"},
    }))
    return 0


def _convert(argv: list[str]) -> int:
    script = Path(argv[0])
    if not script.is_file():
        print(f"python: can't open file {str(script)!r}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser()
    p.add_argument("--output-dir", required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("--pp", type=int, required=True)
    p.add_argument("--model-class", default="LLaMAForCausalLM")
    p.add_argument("--quantization")
    p.add_argument("--group-size", type=int)
    args, _ = p.parse_known_args(argv[1:])
    out = Path(args.output_dir)
    if not out.is_dir():
        print(f"[fake python] output dir {out} does not exist", file=sys.stderr)
        return 1
    world = args.tp * args.pp
    config: dict[str, Any] = {
        "architecture": args.model_class.replace("LLaMA", "Llama"),
        "dtype": args.dtype,
        "mapping": {"world_size": world, "tp_size": args.tp, "pp_size": args.pp},
        "quantization": {"quant_algo": QUANT_ALGOS.get(args.quantization or ""),
                         "group_size": args.group_size or 128},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    skip = os.environ.get("FAKE_TRTLLM_SKIP_RANK")
    for rank in range(world):
        if skip is not None and rank == int(skip):
            continue
        (out / f"rank{rank}.safetensors").write_bytes(b"fake weights for rank %d" % rank)
    return 0


#: ModelOpt's --qformat → the quant_algo its export writes (modelopt.torch.export).
MODELOPT_ALGOS = {"fp8": "FP8", "nvfp4": "NVFP4", "int4_awq": "W4A16_AWQ",
                  "w4a8_awq": "W4A8_AWQ"}


def _quantize(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--qformat", required=True)
    args, _ = p.parse_known_args(argv[1:])
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    algo = MODELOPT_ALGOS[args.qformat]
    source = json.loads((Path(args.model_dir) / "config.json").read_text(encoding="utf-8"))
    source["quantization_config"] = {"quant_method": "modelopt", "quant_algo": algo}
    (out / "config.json").write_text(json.dumps(source, indent=2), encoding="utf-8")
    (out / "hf_quant_config.json").write_text(
        json.dumps({"quantization": {"quant_algo": algo, "kv_cache_quant_algo": None}}),
        encoding="utf-8")
    (out / "model.safetensors").write_bytes(b"fake quantized weights")
    return 0


def _trtllm_build(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trtllm-build")
    p.add_argument("--checkpoint_dir", required=True)
    p.add_argument("--output_dir", required=True)
    args, rest = p.parse_known_args(argv)
    ckpt = Path(args.checkpoint_dir)
    try:
        pretrained = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"[fake trtllm-build] {ckpt / 'config.json'} not found", file=sys.stderr)
        return 1
    world = pretrained["mapping"]["world_size"]
    for rank in range(world):
        if not (ckpt / f"rank{rank}.safetensors").is_file():
            print(f"[fake trtllm-build] rank{rank}.safetensors missing", file=sys.stderr)
            return 1
    flags = dict(zip(rest[0::2], rest[1::2], strict=False))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    engine_config = {"version": os.environ.get("FAKE_TRTLLM_VERSION", "0.17.0"),
                     "pretrained_config": pretrained,
                     "build_config": {k.lstrip("-"): v for k, v in flags.items()}}
    (out / "config.json").write_text(json.dumps(engine_config, indent=2), encoding="utf-8")
    for rank in range(world):
        (out / f"rank{rank}.engine").write_bytes(b"fake engine for rank %d" % rank)
    return 0


def main(tool: str) -> int:
    argv = sys.argv[1:]
    _record(tool, argv)
    if tool == "python":
        if argv[:1] == ["-c"]:
            return _probe()
        _fail_if_asked(tool)
        if argv and Path(argv[0]).name == "trtllm_quantize.py":
            return _quantize(argv)
        return _convert(argv)
    if tool == "trtllm-build":
        _fail_if_asked(tool)
        return _trtllm_build(argv)
    raise SystemExit(f"trtllm_recorder: unknown tool {tool!r}")
