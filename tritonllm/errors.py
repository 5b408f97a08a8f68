"""The exceptions tritonllm raises.

Every error a user can cause is a subclass of :class:`TritonLLMError`; the CLI catches that
base class, prints its message on one line and exits non-zero. Anything else is a bug. The tree
below lists every exception class tritonllm defines (tests/unit/test_errors_tree.py checks it):
the classes defined here, then those defined next to the code that raises them (module named).

    TritonLLMError
    ├── ConfigError             bad settings or option combinations (names the option)
    ├── CheckpointError         missing, corrupt or unsupported checkpoint files
    │   └── UnsupportedArchitecture
    ├── BuildError              an engine build that was started and failed
    │   └── EngineUnavailable   the engine's toolchain is not installed on this host
    ├── RepositoryError         rendering or validating a Triton model repository
    ├── ServingError            tritonserver as tritonllm runs it (tritonllm.server) failed:
    │                           no binary, a busy port, a model that did not load, not ready in
    │                           time, died while serving, or did not stop cleanly
    ├── ScrapeError             a metrics endpoint that cannot be read: refused, timed out, an
    │                           HTTP error status, or not Prometheus text (names the URL)
    ├── BrokenInstall           an installed package cannot work here (tritonllm.environment)
    ├── RequestError            one request to a served model is invalid; names the field
    │                           (tritonllm.ensembles.requests; also a ValueError)
    ├── ChatTemplateError       a chat template failed on one conversation, with the template's
    │                           message (tritonllm.openai.chat_template; the front answers 400)
    ├── QueueFull               the engine's wait queue is full (tritonllm.ensembles.llm_service)
    ├── UpstreamError           a model called over BLS refused a request, with its code
    │                           (tritonllm.ensembles.bls_calls)
    ├── EngineFailed            the engine ended an accepted request with an error, in the
    │                           llmapi layout's CPU model (tritonllm.ensembles.llmapi_local)
    ├── ToolError               perf_analyzer or genai-perf is missing or failed
    │                           (tritonllm.perf.drivers)
    ├── LoadError               a benchmark load could not be generated (tritonllm.perf.loadgen)
    ├── PrometheusError         the local Prometheus of an observed run could not start or
    │                           answer (tritonllm.perf.observe)
    ├── OpenAIError             an OpenAI API request the front answers with an error: its
    │                           HTTP status and OpenAI's error body (tritonllm.openai.protocol)
    └── ClientError             a request the client could not complete: its own tree, with
                                InvalidRequest, Unavailable, Timeout, ... and ServerError (the
                                server failed the request), is drawn in tritonllm.client._errors

``ServingError`` (the launcher's: tritonserver itself failed) and the client's ``ServerError``
(a running server answered a request with an error) are different failures, caught by different
callers: ``tritonllm serve`` stops, a client may retry elsewhere.

Internal exceptions, caught in the module that raises them and never seen by a caller:
``_BadHead``, ``_HeadTooLarge`` and ``_Closed`` (tritonllm.http_guard: a request head it
refuses, a connection that closed).

Wrong arguments to a library function (a programming error, not a user's) raise Python's own
``ValueError``, ``TypeError`` or ``KeyError``; a broken internal invariant ``RuntimeError``.
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


class ServingError(TritonLLMError):
    """tritonserver, as tritonllm launches it, failed: it could not be found or started, did
    not become ready, died while serving or did not stop cleanly (or was used out of order).

    Not :class:`tritonllm.client.ServerError`, which is a request a running server failed.
    """


class ScrapeError(TritonLLMError):
    """A Prometheus metrics endpoint (Triton's ``/metrics``) that could not be read: the
    connection failed or timed out, it answered an HTTP error, or the page is not Prometheus
    text. The message names the URL and the cause (:mod:`tritonllm.metrics_view`)."""
