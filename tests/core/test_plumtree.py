"""Each Plumtree transition, on hand-driven nodes with a fake clock."""

from __future__ import annotations

import random

import pytest

from plumtree.core import events as ev
from plumtree.core.messages import Gossip, Graft, IHave, Prune, Repair
from plumtree.core.plumtree import MessageTooLarge, Plumtree
from tests.core.harness import Net, config, gossip, mid

ID = mid(1)
ID2 = mid(2)


def node(name: str = "a", **changes: object) -> Plumtree:
    return Plumtree(name, config(**changes), random.Random(1))


def sent(n: Plumtree) -> list[tuple[str, object]]:
    return n.take_outgoing()


def test_peers_join_eager_up_to_the_fanout_then_lazy() -> None:
    a = node(eager_fanout=2)
    for p in ("b", "c", "d", "e"):
        assert a.add_peer(p, 0.0)
    assert list(a.peers.eager) == ["b", "c"]
    assert sorted(a.peers.lazy) == ["d", "e"]
    assert not a.add_peer("a", 0.0), "never a self peer"
    assert not a.add_peer("b", 0.0), "no duplicate peer"
    assert a.counters.peer_added == 4


def test_broadcast_delivers_locally_pushes_eagerly_and_announces_lazily_after_the_interval() -> (
    None
):
    a = node(eager_fanout=1, ihave_interval=0.05, maintenance_interval=100.0)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    msg_id = a.broadcast(b"hello", 1.0)
    out = sent(a)
    assert out == [("b", gossip(msg_id, 0, "a", b"hello"))]
    delivered = [e for e in a.take_events() if isinstance(e, ev.Delivered)]
    assert [(d.id, d.hops, d.payload) for d in delivered] == [(msg_id, 0, b"hello")]
    assert a.next_deadline() == pytest.approx(1.05)
    a.handle_timer(1.04)
    assert sent(a) == []
    a.handle_timer(1.05)
    assert sent(a) == [("c", IHave([(msg_id, 0)]))]
    assert a.counters.messages_broadcast == 1
    assert a.counters.gossip_sent == 1
    assert a.counters.ihave_sent == 1


def test_ihave_batches_flush_as_soon_as_the_batch_is_full() -> None:
    a = node(eager_fanout=1, ihave_batch_size=2)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    a.broadcast(b"1", 0.0)
    a.broadcast(b"2", 0.0)
    ihaves = [m for _, m in sent(a) if isinstance(m, IHave)]
    assert len(ihaves) == 1 and len(ihaves[0].entries) == 2
    assert a.histograms.ihave_batch_size.count == 1


def test_oversize_broadcast_is_refused_and_counted() -> None:
    a = node(max_message_size=4)
    with pytest.raises(MessageTooLarge):
        a.broadcast(b"12345", 0.0)
    assert a.counters.messages_too_large == 1
    assert a.counters.messages_broadcast == 0


def test_first_gossip_is_delivered_once_forwarded_with_one_more_hop_and_the_sender_made_eager() -> (
    None
):
    a = node(eager_fanout=1)
    a.add_peer("c", 0.0)  # eager
    a.add_peer("b", 0.0)  # lazy
    a.receive("b", gossip(ID, 2, "o", b"x"), 1.0)
    assert "b" in a.peers.eager
    assert sent(a) == [("c", gossip(ID, 3, "o", b"x"))]
    events = a.take_events()
    delivered = [e for e in events if isinstance(e, ev.Delivered)]
    assert [(d.hops, d.sender, d.origin) for d in delivered] == [(3, "b", "o")]
    assert any(isinstance(e, ev.PeerPromoted) and e.reason == "gossip" for e in events)
    a.receive("c", gossip(ID, 1, "o", b"x"), 1.1)
    assert [e for e in a.take_events() if isinstance(e, ev.Delivered)] == []
    assert a.counters.messages_delivered == 1
    assert a.counters.messages_duplicate == 1


def test_duplicates_from_an_eager_peer_that_last_the_ihave_timeout_prune_it() -> None:
    a = node(prune_streak=1, ihave_timeout=0.1)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    a.receive("b", gossip(ID, 0, "b", b"x"), 0.0)
    a.receive("c", gossip(ID, 0, "c", b"x"), 0.0)
    assert a.counters.prune_sent == 0, "one moment's duplicate may be a passing cycle"
    sent(a)
    a.receive("b", gossip(ID2, 0, "b", b"x"), 0.1)
    a.receive("c", gossip(ID2, 0, "c", b"x"), 0.1)
    assert ("c", Prune()) in sent(a)
    assert "c" in a.peers.lazy
    assert a.counters.prune_sent == 1
    assert a.counters.peer_demotions == 1


