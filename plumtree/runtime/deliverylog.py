"""The node's delivery log: every delivery numbered by a per-node cursor, to resume from.

An application (``plumctl monitor --resume``, a consumer of ``GET /v1/deliveries``)
notes the cursor of the last delivery it handled and asks for what came after: nothing
lost, nothing twice, across its own restarts and, with a data dir, the node's too.

With a durable store an entry joins the log once its batch is committed (what a
consumer saw survives a kill -9 of the node); recent entries are answered from memory,
older ones from the store. Without a store the log is memory only, bounded: a consumer
that falls further behind than it is told so (``first`` is past its cursor), never
silently skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence

from plumtree.core.state import DeliveryRecord

#: Entries and payload bytes kept in memory (all of the log without a store; the recent
#: part with one): whichever bound is reached first evicts the oldest.
MEMORY_ENTRIES = 10_000
MEMORY_BYTES = 16 * 1024 * 1024


#: reads entries after a cursor from the durable store (None: no store)
StoreReader = Callable[[int, int], Sequence[DeliveryRecord]]


class DeliveryLog:
    """Cursor-numbered deliveries: appended in cursor order, read after a cursor."""

    def __init__(
        self,
        log_id: int,
        last: int = 0,
        reader: StoreReader | None = None,
        oldest: Callable[[], int | None] | None = None,
        capacity: int = MEMORY_ENTRIES,
        max_bytes: int = MEMORY_BYTES,
    ) -> None:
        #: changes when the node starts without its store (cursors start again at 1)
        self.log_id = log_id
        #: the last cursor readable (durable, with a store)
        self.last = last
        self._recent: deque[DeliveryRecord] = deque()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        self._reader = reader
        self._oldest = oldest
        self._changed = asyncio.Event()
        #: long polls waiting for what comes next (an append wakes them only then)
        self._waiting = 0
        self.closed = False

    @property
    def first(self) -> int:
        """The oldest cursor still readable (last + 1 when empty)."""
        if self._oldest is not None:
            oldest = self._oldest()
            if oldest is not None:
                return oldest
        return self._recent[0].cursor if self._recent else self.last + 1

    def append(self, entries: Sequence[DeliveryRecord]) -> None:
        for entry in entries:
            self.append_one(entry)

    def append_one(self, entry: DeliveryRecord) -> None:
        """One delivery, in cursor order (the per-delivery path of a node without a
        store: no allocation beyond the deque's)."""
        recent = self._recent
        recent.append(entry)
        payload = entry.payload
        if payload:
            self._bytes += len(payload)
        if len(recent) > self._capacity or self._bytes > self._max_bytes:
            while len(recent) > self._capacity or (
                self._bytes > self._max_bytes and len(recent) > 1
            ):
                old = recent.popleft().payload
                if old:
                    self._bytes -= len(old)
        if entry.cursor > self.last:
            self.last = entry.cursor
        if self._waiting:
            self._changed.set()
            self._changed = asyncio.Event()

    def read(self, after: int, limit: int) -> list[DeliveryRecord]:
        """Entries with cursor > ``after``, ascending, at most ``limit``."""
        recent = self._recent
        if recent and recent[0].cursor <= after + 1:
            start = max(0, after + 1 - recent[0].cursor)
            return [recent[i] for i in range(start, min(len(recent), start + limit))]
        if self._reader is not None:
            return list(self._reader(after, limit))
        return list(recent)[:limit]

    async def wait(self, after: int, timeout: float) -> None:
        """Return once something after ``after`` is readable, or after ``timeout``."""
        if self.last > after or timeout <= 0:
            return
        changed = self._changed
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        finally:
            self._waiting -= 1

    def close(self) -> None:
        """The node stops: wake every long poll (they answer that it is going away)."""
        self.closed = True
        self._changed.set()
