"""Fan-out of protocol events to /v1/events streams, with replay buffers.

Every subscriber has a bounded queue: a slow reader loses its oldest events (counted),
it never makes the node buffer without bound.

Replay keeps two rings: debug events (one per message and hop: ``delivered``,
``graft_sent``...) and the louder ones (membership, tree shape, failures). With one
ring, a second of traffic at 1,000 messages/s pushed out every membership event, and
``plumctl top``'s detail pane and a reconnecting ``plumctl monitor`` showed nothing.

Per-message events come by the thousand a second and are almost never read: with no
subscriber they wait in the ring as a record and become a dict only when replayed
(``publish_deferred``). Building and stamping the dict was about 5% of a busy node's CPU.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

#: turns ``(seq, record)`` into the event dict (see ``EventHub.publish_deferred``)
Render = Callable[[int, tuple[Any, ...]], dict[str, Any]]
#: what the debug ring holds: an event, or one not yet rendered
_Buffered = dict[str, Any] | tuple[int, tuple[Any, ...], Render]

#: How loud each event kind is (``plumctl monitor --level``).
LEVELS = {
    "member_joined": "info",
    "member_updated": "info",
    "member_suspected": "warn",
    "member_alive": "info",
    "member_failed": "warn",
    "member_left": "info",
    "member_reaped": "debug",
    "refuted": "warn",
    "partition_suspected": "error",
    "name_conflict": "warn",
    "name_taken": "error",
    "peer_added": "info",
    "peer_removed": "info",
    "promoted": "info",
    "demoted": "info",
    "graft_sent": "debug",
    "graft_failed": "warn",
    "prune_sent": "debug",
    "cache_evicted": "warn",
    "messages_lost": "warn",
    "own_seqs_skipped": "warn",
    "join_pending": "warn",
    "joined": "info",
    "isolated": "warn",
    "reconciled": "info",
    "delivered": "debug",
    "broadcast": "info",
    "leaving": "info",
    "keyring_changed": "info",
}
LEVEL_ORDER = {"debug": 0, "info": 1, "warn": 2, "error": 3}
DEBUG = LEVEL_ORDER["debug"]


class Subscription:
    def __init__(self, hub: EventHub, level: str, limit: int) -> None:
        self.hub = hub
        self.min_level = LEVEL_ORDER.get(level, 0)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(limit)

    def offer(self, event: dict[str, Any]) -> None:
        if LEVEL_ORDER.get(event.get("level", "info"), 1) < self.min_level:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.hub.dropped += 1
        self.queue.put_nowait(event)

    def close(self) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    def __init__(self, history: int = 1000, subscriber_limit: int = 1000) -> None:
        #: the last ``history`` events above debug level, and apart the last debug ones
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self.trace: deque[_Buffered] = deque(maxlen=history)
        self.subscribers: list[Subscription] = []
        #: how many of them take debug events (deferred events are rendered for them)
        self.debug_subscribers = 0
        self.subscriber_limit = subscriber_limit
        self.dropped = 0
        self.seq = 0

    def publish(self, event: dict[str, Any]) -> None:
        self.seq += 1
        event["seq"] = self.seq
        level = event.setdefault("level", LEVELS.get(event.get("kind", ""), "info"))
        ring = self.trace if LEVEL_ORDER.get(level, 1) <= DEBUG else self.history
        ring.append(event)
        self._fan_out(event)

    def publish_deferred(self, record: tuple[Any, ...], render: Render) -> None:
        """A debug event, rendered by ``render(seq, record)`` only when someone reads it.

        ``render`` must return a dict with ``kind``, ``level`` (debug) and ``seq``, and
        must not publish (it may run while a reader walks the ring).
        """
        self.seq += 1
        if self.debug_subscribers:
            event = render(self.seq, record)
            self.trace.append(event)
            self._fan_out(event)
        else:  # (an info-level ``plumctl monitor`` would drop it anyway)
            self.trace.append((self.seq, record, render))

    def _fan_out(self, event: dict[str, Any]) -> None:
        for sub in self.subscribers:
            sub.offer(event)

    def _traced(self, newest_first: bool) -> Iterator[dict[str, Any]]:
        ring = reversed(self.trace) if newest_first else iter(self.trace)
        for item in ring:
            if isinstance(item, dict):
                yield item
            else:
                seq, record, render = item
                yield render(seq, record)

    def _buffered(self, level: str, newest_first: bool = False) -> Iterator[dict[str, Any]]:
        """Buffered events at ``level`` or louder, in ``seq`` order."""
        floor = LEVEL_ORDER.get(level, 0)
        if floor > DEBUG:  # the debug ring holds nothing this loud
            ring = reversed(self.history) if newest_first else iter(self.history)
            return (e for e in ring if LEVEL_ORDER.get(e["level"], 1) >= floor)
        if newest_first:
            return heapq.merge(reversed(self.history), self._traced(True), key=_newest)
        return heapq.merge(self.history, self._traced(False), key=_oldest)

    def subscribe(self, level: str = "debug", since: int | None = None) -> Subscription:
        sub = Subscription(self, level, self.subscriber_limit)
        if since is not None:
            for event in self._buffered(level):
                if event["seq"] > since:
                    sub.offer(event)
        self.subscribers.append(sub)
        if sub.min_level <= DEBUG:
            self.debug_subscribers += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
            if sub.min_level <= DEBUG:
                self.debug_subscribers -= 1

    def recent(self, limit: int = 100, level: str = "debug") -> list[dict[str, Any]]:
        """The newest ``limit`` buffered events at ``level`` or louder, oldest first."""
        if limit <= 0:
            return []
        return list(islice(self._buffered(level, newest_first=True), limit))[::-1]


def _oldest(event: dict[str, Any]) -> int:
    seq: int = event["seq"]
    return seq


def _newest(event: dict[str, Any]) -> int:
    return -_oldest(event)
