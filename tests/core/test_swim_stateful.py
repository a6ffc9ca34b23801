"""Hypothesis stateful model of a few SWIM nodes: fake clock, loss, partitions, crashes.

Invariants, after every step: no node's incarnation and no member's incarnation in any
view ever goes down. At the end of every run the network is healed and left alone for a
while; then every live node must see every other live node alive and every crashed node
dead, and all live nodes must hold the same member table (names and states).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from plumtree.core.config import SwimConfig
from tests.core._swim_harness import Cluster

#: LAN timings; reaping far beyond the run so "same table" compares like with like
CONFIG = SwimConfig(dead_reap_time=3600.0)
SETTLE = 240.0


class SwimCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c: Cluster | None = None
        self.names: list[str] = []
        self.max_inc: dict[tuple[str, str], int] = {}
        self.left: dict[str, None] = {}

    @property
    def cluster(self) -> Cluster:
        assert self.c is not None
        return self.c

    @initialize(n=st.integers(3, 5), seed=st.integers(0, 2**16))
    def start(self, n: int, seed: int) -> None:
        self.c = Cluster(CONFIG, seed=seed, check_wire=False)
        self.names = self.c.start(n)
        self.c.run(2.0)

    def up(self) -> list[str]:
        return [n for n in self.names if self.cluster.is_up(n)]

    @rule(dt=st.floats(0.05, 4.0))
    def advance(self, dt: float) -> None:
        self.cluster.run(dt)

    @rule(loss=st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    def set_loss(self, loss: float) -> None:
        self.cluster.loss = loss

    @rule(mask=st.integers(1, 2**5 - 2))
    def partition(self, mask: int) -> None:
        self.cluster.partition({n: (mask >> i) & 1 for i, n in enumerate(self.names)})

    @rule()
    def heal(self) -> None:
        self.cluster.partition(None)

    @precondition(lambda self: len(self.up()) > 2)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.cluster.crash(data.draw(st.sampled_from(self.up())))

    # A restart joins through the static seed list (every name, as a deployment would
    # configure it). Restarts happen only while the network is whole: a side whose members
    # all restarted inside a partition would know nobody on the other side, and no
    # membership protocol can merge two clusters that share no member.
    @precondition(lambda self: self.c is not None and self.c.group is None)
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        down = [n for n in self.names if not self.cluster.is_up(n)]
        if not down:
            return
        name = data.draw(st.sampled_from(down))
        self.cluster.add(name, join=[n for n in self.names if n != name])
        # a node that left and restarts stays in ``left``: if it crashes again before
        # anyone heard of the restart, "left" is still the newest news they have
        # a new process: its own views start over; others' views of it must not go down
        for key in [k for k in self.max_inc if k[0] == name]:
            del self.max_inc[key]

    @precondition(lambda self: len(self.up()) > 2)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        """Graceful leave: announce it, keep gossiping a moment, then the process exits."""
        name = data.draw(st.sampled_from(self.up()))
        self.cluster.nodes[name].leave(self.cluster.now)
        self.cluster.flush(name)
        self.cluster.run(1.0)
        self.cluster.crash(name)
        self.left[name] = None

    @rule(data=st.data(), value=st.text(max_size=8))
    def set_meta(self, data: st.DataObject, value: str) -> None:
        name = data.draw(st.sampled_from(self.up()))
        self.cluster.nodes[name].set_meta({"v": value}, self.cluster.now)
        self.cluster.flush(name)

    @invariant()
    def incarnations_never_go_down(self) -> None:
        if self.c is None:
            return
        for obs in self.up():
            view = self.c.view(obs)
            for member, (_, inc) in view.items():
                key = (obs, member)
                assert inc >= self.max_inc.get(key, 0), (key, inc, self.max_inc.get(key))
                self.max_inc[key] = inc

    def teardown(self) -> None:
        c = self.c
        if c is None:
            return
        c.partition(None)
        c.loss = 0.0
        c.run(SETTLE)
        live = self.up()
        crashed = [n for n in self.names if n not in live]
        tables = {obs: c.states(obs) for obs in live}
        for obs, table in tables.items():
            for n in live:
                assert table.get(n) == "alive", (obs, n, table)
            for n in crashed:
                # a node that never saw n alive ignores news of its death (memberlist does:
                # learning dead strangers would make reaped members circulate forever)
                # a leave heard by nobody still alive (it left inside a partition whose
                # other members left too) can only have been seen as a failure
                gone = ("left", "dead") if n in self.left else ("dead",)
                assert table.get(n, "dead") in gone, (obs, n, table)
        # same table: every name that any live node knows is known alike by all that
        # knew it, and the live members are known by all as alive
        reference: dict[str, str] = {}
        for table in tables.values():
            for name, state in table.items():
                assert reference.setdefault(name, state) == state, (name, tables)
            assert set(table) >= set(live)
            assert set(table) <= set(self.names)
        self.incarnations_never_go_down()


SwimCluster.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSwimCluster = SwimCluster.TestCase
