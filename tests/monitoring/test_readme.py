"""The README's Monitoring section stays true to the generated rules and the commands."""

from __future__ import annotations

import re
from pathlib import Path

from plumctl.monitoring.rules import alert_rules

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("\n## Monitoring\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_alert_table_lists_every_rule_with_its_severity_and_for() -> None:
    rows = re.findall(r"^\| (Plumtree\w+) \| [^|]+ \| (\w+) \| (\w+) \|", section(), re.M)
    assert sorted(rows) == sorted((r.alert, r.severity, r.for_) for r in alert_rules())


def test_the_commands_shown_exist() -> None:
    text = section()
    for command in (
        "plumctl monitoring rules --out",
        "plumctl monitoring scrape-config --targets-file",
        "plumctl monitoring dashboard --out",
        "plumctl health --all --prometheus",
        "promtool check rules",
        "promtool check config",
    ):
        assert command in text, command
