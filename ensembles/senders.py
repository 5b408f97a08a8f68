"""A Triton response sender that is never touched after its final response.

The Python backend releases a request's response factory once the final response is sent;
``is_cancelled()`` on that sender afterwards dereferences freed memory and kills tritonserver
(SIGSEGV in ``TRITONBACKEND_ResponseFactoryIsCancelled``, Triton 2.51). A cancellation poller
on another thread races exactly like that, so every decoupled model wraps its senders here:
``send`` and ``is_cancelled`` take one lock, and after the final response ``is_cancelled``
answers False and ``send`` refuses.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy.typing as npt


class Sender(Protocol):
    """The two calls of ``triton_python_backend_utils`` response senders used here."""

    def send(self, response: Any = None, flags: int = 0) -> None: ...

    def is_cancelled(self) -> bool: ...


class GuardedSender:
    """Wraps one request's sender; ``final_flag`` is ``TRITONSERVER_RESPONSE_COMPLETE_FINAL``."""

    def __init__(self, sender: Sender, final_flag: int) -> None:
        self._sender = sender
        self._final_flag = final_flag
        self._lock = threading.Lock()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def send(self, response: Any, final: bool) -> None:
        """Send ``response``; raises RuntimeError after the final one."""
        with self._lock:
            if self._done:
                raise RuntimeError("response sender used after its final response")
            self._done = final
            self._sender.send(response, flags=self._final_flag if final else 0)

    def is_cancelled(self) -> bool:
        """Whether the client cancelled; False once the final response went out."""
        with self._lock:
            return not self._done and bool(self._sender.is_cancelled())


class ResponseSink(Protocol):
    """Where one request's responses go: the one sink type of our models.

    :class:`~tritonllm.ensembles.llm_service.LLMService` and
    :class:`~tritonllm.ensembles.bls.BLSPipeline` write to it; in production it is a
    :class:`TritonSink`, in tests a recorder.
    """

    def send(self, outputs: dict[str, npt.NDArray[Any]], final: bool) -> None: ...

    def error(self, message: str, final: bool = True) -> None: ...

    def is_cancelled(self) -> bool: ...


class TritonSink:
    """A :class:`ResponseSink` over one Triton request's response sender (guarded, see the
    module docstring). ``pb_utils`` is the stub's ``triton_python_backend_utils`` module,
    passed in because it exists only inside a Python-backend stub."""

    def __init__(self, sender: Sender, pb_utils: Any) -> None:
        self._pb = pb_utils
        self._sender = GuardedSender(sender, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def send(self, outputs: dict[str, npt.NDArray[Any]], final: bool) -> None:
        tensors = [self._pb.Tensor(name, value) for name, value in outputs.items()]
        self._sender.send(self._pb.InferenceResponse(output_tensors=tensors), final)

    def error(self, message: str, final: bool = True, code: int | None = None) -> None:
        """An error response (INTERNAL unless ``code`` is one of ``pb_utils.TritonError``'s)."""
        err = self._pb.TritonError(message, self._pb.TritonError.INTERNAL if code is None
                                   else code)
        self._sender.send(self._pb.InferenceResponse(error=err), final)

    def fail(self, message: str, code: int) -> None:
        """The final error response, unless the final response already went out."""
        if not self._sender.done:
            self.error(message, True, code)

    def is_cancelled(self) -> bool:
        return self._sender.is_cancelled()
