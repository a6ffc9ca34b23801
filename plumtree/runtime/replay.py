"""Refusing replayed authenticated messages: a time window plus the nonces seen in it.

Every sealed datagram and frame carries its send time and a random 96-bit nonce, both
authenticated (``runtime/crypto.py``). A receiver accepts a message only if

* its stamp is within ``PAST`` seconds before and ``FUTURE`` seconds after the receiver's
  clock (else *stale*), and
* its nonce was not accepted before (else *replay*).

Clock assumption: members' wall clocks agree within a few seconds (NTP); a sender whose
clock is more than ``FUTURE`` ahead of, or ``PAST`` behind, a receiver (minus the transit
time) is refused as stale, and counted. A message that waited longer than ``PAST`` in
a socket buffer (a receiver frozen that long) is refused too; anti-entropy repairs
whatever it carried.

Memory is bounded: nonces are remembered in arrival order and forgotten once their stamp
leaves the window; beyond ``capacity`` the oldest is forgotten early and ``floor`` rises
to its stamp, so a stamp at or below ``floor`` is refused as stale (we no longer know
whether it was seen). The window then narrows to what the set can hold; it never lets a
replay through.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

#: Seconds a message may be older than the receiver's clock (transit + clock skew).
PAST = 30.0
#: Seconds a message may be ahead of the receiver's clock (clock skew).
FUTURE = 30.0
#: Nonces remembered at most (about 200 bytes each).
CAPACITY = 65_536

Verdict = Literal["stale", "replay"] | None


class ReplayGuard:
    """``check(sent_at, nonce, now)``: None (accept, remembered) or why it is refused."""

    def __init__(
        self, past: float = PAST, future: float = FUTURE, capacity: int = CAPACITY
    ) -> None:
        self.past = past
        self.future = future
        self.capacity = capacity
        self.floor = float("-inf")
        self._seen: dict[bytes, float] = {}
        self._order: deque[tuple[float, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, sent_at: float, nonce: bytes, now: float) -> Verdict:
        self._expire(now)
        if sent_at < now - self.past or sent_at > now + self.future or sent_at <= self.floor:
            return "stale"
        if nonce in self._seen:
            return "replay"
        self._seen[nonce] = sent_at
        self._order.append((sent_at, nonce))
        while len(self._order) > self.capacity:
            stamp, old = self._order.popleft()
            self._seen.pop(old, None)
            self.floor = max(self.floor, stamp)
        return None

    def _expire(self, now: float) -> None:
        # arrival order is nearly stamp order; an entry stamped in the future only delays
        # forgetting the ones behind it (the capacity still bounds them)
        order, horizon = self._order, now - self.past
        while order and order[0][0] < horizon:
            self._seen.pop(order.popleft()[1], None)
