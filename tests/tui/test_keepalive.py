"""The keep-alive transport under ``top``'s scrapes: parsing, reuse, and every failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from plumctl.tui.keepalive import MAX_HEAD, KeepAlivePool, _parse, handles
from plumctl.tui.source import PerNodeTransport

# -- the parser ------------------------------------------------------------------------


def test_a_content_length_response_parses_once_complete() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    assert _parse(bytearray(raw[:-1]), eof=False) is None
    status, headers, body, keep = _parse(bytearray(raw), eof=False)  # type: ignore[misc]
    assert (status, body, keep) == (200, b"hello", True)
    assert (b"Content-Type", b"text/plain") in headers


def test_chunked_bodies_are_joined_and_the_header_dropped() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n"
    )
    for cut in range(len(raw) - 1):
        assert _parse(bytearray(raw[:cut]), eof=False) is None
    _, headers, body, _ = _parse(bytearray(raw), eof=False)  # type: ignore[misc]
    assert body == b"abcde" and not any(n.lower() == b"transfer-encoding" for n, _ in headers)


def test_connection_close_and_http10_are_not_kept_alive() -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert _parse(bytearray(close), eof=False)[3] is False  # type: ignore[index]
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert _parse(bytearray(old), eof=False)[3] is False  # type: ignore[index]
    until_close = b"HTTP/1.1 200 OK\r\n\r\nbody"
    assert _parse(bytearray(until_close), eof=False) is None
    assert _parse(bytearray(until_close), eof=True)[2:] == (b"body", False)  # type: ignore[index]


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
    ],
)
def test_malformed_or_oversized_responses_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        _parse(bytearray(raw), eof=False)


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="head too large"):
        _parse(bytearray(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD), eof=False)


def test_only_plain_metrics_gets_take_this_path() -> None:
    assert handles(httpx.Request("GET", "http://127.0.0.1:1/metrics?name[]=a"))
    assert not handles(httpx.Request("GET", "https://127.0.0.1:1/metrics"))
    assert not handles(httpx.Request("GET", "http://127.0.0.1:1/v1/events"))
    assert not handles(httpx.Request("POST", "http://127.0.0.1:1/metrics", content=b"x"))


# -- against a real socket ----------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | object"]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    try:
        yield start  # type: ignore[misc]
    finally:
        for srv in servers:
            srv.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_connections_are_reused_and_headers_sent(server) -> None:  # type: ignore[no-untyped-def]
    connections: list[int] = []
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                heads.append(await _read_head(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    url = await server(handler)
    async with httpx.AsyncClient(transport=PerNodeTransport(verify=False)) as client:
        for _ in range(5):
            r = await client.get(url + "/metrics", params={"name[]": "a"}, headers={"X-T": "1"})
            assert r.status_code == 200 and r.text == "ok"
    assert len(connections) == 1, "one kept-alive connection for five requests"
    assert heads[0].startswith(b"GET /metrics?name%5B%5D=a HTTP/1.1\r\n")
    assert b"X-T: 1" in heads[0] and b"Accept-Encoding: identity" in heads[0]


async def test_a_stale_kept_alive_connection_is_retried_once(server) -> None:  # type: ignore[no-untyped-def]
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await _read_head(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + str(served).encode())
        await writer.drain()
        writer.close()  # answers once per connection, without saying so

    url = await server(handler)
    pool = KeepAlivePool()
    try:
        first = await pool.handle(httpx.Request("GET", url + "/metrics"))
        await asyncio.sleep(0.05)
        second = await pool.handle(httpx.Request("GET", url + "/metrics"))
        assert (first.text, second.text) == ("1", "2")
    finally:
        await pool.aclose()


async def test_failures_map_to_httpx_errors_with_the_request(server) -> None:  # type: ignore[no-untyped-def]
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    silent_url, cut_url = await server(silent), await server(cut)
    pool = KeepAlivePool()
    try:
        timeout = {"timeout": {"connect": 1.0, "read": 0.2}}
        with pytest.raises(httpx.ReadTimeout) as info:
            await pool.handle(httpx.Request("GET", silent_url + "/metrics", extensions=timeout))
        assert info.value.request.url.path == "/metrics"
        with pytest.raises(httpx.ReadError):
            await pool.handle(httpx.Request("GET", cut_url + "/metrics"))
        with pytest.raises(httpx.ConnectError):
            await pool.handle(httpx.Request("GET", "http://127.0.0.1:9/metrics"))
    finally:
        await pool.aclose()
