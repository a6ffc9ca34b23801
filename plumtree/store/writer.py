"""Group commits on one writer thread, so the event loop never waits for the disk.

A commit costs about the same for one delivery as for hundreds (the fsync, the WAL
frame, the transaction), so every batch submitted while a commit runs goes into the
next transaction together: under load the commit rate stays flat and the batches grow.
The queue is bounded in bytes: past the bound a submit fails at once and is counted,
and the runtime decides what to do (nothing waits, nothing is dropped silently).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from plumtree.core.state import StreamState
from plumtree.store.sqlite import ROW_OVERHEAD, Batch, NodeStore, StoreError


def batch_bytes(batch: Batch) -> int:
    """What a batch holds in memory, roughly: payloads plus a row's overhead per record
    (so batches of streams or members alone are bounded as well)."""
    payload = sum(len(d.payload) for d in batch.deliveries if d.payload is not None)
    records = len(batch.deliveries) + len(batch.streams) + len(batch.members)
    return payload + ROW_OVERHEAD * records


@dataclass(slots=True)
class _Pending:
    batch: Batch
    future: Future[None]
    size: int


def _merge(batches: list[Batch]) -> Batch:
    """One batch doing what the given ones do in order: a stream saved by several keeps
    only its last state (a floor only rises, so the last one's is the highest), and the
    last change of a member wins, as in separate transactions."""
    if len(batches) == 1:
        return batches[0]
    merged = Batch()
    streams: dict[tuple[str, int], StreamState] = {}
    for b in batches:
        merged.deliveries.extend(b.deliveries)
        for s in b.streams:
            streams[(s.origin, s.epoch)] = s
        merged.members.update(b.members)
    merged.streams = list(streams.values())
    return merged


class StoreWriter:
    """A single writer thread doing group commits: every batch submitted while the
    previous commit ran goes into the next transaction together.

    Futures complete in submit order: with None once their batch is committed, or with
    the commit's exception (every batch of that group fails; the thread lives on). A
    future cancelled before its group is taken is not written. ``close()`` does not close
    the store: its owner does, after this.
    """

    def __init__(self, store: NodeStore, max_pending_bytes: int = 256 * 1024 * 1024) -> None:
        self.store = store
        self.max_pending_bytes = max_pending_bytes
        self._cond = threading.Condition(threading.Lock())
        #: submitted, not yet taken by the thread
        self._queue: deque[_Pending] = deque()
        #: bytes submitted and not yet committed (queued, or in the running commit)
        self.pending_bytes = 0
        self._closing = False
        self.commits = 0
        self.rows_written = 0
        #: submits refused (backlog full, or after close)
        self.rejected = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="plumtree-store", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Batches waiting for a commit to start."""
        return len(self._queue)

    @property
    def alive(self) -> bool:
        """The thread still runs (after ``close``: it is still committing)."""
        return self._thread.is_alive()

    def submit(self, batch: Batch) -> Future[None]:
        """Queue ``batch`` for the next group commit; never blocks."""
        future: Future[None] = Future()
        size = batch_bytes(batch)
        error: StoreError | None = None
        with self._cond:
            if self._closing:
                error = StoreError("store writer is closed")
            elif self.pending_bytes + size > self.max_pending_bytes:
                error = StoreError(
                    f"store writer backlog full ({self.pending_bytes:,} bytes waiting, limit "
                    f"{self.max_pending_bytes:,}): the disk is slower than the deliveries"
                )
            else:
                self._queue.append(_Pending(batch, future, size))
                self.pending_bytes += size
                self._cond.notify()
            if error is not None:
                self.rejected += 1
        if error is not None:
            future.set_exception(error)  # outside the lock: callbacks may submit again
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, and everything queued is committed
                group = list(self._queue)
                self._queue.clear()
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        # a future cancelled by now is not written; once running it can't be cancelled
        live = [p for p in group if p.future.set_running_or_notify_cancel()]
        error: BaseException | None = None
        batch = _merge([p.batch for p in live]) if live else None
        if batch is not None:
            try:
                self.store.write(batch)
            except Exception as e:
                error = e
        with self._cond:
            self.pending_bytes -= sum(p.size for p in group)
        if batch is None:
            return
        if error is not None:
            self.last_error = str(error)
            for p in live:
                p.future.set_exception(error)
            return
        self.commits += 1
        self.rows_written += len(batch.deliveries)
        for p in live:
            p.future.set_result(None)

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is queued and stop the thread (waits at most ``timeout``)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


class InlineWriter:
    """The same interface, committing in the caller's thread, at once.

    For an event loop whose batches are already grouped (the node gathers a pump's worth,
    or ``commit_interval``'s): a commit of a few hundred rows costs well under a
    millisecond of the loop's time, while handing each batch to a thread cost a
    wake-up on both sides and made every acknowledgement wait for the thread to be
    scheduled on a busy machine. With fsync full a commit waits for the disk: use the
    thread then (the node does).
    """

    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self.commits = 0
        self.rows_written = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        return 0

    @property
    def alive(self) -> bool:
        return False

    def submit(self, batch: Batch) -> Future[None]:
        future: Future[None] = Future()
        if self._closed:
            self.rejected += 1
            future.set_exception(StoreError("store writer is closed"))
            return future
        try:
            self.store.write(batch)
        except Exception as e:
            self.last_error = str(e)
            future.set_exception(e)
            return future
        self.commits += 1
        self.rows_written += len(batch.deliveries)
        future.set_result(None)
        return future

    def close(self, timeout: float = 5.0) -> None:
        self._closed = True
