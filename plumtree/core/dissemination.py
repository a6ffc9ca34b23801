"""The transmit-limited update queue (memberlist ``TransmitLimitedQueue``).

Membership updates (Alive / Suspect / Dead) wait here to be piggybacked on outgoing
datagrams. Each is sent at most ``limit`` times (RetransmitMult * ceil(log10(N + 1))).
Packing prefers the least-transmitted updates and, among equals, the most recent ones.
A newer update about a member replaces the queued one (only the latest news about a node
is worth spreading), so the queue never holds more than one entry per member; a hard
``capacity`` bounds it anyway and every drop is counted.

Implementation: one insertion-ordered dict per transmit count ("tier"). Taking from a tier
walks it newest-first; a sent update moves to the end of the next tier. That keeps a
take O(updates packed), independent of the queue length.
"""

from __future__ import annotations

import math
from typing import Any


def retransmit_limit(mult: int, n: int) -> int:
    """memberlist's retransmitLimit: mult * ceil(log10(n + 1))."""
    return mult * math.ceil(math.log10(n + 1)) if n > 0 else mult


class _Update:
    __slots__ = ("message", "name", "size", "tier")

    def __init__(self, name: str, message: Any, size: int) -> None:
        self.name = name
        self.message = message
        self.size = size
        self.tier = 0


class TransmitQueue:
    """Pending updates keyed by member name, packed least-sent and newest first."""

    __slots__ = ("_by_name", "_tiers", "capacity", "dropped", "min_size")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_name: dict[str, _Update] = {}
        self._tiers: list[dict[str, _Update]] = [{}]
        self.dropped = 0
        #: smallest update size seen (a packet with less room than this is full)
        self.min_size = 1 << 30

    def __len__(self) -> int:
        return len(self._by_name)

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def enqueue(self, name: str, message: Any, size: int) -> None:
        """Queue ``message`` about ``name``, replacing any older update about it."""
        old = self._by_name.pop(name, None)
        if old is not None:
            del self._tiers[old.tier][name]
        elif len(self._by_name) >= self.capacity:
            self._evict_one()
        update = _Update(name, message, size)
        self._by_name[name] = update
        self._tiers[0][name] = update
        if size < self.min_size:
            self.min_size = size

    def _evict_one(self) -> None:
        """Full: drop the most-transmitted, oldest update (the least valuable one)."""
        for tier in reversed(self._tiers):
            if tier:
                name = next(iter(tier))
                del tier[name]
                del self._by_name[name]
                self.dropped += 1
                return

    def take(self, budget: int, limit: int, out: list[Any], max_count: int) -> int:
        """Append to ``out`` updates that fit in ``budget`` bytes; returns bytes used.

        Each packed update counts one transmission; at ``limit`` it leaves the queue.
        """
        min_size = self.min_size
        if not self._by_name or budget < min_size:
            return 0
        used = 0
        taken: list[_Update] = []
        misses = 0
        tiers = self._tiers
        full = False
        for tier in tiers:
            if not tier:
                continue
            for update in reversed(tier.values()):
                size = update.size
                if used + size > budget:
                    misses += 1
                    if misses > 8:
                        full = True
                        break
                    continue
                used += size
                taken.append(update)
                if len(taken) >= max_count or budget - used < min_size:
                    full = True
                    break
            if full:
                break
        if len(tiers) <= limit:
            tiers.extend({} for _ in range(limit + 1 - len(tiers)))
        by_name = self._by_name
        for update in taken:
            out.append(update.message)
            name = update.name
            t = update.tier
            del tiers[t][name]
            t += 1
            if t >= limit:
                del by_name[name]
            else:
                update.tier = t
                tiers[t][name] = update
        return used

    def prune(self, limit: int) -> None:
        """Drop updates already sent ``limit`` times (the limit fell as members left)."""
        tiers = self._tiers
        while len(tiers) > max(limit, 1):
            for name in tiers.pop():
                del self._by_name[name]

    def transmits(self, name: str) -> int | None:
        """How often the queued update about ``name`` was sent (None: not queued)."""
        update = self._by_name.get(name)
        return None if update is None else update.tier

    def pending(self) -> list[Any]:
        """Queued messages, least-sent and newest first (for tests and introspection)."""
        return [u.message for tier in self._tiers for u in reversed(tier.values())]
