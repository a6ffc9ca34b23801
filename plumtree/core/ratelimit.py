"""Per-peer token buckets (time passed in), used to bound Graft handling per peer: in
Grafts per second, and in payload bytes sent per second answering them."""

from __future__ import annotations


class TokenBucket:
    """Classic token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available; returns whether the action is allowed."""
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def spend(self, now: float, cost: float) -> bool:
        """Spend ``cost`` while any token is left (the balance may go negative and is
        paid back by the refill): so an item larger than the burst still passes, and
        over any interval ``t`` at most ``burst + rate * t + one item`` is spent."""
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens <= 0:
            return False
        self.tokens -= cost
        return True

    def full_at(self) -> float:
        """When the bucket is full again (idle buckets can be dropped after that)."""
        return self.updated + (self.burst - self.tokens) / self.rate


class RateLimiter:
    """A token bucket per key, created on demand and forgotten once full again."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def spend(self, key: str, now: float, cost: float) -> bool:
        """:meth:`TokenBucket.spend` on ``key``'s bucket."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.spend(now, cost)

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)

    def gc(self, now: float) -> None:
        """Drop buckets that have refilled: they behave exactly like new ones."""
        for key in [k for k, b in self._buckets.items() if b.full_at() <= now]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
