"""Hypothesis drives several Plumtree cores over a lossy network with a fake clock.

Faults: loss, nodes cut off for a while, restarts from saved state, replayed messages.
Invariants: eager and lazy sets are disjoint and never hold the node itself; no node ever
delivers a message twice (across its restarts too); once the network heals, every node
delivers every broadcast, and nothing is declared lost (retention outlasts the run).
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from plumtree.core import events as ev
from plumtree.core.plumtree import Plumtree
from tests.core.harness import Net, config


class PlumtreeCluster(RuleBasedStateMachine):
    @initialize(n=st.integers(3, 6), seed=st.integers(0, 10_000), mesh=st.booleans())
    def setup(self, n: int, seed: int, mesh: bool) -> None:
        names = [f"n{i}" for i in range(n)]
        cfg = config(
            eager_fanout=2,
            ihave_interval=0.02,
            ihave_timeout=0.05,
            graft_timeout=0.1,
            graft_max_retries=4,
            sync_interval=0.5,
            repair_delay=0.2,
            repair_interval=0.05,
            maintenance_interval=0.5,
        )
        self.net = Net(names, cfg, seed=seed)
        if mesh:
            self.net.full_mesh()
        else:  # a ring: the sparsest connected overlay
            for i, a in enumerate(names):
                self.net.link(a, names[(i + 1) % n])
        self.broadcasts: list[bytes] = []
        self.counter = 0

    @rule(origin=st.integers(0, 5))
    def broadcast(self, origin: int) -> None:
        names = list(self.net.nodes)
        self.counter += 1
        node = self.net.nodes[names[origin % len(names)]]
        self.broadcasts.append(node.broadcast(self.counter.to_bytes(4, "big"), self.net.now))
        self.net.collect()

    @rule(drops=st.lists(st.booleans(), min_size=1, max_size=30))
    def deliver_with_loss(self, drops: list[bool]) -> None:
        mask = iter(drops)
        self.net.pump(drop=lambda s, d, m: next(mask, False), limit=len(drops))

    @rule(seconds=st.floats(0.01, 0.6))
    def advance_lossy(self, seconds: float) -> None:
        lossy = iter([True, False, False] * 1000)
        self.net.advance(seconds, drop=lambda s, d, m: next(lossy, False), step=0.02)

    @rule(seconds=st.floats(0.01, 0.6))
    def advance(self, seconds: float) -> None:
        self.net.advance(seconds, step=0.02)

    @rule(who=st.integers(0, 5), seconds=st.floats(0.1, 3.0))
    def cut_off(self, who: int, seconds: float) -> None:
        """A node hears nothing and is heard by nobody (frozen, or partitioned)."""
        name = list(self.net.nodes)[who % len(self.net.nodes)]
        self.net.advance(seconds, drop=lambda s, d, m: name in (s, d), step=0.05)

    @rule(who=st.integers(0, 5))
    def restart(self, who: int) -> None:
        """kill -9 and a restart from its store: same name, same epoch, same state."""
        net = self.net
        name = list(net.nodes)[who % len(net.nodes)]
        old = net.nodes[name]
        peers = old.peers.names()
        net.queue = type(net.queue)(x for x in net.queue if name not in (x[0], x[1]))
        net.nodes[name] = Plumtree(
            name, old.config, random.Random(self.counter), net.now, restored=old.snapshot(net.now)
        )
        for peer in peers:
            net.link(name, peer)

    @rule(k=st.integers(0, 10_000))
    def replay(self, k: int) -> None:
        """Something sent long ago arrives again (a replayed frame, a flushed queue)."""
        if self.net.sent:
            src, dst, msg = self.net.sent[k % len(self.net.sent)]
            self.net.nodes[dst].receive(src, msg, self.net.now)
            self.net.collect()

    @invariant()
    def peer_sets_are_sane(self) -> None:
        for name, node in self.net.nodes.items():
            eager, lazy = set(node.peers.eager), set(node.peers.lazy)
            assert not eager & lazy, f"{name}: eager and lazy overlap"
            assert name not in eager | lazy, f"{name}: has itself as a peer"
            assert eager | lazy == set(node.peers.info), f"{name}: info out of sync"
            # the hot paths read PeerInfo.eager instead of set membership
            assert all(info.eager == (peer in eager) for peer, info in node.peers.info.items())

    @invariant()
    def take_all_deadline_is_next_deadline(self) -> None:
        # take_all() returns the cached deadline; next_deadline() recomputes it
        for name, node in self.net.nodes.items():
            assert node._deadline == node.next_deadline(), f"{name}: stale cached deadline"

    @invariant()
    def nothing_delivered_twice(self) -> None:
        for name in self.net.nodes:
            counts = Counter(e.id for e in self.net.events[name] if isinstance(e, ev.Delivered))
            assert all(c == 1 for c in counts.values()), f"{name} delivered a message twice"

    def teardown(self) -> None:
        if not hasattr(self, "net"):
            return
        self.net.advance(10.0, step=0.05)  # healed: no loss
        for name in self.net.nodes:
            got = {e.id for e in self.net.events[name] if isinstance(e, ev.Delivered)}
            missing = [b.hex() for b in self.broadcasts if b not in got]
            assert not missing, f"{name} never delivered {missing}"
            node = self.net.nodes[name]
            assert node.counters.lost_unavailable + node.counters.lost_limit == 0, name
            assert node.streams.missing() == 0, name
        self.nothing_delivered_twice()


PlumtreeCluster.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestPlumtreeCluster = PlumtreeCluster.TestCase
