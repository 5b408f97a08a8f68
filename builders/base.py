"""The engine builder interface, its registry, and helpers every builder uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import ClassVar, TypeVar

from tritonllm.builders.checkpoint import CheckpointInfo
from tritonllm.builders.manifest import EngineLimits
from tritonllm.builders.settings import BuildSettings
from tritonllm.errors import BuildError, ConfigError

Progress = Callable[[str], None]
"""Called with a short description each time a build enters a new stage."""

ENGINES: dict[str, type[EngineBuilder]] = {}
B = TypeVar("B", bound="type[EngineBuilder]")


def register(cls: B) -> B:
    """Class decorator: make a builder available under its ``name``."""
    ENGINES[cls.name] = cls
    return cls


def get_builder(name: str) -> EngineBuilder:
    try:
        return ENGINES[name]()
    except KeyError:
        raise ConfigError(
            f"engine: unknown engine {name!r}; choose one of {', '.join(sorted(ENGINES))}"
        ) from None


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions (``absent`` when not installed), without importing anything."""
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "absent"
    return out


class EngineBuilder(ABC):
    """Turns a checked checkpoint into an engine directory.

    Subclasses declare what they support as class data; ``check`` validates a request
    against it and resolves the engine limits before anything slow happens.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    dtypes: ClassVar[tuple[str, ...]]
    quantizations: ClassVar[tuple[str, ...]]
    architectures: ClassVar[frozenset[str]]
    parallel: ClassVar[bool] = False

    @abstractmethod
    def tool_versions(self) -> dict[str, str]:
        """Versions of the tools whose output ends up in the engine (part of the cache key)."""

    @abstractmethod
    def ensure_available(self) -> None:
        """Raise EngineUnavailable, saying where the engine can be built, if it can't be here."""

    @abstractmethod
    def build(self, settings: BuildSettings, info: CheckpointInfo, limits: EngineLimits,
              workdir: Path, log: Path, progress: Progress) -> list[list[str]]:
        """Write the engine into ``workdir``; return the commands that were run."""

    def check_common(self, settings: BuildSettings, info: CheckpointInfo) -> None:
        """The checks every engine makes: dtype, quantization, architecture, counts, devices."""
        if settings.dtype not in self.dtypes:
            raise ConfigError(
                f"dtype: {settings.dtype!r} is not supported by the {self.name} engine; "
                f"choose one of {', '.join(self.dtypes)}"
            )
        if settings.quantization is not None and settings.quantization not in self.quantizations:
            can = ", ".join(self.quantizations) or "none"
            raise ConfigError(
                f"quantization: the {self.name} engine cannot do {settings.quantization!r}; "
                f"it supports: {can}"
            )
        if info.architecture not in self.architectures:
            raise ConfigError(
                f"architecture: the {self.name} engine cannot build {info.architecture}; "
                f"it supports: {', '.join(sorted(self.architectures))}"
            )
        for key in ("tp", "pp", "ep", "max_batch_size", "max_num_tokens"):
            if getattr(settings, key) < 1:
                raise ConfigError(f"{key}: must be at least 1, got {getattr(settings, key)}")
        if settings.ep != 1 and self.name != "trtllm":
            raise ConfigError(f"ep: expert parallelism is an option of the trtllm engine (LLM "
                              f"API), not of {self.name}")
        if not self.parallel and (settings.tp, settings.pp) != (1, 1):
            raise ConfigError(f"tp/pp: the {self.name} engine runs on one device; use tp=1 pp=1")

    def check(self, settings: BuildSettings, info: CheckpointInfo) -> EngineLimits:
        """Validate the settings for this checkpoint and resolve the engine limits."""
        self.check_common(settings, info)
        if info.num_heads % settings.tp or info.num_kv_heads % settings.tp:
            raise ConfigError(
                f"tp: {settings.tp} does not divide the attention heads "
                f"({info.num_heads} query, {info.num_kv_heads} key/value)"
            )
        if info.num_layers % settings.pp:
            raise ConfigError(f"pp: {settings.pp} does not divide the {info.num_layers} layers")

        max_pos = info.max_position_embeddings
        max_seq = settings.max_seq_len if settings.max_seq_len is not None else max_pos
        if max_seq > max_pos:
            raise ConfigError(
                f"max_seq_len: {max_seq} exceeds the model's max_position_embeddings ({max_pos})"
            )
        max_in = settings.max_input_len
        if max_in is None:
            max_in = min(1024, max_seq - 1) if max_seq > 1 else 0
        if max_in < 1 or max_seq < 2:
            raise ConfigError(f"max_input_len / max_seq_len: too small ({max_in} / {max_seq})")
        if max_in >= max_seq:
            raise ConfigError(
                f"max_input_len: {max_in} must be smaller than max_seq_len ({max_seq}), "
                "or no token could be generated"
            )
        for eid in (*info.eos_token_ids, info.pad_token_id, info.bos_token_id):
            if eid is not None and not 0 <= eid < info.vocab_size:
                raise ConfigError(
                    f"token ids: id {eid} is outside the vocabulary ({info.vocab_size})")
        return EngineLimits(
            max_batch_size=settings.max_batch_size,
            max_input_len=max_in,
            max_seq_len=max_seq,
            max_num_tokens=settings.max_num_tokens,
            vocab_size=info.vocab_size,
            bos_token_id=info.bos_token_id,
            eos_token_ids=info.eos_token_ids,
            pad_token_id=info.pad_token_id if info.pad_token_id is not None
            else (info.eos_token_ids[0] if info.eos_token_ids else None),
        )


def run_logged(argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
               what: str = "") -> None:
    """Run a command, its output appended to ``log``; BuildError with the log's tail."""
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        try:
            proc = subprocess.run(
                list(argv), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, check=False,
            )
        except FileNotFoundError as e:
            raise BuildError(f"{what or argv[0]}: cannot run {argv[0]!r} ({e.strerror})") from e
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise BuildError(
            f"{what or argv[0]} failed with exit code {proc.returncode} (full log: {log}):\n"
            + "\n".join("    " + line for line in tail)
        )


@contextmanager
def staged(out: Path, kind: str, replace: bool = True) -> Iterator[Path]:
    """A new hidden directory beside ``out`` (``.<name>.<kind>-*``) to write the result into.

    ``replace``: when the block ends the directory replaces ``out``; else the block has moved
    what it wanted into ``out`` itself and the rest is removed (``out`` is never replaced).
    If the block, or the swap, raises, the directory is removed and ``out`` is left as it
    was, so a reader never sees half a result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-", dir=out.parent))
    try:
        yield work
        if replace:
            if out.exists():
                shutil.rmtree(out)
            work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not replace:
        shutil.rmtree(work, ignore_errors=True)


def check_output_dir(out: Path, marker: str, what: str) -> None:
    """Refuse an ``out`` we must not replace, or cannot write; ConfigError names the problem.

    ``out`` may be missing, empty, or hold ``marker`` (something we wrote there before).
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise ConfigError(
            f"out: {out} is not empty and holds no {marker} (not {what}); refusing to "
            "overwrite it (choose an empty or new directory)"
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"out: {parent} is a file, not a directory")
            break
    # Try for real: os.access says yes to root even where writes fail (read-only mounts, /proc).
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(tempfile.mkdtemp(prefix=".tritonllm-probe-", dir=out.parent)).rmdir()
    except OSError as e:
        raise ConfigError(f"out: cannot write to {out.parent} ({e.strerror})") from e
