"""Ending a left request on the server (see "Stopping" in :mod:`._logic`).

When a stream to an ensemble is left early, the client cancels its gRPC call (Triton then stops
scheduling the ensemble's next steps) and hands the request id to a :class:`Stopper`, whose
thread sends the LLM model the contract's ``stop`` request for that id. A request to an llmapi
model gets the llmapi ``stop`` (same request id, to the model itself) besides the cancel; that
model answers a stop with a CANCELLED error, which is its success here. A thread, so that
leaving a stream never waits on the network (it may happen in a finaliser or on an event
loop). Best effort: a stop that fails is logged, and the request then runs to its end on the
server, as it would for any other tensorrtllm_backend client.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from tritonllm.client._errors import Cancelled, ClientError, Overloaded, Unavailable
from tritonllm.client._logic import (
    CLASSIC,
    RequestSpec,
    ensemble_steps,
    model_input_names,
    stop_request,
    stop_target,
)
from tritonllm.client._transport import SyncTransport
from tritonllm.contract import LLMAPI

log = logging.getLogger("tritonllm.client")
STOP_TIMEOUT_S = 10.0
STOP_RETRY_DELAYS_S = (0.05, 0.2, 1.0)  # when the server refuses a stop as busy


def _call(transport: SyncTransport, spec: RequestSpec) -> None:
    """Send ``spec`` and read its responses up to the final one."""
    call = transport.start(spec, STOP_TIMEOUT_S)
    while (response := call.next(STOP_TIMEOUT_S)) is not None:
        if response[1]:  # the final response
            call.release()
            return


class Stopper:
    """Sends ``stop`` for left ensemble and llmapi requests, on its own thread (started with
    the first stream).

    ``transport`` gives the sync transport to use; ``owns_transport``: close it on :meth:`close`.
    """

    def __init__(self, transport: Callable[[], SyncTransport], *,
                 owns_transport: bool = False) -> None:
        self._make_transport = transport
        self._owns = owns_transport
        self._transport: SyncTransport | None = None
        self._targets: dict[str, str | None] = {}
        self._queue: queue.SimpleQueue[tuple[str, str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the thread (once). Streams call this when they are made: ``stop`` runs in
        finalisers too, and a thread started there can deadlock, since a collection may run
        inside another thread's ``start()``, which holds a lock the new thread needs."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="tritonllm-stopper",
                                                daemon=True)
                self._thread.start()

    def stop(self, model: str, request_id: str, contract: str = CLASSIC) -> None:
        """Stop ``request_id`` of ``model`` on the server: for ``contract`` classic, if
        ``model`` is an ensemble; for ``LLMAPI``, by the llmapi ``stop``."""
        with self._lock:
            if self._closed:
                return
        if self._thread is None:  # only where no stream was made first (not from finalisers)
            self.start()
        self._queue.put((model, request_id, contract))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            model, request_id, contract = item
            for delay in (*STOP_RETRY_DELAYS_S, None):
                try:
                    self._send(model, request_id, contract)
                    break
                except (Overloaded, Unavailable) as e:
                    if delay is None:
                        log.warning("could not stop request %s of %s on the server: %s",
                                    request_id, model, e)
                    else:
                        time.sleep(delay)
                except ClientError as e:
                    log.warning("could not stop request %s of %s on the server: %s",
                                request_id, model, e)
                    break

    def _target(self, transport: SyncTransport, model: str) -> str | None:
        if model not in self._targets:
            steps = ensemble_steps(transport.config(model, STOP_TIMEOUT_S))
            self._targets[model] = stop_target(
                (step, model_input_names(transport.metadata(step, STOP_TIMEOUT_S)))
                for step in steps)
        return self._targets[model]

    def _send(self, model: str, request_id: str, contract: str) -> None:
        if self._transport is None:
            self._transport = self._make_transport()
        transport = self._transport
        if contract == LLMAPI:
            with contextlib.suppress(Cancelled):  # the llmapi model's answer to a stop
                _call(transport, stop_request(model, request_id, LLMAPI))
            return
        target = self._target(transport, model)
        if target is None:  # not an ensemble: cancelling the call reached the model
            return
        _call(transport, stop_request(target, request_id))

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Send the stops already asked for (up to ``timeout``), then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
        if self._owns and self._transport is not None:
            self._transport.close()
