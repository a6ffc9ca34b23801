"""serf's query over in-process nodes on real sockets, answered by real handler scripts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from plumtree.runtime.handlers import parse_handler
from plumtree.runtime.query import Targets
from tests.runtime.conftest import LocalCluster


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
