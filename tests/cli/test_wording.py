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


def _user_facing_texts() -> dict[str, str]:
    from pathlib import Path

    from plumctl.monitoring.dashboard import render_json
    from plumctl.monitoring.rules import render_yaml
    from plumctl.tui.app import help_text

    root = Path(__file__).resolve().parents[2]
    texts = {
        "rules.yml": render_yaml(),
        "dashboard": render_json(),
        "? overlay": help_text(None).plain,
        "help.json": (root / "plumctl" / "completions" / "help.json").read_text(),
        "README.md": (root / "README.md").read_text(),
    }
    for doc in sorted((root / "docs").glob("*.md")):
        texts[f"docs/{doc.name}"] = doc.read_text()
    return texts


def test_the_monitoring_guide_is_called_so_not_the_seed() -> None:
    """Users know docs/monitoring.md, not the document it was first written from. "seed"
    stays right for join seeds (``--join``: "seed address", "its seeds") and RNG seeds."""
    import re

    texts = _user_facing_texts()
    guide_as_seed = re.compile(r"seed's|seed (guide|YAML|row)|the seed\b(?! address)", re.I)
    found = {name: guide_as_seed.findall(text) for name, text in texts.items()}
    assert not {name: hits for name, hits in found.items() if hits}
    assert "docs/monitoring.md" in texts["? overlay"] and "docs/monitoring.md" in texts["rules.yml"]
