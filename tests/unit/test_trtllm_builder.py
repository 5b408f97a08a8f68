"""The trtllm builder: the exact commands it runs, its checks, its cache and its refusal to run.

There is no GPU and no TensorRT-LLM here, so these tests use a RECORDING FAKE: executables
named ``python`` and ``trtllm-build`` (tests/unit/fakes/trtllm_recorder.py) first on PATH,
with ``TRITONLLM_TRTLLM_PYTHON`` pointing at the fake ``python``. They record their argv and
write the files the real tools write, so the builder's output checks, the manifest and the
build cache run for real; only TensorRT-LLM itself is missing. It is the only fake in this
project. Real builds are in tests/gpu/test_trtllm_gpu.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tritonllm.builders import BuildSettings, build, read_manifest
from tritonllm.builders.trtllm import CONVERT_SCRIPT, PYTHON_ENV
from tritonllm.cli import main
from tritonllm.errors import BuildError, ConfigError, EngineUnavailable

FAKES = Path(__file__).parent / "fakes"
WHERE = "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3"


@dataclass
class FakeTools:
    bin: Path
    record: Path

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    @property
    def trtllm_build(self) -> str:
        return str(self.bin / "trtllm-build")

    def calls(self, *, probes: bool = False) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        entries = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [e for e in entries if probes or e["argv"][:1] != ["-c"]]

    def argvs(self) -> list[list[str]]:
        """Recorded commands as the builder spelled them (tool path first)."""
        tool_path = {"python": self.python, "trtllm-build": self.trtllm_build}
        return [[tool_path[c["tool"]], *c["argv"]] for c in self.calls()]


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for tool in ("python", "trtllm-build"):
        exe = bin_dir / tool
        exe.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(FAKES)!r})\n"
            "from trtllm_recorder import main\n"
            f"sys.exit(main({tool!r}))\n"
        )
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv(PYTHON_ENV, str(bin_dir / "python"))
    monkeypatch.setenv("FAKE_TRTLLM_RECORD", str(record))
    for knob in ("FAKE_TRTLLM_VERSION", "FAKE_TRTLLM_IMPORTABLE", "FAKE_TRTLLM_FAIL",
                 "FAKE_TRTLLM_SKIP_RANK", "FAKE_MODELOPT"):
        monkeypatch.delenv(knob, raising=False)
    return FakeTools(bin_dir, record)


def _settings(model: Path, out: Path, **kw: Any) -> BuildSettings:
    return BuildSettings(checkpoint=model, engine="trtllm-legacy", out=out, **kw)


def _convert_argv(fake: FakeTools, model: Path, ckpt: str, *tail: str, dtype: str = "float16",
                  tp: int = 1, pp: int = 1) -> list[str]:
    return [fake.python, str(CONVERT_SCRIPT), "--model-dir", str(model.resolve()),
            "--output-dir", ckpt, "--dtype", dtype, "--tp", str(tp), "--pp", str(pp), *tail]


def _build_argv(fake: FakeTools, ckpt: str, out: Path, *, dtype: str = "float16",
                batch: int = 64, max_in: int = 1023, max_seq: int = 1024, tokens: int = 8192,
                fmha: str = "enable", workers: int = 1) -> list[str]:
    # The builder compiles into a work dir beside `out` and renames it to `out` afterwards.
    return [fake.trtllm_build, "--checkpoint_dir", ckpt, "--output_dir", _work_dir(fake, out),
            "--max_batch_size", str(batch), "--max_input_len", str(max_in),
            "--max_seq_len", str(max_seq), "--max_num_tokens", str(tokens),
            "--gemm_plugin", dtype, "--gpt_attention_plugin", dtype,
            "--remove_input_padding", "enable", "--kv_cache_type", "paged",
            "--context_fmha", fmha, "--use_paged_context_fmha", fmha,
            "--workers", str(workers)]


def _recorded_flag(fake: FakeTools, tool: str, flag: str) -> str:
    (call,) = [c for c in fake.calls() if c["tool"] == tool]
    argv: list[str] = call["argv"]
    return argv[argv.index(flag) + 1]


def _ckpt(fake: FakeTools) -> str:
    return _recorded_flag(fake, "python", "--output-dir")


def _work_dir(fake: FakeTools, out: Path) -> str:
    work = _recorded_flag(fake, "trtllm-build", "--output_dir")
    assert Path(work).parent == out.parent and Path(work).name.startswith(f".{out.name}.building-")
    return work


def _copy_with_config(src: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


# --- the commands -------------------------------------------------------------------------


def test_default_build_is_fp16_with_inflight_batching_flags(
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "engine"
    result = build(_settings(tiny_model, out))

    ckpt = _ckpt(fake_tools)
    assert fake_tools.argvs() == [
        _convert_argv(fake_tools, tiny_model, ckpt, "--model-class", "LLaMAForCausalLM"),
        _build_argv(fake_tools, ckpt, out),
    ]
    # The intermediate checkpoint lived beside the engine dir, never in it, and is gone.
    assert Path(ckpt).parent == out.parent and not Path(ckpt).is_relative_to(out)
    assert not Path(ckpt).exists() and _leftovers(tmp_path) == []
    # Engine files at the root of the engine dir; commands and tool versions in the manifest.
    assert (out / "config.json").is_file() and (out / "rank0.engine").is_file()
    assert not result.cached
    m = read_manifest(out)
    assert m.commands == fake_tools.argvs()
    assert {"config.json", "rank0.engine", "tokenizer/tokenizer.json"} <= set(m.engine_files)
    assert m.tools["tensorrt_llm"] == "0.17.0" and m.tools["nvidia-modelopt"] == "0.47.0"
    assert m.limits.max_input_len == 1023 and m.limits.max_seq_len == 1024
    # The conversion ran offline (the checkpoint is local).
    assert fake_tools.calls()[0]["env"]["HF_HUB_OFFLINE"] == "1"
    engine_cfg = json.loads((out / "config.json").read_text())
    assert engine_cfg["pretrained_config"]["dtype"] == "float16"


def test_bfloat16(tiny_model: Path, tmp_path: Path, fake_tools: FakeTools) -> None:
    out = tmp_path / "engine"
    build(_settings(tiny_model, out, dtype="bfloat16"))
    ckpt = _ckpt(fake_tools)
    assert fake_tools.argvs() == [
        _convert_argv(fake_tools, tiny_model, ckpt, "--model-class", "LLaMAForCausalLM",
                      dtype="bfloat16"),
        _build_argv(fake_tools, ckpt, out, dtype="bfloat16"),
    ]


def test_auto_dtype_follows_a_bfloat16_checkpoint(tiny_model: Path, tmp_path: Path,
                                                  fake_tools: FakeTools) -> None:
    model = _copy_with_config(tiny_model, tmp_path / "bf16-model", torch_dtype="bfloat16",
                              dtype="bfloat16")
    build(_settings(model, tmp_path / "engine"))
    assert _recorded_flag(fake_tools, "python", "--dtype") == "bfloat16"
    assert _recorded_flag(fake_tools, "trtllm-build", "--gemm_plugin") == "bfloat16"


def test_float32_disables_context_fmha(tiny_model: Path, tmp_path: Path,
                                       fake_tools: FakeTools) -> None:
    out = tmp_path / "engine"
    build(_settings(tiny_model, out, dtype="float32"))
    ckpt = _ckpt(fake_tools)
    assert fake_tools.argvs()[1] == _build_argv(fake_tools, ckpt, out, dtype="float32",
                                                fmha="disable")


@pytest.mark.parametrize(("quantization", "canonical"),
                         [("int4_wo", "int4_wo"), ("int4", "int4_wo"), ("int8_wo", "int8_wo"),
                          ("int8", "int8_wo")])
def test_weight_only_converts_with_from_hugging_face(
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools, quantization: str,
        canonical: str) -> None:
    out = tmp_path / "engine"
    build(_settings(tiny_model, out, quantization=quantization))
    ckpt = _ckpt(fake_tools)
    assert fake_tools.argvs() == [
        _convert_argv(fake_tools, tiny_model, ckpt, "--model-class", "LLaMAForCausalLM",
                      "--quantization", canonical),
        _build_argv(fake_tools, ckpt, out),
    ]


def test_int4_awq_calibrates_with_modelopt(tiny_model: Path, tmp_path: Path,
                                           fake_tools: FakeTools,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "engine"
    build(_settings(tiny_model, out, quantization="int4_awq"))
    ckpt = _ckpt(fake_tools)
    # hidden 64 rules out group size 128; 64 divides every linear input (64, 64, 192).
    assert fake_tools.argvs() == [
        _convert_argv(fake_tools, tiny_model, ckpt, "--quantization", "int4_awq",
                      "--group-size", "64", "--calib-dataset", "cnn_dailymail",
                      "--calib-size", "512", "--calib-max-seq-len", "512"),
        _build_argv(fake_tools, ckpt, out),
    ]
    # A hub dataset: the conversion must be allowed online.
    assert fake_tools.calls()[0]["env"]["HF_HUB_OFFLINE"] is None


def test_int4_awq_with_local_calibration_set_and_explicit_group_size(
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = tmp_path / "calib"
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "hello"}\n')
    build(_settings(tiny_model, tmp_path / "engine", quantization="int4_awq", group_size=64,
                    extra={"calib_dataset": str(data), "calib_size": 16}))
    (call,) = [c for c in fake_tools.calls() if c["tool"] == "python"]
    assert call["argv"][-8:] == ["--group-size", "64", "--calib-dataset", str(data.resolve()),
                                 "--calib-size", "16", "--calib-max-seq-len", "512"]
    assert call["env"]["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("quantization", ["fp8", "smoothquant"])
def test_fp8_and_smoothquant_calibrate_without_group_size(
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools, quantization: str) -> None:
    out = tmp_path / "engine"
    build(_settings(tiny_model, out, quantization=quantization))
    ckpt = _ckpt(fake_tools)
    assert fake_tools.argvs() == [
        _convert_argv(fake_tools, tiny_model, ckpt, "--quantization", quantization,
                      "--calib-dataset", "cnn_dailymail", "--calib-size", "512",
                      "--calib-max-seq-len", "512"),
        _build_argv(fake_tools, ckpt, out),
    ]


def test_tp2_pp2_converts_and_builds_four_ranks(tiny_model: Path, tmp_path: Path,
                                                fake_tools: FakeTools) -> None:
    out = tmp_path / "engine"
    build(_settings(tiny_model, out, tp=2, pp=2))
    ckpt = _ckpt(fake_tools)
    assert fake_tools.argvs() == [
        _convert_argv(fake_tools, tiny_model, ckpt, "--model-class", "LLaMAForCausalLM",
                      tp=2, pp=2),
        _build_argv(fake_tools, ckpt, out, workers=4),
    ]
    assert sorted(p.name for p in out.glob("rank*.engine")) == [
        "rank0.engine", "rank1.engine", "rank2.engine", "rank3.engine"]
    mapping = json.loads((out / "config.json").read_text())["pretrained_config"]["mapping"]
    assert mapping == {"world_size": 4, "tp_size": 2, "pp_size": 2}


def test_limits_pass_through(tiny_model: Path, tmp_path: Path, fake_tools: FakeTools) -> None:
    out = tmp_path / "engine"
    result = build(_settings(tiny_model, out, max_batch_size=8, max_input_len=100,
                             max_seq_len=256, max_num_tokens=512))
    ckpt = _ckpt(fake_tools)
    assert fake_tools.argvs()[1] == _build_argv(fake_tools, ckpt, out, batch=8, max_in=100,
                                                max_seq=256, tokens=512)
    lim = result.manifest.limits
    assert (lim.max_batch_size, lim.max_input_len, lim.max_seq_len, lim.max_num_tokens) == (
        8, 100, 256, 512)


def test_cli_build(tiny_model: Path, tmp_path: Path, fake_tools: FakeTools) -> None:
    out = tmp_path / "engine"
    r = CliRunner().invoke(main, ["build", str(tiny_model), "--engine", "trtllm",
                                  "--legacy-engine", "--out", str(out), "--quantization", "int8",
                                  "--max-batch-size", "4"])
    assert r.exit_code == 0, r.output
    assert f"built trtllm-legacy engine in {out}" in r.output
    assert _recorded_flag(fake_tools, "python", "--quantization") == "int8_wo"
    assert _recorded_flag(fake_tools, "trtllm-build", "--max_batch_size") == "4"


# --- the cache --------------------------------------------------------------------------


def test_second_build_is_a_cache_hit(tiny_model: Path, tmp_path: Path,
                                     fake_tools: FakeTools) -> None:
    out = tmp_path / "engine"
    first = build(_settings(tiny_model, out))
    n_calls = len(fake_tools.calls())
    second = build(_settings(tiny_model, out))
    assert second.cached and not first.cached
    assert len(fake_tools.calls()) == n_calls  # nothing converted or built again
    assert second.manifest.cache_key == first.manifest.cache_key

    forced = build(_settings(tiny_model, out, force=True))
    assert not forced.cached and len(fake_tools.calls()) == n_calls + 2


def test_new_tensorrt_llm_version_invalidates_the_cache(
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "engine"
    build(_settings(tiny_model, out))
    monkeypatch.setenv("FAKE_TRTLLM_VERSION", "0.18.0")
    again = build(_settings(tiny_model, out))
    assert not again.cached and again.manifest.tools["tensorrt_llm"] == "0.18.0"


# --- unavailable ------------------------------------------------------------------------


def _assert_one_line_pointing_at_ngc(err: EngineUnavailable) -> str:
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith("engine trtllm-legacy: ")
    assert WHERE in msg and "pip install tensorrt_llm" in msg
    return msg


def test_unavailable_when_nothing_is_on_path(tiny_model: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    with pytest.raises(EngineUnavailable) as exc:
        build(_settings(tiny_model, tmp_path / "engine"))
    msg = _assert_one_line_pointing_at_ngc(exc.value)
    assert "trtllm-build is not on PATH" in msg
    assert not (tmp_path / "engine").exists()


def test_cli_prints_the_unavailable_line(tiny_model: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    r = CliRunner().invoke(main, ["build", str(tiny_model), "--engine", "trtllm", "--legacy-engine",
                                  "--out", str(tmp_path / "engine")])
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: engine trtllm-legacy: ") and WHERE in line
    assert "Traceback" not in r.output


def test_unavailable_when_the_python_lacks_tensorrt_llm(
        tiny_model: Path, tmp_path: Path, fake_tools: FakeTools,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRTLLM_IMPORTABLE", "0")
    with pytest.raises(EngineUnavailable) as exc:
        build(_settings(tiny_model, tmp_path / "engine"))
    msg = _assert_one_line_pointing_at_ngc(exc.value)
    assert f"tensorrt_llm is not installed for {fake_tools.python} (set {PYTHON_ENV}" in msg
    assert fake_tools.calls() == []  # probed, never converted


def test_unavailable_when_trtllm_build_is_missing(tiny_model: Path, tmp_path: Path,
                                                  fake_tools: FakeTools,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_tools.bin / "trtllm-build").unlink()
    monkeypatch.setenv("PATH", str(fake_tools.bin))
    with pytest.raises(EngineUnavailable) as exc:
        build(_settings(tiny_model, tmp_path / "engine"))
    msg = _assert_one_line_pointing_at_ngc(exc.value)
    assert "trtllm-build is not on PATH (tensorrt_llm 0.17.0 is installed" in msg


def test_unavailable_when_the_python_does_not_exist(tiny_model: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PYTHON_ENV, str(tmp_path / "no-such-python"))
    with pytest.raises(EngineUnavailable) as exc:
        build(_settings(tiny_model, tmp_path / "engine"))
    msg = _assert_one_line_pointing_at_ngc(exc.value)
    assert f"{PYTHON_ENV}='{tmp_path / 'no-such-python'}' is not an executable Python" in msg


def test_unavailable_when_tensorrt_llm_is_too_old(tiny_model: Path, tmp_path: Path,
                                                  fake_tools: FakeTools,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRTLLM_VERSION", "0.12.0")
    with pytest.raises(EngineUnavailable) as exc:
        build(_settings(tiny_model, tmp_path / "engine"))
    msg = _assert_one_line_pointing_at_ngc(exc.value)
    assert "tensorrt_llm 0.12.0 is too old (this builder needs 0.13 or newer" in msg


# --- failures during the build ------------------------------------------------------------


def _leftovers(tmp_path: Path) -> list[str]:
    """Hidden build/checkpoint dirs left next to the engine dir."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))


