"""``plumctl monitor --deliveries`` and ``plumctl broadcast --wait`` on lost messages,
against real in-process nodes on loopback (see ThreadCluster in test_audit.py).

``monitor`` runs until Ctrl-C, so it runs as a real process here (as a user runs it):
the test reads its lines, then interrupts it or takes its node away.
"""

from __future__ import annotations

import base64
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from plumtree.runtime.node import Node, NodeConfig
from tests.cli.helpers import invoke, plumctl_env
from tests.cli.threadcluster import ThreadCluster, delivered_everywhere
from tests.runtime.conftest import local_config


class Monitor:
    """``plumctl monitor --deliveries ...`` as a process; its stdout lines in a queue."""

    def __init__(self, url: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plumctl", "--node", url, "monitor", "--deliveries", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=plumctl_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout, self.proc.stderr
        threading.Thread(target=lambda: [self.lines.put(x) for x in out], daemon=True).start()
        threading.Thread(target=lambda: [self.err.append(x) for x in err], daemon=True).start()

    def read(self, n: int, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        got = []
        for _ in range(n):
            left = deadline - time.monotonic()
            try:
                got.append(self.lines.get(timeout=max(0.01, left)).rstrip("\n"))
            except queue.Empty:
                raise AssertionError(
                    f"{len(got)} of {n} lines: {got}; stderr: {self.err}"
                ) from None
        return got

    def json(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.read(n, timeout)]

    def quiet(self, seconds: float) -> list[str]:
        """Lines printed within ``seconds`` (expected: none)."""
        time.sleep(seconds)
        out = []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return out

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(15)

    def stderr_text(self) -> str:
        time.sleep(0.1)  # the reader thread may still be appending
        return "".join(self.err)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def monitors() -> Iterator[list[Monitor]]:
    started: list[Monitor] = []
    try:
        yield started
    finally:
        for m in started:
            m.close()


def wait_for_cursor(c: ThreadCluster, i: int, cursor: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while c.call(lambda: c.nodes[i].log.last) < cursor:
        assert time.monotonic() < deadline
        time.sleep(0.02)


# -- monitor --deliveries ----------------------------------------------------------------


def test_monitor_deliveries_json_in_cursor_order_then_live_then_ctrl_c(
    three: ThreadCluster, monitors: list[Monitor]
) -> None:
    c = three
    ids = c.broadcast(0, *(f"m{i}".encode() for i in range(1, 6)))
    wait_for_cursor(c, 1, 5)
    m = Monitor(c.urls[1], "--after", "0", "-o", "json")
    monitors.append(m)
    first = m.json(5)
    assert [d["cursor"] for d in first] == [1, 2, 3, 4, 5]
    assert [d["id"] for d in first] == ids
    assert {d["origin"] for d in first} == {"node-0"} and [d["seq"] for d in first] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert all("payload" not in d for d in first)
    # then it follows the log (long polls): new deliveries as they come
    later = c.broadcast(2, b"n1", b"n2")
    more = m.json(2)
    assert [d["cursor"] for d in more] == [6, 7] and [d["id"] for d in more] == later
    assert {(d["origin"], d["from"]) for d in more} == {("node-2", "node-2")}
    assert m.interrupt() == 0
    assert m.stderr_text() == ""


def test_monitor_deliveries_after_resumes_with_nothing_twice_and_shows_payloads(
    three: ThreadCluster, monitors: list[Monitor]
) -> None:
    c = three
    c.broadcast(0, *(f"m{i}".encode() for i in range(1, 6)))
    wait_for_cursor(c, 1, 5)
    # an application that handled up to cursor 3 resumes after it
    m = Monitor(c.urls[1], "--after", "3", "--payload", "-o", "json")
    monitors.append(m)
    got = m.json(2)
    assert [d["cursor"] for d in got] == [4, 5]
    assert [base64.b64decode(d["payload"]) for d in got] == [b"m4", b"m5"]
    assert m.quiet(0.5) == []  # nothing twice, nothing else
    c.broadcast(0, b"m6")
    (six,) = m.json(1)
    assert six["cursor"] == 6 and base64.b64decode(six["payload"]) == b"m6"
    assert m.interrupt() == 0
    # the readable lines: cursor id origin seq hops from [payload]
    text = Monitor(c.urls[1], "--after", "4", "--payload")
    monitors.append(text)
    lines = text.read(2)
    node1 = c.local.delivered["node-1"]
    for line, d in zip(lines, node1[4:6], strict=True):
        assert line.split() == [
            str(d.cursor),
            d.id,
            "node-0",
            str(d.seq),
            str(d.hops),
            d.sender,
            repr(d.payload.decode()),
        ]
    assert text.interrupt() == 0


def test_monitor_deliveries_without_after_starts_with_the_next_delivery(
    three: ThreadCluster, monitors: list[Monitor]
) -> None:
    c = three
    c.broadcast(0, b"old1", b"old2")
    wait_for_cursor(c, 2, 2)
    m = Monitor(c.urls[2], "-o", "json")
    monitors.append(m)
    assert m.quiet(1.0) == []  # what was delivered before it started is not shown
    (new,) = m.json(1) if c.broadcast(1, b"new") else []
    assert new["cursor"] == 3 and new["origin"] == "node-1"
    assert m.interrupt() == 0


def test_monitor_deliveries_warns_about_skipped_deliveries(
    three: ThreadCluster, monitors: list[Monitor]
) -> None:
    c = three
    node = c.nodes[1]
    c.call(lambda: setattr(node.log, "_capacity", 4))  # a tiny in-memory log
    c.broadcast(0, *(f"m{i}".encode() for i in range(1, 11)))
    wait_for_cursor(c, 1, 10)
    m = Monitor(c.urls[1], "--after", "2", "-o", "json")
    monitors.append(m)
    assert [d["cursor"] for d in m.json(4)] == [7, 8, 9, 10]
    assert m.interrupt() == 0
    err = m.stderr_text().strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("plumctl: warning: node-1: 4 deliveries after cursor 2 can no longer")
    assert "continuing at cursor 7" in err[0]


def test_monitor_deliveries_survives_a_restart_warns_the_log_changed_and_exits_3_when_gone(
    three: ThreadCluster, monitors: list[Monitor]
) -> None:
    c = three
    old = c.nodes[2]
    c.broadcast(0, b"a", b"b")
    wait_for_cursor(c, 2, 2)
    m = Monitor(c.urls[2], "--after", "0", "--timeout", "20", "-o", "json")
    monitors.append(m)
    assert [d["cursor"] for d in m.json(2)] == [1, 2]
    time.sleep(1.0)  # its next long poll is in flight when the node stops
    # node-2 restarts without a store on the same addresses: a new log, cursors from 1
    port = int(c.urls[2].rsplit(":", 1)[1])
    seed, origin = c.nodes[0].gossip_addr, c.nodes[0].plumtree.epoch

    async def restart() -> Node:
        await old.stop(leave=False)
        cfg = NodeConfig(
            name="node-2",
            bind=old.gossip_addr,
            api=f"127.0.0.1:{port}",
            join=[seed],
            protocol=local_config(),
        )
        node = Node(cfg)
        await node.start()
        c.local.nodes[2] = node
        return node

    new = c.run(restart())
    deadline = time.monotonic() + 20

    def adopted() -> bool:  # a new node starts where its peers are (seqs 1-2 not owed)
        stream = new.plumtree.streams.find("node-0", origin)
        return stream is not None and stream.wm >= 2

    while not c.call(adopted):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.broadcast(0, b"after restart")
    (d,) = m.json(1)
    assert d["cursor"] == 1 and d["origin"] == "node-0" and d["seq"] == 3
    err = m.stderr_text()
    assert "the delivery log changed" in err and "started again at 1" in err
    # the node goes away for good: exit 3 once it has not answered for --timeout
    m2 = Monitor(c.urls[2], "--timeout", "1", "-o", "json")
    monitors.append(m2)
    time.sleep(1.0)  # let it reach its long poll
    c.run(new.stop(leave=False))
    assert m2.proc.wait(20) == 3
    lines = m2.stderr_text().strip().splitlines()
    assert len(lines) == 1 and "cannot reach node" in lines[0], lines


def test_monitor_deliveries_usage_errors() -> None:
    for args, text in (
        (["monitor", "--after", "3"], "--after: only with --deliveries"),
        (["monitor", "--payload"], "--payload: only with --deliveries"),
        (["monitor", "--deliveries", "--level", "debug"], "--level: not with --deliveries"),
        (["monitor", "--deliveries", "--since", "1"], "--since: not with --deliveries"),
    ):
        result = invoke("--node", "http://127.0.0.1:9", *args)
        assert result.exit_code == 2, args
        assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- broadcast --wait and lost messages --------------------------------------------------


def next_seq(c: ThreadCluster, i: int) -> int:
    return c.call(lambda: c.nodes[i].plumtree.own_stream.wm + 1)


def test_broadcast_wait_reports_a_member_that_lost_the_message(three: ThreadCluster) -> None:
    c = three
    c.broadcast(0, b"warm-up")
    delivered_everywhere(c, 1)
    # node-2 gives up node-0's next broadcast before it is even sent (as if nobody held
    # it any more): it answers /v1/messages/{id} with lost: true from then on
    lost_id = c.give_up(2, 0, next_seq(c, 0))
    started = time.monotonic()
    result = invoke(
        "--node", c.urls[0], "broadcast", "doomed", "--wait", "--timeout", "20", "-o", "json"
    )
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 10  # it stopped waiting for node-2
    doc = json.loads(result.stdout)
    assert doc["id"] == lost_id
    assert doc["lost"] == ["node-2"] and doc["complete"] is False and doc["delivered"] == 2
    items = {i["node"]: i for i in doc["items"]}
    assert items["node-2"]["lost"] is True and items["node-2"]["delivered"] is False
    assert all(items[n]["delivered"] and not items[n]["lost"] for n in ("node-0", "node-1"))
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "lost on node-2 (no reachable member holds it any more)" in err[0]
    # the table form says the same on stderr; stdout is the id
    lost_id = c.give_up(2, 0, next_seq(c, 0))
    table = invoke("--node", c.urls[0], "broadcast", "doomed too", "--wait", "--timeout", "20")
    assert table.exit_code == 1 and table.stdout.strip() == lost_id
    assert "lost on node-2 (no reachable member holds it any more)" in table.stderr
    assert "delivered on 2 of 3 live members" in table.stderr
    # and a message nobody lost still completes with exit 0 and an empty lost list
    fine = invoke("--node", c.urls[0], "broadcast", "fine", "--wait", "-o", "json")
    assert fine.exit_code == 0, fine.output
    doc = json.loads(fine.stdout)
    assert doc["complete"] is True and doc["lost"] == []
    assert not any(i["lost"] for i in doc["items"])
