"""GPU engine, legacy path (``trtllm-legacy``): TensorRT engines, Triton's ``tensorrtllm`` backend.

TensorRT-LLM removed this path after its 1.2.1 release; it is kept for pinned images up to
:data:`~tritonllm.trtllm_release.LEGACY_LAST_IMAGE` and chosen explicitly
(``tritonllm build --engine trtllm --legacy-engine``). The current path is the ``trtllm``
engine (tritonllm.builders.trtllm_llmapi: an LLM API deployment, PyTorch backend).

Where it runs: inside NGC's ``nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3`` image, or
on a host with an NVIDIA GPU and ``pip install tensorrt_llm``. It needs a TensorRT-LLM with the
TensorRT engine flow: 0.13 or newer (``trtllm-build --kv_cache_type``), from a release that
still ships ``trtllm-build`` (later releases dropped the TensorRT backend and that command).

Two child processes, both recorded in the manifest as argv lists:

1. ``$TRITONLLM_TRTLLM_PYTHON trtllm_convert.py ...`` (default: this interpreter) turns the
   Hugging Face checkpoint into a TensorRT-LLM checkpoint (``config.json`` +
   ``rank<N>.safetensors`` per rank of tp×pp) in a temporary directory beside the engine
   directory, never inside it. Unquantized and weight-only builds use the family's
   ``from_hugging_face`` per rank; int4_awq / fp8 / smoothquant calibrate with ModelOpt
   (``--calib-dataset``: ``settings.extra["calib_dataset"]``, default ``cnn_dailymail``,
   which needs the Hugging Face hub; point it at a local dataset dir offline).
2. ``trtllm-build`` compiles one engine per rank into the work directory: ``config.json`` +
   ``rank<N>.engine`` at its root, with the GEMM and GPT-attention plugins in the model dtype,
   removed input padding, a paged KV cache and (context FMHA + paged context FMHA) so Triton
   can batch in flight, chunk long prompts and reuse KV blocks.

``int8`` / ``int4`` are accepted as the weight-only ``int8_wo`` / ``int4_wo``. Weight-only is
per channel in TensorRT-LLM; int4_awq is per group (64 or 128, the sizes its kernels run).
fp8 needs an Ada or Hopper GPU at build and run time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tritonllm.builders.base import EngineBuilder, Progress, package_versions, register, run_logged
from tritonllm.builders.checkpoint import SUPPORTED_ARCHITECTURES, CheckpointInfo
from tritonllm.builders.manifest import EngineLimits
from tritonllm.builders.settings import BuildSettings
from tritonllm.errors import BuildError, ConfigError, EngineUnavailable
from tritonllm.trtllm_release import LEGACY_LAST_IMAGE

PYTHON_ENV = "TRITONLLM_TRTLLM_PYTHON"
CONVERT_SCRIPT = Path(__file__).with_name("trtllm_convert.py")
TOOL_PACKAGES = ("tensorrt_llm", "tensorrt", "nvidia-modelopt", "transformers", "torch")
MIN_VERSION = (0, 13)
WHERE = ("TensorRT-LLM engines are built inside NGC's "
         "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3 image, or on a host with an "
         "NVIDIA GPU and `pip install tensorrt_llm`")

QUANT_ALIASES = {"int8": "int8_wo", "int4": "int4_wo"}
WEIGHT_ONLY = ("int8_wo", "int4_wo")
CALIBRATED = ("int4_awq", "fp8", "smoothquant")
ALL_QUANTIZATIONS = (*WEIGHT_ONLY, *CALIBRATED)
AWQ_GROUP_SIZES = (128, 64)  # TensorRT-LLM's fine-grained int4 kernels run these only
WEIGHT_ONLY_ALIGN = 64  # mixed-GEMM weight interleaving wants in-features % 64 (pre-Hopper)
DEFAULT_CALIB_DATASET = "cnn_dailymail"
DEFAULT_CALIB_SIZE = 512
CALIB_MAX_SEQ_LEN = 512


@dataclass(frozen=True)
class Family:
    """How TensorRT-LLM converts one checkpoint family, and what it can quantize it to.

    ``model_class`` is the ``tensorrt_llm.models`` class whose ``from_hugging_face`` converts
    it; ``quantizations`` follows NVIDIA's support matrix (docs ``reference/precision.md`` and
    the per-model example READMEs).
    """

    model_class: str
    quantizations: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "llama": Family("LLaMAForCausalLM", ALL_QUANTIZATIONS),
    "qwen": Family("QWenForCausalLM", ALL_QUANTIZATIONS),
    "gemma": Family("GemmaForCausalLM", ALL_QUANTIZATIONS),
    "gpt2": Family("GPTForCausalLM", ("int8_wo", "int4_wo", "fp8", "smoothquant")),
    "phi3": Family("Phi3ForCausalLM", ("fp8", "smoothquant")),
    "phi": Family("PhiForCausalLM", ()),
    # gptneox is missing on purpose: tensorrt_llm.models.GPTNeoXForCausalLM has no
    # from_hugging_face, only a script in NVIDIA's examples that pip installs do not carry.
}


@dataclass(frozen=True)
class Probe:
    """What the TensorRT-LLM Python reports about itself (metadata only, nothing imported)."""

    importable: bool
    versions: dict[str, str]


# Run with the TensorRT-LLM Python: find_spec locates without importing, metadata reads
# dist-info; a few ms instead of the ~10 s `import tensorrt_llm` takes.
_PROBE_CODE = (
    "import importlib.metadata as m, importlib.util as u, json\n"
    "def v(n):\n"
    "    try:\n"
    "        return m.version(n)\n"
    "    except m.PackageNotFoundError:\n"
    "        return 'absent'\n"
    f"print(json.dumps({{'importable': u.find_spec('tensorrt_llm') is not None, "
    f"'versions': {{n: v(n) for n in {list(TOOL_PACKAGES)!r}}}}}))\n"
)


def trtllm_python() -> str | None:
    """The interpreter that runs the conversion: ``$TRITONLLM_TRTLLM_PYTHON`` or this one."""
    raw = os.environ.get(PYTHON_ENV) or sys.executable
    found = shutil.which(raw)
    return str(Path(found).absolute()) if found else None


def trtllm_build(python: str | None) -> str | None:
    """``trtllm-build`` beside the TensorRT-LLM Python (an unactivated venv), else on PATH."""
    if python is not None:
        beside = Path(python).parent / "trtllm-build"
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("trtllm-build")


def probe(python: str) -> Probe | None:
    """Ask ``python`` whether it has tensorrt_llm and which tool versions; None if it can't say."""
    # Same interpreter path (not resolved: a venv's python is a symlink to a base Python
    # that sees other packages): answer in-process.
    if python == str(Path(sys.executable).absolute()):
        import importlib.util

        return Probe(importlib.util.find_spec("tensorrt_llm") is not None,
                     package_versions(*TOOL_PACKAGES))
    try:
        proc = subprocess.run([python, "-c", _PROBE_CODE], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120, check=False)
        data = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("versions"), dict):
        return None
    versions = {n: str(data["versions"].get(n, "absent")) for n in TOOL_PACKAGES}
    return Probe(bool(data.get("importable")), versions)


