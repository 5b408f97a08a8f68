"""The client's exceptions and the mapping from server/transport errors onto them.

Every error the client raises is a :class:`ClientError` (a
:class:`~tritonllm.errors.TritonLLMError`, so the CLI prints it on one line; the rest of the tree
is drawn in :mod:`tritonllm.errors`). The server's own
message is kept (it names the bad field); the tritonclient / gRPC / HTTP error it came from is
chained as ``__cause__``.

    ClientError
    ├── InvalidRequest     the request is wrong: a bad value, dtype or shape, an unknown input
    │   │                  (gRPC INVALID_ARGUMENT, HTTP 400, or a field-naming message)
    │   └── ModelNotFound  no such model or version on the server (NOT_FOUND, HTTP 404):
    │                      "unknown model", "... is not found"
    ├── Unauthorized       a restricted endpoint refused the call: header missing or wrong
    ├── Unavailable        the server cannot take the request now: down, refusing connections,
    │   │                  not ready, draining, the connection broke (UNAVAILABLE, HTTP 503,
    │   │                  a CANCELLED the client did not ask for) — retried
    │   └── Overloaded     its queue is full (a ``max_queue_size`` bound) — retried on request
    ├── Timeout            the call's deadline passed (DEADLINE_EXCEEDED) or the server's
    │                      queue timeout dropped it
    ├── Cancelled          the request was cancelled (CANCELLED; over HTTP, a 400 whose
    │                      message says cancelled: Triton's HTTP code for CANCELLED)
    └── ServerError        anything else the server reported (INTERNAL, a failed generation)

Over a gRPC stream an error *response* carries only a message: no status code and no request
id. :func:`classify` therefore also reads the message: Triton's own request checks and every
model of ours name the offending tensor (``"top_p: must be in (0, 1]"``,
``"in ensemble 'ensemble', max_tokens: ..."``); those, and Triton's "unexpected input / shape
/ data-type" messages, are InvalidRequest; queue-full messages are Overloaded; the rest is
ServerError. The tensor names come from :mod:`tritonllm.contract`.

A draining server (Triton 2.51 after SIGTERM/SIGINT, or a model being unloaded) means "try
another replica": it is Unavailable, whatever status or prefix its message comes with, so the
request is retried (within the retry policy) as long as no text has reached the caller.
Measured on the CPU repository (tests/integration/test_drain.py), in order, while
``--exit-timeout-secs`` runs:

- HTTP stops taking connections at once (reset / refused: Unavailable) and lets its
  requests in flight finish;
- every model's scheduler stops: a new request, or the next step of an ensemble request in
  flight, gets ``"Server is stopping, scheduler for model has stopped accepting new inference
  requests"`` (UNAVAILABLE; inside a stream, message only, prefixed ``"[request id: …] "`` and
  for an ensemble step ``"in ensemble 'ensemble', "``); health and metadata calls answer
  ``"Server not ready"`` (UNAVAILABLE);
- once nothing is in flight the models unload and a request gets ``"Request for unknown
  model: 'ensemble' has no available versions"`` (NOT_FOUND, or message only in a stream).
  That is *not* ModelNotFound: a name the server does not know reads ``"Request for unknown
  model: 'x' is not found"`` and stays ModelNotFound;
- when the exit timeout expires the gRPC endpoint closes: calls in flight end with UNAVAILABLE
  ``"Stream removed (Socket closed (GOAWAY received ...))"``, then connections are refused.

A model whose Python stub died answers ``"Stub process '<model>_0_0' is not healthy."`` (over
HTTP with status 400) until it is reloaded: Unavailable too, since ``tritonllm serve``'s
supervisor reloads that model and another replica can answer meanwhile.

gRPC's asyncio client reports a call its core could not complete (the server went away while
the call was being written) as INTERNAL ``"Internal error from Core"``: Unavailable too.

This module is pure: no tritonclient import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tritonllm.contract import CONTRACTS
from tritonllm.errors import TritonLLMError

__all__ = [
    "Cancelled",
    "ClientError",
    "ErrorInfo",
    "InvalidRequest",
    "ModelNotFound",
    "Overloaded",
    "ServerError",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "classify",
    "make_error",
]


class ClientError(TritonLLMError):
    """Base class of every client error.

    Attributes:
        request_id: the request's id, when the error belongs to one request.
        attempts: how many times the request was sent before giving up (1: no retry).
        status: the gRPC status (``"UNAVAILABLE"``) or HTTP status (``"503"``) seen, if any.
    """

    def __init__(self, message: str, *, request_id: str | None = None, attempts: int = 1,
                 status: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.attempts = attempts
        self.status = status


class InvalidRequest(ClientError):
    """The request is invalid; the message names the field."""


class ModelNotFound(InvalidRequest):
    """The server has no such model (or version)."""


class Unauthorized(ClientError):
    """A restricted endpoint refused the call (missing or wrong auth header)."""


class Unavailable(ClientError):
    """The server cannot take the request now (down, unreachable, not ready). Retryable."""


class Overloaded(Unavailable):
    """The server refused the request because its queue is full."""


class Timeout(ClientError):
    """The deadline passed before the request finished."""


class Cancelled(ClientError):
    """The request was cancelled."""


class ServerError(ClientError):
    """The server failed the request (INTERNAL or any other error).

    Not :class:`tritonllm.errors.ServingError`, the launcher's: tritonserver itself failed.
    """


# --- classification ---------------------------------------------------------------------------

_GRPC = {
    "INVALID_ARGUMENT": InvalidRequest,
    "OUT_OF_RANGE": InvalidRequest,
    "FAILED_PRECONDITION": InvalidRequest,
    "NOT_FOUND": ModelNotFound,
    "UNAUTHENTICATED": Unauthorized,
    "PERMISSION_DENIED": Unauthorized,
    "UNAVAILABLE": Unavailable,
    "RESOURCE_EXHAUSTED": Overloaded,
    "DEADLINE_EXCEEDED": Timeout,
    "CANCELLED": Cancelled,
}
_HTTP = {400: InvalidRequest, 401: Unauthorized, 403: Unauthorized, 404: ModelNotFound,
         408: Timeout, 429: Overloaded, 499: Cancelled, 502: Unavailable, 503: Unavailable,
         504: Timeout}

_RESTRICTED = re.compile(r"\bis restricted\b|expecting header", re.I)
_QUEUE_FULL = re.compile(r"max_queue_size|maximum queue size|queue (is )?full|queue limit", re.I)
_TIMED_OUT = re.compile(r"deadline exceeded|timeout expired|request timed out", re.I)
_CANCELLED = re.compile(r"\bcancell?ed\b", re.I)
_UNKNOWN_MODEL = re.compile(r"unknown model|model '[^']*' (version \S+ )?is not found|"
                            r"is not found|no model named", re.I)
# A draining server. Wording from Triton core r24.10 (Triton 2.51), commit 121120d0747b:
# src/dynamic_batch_scheduler.cc and src/sequence_batch_scheduler/sequence_batch_scheduler.cc
# (Enqueue once stopped): UNAVAILABLE "Server is stopping, scheduler for model has stopped
# accepting new inference requests"; src/model_repository_manager/model_lifecycle.cc
# (ModelLifeCycle::GetModel, no version READY): NOT_FOUND "'<model>' has no available versions",
# which ModelRepositoryManager::GetModel prefixes with "Request for unknown model: "; the same
# function's UNAVAILABLE "'<model>' version <n> is not at ready state"; src/server.cc:
# UNAVAILABLE "Server exiting" / "Server not ready".
_DRAINING = re.compile(r"server is stopping|stopped accepting new inference|"
                       r"has no available versions|is not at ready state|server exiting", re.I)
# python_backend r24.10 (src/python_be.cc, src/stub_launcher.cc): a dead stub's model answers
# "Stub process '<instance>' is not healthy." until it is reloaded.
_STUB_DEAD = re.compile(r"stub process\b.*\bis not healthy", re.I)
# grpc.aio's own status for a call its core could not complete (cygrpc set_internal_error).
_GRPC_CORE_FAILED = "Internal error from Core"
_CONNECTION = re.compile(r"connection refused|failed to connect|connect failed|"
                         r"connection reset|socket closed|broken pipe|"
                         r"not ready|unavailable", re.I)
# Triton core's own request checks (all INVALID_ARG in the server).
_TRITON_INVALID = re.compile(
    r"unexpected inference input|unexpected (shape|datatype)|data-type is|"
    r"expected number of inputs|missing required input|unexpected inference output|"
    r"input byte size|unexpected total byte size|has no data|"
    r"in ensemble '[^']*', (\w+)", re.I)
_FIELD_NAMES = frozenset(t.name for c in CONTRACTS.values() for t in c.inputs)  # `stop` too
_FIELD_PREFIX = re.compile(r"^(?:\[request id: [^\]]*\] )?(?:in ensemble '[^']*', )?"
                           r"([A-Za-z_][A-Za-z0-9_]*)(?: \([A-Za-z_]+\))?: ")


def _names_a_field(message: str) -> bool:
    m = _FIELD_PREFIX.match(message)
    return bool(m and m.group(1) in _FIELD_NAMES)


def _status_name(status: str | int | None) -> str | None:
    if status is None:
        return None
    s = str(status)
    return s.removeprefix("StatusCode.").upper() or None


@dataclass(frozen=True)
class ErrorInfo:
    """What a transport saw: the status (gRPC name or HTTP code, None inside a stream)."""

    message: str
    grpc_status: str | None = None
    http_status: int | None = None


def classify(info: ErrorInfo) -> type[ClientError]:
    """The ClientError subclass for a server or transport error (see the module docstring)."""
    msg = info.message or ""
    status = _status_name(info.grpc_status)
    if _RESTRICTED.search(msg):
        return Unauthorized
    if _QUEUE_FULL.search(msg):
        return Overloaded
    if _DRAINING.search(msg) or _STUB_DEAD.search(msg):
        return Unavailable
    if status == "INTERNAL" and msg.strip() == _GRPC_CORE_FAILED:
        return Unavailable
    if status is not None and status in _GRPC:
        cls = _GRPC[status]
        if cls is InvalidRequest and _UNKNOWN_MODEL.search(msg):
            return ModelNotFound
        return cls
    if info.http_status is not None:
        if info.http_status == 400 and _UNKNOWN_MODEL.search(msg):
            return ModelNotFound
        if (info.http_status == 400 and _CANCELLED.search(msg)  # Triton's code for CANCELLED
                and not (_names_a_field(msg) or _TRITON_INVALID.search(msg))):
            return Cancelled
        if info.http_status in _HTTP:
            return _HTTP[info.http_status]
        if 400 <= info.http_status < 500:
            return InvalidRequest
        if info.http_status >= 500 and _TIMED_OUT.search(msg):
            return Timeout
        return ServerError
    if status is not None:  # a gRPC status we do not single out (INTERNAL, UNKNOWN, ...)
        return ServerError
    # No status: an error response inside a stream. Read the message.
    if _TIMED_OUT.search(msg):
        return Timeout
    if _UNKNOWN_MODEL.search(msg):
        return ModelNotFound
    if _names_a_field(msg) or _TRITON_INVALID.search(msg):
        return InvalidRequest
    if _CANCELLED.search(msg):
        return Cancelled
    if _CONNECTION.search(msg):
        return Unavailable
    return ServerError


def make_error(info: ErrorInfo, *, request_id: str | None = None,
               attempts: int = 1) -> ClientError:
    """The classified exception for ``info``, keeping the server's message."""
    cls = classify(info)
    status = _status_name(info.grpc_status) or (
        str(info.http_status) if info.http_status is not None else None)
    return cls(info.message or cls.__name__, request_id=request_id, attempts=attempts,
               status=status)
