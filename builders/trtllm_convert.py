"""Child process of the trtllm builder: Hugging Face checkpoint → TensorRT-LLM checkpoint.

The builder runs this file *by path* with the Python that has TensorRT-LLM installed
(``TRITONLLM_TRTLLM_PYTHON``), which need not have tritonllm installed; so it imports nothing
but the standard library at module level and ``tensorrt_llm`` only inside the conversion.
(``python -m tritonllm.builders.trtllm_convert`` works too where tritonllm is installed.)

    python trtllm_convert.py --model-dir HF --output-dir CKPT --dtype float16 --tp 2 --pp 1 \\
        --model-class LLaMAForCausalLM [--quantization int8_wo|int4_wo]
    python trtllm_convert.py --model-dir HF --output-dir CKPT --dtype float16 --tp 2 --pp 1 \\
        --quantization int4_awq|fp8|smoothquant [--group-size 128] [--calib-dataset NAME_OR_DIR] \\
        [--calib-size 512] [--calib-max-seq-len 512]

Two paths, as NVIDIA's own examples take them:

- unquantized and weight-only (W8A16 / W4A16, per channel): for every rank of the tp×pp grid,
  ``<ModelClass>.from_hugging_face(model_dir, dtype, mapping=Mapping(...), quant_config=...)``
  then ``save_checkpoint(output_dir, save_config=(rank == 0))``;
- calibrated formats: ModelOpt post-training quantization through
  ``tensorrt_llm.quantization.quantize_by_modelopt.quantize_and_export`` (the function behind
  ``examples/quantization/quantize.py``), which calibrates on the GPU and exports every rank.

Either way CKPT ends up holding ``config.json`` and ``rank<N>.safetensors`` for N in
0..tp*pp-1, the layout ``trtllm-build --checkpoint_dir`` reads. Exit status: 0 on success,
2 for bad arguments, 1 (with TensorRT-LLM's traceback on stderr) when the conversion fails.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from typing import Any

# --quantization → TensorRT-LLM QuantAlgo member, for the from_hugging_face path.
WEIGHT_ONLY_ALGOS = {"int8_wo": "W8A16", "int4_wo": "W4A16"}
# --quantization → ModelOpt qformat understood by quantize_and_export.
MODELOPT_QFORMATS = {"int4_awq": "int4_awq", "fp8": "fp8", "smoothquant": "int8_sq"}
DTYPES = ("float16", "bfloat16", "float32")
CALIB_SEED = 1234


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="trtllm_convert", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model-dir", required=True, help="Hugging Face checkpoint directory")
    p.add_argument("--output-dir", required=True, help="TensorRT-LLM checkpoint directory")
    p.add_argument("--dtype", required=True, choices=DTYPES)
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size")
    p.add_argument("--pp", type=int, default=1, help="pipeline parallel size")
    p.add_argument("--model-class", help="tensorrt_llm.models class (from_hugging_face path)")
    p.add_argument("--quantization", choices=(*WEIGHT_ONLY_ALGOS, *MODELOPT_QFORMATS))
    p.add_argument("--group-size", type=int, default=128, help="int4_awq block size")
    p.add_argument("--calib-dataset", default="cnn_dailymail",
                   help="Hugging Face dataset name, or a local dataset dir with a 'text' column")
    p.add_argument("--calib-size", type=int, default=512, help="calibration samples")
    p.add_argument("--calib-max-seq-len", type=int, default=512,
                   help="tokens per calibration sample")
    args = p.parse_args(argv)
    if args.tp < 1 or args.pp < 1:
        p.error("--tp and --pp must be at least 1")
    if args.quantization not in MODELOPT_QFORMATS and not args.model_class:
        p.error("--model-class is required unless --quantization is "
                + "|".join(MODELOPT_QFORMATS))
    return args


def convert_per_rank(args: argparse.Namespace) -> None:
    """Unquantized or weight-only: one from_hugging_face + save_checkpoint per rank."""
    import tensorrt_llm.models as models
    from tensorrt_llm.mapping import Mapping
    from tensorrt_llm.models.modeling_utils import QuantConfig
    from tensorrt_llm.quantization import QuantAlgo

    model_cls = getattr(models, args.model_class, None)
    if model_cls is None or not hasattr(model_cls, "from_hugging_face"):
        raise SystemExit(f"trtllm_convert: tensorrt_llm.models.{args.model_class} has no "
                         "from_hugging_face converter in this TensorRT-LLM")
    quant = QuantConfig()
    if args.quantization is not None:
        quant = QuantConfig(quant_algo=getattr(QuantAlgo, WEIGHT_ONLY_ALGOS[args.quantization]))
    world = args.tp * args.pp
    for rank in range(world):
        mapping = Mapping(world_size=world, rank=rank, tp_size=args.tp, pp_size=args.pp)
        model = model_cls.from_hugging_face(args.model_dir, dtype=args.dtype, mapping=mapping,
                                            quant_config=quant)
        model.save_checkpoint(args.output_dir, save_config=(rank == 0))
        del model


def modelopt_kwargs(args: argparse.Namespace, accepted: Sequence[str]) -> dict[str, Any]:
    """quantize_and_export's keyword arguments, limited to those this TensorRT-LLM accepts.

    Its signature grew over releases (cp_size, the calib/tokenizer length split); passing
    only what it declares keeps one call working from 0.13 on.
    """
    wanted: dict[str, Any] = {
        "model_dir": args.model_dir,
        "device": "cuda",
        "calib_dataset": args.calib_dataset,
        "dtype": args.dtype,
        "qformat": MODELOPT_QFORMATS[args.quantization],
        "kv_cache_dtype": None,
        "calib_size": args.calib_size,
        "batch_size": 1,
        "calib_max_seq_length": args.calib_max_seq_len,
        "max_seq_length": max(2048, args.calib_max_seq_len),  # older name of the next one
        "awq_block_size": args.group_size,
        "output_dir": args.output_dir,
        "tp_size": args.tp,
        "pp_size": args.pp,
        "cp_size": 1,
        "seed": CALIB_SEED,
        "tokenizer_max_seq_length": max(2048, args.calib_max_seq_len),
    }
    return {k: v for k, v in wanted.items() if k in accepted}


def quantize_with_modelopt(args: argparse.Namespace) -> None:
    """int4_awq / fp8 / smoothquant: calibrate with ModelOpt and export every rank."""
    from tensorrt_llm.quantization.quantize_by_modelopt import quantize_and_export

    accepted = list(inspect.signature(quantize_and_export).parameters)
    quantize_and_export(**modelopt_kwargs(args, accepted))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quantization in MODELOPT_QFORMATS:
        quantize_with_modelopt(args)
    else:
        convert_per_rank(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
