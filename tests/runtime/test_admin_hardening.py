"""The admin API against slow, numerous and malformed clients, on real node processes.

Each test starts its own ``plumctl node start`` process on loopback (stopped in a
``finally``, by its pid) and attacks it over real sockets. Waits are "until it holds or a
generous deadline": nothing here asserts on speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.runtime.adminproc import AUTH, TOKEN, NodeProc, node_process, rejected


async def _closed_by_peer(reader: asyncio.StreamReader) -> None:
    """Returns once the node closed the connection (EOF or reset)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


# ---- slow and numerous clients ---------------------------------------------------------------


SLOW = 1000  # connections sending a request head one header line at a time
SILENT = 200  # connections that send nothing
NOFILE = 1024  # the node's descriptor table: smaller than the attack


def test_slow_and_silent_connections_are_closed_and_never_fill_the_node(tmp_path: Path) -> None:
    """1,000 slowloris connections and 200 silent ones against a node whose descriptor
    table holds 1,024: the node keeps its open connections at the cap (256), answers a
    normal request in the middle of the attack, and closes every attacking connection
    within the header deadline (2 s here) plus scheduling slack."""
    header_timeout = 2.0
    with node_process(
        tmp_path,
        ["--token-file", str(tmp_path / "token")],
        f"api_header_timeout = {header_timeout}",
        nofile=NOFILE,
    ) as node:
        baseline = node.fds()
        result = asyncio.run(_slowloris(node, header_timeout))
        assert result["answered"] == 200, result
        assert result["max_fds"] <= baseline + 256 + 16, (baseline, result)
        assert result["open_after"] == 0, f"still open after the deadline: {result}"
        counts = rejected(node)
        assert counts["header_timeout"] > 0 and counts["connection_limit"] > 0, counts
        assert counts["open"] <= 2, counts  # the scrape's own connection
        log = node.log_text()
        assert "Traceback" not in log and "Too many open files" not in log, log[-3000:]
        assert httpx.get(node.url + "/v1/status", headers=AUTH, timeout=10).status_code == 200


async def _slowloris(node: NodeProc, header_timeout: float) -> dict[str, int]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(SLOW + SILENT):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        except OSError:
            continue  # the backlog overflowed: that connection never reached the node
        if i < SLOW:
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        conns.append((reader, writer))
    opened = time.monotonic()
    closed = [asyncio.ensure_future(_closed_by_peer(r)) for r, _ in conns]
    max_fds = node.fds()

    async def drip() -> None:  # one more header line per slow connection every 0.5 s
        k = 0
        while True:
            await asyncio.sleep(0.5)
            k += 1
            for _, writer in conns[:SLOW]:
                if not writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        writer.write(b"X-%d: %d\r\n" % (k, k))

    dripping = asyncio.ensure_future(drip())
    try:
        # a real client in the middle of the attack
        async with httpx.AsyncClient(timeout=10.0) as client:
            answered = (await client.get(node.url + "/v1/status", headers=AUTH)).status_code
        deadline = opened + header_timeout + 20.0  # generous: a loaded 2-core machine
        while time.monotonic() < deadline and not all(c.done() for c in closed):
            max_fds = max(max_fds, node.fds())
            await asyncio.sleep(0.1)
        return {
            "answered": answered,
            "max_fds": max_fds,
            "connected": len(conns),
            "open_after": sum(not c.done() for c in closed),
        }
    finally:
        dripping.cancel()
        for c in closed:
            c.cancel()
        for _, writer in conns:
            writer.close()


def test_idle_keepalive_and_slow_bodies_are_cut_but_event_streams_are_not(
    tmp_path: Path,
) -> None:
    """A kept-alive connection is closed after the idle timeout; a body that does not
    arrive in time gets a 408 JSON answer; a /v1/events stream outlives both (it is busy
    while it streams: heartbeats every 15 s keep it going)."""
    with node_process(
        tmp_path,
        ["--token-file", str(tmp_path / "token")],
        "api_idle_timeout = 1.5\napi_body_timeout = 1.5\napi_header_timeout = 5",
    ) as node:
        asyncio.run(_idle_and_body(node))
        counts = rejected(node)
        assert counts["body_timeout"] == 1, counts
        assert "Traceback" not in node.log_text()


async def _idle_and_body(node: NodeProc) -> None:
    async with (
        httpx.AsyncClient(timeout=30.0) as client,
        client.stream("GET", node.url + "/v1/events?level=debug", headers=AUTH) as stream,
    ):
        lines = stream.aiter_lines()
        # idle: a request, then silence: the node closes the connection
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(
            b"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\n\r\n"
        )
        start = time.monotonic()
        await asyncio.wait_for(_closed_by_peer(reader), 20.0)
        assert time.monotonic() - start >= 1.0, "closed before the idle timeout"
        writer.close()
        # a body that never comes: 408 after the body timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(
            b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\nonly a part"
        )
        answer = await asyncio.wait_for(reader.read(), 20.0)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request timeout"
        # the event stream, open all along (longer than both timeouts), still streams
        await client.post(node.url + "/v1/broadcast", content=b"still here", headers=AUTH)
        seen = []
        async with asyncio.timeout(20.0):
            async for line in lines:
                seen.append(json.loads(line)["kind"])
                if seen[-1] == "delivered":
                    break
        assert "delivered" in seen


# ---- malformed requests ------------------------------------------------------------------------

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)),
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/status HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS hello
]
LATE_CHUNK = (
    b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
)


def test_malformed_requests_get_json_answers_and_a_bounded_quiet_log(tmp_path: Path) -> None:
    """Each kind of malformed HTTP, several times over: every answer is a JSON 4xx (or
    the connection is closed), the node's log gets no traceback and at most LOG_BURST
    warning lines for them, and the node answers normally afterwards."""
    from plumtree.admin.guard import LOG_BURST

    rounds = 4
    with node_process(tmp_path, ["--token-file", str(tmp_path / "token")]) as node:
        answers = asyncio.run(_send_malformed(node, rounds))
        for data, answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split(b" ")[1].startswith(b"4"), (data[:60], answer[:200])
            assert "error" in json.loads(body), (data[:60], answer[:200])
        assert httpx.get(node.url + "/v1/status", headers=AUTH, timeout=10).status_code == 200
        counts = rejected(node)
        log = node.log_text()
    total = rounds * (len(MALFORMED) + 1)
    assert counts["bad_request"] == total, counts
    assert "Traceback" not in log, log[-3000:]
    warnings = [ln for ln in log.splitlines() if "malformed request" in ln]
    assert 1 <= len(warnings) <= LOG_BURST, warnings
    assert all(" WARNING " in ln for ln in warnings), warnings


async def _send_malformed(node: NodeProc, rounds: int) -> list[tuple[bytes, bytes]]:
    out = []
    for _ in range(rounds):
        for data in MALFORMED:
            out.append((data, await _exchange(node.port, [data])))
        # a chunked body that turns bad after the handler started reading it
        out.append((LATE_CHUNK, await _exchange(node.port, [LATE_CHUNK, b"5\r\nhello\r\nzz\r\n"])))
    return out


async def _exchange(port: int, parts: list[bytes]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        return await asyncio.wait_for(reader.read(), 15.0)
    finally:
        writer.close()


if sys.platform != "linux":  # /proc/PID/fd
    pytestmark = pytest.mark.skip("needs /proc")
