"""The node's event loop: uvloop when installed, the standard loop on request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from plumtree.runtime.eventloop import EVENT_LOOP_ENV, loop_factory, loop_name, run
from tests.runtime.conftest import LocalCluster, wait_for


async def _which() -> str:
    return loop_name(asyncio.get_running_loop())


def test_uvloop_is_the_default_and_asyncio_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    assert run(_which()) == "uvloop"
    assert run(_which(), "asyncio") == "asyncio"
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert loop_factory() is None
    assert run(_which()) == "asyncio"


async def _three_nodes_broadcast() -> str:
    cluster = LocalCluster()
    try:
        for _ in range(3):
            await cluster.add()
        await cluster.converge()
        msg_id = cluster.nodes[0].broadcast(b"over libuv")
        await wait_for(lambda: all(len(d) == 1 for d in cluster.delivered.values()))
        assert {d[0].id for d in cluster.delivered.values()} == {msg_id}
        return await _which()
    finally:
        await cluster.stop()


def test_nodes_run_on_uvloop_with_real_sockets() -> None:
    """uvloop's transports are not asyncio.Transport subclasses: the transport copes."""
    assert run(_three_nodes_broadcast(), "uvloop") == "uvloop"


def test_an_unknown_loop_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="expected auto, uvloop or asyncio"):
        loop_factory("tokio")
    env = {**os.environ, EVENT_LOOP_ENV: "tokio"}
    proc = subprocess.run(
        [sys.executable, "-m", "plumctl", "node", "start", "--bind", "127.0.0.1:0", "--api", "off"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().count("\n") == 0 and "expected auto, uvloop or asyncio" in proc.stderr
    )


async def _clock_readings() -> set[float]:
    cluster = LocalCluster()
    try:
        node = await cluster.add()
        seen = set()
        spin_until = time.perf_counter() + 0.0005  # half a millisecond, in one iteration
        while time.perf_counter() < spin_until:
            seen.add(node._now())
        return seen
    finally:
        await cluster.stop()


def test_the_nodes_clock_resolves_less_than_a_millisecond_on_uvloop() -> None:
    """uvloop's ``loop.time()`` ticks once a millisecond: the cores' ``now`` must not be
    it (issue 19: RTTs of exactly 0 or 1 ms). Half a millisecond of readings shows at
    most two ticks of that clock; a microsecond clock shows many values."""
    assert len(run(_clock_readings(), "uvloop")) > 10


async def _timings() -> tuple[list[float], list[float]]:
    cluster = LocalCluster()
    try:
        for _ in range(3):
            await cluster.add()
        await cluster.converge()
        nodes = cluster.nodes
        await wait_for(
            lambda: all(row.get("rtt_ms") is not None for n in nodes for row in n.peers())
        )
        latencies = []
        for i in range(10):
            origin = nodes[i % 3]
            hexid = origin.broadcast(f"timing-{i}".encode())
            await wait_for(lambda: all(n.message(hexid)["delivered"] for n in nodes))  # noqa: B023
            origin_at = origin.message(hexid)["at"]
            latencies += [n.message(hexid)["at"] - origin_at for n in nodes if n is not origin]
        rtts = [float(row["rtt_ms"]) for n in nodes for row in n.peers()]
        return latencies, rtts
    finally:
        await cluster.stop()


def test_latencies_never_negative_and_rtts_not_whole_milliseconds_on_uvloop() -> None:
    """Delivery times and probe RTTs come from a microsecond clock (issue 19 bug 5: -0.977
    ms latencies, RTTs of exactly 0.00 or 1.00 ms)."""
    latencies, rtts = run(_timings(), "uvloop")
    assert latencies and min(latencies) >= 0.0, latencies
    assert rtts and any(r != round(r) for r in rtts), rtts
