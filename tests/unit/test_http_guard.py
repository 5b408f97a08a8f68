"""The HTTP guard (tritonllm.http_guard) against a scripted upstream on a loopback socket.

The upstream records the bytes it receives and answers what each test scripts; tests
synchronise on events and socket reads, never on sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tritonllm.http_guard import FORM_BODY_LIMIT, MAX_HEAD_BYTES, Head, HttpGuard, Refusal

TIMEOUT = 10


@dataclass
class Upstream:
    """Accepts connections; for each request head calls ``answer(conn, head_bytes, body)``."""

    answer: Callable[[socket.socket, bytes, bytes], None]
    received: list[bytes] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    if name.strip().lower() == b"transfer-encoding":  # read to the last chunk
                        while b"0\r\n\r\n" not in buf:
                            buf += conn.recv(65536)
                        length = buf.index(b"0\r\n\r\n") + 5
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                self.received.append(head + b"\r\n\r\n" + body)
                self.answer(conn, head, body)

    def close(self) -> None:
        self.sock.close()


def ok(conn: socket.socket, head: bytes, body: bytes) -> None:
    payload = json.dumps({"path": head.split(b" ")[1].decode(), "size": len(body)}).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                 b"\r\n\r\n%s" % (len(payload), payload))


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream(ok)
    yield u
    u.close()


def _guard(upstream: Upstream, **kwargs: object) -> HttpGuard:
    g = HttpGuard("127.0.0.1", 0, ("127.0.0.1", upstream.port), **kwargs)  # type: ignore[arg-type]
    g.start()
    return g


@pytest.fixture
def guard(upstream: Upstream) -> Iterator[HttpGuard]:
    g = _guard(upstream)
    yield g
    g.close()


def _client(guard: HttpGuard) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", guard.port), timeout=TIMEOUT)
    return s


def _read_response(s: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """One Content-Length framed response from ``s`` (``buf`` keeps what follows)."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise AssertionError(f"closed before a response: {bytes(buf)!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = int(Head.parse(head + b"\r\n\r\n").get("content-length") or 0)
    while len(rest) < length:
        data = s.recv(65536)
        if not data:
            raise AssertionError("closed inside a body")
        rest += data
    buf[:] = rest[length:]
    return head, rest[:length]


def _request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_big_form_body_is_refused_without_reaching_the_server(
        guard: HttpGuard, upstream: Upstream) -> None:
    body = b"x" * FORM_BODY_LIMIT
    with _client(guard) as s:
        s.sendall(_request("POST", "/v2/models/m/generate", body,
                           Content_Type="application/x-www-form-urlencoded"))
        head, answer = _read_response(s, bytearray())
        assert s.recv(1) == b""  # closed after the refusal
    assert head.startswith(b"HTTP/1.1 413 ")
    assert f"{FORM_BODY_LIMIT} bytes" in json.loads(answer)["error"]
    assert upstream.connections == 0 and guard.refused == 1


def test_small_form_bodies_and_json_bodies_pass_unchanged(guard: HttpGuard,
                                                          upstream: Upstream) -> None:
    small = _request("POST", "/a", b"{}", Content_Type="application/x-www-form-urlencoded")
    big_json = _request("POST", "/b", b"y" * (2 * FORM_BODY_LIMIT),
                        Content_Type="application/json")
    with _client(guard) as s:
        buf = bytearray()
        for raw in (small, big_json):  # keep-alive: one connection
            s.sendall(raw)
            head, _ = _read_response(s, buf)
            assert head.startswith(b"HTTP/1.1 200")
    assert upstream.received == [small, big_json]
    assert upstream.connections == 1


def test_pipelined_answers_keep_their_order(upstream: Upstream) -> None:
    def policy(head: Head) -> Refusal | None:
        return Refusal(503, "draining") if head.path == "/refused" else None

    g = _guard(upstream, policy=policy)
    try:
        with _client(g) as s:
            s.sendall(_request("POST", "/first", b"1") + _request("GET", "/refused"))
            buf = bytearray()
            first = _read_response(s, buf)
            second = _read_response(s, buf)
    finally:
        g.close()
    assert json.loads(first[1])["path"] == "/first"
    assert second[0].startswith(b"HTTP/1.1 503") and json.loads(second[1]) == {
        "error": "draining"}


def test_a_chunked_response_is_passed_on_piece_by_piece() -> None:
    go_on = threading.Event()

    def stream(conn: socket.socket, head: bytes, body: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"7\r\ndata: 1\r\n")
        go_on.wait(TIMEOUT)  # the second event only after the client saw the first
        conn.sendall(b"7\r\ndata: 2\r\n0\r\n\r\n")

    u = Upstream(stream)
    g = _guard(u)
    try:
        with _client(g) as s:
            s.sendall(_request("POST", "/v2/models/m/generate_stream", b"{}"))
            got = b""
            while b"data: 1" not in got:
                got += s.recv(65536)
            assert b"data: 2" not in got
            go_on.set()
            while not got.endswith(b"0\r\n\r\n"):
                got += s.recv(65536)
    finally:
        g.close()
        u.close()
    assert got.endswith(b"7\r\ndata: 1\r\n7\r\ndata: 2\r\n0\r\n\r\n")


def test_a_chunked_request_body_is_forwarded(guard: HttpGuard, upstream: Upstream) -> None:
    # libevhtp parses a form body only when Content-Length says its size: chunked ones pass
    raw = (b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    with _client(guard) as s:
        buf = bytearray()
        s.sendall(raw + _request("POST", "/d", b"{}"))
        first, _ = _read_response(s, buf)
        second, _ = _read_response(s, buf)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
    assert upstream.received[0] == raw


def test_heads_it_cannot_frame_or_too_long_are_refused(guard: HttpGuard,
                                                       upstream: Upstream) -> None:
    with _client(guard) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
                  b"\r\n\r\nabc")
        assert _read_response(s, bytearray())[0].startswith(b"HTTP/1.1 400")
    with _client(guard) as s:
        s.sendall(b"GET /?q=" + b"a" * (MAX_HEAD_BYTES + 10) + b" HTTP/1.1\r\n\r\n")
        assert _read_response(s, bytearray())[0].startswith(b"HTTP/1.1 431")
    assert upstream.received == []


def test_expect_continue_gets_the_refusal_before_any_body(guard: HttpGuard) -> None:
    with _client(guard) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Type: "
                  b"application/x-www-form-urlencoded\r\nContent-Length: 5000000\r\n\r\n")
        head, _ = _read_response(s, bytearray())
    assert head.startswith(b"HTTP/1.1 413")


