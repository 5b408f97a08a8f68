"""The OpenAI front's own metrics (``GET /metrics``), with prometheus-client.

The families are the catalog's rows for the ``openai`` target (:mod:`tritonllm.metrics_catalog`):
trtllm-serve's names (TensorRT-LLM's own OpenAI server) for time to first token, time per
output token, request latency, tokens and finishes, and error counts by HTTP code; ours for
requests by route. Labelled ``model`` = the served model name. Times are measured here, from the
API request's arrival to the text this front sends, so they include the Triton server behind it.
"""

from __future__ import annotations

import time
from typing import Any

from tritonllm import metrics_catalog as MC

__all__ = ["CONTENT_TYPE", "FrontMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FrontMetrics:
    """One registry of the front's families for one served model."""

    def __init__(self, model: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        self._m: dict[str, Any] = {}
        for fam in MC.CATALOG:
            if MC.OPENAI not in fam.targets:
                continue
            labels = ["model"] + ([fam.label] if fam.label else [])
            # prometheus-client adds the _total suffix of a counter itself.
            name = fam.name.removesuffix("_total") if fam.kind == "counter" else fam.name
            if fam.kind == "histogram":
                self._m[fam.name] = Histogram(name, fam.help, labels, registry=self.registry,
                                              buckets=fam.buckets)
            else:
                self._m[fam.name] = Counter(name, fam.help, labels, registry=self.registry)
            for v in fam.values_for(MC.OPENAI):  # every series exists from the start
                self._m[fam.name].labels(model, v)
            if not fam.label:
                self._m[fam.name].labels(model)

    def request(self, route: str, status: int) -> None:
        """One API request answered with HTTP ``status``."""
        known = MC.family(MC.OPENAI_REQUESTS).values_for(MC.OPENAI)
        if route in known:
            self._m[MC.OPENAI_REQUESTS].labels(self.model, route).inc()
        if status >= 400:
            self._m[MC.REQUEST_ERRORS].labels(self.model, str(status)).inc()

    def choice(self, r: Any, started: float) -> None:
        """One finished choice (a :class:`tritonllm.openai.serving.ChoiceResult`) of a request
        that arrived at ``started`` (``time.perf_counter()``)."""
        m, model = self._m, self.model
        end = time.perf_counter()
        if r.first_token_s is not None:
            m[MC.TTFT].labels(model).observe(r.first_token_s - started)
            if r.completion_tokens > 1 and r.token_times:
                m[MC.TPOT].labels(model).observe(
                    (r.token_times[-1] - r.first_token_s) / (r.completion_tokens - 1))
        m[MC.E2E].labels(model).observe(end - started)
        m[MC.PROMPT_TOKENS].labels(model).inc(r.prompt_tokens)
        m[MC.GENERATION_TOKENS].labels(model).inc(r.completion_tokens)
        if r.finish_reason in MC.family(MC.REQUEST_FINISHED).values_for(MC.OPENAI):
            m[MC.REQUEST_FINISHED].labels(model, r.finish_reason).inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))
