"""How the client's HTTP transport reads a ``generate_stream`` body whose connection ends.

A scripted server on loopback (a socket in a thread, not Triton: the point is the exact bytes
of a chunked response cut at a chosen place, which a real server cannot be made to send on
cue). A killed tritonserver, or a guard in front of one, leaves the client's socket closed
between two chunks: that must read as ``Unavailable``, never as a stream that ended well.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from tritonllm.client import Unavailable
from tritonllm.client._logic import build_request, parse_url
from tritonllm.client._transport import HttpTransport

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


def _chunk(event: dict[str, object]) -> bytes:
    data = b"data: " + json.dumps(event).encode() + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


EVENTS = [{"text_output": "Once"}, {"text_output": " upon", "finish_reason": "length"}]


@pytest.fixture
def server() -> Iterator[tuple[int, list[bytes]]]:
    """Answers each connection with the next scripted byte string, then closes it."""
    scripts: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:  # the head; then the JSON body of its length
                    buf += conn.recv(65536)
                head, _, body = buf.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(scripts.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, scripts
    listener.close()


def _read_all(port: int) -> list[dict[str, object]]:
    transport = HttpTransport(parse_url(f"http://127.0.0.1:{port}"))
    spec = build_request("ensemble", "Once", 8, stream=True, sampling={})
    call = transport.start(spec, timeout=5.0)
    events = []
    while (response := call.next(5.0)) is not None:
        events.append(dict(response[0]))
    return events


def test_a_complete_stream_ends_after_its_last_event(server: tuple[int, list[bytes]]) -> None:
    port, scripts = server
    scripts.append(HEAD + b"".join(_chunk(e) for e in EVENTS) + b"0\r\n\r\n")
    assert _read_all(port) == EVENTS


@pytest.mark.parametrize("cut", ["between chunks", "inside a chunk", "inside a size line"])
def test_a_stream_whose_connection_closes_early_is_unavailable(
        server: tuple[int, list[bytes]], cut: str) -> None:
    port, scripts = server
    first, second = _chunk(EVENTS[0]), _chunk(EVENTS[1])
    tail = {"between chunks": b"", "inside a chunk": second[: len(second) // 2],
            "inside a size line": second[:1]}[cut]
    scripts.append(HEAD + first + tail)
    with pytest.raises(Unavailable, match="connection to the server broke"):
        _read_all(port)
