"""SWIM against forged and stray packets: incarnation window, unconfirmed members, PingReq.

The attacks of issue 18, on the sans-IO core with a fake clock (the same attacks run
against real node processes in tests/runtime/test_redteam_swim.py).
"""

from __future__ import annotations

import random

from plumtree.core import events as ev
from plumtree.core.config import ProtocolConfig, SwimConfig
from plumtree.core.limits import INCARNATION_WINDOW, MAX_INCARNATION
from plumtree.core.messages import Ack, Alive, Dead, MemberState, Ping, PingReq, PushPull
from plumtree.core.stack import Stack
from plumtree.core.swim import (
    CONFIRM_ATTEMPTS,
    CONFIRM_PROBES_PER_INTERVAL,
    MAX_FROM_STRANGER,
    MAX_UNCONFIRMED,
    Swim,
)
from tests.core._swim_harness import Cluster

W = INCARNATION_WINDOW


def _forge(c: Cluster, target: str, msgs: list[object], skip: tuple[str, ...] = ()) -> None:
    """A stranger's datagram (not from any member's address) to every node."""
    for name, node in c.nodes.items():
        if name in skip or name in c.down:
            continue
        node.receive_packet("evil:1", "evil", msgs, c.now)
        c.flush(name)


def _detect_time(c: Cluster, victim: str) -> float:
    """Crash ``victim``; simulated seconds until every other node holds it dead."""
    c.crash(victim)
    start = c.now
    others = [n for n in c.nodes if n != victim]
    while c.now - start < 120.0:
        c.run(0.25)
        if all(c.states(n).get(victim) == "dead" for n in others):
            return c.now - start
    raise AssertionError("never detected")


# --------------------------------------------------------------------- incarnations


def test_a_forged_dead_beyond_the_window_is_refused_everywhere() -> None:
    c = Cluster(seed=3)
    names = c.start(5)
    c.run(5.0)
    inc = c.nodes["n2"].incarnation
    _forge(c, "n2", [Dead("n2", MAX_INCARNATION, "evil")])
    c.run(10.0)
    assert c.all_alive_everywhere(names)
    assert all(c.view(n)["n2"][1] <= inc + 1 for n in names)
    assert c.nodes["n2"].incarnation == inc  # never pushed towards exhaustion
    assert all(c.nodes[n].counters.incarnations_refused >= 1 for n in names)
    assert sum(c.nodes[n].counters.incarnation_overflows for n in names) == 0


def test_a_forged_dead_within_the_window_is_refuted_and_the_member_lives() -> None:
    c = Cluster(seed=4)
    names = c.start(5)
    c.run(5.0)
    inc = c.nodes["n2"].incarnation
    _forge(c, "n2", [Dead("n2", inc + W, "evil")], skip=("n2",))
    assert all(c.states(n)["n2"] == "dead" for n in names if n != "n2")
    c.run(10.0)  # gossip tells n2, n2 refutes with a higher incarnation, which wins
    assert c.all_alive_everywhere(names)
    assert c.nodes["n2"].incarnation > inc + W
    assert c.nodes["n2"].counters.refutations >= 1


def test_a_view_walked_up_by_many_forged_updates_is_put_right_by_the_member() -> None:
    c = Cluster(seed=5)
    names = c.start(4)
    c.run(5.0)
    inc = c.nodes["n2"].incarnation
    n1 = c.nodes["n1"]
    for step in range(1, 6):  # each within the window of the last: n1 accepts them all
        n1.receive_packet("evil:1", "evil", [Dead("n2", inc + step * W, "evil")], c.now)
    c.flush("n1")
    assert c.view("n1")["n2"] == ("dead", inc + 5 * W)
    c.run(15.0)
    # n2 could not refute a claim that far ahead, but its own word, sent straight to
    # its accusers, replaces the implausible view
    assert c.all_alive_everywhere(names)
    assert c.nodes["n2"].incarnation <= inc + 2 * W + 1
    assert n1.counters.incarnation_resets >= 1
    assert c.nodes["n2"].counters.accusers_answered >= 1


def test_a_claim_about_us_beyond_the_window_is_ignored_and_counted() -> None:
    c = Cluster(seed=6)
    c.start(3)
    c.run(3.0)
    n0 = c.nodes["n0"]
    before = n0.incarnation
    n0.receive_packet("evil:1", "evil", [Dead("n0", before + W + 1, "evil")], c.now)
    assert n0.incarnation == before and n0.counters.incarnations_refused == 1
    n0.receive_packet("evil:1", "evil", [Dead("n0", before + W, "evil")], c.now)
    assert n0.incarnation == before + W + 1  # within the window: refuted


