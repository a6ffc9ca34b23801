"""Lifeguard's Local Health Awareness (LHA): how much this node should distrust itself.

The score is 0 (healthy) .. ``max_multiplier - 1``. Failed probes with missing Nacks and
being suspected raise it, successful probes lower it. While it is high the node stretches
its probe interval and probe timeout by ``score + 1``, so a slow node (busy CPU, lossy
uplink) stops accusing healthy members of being dead (memberlist ``awareness.go``).
"""

from __future__ import annotations


class Awareness:
    """A clamped integer health score that scales timeouts."""

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max(1, max_multiplier)
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` (clamped to 0 .. max-1); returns the new score."""
        score = self.score + delta
        top = self.max_multiplier - 1
        self.score = 0 if score < 0 else top if score > top else score
        return self.score

    def scale(self, timeout: float) -> float:
        """``timeout`` stretched by the current health score."""
        return timeout * (self.score + 1)
