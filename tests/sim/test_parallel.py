"""A run split across processes is the same run: same report, entry for entry."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import replace
from typing import Any

import pytest

from plumtree.core.messages import Gossip
from plumtree.sim import parallel
from plumtree.sim.scenario import SimParams, run

#: what may differ between a split run and a whole one: how long it took, and the split
VARIES = {"wall_seconds", "events_per_second", "workers"}


def report(params: SimParams) -> dict[str, object]:
    return {k: v for k, v in run(params).as_dict().items() if k not in VARIES}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"loss": 0.05},
        {"crash": 0.2, "broadcasts": 30},
        {"origins": 1, "profile": "wan"},
    ],
    ids=["no-faults", "loss", "crash", "one-sender-wan"],
)
def test_two_parts_give_the_report_of_one(changes: dict[str, object]) -> None:
    params = replace(
        SimParams(nodes=120, broadcasts=20, warmup=5, flood_broadcasts=5, seed=4),
        **changes,  # type: ignore[arg-type]
    )
    whole = report(replace(params, workers=1))
    split = run(replace(params, workers=2)).as_dict()
    assert split["workers"] == 2
    assert {k: v for k, v in split.items() if k not in VARIES} == whole
    assert whole["events"] > 10_000  # a real run, not an empty one that trivially agrees


def test_three_parts_give_the_report_of_one() -> None:
    params = SimParams(nodes=90, broadcasts=15, warmup=5, loss=0.02, flood_broadcasts=5, seed=9)
    assert report(replace(params, workers=3)) == report(replace(params, workers=1))


def test_default_split_follows_size_and_cores() -> None:
    assert parallel.default_parts(200) == 1
    cores = len(os.sched_getaffinity(0))
    assert parallel.default_parts(10_000) == min(2, cores)


def _gossip(k: int, size: int) -> Gossip:
    return Gossip(k.to_bytes(16, "big"), k % 7, f"n{k}", 0, bytes([k % 251]) * size)


def _swap_big_batches(part: int, mesh: parallel.Mesh | None) -> list[int]:
    """Both parts send each other ~3 MB at once (far beyond a socket buffer), twice."""
    assert mesh is not None
    seen: list[int] = []
    for window in range(2):
        batch = [(1.0 + k, k * 2 + part, k, part, _gossip(k + window, 100)) for k in range(25_000)]
        t_next, inbound = mesh.exchange(5.0 + part, [batch, batch] if part == 0 else [batch, []])
        assert t_next == 1.0  # the earliest arrival of all, which the peer sent
        assert len(inbound) == 25_000
        assert inbound[7][4] == _gossip(7 + window, 100)  # decoded back to the message
        seen.append(inbound[0][3])
    return seen


def test_windows_far_larger_than_a_socket_buffer_do_not_deadlock() -> None:
    results = parallel.run_split(2, _swap_big_batches)
    assert results == [[1, 1], [0, 0]]  # each part got the other's entries, each window


def _fails_in_part_one(part: int, mesh: parallel.Mesh | None) -> int:
    assert mesh is not None
    if part == 1:
        raise ValueError("boom in part one")
    mesh.exchange(1.0, [[], []])  # part 0 waits for part 1, which is gone
    return part


def test_a_failing_part_is_reported_with_its_error_and_nothing_is_left_running() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)part 1 failed.*boom in part one"):
        parallel.run_split(2, _fails_in_part_one)
    assert multiprocessing.active_children() == []


def test_latency_partition_cuts_only_slow_links_and_balances_the_parts() -> None:
    import random

    from plumtree.sim.network import LATENCY_PROFILES, Network
    from plumtree.sim.overlay import random_overlay

    n = 3000
    adj = random_overlay(n, 5, random.Random(5))
    network = Network(n, LATENCY_PROFILES["lan"], 0.0, 5)
    owner, lookahead = parallel.latency_partition(adj, network.base_latency, 2)
    cut = [(i, j) for i in range(n) for j in adj[i] if i < j and owner[i] != owner[j]]
    assert cut and all(network.base_latency(i, j) >= lookahead for i, j in cut)
    # well above the fastest link of the profile (what a blind split must assume)
    assert lookahead > 1.3 * network.lookahead
    assert abs(owner.count(0) - owner.count(1)) <= n // 50


def test_a_message_faster_than_the_lookahead_stops_a_split_run() -> None:
    """The guard behind the windows: a part never hands on what another should have
    seen already (here, by claiming a lookahead longer than the fastest link)."""
    import random

    from plumtree.core.config import PlumtreeConfig
    from plumtree.core.plumtree import Plumtree
    from plumtree.sim.engine import CausalityError, Simulator
    from plumtree.sim.network import LATENCY_PROFILES, Network

    names = ["a", "b"]
    network = Network(2, LATENCY_PROFILES["lan"], 0.0, 1)
    node = Plumtree("a", PlumtreeConfig.preset("lan"), random.Random(1))
    node.add_peer("b", 0.0)
    sim = Simulator(
        [node, None], network, lambda i, e: None, owner=[0, 1], names=names, lookahead=0.01
    )
    with pytest.raises(CausalityError, match="sooner than the split's lookahead"):
        sim.call(0, lambda n: n.broadcast(b"x", 0.0))


def test_more_parts_than_nodes_still_gives_the_report_of_one() -> None:
    params = SimParams(nodes=3, broadcasts=4, warmup=1, flood_broadcasts=2, seed=2)
    split = run(replace(params, workers=5)).as_dict()
    assert split["workers"] == 3  # one part per node at most
    assert {k: v for k, v in split.items() if k not in VARIES} == report(replace(params, workers=1))


def _split_inside(out: Any) -> None:
    params = SimParams(nodes=60, broadcasts=5, warmup=2, flood_broadcasts=2, workers=2)
    out.put(run(params).as_dict()["workers"])


def test_a_split_run_works_inside_a_daemon_process() -> None:
    """Pool workers are daemons, which multiprocessing forbids to have children."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_split_inside, args=(out,), daemon=True)
    proc.start()
    try:
        assert out.get(timeout=60) == 2
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def _unpicklable(part: int, mesh: parallel.Mesh | None) -> object:
    return lambda: part  # a result the part cannot send back


def test_a_result_that_cannot_be_sent_is_reported_with_its_error() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)part 0 failed.*(pickle|Pickl)"):
        parallel.run_split(2, _unpicklable)


def _sleeper(part: int, mesh: parallel.Mesh | None) -> int:
    import time

    time.sleep(60)
    return part


def test_parts_die_with_the_process_that_forked_them() -> None:
    """A run stopped by SIGKILL leaves no part simulating on its own."""
    import signal
    import time

    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=parallel.run_split, args=(2, _sleeper))
    proc.start()
    try:
        deadline = time.monotonic() + 20
        kids: list[int] = []
        while time.monotonic() < deadline and len(kids) < 2:
            kids = _children_of(proc.pid)
            time.sleep(0.05)
        assert len(kids) == 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in kids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in kids)


def _children_of(pid: int | None) -> list[int]:
    from pathlib import Path

    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    from pathlib import Path

    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return False
    return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone
