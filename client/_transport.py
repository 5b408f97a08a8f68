"""Transports: move a :class:`~._logic.RequestSpec` to the server and its responses back.

Each transport raises only :class:`~._errors.ClientError` s (classified by
:func:`~._errors.make_error`, chained from the tritonclient / socket error) and knows nothing
about retries, deltas or completions (that is :mod:`._logic`).

- :class:`GrpcTransport` (sync, ``tritonclient.grpc``): a pool of clients, each holding one
  bidirectional stream that carries one request at a time and is reused for the next. One
  request per stream, because an error response on a gRPC stream carries no request id: with
  one request in flight the error is that request's. Cancelling stops the stream with
  ``stop_stream(cancel_requests=True)`` (the server sees the request cancelled); the client
  opens a fresh stream on its next use. The per-call deadline is kept on the client side
  (cancel, then Timeout), since the stream outlives one request. An idle stream is stopped as
  soon as its connection goes (the server sent GOAWAY or died): Triton waits for every open
  stream before it exits, and a request on such a stream would reach a server that has
  unloaded its models.
- :class:`AioGrpcTransport` (asyncio, ``tritonclient.grpc.aio``): one ``ModelStreamInfer``
  call per request on a shared channel, with the call's deadline as gRPC deadline; cancelling
  cancels the call. Once the channel's connection goes, a call waits ``GONE_SILENCE_S`` at
  most for its next response, as the sync transport's requests do.
- :class:`HttpTransport` (sync, standard library): Triton's generate extension,
  ``POST /v2/models/{m}/generate`` (one JSON response) and ``/generate_stream`` (server-sent
  events). tritonclient.http cannot stream from decoupled models. Closing a stream closes its
  connection. The asyncio client runs it in worker threads (:class:`ThreadedTransport`).

Unary requests (``infer``: one request, one response, for a model that is not decoupled, such
as the embedding model) go over gRPC's ``ModelInfer`` and HTTP's ``/v2/models/{m}/infer``
(KServe v2 JSON, any shape), with the call's deadline; they answer the outputs as numpy arrays.

Every streamed request asks for an empty final response (``triton_enable_empty_final_response``), so
the end of a decoupled model's stream is always seen. An error response ends the request
whatever flags it carries (Triton's own errors inside a stream carry no
``triton_final_response``): the call is raised at once and its stream stopped, never left
waiting for a final flag; a stream that ends before the final response is Unavailable. A
CANCELLED status the client did not cause (a server shutting down cancels what it still has)
is Unavailable, not Cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import queue
import socket
import ssl as ssl_lib
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Protocol

from tritonllm.client._errors import (
    Cancelled,
    ClientError,
    ErrorInfo,
    ServerError,
    Timeout,
    Unauthorized,
    Unavailable,
    make_error,
)
from tritonllm.client._logic import Endpoint, RequestSpec, json_outputs
from tritonllm.client._types import Health, ModelStatus

__all__ = [
    "AioGrpcTransport",
    "AsyncCall",
    "AsyncTransport",
    "GrpcTransport",
    "HttpTransport",
    "Response",
    "SyncCall",
    "SyncTransport",
    "ThreadedTransport",
    "make_async_transport",
    "make_sync_transport",
]

#: One response: its outputs (name → numpy array or JSON value) and whether it is the last.
Response = tuple[Mapping[str, Any], bool]
FINAL_PARAM = "triton_final_response"
EMPTY_FINAL_PARAM = "triton_enable_empty_final_response"
STREAM_ERROR_WAIT_S = 1.0  # how long a dead stream's reason may take to reach its callback
#: Once a request's connection is gone (the server sent GOAWAY: Triton does when its exit timeout
#: ends), how long it may go without a response before it is given up as Unavailable. Triton
#: 2.51 can leave an ensemble request unanswered when it stops (a step refused while another
#: runs) and then waits for every open stream before it exits.
GONE_SILENCE_S = 5.0
_GONE = object()  # queued on a pooled stream whose connection went, in place of an error
READ_SIZE = 64 << 10  # the most bytes one read of an HTTP response body asks for


def _gone_error(spec: RequestSpec) -> Unavailable:
    return Unavailable(f"request {spec.request_id}: the server closed the connection and sent "
                       f"nothing more for {GONE_SILENCE_S:g}s", request_id=spec.request_id,
                       status="UNAVAILABLE")


class SyncCall(Protocol):
    def next(self, timeout: float | None) -> Response | None:
        """The next response (None: the server ended the stream); ClientError on failure."""

    def cancel(self) -> None:
        """Stop the request on the server; a thread blocked in next() gets Cancelled."""

    def release(self) -> None:
        """The request has ended; give its resources back."""


class SyncTransport(Protocol):
    def start(self, spec: RequestSpec, timeout: float | None) -> SyncCall: ...
    def infer(self, spec: RequestSpec, timeout: float | None) -> dict[str, Any]: ...
    def health(self, timeout: float | None) -> Health: ...
    def models(self, timeout: float | None) -> list[ModelStatus]: ...
    def metadata(self, model: str, timeout: float | None) -> dict[str, Any]: ...
    def config(self, model: str, timeout: float | None) -> dict[str, Any]: ...
    def control(self, model: str, action: str, timeout: float | None) -> None: ...
    def close(self) -> None: ...


class AsyncCall(Protocol):
    async def next(self, timeout: float | None) -> Response | None: ...
    def cancel(self) -> None: ...
    def release(self) -> None: ...


class AsyncTransport(Protocol):
    async def start(self, spec: RequestSpec, timeout: float | None) -> AsyncCall: ...
    async def infer(self, spec: RequestSpec, timeout: float | None) -> dict[str, Any]: ...
    async def health(self, timeout: float | None) -> Health: ...
    async def models(self, timeout: float | None) -> list[ModelStatus]: ...
    async def metadata(self, model: str, timeout: float | None) -> dict[str, Any]: ...
    async def config(self, model: str, timeout: float | None) -> dict[str, Any]: ...
    async def control(self, model: str, action: str, timeout: float | None) -> None: ...
    async def close(self) -> None: ...


def control_error(model: str, action: str, err: ClientError) -> ClientError:
    """A load/unload refusal, saying what the server needs when it is the control mode."""
    text = str(err)
    if "explicit model load / unload is not allowed" in text or "polling is enabled" in text:
        return type(err)(f"{action} {model}: the server does not take model control requests "
                         "(start it with --model-control-mode explicit): " + text,
                         status=err.status)
    return type(err)(f"{action} {model}: {text}", status=err.status)


def _deadline_error(spec: RequestSpec, timeout: float | None) -> Timeout:
    return Timeout(f"request {spec.request_id}: no response within the deadline "
                   f"({timeout or 0:g}s)", request_id=spec.request_id, status="DEADLINE_EXCEEDED")


def _from_triton(exc: Exception) -> ClientError:
    """A tritonclient InferenceServerException (or grpc.RpcError) → ClientError."""
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        details = getattr(exc, "details", None)
        msg = (details() if callable(details) else None) or str(exc)
        return make_error(ErrorInfo(msg, str(code())))
    message = getattr(exc, "message", None)
    status = getattr(exc, "status", None)
    msg = message() if callable(message) else str(exc)
    st = status() if callable(status) else None
    return make_error(ErrorInfo(msg or str(exc), st))


def _not_ours(err: ClientError) -> ClientError:
    """``err``, or Unavailable for a gRPC CANCELLED status the client did not ask for.

    Only call this where the client has not cancelled the call itself: then CANCELLED means the
    server dropped the call, as a shutting-down Triton does with what it still has.
    """
    if isinstance(err, Cancelled) and err.status == "CANCELLED":
        return Unavailable(f"the server cancelled the call: {err.message}",
                           request_id=err.request_id, status=err.status)
    return err


def _outputs(result: Any) -> Response:
    """A tritonclient InferResult → (outputs, final)."""
    resp = result.get_response()
    outputs = {o.name: result.as_numpy(o.name) for o in resp.outputs}
    final = resp.parameters[FINAL_PARAM].bool_param if FINAL_PARAM in resp.parameters else True
    return outputs, final


def _result_outputs(result: Any) -> dict[str, Any]:
    """A unary tritonclient InferResult → its outputs (name → numpy array)."""
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def _index_rows(rows: Any) -> list[ModelStatus]:
    return [ModelStatus(str(r.get("name", "")), r.get("version") or None, r.get("state") or None,
                        str(r.get("reason", ""))) for r in rows]


def _grpc_inputs(grpcclient: Any, spec: RequestSpec) -> list[Any]:
    inputs = []
    for t in spec.inputs:
        x = grpcclient.InferInput(t.name, list(t.value.shape), t.wire_dtype)
        x.set_data_from_numpy(t.value)
        inputs.append(x)
    return inputs


@dataclass(frozen=True)
class ClientTls:
    """TLS files of a client (PEM paths): the CA that signed the server's certificate, and for
    mutual TLS the client's own certificate chain and key."""

    root_certificates: str | None = None
    certificate_chain: str | None = None
    private_key: str | None = None


