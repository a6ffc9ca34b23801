"""Counters, gauges and histograms kept as plain numbers inside the core.

The runtime exports these to Prometheus at scrape time (so gauges are always current);
the simulator reads them directly. Names match the monitoring guide (docs/monitoring.md)
without the ``plumtree_`` prefix and ``_total`` suffix.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

GRAFT_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
MESSAGE_SIZE_BUCKETS = (100.0, 1024.0, 10240.0, 65536.0, 262144.0)
MESSAGE_HOPS_BUCKETS = (1.0, 2.0, 3.0, 5.0, 10.0)
IHAVE_BATCH_BUCKETS = (1.0, 4.0, 8.0, 16.0, 32.0, 64.0)
PROBE_RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    """Fixed-bucket histogram (Prometheus semantics: ``le`` upper bounds, plus +Inf)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(le, cumulative count), ...]`` ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(slots=True)
class PlumtreeCounters:
    """Monotonic counters (the monitoring guide's 14, then our operational extras)."""

    messages_broadcast: int = 0
    messages_delivered: int = 0
    messages_duplicate: int = 0
    gossip_sent: int = 0
    ihave_sent: int = 0
    graft_sent: int = 0
    prune_sent: int = 0
    peer_promotions: int = 0
    peer_demotions: int = 0
    peer_added: int = 0
    peer_removed: int = 0
    graft_success: int = 0
    graft_failed: int = 0
    graft_retries: int = 0
    # extras: every drop and every gap is counted somewhere
    gossip_received: int = 0
    ihave_received: int = 0
    graft_received: int = 0
    prune_received: int = 0
    graft_rate_limited: int = 0
    graft_answers_limited: int = 0
    graft_unknown: int = 0
    ihave_dropped: int = 0
    ihave_skipped: int = 0
    pending_grafts_dropped: int = 0
    cache_evictions: int = 0
    seen_evictions: int = 0
    optimizations: int = 0
    sync_sent: int = 0
    sync_received: int = 0
    messages_too_large: int = 0
    # exact delivery: repair, loss and what was refused
    messages_repaired: int = 0
    repair_sent: int = 0
    repair_duplicate: int = 0
    repair_requests: int = 0
    lost_unavailable: int = 0
    lost_limit: int = 0
    messages_rejected: int = 0
    streams_retired: int = 0
    own_seqs_skipped: int = 0
    messages_deferred: int = 0
    graft_premature: int = 0
    graft_undone: int = 0

    def items(self) -> Iterator[tuple[str, int]]:
        for f in fields(self):
            yield f.name, getattr(self, f.name)


#: Which counters the monitoring guide names (exported with exactly these names).
SEED_COUNTERS = (
    "messages_broadcast",
    "messages_delivered",
    "messages_duplicate",
    "gossip_sent",
    "ihave_sent",
    "graft_sent",
    "prune_sent",
    "peer_promotions",
    "peer_demotions",
    "peer_added",
    "peer_removed",
    "graft_success",
    "graft_failed",
    "graft_retries",
)


class PlumtreeHistograms:
    """The monitoring guide's four histograms with exactly its buckets."""

    __slots__ = ("graft_latency_seconds", "ihave_batch_size", "message_hops", "message_size_bytes")

    def __init__(self) -> None:
        self.graft_latency_seconds = Histogram(GRAFT_LATENCY_BUCKETS)
        self.message_size_bytes = Histogram(MESSAGE_SIZE_BUCKETS)
        self.message_hops = Histogram(MESSAGE_HOPS_BUCKETS)
        self.ihave_batch_size = Histogram(IHAVE_BATCH_BUCKETS)

    def items(self) -> Iterator[tuple[str, Histogram]]:
        for name in self.__slots__:
            yield name, getattr(self, name)


@dataclass(frozen=True, slots=True)
class PlumtreeGauges:
    """Current values, computed from the state machine on demand."""

    eager_peers: int
    lazy_peers: int
    total_peers: int
    cache_size: int
    cache_capacity: int
    ihave_queue_size: int
    ihave_queue_capacity: int
    pending_grafts: int
    seen_size: int
    ihave_timeout_seconds: float
    messages_missing: int = 0
    streams: int = 0
    store_bytes: int = 0
    store_bytes_capacity: int = 0
    #: age of the oldest payload held: how far back this node can repair others
    retention_seconds: float = 0.0
    #: how long the oldest unrepaired gap has lasted (filled in by the caller, who has
    #: the clock: see Plumtree.missing_for)
    messages_missing_seconds: float = 0.0
