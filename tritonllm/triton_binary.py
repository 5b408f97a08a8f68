"""Which ``tritonserver`` to run, and what it needs to run here (part of :mod:`tritonllm.server`).

Standard library only.

Which binary (:func:`find_tritonserver`): ``$TRITONSERVER``, else ``tritonserver`` on ``PATH``
(the NGC container), else the Triton 2.51 build inside the ``nvidia-pytriton`` wheel.

The wheel's build (a "wheel layout": ``bin/tritonserver`` next to ``python_backend_stubs/3.X/``)
is made runnable here by

- a backend directory whose ``python/`` backend holds the ``triton_python_backend_stub`` built
  for the running Python (:func:`prepare_backend_dir`: symlinks into the wheel, in the server's
  temporary work directory);
- ``LD_LIBRARY_PATH`` starting with the wheel's ``nvidia_pytriton.libs``
  (:func:`server_environment`).

For every binary the directory of ``sys.executable`` (the venv's ``bin``) comes first on ``PATH``:
the Python stub finds its interpreter, and so the venv's packages, through ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from tritonllm.errors import ConfigError, ServingError
from tritonllm.supervision import STUB_NAME

__all__ = [
    "TritonInstall",
    "find_tritonserver",
    "is_executable",
    "prepare_backend_dir",
    "server_environment",
    "wheel_tritonserver",
]


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` executable and where it was found ("$TRITONSERVER", "PATH", "wheel")."""

    executable: Path
    source: str

    @property
    def root(self) -> Path:
        """The install's top folder (``bin/..``), following symlinks to the real binary."""
        return self.executable.resolve().parent.parent

    @property
    def stubs_dir(self) -> Path | None:
        """``python_backend_stubs/`` of a wheel layout; None for other installs."""
        d = self.root / "python_backend_stubs"
        return d if d.is_dir() else None

    @property
    def libs_dir(self) -> Path | None:
        """The wheel's ``nvidia_pytriton.libs`` (next to the ``pytriton`` package), if any."""
        if self.stubs_dir is None:
            return None
        d = self.root.parent.parent / "nvidia_pytriton.libs"
        return d if d.is_dir() else None

    @property
    def caches_dir(self) -> Path | None:
        """The wheel's response-cache implementations (``caches/``), if any."""
        d = self.root / "caches"
        return d if self.stubs_dir is not None and d.is_dir() else None

    def stub_versions(self) -> list[str]:
        """The Python versions ("3.11", ...) the install has a backend stub for."""
        if self.stubs_dir is None:
            return []
        found = [d.name for d in self.stubs_dir.iterdir() if (d / STUB_NAME).is_file()]
        return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))


def is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def wheel_tritonserver() -> Path | None:
    """The ``tritonserver`` inside the installed ``nvidia-pytriton`` wheel (not imported)."""
    try:
        spec = find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        exe = Path(location) / "tritonserver" / "bin" / "tritonserver"
        if is_executable(exe):
            return exe
    return None


def find_tritonserver(environ: Mapping[str, str] | None = None) -> TritonInstall:
    """``$TRITONSERVER``, else ``tritonserver`` on ``PATH``, else the nvidia-pytriton wheel's."""
    env = os.environ if environ is None else environ
    override = env.get("TRITONSERVER")
    if override:
        exe = Path(override).expanduser()
        if not is_executable(exe):
            raise ConfigError(f"$TRITONSERVER={override} is not an executable file")
        return TritonInstall(exe, "$TRITONSERVER")
    on_path = shutil.which("tritonserver", path=env.get("PATH", os.defpath))
    if on_path:
        return TritonInstall(Path(on_path), "PATH")
    wheel = wheel_tritonserver()
    if wheel is not None:
        return TritonInstall(wheel, "wheel")
    raise ServingError("no tritonserver found: set $TRITONSERVER, put tritonserver on PATH, "
                      "or pip install 'tritonllm[serve]' (the nvidia-pytriton wheel ships one)")


def _link(src: Path, dst: Path) -> None:
    """Symlink ``dst`` -> ``src`` (replacing ``dst``); copy where symlinks are not allowed."""
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    try:
        dst.symlink_to(src, target_is_directory=src.is_dir())
    except OSError:
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def prepare_backend_dir(install: TritonInstall, dest: Path | None = None, *,
                        python: Sequence[int] | None = None) -> Path:
    """Make a backend directory for a wheel-layout ``install`` and return it.

    ``dest`` (default: a new temporary folder, the caller removes it) gets one folder per backend
    in the wheel, its files symlinked (copied where symlinks fail), plus the
    ``triton_python_backend_stub`` built for ``python`` (default: the running interpreter).
    Preparing the same ``dest`` again refreshes it.
    """
    major, minor = tuple(python if python is not None else sys.version_info[:2])[:2]
    version = f"{major}.{minor}"
    if install.stubs_dir is None:
        raise ServingError(f"{install.executable} has no python_backend_stubs/ next to it; "
                          "give its backend directory instead (backend_dir)")
    stub = install.stubs_dir / version / STUB_NAME
    if not stub.is_file():
        have = ", ".join(install.stub_versions()) or "none"
        raise ServingError(f"the tritonserver at {install.executable} has no Python backend stub "
                          f"for Python {version} (it has: {have}); run tritonllm under one of "
                          "those Python versions")
    backends = install.root / "backends"
    if not (backends / "python").is_dir():
        raise ServingError(f"{backends}/python is missing: the nvidia-pytriton install is broken")
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="tritonllm-backends-"))
    for backend in sorted(p for p in backends.iterdir() if p.is_dir()):
        target = dest / backend.name
        target.mkdir(parents=True, exist_ok=True)
        for item in backend.iterdir():
            if item.name not in ("__pycache__", STUB_NAME):
                _link(item, target / item.name)
    _link(stub, dest / "python" / STUB_NAME)
    return dest


def _prepend_paths(first: str, rest: str | None) -> str:
    parts = [p for p in (rest or "").split(os.pathsep) if p and p != first]
    return os.pathsep.join([first, *parts])


def server_environment(install: TritonInstall,
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``tritonserver`` runs in: ``environ`` (default ``os.environ``) with

    - ``PATH`` starting with the running interpreter's ``bin`` (how the stub finds the venv), and
    - ``LD_LIBRARY_PATH`` starting with the running interpreter's own ``libpython`` directory
      and the wheel's ``nvidia_pytriton.libs`` (wheel layout only). The stub links
      ``libpython3.X.so.1.0``; without the first entry it may pick the system's copy, whose
      patch level differs from the interpreter's extension modules (``_ssl`` then fails to
      import with an undefined symbol).
    """
    env = dict(os.environ if environ is None else environ)
    env["PATH"] = _prepend_paths(str(Path(sys.executable).parent), env.get("PATH", os.defpath))
    if install.libs_dir is not None:
        env["LD_LIBRARY_PATH"] = _prepend_paths(str(install.libs_dir), env.get("LD_LIBRARY_PATH"))
        libdir = sysconfig.get_config_var("LIBDIR")
        soname = sysconfig.get_config_var("INSTSONAME")
        if libdir and soname and (Path(libdir) / str(soname)).exists():
            env["LD_LIBRARY_PATH"] = _prepend_paths(str(libdir), env["LD_LIBRARY_PATH"])
    return env