def test_a_duplicate_from_a_lazy_peer_is_pruned_too() -> None:
    # the sender holds us as eager while we hold it as lazy (an asymmetric link): only a
    # Prune stops it from pushing every message twice
    a = node(eager_fanout=1)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)  # lazy
    a.receive("b", gossip(ID, 0, "b", b"x"), 0.0)
    sent(a)
    a.receive("c", gossip(ID, 0, "b", b"x"), 0.0)
    assert sent(a) == [("c", Prune())]
    assert "c" in a.peers.lazy and a.counters.peer_demotions == 0


def test_a_single_origin_stream_settles_to_no_duplicates_at_all() -> None:
    # every broadcast from one origin: a copy pushed back to the origin is always a
    # duplicate, never a first delivery, so only the Prune can fix an asymmetric link
    names = [f"n{i}" for i in range(6)]
    net = Net(names, config(optimization_threshold=0), seed=3)
    net.full_mesh()
    for _ in range(5):
        net.nodes["n0"].broadcast(b"warm-up", net.now)
        net.advance(0.5)
    before = sum(n.counters.messages_duplicate for n in net.nodes.values())
    for _ in range(10):
        net.nodes["n0"].broadcast(b"steady", net.now)
        net.advance(0.5)
    assert sum(n.counters.messages_duplicate for n in net.nodes.values()) == before


def test_prune_threshold_tolerates_that_many_duplicates_first() -> None:
    a = node(prune_threshold=1, prune_streak=1, ihave_timeout=0.1)
    for p in ("b", "c", "d"):
        a.add_peer(p, 0.0)
    for msg_id, at in ((ID, 0.0), (ID2, 0.2)):
        a.receive("b", gossip(msg_id, 0, "b", b"x"), at)
        a.receive("c", gossip(msg_id, 0, "c", b"x"), at)
        a.receive("d", gossip(msg_id, 0, "d", b"x"), at)
    assert "c" in a.peers.eager, "each message's first duplicate is tolerated"
    assert "d" in a.peers.lazy


def _gossip(n: Plumtree, sender: str, i: int, at: float = 0.0) -> None:
    n.receive(sender, gossip(mid(i), 0, "o", b"x"), at)


def _b_then_c(a: Plumtree, numbers: range, step: float) -> None:
    """Messages ``numbers`` first from b, then (duplicates) from c, ``step`` apart."""
    for i in numbers:
        _gossip(a, "b", i, at=i * step)
        _gossip(a, "c", i, at=i * step)


def _eager_b_and_c() -> Plumtree:
    a = node(prune_streak=3, ihave_timeout=0.1)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    return a


def test_an_eager_peer_is_pruned_after_a_streak_of_duplicates() -> None:
    a = _eager_b_and_c()
    for i in range(1, 3):
        _b_then_c(a, range(i, i + 1), 0.06)
        assert "c" in a.peers.eager and a.counters.prune_sent == 0
    _b_then_c(a, range(3, 4), 0.06)
    assert ("c", Prune()) in sent(a) and "c" in a.peers.lazy


def test_a_streak_of_duplicates_within_the_ihave_timeout_prunes_nothing_yet() -> None:
    """At hundreds of messages a second, three duplicates come within milliseconds of a
    Graft that its node is about to undo: every node around the passing cycle cut its
    own link at once, and the split tree churned (bench/loopback.py at 450/s: RMR 1.5)."""
    a = _eager_b_and_c()
    _b_then_c(a, range(1, 20), 0.004)
    assert a.counters.prune_sent == 0 and "c" in a.peers.eager
    _b_then_c(a, range(20, 30), 0.004)
    assert ("c", Prune()) in sent(a), "a cycle that outlives the timer is cut"


def test_a_first_copy_resets_the_duplicate_streak() -> None:
    """Concurrent broadcasts make one-off duplicates; a peer that is sometimes first is
    on a best path and keeps its eager link (over-pruning split the tree under load)."""
    a = node(prune_streak=2)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    _gossip(a, "b", 1)
    _gossip(a, "c", 1)  # duplicate 1 of 2
    _gossip(a, "c", 2)  # c first: streak reset
    _gossip(a, "b", 2)  # b's first duplicate
    _gossip(a, "b", 3)
    _gossip(a, "c", 3)  # c: duplicate 1 of 2 again
    assert a.counters.prune_sent == 0 and set(a.peers.eager) == {"b", "c"}


def test_a_lazy_peer_that_pushes_is_pruned_at_once() -> None:
    a = node(eager_fanout=1, prune_streak=3)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)  # lazy here, but it holds us as eager
    _gossip(a, "b", 1)
    sent(a)
    _gossip(a, "c", 1)
    assert ("c", Prune()) in sent(a)


