"""The real CPU builder: optimum-intel export, manifest, cache, and HF-equivalent greedy output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonllm.builders import BuildSettings, build, read_manifest

pytestmark = pytest.mark.integration

PROMPTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog",
    "café 日本語 🙂 model server request token stream batch engine triton",
    "paged " * 30,
]


def test_manifest_records_the_build(cpu_engine: Path, tiny_model: Path) -> None:
    m = read_manifest(cpu_engine)
    assert m.engine == "cpu"
    assert m.checkpoint["architecture"] == "LlamaForCausalLM"
    assert set(m.checkpoint["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert m.tools["openvino"] != "absent" and m.tools["optimum-intel"] != "absent"
    assert m.limits.max_seq_len == 1024 and m.limits.max_input_len == 1023
    assert m.limits.vocab_size == 1000 and m.limits.eos_token_ids == (2,)
    assert m.commands[0][1:4] == ["export", "openvino", "--model"]
    assert "--weight-format" in m.commands[0]
    assert m.timings["build_s"] > 0
    for name in ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml",
                 "openvino_detokenizer.xml", "tokenizer/tokenizer.json"):
        assert name in m.engine_files, name


def test_rebuild_is_cache_hit_and_changes_rebuild(tiny_model: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model, ckpt)
    settings = BuildSettings(checkpoint=ckpt, engine="cpu", out=tmp_path / "e")
    first = build(settings)
    assert not first.cached

    again = build(settings)
    assert again.cached and again.manifest.cache_key == first.manifest.cache_key

    # A changed input file rebuilds, and the manifest follows the change.
    gen = json.loads((ckpt / "generation_config.json").read_text())
    gen["eos_token_id"] = [2, 3]
    (ckpt / "generation_config.json").write_text(json.dumps(gen))
    changed = build(settings)
    assert not changed.cached and changed.manifest.limits.eos_token_ids == (2, 3)

    # A changed build argument rebuilds; so does --force; so does a damaged engine.
    assert not build(BuildSettings(checkpoint=ckpt, engine="cpu", out=tmp_path / "e",
                                   max_batch_size=8)).cached
    assert not build(BuildSettings(checkpoint=ckpt, engine="cpu", out=tmp_path / "e",
                                   max_batch_size=8, force=True)).cached
    (tmp_path / "e" / "openvino_model.bin").write_bytes(b"")
    assert not build(BuildSettings(checkpoint=ckpt, engine="cpu", out=tmp_path / "e",
                                   max_batch_size=8)).cached


def test_int8_weight_compression(tiny_model: Path, tmp_path: Path) -> None:
    res = build(BuildSettings(checkpoint=tiny_model, engine="cpu", out=tmp_path / "q",
                              quantization="int8"))
    argv = res.manifest.commands[0]
    assert argv[argv.index("--weight-format") + 1] == "int8"
    fp32 = (tiny_model / "model.safetensors").stat().st_size
    assert (tmp_path / "q" / "openvino_model.bin").stat().st_size < fp32 * 0.6


def _hf_greedy(model_dir: Path, prompt_ids: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False)
    return [int(t) for t in out[0, len(prompt_ids):]]


def test_greedy_output_equals_transformers(cpu_engine: Path, tiny_model: Path) -> None:
    import openvino as ov
    import openvino_genai as ovg
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    sched = ovg.SchedulerConfig()
    sched.cache_size = 1
    sched.max_num_seqs = 8
    pipe = ovg.ContinuousBatchingPipeline(
        str(cpu_engine), sched, "CPU",
        {"KV_CACHE_PRECISION": ov.Type.f32, "INFERENCE_PRECISION_HINT": ov.Type.f32},
    )
    ov_tok = ovg.Tokenizer(str(cpu_engine))
    handles = []
    for i, prompt in enumerate(PROMPTS):
        ids = tok(prompt).input_ids
        # The OpenVINO tokenizer model the builder converted must agree with the HF one.
        assert [int(t) for t in ov_tok.encode(prompt).input_ids.data[0]] == ids
        cfg = ovg.GenerationConfig()
        cfg.max_new_tokens = 32
        cfg.eos_token_id = 2
        import numpy as np

        handles.append((ids, pipe.add_request(i, ov.Tensor(np.array([ids], dtype=np.int64)), cfg)))
    while pipe.has_non_finished_requests():
        pipe.step()
    lengths = set()
    for ids, handle in handles:
        got = [int(t) for t in handle.read_all()[0].generated_ids]
        want = _hf_greedy(tiny_model, ids, 32)
        assert got == want
        lengths.add(len(ids))
    assert len(lengths) == len(PROMPTS)


def test_cli_build_then_cache_hit(tiny_model: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tritonllm", "build", str(tiny_model), "--engine", "cpu",
           "--out", str(tmp_path / "e")]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "built cpu engine" in first.stdout
    assert "exporting to OpenVINO IR" in first.stderr  # progress is shown
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "up to date" in second.stdout and "cache hit" in second.stdout
