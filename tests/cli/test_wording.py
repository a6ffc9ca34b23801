"""What plumctl says reads as written by a person: singular for one, no echoed words
(issue 19: "1 eager peers", "max 1 hops", "failed: failed")."""

from __future__ import annotations

import asyncio

import pytest

from plumctl.commands.broadcast import _summary
from plumctl.healthcheck import FAILED, NodeHealth, collect, verdict
from plumctl.output import plural, reset_consoles
from plumctl.targets import Target


def test_plural() -> None:
    assert [plural(n, "node") for n in (0, 1, 2)] == ["0 nodes", "1 node", "2 nodes"]
    assert plural(2, "query", "queries") == "2 queries"


def test_broadcast_summary_for_one_member_one_hop(capsys: pytest.CaptureFixture[str]) -> None:
    reset_consoles()
    item = {"latency_ms": 0.25, "hops": 1}
    _summary({"complete": True, "members": 1, "items": [item]})
    err = capsys.readouterr().err
    assert "delivered on all 1 live member · last after 0.2 ms · max 1 hop\n" in err


def test_a_dead_member_is_not_failed_failed() -> None:
    # a dead member is not asked: its line comes from the member table alone
    items = asyncio.run(collect([Target("n2", "http://127.0.0.1:9", "dead")], None, 1.0, 0.0))
    assert items[0].status == FAILED
    alive = NodeHealth("n1", "http://x", "Healthy", "all checks passed")
    reasons = verdict([alive, items[0]], single=False).reasons
    assert reasons == ["n2: failed: SWIM declared it dead (no answer to probes)"]
    assert not any("failed: failed" in r for r in reasons)