def test_a_lazy_pusher_is_not_pruned_again_while_our_prune_is_in_flight() -> None:
    a = node(eager_fanout=1, ihave_timeout=0.1, ihave_timeout_max=0.5)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)  # lazy here; it pushes anyway
    for i in range(1, 4):
        _gossip(a, "b", i, at=0.1 * i)
        _gossip(a, "c", i, at=0.1 * i)
    prunes = [p for p, m in sent(a) if isinstance(m, Prune)]
    assert prunes == ["c"], "one Prune for the copies that were already on their way"
    _gossip(a, "b", 9, at=1.0)
    _gossip(a, "c", 9, at=1.0)  # past the adaptive timer's ceiling: still pushing
    assert ("c", Prune()) in sent(a)


def test_optimisation_swaps_at_most_once_per_interval() -> None:
    a = Plumtree(
        "a",
        config(
            eager_fanout=1,
            optimization_threshold=2,
            optimization_streak=1,
            optimization_interval=5.0,
        ),
        random.Random(1),
    )
    for p in ("p", "s1", "s2"):
        a.add_peer(p, 0.0)
    a.receive("p", gossip(ID, 6, "o", b"x"), 0.0)
    a.receive("s1", IHave([(ID, 1)]), 0.1)
    assert a.counters.optimizations == 1 and "s1" in a.peers.eager
    a.receive("s1", gossip(ID2, 6, "o", b"x"), 1.0)
    a.receive("s2", IHave([(ID2, 1)]), 1.1)
    assert a.counters.optimizations == 1, "within the interval: no second swap"
    third = mid(3)
    a.receive("s1", gossip(third, 6, "o", b"x"), 6.0)
    a.receive("s2", IHave([(third, 1)]), 6.1)
    assert a.counters.optimizations == 2 and "s2" in a.peers.eager


def _grafted_twice(parent: str, first: str, second: str) -> Plumtree:
    """Both announced ID; we grafted it from ``first`` at 0.1, then from ``second``."""
    a = node(eager_fanout=1, prune_streak=1, ihave_timeout=0.1, graft_timeout=0.1)
    for p in (parent, second, first):
        a.add_peer(p, 0.0)
    a.receive(first, IHave([(ID, 0)]), 0.0)
    a.receive(second, IHave([(ID, 0)]), 0.0)
    a.handle_timer(0.1)  # Graft to first
    a.handle_timer(0.2)  # retry: Graft to second
    return a


def test_the_link_a_graft_retry_made_is_cut_once_the_first_reply_joined_us() -> None:
    a = _grafted_twice("e", "x", "y")
    grafts = [p for p, m in sent(a) if isinstance(m, Graft) and m.ids]
    assert grafts == ["x", "y"]
    a.receive("x", gossip(ID, 0, "o", b"x"), 0.25)
    a.receive("y", gossip(ID, 0, "o", b"x"), 0.26)  # the retry's reply: a duplicate
    assert ("y", Prune()) in sent(a) and "y" in a.peers.lazy, "one way in is enough"
    assert "x" in a.peers.eager
    assert a.counters.graft_undone == 1


def _grafted_from_x() -> Plumtree:
    """Our parent is slow: x announced ID, and at 0.1 we grafted it from x."""
    a = node(eager_fanout=1, ihave_timeout=0.1, graft_timeout=0.5)
    a.add_peer("parent", 0.0)
    a.add_peer("x", 0.0)
    a.receive("x", IHave([(ID, 0)]), 0.0)
    a.handle_timer(0.1)  # Graft to x: eager on both sides now
    return a


def test_a_late_eager_copy_after_a_graft_stretches_the_ihave_timer() -> None:
    a = _grafted_from_x()
    a.receive("x", gossip(ID, 0, "o", b"x"), 0.15)
    assert a.lateness.timeout == pytest.approx(0.1)
    a.receive("parent", gossip(ID, 3, "o", b"x"), 0.4)  # the eager copy, 0.4 s late
    assert a.counters.graft_premature == 1
    assert a.lateness.timeout > 0.4
    a.receive("z", IHave([(ID2, 0)]), 1.0)
    assert a._pending[ID2].deadline == pytest.approx(1.0 + a.lateness.timeout)


def test_prune_makes_the_sender_lazy() -> None:
    a = node()
    a.add_peer("b", 0.0)
    a.receive("b", Prune(), 0.0)
    assert "b" in a.peers.lazy
    assert a.counters.prune_received == 1


