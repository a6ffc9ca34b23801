"""The monitoring guide's health score, key queries and alert-threshold colours, from two scrapes (pure).

One implementation for ``plumctl health``, ``plumctl metrics`` and ``plumctl top``: each
takes two :class:`~plumctl.promtext.Scrape` of a node (``prev`` may be ``None`` on the
first poll) and gets numbers, reasons and levels that agree everywhere. Thresholds are
read from :data:`plumtree.core.health.SEED_THRESHOLDS`; no number is repeated here.

Unknown is ``None`` throughout (older node without a metric, first poll, empty window):
shown as "n/a", never a crash and never a made-up 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from plumctl.promql import histogram_deltas, histogram_quantile, rate, series_increase, window
from plumctl.promtext import Buckets, Scrape
from plumtree.core.health import SEED_THRESHOLDS, Status, Thresholds

#: ``plumtree_eager_peers / 3`` in the monitoring guide's Cluster Health Score.
SCORE_EAGER_TARGET = 3.0
#: ``+ 0.001`` in the monitoring guide's formula: avoids 0/0 when no Graft was sent.
SCORE_GRAFT_EPSILON = 0.001

EAGER = "plumtree_eager_peers"
GRAFT_SENT = "plumtree_graft_sent_total"
GRAFT_FAILED = "plumtree_graft_failed_total"


# -- health score ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Score:
    """One node's Cluster Health Score in [0, 1], or ``None`` when an input is unknown.

    ``reasons`` says, in words, each factor that pulled it below 1 (or why it is
    unknown); ``inputs`` are the numbers used, so ``-o json`` stays explainable.
    """

    value: float | None
    reasons: tuple[str, ...] = ()
    inputs: Mapping[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.value, "reasons": list(self.reasons), "inputs": dict(self.inputs)}


def health_score(prev: Scrape | None, cur: Scrape) -> Score:
    """The monitoring guide's Cluster Health Score for one node, over the window between two scrapes.

    ``clamp_max((eager / 3) * (1 - rate(graft_failed) / (rate(graft_sent) + 0.001)), 1)``,
    clamped at 0 too (the design's [0, 1]: failures above sends make the factor negative).
    """
    return score_from(
        cur.value(EAGER),
        rate(prev, cur, GRAFT_SENT),
        rate(prev, cur, GRAFT_FAILED),
        window(prev, cur),
    )


def score_from(
    eager: float | None,
    sent: float | None,
    failed: float | None,
    dt: float | None,
    *,
    no_window: str = "no rate window yet (needs two scrapes some time apart)",
) -> Score:
    """The score of :func:`health_score` from its inputs, however they were measured.

    ``eager`` is the current ``plumtree_eager_peers``, ``sent`` and ``failed`` the Graft
    rates per second over a window of ``dt`` seconds (``None``: unknown, ``dt`` None: no
    window at all, explained by ``no_window``). ``plumctl health --prometheus`` gets the
    same numbers from PromQL and uses this for the words.
    """
    inputs: dict[str, float | None] = {
        "eager_peers": eager,
        "graft_sent_per_s": sent,
        "graft_failed_per_s": failed,
        "window_s": dt,
    }
    unknown: list[str] = []
    if eager is None:
        unknown.append(f"{EAGER} not exported")
    if dt is None:
        unknown.append(no_window)
    else:
        unknown.extend(
            f"{n} not exported"
            for n, r in ((GRAFT_SENT, sent), (GRAFT_FAILED, failed))
            if r is None
        )
    if unknown or eager is None or sent is None or failed is None:
        return Score(None, tuple(f"score unknown: {u}" for u in unknown), inputs)

    eager_factor = eager / SCORE_EAGER_TARGET
    graft_factor = 1.0 - failed / (sent + SCORE_GRAFT_EPSILON)
    value = min(max(eager_factor * graft_factor, 0.0), 1.0)
    inputs["eager_factor"] = eager_factor
    inputs["graft_factor"] = graft_factor
    return Score(value, score_reasons(value, eager, sent, failed), inputs)


def score_reasons(value: float, eager: float, sent: float, failed: float) -> tuple[str, ...]:
    """In words, each factor that pulled a score of ``value`` below 1."""
    if value >= 1.0:
        return ()
    eager_factor = eager / SCORE_EAGER_TARGET
    graft_factor = 1.0 - failed / (sent + SCORE_GRAFT_EPSILON)
    reasons: list[str] = []
    if eager_factor < 1.0:
        reasons.append(
            f"eager peers {_num(eager)} of {_num(SCORE_EAGER_TARGET)} (x{eager_factor:.2f})"
        )
    if graft_factor < 1.0:
        reasons.append(
            f"Graft failures {failed:.1f}/s of {sent:.1f}/s sent (x{max(graft_factor, 0.0):.2f})"
        )
    return tuple(reasons)


class ClusterScore(NamedTuple):
    """The cluster's score: the minimum over nodes, who is at it, and why."""

    value: float | None
    worst: tuple[str, ...]
    reasons: tuple[str, ...]


def cluster_score(scores: Mapping[str, Score]) -> ClusterScore:
    """Minimum over the nodes with a known score; reasons of the worst node(s) and unknowns.

    A node whose score is unknown does not hide the others, but is named in the reasons.
    ``value`` is ``None`` only when no node has a known score.
    """
    known = {n: s.value for n, s in scores.items() if s.value is not None}
    reasons: list[str] = []
    worst: tuple[str, ...] = ()
    low: float | None = None
    if known:
        low = min(known.values())
        worst = tuple(sorted(n for n, v in known.items() if v == low))
        reasons.extend(f"{n}: {r}" for n in worst for r in scores[n].reasons)
    for n in sorted(n for n, s in scores.items() if s.value is None):
        why = "; ".join(r.removeprefix("score unknown: ") for r in scores[n].reasons) or "unknown"
        reasons.append(f"{n}: score unknown ({why})")
    return ClusterScore(low, worst, tuple(reasons))


# -- key queries -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRates:
    """The monitoring guide's key queries and the ``top`` columns for one node. ``None`` = unknown.

    Rates are per second over ``window_s`` unless the name says otherwise; percentages
    are 0-100; ``cache_utilisation`` is a ratio 0-1.
    """

    window_s: float | None
    delivered_per_s: float | None
    broadcast_per_s: float | None
    duplicate_per_s: float | None
    duplicate_pct: float | None
    delivered_in_window: float | None
    graft_sent_per_s: float | None
    graft_failed_per_min: float | None
    graft_success_pct: float | None
    graft_p99_s: float | None
    hops_p50: float | None
    hops_p99: float | None
    cache_utilisation: float | None
    eager_peers: float | None
    lazy_peers: float | None
    total_peers: float | None
    pending_grafts: float | None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def key_queries(prev: Scrape | None, cur: Scrape) -> NodeRates:
    """Evaluate the key queries for one node; gauges come from ``cur`` alone."""
    return _key_queries(prev, cur)[0]


def rates_and_score(prev: Scrape | None, cur: Scrape) -> tuple[NodeRates, Score]:
    """``(key_queries(prev, cur), health_score(prev, cur))``, each increase computed once.

    What ``top`` folds in for every node on every poll; the numbers are exactly those of
    the two functions (the same increases divided by the same window).
    """
    rates, failed_rate = _key_queries(prev, cur)
    return rates, score_from(rates.eager_peers, rates.graft_sent_per_s, failed_rate, rates.window_s)


def _key_queries(prev: Scrape | None, cur: Scrape) -> tuple[NodeRates, float | None]:
    """The key queries, and the Graft failure rate per second the score needs."""
    dt = window(prev, cur)

    def increase(name: str) -> float | None:
        return series_increase(prev, cur, name) if dt is not None else None

    def per_s(inc: float | None) -> float | None:
        return None if inc is None or dt is None else inc / dt

    def deltas(histogram: str) -> Buckets:
        return histogram_deltas(prev, cur, histogram) if dt is not None else []

    delivered = increase("plumtree_messages_delivered_total")
    duplicates = increase("plumtree_messages_duplicate_total")
    success = increase("plumtree_graft_success_total")
    failed_inc = increase(GRAFT_FAILED)
    failed_rate = per_s(failed_inc)
    size = cur.value("plumtree_cache_size")
    capacity = cur.value("plumtree_cache_capacity")
    hops = deltas("plumtree_message_hops")
    rates = NodeRates(
        window_s=dt,
        delivered_per_s=per_s(delivered),
        broadcast_per_s=per_s(increase("plumtree_messages_broadcast_total")),
        duplicate_per_s=per_s(duplicates),
        duplicate_pct=(
            100.0 * duplicates / delivered if delivered and duplicates is not None else None
        ),
        delivered_in_window=delivered,
        graft_sent_per_s=per_s(increase(GRAFT_SENT)),
        graft_failed_per_min=None if failed_rate is None else 60.0 * failed_rate,
        graft_success_pct=(
            100.0 * success / (success + failed_inc)
            if success is not None and failed_inc is not None and success + failed_inc > 0
            else None
        ),
        graft_p99_s=_quantile(0.99, deltas("plumtree_graft_latency_seconds"), dt),
        hops_p50=_quantile(0.50, hops, dt),
        hops_p99=_quantile(0.99, hops, dt),
        cache_utilisation=size / capacity if size is not None and capacity else None,
        eager_peers=cur.value(EAGER),
        lazy_peers=cur.value("plumtree_lazy_peers"),
        total_peers=cur.value("plumtree_total_peers"),
        pending_grafts=cur.value("plumtree_pending_grafts"),
    )
    return rates, failed_rate


def _quantile(q: float, deltas: Buckets, dt: float | None) -> float | None:
    if dt is None:
        return None
    value = histogram_quantile(q, deltas)
    return None if math.isnan(value) else value


# -- alert thresholds --------------------------------------------------------------------


class Level(StrEnum):
    """Where a value sits against the monitoring guide's alert table; the TUI colours cells with it."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def status(self) -> Status | None:
        """The node status this level implies (``None`` for unknown)."""
        return _STATUS.get(self)


_STATUS = {
    Level.OK: Status.HEALTHY,
    Level.WARNING: Status.DEGRADED,
    Level.CRITICAL: Status.UNHEALTHY,
}


def _below(value: float, critical: float | None, warning: float | None) -> Level:
    if critical is not None and value < critical:
        return Level.CRITICAL
    if warning is not None and value < warning:
        return Level.WARNING
    return Level.OK


def _above(value: float, critical: float | None, warning: float | None) -> Level:
    if critical is not None and value > critical:
        return Level.CRITICAL
    if warning is not None and value > warning:
        return Level.WARNING
    return Level.OK


@functools.cache
def _rules(t: Thresholds) -> dict[str, tuple[str, float | None, float | None]]:
    """``NodeRates`` field -> (direction, critical, warning), all from ``t`` (built once
    per thresholds: ``top`` classifies every cell of every row on every poll)."""
    return {
        "eager_peers": ("below", t.eager_critical_below, t.eager_warning_below),
        "total_peers": ("below", None, t.total_peers_warning_below),
        "graft_failed_per_min": (
            "above",
            t.graft_failed_per_min_critical,
            t.graft_failed_per_min_warning,
        ),
        "cache_utilisation": ("above", t.cache_ratio_critical, t.cache_ratio_warning),
        "duplicate_pct": (
            "above",
            100.0 * t.duplicate_ratio_critical,
            100.0 * t.duplicate_ratio_warning,
        ),
        "pending_grafts": ("above", None, t.pending_grafts_warning),
    }


#: Lazy peers that make a node with fewer than 2 eager peers redundant enough (structural,
#: not a tunable threshold: the ``plumtree_lazy_peers < 1`` of ``PlumtreeReducedRedundancy``).
REDUNDANT_LAZY_PEERS = 1

#: The ``NodeRates`` fields that have alert thresholds (the others are never coloured).
CLASSIFIED: frozenset[str] = frozenset(_rules(SEED_THRESHOLDS))


def classify(
    metric: str,
    value: float | None,
    t: Thresholds = SEED_THRESHOLDS,
    *,
    lazy: float | None = None,
) -> Level:
    """Level of ``value`` for ``metric`` (a :class:`NodeRates` field in :data:`CLASSIFIED`).

    Comparisons are the monitoring guide's: eager peers < 1 critical, < 2 warning; Graft failures
    > 20/min critical, > 5/min warning; cache > 95% critical, > 80% warning; duplicates
    > 50% critical, > 30% warning; pending Grafts > 100 warning; total peers < 2 warning.
    ``None`` or NaN is :attr:`Level.UNKNOWN`. An unknown metric name is a ``KeyError``.

    Eager peers are read as the project reads the monitoring guide's "eager peers < 2 (warning)"
    row (see :mod:`plumtree.core.health` and the ``PlumtreeReducedRedundancy`` rule): a
    pruned tree leaves most nodes with one eager peer whose redundancy is their lazy
    peers, so with ``lazy`` given the warning needs ``eager < 2 and lazy < 1``. Without
    ``lazy`` (unknown) the monitoring guide's row applies literally. ``eager < 1`` is always critical.
    """
    direction, critical, warning = _rules(t)[metric]
    if value is None or math.isnan(value):
        return Level.UNKNOWN
    level = (_below if direction == "below" else _above)(value, critical, warning)
    if (
        metric == "eager_peers"
        and level is Level.WARNING
        and lazy is not None
        and not math.isnan(lazy)
        and lazy >= REDUNDANT_LAZY_PEERS
    ):
        return Level.OK
    return level


def classify_rates(rates: NodeRates, t: Thresholds = SEED_THRESHOLDS) -> dict[str, Level]:
    """Level of every classified field of ``rates``.

    Eager peers are judged together with ``rates.lazy_peers`` (see :func:`classify`).

    The duplicate rate is only judged once ``t.duplicate_ratio_min_delivered`` messages
    were delivered in the window (as the node's own health check does); below that it is
    :attr:`Level.OK`, so one duplicate of one delivery does not paint the cell red.
    """
    levels = {name: classify(name, getattr(rates, name), t) for name in sorted(CLASSIFIED)}
    levels["eager_peers"] = classify("eager_peers", rates.eager_peers, t, lazy=rates.lazy_peers)
    delivered = rates.delivered_in_window
    if (
        levels["duplicate_pct"] is not Level.UNKNOWN
        and delivered is not None
        and delivered < t.duplicate_ratio_min_delivered
    ):
        levels["duplicate_pct"] = Level.OK
    return levels


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
