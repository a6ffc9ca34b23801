"""Nodes on real loopback sockets, several in one process: membership, delivery, faults."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import replace

import pytest

from plumtree.core import stack as stack_module
from plumtree.core import wire
from plumtree.core.config import ProtocolConfig
from plumtree.core.messages import Ack, Gossip, Ping
from plumtree.runtime.crypto import Keyring
from plumtree.runtime.node import Node, NodeConfig
from tests.ports import free_port
from tests.runtime.conftest import LocalCluster, alive_names, local_config, wait_for


async def test_a_broadcast_reaches_every_node_exactly_once(cluster: LocalCluster) -> None:
    for _ in range(4):
        await cluster.add()
    await cluster.converge()
    ids = [cluster.nodes[i % 4].broadcast(f"m{i}".encode()) for i in range(20)]
    await wait_for(lambda: all(len(d) >= 20 for d in cluster.delivered.values()))
    await asyncio.sleep(0.3)  # anything extra would show up as a duplicate now
    for name, got in cluster.delivered.items():
        assert sorted(d.id for d in got) == sorted(ids), f"{name} delivered a wrong set"
    for node in cluster.nodes:
        assert node.plumtree.counters.messages_delivered == 20
        for msg_id in ids:
            info = node.message(msg_id)
            assert info["delivered"] and info["hops"] is not None and info["origin"]
    origins = {d.id: d.origin for d in cluster.delivered["n0"]}
    assert origins[ids[1]] == "n1"


async def test_payloads_arrive_intact_and_the_origin_sees_hop_zero(cluster: LocalCluster) -> None:
    a = await cluster.add()
    await cluster.add()
    await cluster.converge()
    payload = os.urandom(60_000)
    msg_id = a.broadcast(payload)
    await wait_for(lambda: len(cluster.delivered["n1"]) == 1)
    assert cluster.delivered["n1"][0].payload == payload
    assert cluster.delivered["n0"][0].hops == 0 and cluster.delivered["n0"][0].id == msg_id


async def test_graceful_leave_is_seen_as_left_not_dead(cluster: LocalCluster) -> None:
    for _ in range(3):
        await cluster.add()
    await cluster.converge()
    leaver = cluster.nodes[2]
    await leaver.stop(leave=True)
    others = cluster.nodes[:2]

    def seen_left() -> bool:
        return all(
            any(m["name"] == leaver.name and m["state"] == "left" for m in n.members())
            for n in others
        )

    await wait_for(seen_left, timeout=5.0)
    assert all(leaver.name not in n.plumtree.peers for n in others)


async def test_a_silent_node_is_declared_dead_and_broadcasts_still_reach_the_rest(
    cluster: LocalCluster,
) -> None:
    for _ in range(4):
        await cluster.add()
    await cluster.converge()
    victim = cluster.nodes[3]
    await victim.stop(leave=False)  # like a crash: no announcement
    survivors = cluster.nodes[:3]

    def declared_dead() -> bool:
        return all(
            any(m["name"] == victim.name and m["state"] == "dead" for m in n.members())
            for n in survivors
        )

    await wait_for(declared_dead, timeout=25.0, step=0.1)
    before = {n.name: len(cluster.delivered[n.name]) for n in survivors}
    msg_id = survivors[0].broadcast(b"after the crash")
    await wait_for(
        lambda: all(len(cluster.delivered[n.name]) == before[n.name] + 1 for n in survivors)
    )
    assert all(cluster.delivered[n.name][-1].id == msg_id for n in survivors)


async def test_clusters_with_different_labels_never_merge(cluster: LocalCluster) -> None:
    a = await cluster.add(label="blue")
    b = await cluster.add(label="green")
    await asyncio.sleep(1.0)
    assert alive_names(a) == {"n0"} and alive_names(b) == {"n1"}
    assert a.transport.stats.label_mismatches > 0


async def test_a_node_without_the_key_can_neither_join_nor_inject(cluster: LocalCluster) -> None:
    key = Keyring([os.urandom(32)])
    a = await cluster.add(keyring=key)
    b = await cluster.add(keyring=key)
    await cluster.converge()
    outsider = await cluster.add(name="outsider", keyring=Keyring([os.urandom(32)]))
    await asyncio.sleep(1.0)
    assert alive_names(a) == {"n0", "n1"} and alive_names(outsider) == {"outsider"}
    assert a.transport.stats.decrypt_errors > 0
    msg_id = a.broadcast(b"secret")
    await wait_for(lambda: any(d.id == msg_id for d in cluster.delivered["n1"]))
    assert b.status()["encrypted"]


async def test_captured_frames_and_datagrams_replayed_are_refused(cluster: LocalCluster) -> None:
    """Frames a node really sent (recorded as sealed), replayed at once and after the
    window: refused and counted, nothing delivered twice, the members unaffected."""
    key = Keyring([os.urandom(32)])
    a = await cluster.add(keyring=key)
    b = await cluster.add(keyring=key)
    await cluster.converge()
    captured: list[bytes] = []
    seal = a.transport._seal

    def recording(data: bytes) -> bytes:
        sealed = seal(data)
        captured.append(sealed)
        return sealed

    a.transport._seal = recording  # type: ignore[method-assign]

    def carries(sealed: bytes, kind: type) -> bool:
        return any(isinstance(m, kind) for m in wire.decode(key.decrypt(sealed)).messages)

    def first(kind: type) -> bytes | None:
        return next((s for s in captured if carries(s, kind)), None)

    msg_id = a.broadcast(b"once")
    await wait_for(lambda: len(cluster.delivered["n1"]) == 1)
    await wait_for(lambda: first(Ping | Ack) is not None)  # (a SWIM datagram too)
    a.transport._seal = seal  # type: ignore[method-assign]
    gossip, datagram = first(Gossip), first(Ping | Ack)
    assert gossip is not None and datagram is not None
    assert b.transport.bound is not None
    host, port = b.transport.bound
    stats, counters = b.transport.stats, b.plumtree.counters
    duplicates, incarnation = counters.messages_duplicate, b.swim.incarnation

    async def replay() -> None:
        _, writer = await asyncio.open_connection(host, port)
        writer.write(len(gossip).to_bytes(4, "big") + gossip)
        await writer.drain()
        writer.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(datagram, (host, port))
        await asyncio.sleep(0.3)

    await replay()  # at once: seen
    assert (stats.replay_replayed, stats.replay_stale) == (2, 0)
    b.transport.replay.past = 1.0  # (the window, shortened so the test need not wait 30 s)
    await asyncio.sleep(1.2)
    await replay()  # after the window: stale
    assert (stats.replay_replayed, stats.replay_stale) == (2, 2)
    assert counters.messages_duplicate == duplicates, "a replay never reached the tree"
    assert [d.id for d in cluster.delivered["n1"]] == [msg_id]
    assert alive_names(b) == {"n0", "n1"} and b.swim.incarnation == incarnation


async def test_key_rotation_mid_way_every_node_reads_both_primaries(cluster: LocalCluster) -> None:
    # rotation: install the new key everywhere as secondary, then switch primaries one by one
    old, new = os.urandom(16), os.urandom(32)
    await cluster.add(keyring=Keyring([old, new]))
    await cluster.add(keyring=Keyring([new, old]))  # already switched: encrypts with new
    await cluster.add(keyring=Keyring([old, new]))
    await cluster.converge()


async def test_garbage_on_both_ports_is_counted_and_harmless(cluster: LocalCluster) -> None:
    a = await cluster.add()
    await cluster.add()
    await cluster.converge()
    host, port = a.gossip_addr.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for blob in (b"", b"PT\x01\xff\xff", os.urandom(900), b"PT\x09junk"):
            udp.sendto(blob, (host, int(port)))
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((50).to_bytes(4, "big") + os.urandom(50))
    writer.write((2**31).to_bytes(4, "big"))  # absurd length: connection dropped
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    stats = a.transport.stats
    assert stats.decode_errors >= 4
    assert stats.oversize_dropped >= 1
    msg_id = a.broadcast(b"still fine")
    await wait_for(lambda: any(d.id == msg_id for d in cluster.delivered["n1"]))


async def test_a_full_send_queue_drops_and_counts(cluster: LocalCluster) -> None:
    node = await cluster.add(send_queue_limit=5)
    dead_port = free_port()  # nobody listens
    from plumtree.core.messages import Prune

    node.transport.send_reliable(f"127.0.0.1:{dead_port}", [Prune()] * 20)
    assert node.transport.stats.frames_dropped == 15
    await wait_for(lambda: node.transport.stats.connection_errors > 0)


async def test_a_member_that_restarts_rejoins_with_a_higher_incarnation(
    cluster: LocalCluster,
) -> None:
    for _ in range(3):
        await cluster.add()
    await cluster.converge()
    old = cluster.nodes.pop()
    await old.stop(leave=True)
    await wait_for(lambda: all(old.name not in alive_names(n) for n in cluster.nodes), timeout=5)
    again = await cluster.add(name=old.name)
    await cluster.converge(timeout=15)
    inc = next(m["incarnation"] for m in cluster.nodes[0].members() if m["name"] == old.name)
    assert inc >= 1
    msg_id = cluster.nodes[0].broadcast(b"welcome back")
    await wait_for(lambda: any(d.id == msg_id for d in cluster.delivered[again.name][-1:]))


async def test_a_node_alone_reports_isolation(cluster: LocalCluster) -> None:
    alone = await cluster.add()
    report = alone.health()
    assert report.status.value == "Unhealthy"
    assert "isolated" in report.message


def test_node_is_not_usable_before_start() -> None:
    from plumtree.runtime.node import NodeConfig

    node = Node(NodeConfig(name="x"))
    try:
        node.broadcast(b"x")
    except RuntimeError as exc:
        assert "not running" in str(exc)
    else:  # pragma: no cover - the assertion above is the point
        raise AssertionError("broadcast before start must fail")


async def test_a_timer_run_early_feeds_the_cores_its_deadline_and_time_never_runs_back(
    cluster: LocalCluster,
) -> None:
    # uvloop's clock ticks in whole milliseconds and runs a timer in the tick its
    # deadline falls in: fed the loop's time, the cores found nothing due and the
    # node re-armed the same deadline over and over until the clock ticked
    node = await cluster.add()
    seen: list[float] = []
    handle = node.stack.handle_timer

    def record(now: float) -> None:
        seen.append(now)
        handle(now)

    node.stack.handle_timer = record  # type: ignore[method-assign]
    due = node._now() + 0.05  # as if the loop ran a timer armed for 50 ms from now
    node._timer_at = due
    node._on_timer()
    assert seen == [due], "the cores run at the timer's deadline, not before it"
    assert node._now() >= due, "and the node's clock does not step back behind it"
    assert node._timer_at is not None and node._timer_at > due, "the next deadline is later"


async def start_joining(
    cluster: LocalCluster, name: str, seed: str, protocol: ProtocolConfig
) -> Node:
    """A node (no admin API) that joins through ``seed``; stopped at teardown."""
    node = Node(NodeConfig(name=name, bind="127.0.0.1:0", api=None, join=[seed], protocol=protocol))
    cluster.nodes.append(node)
    await node.start()
    return node


async def test_a_node_left_alone_joins_through_its_seed_again(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # its seed stops while nobody else is up; a new node later answers at the seed
    # address it was started with: 127.0.0.2, an alias of the first seed, which
    # advertised 127.0.0.1 (so nothing this node still sends to the old member's
    # address reaches the newcomer by chance). SWIM's gossip to, and reconnects with,
    # failed members are off: only the join loop can find it.
    monkeypatch.setattr(stack_module, "ISOLATION_CHECK_INTERVAL", 0.05)
    port = free_port()
    seed = await cluster.add(
        "seed",
        join=False,
        bind=f"0.0.0.0:{port}",
        advertise=f"127.0.0.1:{port}",
        insecure_gossip=True,  # (all interfaces, no keyring: allowed explicitly)
    )
    protocol = local_config()
    swim = replace(protocol.swim, reconnect_interval=0.0, gossip_to_the_dead_time=0.0)
    alone = await start_joining(cluster, "alone", f"127.0.0.2:{port}", replace(protocol, swim=swim))
    await cluster.converge()
    await asyncio.sleep(0.5)  # its first join is well over (a 0.2 s retry at most)
    await seed.stop()
    await wait_for(lambda: not alone.swim.joined, timeout=10)
    await cluster.add("newcomer", join=False, bind=f"127.0.0.2:{port}")
    await wait_for(lambda: alive_names(alone) == {"alone", "newcomer"}, timeout=15)


async def test_leaving_before_the_seed_ever_answered_ends_the_join_retries(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"127.0.0.1:{free_port()}"  # nobody listens there: the seed is down
    lonely = await start_joining(cluster, "lonely", down, local_config())
    await wait_for(lambda: any("cannot join" in r.getMessage() for r in caplog.records), 5)
    await lonely.leave(timeout=0.2)
    assert lonely.stack.next_deadline() > 0  # (still running: only joining ended)
    caplog.clear()
    await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if "cannot join" in r.getMessage()]
