"""Real node processes: `plumctl node start` errors, `cluster up/down/status`, signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from plumctl.localcluster import is_our_node
from tests.cli.helpers import invoke, wait_until
from tests.ports import free_port

PLUMCTL = [sys.executable, "-m", "plumctl"]


def run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLUMCTL, *args], capture_output=True, text=True, timeout=timeout)


class Cluster:
    def __init__(self, directory: Path, n: int) -> None:
        self.dir = directory
        self.n = n
        self.doc: dict = {}

    def up(self, *extra: str) -> None:
        result = run(
            "cluster", "up", "-n", str(self.n), "--dir", str(self.dir), "-o", "json", *extra
        )
        assert result.returncode == 0, result.stderr
        self.doc = json.loads(result.stdout)

    @property
    def urls(self) -> list[str]:
        return [item["admin_url"] for item in self.doc["items"]]

    @property
    def pids(self) -> list[int]:
        return [item["pid"] for item in self.doc["items"]]

    def get(self, i: int, path: str) -> httpx.Response:
        return httpx.get(self.urls[i] + path, timeout=5.0)

    def states(self, i: int) -> dict[str, str]:
        return {m["name"]: m["state"] for m in self.get(i, "/v1/members").json()["items"]}

    def down(self) -> None:
        run("cluster", "down", "--dir", str(self.dir), "--grace", "5")
        # belt and braces: kill what is still *our* node process (a recycled pid is not)
        for item in self.doc.get("items", []):
            if is_our_node(item["pid"], item["name"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(item["pid"], signal.SIGKILL)


@pytest.fixture
def cluster4(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "c", 4)
    try:
        c.up()
        yield c
    finally:
        c.down()


def test_cluster_up_broadcast_signals_and_down(cluster4: Cluster) -> None:
    c = cluster4
    assert len(c.urls) == 4 and c.doc["converged"] is True
    assert all(sum(1 for s in c.states(i).values() if s == "alive") == 4 for i in range(4))
    # a broadcast on one node is delivered exactly once on every node
    sent = httpx.post(c.urls[1] + "/v1/broadcast", content=b"from node-1").json()
    wait_until(
        lambda: all(c.get(i, f"/v1/messages/{sent['id']}").json()["delivered"] for i in range(4)),
        10,
    )
    for i in range(4):
        text = c.get(i, "/metrics").text
        assert "plumtree_messages_delivered_total 1.0" in text
    # status lists every node as alive and healthy
    status = invoke("cluster", "status", "--dir", str(c.dir), "-o", "json")
    rows = json.loads(status.stdout)["items"]
    assert [r["alive"] for r in rows] == [True] * 4
    # SIGTERM: a graceful leave, the others see "left"
    os.kill(c.pids[3], signal.SIGTERM)
    wait_until(lambda: c.states(0).get("node-3") == "left", 10)
    # kill -9: detected as dead, and Plumtree repairs around it
    os.kill(c.pids[2], signal.SIGKILL)
    wait_until(
        lambda: c.states(0).get("node-2") == "dead" and c.states(1).get("node-2") == "dead",
        30,
        0.25,
    )
    again = httpx.post(c.urls[0] + "/v1/broadcast", content=b"after").json()
    wait_until(
        lambda: all(c.get(i, f"/v1/messages/{again['id']}").json()["delivered"] for i in (0, 1)), 10
    )
    # status now shows two nodes down: exit 1 (failed)
    status = invoke("cluster", "status", "--dir", str(c.dir), "-o", "json")
    assert status.exit_code == 1
    assert [r["alive"] for r in json.loads(status.stdout)["items"]] == [True, True, False, False]
    down = run("cluster", "down", "--dir", str(c.dir), "-o", "json")
    assert down.returncode == 0
    results = {x["name"]: x["result"] for x in json.loads(down.stdout)["items"]}
    assert results["node-0"] == "stopped" and results["node-3"] == "not running"
    assert not (c.dir / "cluster.json").exists()


def test_up_twice_on_the_same_dir_is_a_clear_error(cluster4: Cluster) -> None:
    again = run("cluster", "up", "-n", "2", "--dir", str(cluster4.dir))
    assert again.returncode == 1
    assert "already running" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_down_finds_and_stops_the_nodes_of_a_cluster_whose_directory_was_removed(
    tmp_path: Path,
) -> None:
    # an operator removed the directory while the cluster ran: its nodes are still ours
    c = Cluster(tmp_path / "gone", 2)
    other = Cluster(tmp_path / "other", 1)
    try:
        c.up()
        other.up()
        shutil.rmtree(c.dir)
        result = run("cluster", "down", "--dir", str(c.dir), "--grace", "5")
        assert result.returncode == 0, result.stderr
        assert "stopped 2 nodes" in result.stderr and "state file was gone" in result.stderr
        assert not any(is_our_node(i["pid"], i["name"]) for i in c.doc["items"])
        assert all(is_our_node(i["pid"], i["name"]) for i in other.doc["items"]), (
            "another cluster's nodes are left alone"
        )
    finally:
        c.down()
        other.down()


def test_down_without_a_cluster_is_ok_and_says_so(tmp_path: Path) -> None:
    # idempotent, as `make demo-down` run twice must be (it exited 2 through make)
    for _ in range(2):
        result = run("cluster", "down", "--dir", str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == f"no cluster running in {tmp_path} (nothing to stop)"
    as_json = run("cluster", "down", "--dir", str(tmp_path / "never"), "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "kind": "LocalClusterDown",
        "dir": str(tmp_path / "never"),
        "items": [],
    }


def test_busy_port_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run(
            "node", "start", "--name", "x", "--bind", f"127.0.0.1:{port}", "--api", "127.0.0.1:0"
        )
    assert result.returncode == 1
    assert (
        "cannot bind TCP 127.0.0.1:" in result.stderr and "Address already in use" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[plumtree]\neager_fanout = 0\n", "plumtree.eager_fanout: must be >= 1, got 0"),
        ("[node]\ncolour = 'red'\n", "node.colour: unknown setting"),
        ("[plumtree\n", "invalid TOML"),
    ],
)
def test_bad_config_file_is_a_usage_error(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(toml)
    result = run("node", "start", "--config", str(path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unreachable_seed_keeps_retrying_and_says_so(tmp_path: Path) -> None:
    dead = free_port()
    log = tmp_path / "node.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            _node_argv("lonely", "--profile", "local", "--join", f"127.0.0.1:{dead}"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: log.read_text().count("cannot join through") >= 2, 10)
        assert proc.poll() is None, "the node keeps running while it retries"
        assert "retrying in" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, "SIGTERM exits 0"


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    # wan timings make the graceful leave take seconds (gossip rounds of 0.5 s), so a
    # second signal arriving right after the first must cut it short
    procs: list[subprocess.Popen[bytes]] = []
    try:
        seed_ready = tmp_path / "seed.json"
        procs.append(_start("seed", seed_ready, "--profile", "wan"))
        wait_until(seed_ready.exists, 10)
        seed = json.loads(seed_ready.read_text())
        ready = tmp_path / "other.json"
        procs.append(_start("other", ready, "--profile", "wan", "--join", seed["gossip_addr"]))
        wait_until(ready.exists, 10)
        url = seed["admin_url"]
        wait_until(lambda: httpx.get(url + "/v1/status").json()["members"]["alive"] == 2, 15)
        procs[0].send_signal(signal.SIGINT)
        time.sleep(0.2)
        started = time.monotonic()
        procs[0].send_signal(signal.SIGINT)
        assert procs[0].wait(5) == 1
        assert time.monotonic() - started < 2.0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def _node_argv(name: str, *extra: str) -> list[str]:
    """``plumctl node start`` on free loopback ports (gossip and admin API)."""
    return [
        *PLUMCTL,
        *("node", "start", "--name", name, "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0"),
        *extra,
    ]


def _start(name: str, ready: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _node_argv(name, "--ready-file", str(ready), *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_json_logs_are_one_object_per_line_and_message_lines_carry_id_and_hops(
    tmp_path: Path,
) -> None:
    log = tmp_path / "node.log"
    ready = tmp_path / "ready.json"
    with log.open("w") as out:
        proc = subprocess.Popen(
            _node_argv(
                "j",
                "--profile",
                "local",
                "--log-json",
                "--log-level",
                "debug",
                "--ready-file",
                str(ready),
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(ready.exists, 10)
        url = json.loads(ready.read_text())["admin_url"]
        sent = httpx.post(url + "/v1/broadcast", content=b"traced").json()
        wait_until(lambda: sent["id"] in log.read_text(), 5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    about_it = [r for r in records if r.get("id") == sent["id"]]
    assert about_it and all("hops" in r for r in about_it)
    # per-message lines are DEBUG (the monitoring guide's "per-message hops")
    assert {r["level"] for r in about_it} == {"debug"}
    assert {r["msg"].split()[0] for r in about_it} >= {"broadcast", "delivered"}
    assert any("started" in r["msg"] for r in records) and any(
        "stopped" in r["msg"] for r in records
    )


def test_a_failed_up_leaves_no_node_behind(tmp_path: Path) -> None:
    # a config every node refuses: the seed exits during start, and so does everything
    bad = tmp_path / "bad.toml"
    bad.write_text("[swim]\nprobe_interval = 0.1\nprobe_timeout = 0.5\n")
    result = run("cluster", "up", "-n", "3", "--dir", str(tmp_path / "c"), "--config", str(bad))
    assert result.returncode == 1
    assert "exited with code 2 during start" in result.stderr
    assert "probe_timeout" in result.stderr
    assert not (tmp_path / "c" / "cluster.json").exists()