def _version_tuple(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def canonical(settings: BuildSettings) -> BuildSettings:
    """The settings with ``int8`` / ``int4`` spelled as the weight-only names they stand for."""
    q = settings.quantization
    if q in QUANT_ALIASES:
        return dataclasses.replace(settings, quantization=QUANT_ALIASES[q])
    return settings


def resolve_dtype(settings: BuildSettings, info: CheckpointInfo) -> str:
    """``auto`` → bfloat16 when the checkpoint says so, else float16."""
    if settings.dtype != "auto":
        return str(settings.dtype)
    source = info.config.get("torch_dtype") or info.config.get("dtype")
    return "bfloat16" if source == "bfloat16" else "float16"


def linear_in_features(info: CheckpointInfo, tp: int) -> dict[str, int]:
    """Input width of each kind of linear layer on one tensor-parallel rank.

    Column-parallel layers (qkv, gate/up) read the whole hidden state; row-parallel ones
    (attention output, MLP down) read their 1/tp share.
    """
    head_dim = info.config.get("head_dim")
    if not isinstance(head_dim, int) or head_dim <= 0:
        head_dim = info.hidden_size // info.num_heads
    return {
        "hidden size": info.hidden_size,
        "attention output per rank": info.num_heads * head_dim // tp,
        "intermediate size per rank": info.intermediate_size // tp,
    }


def _describe(dims: dict[str, int]) -> str:
    return ", ".join(f"{name} {size}" for name, size in dims.items())


def calibration(settings: BuildSettings) -> tuple[str, int]:
    """Calibration dataset and sample count for ModelOpt, from ``settings.extra``."""
    dataset = settings.extra.get("calib_dataset", DEFAULT_CALIB_DATASET)
    size = settings.extra.get("calib_size", DEFAULT_CALIB_SIZE)
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"calib_dataset: expected a dataset name or directory, got {dataset!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"calib_size: expected a positive integer, got {size!r}")
    local = Path(dataset).expanduser()
    return (str(local.resolve()) if local.is_dir() else dataset), size


@register
class TrtllmBuilder(EngineBuilder):
    name = "trtllm-legacy"
    description = ("TensorRT-LLM TensorRT engines, trtllm-build (legacy; NGC images up to "
                   f"{LEGACY_LAST_IMAGE.rsplit(':', 1)[-1]})")
    dtypes: ClassVar[tuple[str, ...]] = ("auto", "float16", "bfloat16", "float32")
    quantizations: ClassVar[tuple[str, ...]] = ALL_QUANTIZATIONS
    architectures: ClassVar[frozenset[str]] = frozenset(
        arch for arch, family in SUPPORTED_ARCHITECTURES.items() if family in FAMILIES)
    parallel = True

    def tool_versions(self) -> dict[str, str]:
        python = trtllm_python()
        found = probe(python) if python is not None else None
        return found.versions if found is not None else dict.fromkeys(TOOL_PACKAGES, "absent")

    def ensure_available(self) -> None:
        raw = os.environ.get(PYTHON_ENV)
        python = trtllm_python()
        if python is None:
            raise EngineUnavailable(
                f"engine trtllm-legacy: {PYTHON_ENV}={raw!r} is not an executable Python; {WHERE}")
        found = probe(python)
        build_tool = trtllm_build(python)
        if found is None or not found.importable:
            missing = f"tensorrt_llm is not installed for {python}"
            if build_tool is None:
                raise EngineUnavailable(
                    f"engine trtllm-legacy: {missing} and trtllm-build is not on PATH; {WHERE}")
            raise EngineUnavailable(f"engine trtllm-legacy: {missing} (set {PYTHON_ENV} to the "
                                    f"Python that has it); {WHERE}")
        version = found.versions.get("tensorrt_llm", "absent")
        if build_tool is None:
            raise EngineUnavailable(
                f"engine trtllm-legacy: trtllm-build is not on PATH (tensorrt_llm {version} is "
                f"installed for {python}; TensorRT-LLM after 1.2.1 no longer ships it: use "
                f"an image up to {LEGACY_LAST_IMAGE}, or the current path, --engine trtllm "
                f"without --legacy-engine); {WHERE}")
        parsed = _version_tuple(version)
        if parsed is not None and parsed < MIN_VERSION:
            raise EngineUnavailable(
                f"engine trtllm-legacy: tensorrt_llm {version} is too old (this builder needs "
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer for trtllm-build --kv_cache_type); "
                f"{WHERE}")

    def check(self, settings: BuildSettings, info: CheckpointInfo) -> EngineLimits:
        settings = canonical(settings)
        limits = super().check(settings, info)
        family = FAMILIES[info.family]
        q = settings.quantization
        if q is not None and q not in family.quantizations:
            raise ConfigError(
                f"quantization: TensorRT-LLM cannot quantize {info.architecture} to {q}; for "
                f"this architecture it supports: {', '.join(family.quantizations) or 'none'}")
        if q is not None and settings.dtype == "float32":
            raise ConfigError(
                f"dtype: float32 cannot be combined with --quantization {q}; quantized "
                "TensorRT-LLM engines compute in float16 or bfloat16 (use --dtype auto, "
                "float16 or bfloat16)")
        if info.intermediate_size % settings.tp:
            raise ConfigError(f"tp: {settings.tp} does not divide the MLP intermediate size "
                              f"({info.intermediate_size})")
        if q == "int4_awq":
            self.group_size(settings, info)
        elif settings.group_size is not None:
            raise ConfigError("group_size: only applies to --quantization int4_awq "
                              "(TensorRT-LLM's int8_wo / int4_wo are per channel)")
        if q in WEIGHT_ONLY:
            dims = linear_in_features(info, settings.tp)
            if any(d % WEIGHT_ONLY_ALIGN for d in dims.values()):
                raise ConfigError(
                    f"quantization: {q} needs every linear layer's input size to be a multiple "
                    f"of {WEIGHT_ONLY_ALIGN} for TensorRT-LLM's weight-only kernels; with "
                    f"tp={settings.tp}: {_describe(dims)}")
        if q in CALIBRATED:
            calibration(settings)
        fp32 = resolve_dtype(settings, info) == "float32"
        if fp32 and limits.max_num_tokens < limits.max_input_len:
            raise ConfigError(
                f"max_num_tokens: {limits.max_num_tokens} is below max_input_len "
                f"({limits.max_input_len}); float32 engines have no (paged) context FMHA, so "
                "prompts cannot be chunked")
        return limits

    @staticmethod
    def group_size(settings: BuildSettings, info: CheckpointInfo) -> int:
        """int4_awq group size: the requested one, else the largest kernel size that fits."""
        dims = linear_in_features(info, settings.tp)
        g = settings.group_size
        if g is not None:
            if g not in AWQ_GROUP_SIZES:
                raise ConfigError(
                    f"group_size: {g} is not supported by TensorRT-LLM's int4_awq kernels; "
                    f"choose {' or '.join(map(str, sorted(AWQ_GROUP_SIZES)))}")
            if any(d % g for d in dims.values()):
                raise ConfigError(f"group_size: {g} must divide every linear layer's input "
                                  f"size: {_describe(dims)}")
            return int(g)
        for size in AWQ_GROUP_SIZES:
            if all(d % size == 0 for d in dims.values()):
                return size
        raise ConfigError(
            f"quantization: int4_awq needs a group size ({' or '.join(map(str, AWQ_GROUP_SIZES))}) "
            f"dividing every linear layer's input size; with tp={settings.tp}: {_describe(dims)}")

    def convert_command(self, settings: BuildSettings, info: CheckpointInfo, dtype: str,
                        checkpoint_dir: Path, python: str) -> list[str]:
        argv = [python, str(CONVERT_SCRIPT), "--model-dir", str(info.path),
                "--output-dir", str(checkpoint_dir), "--dtype", dtype,
                "--tp", str(settings.tp), "--pp", str(settings.pp)]
        q = settings.quantization
        if q in CALIBRATED:
            dataset, size = calibration(settings)
            argv += ["--quantization", q]
            if q == "int4_awq":
                argv += ["--group-size", str(self.group_size(settings, info))]
            seq = min(CALIB_MAX_SEQ_LEN, info.max_position_embeddings)
            return [*argv, "--calib-dataset", dataset, "--calib-size", str(size),
                    "--calib-max-seq-len", str(seq)]
        argv += ["--model-class", FAMILIES[info.family].model_class]
        return argv + (["--quantization", q] if q is not None else [])

    def build_command(self, settings: BuildSettings, limits: EngineLimits, dtype: str,
                      checkpoint_dir: Path, out: Path, tool: str) -> list[str]:
        # float32 has no fused context attention; everything else gets it, paged, which is
        # what in-flight batching with chunked prompts and KV-block reuse needs.
        fmha = "disable" if dtype == "float32" else "enable"
        return [
            tool,
            "--checkpoint_dir", str(checkpoint_dir),
            "--output_dir", str(out),
            "--max_batch_size", str(limits.max_batch_size),
            "--max_input_len", str(limits.max_input_len),
            "--max_seq_len", str(limits.max_seq_len),
            "--max_num_tokens", str(limits.max_num_tokens),
            "--gemm_plugin", dtype,
            "--gpt_attention_plugin", dtype,
            "--remove_input_padding", "enable",
            "--kv_cache_type", "paged",
            "--context_fmha", fmha,
            "--use_paged_context_fmha", fmha,
            "--workers", str(settings.tp * settings.pp),
        ]

    def build(self, settings: BuildSettings, info: CheckpointInfo, limits: EngineLimits,
              workdir: Path, log: Path, progress: Progress) -> list[list[str]]:
        settings = canonical(settings)
        python = trtllm_python()
        tool = trtllm_build(python)
        if python is None or tool is None:  # ensure_available ran; the host changed since
            raise EngineUnavailable(
                f"engine trtllm-legacy: TensorRT-LLM disappeared mid-build; {WHERE}")
        dtype = resolve_dtype(settings, info)
        ranks = settings.tp * settings.pp
        q = settings.quantization
        ckpt = Path(tempfile.mkdtemp(prefix=f"{workdir.name}.checkpoint-", dir=workdir.parent))
        try:
            convert = self.convert_command(settings, info, dtype, ckpt, python)
            env = {"TOKENIZERS_PARALLELISM": "false"}
            if q in CALIBRATED:
                dataset = calibration(settings)[0]
                progress(f"quantizing with ModelOpt ({q}, {dtype}, {ranks} rank(s); calibrating "
                         f"on {dataset})")
                if Path(dataset).is_dir():
                    env["HF_HUB_OFFLINE"] = "1"
            else:
                progress(f"converting to a TensorRT-LLM checkpoint ({dtype}"
                         f"{', ' + q if q else ''}, tp {settings.tp} × pp {settings.pp})")
                env["HF_HUB_OFFLINE"] = "1"  # the checkpoint is local; never reach for a hub
            run_logged(convert, log, env=env, what="TensorRT-LLM checkpoint conversion")
            _expect_files(ckpt, ("config.json", *(f"rank{r}.safetensors" for r in range(ranks))),
                          "TensorRT-LLM checkpoint conversion", log)

            argv = self.build_command(settings, limits, dtype, ckpt, workdir, tool)
            progress(f"building TensorRT engine(s) with trtllm-build ({ranks} rank(s))")
            run_logged(argv, log, what="trtllm-build")
            progress("checking engine files")
            _expect_files(workdir, ("config.json", *(f"rank{r}.engine" for r in range(ranks))),
                          "trtllm-build", log)
        finally:
            shutil.rmtree(ckpt, ignore_errors=True)
        return [convert, argv]


def _expect_files(root: Path, names: tuple[str, ...], what: str, log: Path) -> None:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise BuildError(f"{what} finished without writing {', '.join(missing)} (log: {log})")

