"""Cluster health from live nodes: statuses, the monitoring guide's score, and one verdict.

Per node: the status the node reports on /v1/health (Healthy / Degraded / Unhealthy, the
guide's health model) and the monitoring guide's Cluster Health Score computed here from two scrapes
of /metrics ``interval`` seconds apart. The cluster score is the minimum. The verdict
(and the exit code CI gates on):

* every node Healthy -> Healthy (0);
* a majority of the nodes asked (or the only node asked) Unhealthy -> Unhealthy (1);
* anything else that is not Healthy — a Degraded or Unhealthy minority, a member that
  failed or does not answer — Degraded (4);
* no node answered at all -> exit 3.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from plumctl import exitcodes
from plumctl.targets import Target

HEALTHY, DEGRADED, UNHEALTHY = "Healthy", "Degraded", "Unhealthy"
UNREACHABLE, FAILED, LEFT = "Unreachable", "Failed", "Left"


@dataclass(slots=True)
class NodeHealth:
    node: str
    admin_url: str | None
    status: str
    message: str
    membership: str = "alive"
    http_status: int | None = None
    score: float | None = None
    score_reasons: list[str] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.status in (HEALTHY, DEGRADED, UNHEALTHY)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reachable"] = self.reachable
        return d


@dataclass(slots=True)
class Verdict:
    status: str
    exit_code: int
    score: float | None
    worst: list[str]
    reasons: list[str]
    items: list[NodeHealth]
    source: str = "scrape"
    interval: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "ClusterHealth",
            "status": self.status,
            "score": self.score,
            "worst": self.worst,
            "reasons": self.reasons,
            "source": self.source,
            "interval_s": self.interval,
            "items": [n.as_dict() for n in self.items],
        }


def verdict(items: list[NodeHealth], single: bool) -> Verdict:
    """Combine per-node results into the cluster's status, score and exit code."""
    from plumctl.scoring import Score, cluster_score

    reachable = [n for n in items if n.reachable]
    if not reachable:
        reasons = [f"{n.node}: {n.message}" for n in items] or ["no node to ask"]
        return Verdict(UNREACHABLE, exitcodes.UNREACHABLE, None, [], reasons, items)
    unhealthy = [n for n in reachable if n.status == UNHEALTHY]
    asked = [n for n in items if n.membership != "left"]
    if (single and unhealthy) or len(unhealthy) * 2 > len(asked):
        status, code = UNHEALTHY, exitcodes.FAILED
    elif all(n.status == HEALTHY for n in asked):
        status, code = HEALTHY, exitcodes.OK
    else:
        status, code = DEGRADED, exitcodes.DEGRADED
    scores = {
        n.node: Score(n.score, tuple(n.score_reasons)) for n in reachable if n.score is not None
    }
    reasons = [f"{n.node}: {n.status.lower()}: {n.message}" for n in asked if n.status != HEALTHY]
    if scores:
        summary = cluster_score(scores)
        return Verdict(
            status, code, summary.value, list(summary.worst), [*reasons, *summary.reasons], items
        )
    return Verdict(status, code, None, [], reasons, items)


def unasked(name: str, url: str | None, state: str) -> NodeHealth | None:
    """A member's health from the member table alone, or None when it must be asked.

    Left: gone gracefully, not counted. Dead: failed, whatever it last reported. No admin
    URL: cannot be asked. ``plumctl health`` and ``plumctl top`` read a member table the
    same way (and Prometheus, through the scrape targets, sees a dead member down).
    """
    if state == "left":
        return NodeHealth(name, url, LEFT, "left the cluster gracefully", state)
    if state == "dead":
        return NodeHealth(name, url, FAILED, "SWIM declared it dead (no answer to probes)", state)
    if not url:
        return NodeHealth(name, None, UNREACHABLE, "advertises no admin URL", state)
    return None


async def collect(
    targets: list[Target], token: str | None, timeout: float, interval: float
) -> list[NodeHealth]:
    """Ask every target: /v1/health plus two /metrics scrapes ``interval`` apart."""
    from plumctl.client import AsyncClient, ClientError, fan_out
    from plumctl.promtext import Scrape
    from plumctl.scoring import health_score

    askable = [t for t in targets if t.url and t.state != "left" and t.state != "dead"]

    async def first(client: AsyncClient) -> tuple[dict[str, Any], int, Scrape]:
        (body, code), scrape = await asyncio.gather(client.health(), client.scrape())
        return body, code, scrape

    async def second(client: AsyncClient) -> Scrape:
        return await client.scrape()

    urls = [t.url for t in askable if t.url]
    started = time.monotonic()
    one = await fan_out(urls, first, token=token, timeout=timeout) if urls else {}
    await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    ok_urls = [u for u, r in one.items() if not isinstance(r, ClientError)]
    two = await fan_out(ok_urls, second, token=token, timeout=timeout) if ok_urls else {}
    results: list[NodeHealth] = []
    by_url = {_norm(u): r for u, r in one.items()}
    later = {_norm(u): r for u, r in two.items()}
    for t in targets:
        known = unasked(t.name, t.url, t.state)
        if known is not None:
            results.append(known)
            continue
        assert t.url  # unasked() answers for a member without an admin URL
        res = by_url.get(_norm(t.url))
        if res is None or isinstance(res, ClientError):
            results.append(
                NodeHealth(t.name, t.url, UNREACHABLE, str(res) if res else "no answer", t.state)
            )
            continue
        body, code, prev = res
        node = NodeHealth(
            str(body.get("node", t.name)),
            t.url,
            str(body.get("status", UNREACHABLE)),
            str(body.get("message", "")),
            t.state,
            code,
            components=dict(body.get("components", {})),
        )
        cur = later.get(_norm(t.url))
        if isinstance(cur, ClientError) or cur is None:
            node.score_reasons = [f"second scrape failed: {cur}"]
        else:
            score = health_score(prev, cur)
            node.score = score.value
            node.score_reasons = list(score.reasons)
        results.append(node)
    return results


def _norm(url: str) -> str:
    from plumctl.client import normalise_url

    try:
        return normalise_url(url)
    except Exception:
        return url
