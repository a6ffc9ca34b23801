"""``plumctl audit`` against real in-process nodes on loopback.

The nodes (tests/runtime's LocalCluster) run on an event loop in a thread of their own,
so that the CLI runs in-process here (``invoke``) and talks to them over HTTP, while
the test can still reach into a node (on its loop) to cut it off or make it lose
messages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from typer.testing import Result

from tests.cli.helpers import invoke
from tests.cli.threadcluster import ThreadCluster, delivered_everywhere
from tests.ports import free_port

T = TypeVar("T")


def audit(c: ThreadCluster, *args: str, node: int = 0) -> Result:
    return invoke("--node", c.urls[node], "audit", *args)


def audit_json(c: ThreadCluster, *args: str, node: int = 0) -> tuple[int, dict[str, Any]]:
    result = audit(c, "-o", "json", *args, node=node)
    return result.exit_code, json.loads(result.stdout)


def rows(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(node, origin) -> that node's row for that origin's stream."""
    return {(n["node"], s["origin"]): s for n in doc["nodes"] for s in n["streams"]}


def caught_up(c: ThreadCluster) -> bool:
    code, _ = audit_json(c)
    return code == 0


def wait_caught_up(c: ThreadCluster, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not caught_up(c):
        assert time.monotonic() < deadline, audit(c, "-o", "wide").stdout
        time.sleep(0.2)


def test_healthy_cluster_is_ok_and_every_node_has_every_broadcast(three: ThreadCluster) -> None:
    c = three
    c.broadcast(0, b"a", b"b", b"c")
    c.broadcast(1, b"x", b"y")
    delivered_everywhere(c, 5)
    code, doc = audit_json(c, node=1)
    assert code == 0, doc
    assert doc["kind"] == "Audit" and doc["ok"] is True and doc["unreachable"] == []
    assert doc["behind"] == 0 and doc["lost"] == 0
    assert sorted(n["node"] for n in doc["nodes"]) == ["node-0", "node-1", "node-2"]
    # the target of each stream is its origin's acknowledged seq
    targets = {s["origin"]: (s["target"], s["source"]) for s in doc["streams"]}
    assert targets == {"node-0": (3, "acked"), "node-1": (2, "acked")}
    for n in doc["nodes"]:
        assert n["reachable"] is True and n["behind"] == 0 and n["lost"] == 0, n
        assert {(s["origin"], s["delivered"], s["behind"]) for s in n["streams"]} == {
            ("node-0", 3, 0),
            ("node-1", 2, 0),
        }
    # the table shows no rows (nothing behind), one summary line per node, the verdict
    table = audit(c)
    assert table.exit_code == 0
    lines = table.stdout.strip().splitlines()
    assert "ORIGIN" not in table.stdout
    assert lines == [
        "node-0: behind 0, lost 0",
        "node-1: behind 0, lost 0",
        "node-2: behind 0, lost 0",
        "audit: ok · every live member (3) has every acknowledged broadcast of 2 streams",
    ]
    # -o wide: every node and stream, also the caught-up ones
    wide = audit(c, "-o", "wide")
    assert wide.exit_code == 0
    body = [line.split() for line in wide.stdout.splitlines() if line.startswith("node-")]
    rows_ = [r for r in body if len(r) == 9]
    assert sorted((r[0], r[1], r[3], r[4], r[5]) for r in rows_) == sorted(
        (n, o, t, t, "0")
        for n in ("node-0", "node-1", "node-2")
        for o, t in (("node-0", "3"), ("node-1", "2"))
    )


# -- a node that missed messages ---------------------------------------------------------


def test_a_node_cut_off_is_behind_then_wait_times_out_then_it_catches_up(
    three: ThreadCluster,
) -> None:
    c = three
    c.broadcast(0, b"before")
    delivered_everywhere(c, 1)
    c.cut(2)
    c.broadcast(0, b"m1", b"m2", b"m3", b"m4")
    deadline = time.monotonic() + 10
    while len(c.local.delivered["node-1"]) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    code, doc = audit_json(c)
    assert code == 1 and doc["ok"] is False and doc["unreachable"] == []
    row = rows(doc)
    assert row[("node-2", "node-0")]["behind"] == 4
    assert row[("node-2", "node-0")]["delivered"] == 1 and row[("node-2", "node-0")]["target"] == 5
    assert row[("node-1", "node-0")]["behind"] == 0 and row[("node-0", "node-0")]["behind"] == 0
    assert {n["node"]: n["behind"] for n in doc["nodes"]} == {"node-0": 0, "node-1": 0, "node-2": 4}
    assert doc["behind"] == 4
    # the table: one row (node-2, origin node-0, 4 behind), its summary, a failed verdict
    table = audit(c)
    assert table.exit_code == 1
    data = [line.split() for line in table.stdout.splitlines() if line.startswith("node-2   ")]
    assert len(data) == 1
    node, origin, _epoch, delivered, target, behind, lost = data[0]
    assert (node, origin, delivered, target, behind, lost) == (
        "node-2",
        "node-0",
        "1",
        "5",
        "4",
        "0",
    )
    assert "node-2: behind 4, lost 0" in table.stdout
    assert "audit: FAILED · node-2 behind 4" in table.stdout
    # --wait: it never catches up while cut off -> 124 with the last table
    started = time.monotonic()
    waited = audit(c, "--wait", "1")
    assert waited.exit_code == 124
    assert 1.0 <= time.monotonic() - started < 8
    assert "node-2: behind 4, lost 0" in waited.stdout
    assert "timed out after 1s" in waited.stderr and len(waited.stderr.strip().splitlines()) == 1
    # reconnected, anti-entropy repairs it: --wait returns 0 once it caught up
    c.heal(2)
    started = time.monotonic()
    healed = audit(c, "--wait", "30", "-o", "json")
    assert healed.exit_code == 0, healed.stdout
    assert time.monotonic() - started < 30
    doc = json.loads(healed.stdout)
    assert doc["ok"] is True and rows(doc)[("node-2", "node-0")]["delivered"] == 5
    assert [d.payload for d in c.local.delivered["node-2"]][1:] == [b"m1", b"m2", b"m3", b"m4"]


def test_what_a_node_gave_up_is_lost_and_fails_the_audit(three: ThreadCluster) -> None:
    c = three
    c.broadcast(0, b"a", b"b")
    delivered_everywhere(c, 2)
    c.cut(1)  # so that the seqs it gives up are not delivered to it meanwhile
    c.give_up(1, 0, 4)  # node-1 gives up seqs 3-4 of node-0's stream
    c.broadcast(0, b"c", b"d")
    code, doc = audit_json(c)
    assert code == 1 and doc["ok"] is False
    row = rows(doc)[("node-1", "node-0")]
    assert row["lost"] == 2 and row["behind"] == 0 and row["delivered"] == 4
    assert {n["node"]: n["lost"] for n in doc["nodes"]} == {"node-0": 0, "node-1": 2, "node-2": 0}
    table = audit(c)
    assert table.exit_code == 1
    data = [line.split() for line in table.stdout.splitlines() if line.startswith("node-1   ")]
    assert [(r[0], r[1], r[5], r[6]) for r in data] == [("node-1", "node-0", "0", "2")]
    assert (
        "node-1: behind 0, lost 2" in table.stdout
        and "audit: FAILED · node-1 lost 2" in table.stdout
    )


# -- members that do not answer ----------------------------------------------------------


def test_a_live_member_that_does_not_answer_fails_the_audit_and_is_listed(
    three: ThreadCluster,
) -> None:
    c = three
    c.broadcast(0, b"a")
    delivered_everywhere(c, 1)
    c.run(c.nodes[2].admin.stop())  # its admin API is gone; it is still alive in SWIM
    code, doc = audit_json(c)
    assert code == 1 and doc["ok"] is False
    assert doc["unreachable"] == ["node-2"]
    gone = next(n for n in doc["nodes"] if n["node"] == "node-2")
    assert gone["reachable"] is False and gone["behind"] is None and gone["streams"] == []
    assert "connection refused" in gone["error"]
    assert all(n["reachable"] and n["behind"] == 0 for n in doc["nodes"] if n["node"] != "node-2")
    table = audit(c)
    assert table.exit_code == 1
    assert "node-2: unreachable (cannot reach node at" in table.stdout
    assert "audit: FAILED · unreachable: node-2" in table.stdout


def test_no_node_reachable_is_exit_3_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for extra in ([], ["-o", "json"], ["--wait", "0.5"]):
        result = invoke("--node", url, "audit", *extra)
        assert result.exit_code == 3, extra
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert (
            len(lines) == 1 and "cannot reach node" in lines[0] and "connection refused" in lines[0]
        )


# -- answers that are not what the admin API promises ------------------------------------


class FakeNode:
    """A tiny aiohttp server (on a ThreadCluster's loop) that lists itself as the only
    member and answers the other paths with canned bodies."""

    def __init__(self, c: ThreadCluster, answers: dict[str, tuple[int, str, bytes]]) -> None:
        from aiohttp import web

        self.c = c
        self.answers = answers
        self.queries: list[dict[str, str]] = []
        self.url = ""

        async def handle(request: web.Request) -> web.Response:
            self.queries.append(dict(request.query))
            if request.path == "/v1/members":
                doc = {
                    "node": "fake",
                    "items": [{"name": "fake", "admin_url": self.url, "state": "alive"}],
                }
                return web.json_response(doc)
            status, kind, body = self.answers.get(request.path, (404, "text/plain", b"nope"))
            return web.Response(status=status, body=body, content_type=kind)

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            return runner

        self.runner = c.run(start())

    def close(self) -> None:
        self.c.run(self.runner.cleanup())


@pytest.fixture
def loop_only() -> Iterator[ThreadCluster]:
    c = ThreadCluster()  # no nodes: just the loop
    try:
        yield c
    finally:
        c.close()


JSON = "application/json"


@pytest.mark.parametrize(
    ("body", "kind", "says"),
    [
        (b"<html>oops</html>", "text/html", "with a body that is not JSON"),
        (b'{"node": "fake", "streams": [{"origin": "x"}]}', JSON, "lacking origin/epoch"),
        (b'{"node": "fake", "streams": {}}', JSON, "'streams' not a list"),
        (b'{"node": "fake"}', JSON, "without 'streams'"),
    ],
)
def test_a_vector_that_is_not_one_is_one_error_line(
    loop_only: ThreadCluster, body: bytes, kind: str, says: str
) -> None:
    fake = FakeNode(loop_only, {"/v1/vector": (200, kind, body)})
    try:
        result = invoke("--node", fake.url, "audit")
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "GET /v1/vector" in lines[0] and says in lines[0], lines
        assert "Traceback" not in result.output
        # the client methods raise the same, sync and async
        from plumctl.client import AsyncClient, BadResponse, Client

        with Client(fake.url) as client, pytest.raises(BadResponse, match="GET /v1/vector"):
            client.vector()

        async def ask() -> None:
            async with AsyncClient(fake.url) as client:
                await client.vector()

        with pytest.raises(BadResponse, match="GET /v1/vector"):
            asyncio.run(ask())
    finally:
        fake.close()


def test_deliveries_client_passes_the_query_and_checks_the_answer(
    loop_only: ThreadCluster,
) -> None:
    from plumctl.client import BadResponse, Client

    page = {"kind": "DeliveryList", "node": "fake", "log": 7, "durable": False, "first": 1}
    good = json.dumps({**page, "last": 0, "skipped": 0, "items": []}).encode()
    fake = FakeNode(loop_only, {"/v1/deliveries": (200, JSON, good)})
    try:
        with Client(fake.url, timeout=2.0) as client:
            assert client.deliveries(41, 10, 1.5, payload=True)["log"] == 7
            assert client.deliveries()["items"] == []
            with pytest.raises(ValueError):
                client.deliveries(limit=0)
        assert fake.queries == [
            {"after": "41", "limit": "10", "wait": "1.5", "payload": "1"},
            {"after": "0", "limit": "100", "wait": "0"},
        ]
        bad = {**page, "last": 3, "skipped": 0, "items": [{"id": "no cursor"}]}
        fake.answers["/v1/deliveries"] = (200, JSON, json.dumps(bad).encode())
        with (
            Client(fake.url) as client,
            pytest.raises(BadResponse, match="item that has no cursor"),
        ):
            client.deliveries()
        result = invoke("--node", fake.url, "monitor", "--deliveries", "--after", "0")
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "GET /v1/deliveries" in lines[0], lines
    finally:
        fake.close()


# -- the computation, on vectors as nodes answer them ------------------------------------


def stream(origin: str, delivered: int, head: int, **extra: Any) -> dict[str, Any]:
    return {
        "origin": origin,
        "epoch": extra.pop("epoch", 1),
        "own": extra.pop("own", False),
        "delivered": delivered,
        "above": extra.pop("above", []),
        "head": head,
        "acked": extra.pop("acked", None),
        "missing": extra.pop("missing", 0),
        "lost": extra.pop("lost", 0),
        **extra,
    }


def vector(name: str, *streams: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Vector",
        "node": name,
        "streams": list(streams),
        "missing": sum(s["missing"] for s in streams),
        "lost": sum(s["lost"] for s in streams),
    }


def member(name: str) -> Any:
    from plumctl.targets import Target

    return Target(name, f"http://{name}", "alive")


def test_settled_up_to_counts_the_ranges_above_the_watermark_up_to_the_target() -> None:
    from plumctl.commands.audit import settled_up_to

    assert settled_up_to(5, [], 5) == 5
    assert settled_up_to(3, [[5, 6], [9, 12]], 10) == 3 + 2 + 2
    assert settled_up_to(3, [[5, 6], [9, 12]], 4) == 3
    assert settled_up_to(8, [], 5) == 5  # past the target: nothing behind


def test_evaluate_gaps_targets_and_retired_epochs() -> None:
    from plumctl.commands.audit import evaluate

    answers: dict[str, dict[str, Any] | str] = {
        # the origin acknowledged 10 (it may hold 12, not yet durable: not owed)
        "a": vector("a", stream("a", 12, 12, own=True, acked=10)),
        # holes at 4 and 7-8 below the target; 11-12 above it do not count
        "b": vector("b", stream("a", 3, 12, above=[[5, 6], [9, 12]], missing=3)),
        # does not list a's stream at all: owes all of it
        "c": vector("c"),
        # the origin c2 is not asked: its target is the highest head anyone knows
        "d": vector("d", stream("a", 10, 10), stream("z", 2, 6, lost=1)),
        "e": "cannot reach node at http://e: connection refused",
    }
    result = evaluate("a", [member(n) for n in "abcde"], answers)
    assert not result.ok and result.unreachable == ["e"]
    by = {n.node: n for n in result.nodes}
    assert {(t.origin, t.target, t.source) for t in result.targets} == {
        ("a", 10, "acked"),
        ("z", 6, "head"),
    }
    assert by["a"].behind == 6  # z: 6 not listed by a
    assert {(r.origin, r.behind) for r in by["b"].streams} == {("a", 3), ("z", 6)}
    assert by["b"].missing == 3
    assert {(r.origin, r.behind, r.listed) for r in by["c"].streams} == {
        ("a", 10, False),
        ("z", 6, False),
    }
    assert {(r.origin, r.behind, r.lost) for r in by["d"].streams} == {("a", 0, 0), ("z", 4, 1)}
    assert by["d"].lost == 1
    doc = result.as_dict()
    assert doc["behind"] == 6 + 9 + 16 + 4 and doc["lost"] == 1
    gone = next(n for n in doc["nodes"] if n["node"] == "e")
    assert gone == {
        "node": "e",
        "url": "http://e",
        "state": "alive",
        "reachable": False,
        "error": "cannot reach node at http://e: connection refused",
        "behind": None,
        "lost": None,
        "missing": None,
        "streams": [],
    }
    # an old epoch a node no longer lists while it lists a newer one was retired there
    # (complete): not behind; a node listing neither still owes it
    answers = {
        "a": vector("a", stream("a", 4, 4, epoch=2, own=True, acked=4)),
        "b": vector("b", stream("a", 5, 5, epoch=1), stream("a", 4, 4, epoch=2)),
        "c": vector("c"),
    }
    result = evaluate("a", [member(n) for n in "abc"], answers)
    rows_ = {(n.node, r.epoch): r.behind for n in result.nodes for r in n.streams}
    assert rows_ == {
        ("a", 1): 0,  # retired at a (it lists epoch 2)
        ("a", 2): 0,
        ("b", 1): 0,
        ("b", 2): 0,
        ("c", 1): 5,
        ("c", 2): 4,
    }
