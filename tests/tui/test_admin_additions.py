"""Admin API additions made for ``plumctl top``.

- ``GET /v1/events?recent=N``: the last events as one JSON list (no stream);
- ``GET /metrics?name[]=...``: only those samples (as prometheus_client's handlers do);
- ``plumtree_health_status{status=...}``: the /v1/health verdict in the scrape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from plumtree.core.config import ProtocolConfig
from plumtree.runtime.node import Node, NodeConfig


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(
        NodeConfig(
            name="solo",
            bind="127.0.0.1:0",
            api="127.0.0.1:0",
            protocol=ProtocolConfig.from_profile("local"),
        )
    )
    await n.start()
    try:
        yield n
    finally:
        await n.stop(leave=False)


async def test_recent_returns_the_newest_events_as_a_list(node: Node) -> None:
    for i in range(5):
        node.events.publish({"kind": "peer_added", "peer": f"p{i}", "at": float(i)})
    node.events.publish({"kind": "graft_sent", "peer": "p9", "at": 9.0})  # debug level
    async with httpx.AsyncClient(base_url=str(node.admin_url), timeout=5) as http:
        r = await http.get("/v1/events", params={"recent": "3"})
        assert r.status_code == 200
        body = r.json()
        assert body["kind"] == "EventList" and body["node"] == "solo"
        assert [e["kind"] for e in body["items"]] == ["peer_added", "peer_added", "graft_sent"]
        seqs = [e["seq"] for e in body["items"]]
        assert seqs == sorted(seqs)  # oldest first, newest last

        info = (await http.get("/v1/events", params={"recent": "2", "level": "info"})).json()
        assert [e.get("peer") for e in info["items"]] == ["p3", "p4"]

        assert (await http.get("/v1/events", params={"recent": "0"})).json()["items"] == []
        for bad in ("-1", "x", "100000"):
            err = await http.get("/v1/events", params={"recent": bad})
            assert err.status_code == 400
            assert err.json()["error"] == "bad 'recent'"


async def test_metrics_name_filter_and_health_status(node: Node) -> None:
    from plumctl.promtext import parse

    async with httpx.AsyncClient(base_url=str(node.admin_url), timeout=5) as http:
        full = parse((await http.get("/metrics")).text, 0.0)
        wanted = ["plumtree_eager_peers", "plumtree_graft_latency_seconds_bucket"]
        r = await http.get("/metrics", params=[("name[]", n) for n in wanted])
        assert r.status_code == 200
        some = parse(r.text, 0.0)
        assert set(some.names()) == set(wanted)
        assert some.histogram("plumtree_graft_latency_seconds") == full.histogram(
            "plumtree_graft_latency_seconds"
        )
        health = (await http.get("/v1/health")).json()["status"]
        states = full.series("plumtree_health_status")
        assert {dict(k)["status"]: v for k, v in states.items()} == {
            "Healthy": float(health == "Healthy"),
            "Degraded": float(health == "Degraded"),
            "Unhealthy": float(health == "Unhealthy"),
        }
        assert health == "Unhealthy"  # alone: no eager peer, isolated
        assert (await http.get("/metrics", params={"name[]": "nope"})).text == ""
