"""The event loop of the simulator: a heap of timed messages, timers and actions.

Nodes are any objects with the core's sans-IO surface (``receive``, ``handle_timer``,
``next_deadline``, ``take_outgoing``, ``take_events``); the engine is the only clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

from plumtree.core.events import Event
from plumtree.core.messages import Gossip
from plumtree.sim.network import Network

_MSG, _TIMER, _ACTION = 0, 1, 2


class SimNode(Protocol):
    name: str

    def receive(self, sender: str, message: Any, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def take_outgoing(self) -> list[tuple[str, Any]]: ...
    def take_events(self) -> list[Event]: ...


EventSink = Callable[[int, Event], None]


class Simulator:
    """Runs nodes over a :class:`Network`; ``on_event(node_index, event)`` sees everything."""

    def __init__(self, nodes: list[SimNode], network: Network, on_event: EventSink) -> None:
        self.nodes = nodes
        self.network = network
        self.on_event = on_event
        self.index = {node.name: i for i, node in enumerate(nodes)}
        self.now = 0.0
        self._heap: list[tuple[float, int, int, int, int, Any]] = []
        self._seq = itertools.count()
        #: heap times of every timer entry still pending per node (a few at most)
        self._timers: list[list[float]] = [[] for _ in nodes]
        self.processed = 0
        self._sent_by_class: dict[type, int] = {}
        self.gossip_by_id: dict[bytes, int] = {}

    # ---------------------------------------------------------------- scheduling

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``when``."""
        heapq.heappush(self._heap, (when, next(self._seq), _ACTION, -1, -1, action))

    def call(self, i: int, fn: Callable[[Any], None]) -> None:
        """Call ``fn(node)`` now (if the node is up), then collect what it produced."""
        if i in self.network.crashed:
            return
        fn(self.nodes[i])
        self.flush(i)

    def flush(self, i: int) -> None:
        node = self.nodes[i]
        now = self.now
        out = node.take_outgoing()
        if out:
            net = self.network
            index = self.index
            heap = self._heap
            seq = self._seq
            counts = self._sent_by_class
            gossip = self.gossip_by_id
            for dest, msg in out:
                cls = type(msg)
                counts[cls] = counts.get(cls, 0) + 1
                if cls is Gossip:
                    gossip[msg.id] = gossip.get(msg.id, 0) + 1
                j = index.get(dest)
                if j is None:
                    continue
                arrive = net.delivery_time(i, j, now)
                if arrive is not None:
                    heapq.heappush(heap, (arrive, next(seq), _MSG, j, i, msg))
        events = node.take_events()
        if events:
            sink = self.on_event
            for event in events:
                sink(i, event)
        deadline = node.next_deadline()
        if deadline is not None:
            pending = self._timers[i]
            # an entry at or before the deadline already wakes the node: waking early is
            # harmless (handle_timer only runs what is due) and saves a heap entry
            if not pending or min(pending) > deadline:
                when = deadline if deadline > now else now
                pending.append(when)
                heapq.heappush(self._heap, (when, next(self._seq), _TIMER, i, -1, None))

    def arm_all(self) -> None:
        for i in range(len(self.nodes)):
            self.flush(i)

    @property
    def sent_by_type(self) -> dict[str, int]:
        """Messages handed to the network so far, by message type name."""
        return {cls.__name__: n for cls, n in self._sent_by_class.items()}

    # ---------------------------------------------------------------- running

    def run_until(self, t_end: float) -> None:
        heap = self._heap
        nodes = self.nodes
        crashed = self.network.crashed
        names = [n.name for n in nodes]
        timers = self._timers
        flush = self.flush
        while heap and heap[0][0] <= t_end:
            when, _, kind, dst, src, obj = heapq.heappop(heap)
            self.now = when
            self.processed += 1
            if kind == _MSG:
                if dst in crashed:
                    continue
                nodes[dst].receive(names[src], obj, when)
                flush(dst)
            elif kind == _TIMER:
                timers[dst].remove(when)
                if dst in crashed:
                    continue
                nodes[dst].handle_timer(when)
                flush(dst)
            else:
                obj()
        if t_end > self.now:
            self.now = t_end