def test_failed_trtllm_build_leaves_nothing_behind(tiny_model: Path, tmp_path: Path,
                                                   fake_tools: FakeTools,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRTLLM_FAIL", "trtllm-build")
    with pytest.raises(BuildError, match="trtllm-build failed with exit code 1") as exc:
        build(_settings(tiny_model, tmp_path / "engine"))
    assert "simulated failure" in str(exc.value)  # the log's tail comes with the error
    assert not (tmp_path / "engine").exists()
    assert _leftovers(tmp_path) == []  # neither the work dir nor the checkpoint dir
    log = tmp_path / "engine.build-failed.log"  # only the full log the error names
    assert f"full log: {log}" in str(exc.value) and "simulated failure" in log.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("engine") and p != log]


def test_failed_conversion_stops_before_trtllm_build(tiny_model: Path, tmp_path: Path,
                                                     fake_tools: FakeTools,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRTLLM_FAIL", "python")
    with pytest.raises(BuildError, match="TensorRT-LLM checkpoint conversion failed"):
        build(_settings(tiny_model, tmp_path / "engine"))
    assert [c["tool"] for c in fake_tools.calls()] == ["python"]
    assert _leftovers(tmp_path) == []


def test_incomplete_conversion_is_caught(tiny_model: Path, tmp_path: Path,
                                         fake_tools: FakeTools,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRTLLM_SKIP_RANK", "1")
    with pytest.raises(BuildError, match=r"conversion finished without writing rank1\.safetensors"):
        build(_settings(tiny_model, tmp_path / "engine", tp=2))
    assert [c["tool"] for c in fake_tools.calls()] == ["python"]


# --- invalid combinations, refused before anything runs -----------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantization": "fp8", "dtype": "float32"},
         "dtype: float32 cannot be combined with --quantization fp8"),
        ({"quantization": "int4", "dtype": "float32"},
         "dtype: float32 cannot be combined with --quantization int4_wo"),
        ({"quantization": "int4_awq", "group_size": 96},
         "group_size: 96 is not supported by TensorRT-LLM's int4_awq kernels; choose 64 or 128"),
        ({"quantization": "int4_awq", "group_size": 128},
         "group_size: 128 must divide every linear layer's input size: hidden size 64, "
         "attention output per rank 64, intermediate size per rank 192"),
        ({"quantization": "int4_awq", "tp": 2},
         "quantization: int4_awq needs a group size (128 or 64) dividing every linear layer's "
         "input size; with tp=2: hidden size 64, attention output per rank 32"),
        ({"quantization": "int4_wo", "tp": 2},
         "quantization: int4_wo needs every linear layer's input size to be a multiple of 64 "
         "for TensorRT-LLM's weight-only kernels; with tp=2: hidden size 64, attention output "
         "per rank 32, intermediate size per rank 96"),
        ({"quantization": "int8_wo", "group_size": 64},
         "group_size: only applies to --quantization int4_awq"),
        ({"group_size": 64}, "group_size: only applies to --quantization int4_awq"),
        ({"tp": 4}, "tp: 4 does not divide the attention heads (4 query, 2 key/value)"),
        ({"pp": 3}, "pp: 3 does not divide the 2 layers"),
        ({"tp": 0}, "tp: must be at least 1"),
        ({"dtype": "float32", "max_num_tokens": 512},
         "max_num_tokens: 512 is below max_input_len (1023); float32 engines have no"),
        ({"quantization": "fp8", "extra": {"calib_dataset": ""}},
         "calib_dataset: expected a dataset name or directory"),
        ({"quantization": "smoothquant", "extra": {"calib_size": 0}},
         "calib_size: expected a positive integer, got 0"),
        ({"quantization": "nvfp4"},
         "quantization: the trtllm-legacy engine cannot do 'nvfp4'; it supports: int8_wo, int4_wo, "
         "int4_awq, fp8, smoothquant"),
        ({"max_seq_len": 2048}, "max_seq_len: 2048 exceeds the model's max_position_embeddings"),
    ],
)
def test_invalid_combinations(tiny_model: Path, tmp_path: Path, fake_tools: FakeTools,
                              options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build(_settings(tiny_model, tmp_path / "engine", **options))
    assert message in str(exc.value)
    assert fake_tools.calls() == []
    assert not (tmp_path / "engine").exists()


@pytest.mark.parametrize(
    ("architecture", "options", "message"),
    [
        ("GPTNeoXForCausalLM", {},
         "architecture: the trtllm-legacy engine cannot build GPTNeoXForCausalLM; it supports: "
         "GPT2LMHeadModel, GemmaForCausalLM, LlamaForCausalLM, MistralForCausalLM, "
         "Phi3ForCausalLM, PhiForCausalLM, Qwen2ForCausalLM"),
        ("PhiForCausalLM", {"quantization": "int8_wo"},
         "quantization: TensorRT-LLM cannot quantize PhiForCausalLM to int8_wo; for this "
         "architecture it supports: none"),
        ("GPT2LMHeadModel", {"quantization": "int4_awq"},
         "quantization: TensorRT-LLM cannot quantize GPT2LMHeadModel to int4_awq; for this "
         "architecture it supports: int8_wo, int4_wo, fp8, smoothquant"),
        ("Phi3ForCausalLM", {"quantization": "int4"},
         "quantization: TensorRT-LLM cannot quantize Phi3ForCausalLM to int4_wo; for this "
         "architecture it supports: fp8, smoothquant"),
    ],
)
def test_architecture_and_family_limits(tiny_model: Path, tmp_path: Path,
                                        fake_tools: FakeTools, architecture: str,
                                        options: dict[str, Any], message: str) -> None:
    model = _copy_with_config(tiny_model, tmp_path / "model", architectures=[architecture])
    with pytest.raises(ConfigError) as exc:
        build(_settings(model, tmp_path / "engine", **options))
    assert message in str(exc.value)
    assert fake_tools.calls() == []


@pytest.mark.parametrize(("architecture", "model_class"),
                         [("MistralForCausalLM", "LLaMAForCausalLM"),
                          ("Qwen2ForCausalLM", "QWenForCausalLM"),
                          ("GemmaForCausalLM", "GemmaForCausalLM"),
                          ("PhiForCausalLM", "PhiForCausalLM")])
def test_family_picks_the_tensorrt_llm_class(tiny_model: Path, tmp_path: Path,
                                             fake_tools: FakeTools, architecture: str,
                                             model_class: str) -> None:
    model = _copy_with_config(tiny_model, tmp_path / "model", architectures=[architecture])
    build(_settings(model, tmp_path / "engine"))
    assert _recorded_flag(fake_tools, "python", "--model-class") == model_class


# --- the conversion script itself (stdlib only; TensorRT-LLM is imported when it runs) ------


def test_convert_script_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    import subprocess

    code = ("import runpy, sys; sys.argv = ['x', '--help'];\n"
            f"try: runpy.run_path({str(CONVERT_SCRIPT)!r}, run_name='__main__')\n"
            "except SystemExit as e: assert e.code == 0, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorrt_llm', 'tritonllm', 'torch', 'transformers')))")
    # -I: isolated, so nothing from this repo or the venv's tritonllm is on sys.path.
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert "--model-class" in out.stdout and out.stdout.strip().endswith("[]")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--quantization", "int4_wo"], "--model-class is required unless --quantization is "
                                        "int4_awq|fp8|smoothquant"),
        (["--model-class", "X", "--tp", "0"], "--tp and --pp must be at least 1"),
        (["--model-class", "X", "--quantization", "int3"], "invalid choice: 'int3'"),
    ],
)
def test_convert_script_rejects_bad_arguments(argv: list[str], error: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tritonllm.builders import trtllm_convert

    with pytest.raises(SystemExit) as exc:
        trtllm_convert.parse_args(["--model-dir", "m", "--output-dir", "o", "--dtype",
                                   "float16", *argv])
    assert exc.value.code == 2
    assert error in capsys.readouterr().err


def test_modelopt_call_keeps_only_the_arguments_this_release_accepts() -> None:
    from tritonllm.builders import trtllm_convert

    args = trtllm_convert.parse_args(["--model-dir", "m", "--output-dir", "o", "--dtype",
                                      "bfloat16", "--tp", "2", "--quantization", "smoothquant"])
    new = ("model_dir", "device", "calib_dataset", "dtype", "qformat", "kv_cache_dtype",
           "calib_size", "batch_size", "calib_max_seq_length", "awq_block_size", "output_dir",
           "tp_size", "pp_size", "cp_size", "seed", "tokenizer_max_seq_length")
    kwargs = trtllm_convert.modelopt_kwargs(args, new)
    assert set(kwargs) == set(new)
    assert (kwargs["qformat"], kwargs["dtype"], kwargs["tp_size"], kwargs["device"]) == (
        "int8_sq", "bfloat16", 2, "cuda")
    old = [n for n in new if n not in ("cp_size", "calib_max_seq_length",
                                       "tokenizer_max_seq_length")] + ["max_seq_length"]
    assert set(trtllm_convert.modelopt_kwargs(args, old)) == set(old)

