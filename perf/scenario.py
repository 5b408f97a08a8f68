"""What a benchmark run sends: one typed :class:`Scenario` with every default in one place.

The CLI (``tritonllm perf``), the load generator, the perf_analyzer / genai-perf drivers and the
report all read a :class:`Scenario`; nothing else spells a default. Parsing helpers turn the
CLI's strings (``"1,4,16"``, ``"128:16"``) into typed values and raise
:class:`~tritonllm.errors.ConfigError` naming the option.

A scenario has one or more *load points*: each concurrency level of ``concurrency`` or, when
``request_rate`` is set, one Poisson-arrival point at that rate. Every point sends the same
kind of requests (prompts, output lengths, sampling) and is measured on its own: ``requests``
measured requests (or for ``duration`` seconds) after ``warmup`` unmeasured ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "ENDPOINTS",
    "LengthSpec",
    "LoadPoint",
    "Scenario",
    "default_url",
    "parse_concurrency",
    "parse_length",
]

TOOLS = ("ours", "genai-perf", "perf_analyzer")
#: What our generator talks to: Triton's gRPC API (tritonllm.client.AsyncLLMClient) or an
#: OpenAI-compatible API (tritonllm.perf.openai_backend, e.g. ``tritonllm openai``).
ENDPOINTS = ("grpc", "openai")
#: ``url`` per endpoint when none is given (``tritonllm openai`` listens on port 9000).
DEFAULT_URLS = {"grpc": "localhost:8001", "openai": "http://localhost:9000/v1"}


def default_url(endpoint: str) -> str:
    """The server address a scenario of ``endpoint`` goes to by default."""
    return DEFAULT_URLS[endpoint]


@dataclass(frozen=True)
class LengthSpec:
    """A token count drawn from a normal distribution (``std == 0``: always ``mean``).

    Draws are rounded and clamped to at least 1 token.
    """

    mean: int
    std: float = 0.0

    def __post_init__(self) -> None:
        if self.mean < 1:
            raise ConfigError(f"token count mean must be at least 1, got {self.mean}")
        if self.std < 0:
            raise ConfigError(f"token count std must be >= 0, got {self.std}")

    def __str__(self) -> str:
        return f"{self.mean}" if self.std == 0 else f"{self.mean}:{self.std:g}"

    @property
    def fixed(self) -> bool:
        return self.std == 0


def parse_length(text: str, option: str = "--input-tokens") -> LengthSpec:
    """``"128"`` or ``"128:16"`` (MEAN[:STD]) → :class:`LengthSpec`; ConfigError names option."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 1:
            return LengthSpec(int(parts[0]))
        if len(parts) == 2:
            return LengthSpec(int(parts[0]), float(parts[1]))
    except ValueError:
        pass
    except ConfigError as e:
        raise ConfigError(f"{option}: {e}") from None
    raise ConfigError(f"{option}: expected MEAN[:STD] with an integer mean, got {text!r}")


def parse_concurrency(text: str, option: str = "--concurrency") -> tuple[int, ...]:
    """``"1,4,16"`` → ``(1, 4, 16)`` (order kept, duplicates refused, each at least 1)."""
    values: list[int] = []
    for raw in text.split(","):
        raw = raw.strip()
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{option}: {raw!r} is not an integer (expected e.g. 1,4,16)"
                              ) from None
        if value < 1:
            raise ConfigError(f"{option}: concurrency must be at least 1, got {value}")
        if value in values:
            raise ConfigError(f"{option}: {value} is listed twice")
        values.append(value)
    return tuple(values)


@dataclass(frozen=True)
class LoadPoint:
    """One measured load: ``mode`` is ``"concurrency"`` or ``"request_rate"``.

    ``label`` (``"concurrency=4"``, ``"request_rate=2.5"``) names the point in records,
    reports and comparisons; ``mode``/``value`` match genai-perf's experiment keys.
    """

    mode: str
    value: float

    @property
    def label(self) -> str:
        v = int(self.value) if self.mode == "concurrency" else f"{self.value:g}"
        return f"{self.mode}={v}"

    @property
    def concurrency(self) -> int | None:
        return int(self.value) if self.mode == "concurrency" else None

    @property
    def rate(self) -> float | None:
        return self.value if self.mode == "request_rate" else None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "value": self.value, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadPoint:
        return cls(str(d["mode"]), float(d["value"]))