def test_a_restarted_node_catches_up_with_a_far_incarnation_of_its_old_life() -> None:
    c = Cluster(seed=7)
    names = c.start(4)
    c.run(3.0)
    n3 = c.nodes["n3"]
    for _ in range(3):  # a long life: its incarnation far beyond one window
        n3.local.incarnation += W
        n3.set_meta({}, c.now)
        c.flush("n3")
        c.run(3.0)
    old = c.view("n0")["n3"][1]
    assert old > 3 * W
    c.crash("n3")
    c.run(40.0)
    assert c.states("n0")["n3"] == "dead"
    c.add("n3", join=["n0"])  # incarnation 1 again
    c.run(15.0)
    assert c.all_alive_everywhere(names)
    assert c.nodes["n3"].incarnation > old


# --------------------------------------------------------------------- ghosts


def _ghosts(n: int, start: int = 0) -> list[MemberState]:
    return [
        MemberState(f"ghost-{i}", f"10.66.{i // 250}.{i % 250}:7946", 1, 0, {})
        for i in range(start, start + n)
    ]


def test_a_strangers_push_pull_adds_a_bounded_number_of_unconfirmed_members() -> None:
    a = Swim("a", "a", SwimConfig(), random.Random(1), 0.0)
    a.receive_packet("b", "b", [Alive("b", 1, "b", {})], 0.0)
    a.take_outgoing()
    a.receive_stream("evil:1", "evil", PushPull(False, True, _ghosts(5000)), 0.0)
    assert a.unconfirmed_count == MAX_FROM_STRANGER
    assert [m.name for m in a.members()] == ["a", "b"]  # ghosts are no members yet
    assert a.counters.unconfirmed_refused == 5000 - MAX_FROM_STRANGER
    # whatever arrives, the unconfirmed table stays bounded
    for k in range(40):
        batch = [Alive(m.name, 1, m.addr, {}) for m in _ghosts(100, 5000 + 100 * k)]
        a.receive_packet("evil:1", "evil", batch, 0.0)
    assert a.unconfirmed_count == MAX_UNCONFIRMED


def test_unanswered_ghosts_get_only_bare_probes_and_are_dropped() -> None:
    cfg = SwimConfig()
    a = Swim("a", "a", cfg, random.Random(2), 0.0)
    a.receive_packet("b", "b", [Alive("b", 1, "b", {})], 0.0)
    ghosts = _ghosts(300)
    for i in range(0, 300, 30):
        batch = [Alive(m.name, 1, m.addr, {}) for m in ghosts[i : i + 30]]
        a.receive_packet("evil:1", "evil", batch, 0.0)
    ghost_addrs = {m.addr for m in ghosts}
    to_ghosts: dict[str, int] = {}
    t = 0.0
    clear_by = (CONFIRM_ATTEMPTS + 1) * (300 / CONFIRM_PROBES_PER_INTERVAL + 1) * cfg.probe_interval
    while a.unconfirmed_count and t < clear_by + 60:
        t = a.next_deadline()
        a.handle_timer(t)
        for out in a.take_outgoing():
            if out.addr in ghost_addrs:
                # no stream, no gossip, no piggyback: one bare Ping at a time
                assert not out.reliable and len(out.messages) == 1
                assert type(out.messages[0]) is Ping
                to_ghosts[out.addr] = to_ghosts.get(out.addr, 0) + 1
    assert a.unconfirmed_count == 0 and t <= clear_by
    assert a.counters.unconfirmed_dropped == 300
    assert max(to_ghosts.values()) == CONFIRM_ATTEMPTS and len(to_ghosts) == 300
    assert [m.name for m in a.members()] == ["a", "b"]


def test_failure_detection_keeps_its_time_with_5000_ghosts_offered() -> None:
    def run(ghosts: bool) -> float:
        c = Cluster(seed=8)
        c.start(6)
        c.run(5.0)
        if ghosts:
            offer = _ghosts(5000)
            for name, node in c.nodes.items():
                node.receive_stream("evil:1", "evil", PushPull(False, False, offer), c.now)
                for i in range(0, 5000, 30):  # and as forged Alive gossip
                    batch = [Alive(m.name, 1, m.addr, {}) for m in offer[i : i + 30]]
                    node.receive_packet("evil:1", "evil", batch, c.now)
                c.flush(name)
            assert all(n.unconfirmed_count == MAX_UNCONFIRMED for n in c.nodes.values())
        return _detect_time(c, "n5")

    clean, attacked = run(False), run(True)
    # the probe rotation of real members keeps its cadence: same order of time
    assert attacked <= clean * 1.5 + 2.0, (clean, attacked)


