"""Inbound gossip TCP is bounded: connections, bytes of unfinished frames, time.

A real Transport on loopback; the "attackers" are plain sockets (some from 127.0.0.2 and
127.0.0.3, other source addresses on this machine, to stand for other hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plumtree.core import wire
from plumtree.core.limits import MAX_FRAME_BYTES
from plumtree.core.messages import Ping
from plumtree.runtime.tcplimits import TcpLimits, TcpLimitsError
from plumtree.runtime.transport import Transport

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Sink:
    def __init__(self) -> None:
        self.got: list[wire.Envelope] = []

    def __call__(self, envelope: wire.Envelope, source: str, reliable: bool) -> None:
        self.got.append(envelope)


@contextlib.asynccontextmanager
async def listening(**limits: Any) -> AsyncIterator[tuple[Transport, Sink, list[Conn]]]:
    sink = Sink()
    transport = Transport("n", "", sink, limits=TcpLimits(**limits))
    await transport.start("127.0.0.1", 0)
    conns: list[Conn] = []
    try:
        yield transport, sink, conns
    finally:
        for _, writer in conns:
            writer.close()
        await transport.close()


async def connect(transport: Transport, conns: list[Conn], source: str = "127.0.0.1") -> Conn:
    assert transport.bound is not None
    conn = await asyncio.open_connection(*transport.bound, local_addr=(source, 0))
    conns.append(conn)
    await asyncio.sleep(0.02)  # accepted (or refused) by now
    return conn


async def closed_by_node(conn: Conn, within: float) -> bool:
    """The node closed (or reset) the connection within ``within`` seconds."""
    try:
        return await asyncio.wait_for(conn[0].read(65536), within) == b""
    except TimeoutError:  # (an OSError: first)
        return False
    except OSError:  # reset
        return True


def frame(envelope: wire.Envelope) -> bytes:
    data = wire.encode(envelope)
    return len(data).to_bytes(4, "big") + data


def a_ping() -> bytes:
    return frame(wire.Envelope("", "peer", [Ping(1, "n")]))


async def test_connections_over_the_total_cap_are_refused_and_counted() -> None:
    async with listening(max_connections=4, max_connections_per_source=4) as (t, _, conns):
        for _ in range(6):
            await connect(t, conns)
        closed = [await closed_by_node(c, 0.3) for c in conns]
        assert closed.count(True) == 2 and t.stats.refused_limit == 2
        assert t.inbound_count() == 4


async def test_one_source_cannot_take_every_slot() -> None:
    async with listening(max_connections=10, max_connections_per_source=2) as (t, sink, conns):
        attacker = [await connect(t, conns, "127.0.0.2") for _ in range(5)]
        assert [await closed_by_node(c, 0.3) for c in attacker].count(True) == 3
        assert t.stats.refused_source_limit == 3
        other = await connect(t, conns, "127.0.0.3")  # another host still gets in
        other[1].write(a_ping())
        await asyncio.sleep(0.1)
        assert len(sink.got) == 1 and t.inbound_count() == 3


async def test_a_frame_longer_than_the_maximum_is_refused_at_its_header() -> None:
    async with listening() as (t, _, conns):
        conn = await connect(t, conns)
        conn[1].write((MAX_FRAME_BYTES + 1).to_bytes(4, "big") + b"x" * 1000)
        assert await closed_by_node(conn, 1.0)
        assert t.stats.closed_oversize == 1 and t.buffered == 0


async def test_unfinished_frames_share_a_bounded_budget() -> None:
    budget = 1 << 20
    async with listening(max_buffered_bytes=budget) as (t, _, conns):
        first, second = await connect(t, conns), await connect(t, conns)
        for conn in (first, second):  # each declares an 8 MB frame and sends 700 KB of it
            conn[1].write(MAX_FRAME_BYTES.to_bytes(4, "big") + b"x" * 700_000)
            await conn[1].drain()
            await asyncio.sleep(0.2)
        assert await closed_by_node(second, 1.0)
        assert not await closed_by_node(first, 0.2)
        assert t.stats.closed_buffer == 1 and 700_000 <= t.buffered <= budget


async def test_a_frame_not_finished_in_time_is_closed_even_if_bytes_trickle() -> None:
    async with listening(frame_timeout=0.6, idle_timeout=30) as (t, sink, conns):
        slow = await connect(t, conns)
        steady = await connect(t, conns)
        slow[1].write((1000).to_bytes(4, "big"))
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < 3.0 and t.stats.closed_frame_timeout == 0:
            slow[1].write(b"x")  # a byte every 0.1 s: never idle, never done
            steady[1].write(a_ping())  # whole frames: never overdue
            await asyncio.sleep(0.1)
        assert t.stats.closed_frame_timeout == 1
        assert 0.6 <= loop.time() - start <= 0.6 + 0.5  # the timeout plus one sweep
        assert await closed_by_node(slow, 0.5) and not await closed_by_node(steady, 0.1)
        assert len(sink.got) > 5 and t.buffered == 0


async def test_an_idle_connection_is_closed() -> None:
    async with listening(idle_timeout=0.6) as (t, _, conns):
        conn = await connect(t, conns)
        assert not await closed_by_node(conn, 0.3)
        assert await closed_by_node(conn, 1.0)
        assert t.stats.closed_idle == 1 and t.inbound_count() == 0


@pytest.mark.parametrize(
    "table, error",
    [
        ({"max_connections": 0}, "positive"),
        ({"idle_timeout": "1"}, "number"),
        ({"max_buffered_bytes": 1.5}, "integer"),
        ({"max_connections": 4, "max_connections_per_source": 8}, "at most"),
        ({"bogus": 1}, "unknown setting"),
    ],
)
def test_the_transport_table_is_validated(table: dict[str, Any], error: str) -> None:
    with pytest.raises(TcpLimitsError, match=error):
        TcpLimits.from_mapping(table)
    assert TcpLimits.from_mapping({"frame_timeout": 5}).frame_timeout == 5.0
