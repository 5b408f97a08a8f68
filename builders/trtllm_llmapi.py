"""GPU engine, current path: a deployment for TensorRT-LLM's LLM API (PyTorch backend).

Since TensorRT-LLM removed its TensorRT-engine path, nothing is compiled ahead of time: NVIDIA's
llmapi Triton model loads a Hugging Face checkpoint with ``tensorrt_llm.LLM(**model.yaml)`` when
the server starts. What ``tritonllm build --engine trtllm`` makes is everything that load needs,
checked here rather than on the GPU:

* ``checkpoint/``: the checkpoint the LLM API loads. Unquantized, a copy of the source's weights,
  config and tokenizer (the engine directory is self-contained, as every engine's is). With
  ``--quantization fp8 | nvfp4 | int4_awq | w4a8_awq``, the quantized Hugging Face checkpoint
  that NVIDIA ModelOpt's post-training quantization exports
  (``$TRITONLLM_TRTLLM_PYTHON builders/trtllm_quantize.py``, a child process on the GPU host,
  calibrated on ``settings.extra["calib_dataset"]``; recorded in the manifest).
* ``llm_args.json``: the ``LLM()`` arguments (parallel sizes, batch and token limits, KV cache,
  chunked prefill, dtype), every key checked against the pinned release
  (:mod:`tritonllm.trtllm_release`); ``tritonllm repo`` writes them into ``model.yaml``.

So an unquantized build runs on any host (CI included); a quantized one needs ModelOpt and a
GPU. The previous path, TensorRT engines from ``trtllm-build``, is the ``trtllm-legacy`` engine
(``tritonllm build --engine trtllm --legacy-engine``), for images up to
:data:`~tritonllm.trtllm_release.LEGACY_LAST_IMAGE`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

from tritonllm.builders.base import EngineBuilder, Progress, register, run_logged
from tritonllm.builders.checkpoint import CHAT_TEMPLATE_FILES, CheckpointInfo
from tritonllm.builders.manifest import EngineLimits
from tritonllm.builders.settings import BuildSettings
from tritonllm.builders.trtllm import (
    CALIB_MAX_SEQ_LEN,
    PYTHON_ENV,
    TOOL_PACKAGES,
    WHERE,
    calibration,
    probe,
    resolve_dtype,
    trtllm_python,
)
from tritonllm.errors import BuildError, ConfigError, EngineUnavailable
from tritonllm.trtllm_release import BACKEND, TRTLLM_RELEASE, check_llm_args

QUANTIZE_SCRIPT = Path(__file__).with_name("trtllm_quantize.py")
CHECKPOINT_DIR = "checkpoint"
LLM_ARGS_FILE = "llm_args.json"
#: ModelOpt formats the pinned release's PyTorch backend loads (``hf_quant_config.json``
#: quant_algo FP8, NVFP4, W4A16_AWQ, W4A8_AWQ). nvfp4 needs a Blackwell GPU, fp8 Ada or
#: Hopper, the AWQ formats Ada or Hopper (Ampere: int4_awq only).
QUANTIZATIONS = ("fp8", "nvfp4", "int4_awq", "w4a8_awq")
#: Architectures of ours that the pinned release's PyTorch backend runs (its supported-models
#: list); GPT-2, GPT-NeoX, Phi-1/2 and Gemma 1 are only in the legacy TensorRT path.
ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                           "Phi3ForCausalLM"})
#: Checkpoint files copied beside the weights (the tokenizer's come from CheckpointInfo).
_CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer_config.json",
                 "special_tokens_map.json", "merges.txt", "model.safetensors.index.json",
                 *CHAT_TEMPLATE_FILES)


def llm_args(settings: BuildSettings, info: CheckpointInfo,
             limits: EngineLimits) -> dict[str, Any]:
    """The ``LLM()`` arguments of this build (``model`` relative to the engine dir; the
    renderer makes it the path the server sees)."""
    args: dict[str, Any] = {
        "model": CHECKPOINT_DIR,
        "backend": BACKEND,
        "tensor_parallel_size": settings.tp,
        "pipeline_parallel_size": settings.pp,
        "max_batch_size": limits.max_batch_size,
        "max_num_tokens": limits.max_num_tokens,
        "max_input_len": limits.max_input_len,
        "max_seq_len": limits.max_seq_len,
        "dtype": resolve_dtype(settings, info),
        "trust_remote_code": settings.trust_remote_code,
        "enable_chunked_prefill": limits.max_num_tokens < limits.max_seq_len,
    }
    if settings.ep > 1:
        args["moe_expert_parallel_size"] = settings.ep
    check_llm_args(args, "llm_args")
    return args


@register
class TrtllmLLMAPIBuilder(EngineBuilder):
    name = "trtllm"
    description = (f"TensorRT-LLM {TRTLLM_RELEASE} LLM API deployment (NVIDIA GPU; NGC "
                   "tritonserver:*-trtllm-python-py3, PyTorch backend)")
    dtypes: ClassVar[tuple[str, ...]] = ("auto", "float16", "bfloat16")
    quantizations: ClassVar[tuple[str, ...]] = QUANTIZATIONS
    architectures: ClassVar[frozenset[str]] = ARCHITECTURES
    parallel = True

    def tool_versions(self) -> dict[str, str]:
        versions = {"tensorrt_llm (pinned)": TRTLLM_RELEASE}
        python = trtllm_python()
        found = probe(python) if python is not None else None
        versions.update(found.versions if found is not None
                        else dict.fromkeys(TOOL_PACKAGES, "absent"))
        return versions

    def ensure_available(self) -> None:
        """An unquantized deployment needs no tool; quantizing needs the TensorRT-LLM Python
        with ModelOpt (``$TRITONLLM_TRTLLM_PYTHON``) and a GPU."""

    def _quantizer_python(self) -> str:
        python = trtllm_python()
        if python is None:
            raise EngineUnavailable(f"engine trtllm: {PYTHON_ENV} is not an executable Python; "
                                    f"quantizing needs NVIDIA ModelOpt on a GPU host; {WHERE}")
        found = probe(python)
        if found is None or found.versions.get("nvidia-modelopt", "absent") == "absent":
            raise EngineUnavailable(
                f"engine trtllm: nvidia-modelopt is not installed for {python} (set "
                f"{PYTHON_ENV} to the Python that has it); quantizing runs ModelOpt on a GPU; "
                f"{WHERE}")
        return python

    def check(self, settings: BuildSettings, info: CheckpointInfo) -> EngineLimits:
        limits = super().check(settings, info)
        if settings.ep > 1 and settings.ep > settings.tp:
            raise ConfigError(f"ep: {settings.ep} must be at most tp ({settings.tp}); the LLM "
                              "API shares the tensor-parallel GPUs among the experts")
        if settings.group_size is not None:
            raise ConfigError("group_size: ModelOpt picks the AWQ group size (128); it is not "
                              "an option of the trtllm engine")
        if settings.quantization is not None:
            calibration(settings)
        llm_args(settings, info, limits)
        return limits

    def quantize_command(self, settings: BuildSettings, info: CheckpointInfo, dtype: str,
                         out: Path, python: str) -> list[str]:
        dataset, size = calibration(settings)
        seq = min(CALIB_MAX_SEQ_LEN, info.max_position_embeddings)
        argv = [python, str(QUANTIZE_SCRIPT), "--model-dir", str(info.path), "--output-dir",
                str(out), "--qformat", str(settings.quantization),
                "--dtype", "bfloat16" if dtype == "auto" else dtype,
                "--calib-dataset", dataset, "--calib-size", str(size),
                "--calib-max-seq-len", str(seq)]
        return argv + (["--trust-remote-code"] if settings.trust_remote_code else [])

    def build(self, settings: BuildSettings, info: CheckpointInfo, limits: EngineLimits,
              workdir: Path, log: Path, progress: Progress) -> list[list[str]]:
        ckpt = workdir / CHECKPOINT_DIR
        args = llm_args(settings, info, limits)
        commands: list[list[str]] = []
        if settings.quantization is not None:
            python = self._quantizer_python()
            argv = self.quantize_command(settings, info, args["dtype"], ckpt, python)
            dataset = calibration(settings)[0]
            progress(f"quantizing with ModelOpt ({settings.quantization}; calibrating on "
                     f"{dataset})")
            env = {"TOKENIZERS_PARALLELISM": "false"}
            if Path(dataset).is_dir():
                env["HF_HUB_OFFLINE"] = "1"
            run_logged(argv, log, env=env, what="ModelOpt quantization")
            missing = [n for n in ("config.json", "hf_quant_config.json")
                       if not (ckpt / n).is_file()]
            if missing or not any(ckpt.glob("*.safetensors")):
                raise BuildError(f"ModelOpt quantization finished without writing "
                                 f"{', '.join(missing) or '*.safetensors'} in {ckpt} (log: {log})")
            commands.append(argv)
        else:
            progress(f"copying the checkpoint for the LLM API ({args['dtype']}, tp "
                     f"{settings.tp} × pp {settings.pp})")
            ckpt.mkdir(parents=True)
            for name in (*info.files, *_CONFIG_FILES, *info.tokenizer_files):
                src = info.path / name
                if src.is_file() and not (ckpt / name).exists():
                    (ckpt / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, ckpt / name)
        (workdir / LLM_ARGS_FILE).write_text(json.dumps(args, indent=2, sort_keys=True) + "\n",
                                             encoding="utf-8")
        progress("checked the LLM() arguments against TensorRT-LLM " + TRTLLM_RELEASE)
        return commands


def read_llm_args(engine_dir: Path) -> dict[str, Any]:
    """The ``LLM()`` arguments a ``trtllm`` build wrote (RepositoryError-free: ConfigError)."""
    path = Path(engine_dir) / LLM_ARGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the LLM() arguments ({e}); rebuild with "
                          "--force") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    check_llm_args(data, str(path))
    return data


__all__ = ["ARCHITECTURES", "CHECKPOINT_DIR", "LLM_ARGS_FILE", "QUANTIZATIONS",
           "QUANTIZE_SCRIPT", "TrtllmLLMAPIBuilder", "llm_args", "read_llm_args"]
