"""Plain HTTP/1.1 keep-alive GETs for ``top``'s per-poll scrapes, under httpx.

A poll of 32 nodes is 32 small GETs of ``/metrics``; through httpcore (anyio, h11, the
pool's bookkeeping) each cost about 2.8 ms of CPU, against 0.5 ms for httpx itself.
This transport answers plain-``http`` GETs (see :func:`handles`) on an asyncio protocol
per kept-alive connection, and leaves everything else (https, the event stream, other
methods) to httpcore. The answer is a complete ``httpx.Response``, so
the client code, its timeouts and its error mapping are the same either way.

Bounded and total: a response head over :data:`MAX_HEAD` or a body over
:data:`MAX_BODY` is a protocol error; a connection that closes early is a read error
(retried once on a fresh connection if it was a reused one that had gone stale).
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

__all__ = ["MAX_BODY", "MAX_HEAD", "KeepAlivePool", "handles", "origin_of", "request_head"]

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
_IDLE_PER_ORIGIN = 4


#: Paths this pool never serves: the event stream answers for as long as it is open.
STREAM_PATHS = (b"/v1/events",)


def handles(request: httpx.Request) -> bool:
    """Requests this pool serves: plain-http GETs without a body, except the event stream.

    That is every request of a ``top`` poll (member table, status, scrapes, health,
    peers), so httpcore and anyio are not even imported to open the dashboard (they cost
    about 125 ms of its first poll).
    """
    return (
        request.method == "GET"
        and request.url.scheme == "http"
        and not request.url.raw_path.startswith(STREAM_PATHS)
        and not request.headers.get("content-length")
        and "transfer-encoding" not in request.headers
    )


class _Reply(asyncio.Protocol):
    """One connection; parses one response at a time (Content-Length or chunked)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self.closed = False
        self.reusable = True

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._try_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self._try_complete(eof=True)
            if not waiter.done():
                waiter.set_exception(
                    httpx.ReadError("connection closed before the response was complete")
                )

    # -- requests

    async def exchange(
        self, head: bytes, loop: asyncio.AbstractEventLoop
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        assert self.transport is not None
        self.waiter = loop.create_future()
        self.buffer.clear()
        self.transport.write(head)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def _try_complete(self, eof: bool = False) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            result = _parse(self.buffer, eof)
        except httpx.HTTPError as exc:
            self.reusable = False
            waiter.set_exception(exc)
            return
        if result is not None:
            status, headers, body, keep = result
            self.reusable = keep
            waiter.set_result((status, headers, body))


def _parse(buf: bytearray, eof: bool) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool] | None:
    """A complete response from ``buf``, or None while more is needed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise httpx.RemoteProtocolError("response head too large")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    keep = parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise httpx.RemoteProtocolError("malformed header line")
        name, value = name.strip(), value.strip()
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit():
                raise httpx.RemoteProtocolError("bad Content-Length")
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
        elif lower == b"connection":
            keep = value.lower() == b"keep-alive" or (keep and value.lower() != b"close")
        headers.append((name, value))
    start = end + 4
    if chunked:
        body = _dechunk(buf, start)
        if body is None:
            if eof:
                raise httpx.RemoteProtocolError("connection closed inside a chunked body")
            return None
    elif length is not None:
        if length > MAX_BODY:
            raise httpx.RemoteProtocolError("response body too large")
        if len(buf) - start < length:
            return None
        body = bytes(buf[start : start + length])
    else:  # read until close
        if len(buf) - start > MAX_BODY:
            raise httpx.RemoteProtocolError("response body too large")
        if not eof:
            return None
        body, keep = bytes(buf[start:]), False
    headers = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
    return status, headers, body, keep


def _dechunk(buf: bytearray, pos: int) -> bytes | None:
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError("bad chunk size") from None
        if size < 0 or len(out) + size > MAX_BODY:
            raise httpx.RemoteProtocolError("response body too large")
        start = eol + 2
        if size == 0:
            return bytes(out) if buf.find(b"\r\n", start) >= 0 else None
        if len(buf) < start + size + 2:
            return None
        out += buf[start : start + size]
        pos = start + size + 2


class KeepAlivePool:
    """Idle connections per origin; a request borrows one or opens one."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Reply]] = {}

    async def handle(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._handle(request)
        except httpx.RequestError as exc:
            exc.request = request  # (raised where the request is not at hand)
            raise

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        timeouts = request.extensions.get("timeout", {})
        try:
            status, headers, body = await self.get(
                origin_of(url),
                request_head(request),
                timeouts.get("connect"),
                timeouts.get("read"),
            )
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response", request=request) from None
        return httpx.Response(
            status,
            headers=headers,
            content=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def get(
        self,
        origin: tuple[str, int],
        head: bytes,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One exchange of a prebuilt request ``head`` (see :func:`request_head`) with
        ``origin``: ``(status, headers, body)``. Errors are httpx's transport errors; a
        read over ``read_timeout`` is ``TimeoutError``. Without timeouts the caller bounds
        the call (``top`` bounds each node's whole poll), which saves two timer handles
        per request."""
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn, reused = await self._borrow(origin, connect_timeout, loop)
            try:
                if read_timeout is None:
                    result = await conn.exchange(head, loop)
                else:
                    async with asyncio.timeout(read_timeout):
                        result = await conn.exchange(head, loop)
            except httpx.ReadError:
                self._discard(conn)
                if reused and attempt == 0:
                    continue  # a kept-alive connection the server had closed: once more
                raise
            except BaseException:
                self._discard(conn)
                raise
            idle = self._idle.setdefault(origin, [])
            if conn.reusable and not conn.closed and len(idle) < _IDLE_PER_ORIGIN:
                idle.append(conn)
            else:
                self._discard(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _borrow(
        self,
        origin: tuple[str, int],
        connect_timeout: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[_Reply, bool]:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(_Reply, origin[0], origin[1])
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {origin[0]}:{origin[1]}") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from None
        return conn, False

    def _discard(self, conn: _Reply) -> None:
        if conn.transport is not None:
            conn.transport.close()

    async def aclose(self) -> None:
        pools, self._idle = list(self._idle.values()), {}
        for idle in pools:
            for conn in idle:
                with contextlib.suppress(Exception):
                    self._discard(conn)


def origin_of(url: httpx.URL) -> tuple[str, int]:
    """The ``(host, port)`` a plain-http URL connects to: the key of the idle pool."""
    return (url.host, url.port or 80)


def request_head(request: httpx.Request) -> bytes:
    """The HTTP/1.1 head this pool sends for ``request`` (build it once, reuse it)."""
    url = request.url
    target = url.raw_path or b"/"
    lines = [b"GET " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower in (b"accept-encoding", b"connection"):
            continue  # identity bodies only; keep-alive is ours to decide
        lines.append(name + b": " + value)
    lines.append(b"Accept-Encoding: identity")
    lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + b"\r\n\r\n"
