"""``plumctl monitoring scrape-config --watch``: keeping the file_sd targets current.

The loop (:func:`watch_targets`) is driven here with a fake member table; the live
cluster drives the real command in test_prometheus_live.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from plumctl.cli import app
from plumctl.client import Unreachable
from plumctl.commands.monitoring import watch_targets
from plumctl.monitoring.scrape import file_sd_targets
from plumctl.output import reset_consoles

A = {"name": "a", "admin_url": "http://127.0.0.1:7001", "state": "alive"}
B = {"name": "b", "admin_url": "http://127.0.0.1:7002", "state": "alive"}
C = {"name": "c", "admin_url": "http://127.0.0.1:7003", "state": "alive"}


def dead(member: dict[str, Any]) -> dict[str, Any]:
    return {**member, "state": "dead"}


class Cluster:
    """Member tables by round; a node in ``down`` refuses connections."""

    def __init__(self, tables: list[list[dict[str, Any]]], down: list[set[str]]):
        self.tables = tables
        self.down = down
        self.round = -1
        self.asked: list[list[str]] = []
        self.written: list[list[str]] = []

    def sleep(self, seconds: float) -> None:
        assert seconds == 0.5
        self.round += 1
        self.asked.append([])

    def fetch(self, url: str) -> list[dict[str, Any]]:
        self.asked[-1].append(url)
        if url in self.down[self.round]:
            raise Unreachable(f"cannot reach node at {url}: connection refused", url=url)
        return self.tables[self.round]

    def write(self, targets: list[dict[str, Any]]) -> None:
        self.written.append([g["labels"]["node"] for g in targets])


def watch(cluster: Cluster, start: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Watch from a's admin URL, starting from the targets of ``start``."""
    return watch_targets(
        A["admin_url"],
        start,
        file_sd_targets(start),
        cluster.fetch,
        cluster.write,
        cluster.sleep,
        0.5,
        rounds=rounds,
    )


def test_rewrites_only_when_the_targets_change(capsys: pytest.CaptureFixture[str]) -> None:
    # c fails: it stays a target (Prometheus sees it down, up == 0) until it is reaped
    start = [A, B, C]
    cluster = Cluster(
        [[A, B, C], [A, B, dead(C)], [A, B, dead(C)], [A, B]],
        [set(), set(), set(), set()],
    )
    last = watch(cluster, start, rounds=4)
    assert cluster.written == [["a", "b"]]
    assert [g["labels"]["node"] for g in last] == ["a", "b"]
    assert capsys.readouterr().err == "plumctl: targets changed (-c): 2 target(s) written\n"


def test_falls_back_to_other_members_then_keeps_the_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    urls = {m["admin_url"] for m in (A, B, C)}
    cluster = Cluster(
        [[A, B, C], [A, B, dead(C)], [], [], [A, B]],
        [{A["admin_url"]}, {A["admin_url"]}, urls, urls, set()],
    )
    watch(cluster, [A, B, C], rounds=5)
    # round 0: a refuses, b answers with the same table as before (no write);
    # round 1: b answers that c is dead (still a target: no write); rounds 2-3: nobody
    # answers (one warning); round 4: a is back, and c was reaped
    assert cluster.asked[0] == [A["admin_url"], B["admin_url"]]
    assert cluster.written == [["a", "b"]]
    assert cluster.asked[2] == [A["admin_url"], B["admin_url"]]  # c is dead: not asked
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "plumctl: warning: cannot refresh the targets, keeping them as they are: "
        "cannot reach node at http://127.0.0.1:7001: connection refused",
        "plumctl: member table readable again",
        "plumctl: targets changed (-c): 2 target(s) written",
    ]


def run(*args: str) -> Any:
    reset_consoles()
    return CliRunner().invoke(app, list(args), prog_name="plumctl")


def test_watch_needs_a_targets_file() -> None:
    result = run("monitoring", "scrape-config", "--watch")
    assert result.exit_code == 2
    assert result.stderr == (
        "plumctl: error: --watch: needs --targets-file (the file to keep current)\n"
    )


def test_evaluation_interval_option() -> None:
    result = run("monitoring", "scrape-config", "--evaluation-interval", "1s")
    assert result.exit_code == 0, result.output
    assert "  evaluation_interval: 1s\n" in result.stdout
    bad = run("monitoring", "scrape-config", "--evaluation-interval", "soon")
    assert bad.exit_code == 2
    assert "--evaluation-interval: not a Prometheus duration" in bad.stderr


def test_a_dead_member_stays_a_target_and_one_that_left_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # issue 19: dropping a crashed node made Prometheus (and health --prometheus) forget
    # it, while health --all still counted it as failed
    start = [A, B, C]
    cluster = Cluster([[A, B, dead(C)], [A, B, {**C, "state": "left"}]], [set(), set()])
    watch(cluster, start, rounds=2)
    assert cluster.written == [["a", "b"]]  # only when c left
    assert capsys.readouterr().err == "plumctl: targets changed (-c): 2 target(s) written\n"
