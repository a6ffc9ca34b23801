"""In-process nodes on an event loop of their own thread, so that the CLI can run
in-process against them (``invoke``) and tests can still reach into the nodes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from plumtree.core.messages import Gossip, Graft, IHave, Prune, Sync
from plumtree.core.wire import Envelope
from plumtree.runtime.node import Node
from tests.runtime.conftest import LocalCluster

T = TypeVar("T")

#: Plumtree's messages (Repair is a Gossip): what a cut-off node no longer receives.
PLUMTREE_MESSAGES = (Gossip, IHave, Graft, Prune, Sync)


class ThreadCluster:
    """A LocalCluster whose nodes run on an event loop in another thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nodes", daemon=True)
        self.thread.start()
        self.local = LocalCluster()

    @property
    def nodes(self) -> list[Node]:
        return self.local.nodes

    @property
    def urls(self) -> list[str]:
        return [str(n.admin_url) for n in self.nodes]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the nodes' loop (node internals are not thread-safe)."""

        async def go() -> T:
            return fn()

        return self.run(go())

    def start(self, n: int) -> None:
        async def go() -> None:
            for i in range(n):
                await self.local.add(f"node-{i}")
            await self.local.converge()

        self.run(go())

    def broadcast(self, i: int, *payloads: bytes) -> list[str]:
        return self.call(lambda: [self.nodes[i].broadcast(p) for p in payloads])

    def cut(self, i: int) -> None:
        """Node i no longer receives Plumtree messages (SWIM still flows: it stays alive
        in every member list), so it misses broadcasts and cannot repair them."""
        node = self.nodes[i]

        def only_swim(envelope: Envelope, source: str, reliable: bool) -> None:
            kept = [m for m in envelope.messages if not isinstance(m, PLUMTREE_MESSAGES)]
            if kept:
                node._on_envelope(Envelope(envelope.label, envelope.sender, kept), source, reliable)

        self.call(lambda: setattr(node.transport, "on_envelope", only_swim))

    def heal(self, i: int) -> None:
        node = self.nodes[i]
        self.call(lambda: setattr(node.transport, "on_envelope", node._on_envelope))

    def give_up(self, i: int, origin: int, seq: int) -> str:
        """Node i settles ``origin``'s seq as lost (as if no member held it any more);
        returns that message's id."""
        from plumtree.core.ids import format_id, message_id

        node, source = self.nodes[i], self.nodes[origin]

        def go() -> str:
            stream = node.plumtree.streams.ensure(source.name, source.plumtree.epoch)
            assert stream is not None
            stream.learn_head(seq)
            node.plumtree.give_up(stream, seq, "unavailable")
            node._pump()
            return format_id(message_id(stream.key, seq))

        return self.call(go)

    def close(self) -> None:
        async def shutdown() -> None:
            try:
                await self.local.stop()
            finally:  # e.g. a long poll still held by a node's admin API
                rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in rest:
                    task.cancel()
                await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.run(shutdown(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def delivered_everywhere(c: ThreadCluster, count: int, timeout: float = 10.0) -> None:
    """Wait (on the nodes' own delivery lists) until every node delivered ``count``."""
    deadline = time.monotonic() + timeout
    while not all(len(c.local.delivered[n.name]) >= count for n in c.nodes):
        assert time.monotonic() < deadline, {k: len(v) for k, v in c.local.delivered.items()}
        time.sleep(0.02)


# -- a healthy cluster -------------------------------------------------------------------
