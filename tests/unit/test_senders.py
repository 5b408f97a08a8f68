"""GuardedSender: no sender call after the final response (Triton 2.51 segfaults on it).

The sender here is a stand-in for the Python backend's response sender (which exists only
inside a running Triton stub); it fails the test the way the server would crash.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tritonllm.ensembles.senders import GuardedSender

FINAL = 1


class FreedAfterFinal:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, int]] = []
        self.freed = False
        self.late_calls = 0
        self.cancelled = False

    def send(self, response: Any = None, flags: int = 0) -> None:
        if self.freed:
            self.late_calls += 1
        self.sent.append((response, flags))
        self.freed = bool(flags & FINAL)

    def is_cancelled(self) -> bool:
        if self.freed:
            self.late_calls += 1
        return self.cancelled


def test_final_flag_and_no_use_after_final() -> None:
    raw = FreedAfterFinal()
    g = GuardedSender(raw, FINAL)
    g.send("a", final=False)
    raw.cancelled = True
    assert g.is_cancelled()
    g.send("b", final=True)
    assert raw.sent == [("a", 0), ("b", FINAL)] and g.done
    assert g.is_cancelled() is False
    with pytest.raises(RuntimeError, match="after its final response"):
        g.send("c", final=True)
    assert raw.late_calls == 0


def test_a_polling_thread_never_touches_a_finished_sender() -> None:
    for _ in range(200):
        raw = FreedAfterFinal()
        g = GuardedSender(raw, FINAL)
        go = threading.Event()

        def poll(g: GuardedSender = g, go: threading.Event = go) -> None:
            go.wait()
            for _ in range(50):
                g.is_cancelled()

        t = threading.Thread(target=poll)
        t.start()
        go.set()
        for i in range(5):
            g.send(i, final=i == 4)
        t.join()
        assert raw.late_calls == 0


class FakePbUtils:
    """The parts of triton_python_backend_utils that TritonSink uses (it exists only in a stub)."""

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL

    class TritonError:
        INTERNAL, INVALID_ARG = 13, 3

        def __init__(self, message: str, code: int) -> None:
            self.message, self.code = message, code

    @staticmethod
    def Tensor(name: str, value: Any) -> tuple[str, Any]:
        return name, value

    class InferenceResponse:
        def __init__(self, output_tensors: Any = None, error: Any = None) -> None:
            self.output_tensors, self.error = output_tensors, error


def test_the_triton_sink_sends_tensors_then_one_final_error_at_most() -> None:
    from tritonllm.ensembles.senders import TritonSink

    raw = FreedAfterFinal()
    sink = TritonSink(raw, FakePbUtils)
    sink.send({"x": 1}, final=False)
    sink.fail("bad", FakePbUtils.TritonError.INVALID_ARG)
    sink.fail("again", FakePbUtils.TritonError.INTERNAL)  # the final response went out: no-op
    assert raw.late_calls == 0 and len(raw.sent) == 2
    (first, flags0), (last, flags1) = raw.sent
    assert first.output_tensors == [("x", 1)] and flags0 == 0
    assert (last.error.message, last.error.code, flags1) == ("bad", 3, FINAL)
    assert not sink.is_cancelled()
    other = TritonSink(FreedAfterFinal(), FakePbUtils)
    other.error("engine failed")
    with pytest.raises(RuntimeError):
        other.send({}, final=True)
