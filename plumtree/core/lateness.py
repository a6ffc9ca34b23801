"""How late eager copies arrive after an announcement: the adaptive IHave timer.

A fixed IHave timeout is wrong whenever the eager path is slower than the timeout (a
busy CPU, a long tree, a slow link): the timer fires, we Graft a message that was on its
way, the late eager copy arrives as a duplicate, its sender is pruned, and the tree
churns while the duplicates cost as much as flooding. The timer therefore follows the
measured lateness the way TCP's retransmission timer follows round trips (RFC 6298):
a smoothed mean plus four mean deviations, clamped to ``[floor, ceiling]``.

Samples are the time from the first IHave of an id to the eager copy, taken when it
arrives before the timer fires, and when it arrives *after* we grafted (a late
duplicate: the Graft was premature). Losses produce no late copy and thus no sample, so
packet loss does not stretch the timer; only slowness does.
"""

from __future__ import annotations

__all__ = ["LatenessEstimator"]

_ALPHA = 0.125  # weight of a new sample in the mean (RFC 6298)
_BETA = 0.25  # weight of a new sample in the deviation


class LatenessEstimator:
    """Smoothed lateness of eager copies, and the IHave timeout derived from it."""

    __slots__ = ("ceiling", "deviation", "floor", "mean", "samples", "timeout")

    def __init__(self, floor: float, ceiling: float) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self.mean: float | None = None
        self.deviation = 0.0
        self.samples = 0
        #: the current wait after an IHave before grafting
        self.timeout = floor

    def observe(self, lateness: float) -> None:
        lateness = max(0.0, lateness)
        self.samples += 1
        if self.mean is None:
            self.mean = lateness
            self.deviation = lateness / 2
        else:
            self.deviation += _BETA * (abs(lateness - self.mean) - self.deviation)
            self.mean += _ALPHA * (lateness - self.mean)
        self.timeout = min(self.ceiling, max(self.floor, self.mean + 4 * self.deviation))