@dataclass(frozen=True)
class Scenario:
    """A benchmark: where, what load, what requests, and how they are counted.

    Attributes:
        url: gRPC address of the server (``host:port``; ``grpc://`` is accepted), or with the
            ``openai`` endpoint the API's base URL (``http://host:port/v1``).
        model: served model name (``ensemble`` or ``tensorrt_llm_bls``).
        concurrency: concurrency levels, one load point each (ignored with ``request_rate``).
        request_rate: requests per second with Poisson (exponential) inter-arrival times.
        input_tokens: prompt length in tokens of the tokenizer (synthetic prompts).
        output_tokens: requested output length (``max_tokens``; also ``min_tokens`` when
            ``exact_output`` so the server generates exactly that many).
        endpoint: the API our generator speaks (:data:`ENDPOINTS`): ``grpc`` (Triton) or
            ``openai`` (``/v1/completions``, streamed; only with ``tool="ours"``, and without
            ``exact_output``: the OpenAI API has no ``min_tokens``).
        dataset: JSONL prompts instead of synthetic ones (see :mod:`tritonllm.perf.prompts`).
        requests: measured requests per load point (when ``duration`` is None).
        duration: seconds to keep sending per load point (instead of ``requests``).
        warmup: unmeasured requests sent before each load point.
        streaming: stream tokens (``stream=True``); without it TTFT equals e2e latency.
        exact_output: send ``min_tokens`` = ``max_tokens`` (no early EOS).
        num_prompts: distinct prompts generated and cycled through (genai-perf's
            ``--num-dataset-entries``).
        tokenizer: tokenizer directory (default: found from the repository or ``model``).
        seed: seeds prompt generation, length draws and Poisson arrivals.
        sampling: extra request inputs (``temperature``, ``top_k``, ...), sent as is.
        timeout: seconds a single request may take.
        tool: who generates the load: ``ours`` (the asyncio client), ``genai-perf`` or
            ``perf_analyzer``.
        headers: gRPC metadata (HTTP headers with the ``openai`` endpoint) sent with every
            request.
    """

    url: str = DEFAULT_URLS["grpc"]
    model: str = "ensemble"
    concurrency: tuple[int, ...] = (1,)
    request_rate: float | None = None
    input_tokens: LengthSpec = LengthSpec(128)
    output_tokens: LengthSpec = LengthSpec(64)
    dataset: Path | None = None
    requests: int = 100
    duration: float | None = None
    warmup: int = 2
    streaming: bool = True
    exact_output: bool = True
    num_prompts: int = 100
    tokenizer: Path | None = None
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    timeout: float = 120.0
    tool: str = "ours"
    headers: dict[str, str] = field(default_factory=dict)
    endpoint: str = "grpc"

    def __post_init__(self) -> None:
        if not self.concurrency and self.request_rate is None:
            raise ConfigError("--concurrency: give at least one level (or --request-rate)")
        for c in self.concurrency:
            if c < 1:
                raise ConfigError(f"--concurrency: must be at least 1, got {c}")
        if self.request_rate is not None and self.request_rate <= 0:
            raise ConfigError(f"--request-rate: must be > 0, got {self.request_rate}")
        if self.requests < 1:
            raise ConfigError(f"--requests: must be at least 1, got {self.requests}")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"--duration: must be > 0, got {self.duration}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup: must be >= 0, got {self.warmup}")
        if self.num_prompts < 1:
            raise ConfigError(f"--num-prompts: must be at least 1, got {self.num_prompts}")
        if self.timeout <= 0:
            raise ConfigError(f"--timeout: must be > 0, got {self.timeout}")
        if self.tool not in TOOLS:
            raise ConfigError(f"--tool: expected one of {', '.join(TOOLS)}, got {self.tool!r}")
        if self.endpoint not in ENDPOINTS:
            raise ConfigError(f"--endpoint: expected one of {', '.join(ENDPOINTS)}, got "
                              f"{self.endpoint!r}")
        if self.endpoint == "openai":
            self._check_openai()

    def _check_openai(self) -> None:
        if self.tool != "ours":
            raise ConfigError(f"--endpoint openai and --tool {self.tool}: only our generator "
                              "(--tool ours) speaks the OpenAI API here; genai-perf and "
                              "perf_analyzer are driven over Triton's gRPC")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url: --endpoint openai takes the API's base URL "
                              f"(http://HOST:PORT/v1), got {self.url!r}")
        if self.exact_output:
            raise ConfigError("--exact-output and --endpoint openai: the OpenAI API has no "
                              "min_tokens, so output lengths cannot be forced (outputs end at "
                              "--output-tokens or the model's end of text)")

    @property
    def grpc_address(self) -> str:
        """``url`` without a ``grpc://`` scheme."""
        return self.url.split("://", 1)[1] if "://" in self.url else self.url

    @property
    def points(self) -> tuple[LoadPoint, ...]:
        """The load points, in the order they run."""
        if self.request_rate is not None:
            return (LoadPoint("request_rate", self.request_rate),)
        return tuple(LoadPoint("concurrency", float(c)) for c in self.concurrency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings, lengths as ``{"mean", "std"}``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, LengthSpec):
                v = {"mean": v.mean, "std": v.std}
            elif isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (older/newer runs load)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in known}
        for key in ("input_tokens", "output_tokens"):
            if isinstance(kw.get(key), dict):
                kw[key] = LengthSpec(int(kw[key]["mean"]), float(kw[key].get("std", 0)))
        for key in ("dataset", "tokenizer"):
            if kw.get(key) is not None:
                kw[key] = Path(kw[key])
        if "concurrency" in kw:
            kw["concurrency"] = tuple(int(c) for c in kw["concurrency"])
        return cls(**kw)

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)


#: The defaults, for the CLI's ``show_default``.
DEFAULTS = Scenario()
