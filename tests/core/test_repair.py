"""Exact delivery on hand-driven core nodes: repair by version vectors, visible loss,
fresh starts, durable holds, restarts from saved state."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from plumtree.core import events as ev
from plumtree.core.config import PlumtreeConfig
from plumtree.core.health import Status
from plumtree.core.messages import (
    Gossip,
    IHave,
    PlumtreeMessage,
    Repair,
    StreamDigest,
    Sync,
)
from plumtree.core.plumtree import Plumtree
from plumtree.core.state import StreamState
from tests.core.harness import Net, config, mid

NAMES = ["a", "b", "c", "d", "e"]


def repair_config(**changes: object) -> PlumtreeConfig:
    base: dict[str, object] = {
        "sync_interval": 0.5,
        "repair_delay": 0.2,
        "repair_interval": 0.05,
        "loss_timeout": 1.0,
        "maintenance_interval": 0.25,
    }
    base.update(changes)
    return config(**base)


def mesh(cfg: PlumtreeConfig | None = None, names: list[str] = NAMES) -> Net:
    net = Net(names, cfg or repair_config())
    net.full_mesh()
    net.advance(0.1)
    return net


def ids_delivered(net: Net, name: str) -> Counter[bytes]:
    return Counter(d.id for d in net.delivered(name))


def broadcast(net: Net, origin: str, count: int, drop=None) -> list[bytes]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(count):
        out.append(net.nodes[origin].broadcast(b"%s-%d" % (origin.encode(), i), net.now))
        net.advance(0.02, drop=drop)
    return out


def cut(names: set[str]):  # type: ignore[no-untyped-def]
    """Drop everything to and from ``names``."""
    return lambda src, dst, msg: src in names or dst in names


def test_a_node_cut_off_pulls_everything_it_missed_exactly_once() -> None:
    net = mesh()
    sent = broadcast(net, "a", 5)
    net.advance(1.0)
    sent += broadcast(net, "b", 40, drop=cut({"e"}))
    net.advance(0.5, drop=cut({"e"}))
    assert len(ids_delivered(net, "e")) == 5
    net.advance(3.0)
    for name in NAMES:
        got = ids_delivered(net, name)
        assert set(got) == set(sent), name
        assert max(got.values()) == 1, f"{name} delivered something twice"
    e = net.nodes["e"]
    assert e.counters.messages_repaired >= 35
    assert e.streams.missing() == 0 and not e.repair.blocks


def test_a_partition_heals_with_every_message_everywhere_once() -> None:
    net = mesh()
    left, right = {"a", "b", "c"}, {"d", "e"}

    def split(src: str, dst: str, msg: PlumtreeMessage) -> bool:
        return (src in left) != (dst in left)

    sent = broadcast(net, "a", 20, drop=split) + broadcast(net, "d", 20, drop=split)
    net.advance(1.0, drop=split)
    assert set(ids_delivered(net, "e")) == {i for i in sent if net.nodes["d"].locate(i)[0]}
    net.advance(4.0)
    for name in NAMES:
        got = ids_delivered(net, name)
        assert set(got) == set(sent) and max(got.values()) == 1, name
    assert sum(n.counters.lost_unavailable for n in net.nodes.values()) == 0
    del right


def test_what_nobody_holds_any_more_is_lost_counted_announced_and_in_health() -> None:
    net = mesh(repair_config(retention_age=1.0))
    broadcast(net, "a", 2)
    net.advance(0.5)
    away = broadcast(net, "a", 10, drop=cut({"e"}))
    net.advance(2.0, drop=cut({"e"}))  # everyone's store forgets them meanwhile
    later = broadcast(net, "a", 1)
    net.advance(3.0)
    e = net.nodes["e"]
    got = ids_delivered(net, "e")
    assert later[0] in got and not set(away) & set(got)
    losses = net.of("e", ev.MessagesLost)
    assert losses == [ev.MessagesLost("a", 0, 3, 12, 10, "unavailable")]
    assert e.counters.lost_unavailable == 10 and e.streams.missing() == 0
    report = e.health(net.now)
    assert report.status is Status.DEGRADED
    assert "lost 10 message(s) of a (epoch 0, seq 3-12)" in report.message
    assert e.locate(away[0])[0].is_lost(3)  # type: ignore[union-attr]
    for name in "abcd":
        assert net.nodes[name].counters.lost_unavailable == 0, name


def test_nothing_is_declared_lost_while_a_live_peer_still_holds_it() -> None:
    net = mesh(repair_config(retention_age=1.0))
    keeper = net.nodes["d"]
    keeper.store.max_age = 3600.0  # d keeps everything
    away = broadcast(net, "a", 10, drop=cut({"e"}))
    net.advance(2.0, drop=cut({"e"}))
    net.advance(3.0)
    assert set(away) <= set(ids_delivered(net, "e"))
    assert net.nodes["e"].counters.lost_unavailable == 0
    assert keeper.counters.repair_sent >= 10


def test_a_fresh_node_starts_where_its_peers_are() -> None:
    net = mesh()
    old = broadcast(net, "a", 5)
    net.advance(1.0)
    newcomer = Plumtree("f", net.cfg, random.Random(9), net.now, fresh=True)
    net.nodes["f"] = newcomer
    net.events["f"] = []
    for name in NAMES:
        net.link(name, "f")
    net.advance(1.0)
    new = broadcast(net, "b", 3)
    net.advance(2.0)
    got = ids_delivered(net, "f")
    assert set(got) == set(new), "not owed what was broadcast before it joined"
    assert not set(old) & set(got)
    assert newcomer.counters.lost_unavailable == 0 and newcomer.streams.missing() == 0
    assert not newcomer.repair.adopting


def test_after_a_crash_our_old_epoch_is_repaired_from_peers_and_nothing_is_reused() -> None:
    """A broadcast leaves before it is durable; after a crash the node cannot know which
    of its last seqs went out, so it restarts in a new epoch. The old epoch is then a
    stream like any other: what peers hold of it comes back, delivered once."""
    net = mesh(names=["a", "b", "c"])
    sent = broadcast(net, "a", 3)
    net.advance(1.0)
    saved = net.nodes["a"].snapshot(net.now)
    own = next(s for s in saved.streams if s.origin == "a")
    crashed = replace(  # the store kept seq 1 only: 2 and 3 left before their commit
        saved,
        epoch=saved.epoch + 1,
        streams=[replace(own, wm=1, head=1)] + [s for s in saved.streams if s.origin != "a"],
        messages=[m for m in saved.messages if m.origin != "a" or m.seq == 1],
    )
    net.events["a"] = []
    a = Plumtree("a", net.cfg, random.Random(4), net.now, restored=crashed)
    net.nodes["a"] = a
    for peer in "bc":
        a.add_peer(peer, net.now)
    net.advance(3.0)
    old = a.streams.find("a", saved.epoch)
    assert old is not None and old.wm == 3 and not old.own
    assert ids_delivered(net, "a") == Counter(sent[1:]), "seqs 2-3, once each"
    assert a.counters.own_seqs_skipped == 0
    fresh = a.broadcast(b"after", net.now)
    assert fresh not in sent and int.from_bytes(fresh[8:], "big") == 1
    net.advance(1.0)
    for peer in "bc":
        assert ids_delivered(net, peer) == Counter([*sent, fresh])


def test_a_restart_from_saved_state_redelivers_nothing_and_catches_up() -> None:
    net = mesh()
    before = broadcast(net, "a", 10)
    net.advance(1.0)
    e = net.nodes["e"]
    saved = e.snapshot(net.now)
    cursor = max(d.cursor for d in net.delivered("e"))
    missed = broadcast(net, "b", 10, drop=cut({"e"}))  # e is down
    net.events["e"] = []
    restarted = Plumtree("e", net.cfg, random.Random(5), net.now, restored=saved)
    net.nodes["e"] = restarted
    for name in "abcd":
        net.link(name, "e")
    net.advance(3.0)
    got = ids_delivered(net, "e")
    assert set(got) == set(missed), "what it missed, and nothing it had"
    assert not set(before) & set(got)
    assert sorted(d.cursor for d in net.delivered("e")) == list(range(cursor + 1, cursor + 11))


def test_repair_answers_are_bounded_and_the_catch_up_is_paced_by_them() -> None:
    net = mesh(repair_config(repair_batch=16), names=["a", "b"])
    sent = broadcast(net, "a", 100, drop=cut({"b"}))
    net.advance(0.5, drop=cut({"b"}))
    a = net.nodes["a"]
    answers: list[int] = []
    receive = a.receive

    def counting(sender: str, msg: PlumtreeMessage, now: float) -> None:
        receive(sender, msg, now)
        if isinstance(msg, Sync):
            out = a.take_outgoing()
            answers.append(sum(isinstance(m, Repair) for _, m in out))
            a._outbox.extend(out)  # (put back for the network)

    a.receive = counting  # type: ignore[method-assign]
    net.advance(3.0)
    assert set(ids_delivered(net, "b")) == set(sent)
    assert max(answers) == 16, "no answer carries more than repair_batch"
    assert sum(answers) >= 100
    assert len([n for n in answers if n]) >= 100 // 16, "one bounded batch per round"


def test_with_anti_entropy_off_a_fresh_node_does_not_spin() -> None:
    """sync_interval 0 turns the periodic digests off; a node without history still asks
    its first peers where they are, at the repair pace, and its deadline moves on."""
    f = Plumtree("f", repair_config(sync_interval=0.0), random.Random(3), 0.0, fresh=True)
    f.add_peer("a", 0.0)
    for _ in range(3):
        now = f.next_deadline()
        f.handle_timer(now)
        assert f.next_deadline() > now
    assert [m for _, m in f.take_outgoing() if isinstance(m, Sync)]


def test_a_forged_head_never_makes_a_node_give_up_real_messages() -> None:
    """A digest claiming seqs nobody has settled (forged, or news from the other side
    of a partition) leaves them missing, visible; it cannot get them declared lost,
    nor the origin's next real broadcasts dropped as settled (a review found both)."""
    net = mesh(repair_config())
    broadcast(net, "a", 3)
    net.advance(1.0)
    e = net.nodes["e"]
    stream = e.streams.find("a", 0)
    assert stream is not None
    forged = Sync([StreamDigest("a", 0, 3, 2**63 - 1, 1, [])])
    e.receive("b", forged, net.now)
    net.advance(5.0)
    assert e.counters.lost_unavailable == 0 and stream.wm == 3
    assert stream.missing() > 0, "it stays missing: the alert and health say so"
    later = broadcast(net, "a", 1)
    net.advance(1.0)
    assert later[0] in ids_delivered(net, "e")