def _grpc_options(endpoint: Endpoint, tls: ClientTls | None) -> dict[str, Any]:
    t = tls or ClientTls()
    return {"url": endpoint.address, "ssl": endpoint.ssl, "root_certificates": t.root_certificates,
            "certificate_chain": t.certificate_chain, "private_key": t.private_key}


# --- gRPC, sync -------------------------------------------------------------------------------

_POLLER_STOP_WAIT_S = 2.0  # grpc's poller wakes every 0.2 s


def _close_when_unpolled(client: Any, poller: Any) -> None:
    deadline = time.monotonic() + _POLLER_STOP_WAIT_S
    while getattr(poller, "polling", False) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close()


class _PooledStream:
    """One tritonclient.grpc client and its (lazily started, reusable) stream."""

    def __init__(self, client: Any, headers: Mapping[str, str] | None) -> None:
        self.client = client
        self.headers = dict(headers) if headers else None
        self.responses: queue.SimpleQueue[tuple[Any, Any]] | None = None
        self.lock = threading.Lock()
        self._changed: Callable[[Any], None] | None = None

    def watch(self, grpc: Any, on_lost: Callable[[_PooledStream], None]) -> None:
        """Call ``on_lost(self)`` (on a gRPC thread) each time the connection, once up, goes.

        The channel leaves READY when the server sends GOAWAY — Triton does so when its exit
        timeout ends — or the connection breaks, while a stream on it may still be open.
        """
        channel = getattr(self.client, "_channel", None)  # tritonclient.grpc's grpc.Channel
        if channel is None:
            return
        up = threading.Event()
        ready = grpc.ChannelConnectivity.READY

        def changed(state: Any) -> None:
            if state == ready:
                up.set()
            elif up.is_set():
                up.clear()
                on_lost(self)

        channel.subscribe(changed, try_to_connect=False)
        self._changed = changed

    def close(self) -> None:
        """Stop the stream (cancelling what is in flight) and close the client's channel.

        grpc's connectivity poller (started by ``subscribe``) wakes every 0.2 s and stops only
        once it sees no subscriber; a channel closed while it is between two polls makes it
        raise in its thread ("Cannot monitor channel state: Channel closed!"). So the channel
        is closed once the poller has stopped: here when it is not running, else on a short
        daemon thread, so that close() does not wait.
        """
        self.client.stop_stream(cancel_requests=True)
        channel = getattr(self.client, "_channel", None)
        if self._changed is not None and channel is not None:
            channel.unsubscribe(self._changed)
            self._changed = None
        poller = getattr(channel, "_connectivity_state", None)  # grpc's; None if it changed
        if poller is None or not getattr(poller, "polling", False):
            self.client.close()
            return
        threading.Thread(target=_close_when_unpolled, args=(self.client, poller), daemon=True,
                         name="tritonllm-channel-close").start()

    def connection_gone(self) -> None:
        """Tell the request reading this stream that its connection went."""
        with self.lock:
            if self.responses is not None:
                self.responses.put((None, _GONE))

    @staticmethod
    def _callback(q: queue.SimpleQueue[tuple[Any, Any]], result: Any, error: Any) -> None:
        q.put((result, error))

    def send(self, grpcclient: Any, spec: RequestSpec) -> queue.SimpleQueue[tuple[Any, Any]]:
        with self.lock:
            if self.responses is None:
                q: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
                try:
                    self.client.start_stream(callback=functools.partial(self._callback, q),
                                             headers=self.headers)
                except grpcclient.InferenceServerException as e:
                    raise _from_triton(e) from e
                self.responses = q
            q = self.responses
        try:
            self.client.async_stream_infer(spec.model, _grpc_inputs(grpcclient, spec),
                                           request_id=spec.request_id,
                                           enable_empty_final_response=True)
        except grpcclient.InferenceServerException as e:
            # The stream died before the request went out; its callback gets (or has got)
            # the reason (refused connection, restricted protocol, ...).
            cause: Exception = e
            try:
                _, error = q.get(timeout=STREAM_ERROR_WAIT_S)
                if error is not None and error is not _GONE:
                    cause = error
            except queue.Empty:
                pass
            self.reset()
            err = _not_ours(_from_triton(cause))
            if cause is e:
                err = Unavailable(f"the stream to the server broke: {err.message}")
            raise err from cause
        return q

    def reset(self) -> None:
        """Stop the stream, cancelling what is in flight; the next send starts a new one."""
        with self.lock:
            self.responses = None
            self.client.stop_stream(cancel_requests=True)