def test_ihave_for_a_missing_message_waits_then_grafts_with_backoff_across_announcers() -> None:
    a = node(eager_fanout=1, ihave_timeout=0.1, graft_timeout=0.2, graft_max_retries=2)
    for p in ("e", "b", "c"):
        a.add_peer(p, 0.0)
    a.receive("b", IHave([(ID, 1)]), 0.0)
    a.receive("c", IHave([(ID, 1)]), 0.01)
    assert a.is_pending(ID)
    assert a.next_deadline() == pytest.approx(0.1)
    a.handle_timer(0.09)
    assert sent(a) == []
    a.handle_timer(0.1)
    assert sent(a) == [("b", Graft([ID]))]
    assert "b" in a.peers.eager, "the announcer we graft from becomes eager"
    a.handle_timer(0.29)
    assert sent(a) == [], "one Graft in flight per id"
    a.handle_timer(0.301)  # 0.1 + 0.2
    assert sent(a) == [("c", Graft([ID]))]
    a.handle_timer(0.69)
    assert sent(a) == []
    a.handle_timer(0.702)  # + 0.4 (backoff x2)
    assert sent(a) == [("b", Graft([ID]))]
    assert a.counters.graft_retries == 2
    a.handle_timer(1.503)  # + 0.8: retries exhausted
    assert sent(a) == []
    assert a.counters.graft_failed == 1
    assert not a.is_pending(ID)
    failed = [e for e in a.take_events() if isinstance(e, ev.GraftFailed)]
    assert [(f.id, f.attempts) for f in failed] == [(ID, 3)]


def test_gossip_arriving_after_a_graft_counts_a_success_and_its_latency() -> None:
    a = node(ihave_timeout=0.1)
    a.add_peer("b", 0.0)
    a.receive("b", IHave([(ID, 0)]), 0.0)
    a.handle_timer(0.1)
    a.receive("b", gossip(ID, 0, "b", b"x"), 0.13)
    assert a.counters.graft_success == 1
    assert a.histograms.graft_latency_seconds.count == 1
    assert a.histograms.graft_latency_seconds.sum == pytest.approx(0.03)
    assert not a.is_pending(ID)
    a.handle_timer(5.0)
    assert a.counters.graft_failed == 0


def test_gossip_arriving_before_the_timer_cancels_the_graft_silently() -> None:
    a = node(ihave_timeout=0.1)
    a.add_peer("b", 0.0)
    a.receive("b", IHave([(ID, 0)]), 0.0)
    a.receive("b", gossip(ID, 0, "b", b"x"), 0.05)
    sent(a)
    a.handle_timer(1.0)
    assert not [m for _, m in sent(a) if isinstance(m, Graft)]
    assert a.counters.graft_success == 0 and a.counters.graft_sent == 0


def test_graft_is_answered_from_the_cache_and_makes_the_link_eager() -> None:
    a = node(eager_fanout=0 + 1)
    a.add_peer("x", 0.0)
    a.add_peer("b", 0.0)  # lazy
    msg_id = a.broadcast(b"p", 0.0)
    sent(a)
    a.receive("b", Graft([msg_id, ID2]), 0.5)
    assert sent(a) == [("b", gossip(msg_id, 0, "a", b"p"))]
    assert "b" in a.peers.eager
    assert a.counters.graft_unknown == 1


def test_grafts_beyond_the_per_peer_rate_limit_are_ignored_and_counted() -> None:
    a = node(graft_rate_limit_per_second=1.0, graft_rate_limit_burst=2)
    a.add_peer("b", 0.0)
    msg_id = a.broadcast(b"p", 0.0)
    sent(a)
    for _ in range(3):
        a.receive("b", Graft([msg_id]), 0.0)
    assert len(sent(a)) == 2
    assert a.counters.graft_rate_limited == 1
    a.receive("b", Graft([msg_id]), 1.0)  # refilled one token
    assert len(sent(a)) == 1


def test_payloads_past_the_retention_age_are_not_served() -> None:
    a = node(retention_age=1.0, seen_ttl=2.0, maintenance_interval=0.5)
    a.add_peer("b", 0.0)
    msg_id = a.broadcast(b"p", 0.0)
    sent(a)
    a.handle_timer(1.5)  # maintenance expires what is older than the retention age
    a.receive("b", Graft([msg_id]), 1.5)
    assert [m for _, m in sent(a) if isinstance(m, Gossip)] == []
    assert a.counters.graft_unknown == 1
    assert a.own_stream.floor == 2, "digests now say we no longer hold seq 1"


def test_the_store_is_bounded_by_count_and_counts_evictions() -> None:
    a = node(retention_messages=2)
    ids = [a.broadcast(bytes([i]), float(i)) for i in range(3)]
    assert ids[0] not in a.store and ids[2] in a.store
    assert a.counters.cache_evictions == 1


def test_the_store_is_bounded_by_bytes_whatever_the_payload_size() -> None:
    """64 KiB payloads: a count bound alone let a node hold 655 MB."""
    a = node(retention_bytes=256 * 1024, max_message_size=64 * 1024)
    for i in range(20):
        a.broadcast(bytes([i]) * 64 * 1024, float(i))
    assert a.store.bytes <= 256 * 1024
    assert len(a.store) == 3
    assert a.counters.cache_evictions == 17
    gauges = a.gauges()
    assert gauges.cache_size / gauges.cache_capacity >= 0.95, "full by bytes shows as full"


