"""Lifeguard suspicion timers (LHA-Suspicion), after memberlist ``suspicion.go``.

A suspicion starts at the maximum timeout and shrinks toward the minimum as independent
confirmations (other members that also suspect the node) arrive, following

    timeout = max - log(n + 1) / log(k + 1) * (max - min),   never below min,

where ``n`` is the number of confirmations so far and ``k`` the number expected. The
member that raised the suspicion never counts as a confirmation, and each member counts
once. With ``k < 1`` (too few members to expect confirmations) the timeout is the minimum.
"""

from __future__ import annotations

import math


def suspicion_timeout(mult: int, n: int, probe_interval: float) -> float:
    """memberlist's minimum suspicion timeout: mult * max(1, log10(n)) * probe_interval."""
    scale = max(1.0, math.log10(n)) if n > 1 else 1.0
    return mult * scale * probe_interval


def remaining_suspicion_time(n: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """Seconds left after ``elapsed`` with ``n`` of ``k`` confirmations (may be <= 0)."""
    frac = math.log(n + 1.0) / math.log(k + 1.0) if k > 0 else 1.0
    raw = hi - frac * (hi - lo)
    timeout = math.floor(1000.0 * raw) / 1000.0  # memberlist rounds to milliseconds
    if timeout < lo:
        timeout = lo
    return timeout - elapsed


class Suspicion:
    """One suspected member's timer; ``deadline`` moves earlier as confirmations arrive."""

    __slots__ = ("confirmations", "deadline", "expected", "hi", "lo", "n", "start")

    def __init__(self, origin: str, expected: int, lo: float, hi: float, now: float) -> None:
        self.expected = expected
        self.n = 0
        self.lo = lo
        self.hi = hi
        self.start = now
        # insertion-ordered, never iterated in a way that matters; the origin is excluded
        self.confirmations: dict[str, None] = {origin: None}
        self.deadline = now + (hi if expected >= 1 else lo)

    def confirm(self, origin: str, now: float) -> bool:
        """Count an independent confirmation; True if it was new (and so worth re-gossip)."""
        if self.n >= self.expected or origin in self.confirmations:
            return False
        self.confirmations[origin] = None
        self.n += 1
        remaining = remaining_suspicion_time(
            self.n, self.expected, now - self.start, self.lo, self.hi
        )
        self.deadline = now + remaining if remaining > 0 else now
        return True
