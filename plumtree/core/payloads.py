"""The payloads a node keeps to answer Grafts and repair others, bounded in bytes and age.

Retention is what makes repair possible: a node that was away pulls what it missed from
whoever still holds it. The store is an insertion-ordered dict (``now`` never goes
backwards, so the oldest entry is first): expiry and eviction pop from the front in
amortised O(1). Every byte bound counts the payload plus a fixed per-entry overhead, so
memory stays bounded whatever the payload size. An evicted payload moves its stream's
floor, which digests carry: peers know what we can no longer give.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice

import msgspec

from plumtree.core.ids import MessageId
from plumtree.core.streams import Stream

#: What an entry costs besides its payload (the struct, the dict slot, the id): the
#: byte bound counts it, so a flood of tiny payloads is bounded as well.
ENTRY_OVERHEAD = 200


class StoredMessage(msgspec.Struct, gc=False):
    """One kept payload. Not tracked by the garbage collector: it refers to no object
    that refers back to it, and a node holds hundreds of thousands of them."""

    at: float
    hops: int
    seq: int
    stream: Stream
    payload: bytes


class PayloadStore:
    """Payloads by message id, oldest first; bounded by bytes, age and count."""

    __slots__ = ("_items", "bytes", "evictions", "max_age", "max_bytes", "max_messages", "view")

    def __init__(self, max_bytes: int, max_age: float, max_messages: int) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_messages = max_messages
        self._items: dict[MessageId, StoredMessage] = {}
        #: read-only view for the hot paths (lookups in C)
        self.view: Mapping[MessageId, StoredMessage] = self._items
        self.bytes = 0
        #: payloads dropped for space before their age (the retention is shorter then)
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: MessageId) -> StoredMessage | None:
        return self._items.get(key)

    def put(self, key: MessageId, message: StoredMessage) -> int:
        """Keep ``message``; returns how many older ones were evicted to make room."""
        items = self._items
        if key in items:
            return 0
        items[key] = message
        self.bytes += len(message.payload) + ENTRY_OVERHEAD
        evicted = 0
        while (self.bytes > self.max_bytes or len(items) > self.max_messages) and len(items) > 1:
            self._pop_oldest()
            evicted += 1
        self.evictions += evicted
        return evicted

    def _pop_oldest(self) -> StoredMessage:
        items = self._items
        key = next(iter(items))
        old = items.pop(key)
        self.bytes -= len(old.payload) + ENTRY_OVERHEAD
        old.stream.evicted(old.seq)
        return old

    def expire(self, now: float) -> int:
        """Drop payloads older than the retention age; returns how many."""
        horizon = now - self.max_age
        items = self._items
        n = 0
        for value in items.values():
            if value.at >= horizon:
                break
            n += 1
        for _ in range(n):
            self._pop_oldest()
        return n

    def newest(self) -> Iterator[tuple[MessageId, StoredMessage]]:
        return reversed(self._items.items())

    def oldest(self, limit: int) -> list[tuple[MessageId, StoredMessage]]:
        return list(islice(self._items.items(), limit))

    def oldest_at(self) -> float | None:
        for value in self._items.values():
            return value.at
        return None

    def effective_capacity(self) -> int:
        """How many messages fit at the current mean size: the count bound or the byte
        bound, whichever binds (``size / capacity`` is the fuller of the two)."""
        n = len(self._items)
        if n == 0 or self.bytes == 0:
            return min(self.max_messages, self.max_bytes // ENTRY_OVERHEAD)
        by_bytes = int(n * self.max_bytes / self.bytes)
        return max(1, min(self.max_messages, by_bytes))
