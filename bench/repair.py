"""bench/repair.py: how fast a node that was away catches up, on real processes.

A 5-node loopback cluster (profile local, every node with its data dir) takes a steady
stream of broadcasts on four nodes; the fifth is frozen (SIGSTOP) for ``--away``
seconds, then woken. Measured from SIGCONT: when its peers hold it alive again, when it
has every acknowledged broadcast (its delivery log read as an application reads it),
and how many messages anti-entropy delivered. The target (issue 17): a node away 60 s
at 200/s has caught up within 10 s. Medians over ``--repeat`` runs; never asserts.

    python bench/repair.py [--rate 200] [--away 60] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout

import httpx

from bench.common import Report, load_line, median, progress
from tests.ledger import Follower, Load, NodeProcs, write_config

TARGET_S = 10.0


def one_run(rate: float, away: float, directory: Path) -> dict[str, float]:
    cluster = NodeProcs(directory / "c", 5, write_config(directory))
    try:
        cluster.up()
        follower = Follower(cluster.urls[4])
        load = Load(cluster.urls, rate=rate, targets={0, 1, 2, 3}).start()
        time.sleep(3)
        cluster.freeze(4)
        time.sleep(away)
        acked_at_thaw = len(load.acked)
        cluster.thaw(4)
        thawed = time.monotonic()
        alive_at = caught_at = None
        name = cluster.procs[4].name
        while time.monotonic() - thawed < 120:
            now = time.monotonic() - thawed
            if alive_at is None:
                try:
                    items = httpx.get(cluster.urls[0] + "/v1/members", timeout=2).json()["items"]
                    if any(m["name"] == name and m["state"] == "alive" for m in items):
                        alive_at = now
                except httpx.HTTPError:
                    pass
            wanted = {m for m, _ in load.acked[:acked_at_thaw]}
            got = {item["id"] for item in follower.items}
            if wanted <= got:
                caught_at = now
                break
            time.sleep(0.05)
        acked = load.stop()
        follower.stop()
        metrics = cluster.get(4, "/metrics").text
        repaired = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("plumtree_messages_repaired_total ")
        )
        return {
            "missed": float(sum(1 for _, i in load.acked[:acked_at_thaw] if i != 4)),
            "alive_again_s": alive_at if alive_at is not None else float("nan"),
            "caught_up_s": caught_at if caught_at is not None else float("nan"),
            "repaired": repaired,
            "acked": float(len(acked)),
        }
    finally:
        cluster.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="broadcasts per second")
    parser.add_argument("--away", type=float, default=60.0, help="seconds frozen")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the table as JSON here too")
    args = parser.parse_args(argv)
    runs = []
    for k in range(args.repeat):
        progress(f"run {k + 1}/{args.repeat}: {args.rate:g}/s, one node away {args.away:g}s")
        with tempfile.TemporaryDirectory(prefix="plumtree-repair-") as tmp:
            runs.append(one_run(args.rate, args.away, Path(tmp)))
    out = Report("bench/repair.py: catching up after a freeze (5 nodes, local, data dirs)")
    case = f"{args.rate:g}/s, away {args.away:g}s"
    out.add(
        case, "messages missed while away (median)", f"{median(r['missed'] for r in runs):,.0f}"
    )
    out.add(
        case,
        "  alive again at its peers after SIGCONT",
        " / ".join(f"{r['alive_again_s']:.1f}" for r in runs) + " s",
    )
    caught = median(r["caught_up_s"] for r in runs)
    out.check(
        case,
        "everything delivered after SIGCONT (median)",
        caught,
        "{:.1f} s",
        f"<= {TARGET_S:g} s",
        caught <= TARGET_S,
    )
    out.add(case, "  runs", " / ".join(f"{r['caught_up_s']:.1f}" for r in runs) + " s")
    out.add(
        case,
        "delivered by anti-entropy (median)",
        f"{median(r['repaired'] for r in runs):,.0f}",
    )
    out.note(f"machine: {load_line()}")
    out.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
