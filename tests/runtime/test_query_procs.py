"""``plumctl query`` against real node processes (``plumctl cluster up``), answered by
handler scripts; a frozen member (SIGSTOP) is named as missing and the exit is 1."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tests.ledger import node_procs, run


def test_query_collects_every_answer_and_names_a_frozen_member(tmp_path: Path) -> None:
    script = tmp_path / "uptime.sh"
    script.write_text('echo "$PLUMTREE_SELF_NAME: $(cat) ($PLUMTREE_QUERY_NAME)"\n')
    config = tmp_path / "node.toml"
    command = "query:uptime=/bin/sh " + shlex.quote(str(script))
    config.write_text(f'profile = "local"\n\n[node]\nhandlers = [{json.dumps(command)}]\n')
    with node_procs(tmp_path / "c", 3, config) as c:
        names = sorted(p.name for p in c.procs)
        url = c.urls[0]
        done = run("query", "uptime", "hi", "--node", url, "-o", "json", "--timeout", "10")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["missing"] == []
        assert {r["node"]: r["response"] for r in doc["nodes"]} == {
            n: f"{n}: hi (uptime)\n" for n in names
        }
        # the table: one row per member, then the counts
        shown = run("query", "uptime", "--node", url, "--timeout", "10")
        assert shown.returncode == 0, shown.stderr
        assert "3 of 3 acked, 3 responded" in shown.stdout
        # filters: one member by name; a tag nobody has selects nobody (exit 0: none missing)
        one = c.procs[1].name
        only = run("query", "uptime", "--node", url, "--node-filter", one, "-o", "json")
        assert only.returncode == 0, only.stderr
        assert [r["node"] for r in json.loads(only.stdout)["nodes"]] == [one]
        none = run("query", "uptime", "--node", url, "--tag", "role=api", "-o", "json")
        assert none.returncode == 0 and json.loads(none.stdout)["nodes"] == []
        bad = run("query", "uptime", "--node", url, "--node-filter", "(")
        assert bad.returncode == 2 and "invalid regex" in bad.stderr
        frozen = c.procs[2].name
        c.freeze(2)
        try:
            late = run("query", "uptime", "--node", url, "-o", "json", "--timeout", "2")
        finally:
            c.thaw(2)
        assert late.returncode == 1, late.stderr
        assert json.loads(late.stdout)["missing"] == [frozen]
        assert f"no ack from 1 of 3 member(s) within 2.0s: {frozen}" in late.stderr
