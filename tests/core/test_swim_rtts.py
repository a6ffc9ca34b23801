"""Per-member probe round trips (``Swim.rtts``), shown as ``rtt_ms`` by ``/v1/peers``."""

from __future__ import annotations

from tests.core._swim_harness import Cluster


def test_every_directly_probed_member_has_a_round_trip() -> None:
    c = Cluster(seed=3)
    c.start(4)
    c.run(20.0)
    for name, n in c.nodes.items():
        rtts = n.rtts()
        assert name not in rtts
        assert set(rtts) == set(c.nodes) - {name}  # round-robin probing reached everyone
        assert all(0.0 <= rtt < n.config.probe_timeout for rtt in rtts.values())
        rtts.clear()
        assert n.rtts()  # a copy: callers cannot change the node's view


def test_a_reaped_member_loses_its_round_trip() -> None:
    from dataclasses import replace

    from plumtree.core.config import SwimConfig

    c = Cluster(replace(SwimConfig(), dead_reap_time=5.0), seed=4)
    names = c.start(3)
    c.run(20.0)
    assert names[2] in c.nodes[names[0]].rtts()
    c.crash(names[2])
    c.run(60.0)  # suspected, declared dead, then reaped
    assert names[2] not in c.states(names[0])
    assert names[2] not in c.nodes[names[0]].rtts()
