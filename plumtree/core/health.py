"""The node health model of the monitoring guide (docs/monitoring.md) as pure functions.

Each check maps to a row of the monitoring guide's alert table or a health-check criterion: a
critical condition makes the node Unhealthy, a warning condition Degraded. The
thresholds live here once; the TUI colours and the Prometheus rules read them too.

One deliberate reading of the guide: a Plumtree that has pruned itself to a spanning tree
leaves most nodes with exactly one eager peer (the leaves). Their redundancy is the lazy
peers that announce every message, so "reduced redundancy" is judged on eager + lazy
peers, not on eager peers alone. Isolation (no eager peer at all) stays critical.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"

    @property
    def http_status(self) -> int:
        """HTTP code for /v1/health, as the monitoring guide's health-check endpoint does it."""
        return _HTTP[self]

    @property
    def rank(self) -> int:
        return _RANK[self]


_HTTP = {Status.HEALTHY: 200, Status.DEGRADED: 503, Status.UNHEALTHY: 500}
_RANK = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=lambda s: s.rank, default=Status.HEALTHY)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The monitoring guide's alert table (critical / warning) and health-check criteria."""

    eager_critical_below: int = 1
    eager_warning_below: int = 2
    total_peers_warning_below: int = 2
    graft_failed_per_min_critical: float = 20.0
    graft_failed_per_min_warning: float = 5.0
    graft_failure_ratio_degraded: float = 0.10
    graft_failure_ratio_min_sent: int = 10
    cache_ratio_critical: float = 0.95
    cache_ratio_warning: float = 0.80
    duplicate_ratio_critical: float = 0.50
    duplicate_ratio_warning: float = 0.30
    duplicate_ratio_min_delivered: int = 20
    pending_grafts_warning: int = 100
    backlog_ratio_warning: float = 0.90
    #: a gap nobody repaired for this long makes the node Degraded (the alert on
    #: plumtree_messages_missing waits 5 minutes; health says so sooner)
    missing_degraded_after: float = 60.0


SEED_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """Everything the model looks at; rates are over the recent window."""

    eager_peers: int
    lazy_peers: int
    cache_size: int
    cache_capacity: int
    pending_grafts: int
    ihave_queue_size: int = 0
    ihave_queue_capacity: int = 1
    graft_sent_in_window: int = 0
    graft_failed_in_window: int = 0
    delivered_in_window: int = 0
    duplicates_in_window: int = 0
    drops_in_window: int = 0
    window_seconds: float = 0.0
    #: messages given up as lost in the window, and the last loss in words
    lost_in_window: int = 0
    lost_detail: str = ""
    #: messages known to exist and not delivered here yet, and how long the oldest
    #: unrepaired gap has lasted
    messages_missing: int = 0
    missing_for: float = 0.0
    #: the durable store cannot commit (the node refuses broadcasts): and why
    store_failing: bool = False
    store_error: str = ""

    @property
    def total_peers(self) -> int:
        return self.eager_peers + self.lazy_peers

    def per_minute(self, count: int) -> float:
        return 60.0 * count / self.window_seconds if self.window_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    message: str


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: Status
    message: str
    checks: tuple[Check, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "message": self.message,
            "components": {
                c.name: {"status": c.status.value, "message": c.message} for c in self.checks
            },
        }


def evaluate(inputs: HealthInputs, t: Thresholds = SEED_THRESHOLDS) -> HealthReport:
    """Judge one node. The report's message lists every non-healthy check, worst first."""
    checks = [
        _connectivity(inputs, t),
        _redundancy(inputs, t),
        _graft_failures(inputs, t),
        _cache(inputs, t),
        _duplicates(inputs, t),
        _pending_grafts(inputs, t),
        _backlog(inputs, t),
        _delivery(inputs, t),
        _store(inputs),
    ]
    status = worst([c.status for c in checks])
    bad = sorted((c for c in checks if c.status != Status.HEALTHY), key=lambda c: -c.status.rank)
    message = "; ".join(c.message for c in bad) if bad else "all checks passed"
    return HealthReport(status, message, tuple(checks))