def test_ghosts_never_become_targets_of_gossip_push_pull_or_relays() -> None:
    c = Cluster(seed=9)
    c.start(4)
    c.run(3.0)
    offer = _ghosts(200)
    ghost_addrs = {m.addr for m in offer}
    for name, node in c.nodes.items():
        node.receive_stream("evil:1", "evil", PushPull(False, False, offer[:50]), c.now)
        c.flush(name)
    c.record_sent = True
    c.run(30.0)
    to_ghosts = [out for _, addr, out in c.sent if addr in ghost_addrs]
    assert to_ghosts and all(
        not o.reliable and [type(m) for m in o.messages] == [Ping] for o in to_ghosts
    )
    assert all(n.unconfirmed_count == 0 for n in c.nodes.values())


# --------------------------------------------------------------------- PingReq


def test_pingreq_is_relayed_only_between_confirmed_members_at_their_known_address() -> None:
    r = Swim("r", "r", SwimConfig(), random.Random(3), 0.0)
    for n in ("t", "req"):
        r.receive_packet(n, n, [Alive(n, 1, n, {})], 0.0)
    r.take_outgoing()
    forged = [
        ("evil:1", "evil", PingReq(1, "t", "victim:9")),  # requester no member
        ("req", "req", PingReq(2, "nobody", "victim:9")),  # target no member
        ("req", "req", PingReq(3, "ghost", "victim:9")),
    ]
    r.receive_packet("evil:1", "evil", [Alive("ghost", 1, "victim:9", {})], 0.0)  # unconfirmed
    for src, sender, req in forged:
        r.receive_packet(src, sender, [req], 0.0)
    outs = r.take_outgoing()
    assert [o.addr for o in outs if o.addr == "victim:9"] == [] or all(
        [type(m) for m in o.messages] == [Ping] and o.messages[0].target == "ghost"  # type: ignore[attr-defined]
        for o in outs
        if o.addr == "victim:9"
    )  # (at most the ghost's own confirmation probe, never a relay)
    assert r.counters.pingreqs_refused == 3 and not r._relays
    r.receive_packet("req", "req", [PingReq(4, "t", "victim:9")], 0.0)
    pings = [(o.addr, m) for o in r.take_outgoing() for m in o.messages if type(m) is Ping]
    assert [addr for addr, _ in pings] == ["t"]  # the address we hold, not the one asked
    r.receive_packet("t", "t", [Ack(pings[0][1].seq)], 0.01)  # type: ignore[attr-defined]
    assert [(o.addr, o.messages[0]) for o in r.take_outgoing()] == [("req", Ack(4))]


def test_push_pull_is_answered_only_towards_the_host_that_asked() -> None:
    s = Stack("a", "10.0.0.1:7946", ProtocolConfig(), random.Random(4), 0.0)
    s.take_outgoing()
    forged = PushPull(True, False, [MemberState("x", "10.9.9.9:7946", 1, 0, {})])
    s.receive("10.0.0.5:40000", "x", [forged], True, 0.0)  # asks from .5, names .9
    assert [o for o in s.take_outgoing() if o.reliable] == []
    assert s.swim.counters.pushpull_replies_refused == 1
    honest = PushPull(True, False, [MemberState("y", "10.0.0.5:7946", 1, 0, {})])
    s.receive("10.0.0.5:40001", "y", [honest], True, 0.0)
    (reply,) = [o for o in s.take_outgoing() if o.reliable]
    assert reply.addr == "10.0.0.5:7946"
    assert any(type(e) is ev.MemberJoined for e in s.take_events()) is False  # unconfirmed


def test_a_members_push_pull_vouches_only_from_the_members_own_host() -> None:
    s = Stack("a", "10.0.0.1:7946", ProtocolConfig(), random.Random(5), 0.0)
    b = "10.0.0.2:7946"
    s.receive(b, "b", [Alive("b", 1, b, {})], False, 0.0)  # b's own datagram: confirmed
    assert s.swim.member("b") is not None
    rows = [MemberState("b", b, 1, 0, {}), MemberState("x", "10.0.0.3:7946", 1, 0, {})]
    # posing as b from another host: no answer, and x waits unconfirmed
    s.receive("10.0.0.9:40000", "b", [PushPull(False, False, rows)], True, 0.1)
    assert s.swim.member("x") is None and s.swim.unconfirmed_count == 1
    assert [o for o in s.take_outgoing() if o.reliable] == []
    # b itself: it lists only members it confirmed, so x is a member at once
    rows[1] = MemberState("x", "10.0.0.3:7946", 2, 0, {})
    s.receive("10.0.0.2:40001", "b", [PushPull(False, False, rows)], True, 0.2)
    assert s.swim.member("x") is not None and s.swim.unconfirmed_count == 0
