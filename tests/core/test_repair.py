"""Exact delivery on hand-driven core nodes: repair by version vectors, visible loss,
fresh starts, durable holds, restarts from saved state."""

from __future__ import annotations

import random
from collections import Counter

from plumtree.core import events as ev
from plumtree.core.config import PlumtreeConfig
from plumtree.core.health import Status
from plumtree.core.messages import Gossip, Graft, PlumtreeMessage, Repair, Sync
from plumtree.core.plumtree import Plumtree
from tests.core.harness import Net, config

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


def test_a_held_broadcast_is_invisible_until_released() -> None:
    a = Plumtree("a", repair_config(), random.Random(1))
    a.add_peer("b", 0.0)
    a.take_outgoing()
    msg_id = a.broadcast(b"x", 0.1, hold=True)
    assert [m for _, m in a.take_outgoing() if isinstance(m, Gossip)] == []
    a.receive("b", Graft([msg_id]), 0.2)
    assert [m for _, m in a.take_outgoing() if isinstance(m, Gossip)] == []
    a.receive("b", Sync([]), 0.3)
    assert [m for _, m in a.take_outgoing() if isinstance(m, Repair)] == []
    assert a.streams.digest() == [] or a.streams.digest()[0].wm == 0
    a.release(1, 0.4)
    assert [p for p, m in a.take_outgoing() if isinstance(m, Gossip)] == ["b"]
    assert a.streams.digest()[0].wm == 1


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
