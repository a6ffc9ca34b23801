"""The node's event loop: uvloop when installed, the standard loop on request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

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
