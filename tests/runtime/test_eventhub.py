"""The event replay buffer: per-message debug events must not push out the rest.

At 1,000 deliveries a second a single ring of 1,000 events held only the last second
of ``delivered`` events: ``plumctl top``'s detail pane (``recent=50&level=info``) and a
reconnecting ``plumctl monitor --since`` lost every membership and tree event older
than that.
"""

from __future__ import annotations

from plumtree.runtime.eventhub import EventHub


def _flood(hub: EventHub, n: int) -> None:
    for i in range(n):
        hub.publish({"kind": "delivered", "id": f"{i:032x}", "at": float(i)})


def test_debug_flood_keeps_the_louder_events() -> None:
    hub = EventHub(history=100)
    hub.publish({"kind": "member_joined", "name": "n2", "at": 0.0})
    hub.publish({"kind": "member_failed", "name": "n3", "at": 0.5})
    _flood(hub, 1_000)
    info = hub.recent(limit=50, level="info")
    assert [e["kind"] for e in info] == ["member_joined", "member_failed"]
    # the debug view still has the newest per-message events, after the older louder ones
    everything = hub.recent(limit=1_000, level="debug")
    assert [e["kind"] for e in everything[:2]] == ["member_joined", "member_failed"]
    assert len(everything) == 102 and everything[-1]["id"] == f"{999:032x}"
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs)


def test_replay_since_merges_both_buffers_in_order() -> None:
    hub = EventHub(history=10)
    hub.publish({"kind": "peer_added", "peer": "a", "at": 0.0})  # seq 1
    _flood(hub, 3)  # seq 2..4
    hub.publish({"kind": "peer_removed", "peer": "a", "at": 1.0})  # seq 5
    sub = hub.subscribe(level="debug", since=1)
    replay = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [e["seq"] for e in replay] == [2, 3, 4, 5]
    louder = hub.subscribe(level="info", since=0)
    assert [e["kind"] for e in [louder.queue.get_nowait() for _ in range(2)]] == [
        "peer_added",
        "peer_removed",
    ]
    assert louder.queue.empty()


def test_recent_limit_takes_the_newest_across_both_buffers() -> None:
    hub = EventHub(history=10)
    hub.publish({"kind": "peer_added", "peer": "a", "at": 0.0})
    _flood(hub, 2)
    hub.publish({"kind": "peer_added", "peer": "b", "at": 1.0})
    assert [e["seq"] for e in hub.recent(limit=3)] == [2, 3, 4]
    assert [e["peer"] for e in hub.recent(limit=1, level="info")] == ["b"]
    assert hub.recent(limit=0) == []