def test_extra_headers_are_added_to_forwarded_requests(upstream: Upstream) -> None:
    g = _guard(upstream, extra_headers=lambda h: [("x-key", "k1")] if h.path == "/i" else [])
    try:
        with _client(g) as s:
            buf = bytearray()
            s.sendall(_request("POST", "/i", b"{}"))
            _read_response(s, buf)
            s.sendall(_request("POST", "/j", b"{}"))
            _read_response(s, buf)
    finally:
        g.close()
    assert b"\r\nx-key: k1\r\n" in upstream.received[0]
    assert b"x-key" not in upstream.received[1]


def test_an_unreachable_upstream_is_502() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    g = HttpGuard("127.0.0.1", 0, ("127.0.0.1", port))
    g.start()
    try:
        with _client(g) as s:
            s.sendall(_request("GET", "/v2/health/ready"))
            assert _read_response(s, bytearray())[0].startswith(b"HTTP/1.1 502")
    finally:
        g.close()


def test_a_busy_port_fails_at_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        g = HttpGuard("127.0.0.1", taken.getsockname()[1], ("127.0.0.1", 1))
        with pytest.raises(OSError):
            g.start()


def test_small_requests_are_not_held_back_by_nagle(guard: HttpGuard) -> None:
    # A response's head and body are two writes: without TCP_NODELAY on the client socket
    # each request waited for the client's delayed ACK (40 ms; 20 requests: 0.8 s).
    with _client(guard) as s:
        buf = bytearray()
        t0 = time.monotonic()
        for _ in range(20):
            s.sendall(_request("POST", "/n", b"{}"))
            _read_response(s, buf)
        assert time.monotonic() - t0 < 0.5
