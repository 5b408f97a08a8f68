"""Helpers shared by the integration modules that drive a served CPU repository with the
official tritonclient: request tensors, one gRPC stream that collects text per request id, the
engine's own gauges, and the contract's ``stop``.
"""

from __future__ import annotations

import queue
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tritonllm import metrics_catalog as MC

TIMEOUT = 120


def inputs(prompt: str | bytes, max_tokens: int = 16, stream: bool = False,
            **extra: tuple[Any, str]) -> list[Any]:
    import tritonclient.grpc as grpcclient

    def t(name: str, value: Any, dtype: str) -> Any:
        x = grpcclient.InferInput(name, list(value.shape), dtype)
        x.set_data_from_numpy(value)
        return x

    text = prompt if isinstance(prompt, bytes) else prompt.encode()
    out = [t("text_input", np.array([[text]], dtype=object), "BYTES"),
           t("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
           t("stream", np.array([[stream]], dtype=bool), "BOOL")]
    out += [t(k, v, dt) for k, (v, dt) in extra.items()]
    return out


class Stream:
    """One gRPC stream; ``run`` sends requests and collects each one's text pieces."""

    def __init__(self, server: Any) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(server.grpc_address)
        self.results: dict[str, queue.Queue[Any]] = {}
        self.last = ""
        self.client.start_stream(callback=self._callback)

    def _callback(self, result: Any, error: Any) -> None:
        # An error response carries no request id over a gRPC stream: it belongs to the last
        # request sent, so tests send requests that may fail on a stream of their own.
        rid = result.get_response().id if result is not None else self.last
        self.results.setdefault(rid, queue.Queue()).put((result, error))

    def send(self, rid: str, model: str, inputs: list[Any]) -> None:
        self.last = rid
        self.results.setdefault(rid, queue.Queue())
        self.client.async_stream_infer(model, inputs, request_id=rid,
                                       enable_empty_final_response=True)

    def collect(self, rid: str) -> tuple[list[str], str | None]:
        pieces: list[str] = []
        q = self.results[rid]
        while True:
            result, error = q.get(timeout=TIMEOUT)
            if error is not None:
                return pieces, str(error)
            out = result.as_numpy("text_output")
            if out is not None and out.size:
                pieces.append(out.reshape(-1)[0].decode())
            if result.get_response().parameters["triton_final_response"].bool_param:
                return pieces, None

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@contextmanager
def served_repository(engine: Path, where: Path, settings: Any = None,
                      embedding: Path | None = None) -> Iterator[Any]:
    """The engine's repository (default RepoSettings; ``embedding``: an onnx engine whose
    models go beside the LLM's) rendered into ``where/repo`` and served on free ports; the
    server has ``.repo``, its log is ``where/tritonserver.log``."""
    from tritonllm.builders.repository import render_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = where / "repo"
    render_repository(engine, repo, settings or RepoSettings(), embedding=embedding)
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    startup_timeout=300,
                                    log_file=where / "tritonserver.log")) as srv:
        srv.repo = repo
        yield srv


def metric(server: Any, name: str, value: str | None = None) -> float:
    """The sum of a metric's samples; ``value``: only the series of that value of the family's
    own label (``metric(server, MC.REQUEST_METRICS, "active")``)."""
    body = urllib.request.urlopen(server.url_metrics, timeout=10).read().decode()
    label = f'{MC.family(name).label}="{value}"' if value is not None else ""
    values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
              if line.startswith(name + "{") and label in line]
    return sum(values)


def wait_engine_idle(server: Any, tokens_at_least: float = 0) -> None:
    """Polls the engine's own gauges (server-side state; nothing of ours to wait on).

    The gauges are refreshed every 0.25 s, so right after a burst they may still show the
    state from before it. ``tokens_at_least``: first wait until the token counter has reached
    it, i.e. until a refresh that saw the burst's tokens (gauges and counter are set together).
    """
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
            metric(server, MC.GENERATION_TOKENS) < tokens_at_least
            or metric(server, MC.REQUEST_METRICS, "active")):
        time.sleep(0.1)
    assert metric(server, MC.GENERATION_TOKENS) >= tokens_at_least
    assert metric(server, MC.REQUEST_METRICS, "active") == 0  # held: running or waiting


def stop_by_id(server: Any, request_ids: list[str], stream: Stream | None = None) -> None:
    """The contract's way to stop LLM requests: ``stop`` with the same request id (all sent
    at once on one stream, then every final response collected). ``stream``: an open one to
    send them on (its owner closes it), else one opened here."""
    s = stream or Stream(server)
    try:
        for rid in request_ids:
            s.send(rid, "tensorrt_llm", [
                tensor("input_ids", np.array([[1]], np.int32), "INT32"),
                tensor("input_lengths", np.array([[1]], np.int32), "INT32"),
                tensor("request_output_len", np.array([[1]], np.int32), "INT32"),
                tensor("stop", np.array([[True]]), "BOOL")])
        for rid in request_ids:
            _, err = s.collect(rid)
            assert err is None
    finally:
        if stream is None:
            s.close()


def tensor(name: str, value: Any, dtype: str) -> Any:
    import tritonclient.grpc as grpcclient

    x = grpcclient.InferInput(name, list(value.shape), dtype)
    x.set_data_from_numpy(value)
    return x
