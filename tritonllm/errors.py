"""The exceptions tritonllm raises.

Every error a user can cause is a subclass of :class:`TritonLLMError`; the CLI catches that
base class, prints its message on one line and exits non-zero. Anything else is a bug.

    TritonLLMError
    ├── ConfigError           bad settings or option combinations (names the option)
    ├── CheckpointError       missing, corrupt or unsupported checkpoint files
    │   └── UnsupportedArchitecture
    ├── BuildError            an engine build that was started and failed
    │   └── EngineUnavailable the engine's toolchain is not installed on this host
    ├── RepositoryError       rendering or validating a Triton model repository
    └── ServerError           starting or talking to tritonserver
"""

from __future__ import annotations


class TritonLLMError(Exception):
    """Base class of every error a user can cause."""


class ConfigError(TritonLLMError):
    """Invalid settings: an option value or a combination of options."""


class CheckpointError(TritonLLMError):
    """A checkpoint directory that cannot be built: missing or corrupt files."""


class UnsupportedArchitecture(CheckpointError):
    """The checkpoint's architecture has no builder support."""


class BuildError(TritonLLMError):
    """An engine build that started and failed."""


class EngineUnavailable(BuildError):
    """The toolchain an engine needs is not installed here."""


class RepositoryError(TritonLLMError):
    """A Triton model repository that cannot be rendered or is invalid."""


class ServerError(TritonLLMError):
    """tritonserver could not be started or did not become ready."""
