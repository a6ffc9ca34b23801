"""serf's query over in-process nodes on real sockets, answered by real handler scripts."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

import httpx

from plumtree.runtime.handlers import parse_handler
from plumtree.runtime.query import Targets
from tests.runtime.conftest import LocalCluster, wait_for


def answering(tmp_path: Path) -> list:
    script = tmp_path / "answer.sh"
    script.write_text('echo "$PLUMTREE_SELF_NAME got $(cat) from $PLUMTREE_QUERY_ORIGIN"\n')
    return [parse_handler(f"query:uptime=/bin/sh {shlex.quote(str(script))}")]


async def test_every_member_acks_and_answers(cluster: LocalCluster, tmp_path: Path) -> None:
    for i in range(3):
        await cluster.add(handlers=answering(tmp_path), tags={"role": "web" if i else "db"})
    await cluster.converge()
    doc = await cluster.nodes[0].queries.ask("uptime", b"ping", Targets(), timeout=10)
    assert doc["missing"] == [] and doc["acks"] == 3 and doc["responses"] == 3
    by = {row["node"]: row for row in doc["nodes"]}
    assert by["n1"]["response"] == "n1 got ping from n0\n" and by["n1"]["ok"]
    assert by["n0"]["response"] == "n0 got ping from n0\n"
    # filters: by name, by tag; a query no handler wants is acked, not answered
    doc = await cluster.nodes[0].queries.ask(
        "uptime", b"x", Targets(tags=(("role", re.compile("web")),)), timeout=10
    )
    assert sorted(r["node"] for r in doc["nodes"]) == ["n1", "n2"]
    doc = await cluster.nodes[1].queries.ask(
        "other", b"x", Targets(node_filter=re.compile("n[02]")), timeout=1
    )
    assert [(r["node"], r["acked"], r["responded"]) for r in doc["nodes"]] == [
        ("n0", True, False),
        ("n2", True, False),
    ]
    assert doc["missing"] == []


async def test_a_failing_or_hanging_query_handler_answers_its_error(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    fail = tmp_path / "fail.sh"
    fail.write_text('echo "partial"\necho "disk full" >&2\nexit 4\n')
    asker = await cluster.add()
    await cluster.add(handlers=[parse_handler(f"query=/bin/sh {fail}")])
    await cluster.add(handlers=[parse_handler("query:slow=sleep 30")], handler_timeout=0.3)
    await cluster.converge()
    doc = await asker.queries.ask("slow", b"", Targets(node_filter=re.compile("n[12]")), 10)
    by = {row["node"]: row for row in doc["nodes"]}
    assert by["n1"]["ok"] is False and by["n1"]["error"] == "handler exit 4: disk full"
    assert by["n2"]["ok"] is False and by["n2"]["error"] == "handler killed after 0.3s"
    assert doc["missing"] == [] and doc["responses"] == 2


async def test_the_query_endpoint_answers_json_errors(cluster: LocalCluster) -> None:
    node = await cluster.add(token="s3cret")
    url = node.admin_url
    auth = {"Authorization": "Bearer s3cret"}
    async with httpx.AsyncClient() as raw:
        r = await raw.post(f"{url}/v1/query", json={"name": "x"})
        assert r.status_code == 401
        cases = [
            ({"name": "bad name"}, 400, "bad query"),
            ({"name": "x", "payload": "p" * 9000}, 400, "bad query"),
            ({"name": "x", "timeout": 0}, 400, "bad timeout"),
            ({"name": "x", "node_filter": "("}, 400, "bad node_filter"),
            ({"name": "x", "tags": {"role": "["}}, 400, "bad tag role"),
            ({"name": "x", "tags": ["role"]}, 400, "bad tags"),
            ({"payload": "p"}, 400, "bad request body"),
        ]
        for body, status, error in cases:
            r = await raw.post(f"{url}/v1/query", json=body, headers=auth)
            assert (r.status_code, r.json()["error"]) == (status, error), body
        r = await raw.post(f"{url}/v1/query", content=b"x" * 40000, headers=auth)
        assert r.status_code == 413
        r = await raw.post(f"{url}/v1/query", json={"name": "x", "timeout": 1}, headers=auth)
        assert r.status_code == 200 and r.json()["nodes"][0]["acked"] is True


async def test_an_answer_after_the_askers_timeout_is_not_sent(cluster: LocalCluster) -> None:
    asker = await cluster.add()
    slow = await cluster.add(handlers=[parse_handler("query=sleep 1")])
    await cluster.converge()
    doc = await asker.queries.ask("q", b"", Targets(node_filter=re.compile("n1")), 0.3)
    assert [(r["acked"], r["responded"]) for r in doc["nodes"]] == [(True, False)]
    assert doc["missing"] == []  # acked: it is there, only slow
    await wait_for(lambda: slow.handlers.stats.runs == 1)
    await asyncio.sleep(1.2)  # the run ended: its answer would have gone by now
    assert slow.queries.answered == 0
    assert asker.queries.refused == 0  # (nothing late arrived)