def _count(n: int, noun: str) -> str:
    """``1 eager peer``, ``2 eager peers``: messages read as written by a person."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _connectivity(i: HealthInputs, t: Thresholds) -> Check:
    if i.eager_peers < t.eager_critical_below:
        why = (
            "no peers at all" if i.total_peers == 0 else f"{_count(i.lazy_peers, 'lazy peer')} only"
        )
        return Check("connectivity", Status.UNHEALTHY, f"isolated: no eager peers ({why})")
    return Check("connectivity", Status.HEALTHY, _count(i.eager_peers, "eager peer"))


def _redundancy(i: HealthInputs, t: Thresholds) -> Check:
    if i.total_peers < t.total_peers_warning_below:
        return Check(
            "redundancy",
            Status.DEGRADED,
            f"reduced redundancy: {i.total_peers} peer(s) (eager+lazy < {t.total_peers_warning_below})",
        )
    peers = "peer" if i.total_peers == 1 else "peers"
    return Check(
        "redundancy", Status.HEALTHY, f"{i.eager_peers} eager + {i.lazy_peers} lazy {peers}"
    )


def _graft_failures(i: HealthInputs, t: Thresholds) -> Check:
    per_min = i.per_minute(i.graft_failed_in_window)
    if per_min > t.graft_failed_per_min_critical:
        return Check(
            "graft", Status.UNHEALTHY, f"tree repair failing: {per_min:.1f} Graft failures/min"
        )
    if per_min > t.graft_failed_per_min_warning:
        return Check(
            "graft", Status.DEGRADED, f"tree repair issues: {per_min:.1f} Graft failures/min"
        )
    if i.graft_sent_in_window >= t.graft_failure_ratio_min_sent:
        ratio = i.graft_failed_in_window / i.graft_sent_in_window
        if ratio >= t.graft_failure_ratio_degraded:
            return Check("graft", Status.DEGRADED, f"Graft failure rate {100 * ratio:.0f}%")
    return Check("graft", Status.HEALTHY, f"{per_min:.1f} Graft failures/min")


def _cache(i: HealthInputs, t: Thresholds) -> Check:
    ratio = i.cache_size / i.cache_capacity if i.cache_capacity else 0.0
    text = f"cache {100 * ratio:.0f}% full ({i.cache_size}/{i.cache_capacity})"
    if ratio > t.cache_ratio_critical:
        return Check("cache", Status.UNHEALTHY, f"memory pressure: {text}")
    if ratio > t.cache_ratio_warning:
        return Check("cache", Status.DEGRADED, text)
    return Check("cache", Status.HEALTHY, text)


def _duplicates(i: HealthInputs, t: Thresholds) -> Check:
    if i.delivered_in_window < t.duplicate_ratio_min_delivered:
        return Check("duplicates", Status.HEALTHY, "too few deliveries to judge")
    ratio = i.duplicates_in_window / i.delivered_in_window
    text = f"duplicate rate {100 * ratio:.0f}%"
    if ratio > t.duplicate_ratio_critical:
        return Check("duplicates", Status.UNHEALTHY, f"severe topology issues: {text}")
    if ratio > t.duplicate_ratio_warning:
        return Check("duplicates", Status.DEGRADED, text)
    return Check("duplicates", Status.HEALTHY, text)


def _pending_grafts(i: HealthInputs, t: Thresholds) -> Check:
    if i.pending_grafts > t.pending_grafts_warning:
        return Check(
            "pending_grafts", Status.DEGRADED, f"Graft backlog: {i.pending_grafts} pending"
        )
    return Check("pending_grafts", Status.HEALTHY, f"{i.pending_grafts} pending Grafts")


def _backlog(i: HealthInputs, t: Thresholds) -> Check:
    fill = i.ihave_queue_size / i.ihave_queue_capacity if i.ihave_queue_capacity else 0.0
    if i.drops_in_window > 0:
        return Check(
            "backlog", Status.DEGRADED, f"backlog: {i.drops_in_window} messages dropped recently"
        )
    if fill >= t.backlog_ratio_warning:
        return Check("backlog", Status.DEGRADED, f"backlog: IHave queue {100 * fill:.0f}% full")
    return Check("backlog", Status.HEALTHY, "no backlog")


def _delivery(i: HealthInputs, t: Thresholds) -> Check:
    """Exact delivery: a loss in the window, or a gap that lasts, is never hidden."""
    if i.lost_in_window > 0:
        detail = f" (last: {i.lost_detail})" if i.lost_detail else ""
        return Check(
            "delivery",
            Status.DEGRADED,
            f"lost {i.lost_in_window} message(s) in the last {i.window_seconds / 60:.0f} min{detail}",
        )
    if i.messages_missing and i.missing_for >= t.missing_degraded_after:
        return Check(
            "delivery",
            Status.DEGRADED,
            f"{i.messages_missing} message(s) missing for {i.missing_for:.0f}s, not repaired yet",
        )
    if i.messages_missing:
        return Check("delivery", Status.HEALTHY, f"repairing: {i.messages_missing} missing")
    return Check("delivery", Status.HEALTHY, "nothing missing")


def _store(i: HealthInputs) -> Check:
    """A node that cannot keep what it acknowledges must not acknowledge: critical."""
    if i.store_failing:
        why = f": {i.store_error}" if i.store_error else ""
        return Check("store", Status.UNHEALTHY, f"store failing{why}; broadcasts are refused")
    return Check("store", Status.HEALTHY, "store commits (or no store)")


class CounterWindow:
    """Samples of a few counters over time, to turn totals into recent rates (pure)."""

    __slots__ = ("_samples", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, tuple[int, ...]]] = deque()

    def record(self, now: float, values: tuple[int, ...]) -> None:
        self._samples.append((now, values))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def deltas(self, now: float, current: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
        """(seconds covered, increase of each counter) from the oldest kept sample to now."""
        if not self._samples:
            return 0.0, tuple(0 for _ in current)
        t0, v0 = self._samples[0]
        return now - t0, tuple(max(0, c - o) for c, o in zip(current, v0, strict=True))
