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


def test_only_plain_gets_take_this_path_and_never_the_event_stream() -> None:
    assert handles(httpx.Request("GET", "http://127.0.0.1:1/metrics?name[]=a"))
    assert handles(httpx.Request("GET", "http://127.0.0.1:1/v1/members"))
    assert not handles(httpx.Request("GET", "https://127.0.0.1:1/metrics"))
    assert not handles(httpx.Request("GET", "http://127.0.0.1:1/v1/events"))
    assert not handles(httpx.Request("GET", "http://127.0.0.1:1/v1/events?recent=5"))
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


# -- top's direct scrape path: the same answers and errors as through httpx -----------------

_EXPOSITION = b"# TYPE plumtree_eager_peers gauge\nplumtree_eager_peers 2\n"
_ANSWERS = {
    "ok": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
    b"Content-Length: %d\r\n\r\n" % len(_EXPOSITION) + _EXPOSITION,
    "unauthorized": b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
    "server error": b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    b'Content-Length: 34\r\n\r\n{"error": "boom", "detail": "why"}',
    "redirect": b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
    "garbage": b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{not ok}\x00",
    "cut": b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nplumtree",
}


async def _scrape(url: str, direct: bool) -> tuple[str, str]:
    """(outcome, message) of one ``scrape_names`` through the direct path or httpx."""
    from plumctl.client import ClientError
    from plumctl.tui.source import SCRAPE_NAMES, _NodeClient

    pool = KeepAlivePool()
    async with httpx.AsyncClient() as http:
        client = _NodeClient(url, "tok", 1.0, http=http, plain=pool if direct else None)
        try:
            scrape = await client.scrape_names(SCRAPE_NAMES)
            return "scrape", repr(scrape.value("plumtree_eager_peers"))
        except ClientError as exc:
            return type(exc).__name__, exc.message
        finally:
            await pool.aclose()


@pytest.mark.parametrize("answer", sorted(_ANSWERS))
async def test_the_direct_scrape_answers_and_fails_exactly_as_httpx_does(
    server, answer: str
) -> None:  # type: ignore[no-untyped-def]
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await _read_head(reader))
        writer.write(_ANSWERS[answer])
        await writer.drain()
        writer.close()

    url = await server(handler)
    direct, through_httpx = await _scrape(url, direct=True), await _scrape(url, direct=False)
    if answer == "cut":  # both say the connection was lost, in the words of their parser
        assert direct[0] == through_httpx[0] and "connection" in direct[1]
    else:
        assert direct == through_httpx
    assert (
        direct[0]
        == {
            "ok": "scrape",
            "unauthorized": "AuthFailed",
            "server error": "ApiError",
            "redirect": "ApiError",
            "garbage": "BadResponse",
            "cut": "Unreachable",
        }[answer]
    )
    head = heads[0].decode()
    assert head.startswith("GET /metrics?name%5B%5D=plumtree_messages_delivered_total&")
    for line in ("Accept: text/plain", "Authorization: Bearer tok", "User-Agent: plumctl/"):
        assert f"\r\n{line}" in head


async def test_the_direct_scrape_of_a_closed_port_is_unreachable_as_through_httpx() -> None:
    direct = await _scrape("http://127.0.0.1:9", direct=True)
    assert direct == await _scrape("http://127.0.0.1:9", direct=False)
    assert direct == ("Unreachable", "cannot reach node at http://127.0.0.1:9: connection refused")


async def test_polls_of_real_nodes_take_the_direct_path(server) -> None:  # type: ignore[no-untyped-def]
    """HttpSource hands its clients the keep-alive pool of the transport it built."""
    from plumctl.tui.source import HttpSource

    async with HttpSource("http://127.0.0.1:9") as src:
        client = src._client("http://127.0.0.1:9")
        assert client._plain is not None
    async with HttpSource(
        "http://127.0.0.1:9", transport=httpx.MockTransport(lambda r: httpx.Response(200))
    ) as src:
        assert src._client("http://127.0.0.1:9")._plain is None


_POLL_IN_A_FRESH_INTERPRETER = r"""
import asyncio, json, sys
from plumctl.tui.source import HttpSource

EXPOSITION = (b"# TYPE plumtree_eager_peers gauge\nplumtree_eager_peers 2\n"
              b"# TYPE plumtree_health_status gauge\n"
              b'plumtree_health_status{status="Healthy"} 1\n')

async def handler(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        path = head.split(b" ")[1]
        if path.startswith(b"/metrics"):
            body, kind = EXPOSITION, b"text/plain"
        elif path == b"/v1/members":
            port = writer.get_extra_info("sockname")[1]
            items = [{"name": "n1", "state": "alive", "admin_url": f"http://127.0.0.1:{port}"}]
            body, kind = json.dumps({"kind": "MemberList", "items": items}).encode(), b"application/json"
        else:
            status = {"name": "n1", "version": "t", "cluster_label": "x"}
            body, kind = json.dumps(status).encode(), b"application/json"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with HttpSource(f"http://127.0.0.1:{port}", timeout=5.0) as source:
        snap = await source.poll()
    server.close()
    sample = snap.nodes["n1"]
    assert sample.scrape is not None, sample.error
    print(json.dumps({"eager": sample.scrape.value("plumtree_eager_peers"),
                      "label": snap.label,
                      "httpcore": "httpcore" in sys.modules, "anyio": "anyio" in sys.modules}))

asyncio.run(main())
"""


def test_a_poll_over_plain_http_never_imports_httpcore() -> None:
    """Member table, status and scrapes all go through the keep-alive pool: opening
    ``top`` does not pay for importing httpcore and anyio (about 125 ms)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _POLL_IN_A_FRESH_INTERPRETER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen == {"eager": 2.0, "label": "x", "httpcore": False, "anyio": False}
