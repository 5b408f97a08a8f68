"""ModelOpt post-training quantization: a Hugging Face checkpoint in, a quantized one out.

Run by the ``trtllm`` builder as a child process with the TensorRT-LLM Python (NGC image or a
GPU host with ``nvidia-modelopt``), never imported by tritonllm itself. The output is the
Hugging Face layout ModelOpt's unified export writes (``config.json`` with its
``quantization_config``, ``hf_quant_config.json``, safetensors shards) plus the tokenizer:
what TensorRT-LLM's LLM API (PyTorch backend) loads directly as ``LLM(model=DIR)``.

    python trtllm_quantize.py --model-dir HF --output-dir OUT --qformat fp8 \\
        --dtype bfloat16 --calib-dataset cnn_dailymail --calib-size 512 --calib-max-seq-len 512

``--calib-dataset`` is a Hugging Face dataset name (needs the hub) or a local directory of
``*.txt`` / ``*.jsonl`` files (one text per line; a JSON line's first string field).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: --qformat → the ModelOpt config constant (modelopt.torch.quantization, 0.46 / 0.47).
QFORMAT_CONFIGS = {
    "fp8": "FP8_DEFAULT_CFG",
    "nvfp4": "NVFP4_DEFAULT_CFG",
    "int4_awq": "INT4_AWQ_CFG",
    "w4a8_awq": "W4A8_AWQ_BETA_CFG",
}


def calibration_texts(dataset: str, size: int) -> list[str]:
    """``size`` texts from a local folder of .txt / .jsonl files, or a hub dataset."""
    local = Path(dataset)
    texts: list[str] = []
    if local.is_dir():
        for f in sorted(local.rglob("*")):
            if f.suffix not in (".txt", ".jsonl"):
                continue
            for line in f.read_text(encoding="utf-8").splitlines():
                if f.suffix == ".jsonl" and line.strip():
                    row = json.loads(line)
                    line = next((v for v in row.values() if isinstance(v, str)), "")
                if line.strip():
                    texts.append(line)
                if len(texts) >= size:
                    return texts
        if not texts:
            raise SystemExit(f"--calib-dataset {dataset}: no text in its .txt / .jsonl files")
        return texts
    import datasets

    if dataset == "cnn_dailymail":
        rows: Any = datasets.load_dataset(dataset, "3.0.0", split="train")
        return [str(t) for t in rows["article"][:size]]
    rows = datasets.load_dataset(dataset, split="train")
    column = next(c for c, f in rows.features.items() if getattr(f, "dtype", "") == "string")
    return [str(t) for t in rows[column][:size]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--qformat", required=True, choices=sorted(QFORMAT_CONFIGS))
    p.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16"])
    p.add_argument("--calib-dataset", required=True)
    p.add_argument("--calib-size", type=int, default=512)
    p.add_argument("--calib-max-seq-len", type=int, default=512)
    p.add_argument("--trust-remote-code", action="store_true")
    a = p.parse_args(argv)

    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export import export_hf_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.model_dir, trust_remote_code=a.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        a.model_dir, dtype=getattr(torch, a.dtype), device_map="cuda",
        trust_remote_code=a.trust_remote_code).eval()
    texts = calibration_texts(a.calib_dataset, a.calib_size)
    print(f"calibrating {a.qformat} on {len(texts)} texts", flush=True)

    def forward_loop(m: Any) -> None:
        for i, text in enumerate(texts):
            ids = tok(text, return_tensors="pt", truncation=True,
                      max_length=a.calib_max_seq_len).input_ids.to("cuda")
            with torch.no_grad():
                m(ids)
            if (i + 1) % 64 == 0:
                print(f"calibrated {i + 1}/{len(texts)}", flush=True)

    mtq.quantize(model, getattr(mtq, QFORMAT_CONFIGS[a.qformat]), forward_loop)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        export_hf_checkpoint(model, export_dir=str(out))
    tok.save_pretrained(str(out))
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
