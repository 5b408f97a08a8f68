"""``manifest.json``: what an engine directory was built from, with what, and its limits.

The manifest is the contract between the builders and everything downstream: the repository
renderer reads the limits and ids from it, and the next build reads it to decide whether the
engine is already up to date (the cache key covers the checkpoint content, the build
arguments and the tool versions).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.builders.checkpoint import FileDigest
from tritonllm.errors import RepositoryError

MANIFEST = "manifest.json"
#: A builder may leave the results of its own checks here (JSON); they go into the manifest.
CHECKS_FILE = "checks.json"
#: The log of the commands a build ran (in the engine dir; beside it if the build failed).
BUILD_LOG = "build.log"
SCHEMA = 1


@dataclass(frozen=True)
class EngineLimits:
    """The limits an engine was built for; requests beyond them are refused."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    vocab_size: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineLimits:
        return cls(**{**data, "eos_token_ids": tuple(data["eos_token_ids"])})


@dataclass
class Manifest:
    """Everything recorded about one build. Paths inside are relative to the engine dir."""

    engine: str
    cache_key: str
    checkpoint: dict[str, Any]
    build_args: dict[str, Any]
    tools: dict[str, str]
    limits: EngineLimits
    engine_files: dict[str, int]
    commands: list[list[str]] = field(default_factory=list)
    #: the builder's own checks of its output (onnx: ONNX Runtime against PyTorch)
    checks: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tokenizer_dir: str = "tokenizer"
    created_at: str = ""
    tritonllm_version: str = ""
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def write(self, engine_dir: Path) -> Path:
        path = engine_dir / MANIFEST
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @property
    def file_digests(self) -> dict[str, FileDigest]:
        return {n: FileDigest(**d) for n, d in self.checkpoint.get("files", {}).items()}

    def missing_files(self, engine_dir: Path) -> list[str]:
        """Engine files that are gone or whose size changed since the build."""
        bad = []
        for rel, size in self.engine_files.items():
            p = engine_dir / rel
            if not p.is_file() or p.stat().st_size != size:
                bad.append(rel)
        return bad


def read_manifest(engine_dir: Path) -> Manifest:
    """Load ``engine_dir/manifest.json``; RepositoryError names what is wrong."""
    path = Path(engine_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RepositoryError(
            f"{path}: not found; is {engine_dir} an engine dir made by `tritonllm build`?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RepositoryError(f"{path}: not valid JSON ({e})") from e
    if data.get("schema") != SCHEMA:
        raise RepositoryError(f"{path}: schema {data.get('schema')!r}, expected {SCHEMA}; rebuild")
    try:
        data["limits"] = EngineLimits.from_dict(data["limits"])
        return Manifest(**data)
    except (KeyError, TypeError) as e:
        raise RepositoryError(f"{path}: malformed manifest ({e}); rebuild with --force") from e


def cache_key(engine: str, content_hash: str, build_args: dict[str, Any],
              tools: dict[str, str]) -> str:
    """Key over everything that decides the engine bytes."""
    blob = json.dumps(
        {"engine": engine, "checkpoint": content_hash, "args": build_args, "tools": tools,
         "schema": SCHEMA},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def list_files(root: Path, skip: tuple[str, ...] = (MANIFEST, BUILD_LOG)) -> dict[str, int]:
    """Relative path → size of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in skip
    }
