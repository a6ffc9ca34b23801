"""The few PromQL functions plumctl needs, evaluated over two scrapes of one node (pure).

The monitoring guide's queries are written against Prometheus (``rate(x[5m])``); ``plumctl`` has no
Prometheus, only two scrapes of a node ``Δt`` apart, so a "rate" here is the increase
between the two scrapes divided by ``Δt`` (no extrapolation: with two samples there is
nothing to extrapolate from). Counter resets follow Prometheus: a counter that went down
restarted from zero, so its increase is its current value.

Unknown is ``None`` (metric absent, window empty); :func:`histogram_quantile` keeps
Prometheus's IEEE answers (NaN, ±Inf) because callers compare it with PromQL.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

from plumctl.promtext import Buckets, Scrape

__all__ = [
    "histogram_deltas",
    "histogram_quantile",
    "increase",
    "rate",
    "series_increase",
    "window",
]


def increase(prev: float, cur: float) -> float:
    """Increase of a counter between two samples; ``cur < prev`` means it restarted at 0."""
    return cur if cur < prev else cur - prev


def series_increase(prev: Scrape | None, cur: Scrape, name: str, /, **match: str) -> float | None:
    """Sum of per-series increases of counter ``name`` between two scrapes.

    Each label set is reset-checked on its own (as ``sum(increase(x))`` does); series
    present in only one scrape are left out, as Prometheus needs two samples of a series.
    ``None`` when no series is in both scrapes.
    """
    if prev is None:
        return None
    before = prev.series(name, **match)
    after = cur.series(name, **match)
    common = before.keys() & after.keys()
    if not common:
        return None
    return math.fsum(increase(before[k], after[k]) for k in common)


def window(prev: Scrape | None, cur: Scrape) -> float | None:
    """Seconds between two scrapes, or ``None`` when there is no usable window."""
    if prev is None:
        return None
    dt = cur.at - prev.at
    return dt if dt > 0 else None


def rate(prev: Scrape | None, cur: Scrape, name: str, /, **match: str) -> float | None:
    """Per-second increase of counter ``name`` (summed over its label sets).

    ``None`` when the metric is absent from either scrape or the window is <= 0.
    """
    dt = window(prev, cur)
    if dt is None:
        return None
    inc = series_increase(prev, cur, name, **match)
    return None if inc is None else inc / dt


def histogram_deltas(prev: Scrape | None, cur: Scrape, name: str, /, **match: str) -> Buckets:
    """Bucket-wise increase of histogram ``name`` between two scrapes, summed by ``le``.

    The analogue of ``sum by (le) (increase(name_bucket[w]))``: feed it to
    :func:`histogram_quantile` for a quantile over the window, not since start. Per
    series, when its ``+Inf`` bucket (the count) went down, or its bucket layout changed,
    the histogram restarted and its current cumulative buckets are the increase;
    otherwise each bucket gets the reset-aware :func:`increase`. ``[]`` when the
    histogram is absent from either scrape.
    """
    if prev is None:
        return []
    before = prev.histogram_series(name, **match)
    after = cur.histogram_series(name, **match)
    totals: dict[float, float] = {}
    found = False
    for labels, cur_buckets in after.items():
        prev_buckets = before.get(labels)
        if prev_buckets is None:
            continue
        found = True
        for le, count in _series_delta(prev_buckets, cur_buckets):
            totals[le] = totals.get(le, 0.0) + count
    if not found:
        return []
    return sorted(totals.items(), key=lambda b: b[0])


def _series_delta(prev: Buckets, cur: Buckets) -> Buckets:
    if [le for le, _ in prev] != [le for le, _ in cur] or _inf_count(cur) < _inf_count(prev):
        return list(cur)
    return [(le, increase(p, c)) for (le, p), (_, c) in zip(prev, cur, strict=True)]


def _inf_count(buckets: Buckets) -> float:
    return buckets[-1][1] if buckets and math.isinf(buckets[-1][0]) else 0.0


# -- histogram_quantile ------------------------------------------------------------------
# A port of bucketQuantile in prometheus/promql/quantile.go (classic histograms),
# including coalescing of equal bounds, the float-precision fix and the monotonic
# envelope. The comments give the why; the Go source is the reference.

_PRECISION_TOLERANCE = 1e-12


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q``-quantile of cumulative ``(le, count)`` buckets, as PromQL computes it.

    - NaN for q NaN, for fewer than 2 buckets, no ``+Inf`` bucket, or no observations;
      -Inf for q < 0 and +Inf for q > 1 (checked before anything else, as Prometheus).
    - Linear interpolation inside the bucket holding rank ``q * count``; the first
      bucket interpolates from 0 if its bound is > 0, else answers its bound.
    - A rank in the ``+Inf`` bucket answers the highest finite bound.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bs = sorted(((float(le), float(c)) for le, c in buckets), key=lambda b: b[0])
    if not bs or not (math.isinf(bs[-1][0]) and bs[-1][0] > 0):
        return math.nan
    bs = _coalesce(bs)
    _correct_precision(bs, _PRECISION_TOLERANCE)
    _ensure_monotonic(bs)
    if len(bs) < 2:
        return math.nan
    observations = bs[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    # first bucket among all but +Inf with count >= rank (Go: sort.Search), else +Inf's index
    counts = [c for _, c in bs[:-1]]
    b = _search_first_at_least(counts, rank)
    if b == len(bs) - 1:
        return bs[-2][0]
    if b == 0 and bs[0][0] <= 0:
        return bs[0][0]
    start = 0.0
    end, count = bs[b]
    if b > 0:
        start = bs[b - 1][0]
        count -= bs[b - 1][1]
        rank -= bs[b - 1][1]
    return start + (end - start) * _ieee_div(rank, count)


def _search_first_at_least(counts: list[float], rank: float) -> int:
    """Smallest i with counts[i] >= rank (len(counts) if none); counts are monotonic."""
    # bisect_left on a non-decreasing list is exactly sort.Search with ">= rank".
    return bisect_left(counts, rank)


def _coalesce(bs: Buckets) -> Buckets:
    """Merge buckets with the same upper bound (``le="1"`` and ``le="1.0"``): add counts."""
    out: Buckets = [bs[0]]
    for le, count in bs[1:]:
        if le == out[-1][0]:
            out[-1] = (le, out[-1][1] + count)
        else:
            out.append((le, count))
    return out


def _correct_precision(bs: Buckets, tolerance: float) -> None:
    """Snap counts that differ from the previous one by float noise back to it."""
    prev = bs[0][1]
    for i in range(1, len(bs)):
        le, cur = bs[i]
        delta = abs(cur - prev)
        if delta == 0:
            continue
        if _ieee_div(delta, cur) <= tolerance:
            bs[i] = (le, prev)
        else:
            prev = cur


def _ensure_monotonic(bs: Buckets) -> None:
    """Replace any decrease along the bounds by the running maximum (the envelope)."""
    top = bs[0][1]
    for i in range(1, len(bs)):
        le, count = bs[i]
        if count > top:
            top = count
        elif count < top:
            bs[i] = (le, top)


def _ieee_div(a: float, b: float) -> float:
    """Division as Go does it on float64: x/0 is ±Inf, 0/0 is NaN, no exception."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)