class _GrpcCall:
    def __init__(self, transport: GrpcTransport, stream: _PooledStream, spec: RequestSpec,
                 responses: queue.SimpleQueue[tuple[Any, Any]]) -> None:
        self._transport = transport
        self._stream = stream
        self._spec = spec
        self._responses = responses
        self._ended = False
        self._lock = threading.Lock()
        self._gone_at: float | None = None  # when the connection went (then: last response)

    def _end(self, reset: bool) -> None:
        """Give the stream back exactly once (first stopping it when ``reset``)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        if reset:
            self._stream.reset()
        self._transport.give_back(self._stream)

    def next(self, timeout: float | None) -> Response | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if self._gone_at is not None:
                silence = self._gone_at + GONE_SILENCE_S - time.monotonic()
                wait = silence if wait is None else min(wait, silence)
            try:
                result, error = self._responses.get(timeout=None if wait is None
                                                    else max(0.0, wait))
            except queue.Empty:
                self.cancel()
                if deadline is not None and time.monotonic() >= deadline:
                    raise _deadline_error(self._spec, timeout) from None
                raise _gone_error(self._spec) from None
            if error is not _GONE:
                break
            self._gone_at = time.monotonic()
        if self._gone_at is not None:
            self._gone_at = time.monotonic()
        if error is not None:
            # An error ends the request, final flag or not (Triton's own errors carry none).
            # The stream may be broken, or carry late responses of this request: start afresh.
            ours = self._ended  # cancel() from another thread came first: CANCELLED is ours
            self._end(reset=True)
            err = _from_triton(error)
            raise (err if ours else _not_ours(err)) from error
        return _outputs(result)

    def cancel(self) -> None:
        self._end(reset=True)

    def release(self) -> None:
        self._end(reset=False)


class GrpcTransport:
    """Sync gRPC: pooled ``tritonclient.grpc`` clients, one request per stream at a time."""

    def __init__(self, endpoint: Endpoint, headers: Mapping[str, str] | None = None,
                 tls: ClientTls | None = None) -> None:
        import grpc
        import tritonclient.grpc as grpcclient

        self._grpc = grpc
        self._g = grpcclient
        self._opts = _grpc_options(endpoint, tls)
        self._headers = dict(headers) if headers else None
        self._control = self._new_client()
        self._idle: list[_PooledStream] = []
        self._all: list[_PooledStream] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new_client(self) -> Any:
        try:
            return self._g.InferenceServerClient(**self._opts)
        except self._g.InferenceServerException as e:
            raise _from_triton(e) from e

    def give_back(self, stream: _PooledStream) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(stream)

    @staticmethod
    def _connection_lost(transport: weakref.ref[GrpcTransport], stream: _PooledStream) -> None:
        """Stop ``stream`` if it is idle; else its request waits GONE_SILENCE_S at most."""
        t = transport()
        if t is None:
            return
        with t._lock:
            if t._closed:
                return
            idle = stream in t._idle
            if idle:
                t._idle.remove(stream)
        if not idle:
            stream.connection_gone()
            return
        try:
            stream.reset()
        finally:
            t.give_back(stream)

    def start(self, spec: RequestSpec, timeout: float | None) -> SyncCall:
        with self._lock:
            if self._closed:
                raise ClientError("the client is closed")
            stream = self._idle.pop() if self._idle else None
        if stream is None:
            stream = _PooledStream(self._new_client(), self._headers)
            stream.watch(self._grpc, functools.partial(self._connection_lost, weakref.ref(self)))
            with self._lock:
                self._all.append(stream)
        try:
            responses = stream.send(self._g, spec)
        except ClientError:
            self.give_back(stream)
            raise
        return _GrpcCall(self, stream, spec, responses)

    def infer(self, spec: RequestSpec, timeout: float | None) -> dict[str, Any]:
        result = self._unary("infer", spec.model, _grpc_inputs(self._g, spec),
                             request_id=spec.request_id, timeout=timeout)
        return _result_outputs(result)

    def _unary(self, method: str, *args: Any, timeout: float | None, **kw: Any) -> Any:
        try:
            return getattr(self._control, method)(*args, headers=self._headers,
                                                  client_timeout=timeout, **kw)
        except self._g.InferenceServerException as e:
            raise _not_ours(_from_triton(e)) from e

    def health(self, timeout: float | None) -> Health:
        live = self._unary("is_server_live", timeout=timeout)
        ready = self._unary("is_server_ready", timeout=timeout)
        return Health(bool(live), bool(ready))

    def models(self, timeout: float | None) -> list[ModelStatus]:
        index = self._unary("get_model_repository_index", as_json=True, timeout=timeout)
        return _index_rows(index.get("models", []))

    def metadata(self, model: str, timeout: float | None) -> dict[str, Any]:
        return dict(self._unary("get_model_metadata", model, as_json=True, timeout=timeout))

    def config(self, model: str, timeout: float | None) -> dict[str, Any]:
        return dict(self._unary("get_model_config", model, as_json=True, timeout=timeout))

    def control(self, model: str, action: str, timeout: float | None) -> None:
        try:
            self._unary(f"{action}_model", model, timeout=timeout)
        except ClientError as e:
            raise control_error(model, action, e) from e

    def close(self) -> None:
        with self._lock:
            self._closed = True
            streams, self._all, self._idle = self._all, [], []
        for s in streams:
            s.close()
        self._control.close()


# --- gRPC, asyncio ----------------------------------------------------------------------------

def _cancelling() -> bool:
    """Whether the current task is being cancelled (Python 3.11+; False before)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return bool(cancelling()) if callable(cancelling) else False