def test_an_id_past_the_largest_seq_is_refused_everywhere() -> None:
    a = Plumtree("a", repair_config(), random.Random(1))
    a.add_peer("b", 0.0)
    key = mid(1, "o")[:8]
    huge = key + (2**64 - 1).to_bytes(8, "big")
    a.receive("b", Gossip(huge, 0, "o", 0, b"x"), 0.0)
    a.receive("b", Repair(huge, 0, "o", 0, b"x"), 0.0)
    a.receive("b", IHave([(huge, 0)]), 0.0)
    assert a.counters.messages_rejected == 2
    stream = a.streams.find("o", 0)
    assert stream is None or stream.head == 0
    assert not [e for e in a.take_events() if isinstance(e, ev.Delivered)]


def test_gaps_saved_before_a_restart_get_a_verdict_after_it() -> None:
    """Nothing else wakes a quiet stream's old gap: missing forever, never given up,
    never in health (a review found it)."""
    net = mesh(repair_config(retention_age=1.0))
    broadcast(net, "a", 5, drop=cut({"e"}))
    net.advance(3.0, drop=cut({"e"}))  # everyone's store forgets them meanwhile
    e = net.nodes["e"]
    stream = e.streams.ensure("a", 0)
    assert stream is not None
    stream.learn_head(5)  # e knew they existed when it stopped
    saved = e.snapshot(net.now)
    restarted = Plumtree("e", net.cfg, random.Random(5), net.now, restored=saved)
    for peer in e.peers.names():
        restarted.add_peer(peer, net.now)
    restarted.take_outgoing()  # (no digest on joining: only the old gap can wake it)
    net.nodes["e"] = restarted
    net.advance(4.0)
    assert restarted.counters.lost_unavailable == 5
    assert restarted.streams.missing() == 0


