"""Checkpoint → engine directory, with a content-addressed cache.

``build()`` inspects the checkpoint, validates the settings against the chosen engine, and
either reports a cache hit (same checkpoint content, build arguments and tool versions as the
manifest already in ``out``, engine files intact) or builds into a temporary directory next
to ``out`` and swaps it into place, so a failed build never leaves half an engine behind.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tritonllm import __version__
from tritonllm.builders.base import Progress, check_output_dir, get_builder, staged
from tritonllm.builders.checkpoint import CHAT_TEMPLATE_FILES, CheckpointInfo, inspect_checkpoint
from tritonllm.builders.manifest import (
    BUILD_LOG,
    CHECKS_FILE,
    MANIFEST,
    Manifest,
    cache_key,
    list_files,
    read_manifest,
)
from tritonllm.builders.settings import BuildSettings
from tritonllm.errors import RepositoryError

TOKENIZER_EXTRA = ("tokenizer_config.json", "special_tokens_map.json", "merges.txt",
                   "vocab.txt", "generation_config.json", "config.json", *CHAT_TEMPLATE_FILES)


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    engine_dir: Path
    cached: bool
    seconds: float


def _previous(out: Path) -> Manifest | None:
    if not (out / MANIFEST).is_file():
        return None
    try:
        return read_manifest(out)
    except RepositoryError:
        return None


def _copy_tokenizer(info: CheckpointInfo, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*info.tokenizer_files, *TOKENIZER_EXTRA):
        src = info.path / name
        if src.is_file():
            shutil.copy2(src, dest / name)


def build(settings: BuildSettings, progress: Progress | None = None) -> BuildResult:
    """Build (or reuse) the engine described by ``settings``."""
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    builder = get_builder(settings.engine)
    out = Path(settings.out)
    check_output_dir(out, MANIFEST, "an engine dir")

    say("checking checkpoint")
    prev = _previous(out)
    info = inspect_checkpoint(
        Path(settings.checkpoint),
        previous_digests=prev.file_digests if prev else None,
        trust_remote_code=settings.trust_remote_code,
    )
    limits = builder.check(settings, info)
    tools = builder.tool_versions()
    key = cache_key(builder.name, info.content_hash, settings.build_args(), tools)
    if (prev is not None and not settings.force and prev.cache_key == key
            and not prev.missing_files(out)):
        return BuildResult(prev, out, cached=True, seconds=time.perf_counter() - t0)

    builder.ensure_available()
    t_inspect = time.perf_counter() - t0
    # The log is written beside ``out`` (the errors name it) and moves into the engine dir
    # when the build succeeds; a failed build leaves only it.
    log = out.parent / f"{out.name}.build-failed.log"
    log.unlink(missing_ok=True)
    with staged(out, "building") as work:
        t1 = time.perf_counter()
        commands = builder.build(settings, info, limits, work, log, say)
        t_build = time.perf_counter() - t1
        if log.is_file():
            shutil.move(log, work / BUILD_LOG)
        checks = {}
        if (work / CHECKS_FILE).is_file():
            checks = json.loads((work / CHECKS_FILE).read_text(encoding="utf-8"))
            (work / CHECKS_FILE).unlink()
        say("writing manifest")
        _copy_tokenizer(info, work / "tokenizer")
        manifest = Manifest(
            engine=builder.name,
            cache_key=key,
            checkpoint={
                "path": str(info.path),
                "architecture": info.architecture,
                "family": info.family,
                "content_hash": info.content_hash,
                "files": {n: vars(d) for n, d in sorted(info.files.items())},
            },
            build_args=settings.build_args(),
            tools=tools,
            limits=limits,
            engine_files=list_files(work),
            commands=commands,
            checks=checks,
            timings={"inspect_s": round(t_inspect, 3), "build_s": round(t_build, 3),
                     "total_s": round(time.perf_counter() - t0, 3)},
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            tritonllm_version=__version__,
        )
        manifest.write(work)
    return BuildResult(manifest, out, cached=False, seconds=time.perf_counter() - t0)

