"""tritonllm.ensembles.cancellation: the one poller that notices cancelled requests."""

from __future__ import annotations

import threading

import pytest

from tritonllm.ensembles.cancellation import CancellationPoller


@pytest.fixture
def poller():  # type: ignore[no-untyped-def]
    p = CancellationPoller(period_s=3600)  # the thread never polls: rounds are driven here
    yield p
    p.close()


def test_cancel_is_called_once_and_only_for_cancelled_requests(poller) -> None:  # type: ignore[no-untyped-def]
    flags = {"a": False, "b": False}
    calls: list[str] = []
    for key in flags:
        poller.watch(key, lambda k=key: flags[k], lambda k=key: calls.append(k))
    assert poller.poll_once() == 0 and calls == []
    flags["b"] = True
    assert poller.poll_once() == 1
    assert poller.poll_once() == 0  # already handled: not again
    assert calls == ["b"] and len(poller) == 1


def test_unwatched_requests_are_not_asked(poller) -> None:  # type: ignore[no-untyped-def]
    asked: list[int] = []
    poller.watch(1, lambda: asked.append(1) or True, lambda: None)
    poller.unwatch(1)
    poller.unwatch(1)  # twice is fine
    assert poller.poll_once() == 0 and asked == []


def test_a_sender_that_cannot_tell_counts_as_cancelled(poller) -> None:  # type: ignore[no-untyped-def]
    def broken() -> bool:
        raise RuntimeError("sender gone")

    cancelled: list[int] = []
    poller.watch(7, broken, lambda: cancelled.append(7))
    assert poller.poll_once() == 1 and cancelled == [7]


def test_a_failing_cancel_does_not_stop_the_others(poller, caplog) -> None:  # type: ignore[no-untyped-def]
    def fails() -> None:
        raise RuntimeError("engine gone")

    done: list[str] = []
    poller.watch("bad", lambda: True, fails)
    poller.watch("good", lambda: True, lambda: done.append("good"))
    assert poller.poll_once() == 2
    assert done == ["good"]
    assert "cancelling request 'bad' failed" in caplog.text


def test_the_thread_notices_a_cancellation() -> None:
    p = CancellationPoller(period_s=0.01)
    seen = threading.Event()
    try:
        p.watch("x", lambda: True, seen.set)
        assert seen.wait(10)
    finally:
        p.close()


@pytest.mark.parametrize("period, share", [(0, 0.1), (0.1, 0), (0.1, 1)])
def test_bad_settings_are_refused(period: float, share: float) -> None:
    with pytest.raises(ValueError, match="period_s"):
        CancellationPoller(period_s=period, share=share)
