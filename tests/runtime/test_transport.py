"""The TCP side of the transport: coalescing, frames split across reads, bounded memory."""

from __future__ import annotations

import asyncio
import socket

from plumtree.core import wire
from plumtree.core.messages import Graft, Prune
from plumtree.runtime.transport import FRAME_BATCH, Transport
from tests.runtime.conftest import wait_for


async def _pair() -> tuple[Transport, Transport, list[wire.Envelope]]:
    got: list[wire.Envelope] = []
    a = Transport("a", "", lambda env, src, rel: None)
    b = Transport("b", "", lambda env, src, rel: got.append(env))
    await a.start("127.0.0.1", 0)
    await b.start("127.0.0.1", 0)
    return a, b, got


async def test_what_one_turn_sends_to_a_peer_travels_in_one_frame() -> None:
    a, b, got = await _pair()
    try:
        assert b.bound is not None
        addr = f"127.0.0.1:{b.bound[1]}"
        a.send_reliable(addr, [Prune()])  # connects
        await wait_for(lambda: len(got) == 1)
        frames = a.stats.frames_sent
        for _ in range(10):  # ten sends in one turn of the loop
            a.send_reliable(addr, [Prune()])
        await wait_for(lambda: sum(len(e.messages) for e in got) == 11)
        assert a.stats.frames_sent == frames + 1
        assert len(got[-1].messages) == 10
        # more than a frame holds is cut into several frames, none lost
        a.send_reliable(addr, [Graft([])] * (FRAME_BATCH + 5))
        await wait_for(lambda: sum(len(e.messages) for e in got) == 11 + FRAME_BATCH + 5)
        assert b.stats.frames_received == a.stats.frames_sent
        assert b.stats.tcp_bytes_received == a.stats.tcp_bytes_sent
    finally:
        await a.close()
        await b.close()


async def test_frames_split_across_reads_and_glued_together_are_all_read() -> None:
    _a, b, got = await _pair()
    try:
        assert b.bound is not None
        frames = b"".join(
            len(data).to_bytes(4, "big") + data
            for data in (wire.encode(wire.Envelope("", "x", [Prune()] * k)) for k in (1, 2, 3))
        )
        _reader, writer = await asyncio.open_connection("127.0.0.1", b.bound[1])
        for i in range(0, len(frames), 3):  # three bytes at a time
            writer.write(frames[i : i + 3])
            await writer.drain()
            await asyncio.sleep(0)
        await wait_for(lambda: [len(e.messages) for e in got] == [1, 2, 3])
        writer.close()
    finally:
        await _a.close()
        await b.close()


async def test_a_peer_that_never_reads_costs_bounded_memory_and_the_drops_are_counted() -> None:
    a = Transport("a", "", lambda env, src, rel: None, queue_limit=100)
    await a.start("127.0.0.1", 0)
    with socket.socket() as server:  # accepts, never reads: its receive buffer fills up
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        addr = f"127.0.0.1:{server.getsockname()[1]}"
        try:
            payload = Graft([b"\x00" * 16] * 200)  # ~3.4 kB per message
            for _ in range(400):
                a.send_reliable(addr, [payload] * 10)
                await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            link = a._links[addr]
            assert link.paused  # the kernel buffers are full: asyncio asked us to stop
            assert a.queue_depth() <= 100
            assert link.transport is not None
            assert link.transport.get_write_buffer_size() < 1024 * 1024
            assert a.stats.frames_dropped > 0
        finally:
            await a.close()