class _AioCall:
    def __init__(self, grpc: Any, responses: Any, spec: RequestSpec, timeout: float | None,
                 gone: asyncio.Event | None = None) -> None:
        self._grpc = grpc
        self._responses = responses
        self._spec = spec
        self._timeout = timeout
        self._final = False
        self._cancelled = False
        self._expired = False  # cancelled here: silent too long after the connection went
        self._last = 0.0  # loop time of the last response
        self._watch: asyncio.Task[None] | None = None
        if gone is not None:
            loop = asyncio.get_running_loop()
            self._last = loop.time()
            self._watch = loop.create_task(self._expire_when_gone(gone))

    async def _expire_when_gone(self, gone: asyncio.Event) -> None:
        await gone.wait()
        loop = asyncio.get_running_loop()
        self._last = max(self._last, loop.time())
        while (left := self._last + GONE_SILENCE_S - loop.time()) > 0:
            await asyncio.sleep(left)
        self._expired = True
        self._responses.cancel()

    async def next(self, timeout: float | None) -> Response | None:
        try:
            result, error = await self._responses.__anext__()
        except StopAsyncIteration:
            self._stop_watch()
            if self._final:
                return None
            raise Unavailable(f"request {self._spec.request_id}: the server ended the stream "
                              "before the final response") from None
        except asyncio.CancelledError:
            if self._expired and not _cancelling():
                raise _gone_error(self._spec) from None
            raise
        except self._grpc.RpcError as e:
            self._stop_watch()
            err = _from_triton(e)
            if self._expired:
                err = _gone_error(self._spec)
            elif isinstance(err, Timeout):
                err = _deadline_error(self._spec, self._timeout)
            elif not self._cancelled:
                err = _not_ours(err)
            raise err from e
        if error is not None:  # ends the request, final flag or not
            self.cancel()
            raise _from_triton(error) from error
        self._last = asyncio.get_running_loop().time()
        response = _outputs(result)
        self._final = response[1]
        return response

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def cancel(self) -> None:
        self._cancelled = True
        self._stop_watch()
        self._responses.cancel()

    def release(self) -> None:
        """Nothing to give back: the server ends the call after the final response."""
        self._stop_watch()