def test_evictions_are_reported_once_per_maintenance_tick_not_per_message() -> None:
    """With a full store every delivery evicts: an event each cost more than the
    delivery and flooded the event stream at warn level."""
    a = node(retention_messages=2, maintenance_interval=1.0, maintenance_jitter=0.0)
    for i in range(5):
        a.broadcast(bytes([i]), 0.1 * i)
    assert not [e for e in a.take_events() if isinstance(e, ev.CacheEvicted)]
    a.handle_timer(1.0)
    assert [e for e in a.take_events() if isinstance(e, ev.CacheEvicted)] == [ev.CacheEvicted(3)]
    a.handle_timer(2.0)
    assert not [e for e in a.take_events() if isinstance(e, ev.CacheEvicted)]
    assert a.counters.cache_evictions == 3


def test_seen_set_is_bounded_and_early_evictions_are_counted() -> None:
    a = node(seen_max_size=3, retention_messages=1)
    for i in range(5):
        a.broadcast(bytes([i]), float(i))
    assert len(a.seen) == 3
    assert a.counters.seen_evictions == 2


def test_seen_entries_expire_after_the_ttl_on_maintenance() -> None:
    a = node(retention_age=1.0, seen_ttl=2.0, maintenance_interval=0.5)
    a.broadcast(b"x", 0.0)
    a.handle_timer(2.6)
    assert len(a.seen) == 0 and len(a.store) == 0


def test_a_message_is_never_delivered_twice_once_its_records_are_forgotten() -> None:
    """Dedup by the stream watermark, not by a TTL: a frozen peer flushing 70 s old
    messages, or a replayed frame, used to be delivered again once seen_ttl passed."""
    a = node(seen_ttl=1.0, retention_age=1.0, maintenance_interval=0.5)
    a.add_peer("b", 0.0)
    a.receive("b", gossip(ID, 0, "o", b"x"), 0.0)
    a.handle_timer(100.0)
    assert len(a.seen) == 0 and len(a.store) == 0
    a.take_events()
    a.receive("b", gossip(ID, 0, "o", b"x"), 100.0)
    a.receive("b", Repair(ID, 0, "o", 0, b"x"), 100.0)
    assert not [e for e in a.take_events() if isinstance(e, ev.Delivered)]
    assert a.counters.messages_duplicate == 1 and a.counters.repair_duplicate == 1


def test_a_gossip_whose_id_is_not_its_streams_is_refused() -> None:
    a = node()
    a.add_peer("b", 0.0)
    forged = Gossip(mid(1, "o"), 0, "someone-else", 0, b"x")
    a.receive("b", forged, 0.0)
    a.receive("b", Gossip(mid(1, "o"), 0, "o", 7, b"x"), 0.0)  # wrong epoch
    assert a.counters.messages_rejected == 2
    assert not [e for e in a.take_events() if isinstance(e, ev.Delivered)]


def test_nobody_else_numbers_our_own_messages() -> None:
    a = node()
    a.add_peer("b", 0.0)
    a.receive("b", Gossip(mid(5, "a"), 0, "a", 0, b"forged"), 0.0)
    assert a.counters.messages_rejected == 1
    assert a.own_stream.wm == 0 and a.own_stream.head == 0


def test_optimisation_swaps_in_a_lazy_link_that_offers_a_much_shorter_path() -> None:
    a = node(eager_fanout=1, optimization_threshold=3, optimization_streak=1)
    a.add_peer("parent", 0.0)
    a.add_peer("short", 0.0)
    a.receive("parent", gossip(ID, 6, "o", b"x"), 0.0)  # our level: 7
    sent(a)
    a.receive("short", IHave([(ID, 2)]), 0.01)  # via short: level 3, gain 4 >= 3
    out = sent(a)
    assert ("short", Graft([])) in out and ("parent", Prune()) in out
    assert "short" in a.peers.eager and "parent" in a.peers.lazy
    assert a.counters.optimizations == 1
    a.receive("short", IHave([(ID, 2)]), 0.02)
    assert sent(a) == [], "the swap is not repeated for the same message"


def _two_parents(streak: int) -> Plumtree:
    a = node(eager_fanout=1, optimization_threshold=3, optimization_streak=streak)
    a.add_peer("parent", 0.0)
    a.add_peer("short", 0.0)
    return a


def _far_then_announced(a: Plumtree, i: int, announced_round: int) -> list[tuple[str, object]]:
    """Message i arrives from the parent at level 7, then 'short' announces it."""
    msg = mid(i)
    a.receive("parent", gossip(msg, 6, "o", b"x"), float(i))
    sent(a)
    a.receive("short", IHave([(msg, announced_round)]), i + 0.01)
    return sent(a)


