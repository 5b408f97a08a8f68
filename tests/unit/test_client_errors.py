"""How the client classifies what a draining or restarting Triton says, and how a gRPC call
ends on an error response. No server: the messages are the ones Triton 2.51 sent to
tritonclient 2.51 while it stopped under load (recorded for tests/integration/test_drain.py).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from tritonllm.client import (
    Cancelled,
    ClientError,
    InvalidRequest,
    ModelNotFound,
    RetryPolicy,
    ServerError,
    Unavailable,
)
from tritonllm.client._errors import ErrorInfo, classify, make_error
from tritonllm.client._logic import Exchange, Piece, build_request
from tritonllm.client._transport import _AioCall, _GrpcCall, _not_ours

RID = "7006c72c5fd6445da6bc508af2934bae"
STOPPING = ("Server is stopping, scheduler for model has stopped accepting new inference "
            "requests")

# (message, gRPC status or None inside a stream) as Triton 2.51 sent them while draining
DRAINING = [
    # an ensemble step refused once the schedulers stopped: in flight or new, message only
    (f"in ensemble 'ensemble', [request id: {RID}] {STOPPING}", None),
    # the BLS model (or any plain model) refused in its stream
    (f"[request id: {RID}] {STOPPING}", None),
    (f"[request id: raw] {STOPPING}", None),
    # models unloading: in a stream (no status) and from metadata calls (NOT_FOUND)
    ("Request for unknown model: 'ensemble' has no available versions", None),
    ("Request for unknown model: 'tensorrt_llm_bls' has no available versions", None),
    ("Request for unknown model: 'ensemble' has no available versions", "StatusCode.NOT_FOUND"),
    ("Request for unknown model: 'tensorrt_llm' has no available versions", "NOT_FOUND"),
    # health / metadata calls, the BLS model's own call into the LLM model
    ("Server not ready", "StatusCode.UNAVAILABLE"),
    ("Model tensorrt_llm - Error when running inference: Server not ready", None),
    ("'ensemble' version 1 is not at ready state", None),
    # the gRPC endpoint closing at the end of the exit timeout
    ("Stream removed (Socket closed (GOAWAY received; Error code: 0; Debug Text: ))",
     "StatusCode.UNAVAILABLE"),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:38579: "
     "Failed to connect to remote host: Connection refused", "StatusCode.UNAVAILABLE"),
    # grpc.aio when the server went away while the call was being written
    ("Internal error from Core", "StatusCode.INTERNAL"),
]


@pytest.mark.parametrize(("message", "status"), DRAINING)
def test_a_draining_server_is_unavailable(message: str, status: str | None) -> None:
    assert classify(ErrorInfo(message, status)) is Unavailable


@pytest.mark.parametrize("message", [
    "Request for unknown model: 'ensemble' has no available versions",
    f"[request id: {RID}] {STOPPING}",
])
@pytest.mark.parametrize("http_status", [400, 404, 500, 503])
def test_a_draining_server_is_unavailable_over_http(message: str, http_status: int) -> None:
    assert classify(ErrorInfo(message, http_status=http_status)) is Unavailable


# A model whose Python stub died (seen in the soak, tests/reliability): every transport's form.
DEAD_STUB = "Stub process 'tensorrt_llm_bls_0_0' is not healthy."


@pytest.mark.parametrize("info", [
    ErrorInfo(DEAD_STUB),
    ErrorInfo(f"[request id: {RID}] {DEAD_STUB}"),
    ErrorInfo(f"in ensemble 'ensemble', {DEAD_STUB}"),
    ErrorInfo(DEAD_STUB, "StatusCode.INTERNAL"),
    ErrorInfo(DEAD_STUB, http_status=400),
    ErrorInfo(DEAD_STUB, http_status=500),
])
def test_a_dead_stub_is_unavailable_not_a_bad_request(info: ErrorInfo) -> None:
    assert classify(info) is Unavailable


@pytest.mark.parametrize("info", [
    ErrorInfo("Request for unknown model: 'nosuchmodel' is not found"),
    ErrorInfo("Request for unknown model: 'nosuchmodel' is not found", "StatusCode.NOT_FOUND"),
    ErrorInfo("Request for unknown model: 'nosuchmodel' is not found", "INVALID_ARGUMENT"),
    ErrorInfo("Request for unknown model: 'ensemble' version 3 is not found", "NOT_FOUND"),
    ErrorInfo("Request for unknown model: 'nosuchmodel' is not found", http_status=400),
    ErrorInfo("Request for unknown model: 'nosuchmodel' is not found", http_status=404),
])
def test_an_unknown_model_stays_model_not_found(info: ErrorInfo) -> None:
    assert classify(info) is ModelNotFound


@pytest.mark.parametrize(("info", "cls"), [
    (ErrorInfo("Internal error from Core"), ServerError),  # only grpc.aio's status says it
    (ErrorInfo("boom", "StatusCode.INTERNAL"), ServerError),
    (ErrorInfo("in ensemble 'ensemble', text_input: must not be empty"), InvalidRequest),
])
def test_other_errors_are_not_taken_for_a_drain(info: ErrorInfo, cls: type[ClientError]) -> None:
    assert classify(info) is cls


def test_a_draining_error_is_retried_before_text_and_raised_after() -> None:
    policy = RetryPolicy(attempts=3, initial_backoff=0.1, jitter=0)
    ex = Exchange("r", policy=policy, timeout=None, now=0.0)
    ex.begin_attempt(0.0)
    assert ex.on_error(make_error(ErrorInfo(DRAINING[0][0])), 0.1) == pytest.approx(0.1)
    ex.begin_attempt(0.2)
    assert ex.on_error(make_error(ErrorInfo(DRAINING[3][0], DRAINING[5][1])), 0.3) \
        == pytest.approx(0.2)
    ex.begin_attempt(0.5)
    with pytest.raises(Unavailable) as info:
        ex.on_error(make_error(ErrorInfo(DRAINING[1][0])), 0.6)
    assert info.value.attempts == 3 and info.value.request_id == "r"

    streaming = Exchange("s", policy=policy, timeout=None, now=0.0)
    streaming.begin_attempt(0.0)
    streaming.on_response(Piece("some text"), False, 0.1)
    with pytest.raises(Unavailable) as info:  # mid-stream: never sent again
        streaming.on_error(make_error(ErrorInfo(DRAINING[0][0])), 0.2)
    assert info.value.attempts == 1


def test_a_cancelled_status_the_client_did_not_cause_is_unavailable() -> None:
    server = make_error(ErrorInfo("CANCELLED", "StatusCode.CANCELLED"))
    assert isinstance(server, Cancelled)
    assert isinstance(_not_ours(server), Unavailable)
    in_stream = make_error(ErrorInfo("request 7 was cancelled"))  # a message, not a status
    assert _not_ours(in_stream) is in_stream


# --- a call ends on an error response, without a final flag -----------------------------------

class _Stream:
    """The pooled stream a _GrpcCall hands back: counts resets."""

    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


class _Pool:
    def __init__(self) -> None:
        self.returned: list[_Stream] = []

    def give_back(self, stream: _Stream) -> None:
        self.returned.append(stream)


def _spec() -> Any:
    return build_request("ensemble", "hi", 4, stream=True, sampling={}, request_id="r1")


def _sync_call(*items: tuple[Any, Any]) -> tuple[_GrpcCall, _Stream, _Pool]:
    q: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
    for item in items:
        q.put(item)
    stream, pool = _Stream(), _Pool()
    return _GrpcCall(pool, stream, _spec(), q), stream, pool  # type: ignore[arg-type,unused-ignore]


@pytest.mark.parametrize(("message", "status"), DRAINING[:4])
def test_sync_call_raises_a_stream_error_at_once_and_stops_its_stream(
        message: str, status: str | None) -> None:
    call, stream, pool = _sync_call((None, InferenceServerException(message, status)))
    with pytest.raises(Unavailable, match=r"stopping|no available"):
        call.next(timeout=5.0)  # nothing else is queued: waiting on would hang for 5 s
    assert stream.resets == 1 and pool.returned == [stream]
    call.cancel()
    call.release()
    assert stream.resets == 1 and pool.returned == [stream]  # given back exactly once


def test_sync_call_cancelled_by_the_server_is_unavailable_by_the_client_cancelled() -> None:
    cancelled = InferenceServerException("CANCELLED", "StatusCode.CANCELLED")
    call, _, _ = _sync_call((None, cancelled))
    with pytest.raises(Unavailable):
        call.next(timeout=1.0)
    call, _, _ = _sync_call((None, cancelled))
    call.cancel()  # e.g. Stream.cancel() from another thread, then the blocked read wakes up
    with pytest.raises(Cancelled):
        call.next(timeout=1.0)


class _Responses:
    """What tritonclient.grpc.aio's stream_infer returns: (result, error) pairs, cancel()."""

    def __init__(self, items: list[tuple[Any, Any]]) -> None:
        self._items = items
        self.cancelled = 0

    def __aiter__(self) -> AsyncIterator[tuple[Any, Any]]:
        return self

    async def __anext__(self) -> tuple[Any, Any]:
        if not self._items:
            raise StopAsyncIteration
        return self._items.pop(0)

    def cancel(self) -> None:
        self.cancelled += 1


def test_aio_call_raises_a_stream_error_and_cancels_the_call() -> None:
    responses = _Responses([(None, InferenceServerException(DRAINING[0][0]))])
    call = _AioCall(grpc, responses, _spec(), None)
    with pytest.raises(Unavailable, match="Server is stopping"):
        asyncio.run(call.next(None))
    assert responses.cancelled == 1


def test_aio_stream_ending_before_the_final_response_is_unavailable() -> None:
    call = _AioCall(grpc, _Responses([]), _spec(), None)
    with pytest.raises(Unavailable, match="before the final response"):
        asyncio.run(call.next(None))
