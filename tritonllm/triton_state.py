"""What ``tritonserver`` says about its models (part of :mod:`tritonllm.server`): the rows of
its repository index (:class:`ModelStatus`, which :mod:`tritonllm.client` returns too) and the
lines of its log.

Standard library only and nothing done at import: the client imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LogFollower",
    "ModelStatus",
    "busy_port_from_log",
    "failure_message",
    "last_error_line",
    "load_failures_from_log",
    "poll_failures_from_log",
]


@dataclass(frozen=True)
class ModelStatus:
    """One row of the repository index (``POST /v2/repository/index``, gRPC
    ``RepositoryIndex``): what :attr:`TritonServer.models <tritonllm.server.TritonServer.models>`
    and the clients' ``models()`` return. ``state`` is None for a model never asked to load.
    """

    name: str
    version: str | None = None
    state: str | None = None
    reason: str = ""

    @property
    def failed(self) -> bool:
        """The model was asked to load and failed (``reason`` holds its error)."""
        return self.state == "UNAVAILABLE" and bool(self.reason) and self.reason != "unloaded"

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ModelStatus:
        """A row of the index as JSON (missing keys: None, and "?" for the name)."""
        return cls(name=str(row.get("name", "?")), version=row.get("version"),
                   state=row.get("state"), reason=str(row.get("reason", "")))


_LOADING_RE = re.compile(r'"loading: (?P<name>[^"]+):(?P<version>\d+)"')
_LOADED_RE = re.compile(r"successfully loaded '(?P<name>[^']+)'")
_FAILED_RE = re.compile(r"failed to load '(?P<name>[^']+)' version (?P<version>\d+): "
                        r'(?P<reason>.*?)"?\s*$')
_BUSY_RE = re.compile(r"failed to start (?P<service>\w+) service:.*?Socket '(?P<address>[^']*)'"
                      r" already in use", re.IGNORECASE)
_POLL_FAILED_RE = re.compile(r"Poll failed for model directory '([^']+)': ([^\"\n]+)")


def load_failures_from_log(text: str) -> list[ModelStatus]:
    """Models the log says failed to load, with their errors (the last one per model)."""
    failures: dict[str, ModelStatus] = {}
    for line in text.splitlines():
        m = _FAILED_RE.search(line)
        if m:
            failures[m["name"]] = ModelStatus(m["name"], m["version"], "UNAVAILABLE",
                                              m["reason"].replace("\\n", "\n"))
    return list(failures.values())


def poll_failures_from_log(text: str) -> dict[str, str]:
    """Model -> error, for the model directories the log says could not be polled (bad config)."""
    return dict(_POLL_FAILED_RE.findall(text))


def busy_port_from_log(text: str) -> str | None:
    """A one-line message if the log says an endpoint could not bind its port."""
    m = _BUSY_RE.search(text)
    if m is None:
        return None
    host, _, port = m["address"].rpartition(":")
    service = {"http": "HTTP", "grpc": "gRPC"}.get(m["service"].lower(), m["service"])
    return f"port {port} ({service}) is already in use on {host}"


def failure_message(failed: Sequence[ModelStatus]) -> str:
    """A ServingError's message for models that failed to load: one line, then each error."""
    def first(reason: str) -> str:
        return next((line.strip() for line in reason.splitlines() if line.strip()), "no reason")

    if len(failed) == 1:
        head = f"model '{failed[0].name}' failed to load: {first(failed[0].reason)}"
    else:
        head = f"{len(failed)} models failed to load: " + "; ".join(
            f"'{m.name}': {first(m.reason)}" for m in failed)
    details = "\n".join(f"--- {m.name} (version {m.version}) ---\n{m.reason.rstrip()}"
                        for m in failed)
    return f"{head}\n{details}"


def last_error_line(text: str) -> str | None:
    """tritonserver's fatal "error: ..." line, else its last E-level log line."""
    lines = [ln.strip() for ln in reversed(text.splitlines())]
    fatal = [ln for ln in lines if ln.startswith("error:")]
    logged = [ln for ln in lines if re.match(r"E\d{4} ", ln)]
    return next(iter(fatal or logged), None)


class LogFollower:
    """Reads the log as it grows; turns load lines into progress messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending: dict[str, None] = {}  # models loading, in order

    def events(self) -> Iterator[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            if m := _LOADING_RE.search(line):
                self.pending[m["name"]] = None
                yield f"loading model '{m['name']}' (version {m['version']})"
            elif m := _LOADED_RE.search(line):
                self.pending.pop(m["name"], None)
                yield f"loaded model '{m['name']}'"
            elif m := _FAILED_RE.search(line):
                self.pending.pop(m["name"], None)