class AioGrpcTransport:
    """Asyncio gRPC: one ``ModelStreamInfer`` call per request on a shared channel."""

    def __init__(self, endpoint: Endpoint, headers: Mapping[str, str] | None = None,
                 tls: ClientTls | None = None) -> None:
        import grpc
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as aioclient

        self._grpc = grpc
        self._g = grpcclient
        self._headers = dict(headers) if headers else None
        self._client = aioclient.InferenceServerClient(**_grpc_options(endpoint, tls))
        self._gone = asyncio.Event()  # set when the connection goes, then replaced
        self._watcher: asyncio.Task[None] | None = None

    def _gone_event(self) -> asyncio.Event | None:
        """The event the calls starting now wait on (None: the channel cannot be watched)."""
        channel = getattr(self._client, "_channel", None)  # tritonclient's grpc.aio.Channel
        if channel is None:
            return None
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(channel))
        return self._gone

    async def _watch(self, channel: Any) -> None:
        """Set (and replace) the gone event each time the connection, once up, goes."""
        ready = self._grpc.ChannelConnectivity.READY
        state = channel.get_state(try_to_connect=False)
        while True:
            await channel.wait_for_state_change(state)
            if state == ready:  # left READY (maybe back already): the old connection went
                gone, self._gone = self._gone, asyncio.Event()
                gone.set()
            state = channel.get_state(try_to_connect=False)

    async def start(self, spec: RequestSpec, timeout: float | None) -> AsyncCall:
        request = {"model_name": spec.model, "inputs": _grpc_inputs(self._g, spec),
                   "request_id": spec.request_id, "parameters": {EMPTY_FINAL_PARAM: True}}

        async def one_request() -> Any:
            yield request

        try:
            responses = self._client.stream_infer(one_request(), stream_timeout=timeout,
                                                  headers=self._headers)
        except self._g.InferenceServerException as e:
            raise _from_triton(e) from e
        return _AioCall(self._grpc, responses, spec, timeout, self._gone_event())

    async def infer(self, spec: RequestSpec, timeout: float | None) -> dict[str, Any]:
        result = await self._unary("infer", spec.model, _grpc_inputs(self._g, spec),
                                   request_id=spec.request_id, timeout=timeout)
        return _result_outputs(result)

    async def _unary(self, method: str, *args: Any, timeout: float | None, **kw: Any) -> Any:
        try:
            return await getattr(self._client, method)(*args, headers=self._headers,
                                                       client_timeout=timeout, **kw)
        except self._g.InferenceServerException as e:
            raise _not_ours(_from_triton(e)) from e

    async def health(self, timeout: float | None) -> Health:
        live = await self._unary("is_server_live", timeout=timeout)
        ready = await self._unary("is_server_ready", timeout=timeout)
        return Health(bool(live), bool(ready))

    async def models(self, timeout: float | None) -> list[ModelStatus]:
        index = await self._unary("get_model_repository_index", as_json=True, timeout=timeout)
        return _index_rows(index.get("models", []))

    async def metadata(self, model: str, timeout: float | None) -> dict[str, Any]:
        return dict(await self._unary("get_model_metadata", model, as_json=True,
                                      timeout=timeout))

    async def config(self, model: str, timeout: float | None) -> dict[str, Any]:
        return dict(await self._unary("get_model_config", model, as_json=True,
                                      timeout=timeout))

    async def control(self, model: str, action: str, timeout: float | None) -> None:
        try:
            await self._unary(f"{action}_model", model, timeout=timeout)
        except ClientError as e:
            raise control_error(model, action, e) from e

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        await self._client.close()


