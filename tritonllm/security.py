"""Who may call what on a served repository: keys, Triton's restricted endpoints, TLS.

Triton 2.51 can restrict groups of its endpoints to requests that carry a header with a given
value (``--http-restricted-api`` / ``--grpc-restricted-protocol``, groups: health, metadata,
inference, shared-memory, model-config, model-repository, statistics, trace, logging). A gRPC
client sends the header as ``triton-grpc-protocol-<key>``; an HTTP client as ``<key>``.
:class:`AccessPolicy` makes those flags for two keys:

* the **admin key** (header :data:`ADMIN_HEADER`) guards :data:`ADMIN_GROUPS`: model control,
  shared memory, statistics, trace and logging. Without one (and without ``no_auth``) the
  launcher makes a random key only it knows: the endpoints stay closed to everyone else;
* the **inference key** (header :data:`INFERENCE_HEADER`), when given, guards
  :data:`INFERENCE_GROUPS`: inference and the model metadata/config clients read first.
  Without one, inference is open (on loopback by default, see ``tritonllm serve --host``).

Health stays open (probes). ``no_auth`` opens everything and must be asked for by name.

Keys come from files (one key, the first non-empty line) or environment variables, never from
a command line: a :class:`Secret` never shows its value in ``repr``, ``str`` or f-strings, and
:func:`mask` removes known secrets from any text before it is logged.

TLS (gRPC; Triton has no HTTP TLS): :class:`TlsSettings` maps onto ``--grpc-use-ssl``,
``--grpc-use-ssl-mutual``, ``--grpc-server-cert/-key`` and ``--grpc-root-cert``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tritonllm.errors import ConfigError

__all__ = [
    "ADMIN_GROUPS",
    "ADMIN_HEADER",
    "ADMIN_KEY_ENV",
    "GRPC_HEADER_PREFIX",
    "INFERENCE_GROUPS",
    "INFERENCE_HEADER",
    "INFERENCE_KEY_ENV",
    "TRITON_GROUPS",
    "AccessPolicy",
    "Secret",
    "TlsSettings",
    "auth_headers",
    "mask",
    "read_secret",
]

#: Triton 2.51's endpoint groups (tritonserver --help, "Allowed APIs").
TRITON_GROUPS = ("health", "metadata", "inference", "shared-memory", "model-config",
                 "model-repository", "statistics", "trace", "logging")
ADMIN_GROUPS = ("model-repository", "shared-memory", "statistics", "trace", "logging")
INFERENCE_GROUPS = ("inference", "metadata", "model-config")
ADMIN_HEADER = "tritonllm-admin"
INFERENCE_HEADER = "tritonllm-inference"
#: What a gRPC client prefixes a restriction's header with (Triton's rule).
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
ADMIN_KEY_ENV = "TRITONLLM_ADMIN_KEY"
INFERENCE_KEY_ENV = "TRITONLLM_INFERENCE_KEY"
_MIN_KEY_CHARS = 16


class Secret:
    """A key: its value is :meth:`reveal`-ed only where it is sent; everything else sees
    ``Secret(<where it came from>)``."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value.encode(),
                                                                    other._value.encode())

    def __hash__(self) -> int:
        return hash(self.source)

    def __reduce__(self) -> tuple[object, ...]:  # never pickled into a log or a crash dump
        raise TypeError("a Secret cannot be pickled")


def read_secret(path: Path | None, env: str, option: str,
                environ: Mapping[str, str] = os.environ) -> Secret | None:
    """The key in ``path`` (its first non-empty line), else in ``$env``; None when neither.
    ConfigError naming ``option`` (or ``env``) for an unreadable file or a key under 16
    characters (a guessable key is no key)."""
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"{option}: cannot read {path}: {e.strerror}") from None
        value = next((ln.strip() for ln in lines if ln.strip()), "")
        where = f"{option} {path}"
    else:
        value = environ.get(env, "").strip()
        where = f"${env}"
        if not value:
            return None
    if len(value) < _MIN_KEY_CHARS:
        raise ConfigError(f"{where}: a key needs at least {_MIN_KEY_CHARS} characters")
    if any(c.isspace() or not c.isprintable() for c in value) or ":" in value or "," in value:
        raise ConfigError(f"{where}: a key may not hold spaces, control characters, ':' or ','")
    return Secret(value, where)