def test_optimisation_waits_for_a_streak_of_shorter_announcements() -> None:
    a = _two_parents(streak=3)
    assert _far_then_announced(a, 1, 2) == []
    assert _far_then_announced(a, 2, 2) == []
    assert a.counters.optimizations == 0 and "parent" in a.peers.eager
    out = _far_then_announced(a, 3, 2)
    assert ("short", Graft([])) in out and ("parent", Prune()) in out
    assert a.counters.optimizations == 1 and "short" in a.peers.eager


def test_a_longer_announcement_breaks_the_streak() -> None:
    a = _two_parents(streak=2)
    assert _far_then_announced(a, 1, 2) == []
    assert _far_then_announced(a, 2, 5) == [], "level 6 via short: no gain, streak reset"
    assert _far_then_announced(a, 3, 2) == []
    assert a.counters.optimizations == 0
    assert ("short", Graft([])) in _far_then_announced(a, 4, 2)


def test_the_same_message_announced_twice_counts_once_in_the_streak() -> None:
    a = _two_parents(streak=2)
    assert _far_then_announced(a, 1, 2) == []
    a.receive("short", IHave([(mid(1), 2)]), 1.5)
    assert sent(a) == [] and a.counters.optimizations == 0


def test_a_message_a_lazy_peer_stays_silent_about_breaks_the_streak() -> None:
    """A peer skips IHaves for ids we announced to it first, so "in a row" is counted
    in our delivery order: a message with no shortcut announcement ends the streak."""
    a = _two_parents(streak=2)
    assert _far_then_announced(a, 1, 2) == []
    a.receive("parent", gossip(mid(2), 6, "o", b"x"), 2.0)  # short says nothing
    sent(a)
    assert _far_then_announced(a, 3, 2) == [], "1 and 3 were not delivered in a row"
    assert a.counters.optimizations == 0
    assert ("short", Graft([])) in _far_then_announced(a, 4, 2)


def _lazy_fan(**changes: object) -> Plumtree:
    """a: eager parent 'p', lazy peers 'x' and 'y'; IHaves go to both lazy peers."""
    a = node(eager_fanout=1, lazy_fanout=6, ihave_interval=0.05, **changes)
    for peer in ("p", "x", "y"):
        a.add_peer(peer, 0.0)
    return a


def test_no_ihave_to_a_lazy_peer_that_announced_the_id_to_us_first() -> None:
    a = _lazy_fan(optimization_threshold=3)
    a.receive("p", gossip(ID, 2, "o", b"x"), 1.0)  # our level: 3
    sent(a)
    a.receive("x", IHave([(ID, 3)]), 1.01)  # x holds it, at level 3: no shortcut for x
    a.handle_timer(1.05)
    assert sorted(peer for peer, msg in sent(a) if isinstance(msg, IHave)) == ["y"]
    assert a.counters.ihave_skipped == 1 and a.counters.ihave_sent == 1


def test_an_ihave_still_goes_to_a_holder_for_which_our_path_is_a_shortcut() -> None:
    a = _lazy_fan(optimization_threshold=3)
    a.receive("p", gossip(ID, 0, "o", b"x"), 1.0)  # our level: 1
    sent(a)
    a.receive("x", IHave([(ID, 6)]), 1.01)  # x at level 6: via us it would be 2
    a.handle_timer(1.05)
    assert sorted(peer for peer, msg in sent(a) if isinstance(msg, IHave)) == ["x", "y"]
    assert a.counters.ihave_skipped == 0


def test_no_ihave_to_peers_that_announced_the_id_before_we_had_it() -> None:
    a = _lazy_fan()
    a.receive("x", IHave([(ID, 1)]), 1.0)  # missing: a waits for the eager copy
    a.receive("p", gossip(ID, 2, "o", b"x"), 1.02)
    sent(a)
    a.handle_timer(1.1)
    assert [peer for peer, msg in sent(a) if isinstance(msg, IHave)] == ["y"]


def test_a_batch_leaves_out_only_the_ids_the_peer_announced() -> None:
    a = _lazy_fan(ihave_batch_size=16)
    a.receive("p", gossip(ID, 2, "o", b"x"), 1.0)
    a.receive("p", gossip(ID2, 2, "o", b"y"), 1.001)
    sent(a)
    a.receive("x", IHave([(ID, 3)]), 1.01)
    a.handle_timer(1.05)
    ihaves = {peer: msg for peer, msg in sent(a) if isinstance(msg, IHave)}
    assert ihaves == {"x": IHave([(ID2, 3)]), "y": IHave([(ID, 3), (ID2, 3)])}
    assert a.counters.ihave_skipped == 1


