"""In-process nodes on real loopback sockets (several per event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from plumtree.core.config import ProtocolConfig
from plumtree.runtime.node import Delivery, Node, NodeConfig


def local_config(**plumtree_changes: Any) -> ProtocolConfig:
    cfg = ProtocolConfig.from_profile("local")
    if plumtree_changes:
        cfg = replace(cfg, plumtree=replace(cfg.plumtree, **plumtree_changes))
    return cfg


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


def alive_names(node: Node) -> set[str]:
    return {m["name"] for m in node.members() if m["state"] == "alive"}


class LocalCluster:
    """Nodes started in this loop; every one is stopped at teardown, even on failure."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.delivered: dict[str, list[Delivery]] = {}

    async def add(self, name: str | None = None, join: bool = True, **changes: Any) -> Node:
        name = name or f"n{len(self.nodes)}"
        seeds = [self.nodes[0].gossip_addr] if join and self.nodes else []
        cfg = NodeConfig(
            name=name, bind="127.0.0.1:0", api="127.0.0.1:0", join=seeds, protocol=local_config()
        )
        for key, value in changes.items():
            setattr(cfg, key, value)
        got: list[Delivery] = []
        self.delivered[name] = got
        node = Node(cfg, on_deliver=got.append)
        await node.start()
        self.nodes.append(node)
        return node

    async def converge(self, timeout: float = 30.0) -> None:
        names = {n.name for n in self.nodes}
        await wait_for(lambda: all(alive_names(n) == names for n in self.nodes), timeout)

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop(leave=False) for n in self.nodes), return_exceptions=True)


@pytest.fixture
async def cluster() -> AsyncIterator[LocalCluster]:
    c = LocalCluster()
    try:
        yield c
    finally:
        await c.stop()


Started = Callable[..., Awaitable[Node]]
