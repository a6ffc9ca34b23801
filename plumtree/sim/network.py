"""The simulated network: per-link latency, uniform loss, partitions, crashed nodes."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

_MASK64 = (1 << 64) - 1
_log = math.log


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Per-link base latency ~ log-uniform(lo, hi); per-message jitter ~ Exp(mean)."""

    name: str
    base_lo: float
    base_hi: float
    jitter_mean: float


LATENCY_PROFILES = {
    "local": LatencyProfile("local", 0.00005, 0.0002, 0.00002),
    "lan": LatencyProfile("lan", 0.0002, 0.001, 0.0001),
    "large": LatencyProfile("large", 0.0002, 0.002, 0.0002),
    "wan": LatencyProfile("wan", 0.010, 0.150, 0.005),
}


class Network:
    """Decides, for each message, whether and when it arrives."""

    def __init__(self, n: int, profile: LatencyProfile, loss: float, seed: int) -> None:
        self.n = n
        self.profile = profile
        self.loss = loss
        self._salt = _mix64(seed)
        self._stream_salt = _mix64(seed ^ 0x5EED)
        #: one random stream per sender (loss and jitter draws), made on first use: what
        #: a message meets depends only on its sender's history, not on the order in which
        #: the engine interleaves senders, so a run split across processes draws the same
        self._streams: list[Callable[[], float] | None] = [None] * n
        self._log_lo = math.log(profile.base_lo)
        self._log_span = math.log(profile.base_hi) - self._log_lo
        self.crashed: set[int] = set()
        #: extra processing delay for messages arriving at a slow node
        self.slow: dict[int, float] = {}
        #: partition group per node; messages only flow within a group (None: no partition)
        self.group: list[int] | None = None
        #: frozen nodes (SIGSTOP): node -> until when. Their messages and timers wait and
        #: are handled, in order, when it wakes (the engine defers them)
        self.frozen: dict[int, float] = {}
        self._links: dict[int, list[float]] = {}
        #: mean of the exponential per-message jitter
        self.jitter = profile.jitter_mean
        self.sent = 0
        self.dropped = 0

    def stream(self, src: int) -> Callable[[], float]:
        """The ``random()`` of node ``src``'s stream (for its messages' loss and jitter)."""
        draw = self._streams[src]
        if draw is None:
            draw = self._streams[src] = random.Random(_mix64(self._stream_salt ^ (src + 1))).random
        return draw

    @property
    def lookahead(self) -> float:
        """No message arrives sooner than this after it is sent (the lowest base
        latency): how far ahead of each other parallel parts of a run may safely go."""
        return self.profile.base_lo

    def base_latency(self, a: int, b: int) -> float:
        """Symmetric, fixed per link, derived from the seed (no N^2 table)."""
        lo, hi = (a, b) if a < b else (b, a)
        u = (_mix64(self._salt ^ (lo * self.n + hi)) >> 11) * (1.0 / (1 << 53))
        return math.exp(self._log_lo + u * self._log_span)

    def link(self, src: int, dst: int) -> list[float]:
        """The state of the directed link src -> dst: ``[base latency, last arrival]``.

        Shared with :meth:`delivery_time`; the engine's fast path reads and updates it.
        """
        key = src * self.n + dst
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = [self.base_latency(src, dst), 0.0]
        return link

    @property
    def plain(self) -> bool:
        """No partition and no slow node: only crashes and uniform loss apply (the case
        the engine's fast path handles itself)."""
        return self.group is None and not self.slow

    def delivery_time(self, src: int, dst: int, now: float) -> float | None:
        """Arrival time of a message sent now from src to dst, or None if it is lost.

        The engine repeats these steps inline when :attr:`plain` (same checks, same
        random draws in the same order); change both together.
        """
        self.sent += 1
        crashed = self.crashed
        if crashed and (dst in crashed or src in crashed):
            self.dropped += 1
            return None
        group = self.group
        if group is not None and group[src] != group[dst]:
            self.dropped += 1
            return None
        draw = self.stream(src)
        if self.loss and draw() < self.loss:
            self.dropped += 1
            return None
        link = self.link(src, dst)
        at = now + link[0] - self.jitter * _log(1.0 - draw())
        if self.slow:
            at += self.slow.get(dst, 0.0)
        # per-link FIFO, like the TCP connection the runtime uses between two peers
        if at < link[1]:
            at = link[1]
        link[1] = at
        return at

    def partition(self, groups: list[int] | None) -> None:
        self.group = groups