def test_the_holders_of_queued_ids_are_forgotten_at_each_flush() -> None:
    a = _lazy_fan()
    a.receive("p", gossip(ID, 2, "o", b"x"), 1.0)
    a.receive("x", IHave([(ID, 3)]), 1.01)
    a.handle_timer(1.05)
    a.receive("x", IHave([(ID2, 3)]), 1.06)  # not delivered yet: pending, not a holder
    assert a._holders == {}  # bounded: only ids waiting for the next flush


def test_no_swap_below_the_threshold() -> None:
    a = node(eager_fanout=1, optimization_threshold=3)
    a.add_peer("parent", 0.0)
    a.add_peer("other", 0.0)
    a.receive("parent", gossip(ID, 4, "o", b"x"), 0.0)  # level 5
    sent(a)
    a.receive("other", IHave([(ID, 2)]), 0.01)  # level 3: gain 2
    assert sent(a) == []


def test_losing_the_last_eager_peer_promotes_a_lazy_one_on_both_sides() -> None:
    a = node(eager_fanout=1)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    a.remove_peer("b", 1.0)
    assert list(a.peers.eager) == ["c"]
    assert sent(a) == [("c", Graft([]))]
    assert any(isinstance(e, ev.PeerPromoted) and e.reason == "repair" for e in a.take_events())


def test_a_link_graft_makes_the_receiver_eager_too() -> None:
    a = node(eager_fanout=1)
    a.add_peer("x", 0.0)
    a.add_peer("c", 0.0)
    a.receive("c", Graft([]), 0.0)
    assert "c" in a.peers.eager


def test_reconcile_removes_ghosts_and_adds_missing_members() -> None:
    a = node()
    for p in ("b", "ghost"):
        a.add_peer(p, 0.0)
    added, removed = a.reconcile(["a", "b", "c", "d"], 1.0)
    assert (added, removed) == (2, 1)
    assert sorted(a.peers.names()) == ["b", "c", "d"]


def test_removed_peers_stop_being_graft_candidates() -> None:
    a = node(ihave_timeout=0.1)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    a.receive("b", IHave([(ID, 0)]), 0.0)
    a.receive("c", IHave([(ID, 0)]), 0.0)
    a.remove_peer("b", 0.05)
    a.take_outgoing()
    a.handle_timer(0.1)
    assert sent(a) == [("c", Graft([ID]))]


def test_max_peers_evicts_a_lazy_peer_for_a_newcomer() -> None:
    a = node(eager_fanout=1, max_peers=2)
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    a.receive("d", gossip(ID, 0, "d", b"x"), 0.0)
    assert len(a.peers) == 2
    assert "d" in a.peers.eager and "b" in a.peers
    assert a.counters.peer_removed == 1


def test_a_tree_forms_and_later_broadcasts_use_no_redundant_gossip() -> None:
    names = [f"n{i}" for i in range(8)]
    net = Net(names, config(optimization_threshold=0))
    net.full_mesh()
    for origin in names:  # one round of warm-up from every node lets the tree settle
        net.nodes[origin].broadcast(b"warm-up", net.now)
        net.advance(0.5)
    before = sum(1 for _, _, m in net.sent if isinstance(m, Gossip))
    net.nodes["n3"].broadcast(b"steady", net.now)
    net.advance(1.0)
    gossip = sum(1 for _, _, m in net.sent if isinstance(m, Gossip)) - before
    assert gossip == len(names) - 1, "a spanning tree: exactly n-1 payload messages"
    for n in names:
        assert len(net.delivered(n)) == len(names) + 1
    for n in net.nodes.values():
        assert not set(n.peers.eager) & set(n.peers.lazy)


def test_take_all_is_the_three_takes_in_one_call() -> None:
    a = Plumtree("a", config(), random.Random(1))
    a.add_peer("b", 0.0)
    a.add_peer("c", 0.0)
    a.broadcast(b"x", 0.5)
    out, events, deadline = a.take_all()
    assert [peer for peer, _ in out] == ["b", "c"]
    assert any(isinstance(e, ev.Delivered) for e in events)
    assert deadline == a.next_deadline() == pytest.approx(0.55)  # the IHave flush
    assert a.take_all() == ((), (), deadline)
    a.handle_timer(0.55)
    assert a.take_all()[2] == a.next_deadline() > 0.55


