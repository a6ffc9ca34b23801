"""The eager and lazy peer sets, with O(1) add/remove/random-sample and per-peer traffic.

Iteration order is insertion order (never a Python ``set`` of strings, whose order changes
with the hash seed), so a seeded simulation makes the same choices on every run.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

_T = TypeVar("_T")


class IndexedSet(Generic[_T]):
    """A set with O(1) add, remove and uniform random sampling."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[_T] = ()) -> None:
        self._items: list[_T] = []
        self._index: dict[_T, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: _T) -> bool:
        if item in self._index:
            return False
        self._index[item] = len(self._items)
        self._items.append(item)
        return True

    def discard(self, item: _T) -> bool:
        pos = self._index.pop(item, None)
        if pos is None:
            return False
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._index[last] = pos
        return True

    def sample(self, rng: random.Random, k: int) -> list[_T]:
        if k >= len(self._items):
            return list(self._items)
        return rng.sample(self._items, k)

    def choice(self, rng: random.Random) -> _T:
        return self._items[rng.randrange(len(self._items))]

    def __getitem__(self, position: int) -> _T:
        """The item at ``position`` (0 <= position < len); order changes on removal."""
        return self._items[position]

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[_T]:
        """Iterate in place: do not add or remove while iterating."""
        return iter(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)


class PeerInfo:
    """One Plumtree peer as the admin API shows it."""

    __slots__ = (
        "duplicate_since",
        "duplicate_streak",
        "eager",
        "gossip_received",
        "gossip_sent",
        "grafts_received",
        "grafts_sent",
        "ihave_received",
        "ihave_sent",
        "name",
        "pruned_at",
        "prunes_received",
        "prunes_sent",
        "shortcut_batch",
        "shortcut_batches",
        "shortcut_seq",
        "shortcut_streak",
        "since",
    )

    def __init__(self, name: str, eager: bool, since: float) -> None:
        self.name = name
        self.eager = eager
        self.since = since
        self.gossip_sent = 0
        self.gossip_received = 0
        self.ihave_sent = 0
        self.ihave_received = 0
        self.grafts_sent = 0
        self.grafts_received = 0
        self.prunes_sent = 0
        self.prunes_received = 0
        #: messages in a row (our delivery order) for which its path beat ours by the
        #: optimisation threshold, and the ``seq`` of the last one
        self.shortcut_streak = 0
        self.shortcut_seq = -2
        #: how many of its IHave messages the streak spans, and the last one's number
        #: (its ``ihave_received`` count then)
        self.shortcut_batches = 0
        self.shortcut_batch = -1
        #: duplicates in a row this eager peer pushed (Prune at ``prune_streak``)
        self.duplicate_streak = 0
        #: when the current streak began
        self.duplicate_since = 0.0
        #: when we last sent it a Prune (copies it pushes until then are in flight)
        self.pruned_at = float("-inf")

    def as_dict(self) -> dict[str, object]:
        return {
            "peer": self.name,
            "state": "eager" if self.eager else "lazy",
            "since": self.since,
            "gossip_sent": self.gossip_sent,
            "gossip_received": self.gossip_received,
            "ihave_sent": self.ihave_sent,
            "ihave_received": self.ihave_received,
            "grafts_sent": self.grafts_sent,
            "grafts_received": self.grafts_received,
            "prunes_sent": self.prunes_sent,
            "prunes_received": self.prunes_received,
        }


class PeerSets:
    """Disjoint eager and lazy sets plus per-peer info; every change goes through here."""

    __slots__ = ("eager", "info", "lazy")

    def __init__(self) -> None:
        self.eager: IndexedSet[str] = IndexedSet()
        self.lazy: IndexedSet[str] = IndexedSet()
        self.info: dict[str, PeerInfo] = {}

    def __contains__(self, peer: object) -> bool:
        return peer in self.info

    def __len__(self) -> int:
        return len(self.info)

    def add(self, peer: str, eager: bool, now: float) -> None:
        self.info[peer] = PeerInfo(peer, eager, now)
        (self.eager if eager else self.lazy).add(peer)

    def remove(self, peer: str) -> bool:
        if self.info.pop(peer, None) is None:
            return False
        self.eager.discard(peer)
        self.lazy.discard(peer)
        return True

    def promote(self, peer: str, now: float) -> bool:
        """Lazy -> eager; returns False if it was not lazy."""
        if not self.lazy.discard(peer):
            return False
        self.eager.add(peer)
        info = self.info[peer]
        info.eager = True
        info.since = now
        return True

    def demote(self, peer: str, now: float) -> bool:
        """Eager -> lazy; returns False if it was not eager."""
        if not self.eager.discard(peer):
            return False
        self.lazy.add(peer)
        info = self.info[peer]
        info.eager = False
        info.since = now
        return True

    def names(self) -> list[str]:
        return list(self.info)
