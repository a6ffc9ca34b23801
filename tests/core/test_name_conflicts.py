"""A name held by a live member is refused from another address, on both sides.

The holder and everyone who knows it refuse the claim (counted, reported once, no
refutation war); the claimant learns from its seed's join reply that the name is taken
and stops joining.
"""

from __future__ import annotations

import random

from plumtree.core import events as ev
from plumtree.core.config import SwimConfig
from plumtree.core.messages import Alive, Dead, MemberState, PushPull
from plumtree.core.swim import Swim
from tests.core._swim_harness import Cluster

CFG = SwimConfig()


def node(name: str) -> Swim:
    return Swim(name, name, CFG, random.Random(1), 0.0)


def _conflicts(swim: Swim) -> list[ev.Event]:
    return [e for e in swim.take_events() if isinstance(e, ev.NameConflict)]


def test_a_claim_from_another_address_is_refused_counted_and_reported_once() -> None:
    a = node("a")
    a.receive_packet("b", "b", [Alive("b", 1, "b", {})], 0.0)
    a.take_events()
    # equal, lower and higher incarnations alike, by datagram and by push-pull
    for inc in (1, 1, 0, 7):
        a.receive_packet("x", "x", [Alive("b", inc, "elsewhere", {})], 1.0)
    a.receive_stream(
        "x", "x", PushPull(False, False, [MemberState("b", "elsewhere", 1, 0, {})]), 2.0
    )
    rec = a.member("b")
    assert rec is not None and (rec.addr, rec.state, rec.incarnation) == ("b", "alive", 1)
    assert a.counters.addr_conflicts == 5
    assert _conflicts(a) == [ev.NameConflict("b", "b", "elsewhere")]
    # another claimant of the same name is another conflict
    a.receive_packet("y", "y", [Alive("b", 1, "third", {})], 3.0)
    assert _conflicts(a) == [ev.NameConflict("b", "b", "third")]


def test_a_claim_to_our_own_name_is_refused_not_refuted() -> None:
    a = node("a")
    a.receive_stream("a2", "a", PushPull(True, False, [MemberState("a", "a2", 3, 0, {})]), 1.0)
    assert a.incarnation == 1 and a.counters.refutations == 0
    assert _conflicts(a) == [ev.NameConflict("a", "a", "a2")]
    assert [m.name for m in a.members()] == ["a"]


def test_a_failed_members_name_is_free_again() -> None:
    a = node("a")
    a.receive_packet("b", "b", [Alive("b", 1, "b", {})], 0.0)
    a.receive_packet("x", "x", [Dead("b", 1, "c")], 1.0)
    a.receive_packet("x", "x", [Alive("b", 2, "new-addr", {})], 2.0)
    assert a.counters.addr_conflicts == 0  # not refused: the name is free again
    # (heard second-hand, the new address waits to answer a probe before it is used)
    pending = a.table.by_name.get("b")
    assert pending is not None and pending.addr == "new-addr" and not pending.confirmed


def test_a_second_node_with_a_live_members_name_is_told_and_stops_joining() -> None:
    c = Cluster(seed=3)
    names = c.start(3)
    c.run(5.0)
    assert c.all_alive_everywhere(names)
    c.record_sent = True
    impostor = c.add("n1", join=["n0"], addr="n1-b")
    c.run(15.0)  # the harness retries a join every second while not joined
    assert impostor.name_taken == "n1"
    assert [e for _, e in c.events["n1-b"] if isinstance(e, ev.NameTaken)] == [
        ev.NameTaken("n1", "n1", "n0")
    ]
    joins = [o for src, _, o in c.sent if src == "n1-b" and o.reliable]
    assert len(joins) == 1  # told once, it never asked again
    assert [m.name for m in impostor.members()] == ["n1"]  # it learnt nobody
    assert c.kinds("n0", ev.NameConflict) == [ev.NameConflict("n1", "n1", "n1-b")]
    # the real n1 was never disturbed: alive everywhere at its address, no refutation
    for observer in names:
        rec = c.nodes[observer].member("n1")
        assert rec is not None and (rec.addr, rec.state) == ("n1", "alive")
    assert c.nodes["n1"].incarnation == 1 and c.nodes["n1"].counters.refutations == 0
    # the impostor's leave reaches nobody: the real one never goes left
    impostor.leave(c.now)
    c.flush("n1-b")
    c.crash("n1-b")  # (gone: an observer that knows nobody is not a view to check)
    c.run(10.0)
    assert c.all_alive_everywhere(names)


def test_joining_with_the_seeds_own_name() -> None:
    c = Cluster(seed=4)
    seed = c.add("n0")
    c.add("n1", join=["n0"])
    c.run(3.0)
    joiner = c.add("n0", join=["n0"], addr="n0-b")
    c.run(10.0)
    assert joiner.name_taken == "n0" and not joiner.joined
    assert c.kinds("n0-b", ev.NameTaken) == [ev.NameTaken("n0", "n0", "n0")]
    assert c.kinds("n0", ev.NameConflict) == [ev.NameConflict("n0", "n0", "n0-b")]
    assert seed.incarnation == 1 and seed.counters.refutations == 0
    assert c.states("n1") == {"n1": "alive", "n0": "alive"}
    assert c.nodes["n1"].member("n0").addr == "n0"  # type: ignore[union-attr]