def test_a_streak_inside_one_ihave_batch_is_one_moment_and_swaps_nothing() -> None:
    """At a high rate one IHave holds dozens of ids: a streak inside it is one view of
    one moment. Every child of a busy node saw the same one and swapped at once (16
    swaps in 70 ms at 600/s on loopback), and the tree split and churned."""
    a = _two_parents(streak=3)
    ids = [mid(i) for i in range(1, 7)]
    for i, msg in enumerate(ids):
        a.receive("parent", gossip(msg, 6, "o", b"x"), i * 0.001)
    sent(a)
    a.receive("short", IHave([(msg, 2) for msg in ids]), 0.01)
    assert a.counters.optimizations == 0 and "parent" in a.peers.eager
    assert _far_then_announced(a, 7, 2) == [], "two of its IHaves so far"
    assert ("short", Graft([])) in _far_then_announced(a, 8, 2), "the third: a swap"
    assert a.counters.optimizations == 1 and "short" in a.peers.eager


def test_a_premature_graft_is_undone_when_the_eager_copy_beats_its_reply() -> None:
    a = _grafted_from_x()
    sent(a)
    a.receive("parent", gossip(ID, 3, "o", b"x"), 0.12)
    out = sent(a)
    assert ("x", Prune()) in out and "x" in a.peers.lazy
    a.receive("x", gossip(ID, 0, "o", b"x"), 0.13)  # its reply, after our Prune left
    assert ("x", Prune()) not in sent(a), "its reply was on its way: one Prune is enough"
    assert a.counters.messages_delivered == 1


def test_a_peer_we_just_pruned_is_not_promoted_by_what_it_pushed_meanwhile() -> None:
    """Its pushes were in flight when our Prune left: were one of them first, promoting
    it undid the Prune, and two nodes pruned and promoted each other under load."""
    a = _grafted_from_x()
    a.receive("parent", gossip(ID, 3, "o", b"x"), 0.12)  # undo: x pruned
    a.receive("x", gossip(ID2, 0, "o", b"x"), 0.13)  # x had pushed it before our Prune
    assert "x" in a.peers.lazy and a.counters.messages_delivered == 2
    a.receive("x", gossip(mid(3), 0, "o", b"x"), 5.0)  # long after: it is our path
    assert "x" in a.peers.eager


def test_graft_retries_wait_as_long_as_eager_copies_run_late() -> None:
    a = node(eager_fanout=1, ihave_timeout=0.1, ihave_timeout_max=2.0, graft_timeout=0.1)
    for p in ("parent", "x", "y"):
        a.add_peer(p, 0.0)
    a.lateness.observe(0.5)  # copies have been running half a second late
    timeout = a.lateness.timeout
    assert timeout > 0.5
    a.receive("x", IHave([(ID, 0)]), 0.0)
    a.receive("y", IHave([(ID, 0)]), 0.0)
    a.handle_timer(timeout)  # Graft to x
    sent(a)
    a.handle_timer(timeout + 0.2)
    assert sent(a) == [], "no retry after the base 0.1 s: the reply may still come"
    a.handle_timer(2 * timeout + 0.001)
    assert sent(a) == [("y", Graft([ID]))]


def test_an_eager_copy_after_the_graft_reply_keeps_the_grafted_link() -> None:
    """It may come through another node's repair of the same hole: two nodes that
    each undid their Graft on that evidence would reopen the hole together."""
    a = _grafted_from_x()
    a.receive("x", gossip(ID, 0, "o", b"x"), 0.15)
    sent(a)
    a.receive("parent", gossip(ID, 3, "o", b"x"), 0.3)
    assert ("x", Prune()) not in sent(a) and "x" in a.peers.eager
    assert a.counters.graft_premature == 1 and a.counters.graft_undone == 0


def test_undoing_a_retried_graft_prunes_every_peer_asked_in_the_order_asked() -> None:
    # (in order, not a set's: a simulation seed must replay the same run in any process)
    a = _grafted_twice("parent", "y", "x")
    sent(a)
    a.receive("parent", gossip(ID, 3, "o", b"x"), 0.25)
    assert [(p, m) for p, m in sent(a) if isinstance(m, Prune)] == [
        ("y", Prune()),
        ("x", Prune()),
    ]
    assert a.counters.graft_undone == 2 and set(a.peers.lazy) == {"x", "y"}


def test_what_a_node_remembers_per_message_is_not_tracked_by_the_garbage_collector() -> None:
    """A node keeps up to ``seen_max_size`` seen entries and a payload store: tracked by
    the collector, 60,000 of them made every full collection a ~50 ms pause."""
    import gc

    n = node("a")
    n.add_peer("b", 0.0)
    n.take_outgoing()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5_000):
        # out of order in pairs (2, 1, 4, 3, ...): ranges come and go above the wm
        seq = i + 2 if i % 2 == 0 else i
        n.receive("b", gossip(mid(seq), 1, "b", b"x"), 1.0 + i / 1000)
        n.take_outgoing()
        n.take_events()
    gc.collect()
    assert len(n.seen) == len(n.store) == 5_000
    assert len(gc.get_objects()) - before < 500  # not one or two per message
