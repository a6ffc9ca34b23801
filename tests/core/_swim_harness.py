"""A tiny in-test network for SWIM nodes: fake clock, latency, loss, partitions, crashes.

Every datagram goes through the real wire codec (encode, size check, decode), so the
tests also prove that what the core emits fits ``udp_buffer_size`` and round-trips.
"""

from __future__ import annotations

import heapq
import itertools
import random
from typing import Any

from plumtree.core import events as ev
from plumtree.core.config import SwimConfig
from plumtree.core.swim import Outgoing, Swim
from plumtree.core.wire import Envelope, decode, encode

LABEL = "test"


class Cluster:
    """Routes Swim outputs between nodes; ``run(until)`` advances the fake clock."""

    def __init__(
        self,
        config: SwimConfig | None = None,
        seed: int = 0,
        latency: float = 0.002,
        loss: float = 0.0,
        check_wire: bool = True,
    ) -> None:
        self.config = config or SwimConfig()
        self.seed = seed
        self.rng = random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.check_wire = check_wire
        self.now = 0.0
        self.nodes: dict[str, Swim] = {}
        self.events: dict[str, list[tuple[float, ev.Event]]] = {}
        self.down: dict[str, None] = {}
        self.blocked: dict[tuple[str, str], None] = {}
        self.group: dict[str, int] | None = None
        self.delay: dict[str, float] = {}
        self.sent: list[tuple[str, str, Outgoing]] = []
        self.record_sent = False
        self._heap: list[tuple[float, int, str, str, Outgoing]] = []
        self._seq = itertools.count()
        self.max_datagram = 0
        #: the runtime's job, modelled here: retry a join every second until it succeeds
        self.seeds: dict[str, list[str]] = {}
        self.join_retry = 1.0
        self._next_retry = self.join_retry

    # -------------------------------------------------------------- membership of the net

    def add(
        self,
        name: str,
        join: list[str] | None = None,
        meta: dict[str, str] | None = None,
        addr: str | None = None,
    ) -> Swim:
        """A node; ``addr`` (default: the name) is also its key in this network."""
        key = addr or name
        node = Swim(
            name,
            key,
            self.config,
            random.Random(f"{self.seed}/{name}/{len(self.events)}"),
            self.now,
            meta,
            label=LABEL,
        )
        self.nodes[key] = node
        self.down.pop(key, None)
        self.events.setdefault(key, [])
        if join:
            self.seeds[key] = list(join)
            node.join(join, self.now)
        self.flush(key)
        return node

    def start(self, n: int, prefix: str = "n") -> list[str]:
        """``n`` nodes, each joining through the first."""
        names = [f"{prefix}{i}" for i in range(n)]
        for i, name in enumerate(names):
            self.add(name, join=[names[0]] if i else None)
        return names

    def crash(self, name: str) -> None:
        self.down[name] = None

    def is_up(self, name: str) -> bool:
        return name in self.nodes and name not in self.down

    def partition(self, groups: dict[str, int] | None) -> None:
        self.group = groups

    def block(self, a: str, b: str) -> None:
        self.blocked[(a, b)] = None
        self.blocked[(b, a)] = None

    # -------------------------------------------------------------- routing

    def _reachable(self, src: str, dst: str) -> bool:
        if src in self.down or dst in self.down or dst not in self.nodes:
            return False
        if (src, dst) in self.blocked:
            return False
        g = self.group
        return g is None or g.get(src, -1) == g.get(dst, -1)

    def flush(self, name: str) -> None:
        node = self.nodes[name]
        for out in node.take_outgoing():
            if self.record_sent:
                self.sent.append((name, out.addr, out))
            if not out.reliable and self.check_wire:
                data = encode(Envelope(LABEL, name, out.messages))
                assert len(data) <= self.config.udp_buffer_size, (len(data), out)
                self.max_datagram = max(self.max_datagram, len(data))
                env = decode(data)
                assert env.messages == out.messages
            if not self._reachable(name, out.addr):
                continue
            if self.loss and self.rng.random() < self.loss:
                continue
            at = self.now + self.latency * (1.0 + self.rng.random()) + self.delay.get(out.addr, 0)
            heapq.heappush(self._heap, (at, next(self._seq), out.addr, name, out))
        for event in node.take_events():
            self.events[name].append((self.now, event))

    def _deliver(self, dst: str, src: str, out: Outgoing) -> None:
        if not self._reachable(src, dst):
            return
        node = self.nodes[dst]
        if out.reliable:
            node.receive_stream(src, src, out.messages[0], self.now)
        else:
            node.receive_packet(src, src, out.messages, self.now)
        self.flush(dst)

    def run(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until(self, t_end: float) -> None:
        while self._next_retry <= t_end:
            self._run_until(self._next_retry)
            self._next_retry += self.join_retry
            for name, seeds in self.seeds.items():
                node = self.nodes[name]
                if not node.joined and name not in self.down:
                    node.join(seeds, self.now)
                    self.flush(name)
        self._run_until(t_end)

    def _run_until(self, t_end: float) -> None:
        while True:
            t_msg = self._heap[0][0] if self._heap else float("inf")
            best, who = t_msg, None
            for name, node in self.nodes.items():
                if name in self.down:
                    continue
                d = node.next_deadline()
                if d < best:
                    best, who = d, name
            if best > t_end:
                break
            self.now = max(self.now, best)
            if who is None:
                _, _, dst, src, out = heapq.heappop(self._heap)
                self._deliver(dst, src, out)
            else:
                self.nodes[who].handle_timer(self.now)
                self.flush(who)
        self.now = t_end

    # -------------------------------------------------------------- observations

    def view(self, observer: str) -> dict[str, tuple[str, int]]:
        return {m.name: (m.state, m.incarnation) for m in self.nodes[observer].members()}

    def states(self, observer: str) -> dict[str, str]:
        return {m.name: m.state for m in self.nodes[observer].members()}

    def all_alive_everywhere(self, names: list[str] | None = None) -> bool:
        live = [n for n in self.nodes if n not in self.down]
        expect = names if names is not None else live
        for obs in live:
            st = self.states(obs)
            if any(st.get(n) != "alive" for n in expect):
                return False
        return True

    def kinds(self, name: str, kind: type[Any]) -> list[Any]:
        return [e for _, e in self.events[name] if type(e) is kind]
