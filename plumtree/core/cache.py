"""The tree's per-message bookkeeping: a bounded, time-ordered store of seen entries.

It is an insertion-ordered dict: since ``now`` never goes backwards, the oldest entry is
always first, so expiry and capacity eviction are amortised O(1) pops from the front.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from plumtree.core.ids import MessageId

if TYPE_CHECKING:
    from plumtree.core.plumtree import PendingGraft


class SeenEntry(msgspec.Struct, gc=False):
    """What the tree knows of a message we delivered: for the optimisation, duplicate
    handling and the API (dedup itself is the stream watermark, which is never lost).

    Not tracked by the garbage collector (``gc=False``; an entry refers to no object
    that could refer back to it): a node holds up to ``seen_max_size`` of these, and with
    60,000 tracked a full collection paused the node for about 50 ms.
    """

    at: float
    hops: int
    parent: str
    origin: str
    #: when we got it by Graft: the pending Graft (whom we asked, when it was first
    #: announced), so later copies can be told apart: replies to our own retries, or the
    #: late eager copy that measures how premature the Graft was
    graft: PendingGraft | None = None
    #: our delivery order (the cursor): ``seq`` and ``seq + 1`` were delivered in a row
    seq: int = 0
    duplicates: int = 0
    shortcut_from: str | None = None
    #: it came by anti-entropy: the first copy down the tree after it is no evidence
    #: of a redundant eager link (it lost a race with the repair, not with another path)
    repaired: bool = False


_V = TypeVar("_V", bound=SeenEntry)


class TimedStore(Generic[_V]):
    """Dict with a TTL and a hard capacity; entries carry their insertion time in ``.at``."""

    __slots__ = ("_items", "capacity", "ttl", "view")

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._items: dict[MessageId, _V] = {}
        #: the entries themselves, typed read-only, for hot paths (``in`` and ``.get`` run
        #: in C; a MappingProxyType would cost one more object to reach on every lookup)
        self.view: Mapping[MessageId, _V] = self._items

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[MessageId]:
        return iter(self._items)

    def __reversed__(self) -> Iterator[MessageId]:
        """Newest first."""
        return reversed(self._items)

    def newest_entries(self) -> Iterator[tuple[MessageId, _V]]:
        """``(key, entry)`` newest first."""
        return reversed(self._items.items())

    def get(self, key: MessageId) -> _V | None:
        return self._items.get(key)

    def get_fresh(self, key: MessageId, now: float) -> _V | None:
        """The entry if it is within its TTL (expired but unswept entries don't count)."""
        entry = self._items.get(key)
        if entry is None or now - entry.at > self.ttl:
            return None
        return entry

    def put(self, key: MessageId, value: _V) -> int:
        """Insert; returns how many entries were evicted *before* their TTL to make room."""
        items = self._items
        items[key] = value
        evicted = 0
        while len(items) > self.capacity:
            del items[next(iter(items))]
            evicted += 1
        return evicted

    def expire(self, now: float) -> int:
        """Drop entries older than the TTL; returns how many."""
        items = self._items
        horizon = now - self.ttl
        n = 0
        for key in items:
            if items[key].at >= horizon:
                break
            n += 1
        if n:
            for key in list(islice(items, n)):
                del items[key]
        return n

    def newest(self, since: float, limit: int) -> list[tuple[MessageId, int]]:
        """``(key, hops)`` of up to ``limit`` entries inserted at or after ``since``, newest
        first (stops at the first older one)."""
        out: list[tuple[MessageId, int]] = []
        append = out.append
        for key, value in islice(reversed(self._items.items()), limit):
            if value.at < since:
                break
            append((key, value.hops))
        return out

    def oldest_at(self) -> float | None:
        for value in self._items.values():
            return value.at
        return None
