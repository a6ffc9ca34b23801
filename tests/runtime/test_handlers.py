"""Event handlers (``--handler``) with real shell scripts on in-process nodes.

Each script is written by the test; what it saw (stdin, environment) lands in files
the test reads. The node's own deliveries go through the same hand-over as any.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

import pytest

from plumtree.metrics import make_registry, render
from plumtree.runtime.handlers import EVENTS, HandlerSpec, parse_handler
from tests.runtime.conftest import LocalCluster, wait_for


def script(path: Path, body: str) -> str:
    """A handler script at ``path``; returns the command that runs it."""
    path.write_text("set -u\n" + body)
    return f"/bin/sh {shlex.quote(str(path))}"


def metric(node: object, name: str) -> float:
    text = render(make_registry(node)).decode()  # type: ignore[arg-type]
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_handler_syntax_follows_serf() -> None:
    assert parse_handler("./all.sh") == HandlerSpec(None, "./all.sh")
    assert parse_handler("*=./all.sh") == HandlerSpec(None, "./all.sh")
    assert parse_handler("member-join,member-failed=./n.sh a=b") == HandlerSpec(
        frozenset({"member-join", "member-failed"}), "./n.sh a=b"
    )
    # an assignment in the command is not a filter
    assert parse_handler("FOO=1 ./x.sh") == HandlerSpec(None, "FOO=1 ./x.sh")
    with pytest.raises(ValueError, match="unknown event 'member-joined'"):
        parse_handler("member-joined=./x.sh")
    with pytest.raises(ValueError, match="no command"):
        parse_handler("delivery=  ")
    assert "delivery" in EVENTS


async def test_handlers_get_the_payload_on_stdin_and_the_event_in_env(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    deliveries = script(
        tmp_path / "deliver.sh",
        f'cd {shlex.quote(str(out))}\ncat > "d-$PLUMTREE_CURSOR.payload"\n'
        'env | grep ^PLUMTREE_ | sort > "d-$PLUMTREE_CURSOR.env"\n',
    )
    members = script(
        tmp_path / "member.sh",
        f"cd {shlex.quote(str(out))}\n"
        'echo "$PLUMTREE_EVENT $PLUMTREE_MEMBER_NAME $PLUMTREE_MEMBER_ADDR" >> members.log\n'
        "cat >> members.stdin\n",
    )
    a = await cluster.add(
        handlers=[
            parse_handler(f"delivery={deliveries}"),
            parse_handler(f"member-join,member-leave={members}"),
        ],
        tags={"role": "web"},
    )
    b = await cluster.add()
    await cluster.converge()
    msg_id = b.broadcast(b"hello\x00world\n")
    await wait_for(lambda: (out / "d-1.env").exists() and (out / "d-1.payload").exists())
    await wait_for(lambda: "PLUMTREE_HOPS" in (out / "d-1.env").read_text())
    assert (out / "d-1.payload").read_bytes() == b"hello\x00world\n"
    env = dict(line.split("=", 1) for line in (out / "d-1.env").read_text().splitlines())
    assert env["PLUMTREE_EVENT"] == "delivery"
    assert env["PLUMTREE_SELF_NAME"] == "n0"
    assert env["PLUMTREE_SELF_ADDR"] == a.gossip_addr
    assert env["PLUMTREE_TAG_ROLE"] == "web"
    assert env["PLUMTREE_ORIGIN"] == "n1"
    assert env["PLUMTREE_MESSAGE_ID"] == msg_id
    assert env["PLUMTREE_CURSOR"] == "1"
    assert env["PLUMTREE_HOPS"] == "1"
    await wait_for(lambda: (out / "members.log").exists())
    await b.stop(leave=True)
    await wait_for(lambda: "member-leave" in (out / "members.log").read_text())
    lines = (out / "members.log").read_text().splitlines()
    assert lines == [f"member-join n1 {b.gossip_addr}", f"member-leave n1 {b.gossip_addr}"]
    assert (out / "members.stdin").read_text().startswith(f"n1\t{b.gossip_addr}\talive\t")
    assert metric(a, "plumtree_handler_runs_total") == 3
    assert metric(a, "plumtree_handler_failures_total") == 0


async def test_a_hanging_handler_is_killed_at_the_limit_and_the_node_goes_on(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    hang = script(
        tmp_path / "hang.sh",
        f"cd {shlex.quote(str(tmp_path))}\n"
        'if [ "$(cat)" = hang ]; then sleep 60 & echo $! > sleeper.pid; wait; fi\n'
        'echo "$PLUMTREE_CURSOR" >> done.log\n',
    )
    node = await cluster.add(handlers=[parse_handler(f"delivery={hang}")], handler_timeout=1.0)
    node.broadcast(b"hang")
    node.broadcast(b"fine")
    # the node delivers while the handler hangs
    assert [d.payload for d in cluster.delivered["n0"]] == [b"hang", b"fine"]
    await wait_for(lambda: (tmp_path / "done.log").exists())
    # the hung run never finished; the next one ran after it was killed
    assert (tmp_path / "done.log").read_text() == "2\n"
    sleeper = int((tmp_path / "sleeper.pid").read_text())
    await wait_for(lambda: not _alive(sleeper))  # its whole process group was killed
    assert metric(node, "plumtree_handler_timeouts_total") == 1
    assert metric(node, "plumtree_handler_runs_total") == 2


async def test_a_failing_handler_is_counted_and_logged_once_per_interval(
    cluster: LocalCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fail = script(tmp_path / "fail.sh", 'echo "no database" >&2\nexit 3\n')
    node = await cluster.add(handlers=[parse_handler(f"delivery={fail}")])
    with caplog.at_level(logging.WARNING, logger="plumtree.handlers"):
        for i in range(3):
            node.broadcast(b"x%d" % i)
        await wait_for(lambda: node.handlers.stats.failures == 3)
    assert metric(node, "plumtree_handler_failures_total") == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "plumtree.handlers"]
    assert len(warnings) == 1, warnings  # rate limited: the other two are counted
    assert "delivery: exit 3: no database" in warnings[0]


async def test_a_full_handler_queue_drops_and_counts(cluster: LocalCluster, tmp_path: Path) -> None:
    slow = script(tmp_path / "slow.sh", "cat > /dev/null\nsleep 1\n")
    node = await cluster.add(handlers=[parse_handler(f"delivery={slow}")], handler_queue=1)
    for i in range(5):
        node.broadcast(b"m%d" % i)  # our own deliveries: all offered before any run starts
    assert len(cluster.delivered["n0"]) == 5
    assert metric(node, "plumtree_handler_dropped_total") == 4
    await wait_for(lambda: node.handlers.stats.runs == 1)
