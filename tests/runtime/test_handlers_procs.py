"""Event handlers in real node processes (``plumctl cluster up`` with ``node.handlers``).

Every node runs the same script; what it saw lands in a file named after the node. With
a data dir, a restart neither runs a handler again for what was handed over before nor
loses what came after.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import httpx

from tests.ledger import node_procs, run, wait_until


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_every_node_runs_its_delivery_handler_once_per_delivery(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    handler = tmp_path / "on-message.sh"
    handler.write_text(
        f"cd {shlex.quote(str(out))}\n"
        'p=$(cat)\necho "$PLUMTREE_CURSOR $PLUMTREE_MESSAGE_ID $PLUMTREE_ORIGIN $p"'
        ' >> "$PLUMTREE_SELF_NAME.log"\n'
    )
    config = tmp_path / "node.toml"
    config.write_text(
        'profile = "local"\n\n[node]\n'
        f"handlers = [{json.dumps('delivery=/bin/sh ' + shlex.quote(str(handler)))}]\n"
        'handler_timeout = "5s"\n'
    )
    with node_procs(tmp_path / "c", 3, config) as c:
        names = [p.name for p in c.procs]
        sent = []
        for i in range(3):
            r = httpx.post(c.urls[i] + "/v1/broadcast", content=f"m{i}".encode(), timeout=10)
            assert r.status_code == 200, r.text
            sent.append(r.json()["id"])
        wait_until(lambda: all(len(lines(out / f"{n}.log")) == 3 for n in names), 30)
        for n in names:
            got = [line.split() for line in lines(out / f"{n}.log")]
            assert sorted(g[1] for g in got) == sorted(sent), n
            assert sorted(g[0] for g in got) == ["1", "2", "3"], n  # cursors, in order
            assert {(g[2], g[3]) for g in got} == {(names[i], f"m{i}") for i in range(3)}
        c.terminate(2)
        c.restart(2)
        r = httpx.post(c.urls[0] + "/v1/broadcast", content=b"after", timeout=10)
        assert r.status_code == 200, r.text
        wait_until(lambda: len(lines(out / f"{names[2]}.log")) >= 4, 30)
        wait_until(lambda: all(len(lines(out / f"{n}.log")) == 4 for n in names), 30)
        restarted = [line.split() for line in lines(out / f"{names[2]}.log")]
        assert [g[3] for g in restarted][3] == "after"
        assert restarted[3][0] == "4"  # the delivery log numbers on across the restart


def test_a_bad_handler_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = run("node", "start", "--bind", "127.0.0.1:0", "--handler", "member-joined=./x.sh")
    assert bad.returncode == 2
    assert "unknown event 'member-joined'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    config = tmp_path / "node.toml"
    config.write_text('[node]\nhandlers = "./x.sh"\n')
    bad = run("node", "start", "--bind", "127.0.0.1:0", "--config", str(config))
    assert bad.returncode == 2 and "node.handlers: must be a list of strings" in bad.stderr
    config.write_text('[node]\nhandler_timeout = "soon"\n')
    bad = run("node", "start", "--bind", "127.0.0.1:0", "--config", str(config))
    assert bad.returncode == 2 and "node.handler_timeout" in bad.stderr