# --- HTTP (generate extension), sync ----------------------------------------------------------

def _http_error(e: urllib.error.HTTPError) -> ClientError:
    body = e.read().decode("utf-8", errors="replace")
    msg = body.strip()
    for line in body.splitlines():  # JSON body, or one SSE event
        line = line.removeprefix("data:").strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                msg = str(json.loads(line).get("error", msg))
            break
    return make_error(ErrorInfo(msg or e.reason or f"HTTP {e.code}", http_status=e.code))


def _network_error(e: BaseException) -> ClientError:
    if isinstance(e, (TimeoutError, socket.timeout)):
        return Timeout(f"no response within the deadline: {e}", status="DEADLINE_EXCEEDED")
    if isinstance(e, HTTPException) and not isinstance(e, OSError):  # IncompleteRead, ...
        return Unavailable(f"the connection to the server broke: {e!r}")
    reason = getattr(e, "reason", e)
    return Unavailable(f"cannot reach the server: {reason}")


class _HttpCall:
    """One HTTP ``generate`` / ``generate_stream`` response being read.

    Server-sent events are split into lines here, over ``read1``, and not with the response's
    ``readline``: on a chunked body whose connection closes between chunks (a killed server),
    ``http.client``'s ``readline`` swallows the ``IncompleteRead`` (its ``peek`` returns ``b""``
    and closes the response) and reports a clean end, so a broken stream would read as a
    complete one. ``read1`` raises ``IncompleteRead`` there, and returns ``b""`` only after the
    terminating chunk.
    """

    def __init__(self, response: Any, spec: RequestSpec) -> None:
        self._response = response
        self._spec = spec
        self._done = False
        self._buffer = b""

    def _readline(self) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            data = self._response.read1(READ_SIZE)
            if not data:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += data
        line, self._buffer = self._buffer[:end + 1], self._buffer[end + 1:]
        return line

    def _read_event(self) -> dict[str, Any] | None:
        data: list[str] = []
        while True:
            raw = self._readline()
            if not raw:
                return json.loads("".join(data)) if data else None
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if data:
                    return dict(json.loads("\n".join(data)))
                continue
            if line.startswith("data:"):
                data.append(line[5:].lstrip())

    def next(self, timeout: float | None) -> Response | None:
        if self._done:
            return None
        try:
            sock = getattr(getattr(self._response, "fp", None), "raw", None)
            sock = getattr(sock, "_sock", None)
            if sock is not None and timeout is not None:
                sock.settimeout(timeout)
            if not self._spec.stream:
                self._done = True
                return dict(json.loads(self._response.read())), True
            event = self._read_event()
        except (OSError, HTTPException, ValueError) as e:
            self.cancel()
            raise _network_error(e) if not isinstance(e, ValueError) else Unavailable(
                f"bad response from the server: {e}") from e
        if event is None:
            self._done = True
            self._response.close()
            return None
        if "error" in event:
            self.cancel()
            raise make_error(ErrorInfo(str(event["error"])), request_id=self._spec.request_id)
        return event, False

    def cancel(self) -> None:
        self._done = True
        self._response.close()

    def release(self) -> None:
        self.cancel()


