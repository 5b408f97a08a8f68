"""CPU engine: OpenVINO IR for OpenVINO GenAI's continuous-batching pipeline.

The checkpoint is exported by optimum-intel (``optimum-cli export openvino``, run as a child
process so its imports and memory stay out of ours), which also converts the tokenizer into
OpenVINO tokenizer/detokenizer models. int8/int4 are NNCF weight compression; activations stay
in floating point. The engine dir holds ``openvino_model.xml/.bin``, ``openvino_tokenizer.xml``,
``openvino_detokenizer.xml`` and the HF config/tokenizer files the pipeline reads.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import ClassVar

from tritonllm.builders.base import EngineBuilder, Progress, package_versions, register, run_logged
from tritonllm.builders.checkpoint import SUPPORTED_ARCHITECTURES, CheckpointInfo
from tritonllm.builders.manifest import EngineLimits
from tritonllm.builders.settings import BuildSettings
from tritonllm.errors import BuildError, ConfigError, EngineUnavailable

REQUIRED_OUTPUTS = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_detokenizer.xml",
)
_WEIGHT_FORMAT = {"auto": "fp32", "float32": "fp32", "float16": "fp16"}
_GROUP_SIZES = (128, 64, 32, 16)


def _optimum_cli() -> str | None:
    beside = Path(sys.executable).parent / "optimum-cli"
    return str(beside) if beside.is_file() else shutil.which("optimum-cli")


@register
class CpuBuilder(EngineBuilder):
    name = "cpu"
    description = "OpenVINO IR for OpenVINO GenAI continuous batching (CPU, any Linux host)"
    dtypes: ClassVar[tuple[str, ...]] = ("auto", "float32", "float16")
    quantizations: ClassVar[tuple[str, ...]] = ("int8", "int4")
    architectures: ClassVar[frozenset[str]] = frozenset(SUPPORTED_ARCHITECTURES)

    def tool_versions(self) -> dict[str, str]:
        return package_versions(
            "openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "optimum",
            "nncf", "transformers", "torch",
        )

    def ensure_available(self) -> None:
        missing = [n for n, v in package_versions("optimum-intel", "openvino", "openvino-genai",
                                                  "openvino-tokenizers").items()
                   if v == "absent"]
        if missing or _optimum_cli() is None:
            raise EngineUnavailable(
                f"engine cpu: {', '.join(missing) or 'optimum-cli'} not installed; "
                "install the CPU extra: pip install 'tritonllm[cpu]'"
            )

    def check(self, settings: BuildSettings, info: CheckpointInfo) -> EngineLimits:
        limits = super().check(settings, info)
        if settings.quantization and settings.dtype not in ("auto", "float32"):
            raise ConfigError(
                f"dtype: --quantization {settings.quantization} sets the weight format on the "
                f"cpu engine; drop --dtype {settings.dtype}"
            )
        if settings.quantization == "int4":
            self.group_size(settings, info)
        elif settings.group_size is not None:
            raise ConfigError("group_size: only applies to --quantization int4")
        return limits

    @staticmethod
    def group_size(settings: BuildSettings, info: CheckpointInfo) -> int:
        """int4 group size: the requested one, else the largest that divides the weight shapes."""
        dims = (info.hidden_size, info.intermediate_size)
        if settings.group_size is not None:
            if settings.group_size < 1 or any(d % settings.group_size for d in dims):
                raise ConfigError(
                    f"group_size: {settings.group_size} must divide the hidden size "
                    f"({info.hidden_size}) and intermediate size ({info.intermediate_size})"
                )
            return settings.group_size
        for g in _GROUP_SIZES:
            if all(d % g == 0 for d in dims):
                return g
        raise ConfigError(
            f"quantization: int4 needs a group size dividing hidden size {info.hidden_size} and "
            f"intermediate size {info.intermediate_size}; none of {_GROUP_SIZES} does"
        )

    def export_command(self, settings: BuildSettings, info: CheckpointInfo,
                       out: Path) -> list[str]:
        cli = _optimum_cli() or "optimum-cli"
        fmt = settings.quantization or _WEIGHT_FORMAT[settings.dtype]
        argv = [cli, "export", "openvino", "--model", str(info.path),
                "--task", "text-generation-with-past", "--weight-format", fmt]
        if settings.quantization == "int4":
            argv += ["--group-size", str(self.group_size(settings, info)), "--ratio", "1.0"]
        if settings.trust_remote_code:
            argv.append("--trust-remote-code")
        return [*argv, str(out)]

    def build(self, settings: BuildSettings, info: CheckpointInfo, limits: EngineLimits,
              workdir: Path, log: Path, progress: Progress) -> list[list[str]]:
        argv = self.export_command(settings, info, workdir)
        progress(f"exporting to OpenVINO IR ({argv[argv.index('--weight-format') + 1]})")
        # HF_HUB_OFFLINE: the checkpoint is local, never reach for a hub. CI=true is how the
        # OpenVINO converter's telemetry is told to stay off (it checks nothing else).
        run_logged(argv, log, env={"HF_HUB_OFFLINE": "1", "CI": "true",
                                   "TOKENIZERS_PARALLELISM": "false"}, what="optimum-cli export")
        progress("checking exported files")
        missing = [n for n in REQUIRED_OUTPUTS if not (workdir / n).is_file()]
        if missing:
            raise BuildError(f"optimum-cli export finished without writing {', '.join(missing)} "
                             f"(log: {log})")
        return [argv]
