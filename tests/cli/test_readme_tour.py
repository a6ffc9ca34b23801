"""The README's tour runs on the cluster ``make demo`` starts (issue 19: the setup said
``make demo`` and the tour started a second cluster with ``cluster up --dir /tmp/tour``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def makefile_var(name: str) -> str:
    match = re.search(rf"^{name} \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, name
    return match.group(1)


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_tour_uses_the_demo_cluster_and_starts_no_other() -> None:
    tour = readme_section("A tour")
    demo_dir, nodes = makefile_var("DEMO_DIR"), makefile_var("DEMO_NODES")
    commands = re.findall(r"^\$ (.+)$", tour, re.M)
    assert commands[0] == "make demo"
    assert not [c for c in commands if c.startswith("plumctl cluster up")], commands
    assert f"{nodes} nodes up in" in tour
    assert commands[-1].startswith("make demo-down")
    # one directory in the commands: the demo's
    dirs = set(re.findall(r"--dir (\S+)", "\n".join(commands)))
    assert dirs == {demo_dir}, dirs


def test_the_monitoring_section_watches_the_same_cluster() -> None:
    section = readme_section("Monitoring")
    demo_dir = makefile_var("DEMO_DIR")
    assert "\nmake demo " in section
    assert set(re.findall(r"--dir (\S+)", section)) == {demo_dir}
    assert "plumctl cluster up" not in section
