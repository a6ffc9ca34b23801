"""Exactly once through kill -9 and restarts with the same data dir, on real processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.ledger import Load, node_procs, settled, wait_until, write_config


def test_kill_9_and_restart_after_1_10_and_60_s_under_load_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """Before: a restart at once delivered again all it had delivered; one after 45 s
    recovered none of what was sent meanwhile (0 of 2,094-7,990 under load)."""
    with node_procs(tmp_path / "c", 5, write_config(tmp_path)) as c:
        load = Load(c.urls, rate=100, targets={0, 1}).start()
        time.sleep(3)
        for victim, away in ((4, 1.0), (3, 10.0), (2, 60.0)):
            c.kill9(victim)
            time.sleep(away)
            c.restart(victim)  # no --join: its store remembers the members
        time.sleep(5)
        acked = load.stop()
        books = settled(c, acked, timeout=60)
        assert len(acked) > 6000
        for book in books:
            assert not book.missing and not book.duplicates and book.cursors_ok, str(book)
        for i in (2, 3, 4):
            status = c.json(i, "/v1/status")
            assert status["durable"] is True and status["joined"] is True
            assert status["members"]["alive"] == 5


def test_an_origin_killed_right_after_acknowledging_gets_it_out_after_its_restart(
    tmp_path: Path,
) -> None:
    """The acknowledgement means durable at the origin. Its peers are down when it
    acknowledges (nobody gets the message then); the origin is killed at once; when all
    come back, everyone delivers it exactly once. Before: lost for good."""
    with node_procs(tmp_path / "c", 3, write_config(tmp_path)) as c:
        warm = httpx.post(c.urls[0] + "/v1/broadcast", content=b"warm", timeout=5).json()["id"]
        wait_until(
            lambda: all(c.json(i, f"/v1/messages/{warm}")["delivered"] for i in range(3)), 10
        )
        c.kill9(1)
        c.kill9(2)
        answer = httpx.post(c.urls[0] + "/v1/broadcast", content=b"only-here", timeout=5)
        assert answer.status_code == 200 and answer.json()["durable"] is True
        c.kill9(0)
        for i in (0, 1, 2):
            c.restart(i)
        acked = [warm, answer.json()["id"]]
        books = settled(c, acked, timeout=40)
        for book in books:
            assert not book.missing and not book.duplicates and book.cursors_ok, str(book)
