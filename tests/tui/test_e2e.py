"""``plumctl top`` against a real local cluster (``plumctl cluster up -n 4``, profile local).

One test, so the cluster starts once: ``top -o json`` through the CLI, then the app with
the real HTTP source shows every node with the eager/lazy counts of its /v1/peers, then
one node is ``kill -9``-ed and its row must turn dead within the failure-detection bound
(local profile: 1 s probes, suspicion of a few seconds; we allow 25 s). The cluster is
stopped in a ``finally``; only processes this test started are ever signalled.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plumctl.localcluster import is_our_node
from tests.cli.helpers import invoke, plumctl

pytestmark = pytest.mark.slow

NODES = 4
DEAD_WITHIN = 25.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[dict[str, Any]]]:
    where = tmp_path / "cluster"
    started: list[dict[str, Any]] = []
    try:
        up = plumctl(
            "cluster",
            "up",
            "-n",
            str(NODES),
            "--profile",
            "local",
            "--dir",
            str(where),
            "-o",
            "json",
        )
        if up.stdout.strip():
            started = json.loads(up.stdout)["items"]  # name, pid, admin_url of each node
        assert up.returncode == 0, up.stderr
        assert len(started) == NODES
        yield started
    finally:
        plumctl("cluster", "down", "--dir", str(where), "--grace", "2")
        for node in started:  # belt and braces: only our own node processes
            if is_our_node(node["pid"], node["name"]):
                os.kill(node["pid"], signal.SIGKILL)


def peer_counts(admin_url: str) -> tuple[int, int]:
    items = httpx.get(f"{admin_url}/v1/peers", timeout=5).json()["items"]
    eager = sum(1 for p in items if p["state"] == "eager")
    return eager, len(items) - eager


def test_top_on_a_live_cluster(cluster: list[dict[str, Any]]) -> None:
    seed = cluster[0]["admin_url"]
    names = sorted(n["name"] for n in cluster)

    # -- plumctl top -o json: one snapshot, every node, rates known -------------------------
    result = invoke("top", "-o", "json", "--interval", "0.3", "--node", seed)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [i["name"] for i in doc["items"]] == names
    assert all(i["state"] == "alive" and i["health"] for i in doc["items"])
    assert all(i["rates"]["window_s"] for i in doc["items"])

    # -- the dashboard with the real HTTP source -------------------------------------------
    victim = cluster[2]
    assert victim["admin_url"] != seed
    asyncio.run(drive_dashboard(seed, names, {n["name"]: n["admin_url"] for n in cluster}, victim))


async def drive_dashboard(
    seed: str, names: list[str], urls: dict[str, str], victim: dict[str, Any]
) -> None:
    from plumctl.tui.app import TopApp
    from plumctl.tui.source import HttpSource
    from tests.tui.fakes import shown as shown_cell

    app = TopApp(HttpSource(seed, timeout=1.0), interval=0.5)

    def text(row: str, column: str) -> str:
        return shown_cell(app, row, column).plain

    async with app.run_test(size=(160, 50)) as pilot:
        for _ in range(200):
            if app.table.row_count == len(names):
                break
            await pilot.pause(0.05)
        assert sorted(app.table.ordered_keys) == names

        # eager/lazy counts match each node's /v1/peers (retry across a tree change)
        mismatches: list[str] = []
        for _attempt in range(5):
            mismatches = []
            want = app.poll_count + 1
            for _ in range(200):
                if app.poll_count >= want:
                    break
                await pilot.pause(0.05)
            for name in names:
                eager, lazy = await asyncio.to_thread(peer_counts, urls[name])
                shown = (text(name, "eager"), text(name, "lazy"))
                if shown != (str(eager), str(lazy)):
                    mismatches.append(f"{name}: top {shown} vs /v1/peers {(eager, lazy)}")
            if not mismatches:
                break
        assert not mismatches, mismatches

        # the detail of a node: its peers (with probe round trips), events, health
        from textual.widgets import DataTable, Static

        from plumctl.tui.app import DetailScreen

        await pilot.press("enter")
        for _ in range(200):
            if isinstance(app.screen, DetailScreen) and app.screen.loads:
                break
            await pilot.pause(0.05)
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.detail is not None
        assert screen.detail.errors == ()
        peers = screen.query_one("#d-peers", DataTable)
        assert peers.row_count == len(names) - 1
        rtts = [peers.get_cell_at((r, 2)) for r in range(peers.row_count)]
        assert any(rtt != "n/a" for rtt in rtts), rtts  # SWIM probed some peer directly
        events = screen.query_one("#d-events", Static).render()
        assert "member_joined" in str(events)
        assert screen.detail.health is not None and screen.detail.health["status"]
        await pilot.press("escape")
        for _ in range(100):
            if not isinstance(app.screen, DetailScreen):
                break
            await pilot.pause(0.05)

        # kill -9 one node: its row turns dead within the failure-detection bound
        assert is_our_node(victim["pid"], victim["name"])
        os.kill(victim["pid"], signal.SIGKILL)
        killed = time.monotonic()
        states: list[str] = []
        while time.monotonic() - killed < DEAD_WITHIN:
            state = text(victim["name"], "state")
            if not states or states[-1] != state:
                states.append(state)
            if state == "dead":
                break
            await pilot.pause(0.2)
        assert states[-1] == "dead", f"states seen: {states}"
        assert app.table.row_count == len(names)  # the dead node stays listed
        others = [n for n in names if n != victim["name"]]
        assert all(text(n, "state") == "alive" for n in others)

        # and it is Failed, not the Healthy it last reported: the dashboard, health --all
        # and (see tests/monitoring) Prometheus tell one story
        from textual.widgets import Digits

        assert text(victim["name"], "health") == "Failed"
        assert text(victim["name"], "score") == "n/a"
        assert app.model.status() == "Degraded"
        assert app.query_one("#score", Digits).has_class("warning")
        health = await asyncio.to_thread(
            plumctl, "--node", seed, "health", "--all", "-o", "json", "--interval", "0.2"
        )
        assert health.returncode == 4, health.stderr
        doc = json.loads(health.stdout)
        assert doc["status"] == "Degraded"
        failed = {i["node"] for i in doc["items"] if i["status"] == "Failed"}
        assert failed == {victim["name"]}
        await pilot.press("q")
    assert app.crash is None
    assert app.return_code == 0
