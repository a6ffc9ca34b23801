"""Duplicate node names on real processes: the newcomer is told and exits 2; the live
holder of the name is never disturbed (never left, dead or moved on any member)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from plumctl import exitcodes
from plumctl.localcluster import node_command
from tests.cli.helpers import REPO, plumctl_env
from tests.ledger import NodeProcs, node_procs, wait_until
from tests.ports import free_port

N = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcs]:
    with node_procs(tmp_path_factory.mktemp("names"), N) as c:
        wait_until(lambda: all(_view(c, i) for i in range(N)), 60)
        yield c


def _view(c: NodeProcs, i: int) -> dict[str, tuple[str, str]]:
    """Member name -> (state, gossip address) as node ``i`` sees it."""
    doc = c.json(i, "/v1/members")
    view = {m["name"]: (m["state"], m["addr"]) for m in doc["items"]}
    return view if len(view) >= N else {}


class Watch:
    """Polls every node's member table in a thread; records every sight of ``name``."""

    def __init__(self, c: NodeProcs, name: str) -> None:
        self.c, self.name = c, name
        self.seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i in range(N):
                try:
                    view = _view(self.c, i)
                except (httpx.HTTPError, ValueError):
                    continue
                if self.name in view:
                    self.seen.add(view[self.name])
            time.sleep(0.05)

    def stop(self) -> set[tuple[str, str]]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def _start_duplicate(c: NodeProcs, name: str, tmp: Path) -> tuple[int, str, float]:
    """Start a node called ``name`` at a fresh address joining node 0; its exit code,
    stderr and how long it ran."""
    cmd = node_command(
        name,
        f"127.0.0.1:{free_port()}",
        "off",
        tmp / "dup-data",
        [c.procs[0].gossip_addr],
        ["--profile", "local"],
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=plumctl_env(),
    )
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err, time.monotonic() - started


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("plumctl: error:")]


@pytest.mark.parametrize("who", [1, 0], ids=["a-members-name", "the-seeds-own-name"])
def test_a_taken_name_is_refused_and_the_holder_never_leaves(
    cluster: NodeProcs, who: int, tmp_path: Path
) -> None:
    c = cluster
    holder = c.procs[who]
    before = {i: _view(c, i)[holder.name] for i in range(N)}
    assert set(before.values()) == {("alive", holder.gossip_addr)}
    watch = Watch(c, holder.name)
    try:
        code, err, ran = _start_duplicate(c, holder.name, tmp_path)
        time.sleep(6.0)  # the report: the holder was 'left' for about 5 s after this
    finally:
        seen = watch.stop()
    assert code == exitcodes.USAGE, err
    errors = _errors(err)
    assert len(errors) == 1, err
    assert f"name {holder.name!r} is taken: a live member at {holder.gossip_addr}" in errors[0]
    assert "Traceback" not in err
    assert ran < 50  # it stopped: no endless retry (the report: retried forever)
    assert seen == {("alive", holder.gossip_addr)}  # never left, dead or moved anywhere
    # the seed refused the claim, counted it, and said so in its log
    metrics = c.get(0, "/metrics").text
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("swim_name_conflicts_total")
    )
    assert count >= 1
    log = (c.dir / "logs" / f"{c.procs[0].name}.log").read_text()
    assert f"refused a claim to the name {holder.name} from" in log