class HttpTransport:
    """Sync HTTP over the standard library: Triton's generate extension for inference."""

    def __init__(self, endpoint: Endpoint, headers: Mapping[str, str] | None = None,
                 tls: ClientTls | None = None) -> None:
        self._base = endpoint.base_url
        self._headers = dict(headers or {})
        self._context = None
        if endpoint.ssl:
            t = tls or ClientTls()
            self._context = ssl_lib.create_default_context(cafile=t.root_certificates)
            if t.certificate_chain is not None:
                self._context.load_cert_chain(t.certificate_chain, t.private_key)

    def _open(self, path: str, body: dict[str, Any] | None, timeout: float | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self._headers, **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self._base + path, data=data, headers=headers,
                                     method="POST" if data is not None else "GET")
        try:
            return urllib.request.urlopen(req, timeout=timeout, context=self._context)
        except urllib.error.HTTPError as e:
            raise _http_error(e) from e
        except (urllib.error.URLError, OSError, HTTPException) as e:
            raise _network_error(e) from e

    def _json(self, path: str, body: dict[str, Any] | None, timeout: float | None) -> Any:
        with self._open(path, body, timeout) as r:
            try:
                raw = r.read()
            except (OSError, HTTPException) as e:
                raise _network_error(e) from e
        return json.loads(raw) if raw else {}

    def start(self, spec: RequestSpec, timeout: float | None) -> SyncCall:
        path = f"/v2/models/{urllib.parse.quote(spec.model)}/generate"
        return _HttpCall(self._open(path + ("_stream" if spec.stream else ""),
                                    spec.json_body(), timeout), spec)

    def infer(self, spec: RequestSpec, timeout: float | None) -> dict[str, Any]:
        body = self._json(f"/v2/models/{urllib.parse.quote(spec.model)}/infer",
                          spec.infer_body(), timeout)
        try:
            return json_outputs(body)
        except (KeyError, TypeError, ValueError) as e:
            raise ServerError(f"bad response from the server: {e!r}",
                              request_id=spec.request_id) from e

    def _probe(self, path: str, timeout: float | None) -> bool:
        try:
            with self._open(path, None, timeout):
                return True
        except (Unavailable, Unauthorized):
            raise
        except ClientError:
            return False

    def health(self, timeout: float | None) -> Health:
        return Health(self._probe("/v2/health/live", timeout),
                      self._probe("/v2/health/ready", timeout))

    def models(self, timeout: float | None) -> list[ModelStatus]:
        return _index_rows(self._json("/v2/repository/index", {}, timeout))

    def metadata(self, model: str, timeout: float | None) -> dict[str, Any]:
        return dict(self._json(f"/v2/models/{urllib.parse.quote(model)}", None, timeout))

    def config(self, model: str, timeout: float | None) -> dict[str, Any]:
        return dict(self._json(f"/v2/models/{urllib.parse.quote(model)}/config", None, timeout))

    def control(self, model: str, action: str, timeout: float | None) -> None:
        try:
            self._json(f"/v2/repository/models/{urllib.parse.quote(model)}/{action}", {},
                       timeout)
        except ClientError as e:
            raise control_error(model, action, e) from e

    def close(self) -> None:
        """Nothing to close: one connection per call."""


