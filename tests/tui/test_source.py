"""HttpSource over an in-memory transport: fan-out, deadlines, fallback, detail."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import httpx
import pytest

from plumctl.client import Unreachable
from plumctl.tui.source import SCRAPE_NAMES, HttpSource

SCRAPE_QUERY = urlencode([("name[]", n) for n in SCRAPE_NAMES])

EXPOSITION = """# TYPE plumtree_eager_peers gauge
plumtree_eager_peers {eager}
# TYPE plumtree_lazy_peers gauge
plumtree_lazy_peers 4
# TYPE plumtree_graft_sent_total counter
plumtree_graft_sent_total 10
"""


class Cluster:
    """Three nodes n1..n3 behind one MockTransport; tweak ``down``/``hang`` per test."""

    def __init__(self) -> None:
        self.health_metric = False  # the nodes export plumtree_health_status
        self.down: set[str] = set()
        self.hang: set[str] = set()
        self.requests: list[str] = []
        self.dead: set[str] = set()

    def url(self, name: str) -> str:
        return f"http://{name}:7947"

    async def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.requests.append(f"{host}{request.url.path}?{request.url.query.decode()}")
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if host in self.hang:
            await asyncio.sleep(30)
        path = request.url.path
        if path == "/v1/members":
            items = [
                {
                    "name": n,
                    "state": "dead" if n in self.dead else "alive",
                    "admin_url": self.url(n),
                    "addr": f"{n}:7946",
                    "incarnation": 1,
                }
                for n in ("n1", "n2", "n3")
            ]
            return httpx.Response(200, json={"kind": "MemberList", "items": items})
        if path == "/v1/status":
            return httpx.Response(200, json={"name": host, "version": "x", "cluster_label": "blue"})
        if path == "/metrics":
            text = EXPOSITION.format(eager=int(host[1:]))
            if self.health_metric:
                status = "Degraded" if host == "n2" else "Healthy"
                text += "# TYPE plumtree_health_status gauge\n" + "".join(
                    f'plumtree_health_status{{status="{s}"}} {int(s == status)}\n'
                    for s in ("Healthy", "Degraded", "Unhealthy")
                )
            return httpx.Response(200, text=text)
        if path == "/v1/health":
            status = "Degraded" if host == "n2" else "Healthy"
            code = 503 if status == "Degraded" else 200
            return httpx.Response(code, json={"status": status, "message": "m", "components": {}})
        if path == "/v1/peers":
            items = [{"peer": "n1", "state": "eager"}, {"peer": "n3", "state": "lazy"}]
            return httpx.Response(200, json={"items": items})
        if path == "/v1/events" and "recent" in request.url.params:
            return httpx.Response(200, json={"items": [{"kind": "promoted", "seq": 1}]})
        return httpx.Response(404, json={"error": "not found"})


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


def source(cluster: Cluster, **kwargs: object) -> HttpSource:
    return HttpSource(
        cluster.url("n1"),
        timeout=0.3,
        transport=httpx.MockTransport(cluster.handler),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_poll_fans_out_to_every_member(cluster: Cluster) -> None:
    async with source(cluster) as src:
        http = src._http
        snap = await src.poll()
        assert snap.label == "blue" and snap.via == "http://n1:7947"
        assert [m.name for m in snap.members] == ["n1", "n2", "n3"]
        assert set(snap.nodes) == {"n1", "n2", "n3"}
        n2 = snap.nodes["n2"]
        assert n2.ok and n2.scrape is not None and n2.scrape.value("plumtree_eager_peers") == 2
        assert n2.health is not None and n2.health["status"] == "Degraded"  # a 503 is an answer
        assert n2.peers is None  # not fetched by default
        await src.poll()
        assert src._http is http  # one client for the source's life
        status_calls = [r for r in cluster.requests if "/v1/status" in r]
        assert len(status_calls) == 1  # the label is asked once
    assert src._http is None


async def test_peers_can_be_fetched_on_every_poll(cluster: Cluster) -> None:
    async with source(cluster, peers=True) as src:
        snap = await src.poll()
        assert [p["peer"] for p in snap.nodes["n3"].peers or ()] == ["n1", "n3"]


async def test_a_silent_node_costs_its_deadline_not_the_poll(cluster: Cluster) -> None:
    cluster.hang.add("n3")
    cluster.down.add("n2")
    async with source(cluster) as src:
        snap = await src.poll()
        assert snap.nodes["n1"].ok
        assert not snap.nodes["n2"].ok and "connection refused" in str(snap.nodes["n2"].error)
        assert not snap.nodes["n3"].ok and "0.3s" in str(snap.nodes["n3"].error)


async def test_dead_members_are_not_polled(cluster: Cluster) -> None:
    cluster.dead.add("n3")
    async with source(cluster) as src:
        snap = await src.poll()
        assert set(snap.nodes) == {"n1", "n2"}
        assert not any(r.startswith("n3") for r in cluster.requests)


async def test_falls_back_to_another_member_when_the_seed_goes(cluster: Cluster) -> None:
    async with source(cluster) as src:
        await src.poll()
        cluster.down.add("n1")
        snap = await src.poll()
        assert snap.via in ("http://n2:7947", "http://n3:7947")
        assert not snap.nodes["n1"].ok
        assert src.describe == snap.via


async def test_nothing_answers_raises_unreachable(cluster: Cluster) -> None:
    cluster.down.update({"n1", "n2", "n3"})
    async with source(cluster) as src:
        with pytest.raises(Unreachable, match="connection refused"):
            await src.poll()


async def test_detail_uses_the_recent_events_endpoint(cluster: Cluster) -> None:
    async with source(cluster) as src:
        await src.poll()
        detail = await src.detail("n2")
        assert detail.url == "http://n2:7947" and detail.errors == ()
        assert [p["peer"] for p in detail.peers or ()] == ["n1", "n3"]
        assert [e["kind"] for e in detail.events or ()] == ["promoted"]
        assert detail.health is not None and detail.health["status"] == "Degraded"
        assert "n2/v1/events?recent=50&level=info" in cluster.requests  # no deliveries
        cluster.hang.add("n3")
        slow = await src.detail("n3")
        assert slow.peers is None and len(slow.errors) == 3
        unknown = await src.detail("nope")
        assert unknown.url is None and unknown.errors


def test_exposition_fixture_is_valid() -> None:
    from plumctl.promtext import parse

    assert parse(EXPOSITION.format(eager=1), 0.0).value("plumtree_lazy_peers") == 4


async def test_one_request_per_node_when_the_scrape_has_the_health_status(
    cluster: Cluster,
) -> None:
    cluster.health_metric = True
    async with source(cluster) as src:
        await src.poll()
        cluster.requests.clear()
        snap = await src.poll()
        assert sorted(cluster.requests) == [
            "n1/metrics?" + SCRAPE_QUERY,
            "n1/v1/members?",
            "n2/metrics?" + SCRAPE_QUERY,
            "n3/metrics?" + SCRAPE_QUERY,
        ]
        assert snap.nodes["n2"].health == {"status": "Degraded", "message": None}
        assert snap.nodes["n1"].health == {"status": "Healthy", "message": None}


async def test_health_true_asks_v1_health_for_the_message(cluster: Cluster) -> None:
    cluster.health_metric = True
    async with source(cluster, health=True) as src:
        snap = await src.poll()
        assert snap.nodes["n2"].health == {"status": "Degraded", "message": "m", "components": {}}


def test_dashboard_names_cover_every_cell_of_the_table_and_the_score() -> None:
    """The dashboard's lighter scrape changes nothing it shows: only the quantiles that
    ``-o json`` alone prints become unknown."""
    import dataclasses

    from plumctl.promtext import Scrape
    from plumctl.scoring import rates_and_score
    from plumctl.tui.model import COLUMNS, NodeRow, cells
    from plumctl.tui.source import DASHBOARD_NAMES
    from tests.cli.test_scoring import full_pair

    def restricted(s: Scrape) -> Scrape:
        kept = {k: v for k, v in s.samples.items() if k[0] in DASHBOARD_NAMES}
        types = {k[0]: s.type_of(k[0]) or "" for k in kept}
        return Scrape.from_samples(kept, s.at, s.families, types)

    def row(prev: Scrape, cur: Scrape) -> NodeRow:
        r = NodeRow("a", prev=prev, cur=cur)
        r.rates, r.score = rates_and_score(prev, cur)
        return r

    prev, cur = full_pair()
    full, light = row(prev, cur), row(restricted(prev), restricted(cur))
    assert cells(light) == cells(full) and len(cells(full)) == len(COLUMNS)
    assert light.score == full.score
    quantiles = {"graft_p99_s", "hops_p50", "hops_p99"}
    assert full.rates is not None and light.rates is not None
    for field in dataclasses.fields(full.rates):
        if field.name not in quantiles:
            assert getattr(light.rates, field.name) == getattr(full.rates, field.name)
        else:
            assert getattr(light.rates, field.name) is None
            assert getattr(full.rates, field.name) is not None


def test_scrape_names_cover_what_the_scores_read() -> None:
    """Restricting the scrape to SCRAPE_NAMES changes no number of key_queries/health_score."""
    from plumctl.promtext import Scrape
    from plumctl.scoring import health_score, key_queries
    from tests.cli.test_scoring import full_pair

    def restricted(s: Scrape) -> Scrape:
        kept = {k: v for k, v in s.samples.items() if k[0] in SCRAPE_NAMES}
        types = {k[0]: s.type_of(k[0]) or "" for k in kept}
        return Scrape.from_samples(kept, s.at, s.families, types)

    prev, cur = full_pair()
    assert key_queries(restricted(prev), restricted(cur)) == key_queries(prev, cur)
    assert health_score(restricted(prev), restricted(cur)) == health_score(prev, cur)
    assert len(restricted(cur).samples) < len(cur.samples)
