"""The small SWIM building blocks: suspicion formula, awareness, transmit queue, formulas."""

from __future__ import annotations

import pytest

from plumtree.core.awareness import Awareness
from plumtree.core.dissemination import TransmitQueue, retransmit_limit
from plumtree.core.suspicion import Suspicion, remaining_suspicion_time, suspicion_timeout
from plumtree.core.swim import pushpull_scale


@pytest.mark.parametrize(
    ("n", "k", "elapsed", "expected"),
    [
        # memberlist suspicion_test.go: min 2 s, max 30 s, k = 3
        (0, 3, 0.0, 30.0),
        (1, 3, 2.0, 14.0),
        (2, 3, 3.0, 4.81),
        (3, 3, 4.0, -2.0),
        (4, 3, 5.0, -3.0),
        (5, 3, 10.0, -8.0),
    ],
)
def test_remaining_suspicion_time_matches_memberlist(
    n: int, k: int, elapsed: float, expected: float
) -> None:
    assert remaining_suspicion_time(n, k, elapsed, 2.0, 30.0) == pytest.approx(expected)


def test_suspicion_timeout_formula() -> None:
    # SuspicionMult * max(1, log10 N) * ProbeInterval (the anchors' derived LAN table)
    assert suspicion_timeout(4, 10, 1.0) == pytest.approx(4.0)
    assert suspicion_timeout(4, 100, 1.0) == pytest.approx(8.0)
    assert suspicion_timeout(4, 1000, 1.0) == pytest.approx(12.0)
    assert suspicion_timeout(4, 3, 1.0) == pytest.approx(4.0)  # log10(3) < 1
    assert suspicion_timeout(4, 0, 1.0) == pytest.approx(4.0)


def test_suspicion_shrinks_with_independent_confirmations() -> None:
    s = Suspicion("origin", expected=3, lo=2.0, hi=30.0, now=100.0)
    assert s.deadline == pytest.approx(130.0)
    assert not s.confirm("origin", 101.0)  # the accuser is not a confirmation
    assert s.confirm("b", 102.0)
    assert s.deadline == pytest.approx(116.0)
    assert not s.confirm("b", 102.5)  # each member counts once
    assert s.confirm("c", 103.0)
    assert s.deadline == pytest.approx(107.81)
    assert s.confirm("d", 104.0)
    assert s.deadline == pytest.approx(104.0)  # past the minimum: due now
    assert not s.confirm("e", 104.0)  # enough confirmations: stop counting


def test_suspicion_without_expected_confirmations_uses_minimum() -> None:
    s = Suspicion("a", expected=0, lo=4.0, hi=24.0, now=0.0)
    assert s.deadline == 4.0
    assert not s.confirm("b", 1.0)


def test_awareness_is_clamped_and_scales() -> None:
    a = Awareness(8)
    assert a.scale(0.5) == 0.5
    assert a.apply_delta(-1) == 0
    assert a.apply_delta(3) == 3
    assert a.scale(1.0) == 4.0
    assert a.apply_delta(100) == 7
    assert a.scale(1.0) == 8.0
    assert a.apply_delta(-2) == 5


def test_retransmit_limit_and_pushpull_scale() -> None:
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 100) == 12
    assert retransmit_limit(4, 1000) == 16
    assert retransmit_limit(4, 1) == 4
    assert pushpull_scale(30.0, 10) == 30.0
    assert pushpull_scale(30.0, 32) == 30.0
    assert pushpull_scale(30.0, 100) == 90.0
    assert pushpull_scale(30.0, 1000) == 180.0
    assert pushpull_scale(30.0, 10_000) == 300.0


def test_queue_sends_least_transmitted_then_newest_first() -> None:
    q = TransmitQueue(capacity=100)
    for name in "abc":
        q.enqueue(name, f"msg-{name}", 10)
    out: list[str] = []
    q.take(25, limit=5, out=out, max_count=100)
    assert out == ["msg-c", "msg-b"]  # newest first, 2 fit in 25 bytes
    out = []
    q.take(25, limit=5, out=out, max_count=100)
    assert out[0] == "msg-a"  # never sent beats sent once
    assert q.transmits("a") == 1
    q.enqueue("d", "msg-d", 10)
    out = []
    q.take(1000, limit=5, out=out, max_count=100)
    assert out[0] == "msg-d"


def test_queue_respects_limit_and_replacement() -> None:
    q = TransmitQueue(capacity=100)
    q.enqueue("a", "old", 10)
    q.enqueue("a", "new", 12)  # newer news about a replaces the old
    assert len(q) == 1
    sent = 0
    for _ in range(10):
        out: list[str] = []
        q.take(100, limit=3, out=out, max_count=100)
        assert out in ([], ["new"])
        sent += len(out)
    assert sent == 3
    assert len(q) == 0


def test_queue_is_bounded_and_counts_drops() -> None:
    q = TransmitQueue(capacity=3)
    for i in range(5):
        q.enqueue(f"m{i}", i, 10)
    assert len(q) == 3
    assert q.dropped == 2
    out: list[int] = []
    q.take(1000, limit=5, out=out, max_count=100)
    assert sorted(out) == [2, 3, 4]  # the oldest were dropped


def test_queue_max_count_and_prune() -> None:
    q = TransmitQueue(capacity=100)
    for i in range(10):
        q.enqueue(f"m{i}", i, 1)
    out: list[int] = []
    q.take(1000, limit=10, out=out, max_count=4)
    assert len(out) == 4
    for _ in range(3):
        q.take(1000, limit=10, out=[], max_count=100)
    q.prune(2)  # the cluster shrank: updates sent twice or more are done
    assert all((q.transmits(f"m{i}") or 0) < 2 for i in range(10) if f"m{i}" in q)