class _ThreadedCall:
    def __init__(self, call: SyncCall) -> None:
        self._call = call

    async def next(self, timeout: float | None) -> Response | None:
        return await asyncio.to_thread(self._call.next, timeout)

    def cancel(self) -> None:
        self._call.cancel()

    def release(self) -> None:
        self._call.release()


class ThreadedTransport:
    """An asyncio face on a sync transport: each blocking step runs in a worker thread."""

    def __init__(self, sync: SyncTransport) -> None:
        self._sync = sync

    async def start(self, spec: RequestSpec, timeout: float | None) -> AsyncCall:
        return _ThreadedCall(await asyncio.to_thread(self._sync.start, spec, timeout))

    async def infer(self, spec: RequestSpec, timeout: float | None) -> dict[str, Any]:
        return await asyncio.to_thread(self._sync.infer, spec, timeout)

    async def health(self, timeout: float | None) -> Health:
        return await asyncio.to_thread(self._sync.health, timeout)

    async def models(self, timeout: float | None) -> list[ModelStatus]:
        return await asyncio.to_thread(self._sync.models, timeout)

    async def metadata(self, model: str, timeout: float | None) -> dict[str, Any]:
        return await asyncio.to_thread(self._sync.metadata, model, timeout)

    async def config(self, model: str, timeout: float | None) -> dict[str, Any]:
        return await asyncio.to_thread(self._sync.config, model, timeout)

    async def control(self, model: str, action: str, timeout: float | None) -> None:
        await asyncio.to_thread(self._sync.control, model, action, timeout)

    async def close(self) -> None:
        self._sync.close()


def make_sync_transport(endpoint: Endpoint, headers: Mapping[str, str] | None,
                        tls: ClientTls | None) -> SyncTransport:
    if endpoint.protocol == "http":
        return HttpTransport(endpoint, headers, tls)
    return GrpcTransport(endpoint, headers, tls)


def make_async_transport(endpoint: Endpoint, headers: Mapping[str, str] | None,
                         tls: ClientTls | None) -> AsyncTransport:
    if endpoint.protocol == "http":
        return ThreadedTransport(HttpTransport(endpoint, headers, tls))
    return AioGrpcTransport(endpoint, headers, tls)
