"""The onnx engine's export, run as a child process by :mod:`tritonllm.builders.onnx`.

    python -m tritonllm.builders.onnx_export --checkpoint DIR --out DIR --format float32 \\
        --opset 17 --pooling mean --normalize --max-length 256

Writes ``model.onnx``, ``embedding.json`` and ``checks.json`` (ONNX Runtime against PyTorch on
sample texts) into ``--out``; exits non-zero with one line on stderr when something fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tritonllm import contract as C
from tritonllm.builders.manifest import CHECKS_FILE
from tritonllm.builders.onnx import EMBEDDING_INFO, ONNX_FILE, POOLING_MODES, TOLERANCE

#: Texts the exported graph is compared on: short and long, multi-byte, one padded batch.
SAMPLE_TEXTS = (
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Triton batches requests that arrive together; the encoder sees them as one tensor.",
    "déjà vu, naïve café — crème brûlée à la carte",
    "日本語のテキストと中文文本, 한국어 문장도 있습니다",
    "emoji 🙂🚀✨ and symbols ½ π ∑ ≤ ≥ €",
    "a " * 600,  # longer than any max length: truncated
)


def pooled(hidden: Any, mask: Any, pooling: str, normalize: bool) -> Any:
    """The sentence-transformers pooling of ``hidden`` [b, s, d] under ``mask`` [b, s]."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        out = hidden[:, 0]
    elif pooling == "max":
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    else:
        total = (hidden * m).sum(dim=1)
        count = m.sum(dim=1).clamp(min=1e-9)
        out = total / (count.sqrt() if pooling == "mean_sqrt_len" else count)
    return torch.nn.functional.normalize(out, p=2, dim=1) if normalize else out


def make_module(model: Any, pooling: str, normalize: bool) -> Any:
    """The encoder with pooling on top, in eval mode (what is exported).

    The additive attention mask is made here from ``attention_mask``: transformers 5's own
    mask helpers do not trace (they index a 0-d size), and the embeddings and encoder
    modules take the extended mask directly.
    """
    import torch

    class Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            h = self.model.embeddings(input_ids=input_ids,
                                      token_type_ids=torch.zeros_like(input_ids))
            extended = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) \
                * torch.finfo(h.dtype).min
            h = self.model.encoder(h, attention_mask=extended).last_hidden_state
            return pooled(h, attention_mask, pooling, normalize)

    return Embedder().eval()


def compare(onnx_path: Path, module: Any, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """ONNX Runtime against PyTorch (fp32) on SAMPLE_TEXTS, one padded batch and one by one."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst_abs, worst_cos = 0.0, 1.0
    batches = [list(SAMPLE_TEXTS)] + [[t] for t in SAMPLE_TEXTS]
    for texts in batches:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        feed = {C.ONNX_INPUT_IDS: enc.input_ids.astype(np.int64),
                C.ONNX_ATTENTION_MASK: enc.attention_mask.astype(np.int64)}
        got = session.run([C.ONNX_EMBEDDING], feed)[0].astype(np.float64)
        with torch.no_grad():
            want = module(*(torch.from_numpy(feed[k]) for k in feed)).double().numpy()
        worst_abs = max(worst_abs, float(np.abs(got - want).max()))
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        worst_cos = min(worst_cos, float(cos.min()))
    return {"max_abs_diff": worst_abs, "min_cosine": worst_cos, "samples": len(SAMPLE_TEXTS),
            "onnxruntime": ort.__version__}


def export(args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    import torch
    from transformers import AutoModel, AutoTokenizer

    out = Path(args.out)
    t0 = time.perf_counter()
    model = AutoModel.from_pretrained(args.checkpoint, attn_implementation="eager",
                                      torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    module = make_module(model, args.pooling, args.normalize)
    sample = tokenizer(["hello world", "a second, longer sample text"], padding=True,
                       return_tensors="pt")
    fp32 = out / (ONNX_FILE if args.format != "int8" else "model.fp32.onnx")
    if args.format == "float16":
        fp32 = out / "model.fp32.onnx"
    batch_seq = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        module, (sample.input_ids, sample.attention_mask), str(fp32),
        input_names=[C.ONNX_INPUT_IDS, C.ONNX_ATTENTION_MASK], output_names=[C.ONNX_EMBEDDING],
        dynamic_axes={C.ONNX_INPUT_IDS: batch_seq, C.ONNX_ATTENTION_MASK: batch_seq,
                      C.ONNX_EMBEDDING: {0: "batch"}},
        opset_version=args.opset, dynamo=False, do_constant_folding=True)
    module.eval()  # the exporter hands the module back in training mode (torch 2.13)
    onnx.checker.check_model(str(fp32), full_check=True)
    print(f"exported {fp32.name} in {time.perf_counter() - t0:.1f}s; onnx.checker passed",
          flush=True)
    final = out / ONNX_FILE
    if args.format == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(half, str(final))
        fp32.unlink()
    elif args.format == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per-channel int8 weights of the MatMuls only: per-tensor scales cost MiniLM ~0.1 of
        # cosine with PyTorch; per channel keeps it about 0.98 (and still ~2x faster on CPU).
        quantize_dynamic(str(fp32), str(final), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
        fp32.unlink()
    if args.format != "float32":
        onnx.checker.check_model(str(final), full_check=True)
        print(f"converted to {args.format}; onnx.checker passed", flush=True)
    checks = compare(final, module, tokenizer, args.max_length)
    checks |= {"format": args.format, "opset": args.opset}
    abs_tol, cos_tol = TOLERANCE[args.format]
    print(f"ONNX Runtime vs PyTorch on {checks['samples']} texts: max |diff| "
          f"{checks['max_abs_diff']:.2e}, min cosine {checks['min_cosine']:.6f}", flush=True)
    if checks["max_abs_diff"] > abs_tol or checks["min_cosine"] < cos_tol:
        raise SystemExit(
            f"ONNX Runtime's vectors differ from PyTorch's beyond the {args.format} tolerance "
            f"(max |diff| {checks['max_abs_diff']:.3g} > {abs_tol} or min cosine "
            f"{checks['min_cosine']:.6f} < {cos_tol})")
    info = {"dimension": int(model.config.hidden_size), "pooling": args.pooling,
            "normalize": args.normalize, "max_length": args.max_length,
            "format": args.format, "opset": args.opset, "file": ONNX_FILE,
            "inputs": [C.ONNX_INPUT_IDS, C.ONNX_ATTENTION_MASK], "output": C.ONNX_EMBEDDING}
    (out / EMBEDDING_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out / CHECKS_FILE).write_text(json.dumps(checks, indent=2) + "\n", encoding="utf-8")
    return checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonllm.builders.onnx_export")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=sorted(TOLERANCE), default="float32")
    p.add_argument("--opset", type=int, required=True)
    p.add_argument("--pooling", choices=sorted(set(POOLING_MODES.values())), required=True)
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, required=True)
    p.add_argument("--max-length", type=int, required=True)
    export(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