def auth_headers(protocol: str, *, admin: Secret | None = None,
                 inference: Secret | None = None) -> dict[str, str]:
    """The headers a client sends: gRPC prefixes them (:data:`GRPC_HEADER_PREFIX`)."""
    prefix = GRPC_HEADER_PREFIX if protocol == "grpc" else ""
    out = {}
    if admin is not None:
        out[prefix + ADMIN_HEADER] = admin.reveal()
    if inference is not None:
        out[prefix + INFERENCE_HEADER] = inference.reveal()
    return out


def mask(text: str, known: Iterable[Secret | None]) -> str:
    """``text`` with every known secret's value replaced by ``***``."""
    for s in known:
        if s is not None and s.reveal():
            text = text.replace(s.reveal(), "***")
    return text


@dataclass(frozen=True)
class AccessPolicy:
    """Which endpoint groups need which key (see the module docstring)."""

    admin_key: Secret | None = None
    inference_key: Secret | None = None
    no_auth: bool = False
    _generated: Secret | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.no_auth and (self.admin_key is not None or self.inference_key is not None):
            raise ConfigError("--no-auth opens every endpoint: it cannot go with a key")
        if (self.admin_key is not None and self.inference_key is not None
                and self.admin_key == self.inference_key):
            raise ConfigError("the admin and the inference key must differ")
        if not self.no_auth and self.admin_key is None:
            object.__setattr__(self, "_generated",
                               Secret(secrets.token_hex(24), "a random key of the launcher"))

    @property
    def admin(self) -> Secret | None:
        """The key of the admin groups (the operator's, or the launcher's own)."""
        return self.admin_key or self._generated

    def tritonserver_args(self) -> list[str]:
        """The restriction flags, for HTTP and gRPC."""
        args = []
        for groups, header, key in ((ADMIN_GROUPS, ADMIN_HEADER, self.admin),
                                    (INFERENCE_GROUPS, INFERENCE_HEADER, self.inference_key)):
            if key is None:
                continue
            restriction = f"{','.join(groups)}:{header}={key.reveal()}"
            args += [f"--http-restricted-api={restriction}",
                     f"--grpc-restricted-protocol={restriction}"]
        return args

    def describe(self) -> str:
        """One line for the startup banner: what is open, what needs which key."""
        if self.no_auth:
            return "auth: none (--no-auth): every endpoint is open"
        admin = (f"admin endpoints ({', '.join(ADMIN_GROUPS)}) need the admin key "
                 f"({self.admin_key.source})" if self.admin_key is not None else
                 f"admin endpoints ({', '.join(ADMIN_GROUPS)}) are closed (no admin key "
                 "given: only the launcher holds one)")
        inference = (f"inference and metadata need the inference key "
                     f"({self.inference_key.source})" if self.inference_key is not None
                     else "inference and metadata are open")
        return f"auth: {admin}; {inference}; health is open"

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(s for s in (self.admin, self.inference_key) if s is not None)


@dataclass(frozen=True)
class TlsSettings:
    """gRPC TLS: the server's certificate and key; ``ca`` for mutual TLS (clients must present
    a certificate that CA signed)."""

    cert: Path
    key: Path
    ca: Path | None = None

    def __post_init__(self) -> None:
        for name in ("cert", "key", "ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"--tls-{name}: {path} is not a file")

    @property
    def mutual(self) -> bool:
        return self.ca is not None

    def tritonserver_args(self) -> list[str]:
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={Path(self.cert).resolve()}",
                f"--grpc-server-key={Path(self.key).resolve()}"]
        if self.ca is not None:
            args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={Path(self.ca).resolve()}"]
        return args
