"""Benchmark ``plumctl top`` on a real local cluster; prints a table.

    python bench/tui.py                     # starts a 32-node local cluster, measures, stops it
    python bench/tui.py --nodes 8 --polls 20
    python bench/tui.py --node http://127.0.0.1:7947   # an already running cluster

Measured:

- time to data: a fresh ``python`` process that imports ``top`` (Textual included), polls
  the cluster once, starts the app (headless, 160x50) and waits until the table holds a
  row for every member, from just before the process is spawned (interpreter start
  included) and, inside the process, per phase;
- CPU per poll: ``time.process_time()`` around ``source.poll()`` plus
  ``model.update(snapshot)`` (the CLI's own CPU: the nodes are other processes), with
  and without ``/v1/peers`` on every poll; and the same poll through the running app,
  table and header rendering included.

Only processes this script started are stopped (``plumctl cluster down`` on its own dir).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plumctl(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "plumctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def start_cluster(where: Path, n: int, batch: int = 8) -> str:
    """What ``plumctl cluster up`` does (same processes, same state file, so ``cluster
    down`` stops them), in batches with a generous ready timeout: spawning 32 Python
    processes at once on a small, busy machine overruns ``cluster up``'s 15 s."""
    from plumctl.localcluster import ClusterState, NodeProcess, spawn_node, wait_ready

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    where.mkdir(parents=True, exist_ok=True)
    state = ClusterState(str(where), "local", time.time())
    names = [f"node-{i}" for i in range(n)]
    seed: list[str] = []
    # the first node alone: the others join through it (a batch spawned before it was
    # ready would have had no seed, and stayed a cluster of its own)
    for start, stop in [(0, 1), *((i, i + batch) for i in range(1, n, batch))]:
        group = [(name, *spawn_node(where, name, "local", seed)) for name in names[start:stop]]
        for name, proc, ready, log in group:
            info = wait_ready(proc, ready, log, 120.0)
            state.nodes.append(
                NodeProcess(name, proc.pid, info["gossip_addr"], info["admin_url"], str(log))
            )
            state.save()
            seed = seed or [info["gossip_addr"]]
    deadline = time.monotonic() + 120
    import httpx

    seen = [0]
    while time.monotonic() < deadline:  # every node sees every member alive
        seen = []
        for node in state.nodes:
            members = httpx.get(f"{node.admin_url}/v1/members", timeout=5).json()["items"]
            seen.append(sum(1 for m in members if m["state"] == "alive"))
        if min(seen) == n:
            break
        time.sleep(1)
    if min(seen) < n:
        print(f"cluster: NOT converged after 120 s (a node sees {min(seen)} of {n} alive)")
    return state.nodes[0].admin_url


def stop_strays(where: Path) -> None:
    """SIGTERM node processes of *our* state dir that ``cluster down`` did not know about
    (``cluster up`` leaves the nodes it spawned behind when one of them fails to start)."""
    import signal

    marker = str(where / "run")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "plumctl" in cmdline and "start" in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGTERM)


# -- a cluster in one process (--in-process) --------------------------------------------


def serve_nodes(n: int, ready: str) -> None:
    """Run ``n`` nodes in this one process (when spawning n processes is too slow)."""
    import signal

    from plumtree.core.config import ProtocolConfig
    from plumtree.runtime.node import Node, NodeConfig

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        def config(i: int, join: list[str]) -> NodeConfig:
            return NodeConfig(
                name=f"node-{i}",
                bind="127.0.0.1:0",
                api="127.0.0.1:0",
                join=join,
                protocol=ProtocolConfig.from_profile("local"),
            )

        first = Node(config(0, []))
        await first.start()
        nodes = [first]
        for i in range(1, n):
            node = Node(config(i, [first.gossip_addr]))
            await node.start()
            nodes.append(node)
        deadline = loop.time() + 120
        while loop.time() < deadline and any(x.swim.alive_count < n for x in nodes):
            await asyncio.sleep(0.2)
        Path(ready).write_text(
            json.dumps([{"name": x.name, "admin_url": x.admin_url} for x in nodes])
        )
        await stop.wait()
        await asyncio.gather(*(x.stop(leave=False) for x in nodes))

    asyncio.run(run())


# -- child: time to data -------------------------------------------------------------------


