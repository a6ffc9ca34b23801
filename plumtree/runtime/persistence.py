"""Group commits from a node to its durable store, and what follows each commit.

What the node delivers (deliveries with their payloads, membership changes) gathers in a
batch. A batch leaves at the end of the loop turn when someone waits on it (our own
broadcast, to be acknowledged; an in-process consumer), or when it is big,
with the deliveries alone; otherwise ``COMMIT_INTERVAL`` after its first entry, with the
stream states as they are then (a checkpoint: a restart replays the deliveries
committed after it). One commit carries many deliveries, and an acknowledgement's
commit does not rewrite every stream it touched. The writer thread commits batches submitted
meanwhile together. Once a batch is durable, back on the loop, ``on_durable`` gets its
deliveries (in cursor order) and the highest own seq in it.

A failed commit is kept and retried, with every batch failed since, as one transaction
carrying the current stream states: all of it lands or none does, and a stream state
never runs ahead of the rows it covers. Batches that committed after one that failed are
announced once it lands, in cursor order. While commits fail the node refuses
broadcasts (``failing``); past ``MAX_BACKLOG_BYTES`` of unsaved payloads it stops taking
new messages (``paused``): they stay missing and are repaired from peers once the store
works again, rather than held in memory without bound or lost from the log.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from plumtree.core.state import DeliveryRecord, StreamState
from plumtree.store import Batch, InlineWriter, StoreWriter

log = logging.getLogger("plumtree.store")

#: Seconds a batch waits for company unless someone waits on it: a commit costs tens of
#: microseconds plus a few per delivery, so at a hundred deliveries a second a node
#: commits five times, not a hundred. Only the delivery log's readers see the delay.
COMMIT_INTERVAL = 0.2
#: Deliveries that make a batch leave at once.
BATCH_DELIVERIES = 512
#: Seconds before a failed commit is tried again (with whatever came since).
RETRY_AFTER = 1.0
#: Unsaved payload bytes past which the node stops taking new messages.
MAX_BACKLOG_BYTES = 64 * 1024 * 1024


@dataclass
class _Pending:
    """A batch on its way: its order, the deliveries to announce, our highest own seq."""

    id: int
    batch: Batch
    entries: list[DeliveryRecord]
    own: int
    payload_bytes: int = 0
    streams: list[StreamState] = field(default_factory=list)


class Persistence:
    """The node's side of its store: batches out, durability back."""

    def __init__(
        self,
        writer: StoreWriter | InlineWriter,
        loop: asyncio.AbstractEventLoop,
        take_streams: Callable[[bool], list[StreamState]],
        on_durable: Callable[[list[DeliveryRecord], int], None],
        interval: float = COMMIT_INTERVAL,
    ) -> None:
        self.writer = writer
        self._loop = loop
        #: the changed stream states (True: every stream's), as the core has them now
        self._take_streams = take_streams
        self._on_durable = on_durable
        self.interval = interval
        self._batch = Batch()
        self._entries: list[DeliveryRecord] = []
        self._own = 0
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._next_id = 0
        self._in_flight = 0
        #: batches that failed, by id; and those committed after one that failed
        self._failed: list[_Pending] = []
        self._parked: list[_Pending] = []
        self._retry: asyncio.TimerHandle | None = None
        self.closed = False
        self.errors = 0
        self.last_error: str | None = None
        self.commits = 0
        self.commit_seconds = 0.0

    @property
    def failing(self) -> bool:
        return bool(self._failed)

    @property
    def settled(self) -> bool:
        """Everything handed to ``commit`` is durable: nothing failed, nothing in flight
        (nor gathered and not yet committed)."""
        return (
            not self._failed
            and not self._parked
            and self._in_flight == 0
            and not (self._batch.deliveries or self._batch.members)
        )

    @property
    def paused(self) -> bool:
        """Too much unsaved: take no new messages until the store works again."""
        return sum(p.payload_bytes for p in self._failed) + self._bytes > MAX_BACKLOG_BYTES

    # ------------------------------------------------------------------ input

    def delivery(self, record: DeliveryRecord, own_seq: int = 0) -> None:
        self._batch.deliveries.append(record)
        self._entries.append(record)
        self._bytes += len(record.payload or b"")
        if own_seq > self._own:
            self._own = own_seq

    def member(self, name: str, addr: str | None) -> None:
        self._batch.members[name] = addr

    def poke(self, urgent: bool = False) -> None:
        """After a pump: commit at the end of this loop turn if someone waits (or the
        batch is big: every acknowledgement asked for in the same turn shares that
        commit), else soon."""
        if self.closed:
            return
        if urgent or self._own or len(self._batch.deliveries) >= BATCH_DELIVERIES:
            if self._soon is None:
                self._soon = self._loop.call_soon(self._commit_soon)
        elif self._timer is None:
            self._timer = self._loop.call_later(self.interval, self.commit)

    def _commit_soon(self) -> None:
        self._soon = None
        self.commit(streams=False)

    def commit(self, streams: bool = True) -> None:
        """Send the batch on its way. ``streams``: with the stream states as they are now
        (a checkpoint); without, the deliveries alone, which a restart replays on the
        last checkpoint: an acknowledgement's commit stays small whatever the number of
        streams the batch touched."""
        if streams and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.closed:
            return
        batch = self._batch
        if streams:
            batch.streams.extend(self._take_streams(False))
        elif self._timer is None and batch.deliveries:
            # the streams these deliveries changed are saved by the next checkpoint
            self._timer = self._loop.call_later(self.interval, self.commit)
        if not (batch.deliveries or batch.streams or batch.members):
            return
        self._next_id += 1
        pending = _Pending(self._next_id, batch, self._entries, self._own, self._bytes)
        self._batch, self._entries, self._own, self._bytes = Batch(), [], 0, 0
        if self._failed:
            self._failed.append(pending)  # goes with the retry, after the ones that failed
            return
        self._submit(pending)

    # ------------------------------------------------------------------ commits

    def _submit(self, pending: _Pending) -> None:
        started = time.perf_counter()
        self._in_flight += 1
        future = self.writer.submit(pending.batch)

        if future.done():  # committed in this thread (InlineWriter): no hop
            self._committed(future, pending, started)
            return

        def done(f: concurrent.futures.Future[None]) -> None:
            self._loop.call_soon_threadsafe(self._committed, f, pending, started)

        future.add_done_callback(done)

    def _committed(
        self, future: concurrent.futures.Future[None], pending: _Pending, started: float
    ) -> None:
        self._in_flight -= 1
        error = future.exception()
        if error is not None:
            self.errors += 1
            self.last_error = str(error) or type(error).__name__
            if not self._failed:
                log.error("store commit failed: %s; retrying", self.last_error)
            bisect.insort(self._failed, pending, key=lambda p: p.id)
            self._schedule_retry()
            return
        self.commits += 1
        self.commit_seconds = time.perf_counter() - started
        if self._failed:
            self._parked.append(pending)  # durable, announced once the failed ones are
            return
        done = [pending, *self._parked]
        self._parked = []
        if self.last_error is not None:
            log.warning("store commits work again")
            self.last_error = None
        entries = sorted((e for p in done for e in p.entries), key=lambda e: e.cursor)
        self._on_durable(entries, max(p.own for p in done))

    def _schedule_retry(self) -> None:
        if self._retry is None and not self.closed:
            self._retry = self._loop.call_later(RETRY_AFTER, self._retry_failed)

    def _retry_failed(self) -> None:
        """Every failed batch, in order, as one transaction with the current stream
        states (every stream's: the failed ones' states are stale by now)."""
        self._retry = None
        if self.closed or not self._failed:
            return
        if self._in_flight:
            self._schedule_retry()
            return
        self.commit()  # what came since joins the failed ones: the states cover it too
        failed, self._failed = self._failed, []
        merged = Batch()
        for p in failed:
            merged.deliveries.extend(p.batch.deliveries)
            merged.members.update(p.batch.members)
        merged.streams.extend(self._take_streams(True))
        self._next_id += 1
        self._submit(
            _Pending(
                self._next_id,
                merged,
                [e for p in failed for e in p.entries],
                max(p.own for p in failed),
                sum(p.payload_bytes for p in failed),
            )
        )

    def close(self) -> None:
        """No more commits or retries (the writer commits what it was given)."""
        self.closed = True
        for handle in (self._timer, self._retry, self._soon):
            if handle is not None:
                handle.cancel()
        self._timer = self._retry = self._soon = None
