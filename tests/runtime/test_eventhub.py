"""The event replay buffer: per-message debug events must not push out the rest.

At 1,000 deliveries a second a single ring of 1,000 events held only the last second
of ``delivered`` events: ``plumctl top``'s detail pane (``recent=50&level=info``) and a
reconnecting ``plumctl monitor --since`` lost every membership and tree event older
than that.
"""

from __future__ import annotations

from typing import Any

from plumtree.runtime.eventhub import EventHub, Render


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


def _renderer(log: list[int]) -> Render:
    """A render callback that notes which seqs it was asked to build."""

    def render(seq: int, record: tuple[Any, ...]) -> dict[str, Any]:
        log.append(seq)
        (msg_id,) = record
        return {"kind": "delivered", "level": "debug", "seq": seq, "id": msg_id}

    return render


def test_deferred_events_are_rendered_only_when_read() -> None:
    """Per-message events wait as records; reading renders them, in seq order with the
    rest, and a debug subscriber gets them rendered at once."""
    rendered: list[int] = []
    render = _renderer(rendered)
    hub = EventHub(history=10)
    hub.publish({"kind": "peer_added", "peer": "a", "at": 0.0})  # seq 1
    for i in range(3):  # seq 2..4
        hub.publish_deferred((f"m{i}",), render)
    hub.publish({"kind": "peer_removed", "peer": "a", "at": 1.0})  # seq 5
    assert rendered == [], "nobody read them: never built"
    recent = hub.recent(limit=4)
    assert [e.get("id", e["kind"]) for e in recent] == ["m0", "m1", "m2", "peer_removed"]
    assert [e["seq"] for e in hub.recent(limit=10)] == [1, 2, 3, 4, 5]
    assert [e["kind"] for e in hub.recent(limit=10, level="info")] == [
        "peer_added",
        "peer_removed",
    ]
    sub = hub.subscribe(level="debug", since=2)
    replay = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [e["seq"] for e in replay] == [3, 4, 5] and replay[0]["id"] == "m1"
    rendered.clear()
    hub.publish_deferred(("live",), render)  # seq 6: a debug subscriber is waiting
    assert rendered == [6] and sub.queue.get_nowait()["id"] == "live"
    sub.close()
    hub.publish_deferred(("later",), render)  # seq 7: nobody waits any more
    assert rendered == [6]
    # the ring now mixes a rendered event (6) and records (2..4, 7): still in seq order
    assert [e["seq"] for e in hub.recent(limit=10)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["id"] for e in hub.recent(limit=2)] == ["live", "later"]


def test_an_info_subscriber_does_not_make_every_delivery_render() -> None:
    """``plumctl monitor`` listens at info by default: it would drop each rendered
    delivery, so it must not cost the rendering."""
    rendered: list[int] = []
    hub = EventHub(history=10)
    quiet = hub.subscribe(level="info")
    hub.publish_deferred(("m",), _renderer(rendered))
    assert rendered == [] and quiet.queue.empty()
    hub.publish({"kind": "peer_added", "peer": "a", "at": 0.0})
    assert quiet.queue.get_nowait()["kind"] == "peer_added"
    loud = hub.subscribe(level="debug")
    hub.publish_deferred(("n",), _renderer(rendered))
    assert rendered == [3] and loud.queue.get_nowait()["id"] == "n" and quiet.queue.empty()


def test_deferred_ring_is_bounded() -> None:
    hub = EventHub(history=5)
    render = _renderer([])
    for i in range(50):
        hub.publish_deferred((f"m{i}",), render)
    assert len(hub.trace) == 5
    assert [e["id"] for e in hub.recent(limit=100)] == [f"m{i}" for i in range(45, 50)]
