"""serf's operator verbs on the SWIM core: force-leave and tags that must fit a datagram."""

from __future__ import annotations

import pytest

from plumtree.core import events as ev
from plumtree.core.config import SwimConfig
from tests.core._swim_harness import Cluster


def test_force_leave_turns_a_failed_member_left_everywhere() -> None:
    c = Cluster(seed=21)
    names = c.start(5)
    c.run(5.0)
    c.crash("n4")
    c.run(60.0)
    assert all(c.states(n)["n4"] == "dead" for n in names[:4])
    assert c.nodes["n0"].force_leave("n4", c.now) == "dead"
    c.flush("n0")
    c.run(3.0)
    for n in names[:4]:
        assert c.states(n)["n4"] == "left"
    assert any(e.name == "n4" for e in c.kinds("n2", ev.MemberLeft))
    # again: already left, nothing to do
    assert c.nodes["n0"].force_leave("n4", c.now) == "left"


def test_force_leave_refuses_live_self_and_unknown_members() -> None:
    c = Cluster(seed=22)
    c.start(3)
    c.run(5.0)
    n0 = c.nodes["n0"]
    with pytest.raises(ValueError, match="alive"):
        n0.force_leave("n1", c.now)
    with pytest.raises(ValueError, match="itself"):
        n0.force_leave("n0", c.now)
    with pytest.raises(ValueError, match="no member"):
        n0.force_leave("nobody", c.now)
    assert c.states("n1")["n1"] == "alive"


def test_forced_out_member_that_is_alive_refutes() -> None:
    # a member suspected by one side only (its probes lost) is forced out there; alive,
    # it hears its own leave and refutes with a higher incarnation
    c = Cluster(seed=23)
    names = c.start(4)
    c.run(5.0)
    c.crash("n3")
    c.run(6.0)
    assert c.states("n0")["n3"] in ("suspect", "dead")
    c.nodes["n0"].force_leave("n3", c.now)
    c.flush("n0")
    c.down.pop("n3")
    c.run(20.0)
    for n in names:
        assert c.states(n)["n3"] == "alive"


def test_tags_that_do_not_fit_a_datagram_are_refused_with_the_limit() -> None:
    c = Cluster(SwimConfig(max_meta_bytes=4000, udp_buffer_size=600), seed=24)
    c.start(2)
    n0 = c.nodes["n0"]
    with pytest.raises(ValueError, match="udp_buffer_size 600"):
        n0.check_meta_fits({f"k{i}": "v" * 200 for i in range(4)})
    n0.check_meta_fits({"role": "api"})  # fits: no error