def child_open(url: str, nodes: int) -> None:
    t0 = time.perf_counter()
    c0 = time.process_time()
    from plumctl.commands.top import first_poll
    from plumctl.tui.source import DASHBOARD_NAMES, HttpSource

    async def run() -> dict[str, float]:
        source = HttpSource(url, timeout=5.0, names=DASHBOARD_NAMES)  # as `plumctl top`
        await source.open()
        first, app_class = await first_poll(source)  # as `plumctl top` does
        t_poll = time.perf_counter()
        app = app_class(source, interval=3600.0, initial=first)
        async with app.run_test(size=(160, 50)) as pilot:
            while app.table.row_count < min(nodes, len(first.members)):
                await pilot.pause()
            await pilot.pause()  # one more frame: the rows are painted
            t_data = time.perf_counter()
            shown_at = time.time()
            rows = app.table.row_count
        await source.close()
        return {
            "first_poll_s": t_poll - t0,
            "app_to_rows_s": t_data - t_poll,
            "in_process_s": t_data - t0,
            "cpu_s": time.process_time() - c0,
            "rows": rows,
            "shown_at": shown_at,
        }

    print(json.dumps(asyncio.run(run())))


def time_to_data(url: str, nodes: int, runs: int) -> list[dict[str, float]]:
    out = []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for _ in range(runs):
        start = time.time()
        proc = subprocess.run(
            [sys.executable, __file__, "--child-open", url, "--nodes", str(nodes)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        data["spawn_to_rows_s"] = data["shown_at"] - start  # interpreter start included
        out.append(data)
    return out


# -- CPU per poll --------------------------------------------------------------------------


async def cpu_per_poll(
    url: str, polls: int, peers: bool, as_json: bool = False
) -> dict[str, list[float]]:
    """CPU of ``source.poll()`` + ``model.update``: the dashboard's source, or with
    ``as_json`` the one of ``top -o json`` (quantile histograms and /v1/health too)."""
    from plumctl.tui.model import ClusterModel
    from plumctl.tui.source import DASHBOARD_NAMES, SCRAPE_NAMES, HttpSource

    names = SCRAPE_NAMES if as_json else DASHBOARD_NAMES
    source = HttpSource(url, timeout=5.0, peers=peers, names=names, health=as_json)
    model = ClusterModel()
    cpu: list[float] = []
    wall: list[float] = []
    cpu_model: list[float] = []
    await source.open()
    try:
        for i in range(polls + 2):
            c0, w0 = time.process_time(), time.perf_counter()
            snap = await source.poll()
            c1 = time.process_time()
            model.update(snap)
            c2, w2 = time.process_time(), time.perf_counter()
            if i >= 2:  # two warm-up polls (connections, first rates)
                cpu.append(c2 - c0)
                cpu_model.append(c2 - c1)
                wall.append(w2 - w0)
            await asyncio.sleep(0.2)
    finally:
        await source.close()
    return {"cpu": cpu, "cpu_model": cpu_model, "wall": wall, "nodes": [len(model.rows)]}


async def app_poll_cost(url: str, polls: int) -> dict[str, list[float]]:
    from plumctl.tui.app import TopApp
    from plumctl.tui.source import DASHBOARD_NAMES, HttpSource

    source = HttpSource(url, timeout=5.0, names=DASHBOARD_NAMES)  # as `plumctl top`
    app = TopApp(source, interval=3600.0)
    cpu: list[float] = []
    async with app.run_test(size=(160, 50)) as pilot:
        while app.poll_count < 1:
            await pilot.pause()
        for i in range(polls + 1):
            await pilot.pause()
            c0 = time.process_time()
            await app.poll_once()  # poll + model + table/header update
            await pilot.pause()  # ... and the repaint
            if i >= 1:
                cpu.append(time.process_time() - c0)
            await asyncio.sleep(0.2)
    return {"cpu": cpu}


# -- report --------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{1000 * statistics.median(values):7.1f} {1000 * p90:7.1f} {1000 * max(values):7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="fresh-process opens to time")
    parser.add_argument("--node", help="use this running cluster instead of starting one")
    parser.add_argument("--dir", help="state dir for the cluster this script starts")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="host the nodes in one process instead of `plumctl cluster up` (faster to start)",
    )
    parser.add_argument("--child-open", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_open:
        child_open(args.child_open, args.nodes)
        return
    if args.serve:
        serve_nodes(args.nodes, args.serve)
        return

    where = Path(args.dir or tempfile.mkdtemp(prefix="plumctl-bench-tui-"))
    started = False
    host: subprocess.Popen[bytes] | None = None
    url = args.node
    try:
        if url is None and args.in_process:
            t = time.perf_counter()
            ready = where / "nodes.json"
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            host = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(ready), "--nodes", str(args.nodes)],
                env=env,
            )
            while not ready.exists():
                if host.poll() is not None or time.perf_counter() - t > 180:
                    sys.exit("the in-process cluster did not start")
                time.sleep(0.2)
            url = json.loads(ready.read_text())[0]["admin_url"]
            print(
                f"cluster: {args.nodes} nodes in one process up in "
                f"{time.perf_counter() - t:.1f}s, via {url}"
            )
        if url is None:
            t = time.perf_counter()
            started = True
            url = start_cluster(where, args.nodes)
            print(
                f"cluster: {args.nodes} local node processes up in {time.perf_counter() - t:.1f}s, via {url}"
            )
        opens = time_to_data(url, args.nodes, args.runs)
        plain = asyncio.run(cpu_per_poll(url, args.polls, peers=False))
        with_peers = asyncio.run(cpu_per_poll(url, args.polls, peers=True))
        as_json = asyncio.run(cpu_per_poll(url, args.polls, peers=False, as_json=True))
        in_app = asyncio.run(app_poll_cost(url, max(3, args.polls // 2)))
    finally:
        if started:
            plumctl("cluster", "down", "--dir", str(where), "--grace", "5")
            stop_strays(where)
        if host is not None:
            host.terminate()
            try:
                host.wait(30)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()

    n = plain["nodes"][0]
    print()
    print(f"plumctl top, {n} nodes, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print(f"{'time to data (s)':<44} {'median':>7} {'max':>7}")
    for key, label in (
        ("spawn_to_rows_s", "fresh process: spawn -> every row shown"),
        ("in_process_s", "  in process: start -> every row shown"),
        ("first_poll_s", "    first poll, then the import of Textual"),
        ("app_to_rows_s", "    app start -> rows painted"),
    ):
        values = [o[key] for o in opens]
        print(f"{label:<44} {statistics.median(values):7.3f} {max(values):7.3f}")
    print()
    print(f"{'per poll (ms)':<44} {'median':>7} {'p90':>7} {'max':>7}")
    print(f"{'CPU: poll + model.update':<44} {ms(plain['cpu'])}")
    print(f"{'  of which model.update':<44} {ms(plain['cpu_model'])}")
    print(f"{'  wall time of the poll':<44} {ms(plain['wall'])}")
    print(f"{'CPU: poll + model, /v1/peers too':<44} {ms(with_peers['cpu'])}")
    print(f"{'CPU: poll + model of top -o json':<44} {ms(as_json['cpu'])}")
    print(f"{'CPU: poll through the app (with rendering)':<44} {ms(in_app['cpu'])}")


#: The issue's targets for ``top`` on 32 nodes.
TARGET_TIME_TO_DATA_S = 1.0
TARGET_POLL_CPU_MS = 50.0


def measure(ctx: Any, out: Any) -> None:
    """``bench/cli.py``'s hook: the same measurements on the cluster it started, judged
    against the targets (time to data of a fresh process; CPU per poll, without and with
    the app's rendering)."""
    url = ctx.nodes[0].url
    n = len(ctx.nodes)
    opens = time_to_data(url, n, max(5, ctx.runs))
    plain = asyncio.run(cpu_per_poll(url, 10, peers=False))
    in_app = asyncio.run(app_poll_cost(url, 5))
    spawn = [o["spawn_to_rows_s"] for o in opens]
    out.check(
        "top",
        f"time to data, fresh process ({n} nodes, median)",
        statistics.median(spawn),
        "{:.3f} s",
        f"< {TARGET_TIME_TO_DATA_S:g} s",
        statistics.median(spawn) < TARGET_TIME_TO_DATA_S,
    )
    out.add(
        "top",
        "  in process / max",
        f"{statistics.median(o['in_process_s'] for o in opens):.3f} / {max(spawn):.3f} s",
    )
    for label, values in (
        ("CPU per poll: poll + model (median)", plain["cpu"]),
        ("CPU per poll: through the app, rendering included", in_app["cpu"]),
    ):
        value = 1000 * statistics.median(values)
        out.check(
            "top",
            label,
            value,
            "{:.1f} ms",
            f"< {TARGET_POLL_CPU_MS:g} ms",
            value < TARGET_POLL_CPU_MS,
        )


if __name__ == "__main__":
    main()
