"""The node's group commits: batching, acknowledgement order, failures and recovery.

A fake writer stands in for the store's thread: it keeps every submitted batch and
completes its future when the test says, with success or an error."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from plumtree.core.state import DeliveryRecord, StreamState
from plumtree.runtime import persistence as mod
from plumtree.runtime.persistence import Persistence
from plumtree.store import Batch, StoreError


class FakeWriter:
    def __init__(self) -> None:
        self.submitted: list[tuple[Batch, concurrent.futures.Future[None]]] = []
        self.pending = 0

    def submit(self, batch: Batch) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.submitted.append((batch, future))
        return future


def record(cursor: int, seq: int | None = None, origin: str = "o") -> DeliveryRecord:
    return DeliveryRecord(cursor, origin, 1, seq or cursor, 1, "p", 1000.0, b"x" * 10)


class Harness:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.05) -> None:
        self.writer = FakeWriter()
        self.streams_taken: list[bool] = []
        self.version = 0
        self.durable: list[tuple[list[int], int]] = []
        self.p = Persistence(
            self.writer,  # type: ignore[arg-type]
            loop,
            self.take_streams,
            lambda entries, own: self.durable.append(([e.cursor for e in entries], own)),
            interval,
        )

    def take_streams(self, every: bool) -> list[StreamState]:
        self.streams_taken.append(every)
        self.version += 1
        return [StreamState("o", 1, self.version, self.version, 1)]

    def finish(self, i: int, error: Exception | None = None) -> None:
        _, future = self.writer.submitted[i]
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_deliveries_wait_for_company_and_leave_together() -> None:
    h = Harness(asyncio.get_running_loop(), interval=0.02)
    for k in range(1, 6):
        h.p.delivery(record(k))
        h.p.poke()
    assert h.writer.submitted == [], "no commit per delivery"
    await asyncio.sleep(0.05)
    assert len(h.writer.submitted) == 1
    batch, _ = h.writer.submitted[0]
    assert [d.cursor for d in batch.deliveries] == [1, 2, 3, 4, 5]
    h.finish(0)
    await settle()
    assert h.durable == [([1, 2, 3, 4, 5], 0)]


async def test_our_own_broadcasts_leave_at_the_end_of_the_turn_together() -> None:
    """Acknowledgements asked for in one loop turn share one commit, of the deliveries
    alone (no stream rewritten); the stream checkpoint follows on the interval."""
    h = Harness(asyncio.get_running_loop(), interval=0.02)
    h.p.delivery(record(1), own_seq=7)
    h.p.poke()
    h.p.delivery(record(2), own_seq=8)
    h.p.poke()
    assert h.writer.submitted == []
    await asyncio.sleep(0)
    assert len(h.writer.submitted) == 1, "one commit for both"
    batch, _ = h.writer.submitted[0]
    assert [d.cursor for d in batch.deliveries] == [1, 2] and batch.streams == []
    h.finish(0)
    await settle()
    assert h.durable == [([1, 2], 8)]
    await asyncio.sleep(0.05)
    assert len(h.writer.submitted) == 2 and h.writer.submitted[1][0].streams, "checkpoint"


async def test_a_big_batch_leaves_without_waiting_for_the_interval() -> None:
    h = Harness(asyncio.get_running_loop(), interval=10.0)
    for k in range(1, 1 + mod.BATCH_DELIVERIES):
        h.p.delivery(record(k))
    h.p.poke()
    await asyncio.sleep(0)
    assert len(h.writer.submitted) == 1


async def test_failed_commits_are_retried_together_with_current_states_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """b1 and b2 fail (their callbacks in order), b3 commits in between: nothing is
    announced until all of it is durable, then in cursor order; the retry carries the
    current stream states, never the stale ones of the failed batches (a review found
    them written in reverse, the older state last)."""
    monkeypatch.setattr(mod, "RETRY_AFTER", 0.01)
    h = Harness(asyncio.get_running_loop())
    for cursor in (1, 2, 3):
        h.p.delivery(record(cursor))
        h.p.commit()
    h.finish(0, StoreError("disk full"))
    h.finish(1, StoreError("disk full"))
    h.finish(2)
    await settle()
    assert h.p.failing and h.durable == []
    h.p.delivery(record(4))
    h.p.commit()  # while failing: waits for the retry
    assert len(h.writer.submitted) == 3
    await asyncio.sleep(0.05)
    retry, _ = h.writer.submitted[3]
    assert [d.cursor for d in retry.deliveries] == [1, 2, 4]
    assert h.streams_taken[-1] is True, "every stream's current state"
    assert retry.streams[-1].wm == h.version
    h.finish(3)
    await settle()
    assert h.durable == [([1, 2, 3, 4], 0)] and not h.p.failing


async def test_a_backlog_too_big_pauses_taking_messages_and_close_stops_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mod, "MAX_BACKLOG_BYTES", 25)
    monkeypatch.setattr(mod, "RETRY_AFTER", 0.01)
    h = Harness(asyncio.get_running_loop())
    h.p.delivery(record(1))
    h.p.commit()
    h.finish(0, StoreError("disk full"))
    await settle()
    assert not h.p.paused
    for cursor in (2, 3):
        h.p.delivery(record(cursor))
    assert h.p.paused, "30 unsaved bytes > 25"
    h.p.close()
    await asyncio.sleep(0.05)
    assert len(h.writer.submitted) == 1, "no retry after close"