def test_an_origin_restored_from_an_old_copy_numbers_past_what_peers_hold() -> None:
    """The data dir is an older copy of itself (restored from a backup): peers hold seqs
    2-3 of our epoch that our store lacks. Reusing them, our next broadcasts would be
    taken for duplicates everywhere."""
    net = mesh(names=["a", "b"])
    broadcast(net, "a", 3)
    net.advance(1.0)
    saved = net.nodes["a"].snapshot(net.now)
    own = next(s for s in saved.streams if s.origin == "a")
    rolled_back = replace(
        saved, streams=[replace(own, wm=1, head=1)] + [s for s in saved.streams if s.origin != "a"]
    )
    a = Plumtree("a", net.cfg, random.Random(4), net.now, restored=rolled_back)
    net.nodes["a"] = a
    a.add_peer("b", net.now)
    net.nodes["b"].add_peer("a", net.now)
    net.advance(2.0)  # a digest from b tells a where its own epoch really is
    assert a.counters.own_seqs_skipped == 2
    fresh = a.broadcast(b"after", net.now)
    assert int.from_bytes(fresh[8:], "big") == 4
    net.advance(1.0)
    assert fresh in ids_delivered(net, "b")


def test_deliveries_replayed_over_the_saved_streams_are_settled_after_a_restart() -> None:
    """The store saves streams at checkpoints; deliveries committed after the last one
    replay on them at restart: not delivered again, and our own seq not reused."""
    a = Plumtree("a", repair_config(), random.Random(1))
    first = a.broadcast(b"one", 0.0)
    saved = a.snapshot(0.0)
    state = replace(
        saved,
        streams=[StreamState(s.origin, s.epoch, 0, 0, 1) for s in saved.streams],
        replay=[("a", 0, 1), ("o", 0, 1), ("o", 0, 2)],
    )
    b = Plumtree("a", repair_config(), random.Random(2), 1.0, restored=state)
    assert b.own_stream.wm == 1 and b.own_stream.own
    other = b.streams.find("o", 0)
    assert other is not None and other.wm == 2
    assert int.from_bytes(b.broadcast(b"two", 1.0)[8:], "big") == 2
    assert first != b.broadcast(b"three", 1.0)
