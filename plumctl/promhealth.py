"""``plumctl health --prometheus``: the same statuses and score, computed through PromQL.

Instead of asking the nodes, ask a Prometheus server that scrapes them (see ``plumctl
monitoring scrape-config``). Per scrape target, at one evaluation instant:

* the health model's inputs (:class:`plumtree.core.health.HealthInputs`): the gauges as
  last scraped, and ``increase(counter[WINDOW])`` for the counters it judges over a
  window (Grafts sent and failed, deliveries, duplicates, dropped IHaves and Grafts).
  :func:`plumtree.core.health.evaluate`, the model a node runs for its own /v1/health,
  turns them into Healthy / Degraded / Unhealthy. ``WINDOW`` defaults to ``5m``: the
  node's own health window (300 s) and the ranges of the monitoring guide's queries and alerts.
* the score: the monitoring guide's Cluster Health Score PromQL verbatim, inside ``clamp_min(.., 0)``
  (the design's [0, 1]); always over the monitoring guide's ``[5m]``, whatever ``WINDOW`` is.

Targets are the ``up`` series of every job that has scraped ``plumtree_eager_peers`` in
the last hour, so a node that went down still shows (``up == 0``: unreachable). A node
is named by its ``node`` target label (set by the file_sd targets of ``plumctl
monitoring scrape-config``), else by its ``instance``. The per-node results are
:class:`~plumctl.healthcheck.NodeHealth`, judged by the same
:func:`~plumctl.healthcheck.verdict` as direct scrapes: same output, same exit codes.

One difference from the node's own view: Prometheus only counts what happened between
its scrapes, and ``increase()`` extrapolates to the window's edges, so counts are
rounded to whole events.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plumctl import exitcodes
from plumctl.client import ClientError, Prometheus, PromSample, Unreachable
from plumctl.healthcheck import UNREACHABLE, NodeHealth
from plumctl.monitoring.dashboard import HEALTH_SCORE
from plumctl.scoring import Score, score_reasons
from plumtree.core.health import HealthInputs, evaluate

#: How far back a job must have exported plumtree metrics to count as a plumtree job.
DISCOVERY_LOOKBACK = "1h"
#: The monitoring guide's Cluster Health Score, verbatim, clamped at 0 as well.
SCORE = f"clamp_min(\n{HEALTH_SCORE},\n0\n)"
#: The rates inside the monitoring guide's score, for its reasons (same instant, same range).
SCORE_SENT_RATE = "rate(plumtree_graft_sent_total[5m])"
SCORE_FAILED_RATE = "rate(plumtree_graft_failed_total[5m])"

#: HealthInputs field -> gauge (the value at the last scrape).
GAUGES: dict[str, str] = {
    "eager_peers": "plumtree_eager_peers",
    "lazy_peers": "plumtree_lazy_peers",
    "cache_size": "plumtree_cache_size",
    "cache_capacity": "plumtree_cache_capacity",
    "pending_grafts": "plumtree_pending_grafts",
    "ihave_queue_size": "plumtree_ihave_queue_size",
    "ihave_queue_capacity": "plumtree_ihave_queue_capacity",
    "messages_missing": "plumtree_messages_missing",
    "missing_for": "plumtree_messages_missing_seconds",
    "store_failing": "plumtree_store_failing",  # only nodes with a data dir have it
}
#: Gauges without which a target cannot be judged at all.
REQUIRED = ("eager_peers", "lazy_peers", "cache_size", "cache_capacity", "pending_grafts")
#: HealthInputs field -> counters whose increase over the window it is (summed).
COUNTERS: dict[str, tuple[str, ...]] = {
    "graft_sent_in_window": ("plumtree_graft_sent_total",),
    "graft_failed_in_window": ("plumtree_graft_failed_total",),
    "delivered_in_window": ("plumtree_messages_delivered_total",),
    "duplicates_in_window": ("plumtree_messages_duplicate_total",),
    "drops_in_window": ("plumtree_ihave_dropped_total", "plumtree_pending_grafts_dropped_total"),
    "lost_in_window": ("plumtree_messages_lost_total",),
}

#: counters exported with a label of their own, summed over it per target
LABELED = {"plumtree_messages_lost_total": "reason"}

Key = tuple[str, str]  # (job, instance)


class NoTargets(Unreachable):
    """Prometheus answers but scrapes no plumtree node (or not the one asked): exit 3."""

    exit_code = exitcodes.UNREACHABLE


def discovery_query(lookback: str = DISCOVERY_LOOKBACK) -> str:
    """``up`` of every target in a job that exported plumtree metrics recently."""
    return f"up and on(job) group by(job) (last_over_time(plumtree_eager_peers[{lookback}]))"


def queries(window: str) -> dict[str, str]:
    """Every query but discovery: name -> PromQL (names are GAUGES/COUNTERS keys or metrics)."""
    out = {f"gauge:{field}": metric for field, metric in GAUGES.items()}
    for counters in COUNTERS.values():
        for metric in counters:
            expr = f"increase({metric}[{window}])"
            if metric in LABELED:
                expr = f"sum without({LABELED[metric]}) ({expr})"  # one value per target
            out[f"increase:{metric}"] = expr
    out["score"] = SCORE
    out["score_sent_rate"] = SCORE_SENT_RATE
    out["score_failed_rate"] = SCORE_FAILED_RATE
    return out


def key_of(labels: Mapping[str, str]) -> Key:
    return labels.get("job", ""), labels.get("instance", "")


@dataclass(frozen=True, slots=True)
class PromTarget:
    """A scrape target as Prometheus sees it."""

    name: str
    key: Key
    up: bool
    admin_url: str | None = None
    last_error: str | None = None


def targets_from(up: list[PromSample], active: list[dict[str, Any]] | None) -> list[PromTarget]:
    """Targets from the discovery ``up`` samples, with URL and last error from
    ``/api/v1/targets`` when that answered (``active`` None: it did not)."""
    details: dict[Key, dict[str, Any]] = {}
    for t in active or []:
        labels = t.get("labels")
        if isinstance(labels, dict):
            details[key_of(labels)] = t
    found: list[PromTarget] = []
    for sample in up:
        key = key_of(sample.labels)
        name = sample.labels.get("node") or key[1] or "?"
        info = details.get(key, {})
        url = info.get("scrapeUrl")
        admin_url = _admin_url(url) if isinstance(url, str) else None
        error = info.get("lastError") or None
        found.append(
            PromTarget(name, key, sample.value == 1.0, admin_url, str(error) if error else None)
        )
    return sorted(found, key=lambda t: (t.name, t.key))


def _admin_url(scrape_url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(scrape_url)
    path = parts.path.removesuffix("/metrics")
    return f"{parts.scheme}://{parts.netloc}{path}"


def by_key(samples: list[PromSample]) -> dict[Key, float]:
    return {key_of(s.labels): s.value for s in samples}


def node_healths(
    targets: list[PromTarget], values: Mapping[str, Mapping[Key, float]], window_s: float
) -> list[NodeHealth]:
    """Judge every target from the query results (``values``: query name -> key -> value)."""
    return [_judge(t, values, window_s) for t in targets]


def _judge(t: PromTarget, values: Mapping[str, Mapping[Key, float]], window_s: float) -> NodeHealth:
    if not t.up:
        why = f": {t.last_error}" if t.last_error else ""
        return NodeHealth(
            t.name,
            t.admin_url,
            UNREACHABLE,
            f"down in Prometheus (up == 0, its last scrape failed{why})",
            membership="unknown",
        )

    def get(name: str) -> float | None:
        value = values.get(name, {}).get(t.key)
        return None if value is None or math.isnan(value) else value

    gauges = {field: get(f"gauge:{field}") for field in GAUGES}
    missing = [GAUGES[f] for f in REQUIRED if gauges[f] is None]
    if missing:
        return NodeHealth(
            t.name,
            t.admin_url,
            UNREACHABLE,
            f"scraped, but Prometheus has no {', '.join(missing)} for it "
            "(not a plumtree node, or not scraped yet)",
            membership="unknown",
        )
    counts = {
        field: _whole(sum(get(f"increase:{m}") or 0.0 for m in metrics))
        for field, metrics in COUNTERS.items()
    }
    inputs = HealthInputs(
        eager_peers=_whole(gauges["eager_peers"]),
        lazy_peers=_whole(gauges["lazy_peers"]),
        cache_size=_whole(gauges["cache_size"]),
        cache_capacity=_whole(gauges["cache_capacity"]),
        pending_grafts=_whole(gauges["pending_grafts"]),
        ihave_queue_size=_whole(gauges["ihave_queue_size"]),
        # unknown capacity (an older node): 0, which the model reads as "not judged"
        ihave_queue_capacity=_whole(gauges["ihave_queue_capacity"]),
        messages_missing=_whole(gauges["messages_missing"]),
        missing_for=gauges["missing_for"] or 0.0,
        store_failing=bool(gauges["store_failing"]),
        window_seconds=window_s,
        graft_sent_in_window=counts["graft_sent_in_window"],
        graft_failed_in_window=counts["graft_failed_in_window"],
        delivered_in_window=counts["delivered_in_window"],
        duplicates_in_window=counts["duplicates_in_window"],
        drops_in_window=counts["drops_in_window"],
        lost_in_window=counts["lost_in_window"],
    )
    report = evaluate(inputs)
    node = NodeHealth(
        t.name,
        t.admin_url,
        report.status.value,
        report.message,
        membership="alive",
        components={
            c.name: {"status": c.status.value, "message": c.message} for c in report.checks
        },
    )
    score = _score(
        get("score"), gauges["eager_peers"], get("score_sent_rate"), get("score_failed_rate")
    )
    node.score = score.value
    node.score_reasons = list(score.reasons)
    return node


def _score(
    value: float | None, eager: float | None, sent: float | None, failed: float | None
) -> Score:
    if value is None:
        return Score(
            None,
            (
                "score unknown: no Graft rates in Prometheus over the last 5m yet "
                "(needs two scrapes of the node)",
            ),
        )
    value = min(max(value, 0.0), 1.0)
    if eager is None or sent is None or failed is None:
        return Score(value)
    return Score(value, score_reasons(value, eager, sent, failed))


def _whole(value: float | None) -> int:
    """A count or gauge as the model's integer (``increase()`` extrapolates fractions)."""
    return 0 if value is None else max(0, math.floor(value + 0.5))


