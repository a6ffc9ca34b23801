"""Real node processes, a broadcast load and a ledger that checks exactly-once delivery.

``NodeProcs`` runs ``plumctl cluster up`` (every node with its own data dir) and can
freeze, kill -9 and restart single nodes on their own addresses; ``Load`` posts
broadcasts at a steady rate from a thread and keeps every acknowledged id; ``ledger``
reads each node's whole delivery log (cursor by cursor) and compares it with what was
acknowledged: missing and duplicate counts per node, not just totals.

Every process a test starts here is stopped by the test, by pid, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from plumctl.localcluster import is_our_node, keyring_path, node_command

PLUMCTL = [sys.executable, "-m", "plumctl"]


def run(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLUMCTL, *args], capture_output=True, text=True, timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def write_config(directory: Path, **plumtree: Any) -> Path:
    """A node config (TOML) for the local profile with these plumtree settings."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ['profile = "local"', "", "[plumtree]"]
    for key, value in plumtree.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = directory / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Proc:
    name: str
    admin_url: str
    gossip_addr: str
    pid: int
    popen: subprocess.Popen[bytes] | None = None


class NodeProcs:
    """A ``plumctl cluster up`` cluster whose nodes can be frozen, killed and restarted."""

    def __init__(
        self, directory: Path, n: int, config: Path | None = None, keyring: Path | None = None
    ) -> None:
        self.dir = directory
        self.n = n
        self.config = config
        #: the cluster's keyring: every node gets its own copy (``cluster up --keyring``)
        self.keyring = keyring
        self.procs: list[Proc] = []
        self._extra: list[subprocess.Popen[bytes]] = []

    def up(self) -> None:
        args = ["cluster", "up", "-n", str(self.n), "--dir", str(self.dir), "-o", "json"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        if self.keyring is not None:
            args += ["--keyring", str(self.keyring)]
        result = run(*args)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        self.procs = [
            Proc(item["name"], item["admin_url"], item["gossip_addr"], item["pid"])
            for item in doc["items"]
        ]

    @property
    def urls(self) -> list[str]:
        return [p.admin_url for p in self.procs]

    def get(self, i: int, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.procs[i].admin_url + path, timeout=timeout)

    def json(self, i: int, path: str, timeout: float = 10.0) -> Any:
        response = self.get(i, path, timeout)
        return response.json()

    def freeze(self, i: int) -> None:
        os.kill(self.procs[i].pid, signal.SIGSTOP)

    def thaw(self, i: int) -> None:
        os.kill(self.procs[i].pid, signal.SIGCONT)

    def kill9(self, i: int) -> None:
        self._end(i, signal.SIGKILL)

    def terminate(self, i: int) -> None:
        """A clean stop (SIGTERM: the node leaves and closes its store)."""
        self._end(i, signal.SIGTERM)

    def _end(self, i: int, sig: signal.Signals) -> None:
        p = self.procs[i]
        os.kill(p.pid, sig)
        if p.popen is not None:
            p.popen.wait(10)
        else:
            wait_until(lambda: not _alive(p.pid), 10, 0.05)

    def restart(self, i: int, join: bool = False) -> None:
        """Start node ``i`` again on its own addresses and data dir (no --join: its store
        remembers the members, unless ``join``)."""
        p = self.procs[i]
        log = (self.dir / "logs" / f"{p.name}.restart.log").open("ab")
        extra = ["--profile", "local"]
        if self.config is not None:
            extra += ["--config", str(self.config)]
        if self.keyring is not None:
            extra += ["--keyring", str(self.keyring_file(i))]
        seeds = [self.procs[(i + 1) % self.n].gossip_addr] if join else []
        cmd = node_command(
            p.name,
            p.gossip_addr,
            p.admin_url.removeprefix("http://"),
            self.dir / "data" / p.name,
            seeds,
            extra,
        )
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._extra.append(popen)
        p.pid = popen.pid
        p.popen = popen
        wait_until(lambda: self.get(i, "/v1/status").status_code == 200, 30, 0.1)

    def keyring_file(self, i: int) -> Path:
        """Node ``i``'s own keyring file (it saves live key changes there)."""
        return keyring_path(self.dir, self.procs[i].name)

    def down(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)  # a frozen node cannot leave
        run("cluster", "down", "--dir", str(self.dir), "--grace", "5", timeout=60)
        for p in self.procs:
            if _alive(p.pid) and (p.popen is not None or is_our_node(p.pid, p.name)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        for popen in self._extra:
            if popen.poll() is None:
                popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child is dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def node_procs(
    directory: Path, n: int, config: Path | None = None, keyring: Path | None = None
) -> Iterator[NodeProcs]:
    cluster = NodeProcs(directory, n, config, keyring)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@dataclass
class Load:
    """Broadcasts at ``rate`` per second to the nodes in ``targets`` (round robin), from a
    thread; every acknowledged id is kept, with the node that acknowledged it."""

    urls: list[str]
    rate: float
    targets: set[int] = field(default_factory=set)
    acked: list[tuple[str, int]] = field(default_factory=list)
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if not self.targets:
            self.targets = set(range(len(self.urls)))

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        return self.ids

    @property
    def ids(self) -> list[str]:
        return [msg_id for msg_id, _ in self.acked]

    def _run(self) -> None:
        period = 1.0 / self.rate
        k = 0
        with httpx.Client(timeout=2.0) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                targets = sorted(self.targets)
                if targets:
                    i = targets[k % len(targets)]
                    k += 1
                    try:
                        r = client.post(self.urls[i] + "/v1/broadcast", content=b"load-%d" % k)
                        if r.status_code == 200:
                            self.acked.append((r.json()["id"], i))
                        else:
                            self.refused += 1
                    except httpx.HTTPError:
                        self.refused += 1  # not acknowledged: not owed to anyone
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.monotonic()


def delivery_log(url: str, timeout: float = 10.0, payload: bool = False) -> list[dict[str, Any]]:
    """A node's whole delivery log, oldest first (every page; ``payload``: base64 in each)."""
    items: list[dict[str, Any]] = []
    after = 0
    params: dict[str, Any] = {"limit": 1000, "payload": int(payload)}
    with httpx.Client(timeout=timeout) as client:
        while True:
            params["after"] = after
            doc = client.get(url + "/v1/deliveries", params=params).json()
            assert doc["skipped"] == 0, f"{url}: {doc['skipped']} deliveries no longer readable"
            page = doc["items"]
            if not page:
                return items
            items.extend(page)
            after = page[-1]["cursor"]


@dataclass
class Ledger:
    """What one node delivered against what was acknowledged."""

    node: str
    missing: list[str]
    duplicates: dict[str, int]
    delivered: int
    cursors_ok: bool

    def __str__(self) -> str:
        return (
            f"{self.node}: delivered {self.delivered}, missing {len(self.missing)}, "
            f"duplicates {sum(self.duplicates.values())}, cursors in order {self.cursors_ok}"
        )


def ledger(
    name: str, url: str, acked: list[str], log: list[dict[str, Any]] | None = None
) -> Ledger:
    """The node's ledger, from its whole delivery log (read now) or from ``log``."""
    if log is None:
        log = delivery_log(url)
    counts = Counter(item["id"] for item in log)
    cursors = [item["cursor"] for item in log]
    in_order = cursors == list(range(cursors[0], cursors[0] + len(cursors))) if cursors else True
    return Ledger(
        name,
        [m for m in acked if m not in counts],
        {m: c for m, c in counts.items() if c > 1},
        len(log),
        in_order,
    )


def ledgers(cluster: NodeProcs, acked: list[str], nodes: list[int] | None = None) -> list[Ledger]:
    chosen = range(cluster.n) if nodes is None else nodes
    return [ledger(cluster.procs[i].name, cluster.urls[i], acked) for i in chosen]


def settled(cluster: NodeProcs, acked: list[str], timeout: float) -> list[Ledger]:
    """Wait until every node has every acknowledged broadcast (or the timeout), then the
    ledgers as they are."""
    wanted = set(acked)

    def done() -> bool:
        for i in range(cluster.n):
            status = cluster.json(i, "/v1/status")
            if status["delivery_cursor"] < len(wanted):
                return False
        return all(not x.missing for x in ledgers(cluster, list(wanted)))

    with contextlib.suppress(AssertionError):
        wait_until(done, timeout, 1.0)
    return ledgers(cluster, acked)


class Follower:
    """An application reading a node's delivery log as it grows: long polls after its
    last cursor, through the node's freezes and restarts (it resumes where it was)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.items: list[dict[str, Any]] = []
        self.skipped = 0
        self.logs: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow {url}", daemon=True)
        self._thread.start()

    @property
    def cursor(self) -> int:
        return self.items[-1]["cursor"] if self.items else 0

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                try:
                    doc = client.get(
                        self.url + "/v1/deliveries",
                        params={"after": self.cursor, "limit": 1000, "wait": 1},
                    ).json()
                except (httpx.HTTPError, ValueError):
                    self._stop.wait(0.2)  # down or frozen: try again
                    continue
                self.skipped += doc["skipped"]
                self.logs.add(doc["log"])
                self.items.extend(doc["items"])

    def stop(self) -> list[dict[str, Any]]:
        """Read up to the end, stop, and return everything read."""
        self._stop.set()
        self._thread.join(10)
        with httpx.Client(timeout=10.0) as client:
            while True:
                doc = client.get(
                    self.url + "/v1/deliveries", params={"after": self.cursor, "limit": 1000}
                ).json()
                self.skipped += doc["skipped"]
                if not doc["items"]:
                    return self.items
                self.items.extend(doc["items"])


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in a /metrics text whose labels include ``labels``."""
    total = 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total
