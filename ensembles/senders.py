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