async def collect(
    prometheus_url: str,
    timeout: float,
    window: str,
    window_s: float,
    only_instance: str | None,
) -> list[NodeHealth]:
    """Ask Prometheus, judge every target (or only ``only_instance``), as NodeHealth."""
    async with Prometheus(prometheus_url, timeout) as prom:
        up = await prom.query(discovery_query())
        if not up:
            raise NoTargets(
                f"Prometheus at {prom.base_url} has no plumtree targets (no job exported "
                f"plumtree_eager_peers in the last {DISCOVERY_LOOKBACK}); point it at the "
                "nodes: plumctl monitoring scrape-config --targets-file FILE",
                url=prom.base_url,
            )
        if only_instance is not None:
            mine = [s for s in up if s.labels.get("instance") == only_instance]
            if not mine:
                known = sorted({s.labels.get("instance", "?") for s in up})
                raise NoTargets(
                    f"Prometheus at {prom.base_url} has no plumtree target with instance "
                    f"{only_instance} (the --node); it scrapes {', '.join(known)}; "
                    "use --all, or --node with one of those",
                    url=prom.base_url,
                )
            up = mine
        at = up[0].at
        named = queries(window)
        results, active = await asyncio.gather(
            asyncio.gather(*(prom.query(expr, at) for expr in named.values())),
            _targets_or_none(prom),
        )
    values = {name: by_key(r) for name, r in zip(named, results, strict=True)}
    return node_healths(targets_from(up, active), values, window_s)


async def _targets_or_none(prom: Prometheus) -> list[dict[str, Any]] | None:
    """The active targets (for URLs and scrape errors), or None: they only add detail."""
    try:
        return await prom.targets()
    except ClientError:
        return None
