"""Group commits from a node to its durable store, and what follows each commit.

Everything one pump of the node produced (deliveries with their payloads, the streams
they changed, membership changes) becomes one batch; the writer thread commits batches
submitted meanwhile together. Once a batch is durable, back on the loop: its
deliveries join the delivery log, our own broadcasts in it are released to the network
and their ``publish()`` callers get their answer. An origin killed right after the
answer has the message in its store, and sends it after its restart; one killed
before it never showed that seq to anyone, so reusing the number is safe.

A failed commit is kept and retried with the next one (a full disk may clear); until
then the node says so in health and refuses new broadcasts rather than acknowledge
what it could not keep.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable

from plumtree.core.state import DeliveryRecord, StreamState
from plumtree.store import Batch, StoreWriter

log = logging.getLogger("plumtree.store")

#: Seconds before a failed commit is tried again (with whatever came since).
RETRY_AFTER = 1.0


class Persistence:
    """The node's side of its store: batches out, durability back."""

    def __init__(
        self,
        writer: StoreWriter,
        loop: asyncio.AbstractEventLoop,
        on_durable: Callable[[list[DeliveryRecord], int], None],
    ) -> None:
        self.writer = writer
        self._loop = loop
        #: (entries for the log, highest own seq) of a committed batch, on the loop
        self._on_durable = on_durable
        self._batch = Batch()
        self._entries: list[DeliveryRecord] = []
        self._own = 0
        #: batches that failed, retried first, in order
        self._failed: deque[tuple[Batch, list[DeliveryRecord], int]] = deque()
        #: committed after an earlier batch failed: announced once that one is durable
        #: too, so the log and the releases stay in cursor order
        self._parked: list[tuple[list[DeliveryRecord], int]] = []
        self._in_flight = 0
        self._retry: asyncio.TimerHandle | None = None
        self.errors = 0
        self.last_error: str | None = None
        self.commits = 0
        self.commit_seconds = 0.0

    @property
    def failing(self) -> bool:
        return bool(self._failed)

    def delivery(self, record: DeliveryRecord, own_seq: int = 0) -> None:
        self._batch.deliveries.append(record)
        self._entries.append(record)
        if own_seq > self._own:
            self._own = own_seq

    def member(self, name: str, addr: str | None) -> None:
        self._batch.members[name] = addr

    def flush(self, streams: list[StreamState]) -> None:
        """Submit what this pump produced (nothing to do: nothing submitted)."""
        batch = self._batch
        batch.streams.extend(streams)
        if not (batch.deliveries or batch.streams or batch.members):
            return
        entries, own = self._entries, self._own
        self._batch, self._entries, self._own = Batch(), [], 0
        if self._failed:
            self._failed.append((batch, entries, own))  # after the ones that failed
            return
        self._submit(batch, entries, own)

    def _submit(self, batch: Batch, entries: list[DeliveryRecord], own: int) -> None:
        started = time.perf_counter()
        self._in_flight += 1
        future = self.writer.submit(batch)

        def done(f: concurrent.futures.Future[None]) -> None:
            self._loop.call_soon_threadsafe(self._committed, f, batch, entries, own, started)

        future.add_done_callback(done)

    def _committed(
        self,
        future: concurrent.futures.Future[None],
        batch: Batch,
        entries: list[DeliveryRecord],
        own: int,
        started: float,
    ) -> None:
        self._in_flight -= 1
        error = future.exception()
        if error is not None:
            self.errors += 1
            self.last_error = str(error) or type(error).__name__
            if not self._failed:
                log.error("store commit failed: %s; retrying", self.last_error)
            self._failed.appendleft((batch, entries, own))
            self._schedule_retry()
            return
        self.commits += 1
        self.commit_seconds = time.perf_counter() - started
        if self._failed:
            self._parked.append((entries, own))
            return
        if self._parked:
            for e, o in self._parked:
                entries = entries + e
                own = max(own, o)
            self._parked = []
            entries.sort(key=lambda entry: entry.cursor)
        if self.last_error is not None:
            log.warning("store commits work again")
            self.last_error = None
        self._on_durable(entries, own)

    def _schedule_retry(self) -> None:
        if self._retry is None:
            self._retry = self._loop.call_later(RETRY_AFTER, self._retry_failed)

    def _retry_failed(self) -> None:
        """Merge every failed batch into one, in order, and try it again."""
        self._retry = None
        if not self._failed or self._in_flight:
            if self._failed:
                self._schedule_retry()
            return
        merged = Batch()
        entries: list[DeliveryRecord] = []
        own = 0
        while self._failed:
            b, e, o = self._failed.popleft()
            merged.deliveries.extend(b.deliveries)
            merged.streams.extend(b.streams)
            merged.members.update(b.members)
            entries.extend(e)
            own = max(own, o)
        self._submit(merged, entries, own)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
