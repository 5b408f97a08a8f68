"""A byte-level HTTP/1.1 guard in front of tritonserver's HTTP port (``tritonllm serve``).

Why. Triton 2.51 dies (SIGSEGV) on any HTTP request whose body is about 4 MiB or more with
content type ``application/x-www-form-urlencoded`` (what ``curl -d`` and urllib send by default),
whatever the path. Its HTTP library, libevhtp, turns a complete form-encoded body into query
arguments (``htp__request_parse_fini_`` → ``htp__should_parse_query_body_`` →
``evhtp_parse_query_wflags``), and that function keeps two variable-length arrays of the body's
size on the stack (``char key_buf[len + 1]; char val_buf[len + 1];`` under ``EVHTP_HAS_C99``;
triton-inference-server/third_party r24.10, ``libevhtp/libevhtp/evhtp.c`` lines 1977-2045 and
3555-3576). Two copies of a 4 MiB body overflow the 8 MiB stack of the HTTP worker thread.
Triton 2.51 has no flag that caps the body size (``src/command_line_parser.cc``), and the body
is parsed before any handler sees it, so only something in front of the port can stop it.

What the guard does with each request of a client connection (keep-alive and pipelining kept,
responses in order):

* answers itself, without contacting tritonserver, and closes the connection:

  - 413 for a form-encoded body of ``form_limit`` bytes or more (default
    :data:`FORM_BODY_LIMIT`, 1 MiB: a quarter of where the crash starts), naming the limit and
    the fix (send it as ``application/json``; Triton reads the body as JSON either way);
  - 431 for a request head over :data:`MAX_HEAD_BYTES` (a URL query goes through the same
    parser), 400 for a head it cannot frame (both a length and chunked, a bad length);
  - whatever the ``policy`` callback returns (``tritonllm serve`` answers readiness with 503
    and refuses inference with 503 while it drains or recovers a model);

* otherwise forwards the request's bytes unchanged (plus the headers ``extra_headers`` asks
  for) and splices the response back as it arrives: a chunked ``generate_stream`` (server-sent
  events) reaches the client event by event.

The guard runs its own asyncio loop on one daemon thread; :meth:`HttpGuard.start` binds the
port in the caller's thread, so a busy port fails there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FORM_BODY_LIMIT", "MAX_HEAD_BYTES", "Head", "HttpGuard", "Refusal", "form_refusal"]

log = logging.getLogger(__name__)

FORM_BODY_LIMIT = 1 << 20  # form-encoded bodies from this size are refused (crash: ~4 MiB)
MAX_HEAD_BYTES = 64 << 10  # request line + headers
READ_CHUNK = 64 << 10
DISCARD_MAX = 64 << 20  # a refused body up to this size is read and dropped (then close)
DISCARD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
FORM_TYPE = "application/x-www-form-urlencoded"  # libevhtp compares this prefix, any case
_REASONS = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large",
            502: "Bad Gateway", 503: "Service Unavailable"}


class _BadHead(ValueError):
    """A request or response head that cannot be framed."""


@dataclass(frozen=True)
class Head:
    """One parsed HTTP/1.x message head (request or response); ``raw`` is the bytes as read."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason)
    headers: tuple[tuple[str, str], ...]
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Head:
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2:
            raise _BadHead(f"bad start line {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadHead(f"bad header line {line[:80]!r}")
            headers.append((name.lower(), value.strip()))
        start = (parts[0], parts[1], parts[2] if len(parts) > 2 else "")
        return cls(start, tuple(headers), raw)

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[-1] if values else None

    @property
    def method(self) -> str:
        return self.start[0]

    @property
    def path(self) -> str:
        return self.start[1].split("?", 1)[0]

    @property
    def chunked(self) -> bool:
        te = ",".join(v for k, v in self.headers if k == "transfer-encoding").lower()
        return "chunked" in te

    @property
    def content_length(self) -> int | None:
        values = {v for k, v in self.headers if k == "content-length"}
        if not values:
            return None
        if len(values) > 1 or not next(iter(values)).isdigit():
            raise _BadHead(f"bad Content-Length {sorted(values)}")
        return int(next(iter(values)))

    def wants_close(self) -> bool:
        conn = (self.get("connection") or "").lower()
        version = self.start[0] if self.start[0].startswith("HTTP/") else self.start[2]
        return "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)


@dataclass(frozen=True)
class Refusal:
    """A response the guard gives itself: ``{"error": message}``, as tritonserver's errors."""

    status: int
    message: str

    def encode(self) -> bytes:
        body = json.dumps({"error": self.message}).encode()
        reason = _REASONS.get(self.status, "Error")
        return (f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def form_refusal(head: Head, limit: int) -> Refusal | None:
    """413 for a form-encoded body of ``limit`` bytes or more (see the module docstring)."""
    ctype = (head.get("content-type") or "").lower()
    length = head.content_length
    if not ctype.startswith(FORM_TYPE) or length is None or length < limit:
        return None
    return Refusal(413, (
        f"request body of {length} bytes with Content-Type {FORM_TYPE} refused: tritonllm "
        f"serve takes form-encoded bodies below {limit} bytes only (Triton 2.51's HTTP server "
        f"crashes on them from 4 MiB). Send the body with Content-Type: application/json "
        f"(curl: -H 'Content-Type: application/json')"))


Policy = Callable[[Head], Refusal | None]
ExtraHeaders = Callable[[Head], Sequence[tuple[str, str]]]


class _Closed(Exception):
    """The peer closed the connection."""


async def _read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next message head; None on a clean end of stream before one."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial.strip():
                return None
            raise _Closed() from e
        except asyncio.LimitOverrunError as e:
            raise _HeadTooLarge() from e
        if raw.strip():  # tolerate empty lines between messages (RFC 9112 2.2)
            return Head.parse(raw.lstrip(b"\r\n"))


class _HeadTooLarge(Exception):
    """A head longer than the stream's limit (MAX_HEAD_BYTES)."""


async def _copy_exact(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None,
                      n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, READ_CHUNK))
        if not data:
            raise _Closed()
        n -= len(data)
        if writer is not None:
            writer.write(data)
            await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as e:
            raise _Closed() from e
        writer.write(line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as e:
            raise _BadHead(f"bad chunk size line {line[:40]!r}") from e
        if size == 0:
            while True:  # trailers, then the empty line
                try:
                    trailer = await reader.readuntil(b"\r\n")
                except asyncio.IncompleteReadError as e:
                    raise _Closed() from e
                writer.write(trailer)
                if trailer == b"\r\n":
                    await writer.drain()
                    return
        await _copy_exact(reader, writer, size + 2)


async def _copy_to_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(READ_CHUNK):
        writer.write(data)
        await writer.drain()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY: a response's head and body go out as separate writes, and Nagle's
    algorithm would hold the body for the peer's delayed ACK (40 ms a request). asyncio sets
    it only on sockets whose ``proto`` is IPPROTO_TCP, which accepted ones are not."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class _Upstream:
    method: str


@dataclass
class _Local:
    data: bytes


_EOF = object()


class _Connection:
    """One client connection and its (lazily opened) connection to tritonserver."""

    def __init__(self, guard: HttpGuard, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.guard = guard
        self.creader, self.cwriter = reader, writer
        self.ureader: asyncio.StreamReader | None = None
        self.uwriter: asyncio.StreamWriter | None = None
        self.expected: asyncio.Queue[object] = asyncio.Queue()
        self.refused = False
        _no_delay(writer)

    async def run(self) -> None:
        requests = asyncio.ensure_future(self._requests())
        responses = asyncio.ensure_future(self._responses())
        try:
            await asyncio.wait({requests, responses}, return_when=asyncio.FIRST_COMPLETED)
            if responses.done() and not requests.done():
                # After a refusal the request side is dropping the refused body: let it (the
                # client reads the answer once it has sent everything); else stop reading.
                timeout = DISCARD_TIMEOUT_S if self.refused else 0
                await asyncio.wait({requests}, timeout=timeout)
                requests.cancel()
            await asyncio.gather(requests, responses, return_exceptions=True)
        finally:
            for w in (self.cwriter, self.uwriter):
                if w is not None:
                    w.close()

    def abort(self) -> None:
        """Drop both connections now (the guard is closing)."""
        for w in (self.cwriter, self.uwriter):
            if w is not None:
                w.transport.abort()

    def _refuse(self, refusal: Refusal) -> None:
        self.guard.refused += 1
        self.refused = True
        self.expected.put_nowait(_Local(refusal.encode()))

    async def _requests(self) -> None:
        try:
            while True:
                try:
                    head = await _read_head(self.creader)
                except _HeadTooLarge:
                    self._refuse(Refusal(431, f"request head over {MAX_HEAD_BYTES} bytes"))
                    return
                if head is None:
                    return
                try:
                    length, chunked = head.content_length, head.chunked
                    if chunked and length is not None:
                        raise _BadHead("both Content-Length and chunked Transfer-Encoding")
                except _BadHead as e:
                    self._refuse(Refusal(400, str(e)))
                    return
                refusal = form_refusal(head, self.guard.form_limit)
                if refusal is None and self.guard.policy is not None:
                    refusal = self.guard.policy(head)
                if refusal is not None:
                    self._refuse(refusal)
                    await self._discard_body(head, length)
                    return
                if not await self._connect():
                    self._refuse(Refusal(502, "tritonserver is not reachable"))
                    return
                assert self.uwriter is not None
                self.expected.put_nowait(_Upstream(head.method))
                self.uwriter.write(self._with_extra_headers(head))
                if chunked:
                    await _copy_chunked(self.creader, self.uwriter)
                elif length:
                    await _copy_exact(self.creader, self.uwriter, length)
                await self.uwriter.drain()
        except (_Closed, _BadHead, ConnectionError):
            return
        finally:
            self.expected.put_nowait(_EOF)

    def _with_extra_headers(self, head: Head) -> bytes:
        extra = self.guard.extra_headers(head) if self.guard.extra_headers else ()
        if not extra:
            return head.raw
        lines = "".join(f"{k}: {v}\r\n" for k, v in extra).encode("latin-1")
        return head.raw[:-2] + lines + b"\r\n"

    async def _discard_body(self, head: Head, length: int | None) -> None:
        """Read and drop a refused request's body, so the client gets to read the answer."""
        if (head.get("expect") or "").lower() == "100-continue" or not length:
            return
        with contextlib.suppress(_Closed, ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(_copy_exact(self.creader, None, min(length, DISCARD_MAX)),
                                   DISCARD_TIMEOUT_S)

    async def _connect(self) -> bool:
        if self.uwriter is not None:
            return True
        host, port = self.guard.upstream
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_HEAD_BYTES), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            return False
        _no_delay(writer)
        self.ureader, self.uwriter = reader, writer
        return True

    async def _responses(self) -> None:
        """Answers in request order: the guard's own, or tritonserver's, spliced through."""
        w = self.cwriter
        try:
            while True:
                item = await self.expected.get()
                if item is _EOF:
                    return
                if isinstance(item, _Local):  # always the last answer on the connection
                    w.write(item.data)
                    await w.drain()
                    if w.can_write_eof():
                        w.write_eof()
                    return
                assert isinstance(item, _Upstream) and self.ureader is not None
                if not await self._one_response(item.method):
                    return
        except (_Closed, _BadHead, _HeadTooLarge, ConnectionError):
            return

    async def _one_response(self, method: str) -> bool:
        """Splice one response (and any interim 1xx before it); False: close the client."""
        assert self.ureader is not None
        while True:
            head = await _read_head(self.ureader)
            if head is None:
                return False
            self.cwriter.write(head.raw)
            status = int(head.start[1]) if head.start[1].isdigit() else 0
            if 100 <= status < 200 and status != 101:
                await self.cwriter.drain()
                continue
            if method == "HEAD" or status in (204, 304):
                pass
            elif head.chunked:
                await _copy_chunked(self.ureader, self.cwriter)
            elif (length := head.content_length) is not None:
                await _copy_exact(self.ureader, self.cwriter, length)
            else:
                await _copy_to_end(self.ureader, self.cwriter)
                return False
            await self.cwriter.drain()
            return not head.wants_close()


class HttpGuard:
    """Listens on ``(host, port)`` and guards ``upstream`` (see the module docstring).

    ``policy(head)`` may return a :class:`Refusal` for any request (called on the guard's
    thread: keep it quick and thread-safe); ``extra_headers(head)`` names headers to add to a
    forwarded request. ``port`` is the bound port (``port=0`` picks one).
    """

    def __init__(self, host: str, port: int, upstream: tuple[str, int], *,
                 form_limit: int = FORM_BODY_LIMIT, policy: Policy | None = None,
                 extra_headers: ExtraHeaders | None = None) -> None:
        if form_limit < 1:
            raise ValueError(f"form_limit must be positive, got {form_limit}")
        self.host, self.upstream = host, upstream
        self.form_limit = form_limit
        self.policy = policy
        self.extra_headers = extra_headers
        self.refused = 0  # requests answered by the guard itself
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[_Connection] = set()

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the guard is not started")
        return int(self._sock.getsockname()[1])

    def start(self) -> int:
        """Bind (OSError here for a busy port), start serving on a thread; the port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.create_server((self.host, self._requested_port), family=family)
        self._sock.setblocking(False)
        loop = asyncio.new_event_loop()
        started = threading.Event()

        async def serve() -> None:
            assert self._sock is not None
            self._server = await asyncio.start_server(self._accept, sock=self._sock,
                                                      limit=MAX_HEAD_BYTES)
            started.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="tritonllm-http-guard", daemon=True)
        self._thread.start()
        started.wait(10)
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = _Connection(self, reader, writer)
        if task is not None:
            self._tasks.add(task)
        self._conns.add(conn)
        try:
            await conn.run()
        except Exception:  # one connection's failure must not stop the guard
            log.exception("HTTP guard connection failed")
        finally:
            self._conns.discard(conn)
            if task is not None:
                self._tasks.discard(task)

    def close(self) -> None:
        """Stop listening and drop every connection (idempotent)."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.abort()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5)

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if self._sock is not None:
            self._sock.close()
