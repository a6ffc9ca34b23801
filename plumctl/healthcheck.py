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
from collections.abc import Callable
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

    async def first(client: AsyncClient) -> tuple[dict[str, Any], int, Scrape]:
        (body, code), scrape = await asyncio.gather(client.health(), client.scrape())
        return body, code, scrape

    async def second(client: AsyncClient) -> Scrape:
        return await client.scrape()

    urls = _askable(targets)
    started = time.monotonic()
    one = await fan_out(urls, first, token=token, timeout=timeout) if urls else {}
    await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    ok_urls = [u for u, r in one.items() if not isinstance(r, ClientError)]
    two = await fan_out(ok_urls, second, token=token, timeout=timeout) if ok_urls else {}
    later = {_norm(u): r for u, r in two.items()}

    def score(url: str, body: dict[str, Any], prev: Scrape) -> Any:
        cur = later.get(_norm(url))
        if isinstance(cur, ClientError) or cur is None:
            return f"second scrape failed: {cur}"
        return health_score(prev, cur)

    return _assemble(targets, one, score)


async def collect_rates(
    targets: list[Target], token: str | None, timeout: float
) -> tuple[list[NodeHealth], float] | None:
    """Ask every target /v1/health once; the score from the rates the node keeps over
    its recent window (its ``rates``), and the longest such window in seconds. None when
    a node answered without them (an older node): then only two scrapes can tell."""
    from plumctl.client import AsyncClient, ClientError, fan_out

    async def ask(client: AsyncClient) -> tuple[dict[str, Any], int, None]:
        body, code = await client.health()
        return body, code, None

    urls = _askable(targets)
    one = await fan_out(urls, ask, token=token, timeout=timeout) if urls else {}
    answers = [r for r in one.values() if not isinstance(r, ClientError)]
    if any(not isinstance(body.get("rates"), dict) for body, _, _ in answers):
        return None
    return _assemble(targets, one, _rates_score), _window([b for b, _, _ in answers])


def one_node_from_rates(name: str, url: str, body: dict[str, Any], code: int) -> Verdict:
    """The verdict of ``plumctl health`` on one node from its /v1/health answer (with
    ``rates``): what :func:`collect_rates` and the command make of it, without asyncio
    or the HTTP client (the fast path, :mod:`plumctl.fastcmd`)."""
    from plumctl.targets import Target

    answers = {url: (body, code, None)}
    items = _assemble([Target(name, url, "alive")], answers, _rates_score, norm=str)
    result = verdict(items, single=True)
    result.source = "node"
    result.interval = _window([body])
    return result


def _rates_score(url: str, body: dict[str, Any], _: None) -> Any:
    """The score from a /v1/health answer's ``rates`` (the node's own recent window)."""
    from plumctl.scoring import score_from

    rates = body["rates"]

    def number(key: str) -> float | None:
        value = rates.get(key)
        return float(value) if isinstance(value, int | float) else None

    return score_from(
        number("eager_peers"),
        number("graft_sent_per_s"),
        number("graft_failed_per_s"),
        number("window_s"),
        no_window="the node has no rate window yet (just started)",
    )


def _window(bodies: list[dict[str, Any]]) -> float:
    return max((float(b["rates"].get("window_s") or 0.0) for b in bodies), default=0.0)


def _askable(targets: list[Target]) -> list[str]:
    return [t.url for t in targets if t.url and t.state not in ("left", "dead")]


def _assemble(
    targets: list[Target],
    answers: dict[str, Any],
    score: Callable[..., Any],
    norm: Callable[[str], str] | None = None,
) -> list[NodeHealth]:
    """One :class:`NodeHealth` per target from the ``(body, code, extra)`` answers (or
    the client's error) by URL, compared through ``norm`` (default: as the client
    normalises them); ``score(url, body, extra)`` gives a
    :class:`~plumctl.scoring.Score` or why there is none (a string)."""
    norm = norm or _norm
    results: list[NodeHealth] = []
    by_url = {norm(u): r for u, r in answers.items()}
    for t in targets:
        known = unasked(t.name, t.url, t.state)
        if known is not None:
            results.append(known)
            continue
        assert t.url  # unasked() answers for a member without an admin URL
        res = by_url.get(norm(t.url))
        if res is None or isinstance(res, Exception):  # a ClientError
            results.append(
                NodeHealth(t.name, t.url, UNREACHABLE, str(res) if res else "no answer", t.state)
            )
            continue
        body, code, extra = res
        node = NodeHealth(
            str(body.get("node", t.name)),
            t.url,
            str(body.get("status", UNREACHABLE)),
            str(body.get("message", "")),
            t.state,
            code,
            components=dict(body.get("components", {})),
        )
        got = score(t.url, body, extra)
        if isinstance(got, str):
            node.score_reasons = [got]
        else:
            node.score = got.value
            node.score_reasons = list(got.reasons)
        results.append(node)
    return results


def _norm(url: str) -> str:
    from plumctl.client import normalise_url

    try:
        return normalise_url(url)
    except Exception:
        return url


_COLOUR = {"Healthy": "green", "Degraded": "yellow", "Unhealthy": "red", "Left": "dim"}


def render(result: Verdict, wide: bool, clear: bool = False) -> None:
    """The table of ``plumctl health`` (Rich) and the verdict line under it."""
    from plumctl.output import plural, stdout, table

    console = stdout()
    if clear and console.is_terminal:
        console.clear()
    t = table(
        "node", "status", "score", "message", *(("score reasons", "admin url") if wide else ())
    )
    for n in result.items:
        colour = _COLOUR.get(n.status, "red")
        score = "-" if n.score is None else f"{n.score:.2f}"
        cells = [n.node, f"[{colour}]{n.status}[/]", score, n.message]
        if wide:
            cells += ["; ".join(n.score_reasons) or "-", n.admin_url or "-"]
        t.add_row(*cells)
    console.print(t)
    colour = _COLOUR.get(result.status, "red")
    score = "unknown" if result.score is None else f"{result.score:.2f}"
    at = f" (lowest: {', '.join(result.worst)})" if result.worst else ""
    console.print(
        f"cluster: [{colour}]{result.status}[/] · score {score}{at} · {plural(len(result.items), 'node')}"
    )
    for reason in result.reasons[: 10 if not wide else None]:
        console.print(f"  - {reason}", markup=False)
